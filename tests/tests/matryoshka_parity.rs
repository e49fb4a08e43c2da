//! `matryoshka` against sentence-transformers' MatryoshkaLoss: value and gradient with
//! respect to each embedding column, on fixed random float64 embeddings (D = 8), around
//! MNRL (pairs; one hard negative with custom weights; hardness
//! weighting), CoSENT (scored pairs), TripletLoss (euclidean: shows the re-normalisation
//! after truncation) and CachedMNRL (mini_batch_size 4).
//!
//! Fixture: tests/fixtures/losses/matryoshka.json, made by make_matryoshka.py beside it
//! (sentence-transformers 6.0.1 on torch 2.11), in the case layout of losses.json and
//! checked the same way. Tolerance: 1e-5 relative.

use embtune_core::registry;
use embtune_core::{ContrastiveLoss, LossBatch};
use serde_json::{Map, Value};
use tch::{Device, Tensor};

const REL_TOL: f64 = 1e-5;

fn fixture() -> Value {
    embtune_plugins::link();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/losses/matryoshka.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("matryoshka fixture"))
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

/// Runs every case on `device`; returns (case count, max relative error of values, of
/// gradients).
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
        let value = loss
            .forward(&LossBatch {
                embeddings: &inputs,
                labels: labels.as_ref(),
                duplicate_mask: None,
                texts: None,
            })
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
            // Relative error, except entries far below the tensor's scale (exact zeros of
            // relu) compare by absolute error.
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
fn matryoshka_losses_and_gradients_match_sentence_transformers() {
    let (n, v, g) = run_cases(Device::Cpu);
    assert!(n >= 6);
    println!("{n} cases on CPU: max relative error {v:e} (values), {g:e} (gradients)");
}

#[test]
fn matryoshka_matches_on_cuda() {
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device; skipped");
        return;
    }
    let (n, v, g) = run_cases(Device::Cuda(0));
    println!("{n} cases on CUDA: max relative error {v:e} (values), {g:e} (gradients)");
}

#[test]
fn fixture_covers_the_inner_losses_of_the_brief() {
    let f = fixture();
    let inner: Vec<&str> = f["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["options"]["loss"].as_str().unwrap())
        .collect();
    for name in ["mnrl", "cosent", "cached-mnrl", "triplet"] {
        assert!(inner.contains(&name), "no matryoshka case around {name}");
    }
}

/// The wrapper is a plain registered loss: listed with the others, builds from its defaults.
#[test]
fn matryoshka_is_registered_and_described() {
    embtune_plugins::link();
    let infos = registry::loss_infos().unwrap();
    let info = infos
        .iter()
        .find(|i| i.name == "matryoshka")
        .expect("described");
    let reg = registry::lookup::<dyn ContrastiveLoss>("matryoshka").unwrap();
    assert_eq!(info.long_doc, reg.long_doc);
    assert_eq!((info.default_config)(), (reg.default_config)());
    reg.build_with(&Map::new()).unwrap();
}
