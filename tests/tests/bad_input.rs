//! The bad-input matrix (docs/ERRORS.md lists every case here): each command line must fail
//! with its exit status (2: usage error, 1: anything else), one error line naming what is
//! wrong and how to fix it, and no output left behind.

use std::path::{Path, PathBuf};

use embtune::{try_run_from, Failure};

struct Case {
    args: Vec<String>,
    status: u8,
    says: &'static str,
}

/// A fixture folder: a small pairs file, a gen table, a text file, a file where a folder
/// is expected; `out` must never appear.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        embtune_plugins::link();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut pairs = String::from("anchor,positive\n");
        for i in 0..8 {
            pairs.push_str(&format!("question {i},answer {i}\n"));
        }
        std::fs::write(dir.join("pairs.csv"), pairs).unwrap();
        std::fs::write(dir.join("texts.txt"), "one\ntwo\n").unwrap();
        std::fs::write(dir.join("a-file"), "not a folder").unwrap();
        Fixture { _tmp: tmp, dir }
    }

    fn p(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    fn out(&self) -> PathBuf {
        self.dir.join("out")
    }
}

fn model() -> String {
    embtune_tests::default_model()
        .to_string_lossy()
        .into_owned()
}

fn gen_table() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/gen/small.csv")
        .to_string_lossy()
        .into_owned()
}

fn case(args: &[&str], status: u8, says: &'static str) -> Case {
    Case {
        args: args.iter().map(|s| s.to_string()).collect(),
        status,
        says,
    }
}

/// `embtune train` on the pairs file into `out` with `extra` flags.
fn train(f: &Fixture, extra: &[&str], status: u8, says: &'static str) -> Case {
    let (m, d, o) = (model(), f.p("pairs.csv"), f.p("out"));
    let mut a = vec!["train", "--model", &m, "--data", &d, "--output", &o];
    if !extra.contains(&"--device") {
        a.extend(["--device", "cpu"]);
    }
    a.extend(extra);
    case(&a, status, says)
}

fn check(f: &Fixture, c: &Case) {
    let mut argv = vec!["embtune".to_string()];
    argv.extend(c.args.iter().cloned());
    let shown = c.args.join(" ");
    match try_run_from(&argv) {
        Ok(_) => panic!("`{shown}` succeeded; expected: {}", c.says),
        Err(Failure { status, line }) => {
            eprintln!("[{status}] {} -> {line}", c.args[0]);
            assert_eq!(status, c.status, "`{shown}`: {line}");
            assert!(
                line.contains(c.says),
                "`{shown}`: {line}\n  expected: {}",
                c.says
            );
            assert!(!line.contains('\n'), "`{shown}`: not one line: {line}");
        }
    }
    assert!(!f.out().exists(), "`{shown}` left {}", f.out().display());
}

#[test]
fn train_refuses_every_out_of_range_number_in_one_line() {
    let f = Fixture::new();
    let cases = [
        train(
            &f,
            &["--batch-size", "0"],
            1,
            "--batch-size 0 is out of range: it must be at least 1",
        ),
        train(&f, &["--epochs", "0"], 1, "--epochs 0 is out of range"),
        train(
            &f,
            &["--grad-accum", "0"],
            1,
            "--grad-accum 0 is out of range",
        ),
        train(
            &f,
            &["--log-every", "0"],
            1,
            "--log-every 0 is out of range",
        ),
        train(
            &f,
            &["--max-steps", "0"],
            1,
            "--max-steps 0 is out of range",
        ),
        train(
            &f,
            &["--eval-every", "0"],
            1,
            "--eval-every 0 is out of range",
        ),
        train(
            &f,
            &["--save-total-limit", "0"],
            1,
            "--save-total-limit 0 is out of range",
        ),
        train(
            &f,
            &["--max-seq-length", "0"],
            1,
            "--max-seq-length 0 is out of range",
        ),
        train(
            &f,
            &["--max-seq-length", "100000"],
            1,
            "--max-seq-length 100000 is out of range: this model takes 1 to 512 tokens",
        ),
        train(
            &f,
            &["--lr", "0"],
            1,
            "--lr 0 is out of range: it must be a positive number",
        ),
        train(
            &f,
            &["--lr", "-0.00001"],
            1,
            "--lr -0.00001 is out of range",
        ),
        train(&f, &["--lr", "nan"], 1, "--lr NaN is out of range"),
        train(&f, &["--lr", "inf"], 1, "--lr inf is out of range"),
        train(
            &f,
            &["--weight-decay", "-0.1"],
            1,
            "--weight-decay -0.1 is out of range: it must be 0 or more",
        ),
        train(
            &f,
            &["--warmup-ratio", "1.5"],
            1,
            "--warmup-ratio 1.5 is out of range: it must be in [0, 1]",
        ),
        train(
            &f,
            &["--max-grad-norm", "0"],
            1,
            "--max-grad-norm 0 is out of range",
        ),
        train(
            &f,
            &["--batch-size", "9"],
            1,
            "--batch-size 9 is larger than the data (8 rows",
        ),
        train(&f, &["--dropout", "1"], 2, "is not a probability in [0, 1)"),
        train(
            &f,
            &["--nproc-per-node", "0"],
            2,
            "invalid value '0' for '--nproc-per-node <N>'",
        ),
        train(
            &f,
            &["--dist-timeout", "0"],
            2,
            "invalid value '0' for '--dist-timeout <SECS>'",
        ),
        train(
            &f,
            &["--batch-size", "-1"],
            2,
            "invalid value '-1' for '--batch-size <BATCH_SIZE>'",
        ),
        train(
            &f,
            &["--epochs", "two"],
            2,
            "invalid value 'two' for '--epochs <EPOCHS>'",
        ),
        train(&f, &["--loss", "no-such-loss"], 1, "no-such-loss"),
        train(
            &f,
            &["--loss-opt", "scale"],
            1,
            "option 'scale' is not of the form key=value",
        ),
        train(&f, &["--loss-opt", "no_such_key=1"], 1, "no_such_key"),
        train(&f, &["--device", "cuda"], 1, "CUDA is not available here"),
        train(&f, &["--device", "tpu"], 1, "unknown --device 'tpu'"),
        train(&f, &["--precision", "bf16"], 1, "bf16"),
        train(&f, &["--merge-lora"], 1, "--merge-lora needs --lora"),
        train(&f, &["--lora", "r=0"], 1, "r"),
        train(&f, &["--resume", &f.p("no-checkpoint")], 1, "no-checkpoint"),
    ];
    for c in &cases {
        check(&f, c);
    }
    let (m, o) = (model(), f.p("out"));
    for (args, status, says) in [
        (vec!["train", "--model", &m, "--output", &o], 2, "--data"),
        (
            vec![
                "train",
                "--model",
                &m,
                "--data",
                "/no/such/data.csv",
                "--output",
                &o,
            ],
            1,
            "/no/such/data.csv",
        ),
        (
            vec![
                "train",
                "--model",
                "/no/such/model",
                "--data",
                "x.csv",
                "--output",
                &o,
            ],
            1,
            "/no/such/model",
        ),
    ] {
        check(&f, &case(&args, status, says));
    }
}

#[test]
fn train_to_an_output_path_that_cannot_be_a_folder_fails_in_one_line() {
    let f = Fixture::new();
    let (m, d) = (model(), f.p("pairs.csv"));
    let out = format!("{}/out", f.p("a-file"));
    let argv = [
        "embtune",
        "train",
        "--model",
        &m,
        "--data",
        &d,
        "--output",
        &out,
        "--device",
        "cpu",
        "--max-steps",
        "1",
    ];
    let e = try_run_from(argv).unwrap_err();
    assert_eq!(e.status, 1, "{}", e.line);
    assert!(
        e.line.contains(&out) || e.line.contains(&f.p("a-file")),
        "{}",
        e.line
    );
    assert!(!e.line.contains('\n'));
}

#[test]
fn gen_eval_encode_mine_and_score_refuse_bad_input_in_one_line() {
    let f = Fixture::new();
    let (m, t, o) = (model(), gen_table(), f.p("out"));
    let texts = f.p("texts.txt");
    let pairs = f.p("pairs.csv");
    let out_npy = format!("{o}/e.npy");
    let cases = [
        case(
            &["gen", "--data", &t, "--output-dir", &o, "--eval-ratio", "1"],
            1,
            "--eval-ratio must be in [0, 1)",
        ),
        case(
            &[
                "gen",
                "--data",
                &t,
                "--output-dir",
                &o,
                "--strategy",
                "nope",
            ],
            1,
            "nope",
        ),
        case(
            &["gen", "--data", &t, "--output-dir", &o, "--sampler", "nope"],
            1,
            "nope",
        ),
        case(
            &[
                "gen",
                "--data",
                &t,
                "--output-dir",
                &o,
                "--encoding",
                "no-such-enc",
            ],
            1,
            "no-such-enc",
        ),
        case(
            &["gen", "--data", "/no/such/table.csv", "--output-dir", &o],
            1,
            "/no/such/table.csv",
        ),
        case(
            &[
                "gen",
                "--data",
                &t,
                "--output-dir",
                &o,
                "--desc-col",
                "없는열",
            ],
            1,
            "없는열",
        ),
        case(
            &["gen", "--data", &t, "--output-dir", &o, "--seed", "-3"],
            2,
            "invalid value '-3' for '--seed",
        ),
        case(
            &[
                "eval",
                "--model",
                &m,
                "--batch-size",
                "0",
                "--triplets",
                &pairs,
            ],
            1,
            "--batch-size 0 is out of range",
        ),
        case(&["eval", "--model", &m], 1, "nothing to evaluate"),
        case(
            &[
                "encode",
                "--model",
                &m,
                "--input",
                &texts,
                "--output",
                &out_npy,
                "--batch-size",
                "0",
            ],
            1,
            "--batch-size 0 is out of range",
        ),
        case(
            &[
                "encode",
                "--model",
                &m,
                "--input",
                &texts,
                "--output",
                &format!("{o}/e.txt"),
            ],
            1,
            "unknown output format",
        ),
        case(
            &[
                "encode",
                "--model",
                &m,
                "--input",
                &texts,
                "--output",
                &out_npy,
                "--truncate-dim",
                "0",
            ],
            1,
            "--truncate-dim 0",
        ),
        case(
            &[
                "encode",
                "--model",
                &m,
                "--input",
                "/no/such/texts.txt",
                "--output",
                &out_npy,
            ],
            1,
            "/no/such/texts.txt",
        ),
        case(
            &[
                "encode", "--model", &m, "--input", &pairs, "--output", &out_npy,
            ],
            1,
            "needs --column",
        ),
        case(
            &[
                "mine",
                "--model",
                &m,
                "--data",
                &pairs,
                "--output",
                &format!("{o}/m.csv"),
                "--batch-size",
                "0",
            ],
            1,
            "--batch-size 0 is out of range",
        ),
        case(
            &[
                "mine",
                "--model",
                &m,
                "--data",
                &pairs,
                "--output",
                &format!("{o}/m.csv"),
                "--block-rows",
                "0",
            ],
            1,
            "--block-rows 0 is out of range",
        ),
        case(
            &[
                "mine",
                "--model",
                &m,
                "--data",
                &pairs,
                "--output",
                &format!("{o}/m.csv"),
                "--num-negatives",
                "0",
            ],
            1,
            "--num-negatives must be at least 1",
        ),
        case(
            &[
                "score",
                "--model",
                "/no/such/model",
                "--query",
                "q",
                "--documents",
                "d",
            ],
            1,
            "/no/such/model",
        ),
        case(&["score", "--model", &m, "--query", "q"], 2, "--documents"),
    ];
    for c in &cases {
        check(&f, c);
    }
}

/// A copy of the xlm-roberta tiny fixture whose config.json says `key` = `value`.
fn tiny_model_with(dir: &Path, key: &str, value: serde_json::Value) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/encoder/xlm-roberta-tiny");
    let dst = dir.join("tiny");
    embtune_tests::copy_dir(&src, &dst);
    let cfg = dst.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v[key] = value;
    std::fs::write(&cfg, v.to_string()).unwrap();
    dst
}

/// `embtune train` with `model` (in `f`'s folder) fails with status 1 and one line, and
/// writes nothing; returns that line.
fn train_refuses_model(f: &Fixture, model: &Path) -> String {
    let (m, d, o) = (
        model.to_string_lossy().into_owned(),
        f.p("pairs.csv"),
        f.p("out"),
    );
    let e = try_run_from([
        "embtune", "train", "--model", &m, "--data", &d, "--output", &o, "--device", "cpu",
    ])
    .unwrap_err();
    eprintln!("[{}] train -> {}", e.status, e.line);
    assert_eq!(e.status, 1, "{}", e.line);
    assert!(!e.line.contains('\n'), "{}", e.line);
    assert!(!f.out().exists(), "{}", e.line);
    e.line
}

#[test]
fn weights_whose_shapes_contradict_config_json_are_one_line() {
    let f = Fixture::new();
    // The checkpoint's layers are 64 wide inside; config.json now says 96.
    let model = tiny_model_with(&f.dir, "intermediate_size", 96.into());
    let line = train_refuses_model(&f, &model);
    assert!(
        line.contains("shape") && line.contains("config.json"),
        "{line}"
    );
}

#[test]
fn a_config_with_zero_attention_heads_is_one_line() {
    // Found by the model_config fuzz target (fuzz/regressions/model_config/): a division by
    // zero before.
    let f = Fixture::new();
    let model = tiny_model_with(&f.dir, "num_attention_heads", 0.into());
    let line = train_refuses_model(&f, &model);
    assert!(
        line.contains("is not a positive multiple of num_attention_heads 0; fix config.json"),
        "{line}"
    );
}

#[test]
fn an_output_folder_of_an_earlier_run_is_refused_without_overwrite() {
    let f = Fixture::new();
    // train: an earlier run's metrics.jsonl and checkpoint in --output.
    std::fs::create_dir_all(f.out().join("checkpoint-4")).unwrap();
    std::fs::write(f.out().join("metrics.jsonl"), "{}\n").unwrap();
    let (m, d, o) = (model(), f.p("pairs.csv"), f.p("out"));
    let e = try_run_from([
        "embtune", "train", "--model", &m, "--data", &d, "--output", &o, "--device", "cpu",
    ])
    .unwrap_err();
    eprintln!("[{}] train -> {}", e.status, e.line);
    assert_eq!(e.status, 1);
    assert!(
        e.line.contains(
            "already holds an earlier training run (checkpoint-4, metrics.jsonl); pass --overwrite"
        ),
        "{}",
        e.line
    );
    assert_eq!(
        std::fs::read_to_string(f.out().join("metrics.jsonl")).unwrap(),
        "{}\n"
    );
    // gen: an earlier output with an eval split; the next run without one must not leave
    // the old eval files beside its own.
    let t = gen_table();
    let g = f.p("gen");
    let gen = |extra: &[&str]| {
        let mut a = vec![
            "embtune",
            "gen",
            "--quiet",
            "--data",
            &t,
            "--output-dir",
            &g,
        ];
        a.extend(extra);
        try_run_from(a)
    };
    gen(&["--eval-ratio", "0.2"]).unwrap();
    assert!(Path::new(&g).join("eval_qrels.csv").is_file());
    let e = gen(&[]).unwrap_err();
    eprintln!("[{}] gen -> {}", e.status, e.line);
    assert_eq!(e.status, 1);
    assert!(e.line.contains("already holds the output of an earlier `embtune gen` (manifest.json); pass --overwrite"), "{}", e.line);
    assert!(Path::new(&g).join("eval_qrels.csv").is_file());
    gen(&["--overwrite"]).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&g)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "all_supervised.csv",
            "all_unsupervised.csv",
            "manifest.json"
        ]
    );
}

/// A tmpfs of `size` mounted at a new folder under `dir` (None where mounting is not
/// allowed, i.e. not root: the caller skips), unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let at = dir.join(format!("tmpfs-{size}"));
        std::fs::create_dir_all(&at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(at))
    }

    fn read_only(&self) {
        let s = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(s.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Visible (not temporary) entries of `dir`.
fn visible(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_full_or_read_only_output_disk_is_one_line_and_leaves_no_partial_model() {
    let f = Fixture::new();
    let Some(small) = Tmpfs::mount(&f.dir, "2m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let (m, d) = (model(), f.p("pairs.csv"));
    let train_into = |out: &Path| {
        let o = out.to_string_lossy().into_owned();
        try_run_from([
            "embtune",
            "train",
            "--model",
            &m,
            "--data",
            &d,
            "--output",
            &o,
            "--device",
            "cpu",
            "--max-steps",
            "1",
            "--batch-size",
            "4",
        ])
        .unwrap_err()
    };
    // Full: the 90 MB model does not fit in 2 MB.
    let out = small.0.join("run");
    let e = train_into(&out);
    eprintln!("[{}] train (full disk) -> {}", e.status, e.line);
    assert_eq!(e.status, 1);
    assert!(
        e.line.contains("No space left on device")
            && e.line
                .contains("; free some space or choose another folder"),
        "{}",
        e.line
    );
    assert!(!e.line.contains('\n'));
    let shown = visible(&out);
    assert!(
        shown
            .iter()
            .all(|n| n == "metrics.jsonl" || n == "training.png"),
        "a failed save left {shown:?} in {}",
        out.display()
    );
    // Read-only.
    let ro = Tmpfs::mount(&f.dir, "1m").unwrap();
    ro.read_only();
    let e = train_into(&ro.0.join("run"));
    eprintln!("[{}] train (read-only) -> {}", e.status, e.line);
    assert_eq!(e.status, 1);
    assert!(
        e.line.contains("Read-only file system")
            && e.line
                .contains("; choose a folder on a writable file system"),
        "{}",
        e.line
    );
    assert!(!ro.0.join("run").exists());
}
