//! Set-up the trainer's gradient tests share (train_checkpointing, token_budget): model
//! copies with edited `config.json`, a small three-column data file, losses from the
//! registry, one micro-batch's gradients and their comparison.

use std::path::{Path, PathBuf};

use embtune_core::encoder::SentenceEncoder;
use embtune_core::train::{micro_batch_gradients, TrainConfig};
use embtune_core::{registry, ContrastiveLoss};
use serde_json::{json, Map, Value};
use tch::Tensor;

/// libtorch's generator is process-wide and the trainer re-seeds it: tests that train take
/// this lock, one at a time.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The lock of [`TORCH_RNG`] (a test that panicked while holding it does not poison it).
pub fn lock() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|p| p.into_inner())
}

/// The tiny model fixture `tests/fixtures/encoder/{name}`.
pub fn fixture_model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/encoder")
        .join(name)
}

/// A copy of model folder `src` in `dir/name` with `config.json` fields overridden.
pub fn model_copy(src: &Path, dir: &Path, name: &str, set: &[(&str, f64)]) -> PathBuf {
    let dst = dir.join(name);
    crate::copy_dir(src, &dst);
    let path = dst.join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (k, v) in set {
        cfg[*k] = json!(v);
    }
    std::fs::write(&path, cfg.to_string()).unwrap();
    dst
}

/// `dir/train.csv`: 16 anchors, positives and hard negatives whose lengths cycle through
/// `lengths` sizes (so batches are padded).
pub fn triplets(dir: &Path, lengths: usize) -> PathBuf {
    let p = dir.join("train.csv");
    let mut s = String::from("anchor,positive,hard_negative\n");
    for i in 0..16 {
        let long = "with a few more words ".repeat(i % lengths);
        s.push_str(&format!(
            "how do I open account type {i} {long},account type {i} opening guide,card type {} fees {long}\n",
            (i + 5) % 16
        ));
    }
    std::fs::write(&p, s).unwrap();
    p
}

/// The registered loss `name` with options `opts`.
pub fn loss(name: &str, opts: &[(&str, Value)]) -> Box<dyn ContrastiveLoss> {
    embtune_plugins::link();
    let opts: Map<String, Value> = opts
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    registry::build::<dyn ContrastiveLoss>(name, &opts).unwrap()
}

/// The loss and every parameter's gradient (a copy) of micro-batch 1 of `cfg`'s run.
pub fn gradients(
    cfg: &TrainConfig,
    loss: &dyn ContrastiveLoss,
    enc: &SentenceEncoder,
) -> (f64, Vec<(String, Tensor)>) {
    let l = micro_batch_gradients(cfg, loss, enc, 1).unwrap();
    let grads = enc
        .named_parameters()
        .into_iter()
        .map(|(n, t)| (n, t.grad().copy()))
        .collect();
    (l, grads)
}

/// Per parameter: max |a - b| <= `rel_tol` * max |b| (both defined); prints and returns
/// the worst ratio.
pub fn assert_same_gradients(
    what: &str,
    a: &[(String, Tensor)],
    b: &[(String, Tensor)],
    rel_tol: f64,
) -> f64 {
    assert_eq!(a.len(), b.len(), "{what}: parameter counts");
    let mut worst = 0.0f64;
    for ((name, ga), (_, gb)) in a.iter().zip(b) {
        assert!(gb.defined(), "{what}: {name} got no gradient (second run)");
        assert!(ga.defined(), "{what}: {name} got no gradient (first run)");
        let scale = gb.abs().max().double_value(&[]);
        let diff = (ga - gb).abs().max().double_value(&[]);
        let rel = diff / scale.max(1e-30);
        assert!(
            rel <= rel_tol,
            "{what}: {name}: max |diff| {diff:e} is {rel:e} of max |grad| {scale:e}"
        );
        worst = worst.max(rel);
    }
    eprintln!("{what}: worst relative gradient difference {worst:e}");
    worst
}
