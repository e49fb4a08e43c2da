//! `--truncate-dim D` of `embtune encode` and `embtune eval` (sentence-transformers'
//! `truncate_dim`: the first D dimensions of the model's output, not re-normalised).
//!
//! Reference: tests/fixtures/truncate_dim/truncate_eval.json, made by make_truncate_eval.py
//! beside it (sentence-transformers 6.0.1, the tiny Gemma3 fixture model, dimension 32):
//! InformationRetrievalEvaluator and TripletEvaluator with truncate_dim 8 (and without, to
//! show that truncation changes the metrics), and `encode(truncate_dim=8)`. Metrics are
//! rank-based, so they must agree to rounding (1e-6: the reference averages the triplet
//! accuracy in float32); embeddings within the encoder parity's tolerance (1e-4 absolute).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use embtune::commands::encode::{self, EncodeArgs};
use embtune::commands::eval::{self, EvalArgs, EvalSources};
use embtune::commands::ranks::DistArgs;
use embtune::commands::PromptArgs;
use serde_json::Value;

use embtune_tests::read_npy;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn gemma_dir() -> PathBuf {
    fixtures().join("encoder").join("gemma3-tiny")
}

fn reference() -> Value {
    let p = fixtures().join("truncate_dim").join("truncate_eval.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("fixture")).unwrap()
}

fn run(args: &[&str]) -> ExitCode {
    let mut v = vec!["embtune"];
    v.extend_from_slice(args);
    embtune::run_from(v)
}

/// `embtune encode` of `input` into `out`, with extra flags.
fn encode_cli(input: &Path, out: &Path, extra: &[&str]) -> ExitCode {
    let model = gemma_dir();
    let mut args = vec![
        "encode",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

fn queries_txt(dir: &Path, texts: &[String]) -> PathBuf {
    let p = dir.join("texts.txt");
    std::fs::write(&p, texts.join("\n") + "\n").unwrap();
    p
}

#[test]
fn encode_truncated_is_the_first_columns_of_the_full_encode_and_the_reference() {
    let r = reference();
    let d = r["truncate_dim"].as_u64().unwrap() as usize;
    let texts: Vec<String> = r["encode_texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let input = queries_txt(tmp.path(), &texts);
    let full = tmp.path().join("full.npy");
    let cut = tmp.path().join("cut.npy");
    assert_eq!(encode_cli(&input, &full, &[]), ExitCode::SUCCESS);
    let d_arg = d.to_string();
    assert_eq!(
        encode_cli(&input, &cut, &["--truncate-dim", &d_arg]),
        ExitCode::SUCCESS
    );
    let (full, n, dim) = read_npy(&full).unwrap();
    let (cut, n2, dim2) = read_npy(&cut).unwrap();
    assert_eq!((n, dim), (texts.len(), 32));
    assert_eq!((n2, dim2), (texts.len(), d));
    for i in 0..n {
        assert_eq!(
            &cut[i * d..(i + 1) * d],
            &full[i * dim..i * dim + d],
            "row {i}"
        );
    }
    // Not re-normalised (the model's own Normalize module made the full rows unit length).
    let norm: f32 = cut[..d].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(
        (norm - 1.0).abs() > 1e-3,
        "row 0 of the cut is unit length: {norm}"
    );
    let want = r["encode_truncated"].as_array().unwrap();
    let mut worst = 0.0f64;
    for (i, row) in want.iter().enumerate() {
        for (j, x) in row.as_array().unwrap().iter().enumerate() {
            worst = worst.max((cut[i * d + j] as f64 - x.as_f64().unwrap()).abs());
        }
    }
    assert!(worst <= 1e-4, "max |diff| vs the reference {worst:e}");
    eprintln!("encode --truncate-dim {d}: max |diff| vs the reference {worst:e}");

    // JSON Lines: each embedding has D numbers.
    let jsonl = tmp.path().join("cut.jsonl");
    assert_eq!(
        encode_cli(&input, &jsonl, &["--truncate-dim", &d_arg]),
        ExitCode::SUCCESS
    );
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(&jsonl)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["embedding"].as_array().unwrap().len(), d);
}

fn encode_args(input: &Path, out: &Path, truncate_dim: usize) -> EncodeArgs {
    EncodeArgs {
        model: Some(gemma_dir()),
        input: input.to_path_buf(),
        column: None,
        output: out.to_path_buf(),
        prompt: None,
        prompt_name: None,
        batch_size: 8,
        truncate_dim: Some(truncate_dim),
        device: "cpu".into(),
        precision: "auto".into(),
        quiet: true,
        dist: DistArgs {
            nproc_per_node: 1,
            dist_timeout: 1800,
            dist_backend: "auto".into(),
        },
    }
}

#[test]
fn encode_bad_truncate_dim_is_one_line_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = queries_txt(tmp.path(), &["a text".to_string(), "another".to_string()]);
    for bad in ["0", "33"] {
        let out = tmp.path().join(format!("out-{bad}.npy"));
        assert_eq!(
            encode_cli(&input, &out, &["--truncate-dim", bad]),
            ExitCode::FAILURE,
            "--truncate-dim {bad}"
        );
        assert!(
            !out.exists(),
            "--truncate-dim {bad} wrote {}",
            out.display()
        );
        let e = encode::run(encode_args(&input, &out, bad.parse().unwrap()), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("--truncate-dim {bad}"))
                && e.contains("embedding dimension 32")
                && !e.contains('\n'),
            "{e}"
        );
        assert!(!out.exists());
    }
    // Not a number: clap's usage error.
    let out = tmp.path().join("out.npy");
    assert_eq!(
        encode_cli(&input, &out, &["--truncate-dim", "-1"]),
        ExitCode::from(2)
    );
    assert!(!out.exists());
}

fn eval_args(truncate_dim: Option<usize>) -> EvalArgs {
    let dir = fixtures().join("truncate_dim");
    EvalArgs {
        model: Some(gemma_dir()),
        device: "cpu".into(),
        batch_size: 4,
        truncate_dim,
        prompts: PromptArgs {
            query_prompt: None,
            query_prompt_name: Some("query".into()),
            document_prompt: None,
            document_prompt_name: Some("document".into()),
        },
        eval: EvalSources {
            eval_dir: Some(dir.clone()),
            triplets: Some(dir.join("triplets.csv")),
            ..Default::default()
        },
    }
}

/// Every reference metric of `want` (retrieval and triplet) equals ours.
fn same_metrics(what: &str, got: &std::collections::BTreeMap<String, f64>, want: &[&Value]) {
    let mut n = 0;
    for w in want {
        for (k, v) in w.as_object().unwrap() {
            let g = got
                .get(k)
                .unwrap_or_else(|| panic!("{what}: no metric {k} in {got:?}"));
            let v = v.as_f64().unwrap();
            assert!((g - v).abs() <= 1e-6, "{what}: {k} = {g}, reference {v}");
            n += 1;
        }
    }
    assert!(n >= 16, "{what}: only {n} metrics compared");
}

#[test]
fn eval_truncated_gives_the_reference_metrics() {
    let r = reference();
    let d = r["truncate_dim"].as_u64().unwrap() as usize;
    let cut = eval::metrics(&eval_args(Some(d))).unwrap();
    same_metrics(
        "truncated",
        &cut,
        &[&r["retrieval_truncated"], &r["triplet_truncated"]],
    );
    let full = eval::metrics(&eval_args(None)).unwrap();
    same_metrics("full", &full, &[&r["retrieval_full"], &r["triplet_full"]]);
    assert_ne!(
        r["retrieval_truncated"], r["retrieval_full"],
        "the fixture does not show truncation changing the metrics"
    );
}

#[test]
fn eval_bad_truncate_dim_is_one_line() {
    for bad in [0usize, 33] {
        let e = eval::metrics(&eval_args(Some(bad)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("--truncate-dim {bad}"))
                && e.contains("embedding dimension 32")
                && !e.contains('\n'),
            "{e}"
        );
        let dir = fixtures().join("truncate_dim");
        let model = gemma_dir();
        let bad = bad.to_string();
        assert_eq!(
            run(&[
                "eval",
                "--model",
                model.to_str().unwrap(),
                "--device",
                "cpu",
                "--eval-dir",
                dir.to_str().unwrap(),
                "--truncate-dim",
                &bad,
            ]),
            ExitCode::FAILURE
        );
    }
}
