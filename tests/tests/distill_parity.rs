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
use serde_json::{Map, Value};
use tch::{Device, Kind, Tensor};

const REL_TOL: f64 = 1e-5;

fn fixture() -> Value {
    embtune_plugins::link();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/losses/distill.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("distill fixture"))
        .expect("valid JSON")
}

/// A JSON number list `(n,)` or list of lists `(n, m)` as a float64 tensor on `device`.
fn tensor(v: &Value, device: Device) -> Tensor {
    let rows = v.as_array().unwrap();
    if rows.first().is_some_and(Value::is_number) {
        let flat: Vec<f64> = rows.iter().map(|x| x.as_f64().unwrap()).collect();
        return Tensor::from_slice(&flat).to_device(device);
    }
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
            .map(|x| tensor(x, device).set_requires_grad(true))
            .collect();
        let labels = tensor(&case["labels"], device);
        let batch = LossBatch {
            embeddings: &inputs,
            labels: Some(&labels),
            duplicate_mask: None,
            texts: None,
        };
        let value = loss
            .forward(&batch)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(value.size(), Vec::<i64>::new(), "{name}: loss must be 0-d");
        assert_eq!(value.kind(), Kind::Double, "{name}");
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
            let want = tensor(g, device);
            let got = x.grad();
            assert!(got.defined(), "{name}: no gradient for column {k}");
            // Elementwise relative error; entries far below the tensor's scale compare by
            // absolute error.
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
