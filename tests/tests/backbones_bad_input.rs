//! Bad backbone folders fail with one line naming the file, the field and the fix, through
//! the library and through `embtune encode` (non-zero exit, no output written): a config.json
//! missing a field the architecture needs, no pad token anywhere, an unsupported model_type.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use embtune_core::encoder::SentenceEncoder;
use serde_json::Value;
use tch::Device;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("encoder")
        .join(name)
}

/// A copy of fixture `name` under `tmp` with `edit` applied to its JSON file `file`.
fn edited(tmp: &Path, name: &str, file: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let dir = tmp.join(name);
    if !dir.exists() {
        embtune_tests::copy_dir(&fixture(name), &dir);
    }
    let path = dir.join(file);
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    dir
}

fn remove(key: &'static str) -> impl FnOnce(&mut Value) {
    move |v| {
        v.as_object_mut().unwrap().remove(key).expect(key);
    }
}

/// The load error's message, checked to be one line holding every one of `want`.
fn load_error(dir: &Path, want: &[&str]) -> String {
    let err = SentenceEncoder::load(dir, Device::Cpu)
        .err()
        .expect("loading should fail")
        .to_string();
    assert!(!err.contains('\n'), "not one line: {err}");
    for w in want {
        assert!(err.contains(w), "{w:?} missing from: {err}");
    }
    err
}

/// `embtune encode` on `model` fails and writes nothing.
fn cli_fails(model: &Path, tmp: &Path) {
    let input = tmp.join("in.txt");
    std::fs::write(&input, "한국어 문장\nan English sentence\n").unwrap();
    let out = tmp.join("out.npy");
    let code = embtune::run_from([
        "embtune",
        "encode",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_eq!(code, ExitCode::FAILURE);
    assert!(!out.exists(), "a failed encode wrote {}", out.display());
}

#[test]
fn qwen3_config_without_num_attention_heads_names_the_field_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = edited(
        tmp.path(),
        "qwen3-tiny",
        "config.json",
        remove("num_attention_heads"),
    );
    load_error(
        &dir,
        &[
            "config.json",
            "qwen3",
            "`num_attention_heads`",
            "fix config.json",
        ],
    );
    cli_fails(&dir, tmp.path());
}

#[test]
fn xlm_roberta_config_without_hidden_size_names_the_field_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = edited(
        tmp.path(),
        "xlm-roberta-tiny",
        "config.json",
        remove("hidden_size"),
    );
    load_error(&dir, &["config.json", "`hidden_size`", "fix config.json"]);
    cli_fails(&dir, tmp.path());
}

#[test]
fn modernbert_and_gemma3_configs_name_a_missing_field() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = edited(
        tmp.path(),
        "modernbert-tiny",
        "config.json",
        remove("num_hidden_layers"),
    );
    load_error(
        &dir,
        &[
            "config.json",
            "modernbert",
            "`num_hidden_layers`",
            "fix config.json",
        ],
    );
    let dir = edited(
        tmp.path(),
        "gemma3-tiny",
        "config.json",
        remove("hidden_size"),
    );
    load_error(
        &dir,
        &[
            "config.json",
            "gemma3_text",
            "`hidden_size`",
            "fix config.json",
        ],
    );
}

#[test]
fn no_pad_token_anywhere_says_where_to_set_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = edited(
        tmp.path(),
        "qwen3-tiny",
        "tokenizer_config.json",
        remove("pad_token"),
    );
    // config.json's pad_token_id stands in when the tokenizer names none.
    let enc = SentenceEncoder::load(&dir, Device::Cpu).unwrap();
    assert_eq!(enc.tokenizer().pad_id(), 1000);
    let dir = edited(
        tmp.path(),
        "qwen3-tiny",
        "config.json",
        remove("pad_token_id"),
    );
    load_error(
        &dir,
        &[
            "names no pad token",
            "pad_token in tokenizer_config.json",
            "pad_token_id in config.json",
        ],
    );
    cli_fails(&dir, tmp.path());
}

#[test]
fn unsupported_model_type_lists_the_supported_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = edited(tmp.path(), "roberta-tiny", "config.json", |v| {
        v["model_type"] = "t5".into();
    });
    let mut want = vec!["config.json", "model_type 't5' is not supported"];
    want.extend(embtune_core::models::SUPPORTED_MODEL_TYPES);
    load_error(&dir, &want);
    cli_fails(&dir, tmp.path());
}
