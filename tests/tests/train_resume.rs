//! Trainer end to end on CPU with the default model: a run interrupted at a checkpoint and
//! resumed ends with exactly the weights of an uninterrupted run; a non-finite loss stops
//! the run without writing non-finite weights; bad inputs fail with one clear message.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use embtune_core::eval::evaluators::EvalSuite;
use embtune_core::train::{TrainConfig, TrainObserver, TrainSummary};
use embtune_core::{register_loss, registry, ContrastiveLoss, Error, LossBatch, LossInputs};
use embtune_tests::train_cases::lock;
use serde_json::{Map, Value};
use tch::Tensor;

fn model() -> PathBuf {
    embtune_tests::default_model()
}

fn data(dir: &Path) -> PathBuf {
    let p = dir.join("train.csv");
    let mut s = String::from("\u{feff}anchor,positive,hard_negative\n");
    for i in 0..16 {
        s.push_str(&format!(
            "how do I open account type {i},account type {i} opening guide,card type {} fees\n",
            (i + 5) % 16
        ));
    }
    std::fs::write(&p, s).unwrap();
    p
}

/// A trainer config with the loss by name and options, as `embtune train` takes them.
struct Config {
    train: TrainConfig,
    loss: String,
    loss_options: Map<String, Value>,
}

impl Deref for Config {
    type Target = TrainConfig;
    fn deref(&self) -> &TrainConfig {
        &self.train
    }
}

impl DerefMut for Config {
    fn deref_mut(&mut self) -> &mut TrainConfig {
        &mut self.train
    }
}

/// Builds the named loss through the registry, as the CLI does, and trains with it.
fn train(
    cfg: &Config,
    resume: Option<&Path>,
    suite: Option<&EvalSuite>,
    stop: Arc<AtomicBool>,
    observer: &mut dyn TrainObserver,
) -> embtune_core::Result<TrainSummary> {
    let loss = registry::build::<dyn ContrastiveLoss>(&cfg.loss, &cfg.loss_options)?;
    let mut train_cfg = cfg.train.clone();
    train_cfg.loss_name = cfg.loss.clone();
    embtune_core::train::train(&train_cfg, loss, resume, suite, stop, observer)
}

fn config(data: PathBuf, out: PathBuf) -> Config {
    let mut cfg = TrainConfig::new(model(), data, "mnrl", out);
    cfg.batch_size = 4;
    cfg.max_steps = Some(6);
    cfg.log_every = 1;
    cfg.optimizer.lr = 1e-4;
    cfg.optimizer.weight_decay = 0.01;
    Config {
        train: cfg,
        loss: "mnrl".into(),
        loss_options: Map::new(),
    }
}

fn weights(dir: &Path) -> Vec<(String, Tensor)> {
    let mut w = Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

/// Sets the stop flag once `at` steps are done, like a Ctrl-C during step `at`.
struct StopAt {
    at: usize,
    flag: Arc<AtomicBool>,
}
impl TrainObserver for StopAt {
    fn step(&mut self, step: usize) {
        if step == self.at {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
}

#[test]
fn resumed_run_matches_uninterrupted_run() {
    let _rng = lock();
    embtune_plugins::link();
    let tmp = tempfile::tempdir().unwrap();
    let d = data(tmp.path());

    let full = tmp.path().join("full");
    train(
        &config(d.clone(), full.clone()),
        None,
        None,
        Arc::new(AtomicBool::new(false)),
        &mut (),
    )
    .unwrap();

    let part = tmp.path().join("part");
    let flag = Arc::new(AtomicBool::new(false));
    let err = train(
        &config(d.clone(), part.clone()),
        None,
        None,
        flag.clone(),
        &mut StopAt {
            at: 3,
            flag: flag.clone(),
        },
    )
    .unwrap_err();
    let Error::Interrupted { step, checkpoint } = err else {
        panic!("expected an interruption, got {err}")
    };
    assert_eq!(step, 3);
    assert!(
        checkpoint.join("optimizer.safetensors").is_file()
            && checkpoint.join("trainer_state.json").is_file()
    );
    assert!(
        !part.join("final").exists(),
        "an interrupted run has no final/ folder"
    );

    train(
        &config(d, part.clone()),
        Some(&checkpoint),
        None,
        Arc::new(AtomicBool::new(false)),
        &mut (),
    )
    .unwrap();

    let (a, b) = (weights(&full.join("final")), weights(&part.join("final")));
    assert_eq!(a.len(), b.len());
    let start = weights(&model());
    let mut moved = false;
    for (((na, ta), (nb, tb)), (_, t0)) in a.iter().zip(&b).zip(&start) {
        assert_eq!(na, nb);
        let diff = f64::try_from((ta - tb).abs().max()).unwrap();
        assert!(diff <= 1e-6, "{na}: resumed weights differ by {diff}");
        moved |= f64::try_from((ta - t0).abs().max()).unwrap() > 0.0;
    }
    assert!(moved, "training changed no weight");
    let logs =
        embtune_core::train::checkpoint::MetricsLog::read(&part.join("metrics.jsonl")).unwrap();
    assert_eq!(
        logs.iter().map(|l| l.step).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6],
        "resumed log continues"
    );
}

/// A loss that turns NaN from its third call on: the trainer must stop, and never save
/// non-finite weights.
struct NanAfterTwo {
    calls: AtomicUsize,
}
impl ContrastiveLoss for NanAfterTwo {
    fn inputs(&self) -> LossInputs {
        LossInputs::Texts { min: 2, max: None }
    }
    fn forward(&self, batch: &LossBatch<'_>) -> embtune_core::Result<Tensor> {
        let l = (&batch.embeddings[0] * &batch.embeddings[1]).sum(tch::Kind::Float);
        if self.calls.fetch_add(1, Ordering::SeqCst) >= 2 {
            Ok(l * f64::NAN)
        } else {
            Ok(l)
        }
    }
}
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct NoOptions {}
register_loss!(
    name: "test-nan-after-two",
    summary: "test only: NaN from the third step",
    long: "Returns sum(a*p), then NaN from its third call on.",
    config: NoOptions,
    build: |_| Ok(Box::new(NanAfterTwo { calls: AtomicUsize::new(0) })),
);

#[test]
fn non_finite_loss_stops_without_nan_weights() {
    let _rng = lock();
    embtune_plugins::link();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(data(tmp.path()), tmp.path().join("out"));
    cfg.loss = "test-nan-after-two".into();
    cfg.eval_every = Some(2);
    let err = train(&cfg, None, None, Arc::new(AtomicBool::new(false)), &mut ()).unwrap_err();
    assert!(matches!(err, Error::NonFinite { step: 3, .. }), "{err}");
    assert!(err.to_string().contains("lower --lr"), "{err}");
    assert!(!tmp.path().join("out/final").exists());
    for (_, t) in weights(&tmp.path().join("out/checkpoint-2")) {
        assert!(bool::try_from(t.isfinite().all()).unwrap());
    }
}

#[test]
fn bad_inputs_fail_with_one_clear_line() {
    let _rng = lock();
    embtune_plugins::link();
    let tmp = tempfile::tempdir().unwrap();
    let d = data(tmp.path());
    let out = tmp.path().join("out");
    let run = |cfg: Config| {
        train(&cfg, None, None, Arc::new(AtomicBool::new(false)), &mut ())
            .unwrap_err()
            .to_string()
    };

    let mut cfg = config(d.clone(), out.clone());
    cfg.batch_size = 64;
    let e = run(cfg);
    assert!(
        e.contains("--batch-size 64 is larger than the data (16 rows"),
        "{e}"
    );

    let mut cfg = config(d.clone(), out.clone());
    cfg.loss = "simcse".into();
    cfg.loss_options
        .insert("mode".into(), "unsupervised".into());
    let e = run(cfg);
    assert!(
        e.contains("needs exactly one text column")
            && e.contains("anchor, positive, hard_negative"),
        "{e}"
    );

    let mut cfg = config(d.clone(), out.clone());
    cfg.loss_options.insert("scael".into(), 20.into());
    let e = run(cfg);
    assert!(
        e.contains("unknown option 'scael'") && e.contains("scale"),
        "{e}"
    );

    let empty = tmp.path().join("empty.csv");
    std::fs::write(&empty, "anchor,positive\n").unwrap();
    let e = run(config(empty, out.clone()));
    assert!(e.contains("no data rows"), "{e}");

    let e = train(
        &config(d, out),
        Some(&tmp.path().join("nope")),
        None,
        Arc::new(AtomicBool::new(false)),
        &mut (),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("nope"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
}

/// The default model with dropout off, so two trainings differ only by their algorithm.
fn model_without_dropout(dir: &Path) -> PathBuf {
    let src = model();
    let dst = dir.join("no-dropout");
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap().flatten() {
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    };
    copy(&src, &dst);
    copy(&src.join("1_Pooling"), &dst.join("1_Pooling"));
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dst.join("config.json")).unwrap()).unwrap();
    cfg["hidden_dropout_prob"] = 0.0.into();
    cfg["attention_probs_dropout_prob"] = 0.0.into();
    std::fs::write(dst.join("config.json"), cfg.to_string()).unwrap();
    dst
}

#[test]
fn cached_mnrl_trains_like_mnrl() {
    let _rng = lock();
    embtune_plugins::link();
    let tmp = tempfile::tempdir().unwrap();
    let d = data(tmp.path());
    let m = model_without_dropout(tmp.path());
    let run = |loss: &str, opts: &[(&str, serde_json::Value)], out: &str| {
        let mut cfg = config(d.clone(), tmp.path().join(out));
        cfg.model = m.clone();
        cfg.loss = loss.into();
        cfg.batch_size = 8;
        cfg.max_steps = Some(3);
        cfg.optimizer.lr = 1e-5;
        for (k, v) in opts {
            cfg.loss_options.insert(k.to_string(), v.clone());
        }
        train(&cfg, None, None, Arc::new(AtomicBool::new(false)), &mut ()).unwrap();
        let logs = embtune_core::train::checkpoint::MetricsLog::read(
            &tmp.path().join(out).join("metrics.jsonl"),
        )
        .unwrap();
        (logs, weights(&tmp.path().join(out).join("final")))
    };
    let (plain_logs, plain_w) = run("mnrl", &[], "plain");
    let (cached_logs, cached_w) = run("cached-mnrl", &[("mini_batch_size", 3.into())], "cached");
    assert_eq!(plain_logs.len(), 3);
    for (p, c) in plain_logs.iter().zip(&cached_logs) {
        let (lp, lc) = (p.loss.unwrap(), c.loss.unwrap());
        assert!(
            (lp - lc).abs() <= 1e-4 * lp.abs().max(1e-3),
            "step {}: loss {lp} vs {lc}",
            p.step
        );
        assert!(
            (p.grad_norm - c.grad_norm).abs() <= 1e-3 * p.grad_norm,
            "step {}: grad norm {} vs {}",
            p.step,
            p.grad_norm,
            c.grad_norm
        );
    }
    for ((n, a), (_, b)) in plain_w.iter().zip(&cached_w) {
        let diff = f64::try_from((a - b).abs().max()).unwrap();
        assert!(diff <= 2e-6, "{n}: cached-mnrl weights differ by {diff}");
    }
}
