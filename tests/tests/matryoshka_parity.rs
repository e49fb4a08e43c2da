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
use embtune_core::ContrastiveLoss;
use embtune_tests::loss_cases;
use serde_json::{Map, Value};
use tch::Device;

fn fixture() -> Value {
    loss_cases::fixture("matryoshka.json")
}

/// Runs every fixture case on `device` (tests/loss_cases.rs); returns (case count, max
/// relative error of values, max relative error of gradients).
fn run_cases(device: Device) -> (usize, f64, f64) {
    loss_cases::run_registry_cases(&fixture(), device)
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
