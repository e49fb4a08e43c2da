//! `embtune gen` through the real binary: one test per bad input (each checks the exit
//! status, the one-line message, and that no output was left behind), aliases, preview.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh folder under the system temp dir, removed on drop.
struct Tmp(PathBuf);
impl Tmp {
    fn new(name: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("embtune-gen-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gen")
}

/// Runs the binary; returns (success, stdout, stderr).
fn embtune(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_embtune"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Expects `gen` with `data` and `extra` to fail with a message containing every `needle`,
/// with nothing written to the output folder.
fn fails_with(t: &Tmp, data: &Path, extra: &[&str], needles: &[&str]) {
    let out = t.0.join("out");
    let mut args = vec![
        "gen",
        "--data",
        data.to_str().unwrap(),
        "--output-dir",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (ok, _, err) = embtune(&args);
    assert!(!ok, "succeeded: {args:?}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(!out.exists(), "output folder left behind after: {err}");
}

const HEAD: &str = "설명,분류,대분류,중분류\n";

#[test]
fn missing_file() {
    let t = Tmp::new("missing");
    fails_with(
        &t,
        &t.0.join("nope.csv"),
        &[],
        &["nope.csv", "No such file"],
    );
}

#[test]
fn wrong_encoding_suggests_cp949() {
    let t = Tmp::new("enc");
    // The cp949 copy of small.csv, read as UTF-8: the Korean header is invalid there.
    fails_with(
        &t,
        &fixtures().join("cp949.csv"),
        &[],
        &["line 1", "bytes invalid in UTF-8", "--encoding cp949"],
    );
    let _ = t.file("unused", b"");
}

#[test]
fn ragged_row() {
    let t = Tmp::new("ragged");
    let f = t.file("r.csv", format!("{HEAD}a,b,c,d\ne,f,g\n").as_bytes());
    fails_with(
        &t,
        &f,
        &[],
        &["line 3", "ragged row", "3 field(s)", "header has 4"],
    );
}

#[test]
fn broken_quoting() {
    let t = Tmp::new("quote");
    let f = t.file(
        "q.csv",
        format!("{HEAD}a,b,c,d\n\"open,b,c,d\ne,f,g,h\n").as_bytes(),
    );
    fails_with(&t, &f, &[], &["line 3", "unclosed quote"]);
}

#[test]
fn missing_columns_are_listed_with_the_available_ones() {
    let t = Tmp::new("cols");
    let f = t.file("c.csv", "설명,분류\na,b\n".as_bytes());
    fails_with(
        &t,
        &f,
        &[],
        &["'대분류', '중분류'", "available columns: '설명', '분류'"],
    );
    fails_with(
        &t,
        &f,
        &["--desc-col", "desc", "--positive-cols", "분류"],
        &["missing column(s) 'desc'"],
    );
}

#[test]
fn empty_file_and_header_only() {
    let t = Tmp::new("empty");
    let f = t.file("e.csv", b"");
    fails_with(&t, &f, &[], &["empty file"]);
    let f = t.file("h.csv", HEAD.as_bytes());
    fails_with(&t, &f, &[], &["header row but no data rows"]);
}

#[test]
fn unknown_strategy_and_sampler_list_valid_names() {
    let t = Tmp::new("names");
    let small = fixtures().join("small.csv");
    fails_with(
        &t,
        &small,
        &["--strategy", "nope"],
        &[
            "unknown strategy 'nope'",
            "baseline",
            "domainwise",
            "fusion-multineg",
        ],
    );
    fails_with(
        &t,
        &small,
        &["--sampler", "nope"],
        &["unknown sampler 'nope'", "random", "same-category"],
    );
    fails_with(
        &t,
        &small,
        &["--sampler-opt", "k=1"],
        &["sampler 'same-category'", "unknown option 'k'"],
    );
    fails_with(
        &t,
        &small,
        &["--strategy", "domainwise"],
        &["needs --domain-col"],
    );
    fails_with(&t, &small, &["--eval-ratio", "1.5"], &["--eval-ratio"]);
}

#[test]
fn no_half_written_output_when_a_write_fails() {
    let t = Tmp::new("atomic");
    let small = fixtures().join("small.csv");
    // The supervised target is an existing folder: staging works, the final rename fails,
    // and the unsupervised file already renamed is taken back.
    let blocker = t.0.join("sup.csv");
    std::fs::create_dir_all(&blocker).unwrap();
    let u = t.0.join("unsup.csv");
    let (ok, _, err) = embtune(&[
        "gen",
        "--data",
        small.to_str().unwrap(),
        "--output-unsupervised",
        u.to_str().unwrap(),
        "--output-supervised",
        blocker.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("sup.csv"), "{err}");
    let left: Vec<String> = std::fs::read_dir(&t.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["sup.csv"], "left behind: {left:?}");
    // Same file for both outputs.
    let (ok, _, err) = embtune(&[
        "gen",
        "--data",
        small.to_str().unwrap(),
        "--output-unsupervised",
        u.to_str().unwrap(),
        "--output-supervised",
        u.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("same file"), "{err}");
    assert_eq!(std::fs::read_dir(&t.0).unwrap().count(), 1);
}

#[test]
fn snake_case_aliases_and_preview() {
    let small = fixtures().join("small.csv");
    let (ok, out, err) = embtune(&[
        "gen",
        "--strategy",
        "fusion-multineg",
        "--data_path",
        small.to_str().unwrap(),
        "--desc_col",
        "설명",
        "--category_col",
        "대분류",
        "--positive_cols",
        "중분류",
        "표제어",
        "--num_negatives",
        "2",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("unsupervised samples:")
            && out.contains("supervised samples (anchor, positive, negative_1, negative_2):"),
        "{out}"
    );
    let samples = out.lines().filter(|l| l.starts_with("  ")).count();
    assert_eq!(samples, 6, "three of each kind: {out}");
    assert!(
        err.contains("gen fusion-multineg/same-category: 9 rows read")
            && err.contains("preview only"),
        "{err}"
    );
}

#[test]
fn summary_line_and_output_flags_for_baseline() {
    let t = Tmp::new("summary");
    let small = fixtures().join("small.csv");
    let (u, s) = (t.0.join("u.csv"), t.0.join("s.csv"));
    let (ok, out, err) = embtune(&[
        "gen",
        "--data",
        small.to_str().unwrap(),
        "--output-unsupervised",
        u.to_str().unwrap(),
        "--output-supervised",
        s.to_str().unwrap(),
        "--eval-ratio",
        "0.3",
    ]);
    assert!(ok, "{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("8 unsupervised") || err.contains("unsupervised"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    for f in [
        "u.csv",
        "s.csv",
        "s.manifest.json",
        "s_eval_queries.csv",
        "s_eval_corpus.csv",
        "s_eval_qrels.csv",
    ] {
        assert!(t.0.join(f).exists(), "{f} missing; {err}");
    }
}
