//! `embtune mine` end to end (through `embtune::run_from`) and its bad inputs: one clear
//! line naming the problem and the fix, a non-zero exit, and no output file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use embtune::commands::mine::MineArgs;
use embtune_core::table::Dataset;

use embtune_tests::default_model;

fn run(args: &[&str]) -> ExitCode {
    let mut v = vec!["embtune", "mine"];
    v.extend_from_slice(args);
    embtune::run_from(v)
}

/// The error line `embtune mine ARGS` prints (the flags these tests use, set on the
/// command's defaults; the tests crate does not link clap).
fn error_of(args: &[&str]) -> String {
    let mut a = MineArgs {
        model: None,
        data: PathBuf::new(),
        output: PathBuf::new(),
        format: None,
        corpus: None,
        corpus_column: None,
        anchor_column: None,
        positive_column: None,
        range_min: 0,
        range_max: None,
        max_score: None,
        min_score: None,
        absolute_margin: None,
        relative_margin: None,
        num_negatives: 3,
        sampling_strategy: "top".into(),
        include_positives: false,
        output_format: "triplet".into(),
        output_scores: false,
        query_prompt: None,
        query_prompt_name: None,
        corpus_prompt: None,
        corpus_prompt_name: None,
        batch_size: 32,
        block_rows: 4096,
        device: "cpu".into(),
        precision: "auto".into(),
        seed: 42,
        cache_folder: None,
        quiet: true,
        dist: embtune::commands::ranks::DistArgs {
            nproc_per_node: 1,
            dist_timeout: 1800,
            dist_backend: "auto".into(),
        },
    };
    for kv in args.chunks(2) {
        let v = kv[1];
        match kv[0] {
            "--data" => a.data = v.into(),
            "--output" => a.output = v.into(),
            "--corpus" => a.corpus = Some(v.into()),
            "--corpus-column" => a.corpus_column = Some(v.into()),
            "--anchor-column" => a.anchor_column = Some(v.into()),
            "--range-min" => a.range_min = v.parse().unwrap(),
            "--range-max" => a.range_max = Some(v.parse().unwrap()),
            "--num-negatives" => a.num_negatives = v.parse().unwrap(),
            other => panic!("error_of: add {other}"),
        }
    }
    let e = embtune::commands::mine::run(a, &[]).unwrap_err();
    embtune::error_line(&e)
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

const PAIRS: &str = "question,answer\n\
    해외 결제 수수료가 없는 카드는?,해외 결제 수수료 면제 체크카드입니다.\n\
    What covers roadside assistance?,Car insurance with emergency roadside service.\n\
    해외 결제 수수료가 없는 카드는?,Overseas payments without fees: the travel card.\n\
    How do I save monthly?,A monthly installment savings account.\n";

const CORPUS: &str = "text\n\
    자동차보험 긴급출동 서비스\n\
    A fixed deposit that renews at maturity.\n\
    해외 결제 수수료 면제 체크카드입니다.\n\
    Pet insurance for dogs and cats.\n\
    청년 우대형 적금\n";

#[test]
fn mine_writes_triplets_that_train_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = write(tmp.path(), "pairs.csv", PAIRS);
    let corpus = write(tmp.path(), "corpus.csv", CORPUS);
    let out = tmp.path().join("out.csv");
    let model = default_model();
    let args = [
        "--model",
        model.to_str().unwrap(),
        "--data",
        pairs.to_str().unwrap(),
        "--corpus",
        corpus.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--num-negatives",
        "2",
        "--device",
        "cpu",
        "--quiet",
    ];
    assert_eq!(run(&args), ExitCode::SUCCESS);
    let ds = Dataset::read(&out).unwrap();
    assert_eq!(ds.columns, ["question", "answer", "negative"]);
    // Three unique anchors x their positives (4 pairs) x 2 negatives.
    assert_eq!(ds.len(), 8);
    for r in 0..ds.len() {
        let (a, n) = (&ds.texts[0][r], &ds.texts[2][r]);
        // A negative is never one of its anchor's positives.
        for (pa, pp) in PAIRS.lines().skip(1).map(|l| l.split_once(',').unwrap()) {
            assert!(
                !(pa == a && pp == n),
                "row {r}: positive {n:?} mined as a negative"
            );
        }
    }
    // JSON Lines with scores, n-tuple.
    let out = tmp.path().join("out.jsonl");
    let mut a = args.to_vec();
    a[7] = out.to_str().unwrap();
    a.extend(["--output-format", "n-tuple", "--output-scores"]);
    assert_eq!(run(&a), ExitCode::SUCCESS);
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["scores"].as_array().unwrap().len(), 3);
    assert!(first["negative_2"].is_string());
}

#[test]
fn bad_inputs_fail_with_one_line_and_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = write(tmp.path(), "pairs.csv", PAIRS);
    let corpus = write(tmp.path(), "corpus.csv", CORPUS);
    let empty = write(tmp.path(), "empty.csv", "anchor,positive\n");
    let one_col = write(tmp.path(), "one.csv", "anchor\na\nb\n");
    let out = tmp.path().join("out.csv");
    let (p, c, o) = (
        pairs.to_str().unwrap(),
        corpus.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let missing = tmp.path().join("nope.csv");
    let txt = tmp.path().join("out.txt");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--data",
                p,
                "--output",
                o,
                "--range-max",
                "3",
                "--num-negatives",
                "5",
            ],
            "cannot mine 5 negatives per query: only 3 candidates remain",
        ),
        (
            vec![
                "--data",
                p,
                "--output",
                o,
                "--range-min",
                "4",
                "--range-max",
                "4",
            ],
            "--range-min 4 must be smaller than --range-max 4",
        ),
        (
            vec!["--data", p, "--output", o, "--num-negatives", "0"],
            "--num-negatives must be at least 1",
        ),
        (
            vec!["--data", empty.to_str().unwrap(), "--output", o],
            "no data rows",
        ),
        (
            vec!["--data", one_col.to_str().unwrap(), "--output", o],
            "has one column (anchor)",
        ),
        (
            vec![
                "--data",
                p,
                "--output",
                o,
                "--corpus",
                missing.to_str().unwrap(),
            ],
            "no such file",
        ),
        (
            vec![
                "--data",
                p,
                "--output",
                o,
                "--corpus",
                c,
                "--corpus-column",
                "body",
            ],
            "missing column(s) 'body'; available columns: 'text'",
        ),
        (
            vec!["--data", p, "--output", o, "--anchor-column", "query"],
            "missing column(s) 'query'; available columns: 'question', 'answer'",
        ),
        (
            vec!["--data", p, "--output", txt.to_str().unwrap()],
            "use a .csv or .jsonl file name",
        ),
    ];
    for (args, want) in cases {
        let line = error_of(&args);
        assert!(line.contains(want), "{args:?}: {line}");
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(run(&args), ExitCode::FAILURE, "{args:?}");
        assert!(!out.exists(), "{args:?} left {}", out.display());
    }
    // Only the inputs remain: no temporary files either.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 4);
}
