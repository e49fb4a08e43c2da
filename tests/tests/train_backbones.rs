//! A short training run per architecture: every tiny backbone fixture trains for three
//! optimizer steps with mnrl on CPU, the loss stays finite, and the saved `final/` folder
//! reloads with embeddings that are finite and differ from the original model's.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use embtune_core::encoder::SentenceEncoder;
use embtune_core::train::{StepLog, TrainConfig, TrainObserver};
use embtune_core::{registry, ContrastiveLoss};
use embtune_tests::train_cases::lock;
use serde_json::Map;
use tch::{Device, Tensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("encoder")
        .join(name)
}

const ROWS: [(&str, &str, &str); 6] = [
    (
        "계좌 개설 방법",
        "계좌를 여는 절차 안내",
        "카드 연회비 안내",
    ),
    (
        "how do I reset my password",
        "password reset steps",
        "branch opening hours",
    ),
    (
        "대출 금리 조회",
        "현재 대출 이자율 확인하기",
        "해외 송금 수수료",
    ),
    (
        "lost credit card",
        "report a lost or stolen card",
        "mortgage rates today",
    ),
    ("환전 신청", "외화 환전 예약 방법", "비밀번호 변경"),
    (
        "open a savings account",
        "savings account opening guide",
        "loan repayment schedule",
    ),
];

/// Twelve (anchor, positive, negative) rows in JSON Lines: three batches of four.
fn data(dir: &Path) -> PathBuf {
    let p = dir.join("train.jsonl");
    let mut s = String::new();
    for i in 0..12 {
        let (a, pos, neg) = ROWS[i % ROWS.len()];
        let row = serde_json::json!({
            "anchor": format!("{a} {i}"),
            "positive": pos,
            "negative": neg,
        });
        s.push_str(&row.to_string());
        s.push('\n');
    }
    std::fs::write(&p, s).unwrap();
    p
}

#[derive(Default)]
struct Losses(Vec<f64>);

impl TrainObserver for Losses {
    fn log(&mut self, log: &StepLog) {
        if let Some(l) = log.loss {
            self.0.push(l);
        }
    }
}

fn embed(enc: &SentenceEncoder) -> Tensor {
    let texts: Vec<String> = ROWS
        .iter()
        .flat_map(|r| [r.0, r.1])
        .map(String::from)
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    enc.encode(&refs, 4).unwrap()
}

fn trains(name: &str) {
    let _rng = lock();
    embtune_plugins::link();
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture(name);
    let mut cfg = TrainConfig::new(
        model.clone(),
        data(tmp.path()),
        "mnrl",
        tmp.path().join("out"),
    );
    cfg.batch_size = 4;
    cfg.max_steps = Some(3);
    cfg.max_seq_length = Some(32);
    cfg.warmup_ratio = 0.0;
    cfg.log_every = 1;
    cfg.optimizer.lr = 1e-3;
    cfg.device = Device::Cpu;
    let loss = registry::build::<dyn ContrastiveLoss>("mnrl", &Map::new()).unwrap();
    let mut losses = Losses::default();
    let summary = embtune_core::train::train(
        &cfg,
        loss,
        None,
        None,
        Arc::new(AtomicBool::new(false)),
        &mut losses,
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(summary.steps, 3, "{name}");
    assert_eq!(losses.0.len(), 3, "{name}: one logged loss per step");
    assert!(
        losses.0.iter().all(|l| l.is_finite()),
        "{name}: losses {:?}",
        losses.0
    );

    let before = embed(&SentenceEncoder::load(&model, Device::Cpu).unwrap());
    let after = embed(&SentenceEncoder::load(&summary.final_dir, Device::Cpu).unwrap());
    assert_eq!(before.size(), after.size(), "{name}");
    assert!(
        bool::try_from(after.isfinite().all()).unwrap(),
        "{name}: non-finite embeddings after training"
    );
    let moved = f64::try_from((&after - &before).abs().max()).unwrap();
    eprintln!(
        "{name}: losses {:?}, max embedding change {moved:.3e}",
        losses.0
    );
    assert!(moved > 1e-4, "{name}: the weights did not move ({moved})");
}

#[test]
fn xlm_roberta_trains() {
    trains("xlm-roberta-tiny");
}

#[test]
fn roberta_trains() {
    trains("roberta-tiny");
}

#[test]
fn modernbert_trains() {
    trains("modernbert-tiny");
}

#[test]
fn qwen3_trains() {
    trains("qwen3-tiny");
}

#[test]
fn gemma3_trains() {
    trains("gemma3-tiny");
}
