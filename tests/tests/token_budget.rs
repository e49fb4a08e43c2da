//! Token-budget GradCache mini-batches (`mini_batch_num_tokens`, sentence-transformers >= 5.7).
//!
//! - `train::minibatch_ranges` against the reference's `_minibatch_ranges`
//!   (base/losses/gradcache.py) on the cases of tests/fixtures/losses/minibatch_ranges.json,
//!   made by make_minibatch_ranges.py beside it; the budgets the reference rejects are
//!   rejected by `cached-mnrl` too.
//! - A micro-batch's gradients through the trainer's path (`micro_batch_gradients`) are the
//!   same with a token budget as with fixed-size mini-batches and as plain `mnrl` (dropout
//!   off, since mini-batch boundaries pick the dropout seeds); also for `matryoshka` around
//!   `cached-mnrl`, which hands its inner loss's budget to the trainer.

use std::path::{Path, PathBuf};

use embtune_core::encoder::SentenceEncoder;
use embtune_core::train::collator::Collator;
use embtune_core::train::data::Dataset;
use embtune_core::train::{minibatch_ranges, TrainConfig};
use embtune_core::{registry, ContrastiveLoss};
use embtune_tests::train_cases::{
    assert_same_gradients, fixture_model, gradients, lock, loss, model_copy, triplets,
};
use serde_json::{json, Map, Value};
use tch::{Device, Tensor};

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/losses/minibatch_ranges.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("ranges fixture"))
        .expect("valid JSON")
}

#[test]
fn ranges_match_the_reference() {
    let f = fixture();
    let cases = f["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    let mut with_budget = 0;
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let lengths: Vec<usize> = c["lengths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let mini = c["mini_batch_size"].as_u64().unwrap() as usize;
        let budget = c["mini_batch_num_tokens"].as_u64().map(|b| b as usize);
        with_budget += usize::from(budget.is_some());
        let want: Vec<(usize, usize)> = c["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r[0].as_u64().unwrap() as usize,
                    r[1].as_u64().unwrap() as usize,
                )
            })
            .collect();
        let got: Vec<(usize, usize)> = minibatch_ranges(&lengths, mini, budget)
            .into_iter()
            .map(|r| (r.start, r.end))
            .collect();
        assert_eq!(got, want, "{name}: lengths {lengths:?}, budget {budget:?}");
    }
    assert!(with_budget >= 8, "too few token-budget cases");
}

#[test]
fn budgets_the_reference_rejects_are_rejected() {
    embtune_plugins::link();
    for loss in ["cached-mnrl", "cached-gist"] {
        for bad in fixture()["rejected_budgets"].as_array().unwrap() {
            let mut opts = Map::new();
            opts.insert("mini_batch_num_tokens".into(), bad.clone());
            let e = registry::build::<dyn ContrastiveLoss>(loss, &opts)
                .err()
                .unwrap_or_else(|| panic!("{loss}: mini_batch_num_tokens={bad} accepted"))
                .to_string();
            assert!(
                e.contains("mini_batch_num_tokens") && e.contains("positive integer"),
                "{loss}: {e}"
            );
        }
    }
}

/// The Gemma3 tiny fixture with attention dropout off.
fn gemma(dir: &Path) -> PathBuf {
    model_copy(
        &fixture_model("gemma3-tiny"),
        dir,
        "gemma3-tiny",
        &[("attention_dropout", 0.0)],
    )
}

/// Two prompt groups (the anchors get a query prompt), batches of 6.
fn config(model: &Path, data: &Path, out: &Path, loss_name: &str) -> TrainConfig {
    let mut cfg = TrainConfig::new(model.into(), data.into(), loss_name, out.into());
    cfg.batch_size = 6;
    cfg.query_prompt = Some("query: ".into());
    cfg.document_prompt = Some(String::new());
    cfg
}

/// Per parameter: max |a - b| <= 1e-5 * max |b|; the loss within 1e-6 relative. (float32:
/// other mini-batch boundaries pad and sum differently, about 1e-6 of the gradient's scale.)
fn assert_same(what: &str, a: &(f64, Vec<(String, Tensor)>), b: &(f64, Vec<(String, Tensor)>)) {
    assert!(
        (a.0 - b.0).abs() <= 1e-6 * b.0.abs(),
        "{what}: loss {} vs {}",
        a.0,
        b.0
    );
    assert_same_gradients(what, &a.1, &b.1, 1e-5);
}

/// The token budget used below cuts every prompt group of micro-batch 1 into several
/// mini-batches, and not into the fixed-size ones, so the test exercises the packing.
fn check_budget_is_exercised(
    cfg: &TrainConfig,
    loss: &dyn ContrastiveLoss,
    enc: &SentenceEncoder,
    budget: usize,
    mini: usize,
) {
    let data = Dataset::read(&cfg.data)
        .unwrap()
        .prepare_for(&loss.inputs(), &cfg.loss_name)
        .unwrap();
    let mut collator = Collator::new(&data, &loss.inputs(), enc.tokenizer(), cfg).unwrap();
    let batch = collator.batch(1).unwrap();
    assert_eq!(batch.groups.len(), 2, "query and document groups");
    for g in &batch.groups {
        let lengths: Vec<usize> = g.ids.iter().map(Vec::len).collect();
        let packed = minibatch_ranges(&lengths, mini, Some(budget));
        assert!(
            packed.len() > 1,
            "budget {budget} gives one mini-batch for {lengths:?}"
        );
        assert_ne!(packed, minibatch_ranges(&lengths, mini, None));
    }
}

#[test]
fn gradients_with_a_token_budget_equal_those_without() {
    let _rng = lock();
    let tmp = tempfile::tempdir().unwrap();
    let model = gemma(tmp.path());
    let d = triplets(tmp.path(), 5);
    let enc = SentenceEncoder::load(&model, Device::Cpu).unwrap();
    let out = tmp.path().join("out");
    let budget = 40;

    let plain_cfg = config(&model, &d, &out, "mnrl");
    let plain = gradients(&plain_cfg, loss("mnrl", &[]).as_ref(), &enc);

    let cfg = config(&model, &d, &out, "cached-mnrl");
    let sized = loss("cached-mnrl", &[("mini_batch_size", json!(3))]);
    let by_size = gradients(&cfg, sized.as_ref(), &enc);
    let packed = loss(
        "cached-mnrl",
        &[
            ("mini_batch_size", json!(3)),
            ("mini_batch_num_tokens", json!(budget)),
        ],
    );
    assert_eq!(packed.mini_batch_num_tokens(), Some(budget));
    check_budget_is_exercised(&cfg, packed.as_ref(), &enc, budget, 3);
    let by_tokens = gradients(&cfg, packed.as_ref(), &enc);
    assert_same("cached-mnrl by size vs mnrl", &by_size, &plain);
    assert_same("cached-mnrl by tokens vs mnrl", &by_tokens, &plain);
    assert_same("cached-mnrl by tokens vs by size", &by_tokens, &by_size);

    // matryoshka hands its inner loss's budget to the trainer.
    let m_cfg = config(&model, &d, &out, "matryoshka");
    let m_plain = loss(
        "matryoshka",
        &[
            ("loss", json!("mnrl")),
            ("matryoshka_dims", json!([32, 16, 8])),
        ],
    );
    let m_packed = loss(
        "matryoshka",
        &[
            ("loss", json!("cached-mnrl")),
            ("matryoshka_dims", json!([32, 16, 8])),
            ("mini_batch_num_tokens", json!(budget)),
        ],
    );
    assert_eq!(m_packed.mini_batch_num_tokens(), Some(budget));
    assert_eq!(m_packed.mini_batch_size(), Some(32));
    let a = gradients(&m_cfg, m_plain.as_ref(), &enc);
    let b = gradients(&m_cfg, m_packed.as_ref(), &enc);
    assert_same(
        "matryoshka(cached-mnrl by tokens) vs matryoshka(mnrl)",
        &b,
        &a,
    );
    assert!(
        (a.0 - plain.0).abs() > 1e-6,
        "matryoshka adds the truncated terms: {} vs {}",
        a.0,
        plain.0
    );
}
