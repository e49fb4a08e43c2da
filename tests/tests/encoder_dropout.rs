//! `embtune train --dropout P` (`LoadOptions::dropout`): with 0 the training forward equals
//! the evaluation forward; the saved folder keeps the model's own dropout; a probability
//! outside [0, 1) is one clear error.

use embtune_core::encoder::{LoadOptions, SentenceEncoder};
use tch::Device;

const TEXTS: [&str; 3] = [
    "how do I open an account",
    "the guide to opening an account, step by step",
    "card fees",
];

fn max_abs_diff(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn dropout_zero_makes_the_training_forward_the_evaluation_forward() {
    let dir = embtune_tests::default_model();
    let opts = LoadOptions { dropout: Some(0.0) };
    let enc = SentenceEncoder::load_with(&dir, Device::Cpu, &opts).unwrap();
    let batch = enc.tokenize(&TEXTS).unwrap();
    let train = enc.forward(&batch, true).unwrap();
    let eval = enc.forward(&batch, false).unwrap();
    let d = max_abs_diff(&train, &eval);
    assert!(d <= 1e-6, "training forward differs from evaluation by {d}");

    // The model's own dropout (all-MiniLM-L6-v2: 0.1) makes them differ.
    let plain = SentenceEncoder::load(&dir, Device::Cpu).unwrap();
    let d = max_abs_diff(
        &plain.forward(&batch, true).unwrap(),
        &plain.forward(&batch, false).unwrap(),
    );
    assert!(d > 1e-4, "the model's dropout changed nothing ({d})");
    // Without dropout in training the override does not change the evaluation forward.
    let d = max_abs_diff(&plain.forward(&batch, false).unwrap(), &eval);
    assert!(d <= 1e-6, "{d}");

    // The saved config.json keeps the model's values.
    let tmp = tempfile::tempdir().unwrap();
    enc.save(tmp.path()).unwrap();
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("config.json")).unwrap()).unwrap();
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    for key in ["hidden_dropout_prob", "attention_probs_dropout_prob"] {
        assert_eq!(saved[key], original[key], "{key}");
        assert!(saved[key].as_f64().unwrap() > 0.0, "{key}");
    }
}

#[test]
fn dropout_outside_zero_to_one_is_refused() {
    let dir = embtune_tests::default_model();
    for p in [1.0, -0.1, f64::NAN] {
        let opts = LoadOptions { dropout: Some(p) };
        let e = SentenceEncoder::load_with(&dir, Device::Cpu, &opts)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("is not a probability in [0, 1)") && !e.contains('\n'),
            "{e}"
        );
    }
}

#[test]
fn with_dropout_sets_every_architectures_keys() {
    let c = serde_json::json!({"model_type": "bert", "hidden_dropout_prob": 0.1});
    let o = embtune_core::models::with_dropout(&c, 0.25);
    for k in embtune_core::models::DROPOUT_KEYS {
        assert_eq!(o[*k], 0.25, "{k}");
    }
    assert_eq!(o["model_type"], "bert");
    assert_eq!(c["hidden_dropout_prob"], 0.1);
}
