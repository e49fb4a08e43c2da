//! Gradient checkpointing (`TrainConfig::gradient_checkpointing`) changes memory, not
//! results: for BERT (the default model), XLM-RoBERTa, Qwen3, ModernBERT and Gemma3 (the
//! tiny fixtures), with MNRL and with cached MNRL (GradCache), every parameter's gradient
//! equals the plain forward's within 1e-6 relative, dropout on (each stage reseeded, so the
//! recomputed layers draw the masks of their first run) and off; two optimizer steps of
//! `train` end with the same weights.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use embtune_core::encoder::{safetensors, SentenceEncoder};
use embtune_core::train::TrainConfig;
use embtune_tests::train_cases::{
    assert_same_gradients, fixture_model, gradients, lock, loss, model_copy, triplets,
};
use serde_json::{json, Value};
use tch::Device;

/// The default model (BERT) with its hidden and attention dropout set to `p`.
fn minilm(dir: &Path, p: f64) -> PathBuf {
    model_copy(
        &embtune_tests::default_model(),
        dir,
        &format!("minilm-{p}"),
        &[
            ("hidden_dropout_prob", p),
            ("attention_probs_dropout_prob", p),
        ],
    )
}

/// The Gemma3 tiny fixture with its attention dropout set to `p`.
fn gemma(dir: &Path, p: f64) -> PathBuf {
    let src = fixture_model("gemma3-tiny");
    model_copy(
        &src,
        dir,
        &format!("gemma-{p}"),
        &[("attention_dropout", p)],
    )
}

/// The XLM-RoBERTa tiny fixture (RoBERTa position ids) with its hidden and attention
/// dropout set to `p`.
fn xlm_roberta(dir: &Path, p: f64) -> PathBuf {
    let src = fixture_model("xlm-roberta-tiny");
    model_copy(
        &src,
        dir,
        &format!("xlm-roberta-{p}"),
        &[
            ("hidden_dropout_prob", p),
            ("attention_probs_dropout_prob", p),
        ],
    )
}

/// The Qwen3 tiny fixture (causal, left padding, last-token pooling) with its attention
/// dropout set to `p`.
fn qwen3(dir: &Path, p: f64) -> PathBuf {
    let src = fixture_model("qwen3-tiny");
    model_copy(
        &src,
        dir,
        &format!("qwen3-{p}"),
        &[("attention_dropout", p)],
    )
}

/// The ModernBERT tiny fixture (global and sliding-window layers) with its embedding,
/// attention and MLP dropout set to `p`.
fn modernbert(dir: &Path, p: f64) -> PathBuf {
    let src = fixture_model("modernbert-tiny");
    model_copy(
        &src,
        dir,
        &format!("modernbert-{p}"),
        &[
            ("embedding_dropout", p),
            ("attention_dropout", p),
            ("mlp_dropout", p),
        ],
    )
}

/// A config for `model` and `data` with two prompt groups (the anchors get a query
/// prompt) and two micro-batches per step.
fn config(model: &Path, data: &Path, out: &Path, loss_name: &str) -> TrainConfig {
    let mut cfg = TrainConfig::new(model.into(), data.into(), loss_name, out.into());
    cfg.batch_size = 4;
    cfg.grad_accum = 2;
    cfg.query_prompt = Some("query: ".into());
    cfg.document_prompt = Some(String::new());
    cfg
}

/// Gradients of micro-batch 1 with and without checkpointing are the same, and so is the
/// loss; returns the loss.
fn check(what: &str, model: &Path, loss_name: &str, opts: &[(&str, Value)]) -> f64 {
    let tmp = tempfile::tempdir().unwrap();
    let d = triplets(tmp.path(), 4);
    let mut cfg = config(model, &d, &tmp.path().join("out"), loss_name);
    let l = loss(loss_name, opts);
    let enc = SentenceEncoder::load(model, Device::Cpu).unwrap();
    let (plain_loss, plain) = gradients(&cfg, l.as_ref(), &enc);
    cfg.gradient_checkpointing = true;
    let (ckpt_loss, ckpt) = gradients(&cfg, l.as_ref(), &enc);
    assert!(
        (plain_loss - ckpt_loss).abs() <= 1e-6 * plain_loss.abs(),
        "{what}: loss {ckpt_loss} with checkpointing, {plain_loss} without"
    );
    assert_same_gradients(what, &ckpt, &plain, 1e-6);
    plain_loss
}

fn cached() -> [(&'static str, Value); 1] {
    // Groups of 4 anchors and of 8 positives + negatives: chunks of 3 leave a remainder.
    [("mini_batch_size", json!(3))]
}

#[test]
fn bert_gradients_match_without_dropout() {
    let _rng = lock();
    let tmp = tempfile::tempdir().unwrap();
    check("bert mnrl", &minilm(tmp.path(), 0.0), "mnrl", &[]);
}

#[test]
fn bert_gradients_match_with_dropout() {
    let _rng = lock();
    let tmp = tempfile::tempdir().unwrap();
    let with = check("bert mnrl dropout", &minilm(tmp.path(), 0.1), "mnrl", &[]);
    let without = check("bert mnrl", &minilm(tmp.path(), 0.0), "mnrl", &[]);
    assert!(
        (with - without).abs() > 1e-4,
        "dropout is active: {with} vs {without}"
    );
}

#[test]
fn bert_cached_mnrl_gradients_match() {
    let _rng = lock();
    let tmp = tempfile::tempdir().unwrap();
    let m = minilm(tmp.path(), 0.1);
    check("bert cached-mnrl dropout", &m, "cached-mnrl", &cached());
}

#[test]
fn xlm_roberta_gradients_match() {
    let _rng = lock();
    let tmp = tempfile::tempdir().unwrap();
    let without = check(
        "xlm-roberta mnrl",
        &xlm_roberta(tmp.path(), 0.0),
        "mnrl",
        &[],
    );
    let with = check(
        "xlm-roberta mnrl dropout",
        &xlm_roberta(tmp.path(), 0.1),
        "mnrl",
        &[],
    );
    assert!(
        (with - without).abs() > 1e-4,
        "dropout is active: {with} vs {without}"
    );
}

#[test]
fn qwen3_gradients_match() {
    let _rng = lock();
    let tmp = tempfile::tempdir().unwrap();
    let without = check("qwen3 mnrl", &qwen3(tmp.path(), 0.0), "mnrl", &[]);
    let with = check("qwen3 mnrl dropout", &qwen3(tmp.path(), 0.2), "mnrl", &[]);
    assert!(
        (with - without).abs() > 1e-4,
        "dropout is active: {with} vs {without}"
    );
}

#[test]
fn modernbert_gradients_match() {
    let _rng = lock();
    let tmp = tempfile::tempdir().unwrap();
    let without = check("modernbert mnrl", &modernbert(tmp.path(), 0.0), "mnrl", &[]);
    let with = check(
        "modernbert mnrl dropout",
        &modernbert(tmp.path(), 0.1),
        "mnrl",
        &[],
    );
    assert!(
        (with - without).abs() > 1e-4,
        "dropout is active: {with} vs {without}"
    );
}

#[test]
fn gemma3_gradients_match() {
    let _rng = lock();
    let tmp = tempfile::tempdir().unwrap();
    let without = check("gemma3 mnrl", &gemma(tmp.path(), 0.0), "mnrl", &[]);
    let with = check("gemma3 mnrl dropout", &gemma(tmp.path(), 0.2), "mnrl", &[]);
    assert!(
        (with - without).abs() > 1e-4,
        "dropout is active: {with} vs {without}"
    );
}

#[test]
fn gemma3_cached_mnrl_gradients_match() {
    let _rng = lock();
    let tmp = tempfile::tempdir().unwrap();
    let m = gemma(tmp.path(), 0.2);
    check("gemma3 cached-mnrl dropout", &m, "cached-mnrl", &cached());
}

/// Two optimizer steps of two micro-batches each, dropout on: the same final weights.
#[test]
fn two_training_steps_end_with_the_same_weights() {
    let _rng = lock();
    let tmp = tempfile::tempdir().unwrap();
    let d = triplets(tmp.path(), 4);
    let m = minilm(tmp.path(), 0.1);
    let run = |checkpointing: bool, out: &str| {
        let mut cfg = config(&m, &d, &tmp.path().join(out), "mnrl");
        cfg.max_steps = Some(2);
        cfg.gradient_checkpointing = checkpointing;
        let summary = embtune_core::train::train(
            &cfg,
            loss("mnrl", &[]),
            None,
            None,
            Arc::new(AtomicBool::new(false)),
            &mut (),
        )
        .unwrap();
        assert_eq!(summary.steps, 2);
        safetensors::read(&summary.final_dir.join("model.safetensors")).unwrap()
    };
    let plain = run(false, "plain");
    let ckpt = run(true, "ckpt");
    let start = safetensors::read(&m.join("model.safetensors")).unwrap();
    let mut moved = 0;
    for (name, w) in &plain {
        let c = &ckpt[name];
        let diff = (c - w).abs().max().double_value(&[]);
        assert!(diff <= 1e-7, "{name}: weights differ by {diff:e}");
        if start.get(name).is_some_and(|s| !s.equal(w)) {
            moved += 1;
        }
    }
    assert!(moved > 0, "training changed the weights");
}
