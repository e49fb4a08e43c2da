//! Retrieval and triplet metrics against sentence-transformers' evaluators.
//!
//! Fixture: tests/fixtures/metrics/metrics.json, made by make_metrics.py beside it
//! (InformationRetrievalEvaluator and TripletEvaluator of sentence-transformers 6.0.1 on fixed
//! embeddings, with many exact score ties). Tolerance: 1e-9 absolute on float64 metrics, 1e-6
//! on the triplet accuracies, which the reference averages in float32.

use std::collections::HashMap;

use embtune_core::eval::metrics::{information_retrieval, triplet_accuracy, RetrievalCutoffs};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/metrics/metrics.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("metrics fixture"))
        .expect("valid JSON")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn information_retrieval_matches_the_reference_evaluator() {
    let f = fixture();
    let query_ids = strings(&f["query_ids"]);
    let corpus_ids = strings(&f["corpus_ids"]);
    let column: HashMap<&str, usize> = corpus_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let relevant: Vec<Vec<usize>> = query_ids
        .iter()
        .map(|q| match f["relevant_docs"].get(q) {
            Some(ids) => strings(ids).iter().map(|id| column[id.as_str()]).collect(),
            None => Vec::new(),
        })
        .collect();
    let expected = f["expected"].as_object().unwrap();
    let mut compared = 0;
    let mut max_err: f64 = 0.0;
    for (score_fn, scores) in f["scores"].as_object().unwrap() {
        let flat: Vec<f64> = matrix(scores).concat();
        let m = information_retrieval(&flat, &corpus_ids, &relevant, &RetrievalCutoffs::default())
            .unwrap();
        assert_eq!(
            m.queries,
            f["evaluated_query_ids"].as_array().unwrap().len()
        );
        let named = m.named(score_fn);
        let want_count = expected
            .keys()
            .filter(|k| k.starts_with(&format!("{score_fn}_")))
            .count();
        assert_eq!(
            named.len(),
            want_count,
            "{score_fn}: metric names differ from the reference's"
        );
        for (name, value) in named {
            let want = expected
                .get(&name)
                .unwrap_or_else(|| panic!("reference has no metric {name}"))
                .as_f64()
                .unwrap();
            let err = (value - want).abs();
            max_err = max_err.max(err);
            assert!(err <= 1e-9, "{name}: {value} vs reference {want}");
            compared += 1;
        }
    }
    assert_eq!(compared, expected.len());
    println!("retrieval metrics: {compared} compared, max abs error {max_err:e}");
}

#[test]
fn fixture_exercises_ties() {
    let f = fixture();
    for (name, ties) in f["row_ties"].as_object().unwrap() {
        assert!(
            ties.as_u64().unwrap() > 10,
            "{name}: the fixture should hold many tied scores"
        );
    }
}

fn cos(x: &[f64], y: &[f64]) -> f64 {
    let dot: f64 = x.iter().zip(y).map(|(a, b)| a * b).sum();
    let n = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
    dot / (n(x) * n(y))
}

#[test]
fn triplet_accuracy_matches_the_reference_evaluator() {
    let f = fixture();
    let t = &f["triplet"];
    let (a, p, n) = (
        matrix(&t["anchors"]),
        matrix(&t["positives"]),
        matrix(&t["negatives"]),
    );
    let pos: Vec<f64> = a.iter().zip(&p).map(|(a, p)| cos(a, p)).collect();
    let neg: Vec<f64> = a.iter().zip(&n).map(|(a, n)| cos(a, n)).collect();
    for case in t["cases"].as_array().unwrap() {
        let margin = case["margin"].as_f64().unwrap();
        let want = case["metrics"]["cosine_accuracy"].as_f64().unwrap();
        let got = triplet_accuracy(&pos, &neg, margin).unwrap();
        assert!(
            (got - want).abs() < 1e-6,
            "margin {margin}: {got} vs reference {want}"
        );
    }
}
