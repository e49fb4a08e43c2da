//! Encoder parity with the reference (sentence-transformers 6.0.1 / transformers 5.24.0 on
//! torch 2.11.0, CPU fp32). Expected embeddings come from
//! tests/fixtures/encoder/make_fixtures.py; the tolerance is cosine >= 0.99999 and max
//! absolute difference <= 1e-4 for every text.

use std::path::{Path, PathBuf};

use embtune_core::encoder::SentenceEncoder;
use tch::Device;

const MIN_COS: f64 = 0.99999;
const MAX_ABS: f64 = 1e-4;

use embtune_tests::read_npy;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("encoder")
}

fn texts() -> Vec<String> {
    let s = std::fs::read_to_string(fixtures().join("texts.json")).unwrap();
    serde_json::from_str(&s).unwrap()
}

/// The default model; a missing model fails the test with the fix.
fn minilm_dir() -> PathBuf {
    let dir = embtune_core::default_model::default_model_dir();
    assert!(
        dir.join("model.safetensors").is_file(),
        "the default model all-MiniLM-L6-v2 is missing at {}: run scripts/fetch-model.sh",
        dir.display()
    );
    dir
}

/// (min cosine, max abs diff) between our rows and the reference's.
fn compare(ours: &tch::Tensor, reference: &Path) -> (f64, f64) {
    let (want, rows, cols) = read_npy(reference).unwrap();
    assert_eq!(
        ours.size(),
        vec![rows as i64, cols as i64],
        "shape vs {}",
        reference.display()
    );
    let got = Vec::<f32>::try_from(ours.contiguous().view([-1])).unwrap();
    let mut min_cos = f64::INFINITY;
    let mut max_abs = 0f64;
    for r in 0..rows {
        let a = &got[r * cols..(r + 1) * cols];
        let b = &want[r * cols..(r + 1) * cols];
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let cos = dot / (na * nb).max(1e-30);
        min_cos = min_cos.min(cos);
        for (x, y) in a.iter().zip(b) {
            max_abs = max_abs.max((*x as f64 - *y as f64).abs());
        }
    }
    (min_cos, max_abs)
}

fn assert_parity(name: &str, ours: &tch::Tensor, reference: &Path) {
    let (min_cos, max_abs) = compare(ours, reference);
    eprintln!("{name}: min cosine {min_cos:.8}, max abs diff {max_abs:.3e}");
    assert!(
        min_cos >= MIN_COS,
        "{name}: min cosine {min_cos} < {MIN_COS}"
    );
    assert!(
        max_abs <= MAX_ABS,
        "{name}: max abs diff {max_abs} > {MAX_ABS}"
    );
}

#[test]
fn minilm_matches_reference() {
    let enc = SentenceEncoder::load(&minilm_dir(), Device::Cpu).unwrap();
    assert_eq!(enc.max_seq_length(), 256);
    let t = texts();
    assert!(t.len() >= 200);
    let refs: Vec<&str> = t.iter().map(String::as_str).collect();
    let e = enc.encode(&refs, 64).unwrap();
    assert_parity("all-MiniLM-L6-v2", &e, &fixtures().join("minilm.npy"));
}

#[test]
fn gemma3_matches_reference() {
    let enc = SentenceEncoder::load(&fixtures().join("gemma3-tiny"), Device::Cpu).unwrap();
    assert_eq!(enc.max_seq_length(), 48);
    let t = texts();
    let refs: Vec<&str> = t.iter().map(String::as_str).collect();
    let e = enc.encode(&refs, 16).unwrap();
    assert_parity("gemma3-tiny", &e, &fixtures().join("gemma3-tiny.npy"));
}

#[test]
fn gemma3_query_prompt_excluded_from_pooling_matches_reference() {
    let enc = SentenceEncoder::load(&fixtures().join("gemma3-tiny"), Device::Cpu).unwrap();
    let prompt = enc.prompt("query").unwrap().to_string();
    assert_eq!(prompt, "task: search result | query: ");
    let t = texts();
    let refs: Vec<&str> = t.iter().map(String::as_str).collect();
    let e = enc.encode_with_prompt(&refs, Some(&prompt), 32).unwrap();
    assert_parity(
        "gemma3-tiny query prompt",
        &e,
        &fixtures().join("gemma3-tiny-query.npy"),
    );
}

#[test]
fn forward_matches_encode_and_batching_does_not_matter() {
    let enc = SentenceEncoder::load(&minilm_dir(), Device::Cpu).unwrap();
    let t = texts();
    let refs: Vec<&str> = t.iter().take(40).map(String::as_str).collect();
    let a = enc.encode(&refs, 7).unwrap();
    let b = enc.encode(&refs, 40).unwrap();
    let batch = enc.tokenize(&refs).unwrap();
    assert_eq!(batch.input_ids.size()[0], 40);
    assert!(batch.input_ids.size()[1] as usize <= enc.max_seq_length());
    let c = tch::no_grad(|| enc.forward(&batch, false)).unwrap();
    assert!(a.allclose(&b, 1e-5, 1e-5, false));
    assert!(a.allclose(&c, 1e-5, 1e-5, false));
}
