//! Parity of the RoBERTa-family and ModernBERT backbones with the reference
//! (sentence-transformers 6.0.1 / transformers 5.24.0 on torch 2.11.0, CPU fp32). Expected
//! embeddings come from tests/fixtures/encoder/make_fixtures_backbones.py (tiny random
//! models with their own tokenizers); the tolerance is cosine >= 0.99999 and max absolute
//! difference <= 1e-4 for every text of texts.json.

use std::path::{Path, PathBuf};

use embtune_core::encoder::SentenceEncoder;
use embtune_tests::read_npy;
use tch::Device;

const MIN_COS: f64 = 0.99999;
const MAX_ABS: f64 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("encoder")
}

fn texts() -> Vec<String> {
    let s = std::fs::read_to_string(fixtures().join("texts.json")).unwrap();
    serde_json::from_str(&s).unwrap()
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
        min_cos = min_cos.min(dot / (na * nb).max(1e-30));
        for (x, y) in a.iter().zip(b) {
            max_abs = max_abs.max((*x as f64 - *y as f64).abs());
        }
    }
    (min_cos, max_abs)
}

/// Encodes texts.json with the fixture folder `name` and checks it against `name.npy`;
/// returns the encoder.
fn check_fixture(name: &str, max_seq_length: usize) -> SentenceEncoder {
    let enc = SentenceEncoder::load(&fixtures().join(name), Device::Cpu).unwrap();
    assert_eq!(enc.max_seq_length(), max_seq_length, "{name}");
    let t = texts();
    assert!(t.len() >= 200);
    let refs: Vec<&str> = t.iter().map(String::as_str).collect();
    let e = enc.encode(&refs, 16).unwrap();
    let (min_cos, max_abs) = compare(&e, &fixtures().join(format!("{name}.npy")));
    eprintln!("{name}: min cosine {min_cos:.8}, max abs diff {max_abs:.3e}");
    assert!(
        min_cos >= MIN_COS,
        "{name}: min cosine {min_cos} < {MIN_COS}"
    );
    assert!(
        max_abs <= MAX_ABS,
        "{name}: max abs diff {max_abs} > {MAX_ABS}"
    );
    enc
}

/// The id of `token` in the folder's tokenizer.json vocabulary (added tokens included).
fn token_id(name: &str, token: &str) -> i64 {
    let s = std::fs::read_to_string(fixtures().join(name).join("tokenizer.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    v["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["content"] == token)
        .and_then(|t| t["id"].as_i64())
        .unwrap_or_else(|| panic!("{name}: no added token {token}"))
}

/// Padded positions of a batch of a short and a long text hold `pad`.
fn assert_pads_with(enc: &SentenceEncoder, pad: i64) {
    let batch = enc
        .tokenize(&["a", "a much longer text than the first one"])
        .unwrap();
    let ids = Vec::<i64>::try_from(batch.input_ids.view([-1])).unwrap();
    let mask = Vec::<i64>::try_from(batch.attention_mask.view([-1])).unwrap();
    let padded: Vec<i64> = ids
        .iter()
        .zip(&mask)
        .filter(|(_, m)| **m == 0)
        .map(|(i, _)| *i)
        .collect();
    assert!(!padded.is_empty());
    assert!(padded.iter().all(|&i| i == pad), "{padded:?} vs pad {pad}");
}

#[test]
fn xlm_roberta_matches_reference() {
    let enc = check_fixture("xlm-roberta-tiny", 96);
    assert_pads_with(&enc, 1);
}

/// A real token equal to the pad id keeps position `padding_idx`, as transformers derives
/// RoBERTa positions from the ids rather than the attention mask.
#[test]
fn xlm_roberta_literal_pad_token_matches_reference() {
    let enc = SentenceEncoder::load(&fixtures().join("xlm-roberta-tiny"), Device::Cpu).unwrap();
    // PAD_TEXTS of make_fixtures_backbones.py.
    let texts = [
        "a <pad> b",
        "<pad>",
        "x <pad><pad> y z",
        "the model <pad> 검색 결과",
    ];
    let e = enc.encode(&texts, 4).unwrap();
    let (min_cos, max_abs) = compare(&e, &fixtures().join("xlm-roberta-tiny-pad.npy"));
    eprintln!("xlm-roberta-tiny <pad> texts: min cosine {min_cos:.8}, max abs diff {max_abs:.3e}");
    assert!(
        min_cos >= MIN_COS && max_abs <= MAX_ABS,
        "{min_cos} {max_abs}"
    );
}

#[test]
fn roberta_with_cls_pooling_matches_reference() {
    let enc = check_fixture("roberta-tiny", 64);
    assert_pads_with(&enc, token_id("roberta-tiny", "<pad>"));
}

/// A checkpoint with RobertaForMaskedLM's `roberta.` prefix loads into the same model.
#[test]
fn roberta_prefixed_checkpoint_gives_the_same_embeddings() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures().join("roberta-tiny");
    let dst = tmp.path().join("prefixed");
    embtune_tests::copy_dir(&src, &dst);
    let tensors = tch::Tensor::read_safetensors(src.join("model.safetensors")).unwrap();
    let prefixed: Vec<(String, tch::Tensor)> = tensors
        .into_iter()
        .map(|(n, t)| (format!("roberta.{n}"), t))
        .collect();
    embtune_core::encoder::safetensors::write(&dst.join("model.safetensors"), &prefixed).unwrap();
    let t = texts();
    let refs: Vec<&str> = t.iter().take(32).map(String::as_str).collect();
    let a = SentenceEncoder::load(&src, Device::Cpu)
        .unwrap()
        .encode(&refs, 8)
        .unwrap();
    let b = SentenceEncoder::load(&dst, Device::Cpu)
        .unwrap()
        .encode(&refs, 8)
        .unwrap();
    assert!(a.equal(&b));
}

#[test]
fn modernbert_matches_reference() {
    let enc = check_fixture("modernbert-tiny", 64);
    let pad = token_id("modernbert-tiny", "[PAD]");
    assert!(pad > 0);
    assert_pads_with(&enc, pad);
}

/// RoBERTa's positions start after `padding_idx`: a sequence as long as the position
/// table (less the offset) runs, one more token is refused with the fix.
#[test]
fn roberta_positions_cover_the_table_less_the_padding_offset() {
    let mut enc = SentenceEncoder::load(&fixtures().join("xlm-roberta-tiny"), Device::Cpu).unwrap();
    // max_position_embeddings 98, padding_idx 1: 96 positions.
    enc.set_max_seq_length(96).unwrap();
    let long = "word ".repeat(400);
    let e = enc.encode(&[long.as_str()], 1).unwrap();
    assert_eq!(e.size()[0], 1);
    // One more is refused when it is set, naming the range.
    let e = enc.set_max_seq_length(97).unwrap_err().to_string();
    assert!(
        e.contains("--max-seq-length 97 is out of range: this model takes 1 to 96 tokens"),
        "{e}"
    );
}

/// Saved folders load back and give the same embeddings.
#[test]
fn saved_folders_reload_with_the_same_embeddings() {
    let tmp = tempfile::tempdir().unwrap();
    let t = texts();
    let refs: Vec<&str> = t.iter().take(24).map(String::as_str).collect();
    for name in ["xlm-roberta-tiny", "roberta-tiny", "modernbert-tiny"] {
        let enc = SentenceEncoder::load(&fixtures().join(name), Device::Cpu).unwrap();
        let a = enc.encode(&refs, 8).unwrap();
        let out = tmp.path().join(name);
        enc.save(&out).unwrap();
        let again = SentenceEncoder::load(&out, Device::Cpu).unwrap();
        let b = again.encode(&refs, 8).unwrap();
        assert!(a.allclose(&b, 1e-6, 1e-6, false), "{name}");
    }
}

/// Writes our saves of the three fixtures under `$EMBTUNE_ROUNDTRIP_DIR` for
/// tests/fixtures/encoder/check_saved_folder.py (the reference side of the round trip):
/// `EMBTUNE_ROUNDTRIP_DIR=/tmp/rt cargo test -p embtune-tests --test backbones_parity -- --ignored`
#[test]
#[ignore = "writes folders for the Python reference check; needs EMBTUNE_ROUNDTRIP_DIR"]
fn save_folders_for_reference_check() {
    let root =
        PathBuf::from(std::env::var("EMBTUNE_ROUNDTRIP_DIR").expect("set EMBTUNE_ROUNDTRIP_DIR"));
    for name in ["xlm-roberta-tiny", "roberta-tiny", "modernbert-tiny"] {
        SentenceEncoder::load(&fixtures().join(name), Device::Cpu)
            .unwrap()
            .save(&root.join(name))
            .unwrap();
    }
}
