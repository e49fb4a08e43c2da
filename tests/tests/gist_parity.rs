//! `gist` and `cached-gist` against sentence-transformers' GISTEmbedLoss and
//! CachedGISTEmbedLoss: value and gradient with respect to each embedding column, on fixed
//! random float64 embeddings with fixed guide embeddings (the guide's forward is replaced by
//! those tensors on both sides).
//!
//! Fixture: tests/fixtures/losses/gist.json, made by make_gist.py beside it
//! (sentence-transformers 6.0.1 on torch 2.11). Tolerance: 1e-5 relative. The same cases run
//! on CUDA when present.

use embtune_core::registry;
use embtune_core::ContrastiveLoss;
use embtune_plugins::cached_gist::CachedGistConfig;
use embtune_plugins::gist::{gist_loss, GistConfig};
use embtune_tests::loss_cases;
use serde_json::{Map, Value};
use tch::{Device, Tensor};

fn fixture() -> Value {
    loss_cases::fixture("gist.json")
}

/// The GIST options of a case, read by the loss's own config type; the registry must also
/// build the loss from them (with a guide, which it does not load).
fn config(name: &str, loss: &str, options: &Map<String, Value>) -> GistConfig {
    let mut with_guide = options.clone();
    with_guide.insert("guide".into(), Value::String("unused/guide".into()));
    let built = registry::build::<dyn ContrastiveLoss>(loss, &with_guide)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let value = Value::Object(options.clone());
    match loss {
        "gist" => serde_json::from_value::<GistConfig>(value).unwrap(),
        "cached-gist" => {
            let c: CachedGistConfig = serde_json::from_value(value).unwrap();
            assert_eq!(built.mini_batch_size(), Some(c.mini_batch_size), "{name}");
            c.gist
        }
        other => panic!("{name}: unexpected loss {other}"),
    }
}

/// Runs every fixture case on `device`; returns (case count, max relative error of values,
/// max relative error of gradients).
fn run_cases(device: Device) -> (usize, f64, f64) {
    let f = fixture();
    let (mut max_value_err, mut max_grad_err) = (0.0f64, 0.0f64);
    let cases = f["cases"].as_array().unwrap();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let loss = case["loss"].as_str().unwrap();
        let cfg = config(name, loss, case["options"].as_object().unwrap());
        let inputs: Vec<Tensor> = loss_cases::tensors(&case["inputs"], device)
            .into_iter()
            .map(|t| t.set_requires_grad(true))
            .collect();
        let guide = loss_cases::tensors(&case["guide"], device);
        let value =
            gist_loss(&cfg, &inputs, &guide, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (v, g) = loss_cases::check_case(case, &value, &inputs, device);
        max_value_err = max_value_err.max(v);
        max_grad_err = max_grad_err.max(g);
        for g in &guide {
            assert!(
                !g.requires_grad(),
                "{name}: the guide must take no gradient"
            );
        }
    }
    (cases.len(), max_value_err, max_grad_err)
}

#[test]
fn gist_matches_sentence_transformers() {
    let (n, v, g) = run_cases(Device::Cpu);
    assert!(n >= 14);
    println!("{n} cases on CPU: max relative error {v:e} (values), {g:e} (gradients)");
}

#[test]
fn gist_matches_on_cuda() {
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device; skipped");
        return;
    }
    let (n, v, g) = run_cases(Device::Cuda(0));
    println!("{n} cases on CUDA: max relative error {v:e} (values), {g:e} (gradients)");
}

#[test]
fn fixture_covers_the_options() {
    let f = fixture();
    let cases = f["cases"].as_array().unwrap();
    let has = |pred: &dyn Fn(&Value) -> bool| cases.iter().any(pred);
    let opt = |c: &Value, k: &str| c["options"].get(k).cloned();
    let columns = |c: &Value| c["inputs"].as_array().unwrap().len();
    for loss in ["gist", "cached-gist"] {
        for n in [2, 3, 5] {
            assert!(
                has(&|c| c["loss"] == loss && columns(c) == n),
                "no {loss} case with {n} columns"
            );
        }
    }
    assert!(has(&|c| opt(c, "margin_strategy")
        == Some("relative".into())
        && opt(c, "margin")
            .and_then(|m| m.as_f64())
            .is_some_and(|m| m != 0.0)));
    assert!(has(&|c| opt(c, "margin_strategy")
        == Some("absolute".into())
        && opt(c, "margin")
            .and_then(|m| m.as_f64())
            .is_some_and(|m| m != 0.0)));
    assert!(has(&|c| opt(c, "contrast_anchors") == Some(false.into())));
    assert!(has(&|c| opt(c, "contrast_positives") == Some(false.into())));
    assert!(has(&|c| opt(c, "temperature") == Some(0.05.into())));
    assert!(has(&|c| opt(c, "mini_batch_size") == Some(4.into())));
}

#[test]
fn a_masked_candidate_changes_the_value() {
    // The fixture is only a test of the masking rule if the guide masks something: moving
    // the margin must change the loss on the first case.
    let f = fixture();
    let case = &f["cases"][0];
    let inputs = loss_cases::tensors(&case["inputs"], Device::Cpu);
    let guide = loss_cases::tensors(&case["guide"], Device::Cpu);
    let at = |margin: f64| {
        let cfg = GistConfig {
            margin,
            ..GistConfig::default()
        };
        gist_loss(&cfg, &inputs, &guide, None)
            .unwrap()
            .double_value(&[])
    };
    let (tight, none_dropped) = (at(0.0), at(-10.0));
    assert!(
        (tight - none_dropped).abs() > 1e-3,
        "{tight} vs {none_dropped}"
    );
}
