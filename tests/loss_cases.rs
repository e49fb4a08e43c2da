//! The case runner the loss parity tests share (losses_parity, matryoshka_parity,
//! distill_parity, gist_parity). A fixture (tests/fixtures/losses/*.json, each made by the
//! make_*.py script beside it from sentence-transformers) lists cases: `name`, `loss`,
//! `options`, `inputs` (one float64 matrix per embedding column), optional `labels`, and the
//! reference's `expected_loss` and `expected_grads` (the gradient of each input column).

use embtune_core::registry;
use embtune_core::{ContrastiveLoss, LossBatch};
use serde_json::{Map, Value};
use tch::{Device, Tensor};

/// Relative tolerance of values and gradients (observed errors are at float64 rounding
/// level, about 1e-15).
pub const REL_TOL: f64 = 1e-5;

/// The fixture `tests/fixtures/losses/{file}`, with the plugins' losses registered.
pub fn fixture(file: &str) -> Value {
    embtune_plugins::link();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/losses")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("valid JSON")
}

/// A JSON number list `(n,)` or list of lists `(n, m)` as a float64 tensor on `device`.
pub fn tensor(v: &Value, device: Device) -> Tensor {
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

/// A JSON list of matrices as tensors.
pub fn tensors(v: &Value, device: Device) -> Vec<Tensor> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| tensor(x, device))
        .collect()
}

/// Largest elementwise `|got - want| / max(|want|, floor)`.
pub fn rel_err(got: &Tensor, want: &Tensor, floor: f64) -> f64 {
    let diff = (got - want).abs();
    (diff / want.abs().clamp_min(floor)).max().double_value(&[])
}

/// Checks one case's loss `value`, computed from `inputs` (leaves that require a gradient),
/// against the reference: a 0-d float64 value within [`REL_TOL`], then (after the backward)
/// each column's gradient elementwise within [`REL_TOL`], entries far below the tensor's
/// scale (exact zeros of relu, masked entries) by absolute error. Returns (value error,
/// largest gradient error).
pub fn check_case(case: &Value, value: &Tensor, inputs: &[Tensor], device: Device) -> (f64, f64) {
    let name = case["name"].as_str().unwrap();
    assert_eq!(value.size(), Vec::<i64>::new(), "{name}: loss must be 0-d");
    assert_eq!(
        value.kind(),
        tch::Kind::Double,
        "{name}: float64 in, float64 out"
    );
    value.backward();
    let want = case["expected_loss"].as_f64().unwrap();
    let got = value.double_value(&[]);
    let value_err = (got - want).abs() / want.abs().max(1e-12);
    assert!(
        value_err <= REL_TOL,
        "{name}: loss {got} vs reference {want} (rel {value_err:e})"
    );
    let mut grad_err = 0.0f64;
    for (k, (x, g)) in inputs
        .iter()
        .zip(case["expected_grads"].as_array().unwrap())
        .enumerate()
    {
        let want = tensor(g, device);
        let got = x.grad();
        assert!(got.defined(), "{name}: no gradient for column {k}");
        let scale = want.abs().max().double_value(&[]).max(1e-12);
        let err = rel_err(&got, &want, 1e-6 * scale);
        assert!(
            err <= REL_TOL,
            "{name}: gradient of column {k} differs (rel {err:e})\n{got}\nvs\n{want}"
        );
        grad_err = grad_err.max(err);
    }
    (value_err, grad_err)
}

/// Runs every case of `fixture` whose loss the registry builds from `loss` and `options`
/// (labels when the case has them) on `device`; returns (case count, largest value error,
/// largest gradient error).
pub fn run_registry_cases(fixture: &Value, device: Device) -> (usize, f64, f64) {
    let (mut max_value_err, mut max_grad_err) = (0.0f64, 0.0f64);
    let cases = fixture["cases"].as_array().unwrap();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let options: Map<String, Value> = case["options"].as_object().unwrap().clone();
        let loss = registry::build::<dyn ContrastiveLoss>(case["loss"].as_str().unwrap(), &options)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let inputs: Vec<Tensor> = tensors(&case["inputs"], device)
            .into_iter()
            .map(|t| t.set_requires_grad(true))
            .collect();
        let labels = case
            .get("labels")
            .filter(|l| l.is_array())
            .map(|l| tensor(l, device));
        let value = loss
            .forward(&LossBatch {
                embeddings: &inputs,
                labels: labels.as_ref(),
                duplicate_mask: None,
                texts: None,
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (v, g) = check_case(case, &value, &inputs, device);
        max_value_err = max_value_err.max(v);
        max_grad_err = max_grad_err.max(g);
    }
    (cases.len(), max_value_err, max_grad_err)
}
