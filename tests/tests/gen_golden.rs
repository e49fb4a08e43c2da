//! `embtune gen` end to end (through `embtune::run_from`, like the binary): golden files
//! per strategy, the rules of SEED.md derived by hand, a cross-check against the Python
//! re-implementation of the original, reproducibility, encodings, eval split, manifest,
//! file-name safety and properties on random tables.
//!
//! Regenerate the golden files with `EMBTUNE_BLESS=1 cargo test -p embtune-tests --test
//! gen_golden` and review the diff (the hand-derived lists below must still pass).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use embtune_core::Table;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/gen")
}

fn small() -> PathBuf {
    fixtures().join("small.csv")
}

/// Runs `embtune gen ARGS --quiet`; panics unless it succeeds.
fn gen(args: &[&str]) {
    embtune_plugins::link();
    let mut all = vec!["embtune", "gen", "--quiet"];
    all.extend_from_slice(args);
    let code = embtune::run_from(all.clone());
    assert_eq!(
        format!("{code:?}"),
        format!("{:?}", std::process::ExitCode::SUCCESS),
        "failed: {all:?}"
    );
}

fn gen_fails(args: &[&str]) -> bool {
    embtune_plugins::link();
    let mut all = vec!["embtune", "gen", "--quiet"];
    all.extend_from_slice(args);
    format!("{:?}", embtune::run_from(all)) != format!("{:?}", std::process::ExitCode::SUCCESS)
}

/// Header and rows of an output CSV (BOM stripped, quotes undone).
fn read(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if text
        .trim_start_matches('\u{feff}')
        .trim_end()
        .lines()
        .count()
        <= 1
    {
        let h = text.trim_start_matches('\u{feff}').trim_end();
        return (h.split(',').map(str::to_string).collect(), Vec::new());
    }
    let t = Table::read_csv(path, "utf-8").unwrap();
    let rows = (0..t.n_rows())
        .map(|r| {
            (0..t.headers().len())
                .map(|c| t.cell(r, c).to_string())
                .collect()
        })
        .collect();
    (t.headers().to_vec(), rows)
}

fn col(rows: &[Vec<String>], i: usize) -> Vec<String> {
    rows.iter().map(|r| r[i].clone()).collect()
}

fn pairs(rows: &[Vec<String>]) -> Vec<(String, String)> {
    rows.iter().map(|r| (r[0].clone(), r[1].clone())).collect()
}

fn p(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Compares `dir/name` with the golden file `expected/<case>/name` (or writes it when
/// EMBTUNE_BLESS is set).
fn golden(dir: &Path, case: &str, name: &str) {
    let want = fixtures().join("expected").join(case).join(name);
    let got = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    if std::env::var_os("EMBTUNE_BLESS").is_some() {
        std::fs::create_dir_all(want.parent().unwrap()).unwrap();
        std::fs::write(&want, &got).unwrap();
        return;
    }
    let exp = std::fs::read(&want).unwrap_or_else(|e| panic!("{}: {e}", want.display()));
    assert!(
        got == exp,
        "{name} differs from {}:\n{}",
        want.display(),
        String::from_utf8_lossy(&got)
    );
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

const A: &str = "정기예금 설명 A";
const B: &str = "적금 설명 B";
const C: &str = "대출 설명 C";
const D: &str = "대출 설명 D";
const E: &str = "보험 설명 E";
const F: &str = "보험 설명 F";
const G: &str = "보험 설명 G";
const H: &str = "카드 설명 H";

#[test]
fn baseline_follows_the_rules_and_matches_golden() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    gen(&[
        "--strategy",
        "baseline",
        "--data",
        small().to_str().unwrap(),
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    let (h, unsup) = read(&out.join("all_unsupervised.csv"));
    assert_eq!(h, vec!["text"]);
    // [대분류] < [설명] < [중분류] by code point; the empty-anchor row is skipped.
    assert_eq!(
        col(&unsup, 0),
        vec![
            "[대분류] 수신 [설명] 정기예금 설명 A [중분류] 정기예금",
            "[대분류] 수신 [설명] 적금 설명 B [중분류] 적금",
            "[대분류] 여신 [설명] 대출 설명 C [중분류] 신용대출",
            "[대분류] 여신 [설명] 대출 설명 D [중분류] 대출 설명 D",
            "[대분류] 보장 [설명] 보험 설명 E [중분류] 암보험",
            "[대분류] 보장 [설명] 보험 설명 F [중분류] 실손",
            "[대분류] 보장 [설명] 보험 설명 G [중분류]", // "... [중분류] " in the file; read() trims
            "[대분류] 카드 [설명] 카드 설명 H [중분류] 할인",
        ]
    );
    let (h, sup) = read(&out.join("all_supervised.csv"));
    assert_eq!(h, vec!["anchor", "positive", "hard_negative"]);
    // [분류] + 대분류 중분류 per row; D's 중분류 equals its anchor, G's is empty, H is alone.
    assert_eq!(
        pairs(&sup),
        p(&[
            (A, "예금"),
            (A, "수신"),
            (A, "정기예금"),
            (B, "예금"),
            (B, "수신"),
            (B, "적금"),
            (C, "대출"),
            (C, "여신"),
            (C, "신용대출"),
            (D, "대출"),
            (D, "여신"),
            (E, "보험"),
            (E, "보장"),
            (E, "암보험"),
            (F, "보험"),
            (F, "보장"),
            (F, "실손"),
            (G, "보험"),
            (G, "보장"),
        ])
    );
    let forced: HashMap<&str, &str> = HashMap::from([(A, B), (B, A), (C, D), (D, C)]);
    for r in &sup {
        match forced.get(r[0].as_str()) {
            Some(n) => assert_eq!(&r[2], n),
            None => assert!([E, F, G].contains(&r[2].as_str()) && r[2] != r[0], "{r:?}"),
        }
    }
    golden(&out, "baseline", "all_unsupervised.csv");
    golden(&out, "baseline", "all_supervised.csv");
    let m = manifest(&out);
    assert_eq!(m["seed"], 42);
    assert_eq!(m["parts"][0]["skipped_empty_anchor"], 1);
    assert_eq!(m["parts"][0]["supervised_rows"], 19);
}

#[test]
fn domainwise_splits_by_domain_with_safe_names() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    gen(&[
        "--strategy",
        "domainwise",
        "--data",
        small().to_str().unwrap(),
        "--domain-col",
        "도메인",
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec![
            "manifest.json",
            "보험_supervised.csv",
            "보험_unsupervised.csv",
            "은행_supervised.csv",
            "은행_unsupervised.csv",
            "은행_기업_supervised.csv",
            "은행_기업_unsupervised.csv",
            "카드_supervised.csv",
            "카드_unsupervised.csv",
        ]
    );
    // 은행: groups 예금{A,B}, 대출{C}: C has no candidate inside the part.
    let (_, s) = read(&out.join("은행_supervised.csv"));
    assert_eq!(
        pairs(&s),
        p(&[
            (A, "예금"),
            (A, "스마트예금"),
            (A, "Smart Deposit"),
            (B, "예금"),
            (B, "청년적금"),
            (B, "Youth Savings")
        ])
    );
    assert!(s.iter().all(|r| r[2] == if r[0] == A { B } else { A }));
    // 은행/기업: D is the only non-empty anchor (the original drew the empty anchor here).
    assert!(read(&out.join("은행_기업_supervised.csv")).1.is_empty());
    assert_eq!(
        col(&read(&out.join("은행_기업_unsupervised.csv")).1, 0),
        vec!["[설명] 대출 설명 D [영문] Overdraft [표제어] 마통"]
    );
    let (_, s) = read(&out.join("보험_supervised.csv"));
    assert_eq!(
        pairs(&s),
        p(&[
            (E, "보험"),
            (E, "암보험"),
            (F, "보험"),
            (F, "실손보험"),
            (F, "Medical"),
            (G, "보험"),
            (G, "치아보험"),
            (G, "Dental")
        ])
    );
    assert!(read(&out.join("카드_supervised.csv")).1.is_empty());
    for f in &files[1..] {
        golden(&out, "domainwise", f);
    }
    let m = manifest(&out);
    let parts: Vec<(&str, &str)> = m["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["part"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        parts,
        vec![
            ("은행", "은행"),
            ("은행/기업", "은행_기업"),
            ("보험", "보험"),
            ("카드", "카드")
        ]
    );
    assert_eq!(m["files"].as_array().unwrap().len(), 8);
}

#[test]
fn fusion_fuses_positives_and_keeps_k_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    gen(&[
        "--strategy",
        "fusion-multineg",
        "--data",
        small().to_str().unwrap(),
        "--num-negatives",
        "3",
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    let (h, s) = read(&out.join("all_supervised.csv"));
    assert_eq!(
        h,
        vec![
            "anchor",
            "positive",
            "negative_1",
            "negative_2",
            "negative_3"
        ]
    );
    assert_eq!(
        pairs(&s),
        p(&[
            (
                A,
                "대분류: 수신, 중분류: 정기예금, 표제어: 스마트예금, 영문: Smart Deposit"
            ),
            (
                B,
                "대분류: 수신, 중분류: 적금, 표제어: 청년적금, 영문: Youth Savings"
            ),
            (
                C,
                "대분류: 여신, 중분류: 신용대출, 표제어: 직장인대출, 영문: Loan, Employee"
            ),
            (
                D,
                "대분류: 여신, 중분류: 대출 설명 D, 표제어: 마통, 영문: Overdraft"
            ),
            (E, "대분류: 보장, 중분류: 암보험, 표제어: 암보험"),
            (
                F,
                "대분류: 보장, 중분류: 실손, 표제어: 실손보험, 영문: Medical"
            ),
            (G, "대분류: 보장, 표제어: 치아보험, 영문: Dental"),
        ])
    );
    let forced: HashMap<&str, &str> = HashMap::from([(A, B), (B, A), (C, D), (D, C)]);
    for r in &s {
        let negs: HashSet<&str> = r[2..].iter().map(String::as_str).collect();
        match forced.get(r[0].as_str()) {
            Some(n) => assert_eq!(negs, HashSet::from([*n])),
            // Two distinct others exist, so both appear (distinct first, then a repeat).
            None => assert_eq!(
                negs,
                [E, F, G]
                    .into_iter()
                    .filter(|x| *x != r[0])
                    .collect::<HashSet<_>>()
            ),
        }
    }
    assert_eq!(manifest(&out)["parts"][0]["negative_repeats"], 4 * 2 + 3);
    golden(&out, "fusion-multineg", "all_unsupervised.csv");
    golden(&out, "fusion-multineg", "all_supervised.csv");
}

/// Our (anchor, positive) rows must be the original's minus the rows it emits only
/// because of its quirks: drawing the empty anchor of a skipped row, or an untrimmed copy
/// of the anchor itself, as the negative (read() trims, so both show as "" or the anchor).
fn check_against_reference(ours: &Path, reference: &Path) {
    let (_, mine) = read(ours);
    let (_, theirs) = read(reference);
    let mut it = mine.iter().peekable();
    for r in &theirs {
        match it.peek() {
            Some(m) if m[0] == r[0] && m[1] == r[1] => {
                it.next();
            }
            _ => assert!(
                r[2].is_empty() || r[2] == r[0],
                "{}: the original's row {r:?} is missing without the quirk",
                reference.display()
            ),
        }
    }
    assert!(
        it.next().is_none(),
        "{}: extra rows in embtune's output",
        ours.display()
    );
}

#[test]
fn non_random_columns_match_the_reference_implementation() {
    let refd = fixtures().join("reference");
    let tmp = tempfile::tempdir().unwrap();
    let (u, s) = (tmp.path().join("u.csv"), tmp.path().join("s.csv"));
    gen(&[
        "--data_path",
        small().to_str().unwrap(),
        "--output_unsupervised",
        u.to_str().unwrap(),
        "--output_supervised",
        s.to_str().unwrap(),
    ]);
    assert_eq!(read(&u).1, read(&refd.join("basic/unsupervised.csv")).1);
    check_against_reference(&s, &refd.join("basic/supervised.csv"));
    assert!(tmp.path().join("s.manifest.json").exists());

    let out = tmp.path().join("dw");
    gen(&[
        "--strategy",
        "domainwise",
        "--data",
        small().to_str().unwrap(),
        "--domain_col",
        "도메인",
        "--output_dir",
        out.to_str().unwrap(),
    ]);
    for part in ["은행", "은행_기업", "보험", "카드"] {
        let name = |k: &str| format!("{part}_{k}.csv");
        assert_eq!(
            read(&out.join(name("unsupervised"))).1,
            read(&refd.join("domainwise").join(name("unsupervised"))).1
        );
        check_against_reference(
            &out.join(name("supervised")),
            &refd.join("domainwise").join(name("supervised")),
        );
    }

    let out = tmp.path().join("fu");
    gen(&[
        "--strategy",
        "fusion-multineg",
        "--data",
        small().to_str().unwrap(),
        "--num_negatives",
        "3",
        "--output_dir",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        read(&out.join("all_unsupervised.csv")).1,
        read(&refd.join("fusion/all_unsupervised.csv")).1
    );
    check_against_reference(
        &out.join("all_supervised.csv"),
        &refd.join("fusion/all_supervised.csv"),
    );
}

fn all_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn same_seed_gives_byte_identical_files() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/demo/products.csv");
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: &str| {
        let out = tmp.path().join(name);
        gen(&[
            "--strategy",
            "fusion-multineg",
            "--data",
            demo.to_str().unwrap(),
            "--domain-col",
            "도메인",
            "--eval-ratio",
            "0.2",
            "--seed",
            seed,
            "--output-dir",
            out.to_str().unwrap(),
        ]);
        let mut files = all_files(&out);
        let mut m: serde_json::Value =
            serde_json::from_slice(&files.remove("manifest.json").unwrap()).unwrap();
        m.as_object_mut().unwrap().remove("command"); // names the output folder
        (files, m)
    };
    let (a, ma) = run("a", "7");
    let (b, mb) = run("b", "7");
    let (c, _) = run("c", "8");
    assert!(a.len() >= 4 * 5, "{:?}", a.keys());
    assert_eq!(a, b);
    assert_eq!(ma, mb);
    assert_ne!(a, c, "another seed changes the draws");
}

#[test]
fn cp949_and_bom_inputs_give_the_same_files() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |data: &Path, enc: &str, name: &str| {
        let out = tmp.path().join(name);
        gen(&[
            "--strategy",
            "fusion-multineg",
            "--data",
            data.to_str().unwrap(),
            "--encoding",
            enc,
            "--output-dir",
            out.to_str().unwrap(),
        ]);
        let mut f = all_files(&out);
        f.remove("manifest.json");
        f
    };
    let plain = run(&small(), "utf-8", "plain");
    assert_eq!(run(&fixtures().join("cp949.csv"), "cp949", "cp949"), plain);
    assert_eq!(run(&fixtures().join("cp949.csv"), "euc-kr", "euckr"), plain);
    let bom = tmp.path().join("bom.csv");
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend(std::fs::read(small()).unwrap());
    std::fs::write(&bom, bytes).unwrap();
    assert_eq!(run(&bom, "utf-8", "bom"), plain);
    // The demo's cp949 copy reads with Korean column names and defaults.
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/demo/products_cp949.csv");
    let out = tmp.path().join("demo");
    gen(&[
        "--strategy",
        "baseline",
        "--data",
        demo.to_str().unwrap(),
        "--encoding",
        "cp949",
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    assert_eq!(manifest(&out)["rows_read"], 80);
    assert!(gen_fails(&[
        "--data",
        demo.to_str().unwrap(),
        "--output-dir",
        tmp.path().join("x").to_str().unwrap()
    ]));
    assert!(!tmp.path().join("x").exists());
}

#[test]
fn eval_split_holds_out_whole_anchors() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/demo/products.csv");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    gen(&[
        "--strategy",
        "fusion-multineg",
        "--data",
        demo.to_str().unwrap(),
        "--eval-ratio",
        "0.1",
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    let (qh, queries) = read(&out.join("eval_queries.csv"));
    let (_, corpus) = read(&out.join("eval_corpus.csv"));
    let (rh, qrels) = read(&out.join("eval_qrels.csv"));
    assert_eq!(
        (qh, rh),
        (
            vec!["id".to_string(), "text".to_string()],
            vec!["query_id".to_string(), "corpus_id".to_string()]
        )
    );
    assert!(
        queries.len() >= 15 && queries.len() <= 25,
        "{} queries",
        queries.len()
    );
    let q: HashMap<&str, &str> = queries
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str()))
        .collect();
    let d: HashMap<&str, &str> = corpus
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str()))
        .collect();
    let held: HashSet<&str> = q.values().copied().collect();
    // Every query's relevant document is its fused positive, computed from the table.
    let t = Table::read_csv(&demo, "utf-8").unwrap();
    let cols: Vec<usize> = ["대분류", "중분류", "표제어", "영문"]
        .iter()
        .map(|c| t.column(c).unwrap())
        .collect();
    let names = ["대분류", "중분류", "표제어", "영문"];
    let mut expected: HashSet<(String, String)> = HashSet::new();
    for r in 0..t.n_rows() {
        let a = t.cell(r, 0);
        if held.contains(a) {
            let pos: Vec<String> = cols
                .iter()
                .zip(names)
                .filter(|(c, _)| !t.cell(r, **c).is_empty())
                .map(|(c, n)| format!("{n}: {}", t.cell(r, *c)))
                .collect();
            expected.insert((a.to_string(), pos.join(", ")));
        }
    }
    let got: HashSet<(String, String)> = qrels
        .iter()
        .map(|r| (q[r[0].as_str()].to_string(), d[r[1].as_str()].to_string()))
        .collect();
    assert_eq!(got, expected);
    // Training files hold only the train side; the corpus holds train positives too.
    let (_, sup) = read(&out.join("all_supervised.csv"));
    assert!(sup.iter().all(|r| !held.contains(r[0].as_str())));
    let (_, unsup) = read(&out.join("all_unsupervised.csv"));
    assert!(unsup
        .iter()
        .all(|r| !held.iter().any(|h| r[0].contains(&format!("[설명] {h} [")))));
    let train_pos: HashSet<&str> = sup.iter().map(|r| r[1].as_str()).collect();
    let corpus_texts: HashSet<&str> = d.values().copied().collect();
    assert!(train_pos.is_subset(&corpus_texts));
    let m = manifest(&out);
    let kinds: Vec<&str> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "unsupervised",
            "supervised",
            "eval_queries",
            "eval_corpus",
            "eval_qrels"
        ]
    );
}

#[test]
fn jsonl_format_and_random_sampler() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    gen(&[
        "--strategy",
        "fusion-multineg",
        "--sampler",
        "random",
        "--data",
        small().to_str().unwrap(),
        "--num-negatives",
        "2",
        "--format",
        "jsonl",
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(out.join("all_supervised.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The random sampler ignores categories, so even H (alone in 카드) gets negatives.
    assert_eq!(rows.len(), 8);
    let anchors: HashSet<&str> = [A, B, C, D, E, F, G, H].into();
    for r in &rows {
        let (n1, n2) = (
            r["negative_1"].as_str().unwrap(),
            r["negative_2"].as_str().unwrap(),
        );
        assert!(
            n1 != n2
                && anchors.contains(n1)
                && anchors.contains(n2)
                && n1 != r["anchor"]
                && n2 != r["anchor"],
            "{r}"
        );
    }
    let u = std::fs::read_to_string(out.join("all_unsupervised.jsonl")).unwrap();
    assert_eq!(u.lines().count(), 8);
    assert!(u
        .lines()
        .all(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].is_string()));
}

#[test]
fn domain_values_become_safe_unique_file_names() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d.csv");
    std::fs::write(
        &data,
        "설명,분류,표제어,영문,도메인\na,x,p,q,a/b\nb,x,p,q,a_b\nc,x,p,q,..\nd,x,p,q,CON\ne,x,p,q,\nf,x,p,q,\"../../etc\"\ng,x,p,q,A_B\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    gen(&[
        "--strategy",
        "domainwise",
        "--data",
        data.to_str().unwrap(),
        "--domain-col",
        "도메인",
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    let m = manifest(&out);
    let names: Vec<&str> = m["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["a_b", "a_b~2", "__", "_CON", "_empty", "______etc", "A_B~3"]
    );
    let on_disk = std::fs::read_dir(&out).unwrap().count();
    assert_eq!(
        on_disk,
        2 * 7 + 1,
        "every file stays inside the output folder"
    );
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 2);
}

/// SplitMix64: a tiny seeded generator for the random tables (no rand dependency here).
struct Mix(u64);
impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A random table: skewed categories, repeated texts, empty cells.
fn random_csv(path: &Path, seed: u64, n: usize) {
    let mut rng = Mix(seed);
    let mut s = String::from("설명,분류,대분류,중분류\n");
    for _ in 0..n {
        let d = if rng.below(15) == 0 {
            String::new()
        } else {
            format!("t{}", rng.below(n))
        };
        let c = (rng.unit().powi(3) * 10.0) as usize;
        let p1 = if rng.unit() < 0.2 {
            String::new()
        } else {
            format!("p{}", rng.below(5))
        };
        let p2 = if rng.unit() < 0.1 {
            d.clone()
        } else {
            format!("q{}", rng.below(5))
        };
        s.push_str(&format!("{d},c{c},{p1},{p2}\n"));
    }
    std::fs::write(path, s).unwrap();
}

#[test]
fn property_negatives_and_row_counts_on_random_tables() {
    let tmp = tempfile::tempdir().unwrap();
    for seed in 0..6u64 {
        let data = tmp.path().join(format!("r{seed}.csv"));
        random_csv(&data, seed, 300);
        let t = Table::read_csv(&data, "utf-8").unwrap();
        // Naive model of the rules.
        let mut texts: HashMap<&str, HashSet<&str>> = HashMap::new();
        let mut cat_of: HashMap<&str, HashSet<&str>> = HashMap::new();
        for r in 0..t.n_rows() {
            if !t.cell(r, 0).is_empty() {
                texts.entry(t.cell(r, 1)).or_default().insert(t.cell(r, 0));
                cat_of.entry(t.cell(r, 0)).or_default().insert(t.cell(r, 1));
            }
        }
        let mut want_baseline = 0;
        let mut want_fusion = 0;
        for r in 0..t.n_rows() {
            let a = t.cell(r, 0);
            if a.is_empty() || texts[t.cell(r, 1)].len() < 2 {
                continue;
            }
            want_baseline += (1..4)
                .filter(|&c| !t.cell(r, c).is_empty() && t.cell(r, c) != a)
                .count();
            want_fusion += usize::from((2..4).any(|c| !t.cell(r, c).is_empty()));
        }
        let out = tmp.path().join(format!("o{seed}"));
        gen(&[
            "--data",
            data.to_str().unwrap(),
            "--desc-col",
            "설명",
            "--category-col",
            "분류",
            "--output-dir",
            out.to_str().unwrap(),
            "--seed",
            &seed.to_string(),
        ]);
        let (_, b) = read(&out.join("all_supervised.csv"));
        assert_eq!(b.len(), want_baseline, "seed {seed}");
        let out = tmp.path().join(format!("f{seed}"));
        gen(&[
            "--strategy",
            "fusion-multineg",
            "--data",
            data.to_str().unwrap(),
            "--category-col",
            "분류",
            "--positive-cols",
            "대분류",
            "중분류",
            "--output-dir",
            out.to_str().unwrap(),
        ]);
        let (_, f) = read(&out.join("all_supervised.csv"));
        assert_eq!(f.len(), want_fusion, "seed {seed}");
        for row in b
            .iter()
            .map(|r| (&r[0], &r[2..]))
            .chain(f.iter().map(|r| (&r[0], &r[2..])))
        {
            let (a, negs) = row;
            let distinct: HashSet<&String> = negs.iter().collect();
            for n in negs {
                assert!(!n.is_empty() && n != a, "{a}: {negs:?}");
                // Same category as (some row of) the anchor.
                assert!(
                    cat_of[n.as_str()]
                        .intersection(&cat_of[a.as_str()])
                        .next()
                        .is_some(),
                    "{a} -> {n}"
                );
            }
            if negs.len() > 1 {
                // Distinct while the group has enough candidates.
                let others = cat_of[a.as_str()]
                    .iter()
                    .map(|c| texts[c].len() - 1)
                    .max()
                    .unwrap();
                assert!(distinct.len() >= negs.len().min(others).min(1));
            }
        }
    }
}

#[test]
fn manifest_lists_every_file_with_its_rows() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/demo/products.csv");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    gen(&[
        "--strategy",
        "domainwise",
        "--data",
        demo.to_str().unwrap(),
        "--domain-col",
        "도메인",
        "--eval-ratio",
        "0.1",
        "--seed",
        "5",
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    let m = manifest(&out);
    assert_eq!(m["seed"], 5);
    assert!(
        m["command"]
            .as_str()
            .unwrap()
            .starts_with("embtune gen --strategy domainwise"),
        "{}",
        m["command"]
    );
    let listed: HashSet<String> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file"].as_str().unwrap().to_string())
        .collect();
    let on_disk: HashSet<String> = all_files(&out)
        .into_keys()
        .filter(|f| f != "manifest.json")
        .collect();
    assert_eq!(listed, on_disk);
    for f in m["files"].as_array().unwrap() {
        let (h, rows) = read(&out.join(f["file"].as_str().unwrap()));
        assert_eq!(f["rows"].as_u64().unwrap() as usize, rows.len(), "{f}");
        assert_eq!(f["columns"], serde_json::json!(h));
        assert!(
            f["file"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{}_", f["part"].as_str().unwrap())),
            "{f}"
        );
    }
}
