//! `embtune encode` and `embtune score` end to end (through `embtune::run_from`), and
//! their bad inputs: one clear error, non-zero exit, no panic.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use embtune::commands::score::score_documents;
use embtune_core::encoder::SentenceEncoder;
use tch::Device;

use embtune_tests::read_npy;

fn gemma_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("encoder")
        .join("gemma3-tiny")
}

fn run(args: &[&str]) -> ExitCode {
    let mut v = vec!["embtune"];
    v.extend_from_slice(args);
    embtune::run_from(v)
}

#[test]
fn encode_txt_to_npy_and_jsonl_matches_the_library() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.txt");
    std::fs::write(
        &input,
        "first text\r\n\nthird, after an empty line\n한국어\n",
    )
    .unwrap();
    let model = gemma_dir();
    let out = tmp.path().join("out.npy");
    let code = run(&[
        "encode",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--batch-size",
        "2",
    ]);
    assert_eq!(code, ExitCode::SUCCESS);
    let (data, rows, cols) = read_npy(&out).unwrap();
    assert_eq!((rows, cols), (4, 32));
    let enc = SentenceEncoder::load(&model, Device::Cpu).unwrap();
    let want = enc
        .encode(
            &["first text", "", "third, after an empty line", "한국어"],
            8,
        )
        .unwrap();
    let want = Vec::<f32>::try_from(want.view([-1])).unwrap();
    for (a, b) in data.iter().zip(&want) {
        assert!((a - b).abs() < 1e-5);
    }

    let out = tmp.path().join("out.jsonl");
    let code = run(&[
        "encode",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--prompt-name",
        "query",
    ]);
    assert_eq!(code, ExitCode::SUCCESS);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["text"], "한국어");
    let q = enc
        .encode_with_prompt(&["first text"], Some(enc.prompt("query").unwrap()), 1)
        .unwrap();
    let got: Vec<f32> = lines[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let q = Vec::<f32>::try_from(q.view([-1])).unwrap();
    assert_eq!(got.len(), 32);
    for (a, b) in got.iter().zip(&q) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn encode_csv_column() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.csv");
    std::fs::write(&input, "id,desc\n1,red apple\n2,\"blue, river\"\n").unwrap();
    let out = tmp.path().join("out.npy");
    let model = gemma_dir();
    let code = run(&[
        "encode",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--column",
        "desc",
        "--output",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_eq!(code, ExitCode::SUCCESS);
    assert_eq!(read_npy(&out).unwrap().1, 2);
    // A missing column fails.
    let code = run(&[
        "encode",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--column",
        "nope",
        "--output",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_eq!(code, ExitCode::FAILURE);
}

#[test]
fn encode_bad_inputs_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let model = gemma_dir();
    let m = model.to_str().unwrap();
    let bad = tmp.path().join("cp949.txt");
    // "한글" in cp949 on line 2.
    std::fs::write(
        &bad,
        [b"ok line\n".as_slice(), &[0xc7, 0xd1, 0xb1, 0xdb, b'\n']].concat(),
    )
    .unwrap();
    let out = tmp.path().join("o.npy");
    let o = out.to_str().unwrap();
    assert_eq!(
        run(&[
            "encode",
            "--model",
            m,
            "--input",
            bad.to_str().unwrap(),
            "--output",
            o,
            "--device",
            "cpu"
        ]),
        ExitCode::FAILURE
    );
    assert!(!out.exists(), "no output on failure");
    let err = embtune::commands::encode::read_texts(&bad, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2") && err.contains("UTF-8"), "{err}");

    let good = tmp.path().join("in.txt");
    std::fs::write(&good, "x\n").unwrap();
    let g = good.to_str().unwrap();
    assert_eq!(
        run(&[
            "encode",
            "--model",
            m,
            "--input",
            g,
            "--output",
            tmp.path().join("o.parquet").to_str().unwrap(),
            "--device",
            "cpu"
        ]),
        ExitCode::FAILURE
    );
    assert_eq!(
        run(&[
            "encode",
            "--model",
            "/nonexistent",
            "--input",
            g,
            "--output",
            o,
            "--device",
            "cpu"
        ]),
        ExitCode::FAILURE
    );
    assert_eq!(
        run(&[
            "encode",
            "--model",
            m,
            "--input",
            "/nonexistent.txt",
            "--output",
            o,
            "--device",
            "cpu"
        ]),
        ExitCode::FAILURE
    );
    assert_eq!(
        run(&[
            "encode",
            "--model",
            m,
            "--input",
            g,
            "--output",
            o,
            "--device",
            "cpu",
            "--prompt-name",
            "nope"
        ]),
        ExitCode::FAILURE
    );
    assert_eq!(
        run(&[
            "encode",
            "--model",
            m,
            "--input",
            g,
            "--output",
            o,
            "--device",
            "cpu",
            "--precision",
            "bf16"
        ]),
        ExitCode::FAILURE
    );
}

#[test]
fn score_ranks_the_matching_document_first() {
    let enc = SentenceEncoder::load(
        &embtune_core::default_model::default_model_dir(),
        Device::Cpu,
    )
    .expect("the default model all-MiniLM-L6-v2 is missing: run scripts/fetch-model.sh");
    let docs = [
        "The weather is sunny and warm today.",
        "A recipe for chocolate cake.",
        "Stock markets fell sharply.",
    ];
    let s = score_documents(&enc, "How is the weather?", &docs, "", "").unwrap();
    assert_eq!(s.len(), 3);
    assert_eq!(s[0].0, 0);
    assert!(s[0].1 > s[1].1 && s[1].1 >= s[2].1);
    assert!(s[0].1 <= 1.0 + 1e-6);
    let code = run(&[
        "score",
        "--model",
        gemma_dir().to_str().unwrap(),
        "--query",
        "red apple",
        "--documents",
        "apple",
        "river",
        "--query-prompt-name",
        "query",
        "--document-prompt-name",
        "document",
        "--device",
        "cpu",
    ]);
    assert_eq!(code, ExitCode::SUCCESS);
    let code = run(&[
        "score",
        "--model",
        gemma_dir().to_str().unwrap(),
        "--query",
        "q",
        "--documents",
        "d",
        "--query-prompt-name",
        "nope",
        "--device",
        "cpu",
    ]);
    assert_eq!(code, ExitCode::FAILURE);
}
