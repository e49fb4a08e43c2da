//! `embtune_core::mine` against sentence-transformers' `mine_hard_negatives`
//! (sentence_transformers/util/hard_negatives.py, v6): the cases in
//! `fixtures/mine/cases.json`, made by `fixtures/mine/make_fixtures.py` with the default
//! model on CPU in fp32, batch size 32, no prompts.
//!
//! Compared per case: the column names; for `top`, every row cell by cell (texts equal,
//! except that two negatives may trade places when their scores tie within [`TIE`]; scores
//! within [`SCORE_TOL`]); for `random`, the anchors and positives row by row and every
//! negative inside the reference's candidates for its anchor; and the reference's printed
//! statistics (the range_max it chose, rows, counts, means, skipped candidates, samples
//! short of negatives). Then one case again through `mine::mine`, embedding included.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use embtune_core::encoder::SentenceEncoder;
use embtune_core::mine::{self, MineConfig, Mined, Pairs, Plan, SamplingStrategy};
use embtune_core::table::{ReadOptions, Table};
use serde_json::Value as J;
use tch::{Device, Tensor};

use embtune_tests::default_model;

/// Two negatives may swap places when their scores differ by at most this.
const TIE: f64 = 1e-5;
/// Scores must agree this closely with the reference's.
const SCORE_TOL: f64 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("mine")
}

struct Fixture {
    pairs: Pairs,
    corpus: Vec<String>,
    cases: Vec<J>,
    /// Unit embedding of every text of the fixture.
    emb: HashMap<String, Vec<f32>>,
    encoder: SentenceEncoder,
}

fn load() -> Fixture {
    let dir = fixtures();
    let pairs_path = dir.join("pairs.csv");
    let table = Table::read(&pairs_path, &ReadOptions::default()).unwrap();
    let pairs = Pairs::from_table(&table, &pairs_path, None, None).unwrap();
    let corpus_path = dir.join("corpus.csv");
    let table = Table::read(&corpus_path, &ReadOptions::default()).unwrap();
    let c = table.column("text").unwrap();
    let corpus: Vec<String> = (0..table.n_rows())
        .map(|r| table.cell(r, c).to_string())
        .collect();
    let cases: Vec<J> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let encoder = SentenceEncoder::load(&default_model(), Device::Cpu).unwrap();
    let mut texts: Vec<&str> = pairs
        .anchors
        .iter()
        .chain(&pairs.positives)
        .chain(&corpus)
        .map(String::as_str)
        .collect();
    texts.sort_unstable();
    texts.dedup();
    let e = encoder.encode(&texts, 32).unwrap();
    let e = &e / e.norm_scalaropt_dim(2, [1], true);
    let d = e.size()[1] as usize;
    let flat = Vec::<f32>::try_from(e.view([-1])).unwrap();
    let emb = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), flat[i * d..(i + 1) * d].to_vec()))
        .collect();
    Fixture {
        pairs,
        corpus,
        cases,
        emb,
        encoder,
    }
}

impl Fixture {
    fn matrix(&self, texts: &[String]) -> Tensor {
        let d = self.emb.values().next().unwrap().len();
        let flat: Vec<f32> = texts.iter().flat_map(|t| self.emb[t].clone()).collect();
        Tensor::from_slice(&flat).view([texts.len() as i64, d as i64])
    }

    fn score(&self, a: &str, b: &str) -> f64 {
        self.emb[a]
            .iter()
            .zip(&self.emb[b])
            .map(|(x, y)| f64::from(x * y))
            .sum()
    }
}

/// The case's keyword arguments as a [`MineConfig`] (null = not given).
fn config(params: &J) -> MineConfig {
    let f = |k: &str| params[k].as_f64();
    MineConfig {
        range_min: params["range_min"].as_u64().unwrap_or(0) as usize,
        range_max: params["range_max"].as_u64().map(|r| r as usize),
        max_score: f("max_score"),
        min_score: f("min_score"),
        absolute_margin: f("absolute_margin"),
        relative_margin: f("relative_margin"),
        num_negatives: params["num_negatives"].as_u64().unwrap_or(3) as usize,
        sampling_strategy: params["sampling_strategy"]
            .as_str()
            .unwrap_or("top")
            .parse()
            .unwrap(),
        include_positives: params["include_positives"].as_bool().unwrap_or(false),
        output_format: params["output_format"]
            .as_str()
            .unwrap_or("triplet")
            .parse()
            .unwrap(),
        output_scores: params["output_scores"].as_bool().unwrap_or(false),
        batch_size: 32,
        seed: 12,
        ..MineConfig::default()
    }
}

/// Compares one cell; `anchor` is the row's anchor (for judging ties between texts).
fn same_cell(fx: &Fixture, anchor: &str, want: &J, got: &J, at: &str) {
    match (want, got) {
        (J::String(w), J::String(g)) => {
            if w != g {
                let (sw, sg) = (fx.score(anchor, w), fx.score(anchor, g));
                assert!(
                    (sw - sg).abs() <= TIE,
                    "{at}: the reference has {w:?} (score {sw:.6}), embtune {g:?} (score {sg:.6})"
                );
            }
        }
        (J::Number(w), J::Number(g)) if w.is_i64() && g.is_i64() => {
            assert_eq!(w, g, "{at}");
        }
        (J::Number(w), J::Number(g)) => {
            let (w, g) = (w.as_f64().unwrap(), g.as_f64().unwrap());
            assert!(
                (w - g).abs() <= SCORE_TOL,
                "{at}: score {g} vs the reference's {w}"
            );
        }
        (J::Array(w), J::Array(g)) => {
            assert_eq!(w.len(), g.len(), "{at}: list lengths");
            for (i, (w, g)) in w.iter().zip(g).enumerate() {
                same_cell(fx, anchor, w, g, &format!("{at}[{i}]"));
            }
        }
        _ => panic!("{at}: the reference has {want}, embtune {got}"),
    }
}

/// Runs one case through `mine_embedded` on the fixture's embeddings.
fn run_case(fx: &Fixture, case: &J) -> (Plan, Mined, MineConfig) {
    let cfg = config(&case["params"]);
    let use_corpus = case["params"]["use_corpus"].as_bool().unwrap_or(false);
    let corpus = use_corpus.then_some(fx.corpus.as_slice());
    let plan = Plan::new(&fx.pairs, corpus, &cfg).unwrap();
    let q = fx.matrix(&plan.queries);
    let c = fx.matrix(&plan.corpus);
    let mined = mine::mine_embedded(plan.clone(), &q, &c, &cfg, &mut ()).unwrap();
    (plan, mined, cfg)
}

fn check_stats(name: &str, case: &J, plan: &Plan, mined: &Mined, random: bool) {
    let st = &case["stats"];
    let ours = &mined.stats;
    if let Some(r) = st["range_max_chosen"].as_u64() {
        assert_eq!(plan.range_max as u64, r, "{name}: range_max");
    }
    if let Some(u) = st["unique_queries"].as_u64() {
        assert_eq!(plan.queries.len() as u64, u, "{name}: unique queries");
    }
    if let Some(n) = st["corpus_size_dedup"].as_u64() {
        assert_eq!(plan.corpus.len() as u64, n, "{name}: deduplicated corpus");
    }
    assert_eq!(
        ours.rows as u64,
        st["rows"].as_u64().unwrap(),
        "{name}: rows"
    );
    assert_eq!(
        ours.missing() as u64,
        st["missing_samples"].as_u64().unwrap_or(0),
        "{name}: samples short of negatives"
    );
    let table = &st["table"];
    let count = |k: &str| table["count"][k].as_f64().unwrap() as usize;
    assert_eq!(
        ours.positive.count,
        count("positive"),
        "{name}: positive count"
    );
    assert_eq!(
        ours.negative.count,
        count("negative"),
        "{name}: negative count"
    );
    // The reference prints 4 decimals.
    let near = |w: &J, g: f64, what: &str| {
        if let Some(w) = w.as_f64() {
            assert!(
                (w - g).abs() <= 1.5e-4,
                "{name}: {what} {g} vs the reference's {w}"
            );
        }
    };
    near(
        &table["mean"]["positive"],
        ours.positive.mean,
        "positive mean",
    );
    near(&table["min"]["positive"], ours.positive.min, "positive min");
    near(&table["max"]["positive"], ours.positive.max, "positive max");
    if !random {
        near(
            &table["mean"]["negative"],
            ours.negative.mean,
            "negative mean",
        );
        near(
            &table["median"]["negative"],
            ours.negative.median,
            "negative median",
        );
        near(
            &table["mean"]["difference"],
            ours.difference.mean,
            "difference mean",
        );
        near(&table["25%"]["negative"], ours.negative.q25, "negative 25%");
    }
    let want: HashMap<String, u64> = st["skipped"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .collect()
        })
        .unwrap_or_default();
    let got: HashMap<String, u64> = ours
        .skipped
        .iter()
        .map(|s| (s.param.to_string(), s.count as u64))
        .collect();
    assert_eq!(got, want, "{name}: skipped candidates");
}

#[test]
fn mine_matches_the_reference() {
    let fx = load();
    assert!(
        fx.cases.len() >= 10,
        "cases.json has {} cases",
        fx.cases.len()
    );
    let mut formats = std::collections::BTreeSet::new();
    for case in &fx.cases {
        let name = case["name"].as_str().unwrap();
        let (plan, mined, cfg) = run_case(&fx, case);
        formats.insert(plan.output_format.name());
        let want_cols: Vec<&str> = case["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(mined.columns, want_cols, "{name}: columns");
        let rows = case["rows"].as_array().unwrap();
        assert_eq!(mined.n_rows(), rows.len(), "{name}: rows");
        let random = cfg.sampling_strategy == SamplingStrategy::Random;
        if !random {
            for (r, want) in rows.iter().enumerate() {
                let got: Vec<J> = mined.row(r).iter().map(|v| mined.cell_json(v)).collect();
                let anchor = want[0].as_str().unwrap();
                for (c, (w, g)) in want.as_array().unwrap().iter().zip(&got).enumerate() {
                    same_cell(&fx, anchor, w, g, &format!("{name}: row {r} column {c}"));
                }
            }
        } else {
            let queries: Vec<&str> = case["candidate_queries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|q| q.as_str().unwrap())
                .collect();
            let cands: Vec<Vec<&str>> = case["candidates"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    l.as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t.as_str().unwrap())
                        .collect()
                })
                .collect();
            let of: HashMap<&str, &Vec<&str>> = queries.iter().copied().zip(&cands).collect();
            let negative_cols: Vec<usize> = mined
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.starts_with("negative"))
                .map(|(i, _)| i)
                .collect();
            assert!(
                !negative_cols.is_empty(),
                "{name}: a random case in {:?}",
                plan.output_format
            );
            for (r, want) in rows.iter().enumerate() {
                let got = mined.text_row(r);
                assert_eq!(got[0], want[0].as_str().unwrap(), "{name}: row {r} anchor");
                assert_eq!(
                    got[1],
                    want[1].as_str().unwrap(),
                    "{name}: row {r} positive"
                );
                for &c in &negative_cols {
                    assert!(
                        of[got[0].as_str()].contains(&got[c].as_str()),
                        "{name}: row {r}: {:?} is not among the reference's candidates of {:?}",
                        got[c],
                        got[0]
                    );
                }
            }
        }
        check_stats(name, case, &plan, &mined, random);
    }
    // The fixture covers every format (include_positives turns labeled-pair into n-tuple).
    assert_eq!(formats.len(), 4, "{formats:?}");
    mine_with_the_encoder_equals_the_embedded_path(&fx);
}

/// The full path, embedding included (`mine::mine` with the encoder), equals the case run
/// on the fixture's embeddings: prompts resolve to none for this model and the
/// normalisation is the reference's. (Part of the test above, to load the model once.)
fn mine_with_the_encoder_equals_the_embedded_path(fx: &Fixture) {
    let case = fx
        .cases
        .iter()
        .find(|c| c["name"] == "corpus_scores")
        .or_else(|| fx.cases.first())
        .unwrap();
    let (_, want, cfg) = run_case(fx, case);
    let use_corpus = case["params"]["use_corpus"].as_bool().unwrap_or(false);
    let got = mine::mine(
        &fx.encoder,
        &fx.pairs,
        use_corpus.then_some(fx.corpus.as_slice()),
        &cfg,
        &mut (),
    )
    .unwrap();
    assert_eq!(got.columns, want.columns);
    assert_eq!(got.n_rows(), want.n_rows());
    for r in 0..want.n_rows() {
        assert_eq!(got.text_row(r)[..3], want.text_row(r)[..3], "row {r}");
    }
}
