//! The distillation losses against sentence-transformers' MarginMSELoss and DistillKLDivLoss:
//! value and gradient with respect to each embedding column, on fixed random float64
//! embeddings and teacher scores, with labels in every shape the reference accepts ((B,)
//! margins on triplets, (B, N) margins, (B, N+1) raw scores).
//!
//! Fixture: tests/fixtures/losses/distill.json, made by make_distill.py beside it
//! (sentence-transformers 6.0.1 on torch 2.11). Tolerance: 1e-5 relative. The same cases run
//! on CUDA when present.

use embtune_core::registry::{self, PluginKind};
use embtune_core::{ContrastiveLoss, LossBatch, LossInputs};
use embtune_tests::loss_cases;
use serde_json::{Map, Value};
use tch::{Device, Kind, Tensor};

fn fixture() -> Value {
    loss_cases::fixture("distill.json")
}

/// Runs every fixture case on `device` (tests/loss_cases.rs); returns (case count, max
/// relative error of values, max relative error of gradients).
fn run_cases(device: Device) -> (usize, f64, f64) {
    loss_cases::run_registry_cases(&fixture(), device)
}

#[test]
fn distillation_losses_and_gradients_match_sentence_transformers() {
    let (n, v, g) = run_cases(Device::Cpu);
    assert!(n >= 15, "{n} cases");
    println!("{n} cases on CPU: max relative error {v:e} (values), {g:e} (gradients)");
}

#[test]
fn distillation_losses_and_gradients_match_on_cuda() {
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device; skipped");
        return;
    }
    let (n, v, g) = run_cases(Device::Cuda(0));
    println!("{n} cases on CUDA: max relative error {v:e} (values), {g:e} (gradients)");
}

#[test]
fn fixture_covers_every_label_form_and_option() {
    let f = fixture();
    let cases = f["cases"].as_array().unwrap();
    let has = |loss: &str, pred: &dyn Fn(&Value) -> bool| {
        cases
            .iter()
            .any(|c| c["loss"].as_str() == Some(loss) && pred(c))
    };
    let columns = |c: &Value| c["inputs"].as_array().unwrap().len();
    let label_width = |c: &Value| match c["labels"].as_array().unwrap()[0].as_array() {
        Some(row) => row.len(),
        None => 0, // (B,)
    };
    assert!(has("margin-mse", &|c| columns(c) == 3 && label_width(c) == 0));
    for negatives in [1, 2, 3] {
        // (B, N) margins (N > 1) and (B, N+1) raw scores.
        if negatives > 1 {
            assert!(has("margin-mse", &|c| columns(c) == 2 + negatives
                && label_width(c) == negatives));
        }
        assert!(has("margin-mse", &|c| columns(c) == 2 + negatives
            && label_width(c) == negatives + 1));
    }
    for negatives in [1, 3] {
        assert!(has("distill-kl", &|c| columns(c) == 2 + negatives
            && c["options"].get("temperature").is_none()));
        assert!(has("distill-kl", &|c| columns(c) == 2 + negatives
            && c["options"].get("temperature").is_some()));
    }
    assert!(has("distill-kl", &|c| c["options"]
        .get("teacher_temperature")
        .is_some()));
}

#[test]
fn both_losses_are_registered_with_docs_and_explain_bad_options() {
    embtune_plugins::link();
    let entries = <dyn ContrastiveLoss as PluginKind>::entries().unwrap();
    for (name, margins) in [("margin-mse", true), ("distill-kl", false)] {
        let reg = entries
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("{name} not registered"));
        assert!(
            !reg.summary.is_empty() && !reg.summary.contains('\n'),
            "{name}: one-line summary"
        );
        assert!(
            reg.long_doc.contains("embtune mine --output-scores"),
            "{name}"
        );
        let defaults = (reg.default_config)();
        assert_eq!(
            defaults["similarity_fct"], "dot",
            "{name}: reference default"
        );
        for key in defaults.as_object().unwrap().keys() {
            assert!(
                reg.long_doc.contains(key.as_str()),
                "{name}: long doc does not mention option {key}"
            );
        }
        let loss = reg.build_with(&Map::new()).unwrap();
        assert_eq!(
            loss.inputs(),
            LossInputs::TextsWithScores {
                min: 3,
                max: None,
                margins
            }
        );
        let mut bad = Map::new();
        bad.insert("similarity_fct".into(), Value::from("dotproduct"));
        let e = reg.build_with(&bad).err().unwrap().to_string();
        assert!(
            e.contains(name) && e.contains("dot") && e.contains("manhattan") && !e.contains('\n'),
            "{e}"
        );
    }
    let temp = entries.iter().find(|r| r.name == "distill-kl").unwrap();
    assert_eq!((temp.default_config)()["temperature"], 1.0);
}

#[test]
fn distillation_losses_run_in_float32_with_float32_scores() {
    embtune_plugins::link();
    for name in ["margin-mse", "distill-kl"] {
        let loss = registry::build::<dyn ContrastiveLoss>(name, &Map::new()).unwrap();
        tch::manual_seed(3);
        let emb: Vec<Tensor> = (0..4)
            .map(|_| Tensor::randn([4, 6], (Kind::Float, Device::Cpu)))
            .collect();
        let labels = Tensor::randn([4, 3], (Kind::Float, Device::Cpu));
        let batch = LossBatch {
            embeddings: &emb,
            labels: Some(&labels),
            duplicate_mask: None,
            texts: None,
        };
        let v = loss.forward(&batch).unwrap();
        assert_eq!(v.kind(), Kind::Float, "{name}");
        assert!(v.double_value(&[]).is_finite(), "{name}");
    }
}
