//! Every loss against sentence-transformers' loss classes: value and gradient with respect to
//! each embedding column, on fixed random float64 embeddings.
//!
//! Fixture: tests/fixtures/losses/losses.json, made by make_losses.py beside it
//! (sentence-transformers 6.0.1 on torch 2.11). Tolerance: 1e-5 relative (observed errors
//! are at float64 rounding level, about 1e-15). The same cases run on CUDA when present.

use embtune_core::registry::{self, PluginKind};
use embtune_core::{ContrastiveLoss, LossBatch};
use serde_json::{Map, Value};
use tch::{Device, Kind, Tensor};

const REL_TOL: f64 = 1e-5;

fn fixture() -> Value {
    embtune_plugins::link();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/losses/losses.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("losses fixture"))
        .expect("valid JSON")
}

fn tensor2(v: &Value, device: Device) -> Tensor {
    let rows = v.as_array().unwrap();
    let flat: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect();
    Tensor::from_slice(&flat)
        .reshape([rows.len() as i64, -1])
        .to_device(device)
}

/// Largest elementwise `|got - want| / max(|want|, floor)`.
fn rel_err(got: &Tensor, want: &Tensor, floor: f64) -> f64 {
    let diff = (got - want).abs();
    (diff / want.abs().clamp_min(floor)).max().double_value(&[])
}

/// Runs every fixture case on `device`; returns (case count, max relative error of values,
/// max relative error of gradients).
fn run_cases(device: Device) -> (usize, f64, f64) {
    let f = fixture();
    let (mut max_value_err, mut max_grad_err) = (0.0f64, 0.0f64);
    let cases = f["cases"].as_array().unwrap();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let options: Map<String, Value> = case["options"].as_object().unwrap().clone();
        let loss = registry::build::<dyn ContrastiveLoss>(case["loss"].as_str().unwrap(), &options)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let inputs: Vec<Tensor> = case["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| tensor2(x, device).set_requires_grad(true))
            .collect();
        let labels = case["labels"].as_array().map(|l| {
            Tensor::from_slice(&l.iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>())
                .to_device(device)
        });
        let batch = LossBatch {
            embeddings: &inputs,
            labels: labels.as_ref(),
            duplicate_mask: None,
            texts: None,
        };
        let value = loss
            .forward(&batch)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(value.size(), Vec::<i64>::new(), "{name}: loss must be 0-d");
        value.backward();

        let want = case["expected_loss"].as_f64().unwrap();
        let got = value.double_value(&[]);
        let err = (got - want).abs() / want.abs().max(1e-12);
        assert!(
            err <= REL_TOL,
            "{name}: loss {got} vs reference {want} (rel {err:e})"
        );
        max_value_err = max_value_err.max(err);

        for (k, (x, g)) in inputs
            .iter()
            .zip(case["expected_grads"].as_array().unwrap())
            .enumerate()
        {
            let want = tensor2(g, device);
            let got = x.grad();
            assert!(got.defined(), "{name}: no gradient for column {k}");
            // Elementwise relative error, except that entries far below the tensor's scale
            // (exact zeros of relu or masked entries) compare by absolute error.
            let scale = want.abs().max().double_value(&[]).max(1e-12);
            let err = rel_err(&got, &want, 1e-6 * scale);
            assert!(
                err <= REL_TOL,
                "{name}: gradient of column {k} differs (rel {err:e})\n{got}\nvs\n{want}"
            );
            max_grad_err = max_grad_err.max(err);
        }
    }
    (cases.len(), max_value_err, max_grad_err)
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
