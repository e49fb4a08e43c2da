//! The trainer takes its loss as an instance: a loss written here and never registered
//! trains the default model, through the merged forward, across micro-batches that share
//! one weight preparation, with distinct query and document prompts, and with GradCache.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use embtune_core::train::{train, TrainConfig};
use embtune_core::{ContrastiveLoss, LossBatch, LossInputs};
use embtune_tests::train_cases::lock;
use tch::{Kind, Tensor};

/// In-batch softmax over (anchor, positive) pairs, scale 20, recording the shapes of the
/// embeddings of every call.
struct InBatchSoftmax {
    calls: Arc<Mutex<Vec<Vec<Vec<i64>>>>>,
    mini_batch_size: Option<usize>,
}

impl ContrastiveLoss for InBatchSoftmax {
    fn inputs(&self) -> LossInputs {
        LossInputs::Texts {
            min: 2,
            max: Some(2),
        }
    }

    fn forward(&self, batch: &LossBatch<'_>) -> embtune_core::Result<Tensor> {
        self.calls
            .lock()
            .unwrap()
            .push(batch.embeddings.iter().map(Tensor::size).collect());
        let (a, p) = (&batch.embeddings[0], &batch.embeddings[1]);
        let scores = a.matmul(&p.tr()) * 20.0; // (B, B); row i's positive is column i
        let target = Tensor::arange(scores.size()[0], (Kind::Int64, scores.device()));
        Ok(scores.cross_entropy_for_logits(&target))
    }

    fn mini_batch_size(&self) -> Option<usize> {
        self.mini_batch_size
    }
}

fn model() -> PathBuf {
    embtune_tests::default_model()
}

fn data(dir: &Path) -> PathBuf {
    let p = dir.join("pairs.csv");
    let mut s = String::from("anchor,positive\n");
    for i in 0..8 {
        s.push_str(&format!("what is plan {i},plan {i} explained in short\n"));
    }
    std::fs::write(&p, s).unwrap();
    p
}

fn weights(dir: &Path) -> Vec<(String, Tensor)> {
    let mut w = Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

/// Trains 2 steps with a fresh [`InBatchSoftmax`] and returns the shapes its forward saw;
/// checks that the weights moved and every logged loss is finite.
fn run(tweak: impl FnOnce(&mut TrainConfig), mini_batch_size: Option<usize>) -> Vec<Vec<Vec<i64>>> {
    let _rng = lock();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut cfg = TrainConfig::new(model(), data(tmp.path()), "in-batch-softmax", out.clone());
    cfg.batch_size = 4;
    cfg.max_steps = Some(2);
    cfg.log_every = 1;
    cfg.optimizer.lr = 1e-4;
    tweak(&mut cfg);
    let calls = Arc::new(Mutex::new(Vec::new()));
    let loss = Box::new(InBatchSoftmax {
        calls: calls.clone(),
        mini_batch_size,
    });
    let summary = train(
        &cfg,
        loss,
        None,
        None,
        Arc::new(AtomicBool::new(false)),
        &mut (),
    )
    .unwrap();
    assert_eq!(summary.steps, 2);
    let logs =
        embtune_core::train::checkpoint::MetricsLog::read(&out.join("metrics.jsonl")).unwrap();
    assert_eq!(logs.len(), 2);
    assert!(
        logs.iter().all(|l| l.loss.is_some_and(f64::is_finite)),
        "{logs:?}"
    );
    let moved = weights(&out.join("final"))
        .iter()
        .zip(&weights(&model()))
        .any(|((_, a), (_, b))| f64::try_from((a - b).abs().max()).unwrap() > 0.0);
    assert!(moved, "training with the loss instance changed no weight");
    let seen = calls.lock().unwrap().clone();
    seen
}

#[test]
fn an_unregistered_loss_instance_trains() {
    let seen = run(|_| {}, None);
    assert_eq!(
        seen,
        vec![vec![vec![4, 384]; 2]; 2],
        "one call per step, (B, D) per column"
    );
}

#[test]
fn micro_batches_share_a_step_with_distinct_prompts() {
    let seen = run(
        |cfg| {
            cfg.grad_accum = 2;
            cfg.query_prompt = Some("query: ".into());
            cfg.document_prompt = Some(String::new());
        },
        None,
    );
    assert_eq!(
        seen,
        vec![vec![vec![4, 384]; 2]; 4],
        "two micro-batches per step"
    );
}

#[test]
fn gradient_caching_runs_the_loss_once_per_micro_batch() {
    let seen = run(|cfg| cfg.grad_accum = 2, Some(3));
    assert_eq!(seen, vec![vec![vec![4, 384]; 2]; 4]);
}
