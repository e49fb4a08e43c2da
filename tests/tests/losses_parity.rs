//! Every loss against sentence-transformers' loss classes: value and gradient with respect to
//! each embedding column, on fixed random float64 embeddings.
//!
//! Fixture: tests/fixtures/losses/losses.json, made by make_losses.py beside it
//! (sentence-transformers 6.0.1 on torch 2.11). Tolerance: 1e-5 relative (observed errors
//! are at float64 rounding level, about 1e-15). The same cases run on CUDA when present.

use embtune_core::registry::{self, PluginKind};
use embtune_core::{ContrastiveLoss, LossBatch};
use embtune_tests::loss_cases;
use serde_json::{Map, Value};
use tch::{Device, Kind, Tensor};

fn fixture() -> Value {
    loss_cases::fixture("losses.json")
}

/// Runs every fixture case on `device` (tests/loss_cases.rs); returns (case count, max
/// relative error of values, max relative error of gradients).
fn run_cases(device: Device) -> (usize, f64, f64) {
    loss_cases::run_registry_cases(&fixture(), device)
}

#[test]
fn losses_and_gradients_match_sentence_transformers() {
    let (n, v, g) = run_cases(Device::Cpu);
    assert!(n >= 20);
    println!("{n} cases on CPU: max relative error {v:e} (values), {g:e} (gradients)");
}

#[test]
fn losses_and_gradients_match_on_cuda() {
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device; skipped");
        return;
    }
    let (n, v, g) = run_cases(Device::Cuda(0));
    println!("{n} cases on CUDA: max relative error {v:e} (values), {g:e} (gradients)");
}

#[test]
fn fixture_covers_every_loss() {
    let f = fixture();
    let covered: Vec<&str> = f["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["loss"].as_str().unwrap())
        .collect();
    for name in [
        "mnrl",
        "simcse",
        "triplet",
        "cosent",
        "angle",
        "cached-mnrl",
    ] {
        assert!(covered.contains(&name), "no parity case for {name}");
    }
}

#[test]
fn every_loss_is_registered_with_docs_and_explains_unknown_options() {
    embtune_plugins::link();
    let entries = <dyn ContrastiveLoss as PluginKind>::entries().unwrap();
    for name in [
        "mnrl",
        "simcse",
        "triplet",
        "cosent",
        "angle",
        "cached-mnrl",
    ] {
        let reg = entries
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("{name} not registered"));
        assert!(
            !reg.summary.is_empty() && !reg.summary.contains('\n'),
            "{name}: one-line summary"
        );
        assert!(reg.long_doc.lines().count() >= 3, "{name}: long doc");
        let defaults = (reg.default_config)();
        let keys: Vec<&String> = defaults.as_object().unwrap().keys().collect();
        for key in &keys {
            assert!(
                reg.long_doc.contains(key.as_str()),
                "{name}: long doc does not mention option {key}"
            );
        }
        reg.build_with(&Map::new())
            .unwrap_or_else(|e| panic!("{name} from defaults: {e}"));
        let mut bad = Map::new();
        bad.insert("no_such_option".into(), Value::from(1));
        let e = reg.build_with(&bad).err().unwrap().to_string();
        assert!(
            e.contains("unknown option 'no_such_option'")
                && keys.iter().all(|k| e.contains(k.as_str())),
            "{e}"
        );
    }
    let e = registry::lookup::<dyn ContrastiveLoss>("infonce")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("mnrl") && e.contains("cached-mnrl"), "{e}");
}

#[test]
fn losses_run_in_float32() {
    embtune_plugins::link();
    for (name, cols, labelled) in [
        ("mnrl", 3, false),
        ("simcse", 2, false),
        ("triplet", 3, false),
        ("cosent", 2, true),
        ("angle", 3, false),
    ] {
        let loss = registry::build::<dyn ContrastiveLoss>(name, &Map::new()).unwrap();
        tch::manual_seed(3);
        let emb: Vec<Tensor> = (0..cols)
            .map(|_| Tensor::randn([4, 6], (Kind::Float, Device::Cpu)))
            .collect();
        let labels = Tensor::from_slice(&[0.1f32, 0.9, 0.4, 0.6]);
        let batch = LossBatch {
            embeddings: &emb,
            labels: labelled.then_some(&labels),
            duplicate_mask: None,
            texts: None,
        };
        let v = loss.forward(&batch).unwrap();
        assert_eq!(v.kind(), Kind::Float, "{name}");
        assert!(v.double_value(&[]).is_finite(), "{name}");
    }
}
