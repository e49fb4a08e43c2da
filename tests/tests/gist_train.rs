//! `gist` and `cached-gist` train the default model for three steps on CPU with a guide
//! model: the default model itself (the same tokenizer) and the tiny XLM-R fixture (another
//! tokenizer, so the texts are tokenized again). The loss stays finite and the weights move.
//! The guide embeds exactly the batch's texts with their prompts. Bad input: a guide that
//! cannot load and a missing guide are one-line errors naming `guide`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use embtune_core::encoder::SentenceEncoder;
use embtune_core::loss::BatchTexts;
use embtune_core::train::{train, TrainConfig};
use embtune_core::{ContrastiveLoss, LossBatch};
use embtune_plugins::gist::{gist_loss, GistConfig};
use embtune_tests::train_cases::lock;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

fn model() -> PathBuf {
    embtune_tests::default_model()
}

fn xlmr_tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/encoder/xlm-roberta-tiny")
}

/// Twelve (anchor, positive, negative) rows: three batches of four. Rows 0 and 6 share an
/// anchor topic, so the guide has false negatives to find.
fn data(dir: &Path) -> PathBuf {
    let p = dir.join("triplets.csv");
    let topics = [
        (
            "how do I reset my password",
            "password reset steps",
            "branch opening hours",
        ),
        (
            "lost credit card",
            "report a lost or stolen card",
            "mortgage rates today",
        ),
        (
            "open a savings account",
            "savings account opening guide",
            "loan repayment schedule",
        ),
        (
            "계좌 개설 방법",
            "계좌를 여는 절차 안내",
            "카드 연회비 안내",
        ),
        (
            "change my address",
            "update the address on file",
            "foreign exchange fees",
        ),
        (
            "wire money abroad",
            "international transfer guide",
            "reset a forgotten PIN",
        ),
    ];
    let mut s = String::from("anchor,positive,negative\n");
    for i in 0..12 {
        let (a, pos, neg) = topics[i % topics.len()];
        s.push_str(&format!("{a} {i},{pos},{neg}\n"));
    }
    std::fs::write(&p, s).unwrap();
    p
}

fn weights(dir: &Path) -> Vec<(String, Tensor)> {
    let mut w = Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

fn build(loss: &str, options: &[(&str, Value)]) -> Box<dyn ContrastiveLoss> {
    embtune_tests::train_cases::loss(loss, options)
}

/// Trains the default model three steps with `loss` and checks the run; returns the error
/// of a failed run instead.
fn run(loss: Box<dyn ContrastiveLoss>, name: &str) -> embtune_core::Result<Vec<f64>> {
    let _rng = lock();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut cfg = TrainConfig::new(model(), data(tmp.path()), name, out.clone());
    cfg.batch_size = 4;
    cfg.max_steps = Some(3);
    cfg.max_seq_length = Some(32);
    cfg.warmup_ratio = 0.0;
    cfg.log_every = 1;
    cfg.optimizer.lr = 1e-4;
    cfg.device = Device::Cpu;
    let summary = train(
        &cfg,
        loss,
        None,
        None,
        Arc::new(AtomicBool::new(false)),
        &mut (),
    )?;
    assert_eq!(summary.steps, 3, "{name}");
    let logs =
        embtune_core::train::checkpoint::MetricsLog::read(&out.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = logs.iter().filter_map(|l| l.loss).collect();
    assert_eq!(
        losses.len(),
        3,
        "{name}: one logged loss per step: {logs:?}"
    );
    assert!(losses.iter().all(|l| l.is_finite()), "{name}: {losses:?}");
    // A guide that drops every candidate leaves loss 0 and nothing to learn.
    assert!(
        losses.iter().any(|&l| l > 1e-3),
        "{name}: no step had a loss: {losses:?}"
    );
    let moved = weights(&summary.final_dir)
        .iter()
        .zip(&weights(&model()))
        .map(|((_, a), (_, b))| f64::try_from((a - b).abs().max()).unwrap())
        .fold(0.0, f64::max);
    eprintln!("{name}: losses {losses:?}, largest weight change {moved:.3e}");
    assert!(moved > 0.0, "{name}: training changed no weight");
    Ok(losses)
}

#[test]
fn gist_guided_by_the_default_model_trains() {
    let guide = model().to_string_lossy().into_owned();
    let loss = build("gist", &[("guide", guide.into())]);
    run(loss, "gist").unwrap();
}

#[test]
fn gist_guided_by_a_model_with_another_tokenizer_trains() {
    // The tiny XLM-R is random: it finds every text about equally similar, so any positive
    // margin would drop every candidate (loss 0, no gradient). Margin 0 keeps about half.
    let guide = xlmr_tiny().to_string_lossy().into_owned();
    let loss = build(
        "gist",
        &[("guide", guide.into()), ("temperature", 0.05.into())],
    );
    run(loss, "gist").unwrap();
}

#[test]
fn cached_gist_trains_in_mini_batches_of_two() {
    let guide = xlmr_tiny().to_string_lossy().into_owned();
    let loss = build(
        "cached-gist",
        &[("guide", guide.into()), ("mini_batch_size", 2.into())],
    );
    assert_eq!(loss.mini_batch_size(), Some(2));
    run(loss, "cached-gist").unwrap();
}

#[test]
fn the_guide_embeds_the_batch_texts_with_their_prompts() {
    // forward = gist_loss with the guide encoder's own embeddings of prompt + text.
    let guide_dir = xlmr_tiny();
    let mut loss = build(
        "gist",
        &[("guide", guide_dir.to_string_lossy().into_owned().into())],
    );
    loss.to_device(Device::Cpu).unwrap();
    let columns: Vec<Vec<&str>> = vec![
        vec!["lost card", "reset password", "open account"],
        vec![
            "report a lost card",
            "password reset steps",
            "account opening",
        ],
    ];
    let prompts = vec![Some("query: ".to_string()), None];
    let emb: Vec<Tensor> = (0..2)
        .map(|k| {
            tch::manual_seed(k);
            Tensor::randn([3, 8], (Kind::Double, Device::Cpu))
        })
        .collect();
    let batch = LossBatch {
        embeddings: &emb,
        labels: None,
        duplicate_mask: None,
        texts: Some(BatchTexts {
            columns: &columns,
            prompts: &prompts,
        }),
    };
    let got = loss.forward(&batch).unwrap().double_value(&[]);

    let enc = SentenceEncoder::load(&guide_dir, Device::Cpu).unwrap();
    let guide: Vec<Tensor> = columns
        .iter()
        .zip(&prompts)
        .map(|(c, p)| enc.encode_with_prompt(c, p.as_deref(), 8).unwrap())
        .collect();
    let want = gist_loss(&GistConfig::default(), &emb, &guide, None)
        .unwrap()
        .double_value(&[]);
    assert!(
        (got - want).abs() < 1e-9 * want.abs().max(1.0),
        "{got} vs {want}"
    );

    // Without the prompt the guide sees other texts (the value may or may not move, but the
    // guide embeddings must).
    let plain = enc.encode_with_prompt(&columns[0], None, 8).unwrap();
    assert!(f64::try_from((&plain - &guide[0]).abs().max()).unwrap() > 1e-6);
}

#[test]
fn a_guide_that_cannot_load_is_one_line_naming_the_option() {
    let loss = build("gist", &[("guide", "/nonexistent".into())]);
    let e = run(loss, "gist").unwrap_err().to_string();
    assert!(e.starts_with("loss 'gist': guide=/nonexistent: "), "{e}");
    assert!(e.contains("Hugging Face id"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");

    let loss = build("cached-gist", &[("guide", "/nonexistent".into())]);
    let e = run(loss, "cached-gist").unwrap_err().to_string();
    assert!(
        e.starts_with("loss 'cached-gist': guide=/nonexistent: "),
        "{e}"
    );
}

#[test]
fn a_missing_guide_is_an_error_naming_guide() {
    for name in ["gist", "cached-gist"] {
        let loss = build(name, &[]);
        let e = run(loss, name).unwrap_err().to_string();
        assert!(
            e.contains(&format!("loss '{name}'")) && e.contains("guide=") && !e.contains('\n'),
            "{e}"
        );
    }
}
