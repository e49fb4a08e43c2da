//! The rows of the four output formats, in the reference's order and with its column
//! names (sentence-transformers v6 `sentence_transformers/util/hard_negatives.py`, from
//! "if output_format == 'triplet'" on), the statistics it prints, and the writer.
//!
//! Columns: the anchor and positive columns keep the input's names; then `negative`
//! (triplet), `negative_1..n` (n-tuple), `label` (labeled-pair) or `labels`
//! (labeled-list). With `output_scores`: triplet and n-tuple add `scores` (the positive's
//! score then the negatives'), labeled-pair has `score` instead of `label`, labeled-list
//! `scores` instead of `labels`.
//!
//! Files: CSV (UTF-8 with a byte-order mark, as `embtune gen` writes) or JSON Lines.
//! `embtune train` reads the triplet, n-tuple and labeled-pair files directly (text columns
//! in order, `label`/`score` as the label). A list cell (labeled-list, `scores`) is a JSON
//! array: an array in JSON Lines, its JSON text in a CSV cell.

use std::io::Write;
use std::path::Path;

use super::filter::Selection;
use super::stats::{MineStats, Summary};
use super::{MineConfig, OutputFormat, Plan};
use crate::error::{Error, Result};
use crate::gen::output::{Format, RowWriter, Staging};

/// One output cell; texts are indices into [`Mined::queries`] and [`Mined::corpus`], so the
/// rows do not copy the texts.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A query (anchor) text.
    Query(usize),
    /// A corpus text.
    Doc(usize),
    /// A list of corpus texts (labeled-list).
    Docs(Vec<usize>),
    /// An integer (a label).
    Int(i64),
    /// A similarity score.
    Float(f32),
    /// A list of labels.
    Ints(Vec<i64>),
    /// A list of similarity scores.
    Floats(Vec<f32>),
}

/// The result of a mining run: the column names, the rows and the statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct Mined {
    /// Output column names.
    pub columns: Vec<String>,
    /// The unique queries ([`Value::Query`] indexes them).
    pub queries: Vec<String>,
    /// The searched corpus ([`Value::Doc`] indexes it).
    pub corpus: Vec<String>,
    /// Every row's cells, row-major, `columns.len()` per row.
    pub cells: Vec<Value>,
    /// What the run did.
    pub stats: MineStats,
}

impl Mined {
    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.cells.len() / self.columns.len().max(1)
    }

    /// The cells of row `r`.
    pub fn row(&self, r: usize) -> &[Value] {
        let w = self.columns.len();
        &self.cells[r * w..(r + 1) * w]
    }

    /// Row `r` as text, each cell as a CSV file holds it.
    pub fn text_row(&self, r: usize) -> Vec<String> {
        self.row(r).iter().map(|v| self.cell_text(v)).collect()
    }

    /// A cell as text: texts as they are, numbers as the shortest text that reads back the
    /// same f32, lists as JSON arrays.
    pub fn cell_text(&self, v: &Value) -> String {
        match v {
            Value::Query(i) => self.queries[*i].clone(),
            Value::Doc(i) => self.corpus[*i].clone(),
            Value::Int(x) => x.to_string(),
            Value::Float(x) => x.to_string(),
            other => self.cell_json(other).to_string(),
        }
    }

    /// A cell as a JSON value.
    pub fn cell_json(&self, v: &Value) -> serde_json::Value {
        use serde_json::json;
        match v {
            Value::Query(i) => json!(self.queries[*i]),
            Value::Doc(i) => json!(self.corpus[*i]),
            Value::Docs(ix) => json!(ix.iter().map(|&i| &self.corpus[i]).collect::<Vec<_>>()),
            Value::Int(x) => json!(x),
            Value::Float(x) => json!(x),
            Value::Ints(x) => json!(x),
            Value::Floats(x) => json!(x),
        }
    }

    /// Writes the rows to `path` as CSV or JSON Lines, through a temporary file renamed
    /// into place (a failed write leaves no file).
    pub fn write(&self, path: &Path, format: Format) -> Result<()> {
        let mut staging = Staging::default();
        let out = staging.create(path)?;
        match format {
            Format::Csv => {
                let mut w = RowWriter::new(out, path, Format::Csv, self.columns.clone())?;
                for r in 0..self.n_rows() {
                    let cells = self.text_row(r);
                    let refs: Vec<&str> = cells.iter().map(String::as_str).collect();
                    w.write(&refs)?;
                }
                w.finish()?;
            }
            Format::Jsonl => {
                let mut out = out;
                for r in 0..self.n_rows() {
                    let obj: serde_json::Map<String, serde_json::Value> = self
                        .columns
                        .iter()
                        .cloned()
                        .zip(self.row(r).iter().map(|v| self.cell_json(v)))
                        .collect();
                    serde_json::to_writer(&mut out, &obj).map_err(|e| Error::io(path, e))?;
                    out.write_all(b"\n").map_err(|e| Error::io(path, e))?;
                }
                out.flush().map_err(|e| Error::io(path, e))?;
            }
        }
        staging.commit()?;
        Ok(())
    }
}

/// The rows of `plan`'s format from the chosen negatives, and the statistics.
/// `positive_scores` holds one score per (query, positive) pair in plan order.
pub fn build(plan: Plan, sel: &Selection, positive_scores: &[f32], cfg: &MineConfig) -> Mined {
    let nn = sel.width;
    let scores = cfg.output_scores;
    let ninf = f32::NEG_INFINITY;
    let mut cells: Vec<Value> = Vec::new();
    let mut negative: Vec<f32> = Vec::new();
    let mut difference: Vec<f32> = Vec::new();
    let mut rows = 0usize;
    let n_pairs = positive_scores.len();
    // Every (query, positive) pair with its score, in plan order.
    let pairs: Vec<(usize, usize, f32)> = plan
        .positives
        .iter()
        .enumerate()
        .flat_map(|(q, ps)| ps.iter().map(move |&p| (q, p)))
        .zip(positive_scores.iter().copied())
        .map(|((q, p), s)| (q, p, s))
        .collect();
    let mut columns = vec![plan.anchor_column.clone(), plan.positive_column.clone()];
    let maximum_possible;
    match plan.output_format {
        OutputFormat::Triplet => {
            columns.push("negative".into());
            if scores {
                columns.push("scores".into());
            }
            for &(q, p, ps) in &pairs {
                for (ns, ni) in sel.row(q).filter(|s| s.0 != ninf) {
                    cells.extend([Value::Query(q), Value::Doc(p), Value::Doc(ni)]);
                    if scores {
                        cells.push(Value::Floats(vec![ps, ns]));
                    }
                    negative.push(ns);
                    difference.push(ps - ns);
                    rows += 1;
                }
            }
            maximum_possible = n_pairs * nn;
        }
        OutputFormat::LabeledPair => {
            columns.push(if scores { "score" } else { "label" }.into());
            let mut at = 0;
            for (q, ps) in plan.positives.iter().enumerate() {
                for &p in ps {
                    let s = positive_scores[at];
                    at += 1;
                    cells.extend([
                        Value::Query(q),
                        Value::Doc(p),
                        if scores {
                            Value::Float(s)
                        } else {
                            Value::Int(1)
                        },
                    ]);
                    rows += 1;
                }
                for (ns, ni) in sel.row(q).filter(|s| s.0 != ninf) {
                    cells.extend([
                        Value::Query(q),
                        Value::Doc(ni),
                        if scores {
                            Value::Float(ns)
                        } else {
                            Value::Int(0)
                        },
                    ]);
                    rows += 1;
                }
            }
            // The statistics repeat each query's negatives once per positive.
            for &(q, _, ps) in &pairs {
                for (ns, _) in sel.row(q).filter(|s| s.0 != ninf) {
                    negative.push(ns);
                    difference.push(ps - ns);
                }
            }
            maximum_possible = plan.queries.len() * nn + plan.n_rows;
        }
        OutputFormat::NTuple => {
            columns.extend((1..=nn).map(|i| format!("negative_{i}")));
            if scores {
                columns.push("scores".into());
            }
            for &(q, p, ps) in &pairs {
                if sel.row(q).any(|s| s.0 == ninf) {
                    continue;
                }
                cells.extend([Value::Query(q), Value::Doc(p)]);
                cells.extend(sel.row(q).map(|(_, ni)| Value::Doc(ni)));
                if scores {
                    cells.push(Value::Floats(
                        std::iter::once(ps).chain(sel.row(q).map(|s| s.0)).collect(),
                    ));
                }
                for (ns, _) in sel.row(q) {
                    negative.push(ns);
                    difference.push(ps - ns);
                }
                rows += 1;
            }
            maximum_possible = n_pairs;
        }
        OutputFormat::LabeledList => {
            columns.push(if scores { "scores" } else { "labels" }.into());
            for &(q, p, ps) in &pairs {
                let kept: Vec<(f32, usize)> = sel.row(q).filter(|s| s.0 != ninf).collect();
                if kept.is_empty() {
                    continue;
                }
                let docs = std::iter::once(p).chain(kept.iter().map(|k| k.1)).collect();
                let last = if scores {
                    Value::Floats(
                        std::iter::once(ps)
                            .chain(kept.iter().map(|k| k.0))
                            .collect(),
                    )
                } else {
                    Value::Ints(std::iter::once(1).chain(kept.iter().map(|_| 0)).collect())
                };
                cells.extend([Value::Query(q), Value::Docs(docs), last]);
                for (ns, _) in kept {
                    negative.push(ns);
                    difference.push(ps - ns);
                }
                rows += 1;
            }
            maximum_possible = n_pairs;
        }
    }
    let stats = MineStats {
        n_rows: plan.n_rows,
        n_queries: plan.queries.len(),
        n_corpus: plan.corpus.len(),
        range_max: plan.range_max,
        rows,
        maximum_possible,
        positive: Summary::of(positive_scores),
        negative: Summary::of(&negative),
        difference: Summary::of(&difference),
        skipped: sel.skipped.clone(),
    };
    Mined {
        columns,
        queries: plan.queries,
        corpus: plan.corpus,
        cells,
        stats,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mine::{MineConfig, Pairs};

    /// Queries a (positives p, q) and b (positive r); a has two negatives, b one.
    fn setup(format: OutputFormat, scores: bool) -> Mined {
        let pairs = Pairs {
            anchor_column: "anchor".into(),
            positive_column: "positive".into(),
            anchors: vec!["a".into(), "b".into(), "a".into()],
            positives: vec!["p".into(), "r".into(), "q".into()],
        };
        let corpus: Vec<String> = vec!["n1".into(), "n2".into()];
        let cfg = MineConfig {
            num_negatives: 2,
            output_format: format,
            output_scores: scores,
            ..MineConfig::default()
        };
        let plan = Plan::new(&pairs, Some(&corpus), &cfg).unwrap();
        // corpus: n1 n2 p r q
        let sel = Selection {
            width: 2,
            scores: vec![0.5, 0.25, 0.75, f32::NEG_INFINITY],
            indices: vec![0, 1, 1, usize::MAX],
            skipped: vec![],
        };
        build(plan, &sel, &[1.0, 0.875, 0.625], &cfg)
    }

    fn texts(m: &Mined) -> Vec<Vec<String>> {
        (0..m.n_rows()).map(|r| m.text_row(r)).collect()
    }

    #[test]
    fn triplets_explode_per_positive() {
        let m = setup(OutputFormat::Triplet, true);
        assert_eq!(m.columns, ["anchor", "positive", "negative", "scores"]);
        assert_eq!(
            texts(&m),
            [
                ["a", "p", "n1", "[1.0,0.5]"],
                ["a", "p", "n2", "[1.0,0.25]"],
                ["a", "q", "n1", "[0.875,0.5]"],
                ["a", "q", "n2", "[0.875,0.25]"],
                ["b", "r", "n2", "[0.625,0.75]"],
            ]
        );
        assert_eq!(
            (m.stats.rows, m.stats.maximum_possible, m.stats.missing()),
            (5, 6, 1)
        );
        assert_eq!(m.stats.negative.count, 5);
    }

    #[test]
    fn n_tuple_keeps_complete_rows_only() {
        let m = setup(OutputFormat::NTuple, false);
        assert_eq!(
            m.columns,
            ["anchor", "positive", "negative_1", "negative_2"]
        );
        assert_eq!(texts(&m), [["a", "p", "n1", "n2"], ["a", "q", "n1", "n2"]]);
        assert_eq!(m.stats.maximum_possible, 3);
    }

    #[test]
    fn labeled_pair_and_list() {
        let m = setup(OutputFormat::LabeledPair, false);
        assert_eq!(m.columns, ["anchor", "positive", "label"]);
        assert_eq!(
            texts(&m),
            [
                ["a", "p", "1"],
                ["a", "q", "1"],
                ["a", "n1", "0"],
                ["a", "n2", "0"],
                ["b", "r", "1"],
                ["b", "n2", "0"],
            ]
        );
        // Negatives counted per positive: 2 + 2 + 1.
        assert_eq!(m.stats.negative.count, 5);
        assert_eq!(m.stats.maximum_possible, 2 * 2 + 3);
        let m = setup(OutputFormat::LabeledPair, true);
        assert_eq!(m.columns[2], "score");
        assert_eq!(m.text_row(1)[2], "0.875");
        let m = setup(OutputFormat::LabeledList, false);
        assert_eq!(m.columns, ["anchor", "positive", "labels"]);
        assert_eq!(m.text_row(0), ["a", "[\"p\",\"n1\",\"n2\"]", "[1,0,0]"]);
        assert_eq!(m.text_row(2), ["b", "[\"r\",\"n2\"]", "[1,0]"]);
        let m = setup(OutputFormat::LabeledList, true);
        assert_eq!(m.text_row(2)[2], "[0.625,0.75]");
    }

    #[test]
    fn writes_csv_and_jsonl_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let m = setup(OutputFormat::LabeledList, true);
        let csv = dir.path().join("o.csv");
        m.write(&csv, Format::Csv).unwrap();
        let body = std::fs::read_to_string(&csv).unwrap();
        assert!(
            body.starts_with("\u{feff}anchor,positive,scores\n"),
            "{body}"
        );
        assert!(
            body.contains("b,\"[\"\"r\"\",\"\"n2\"\"]\",\"[0.625,0.75]\"\n"),
            "{body}"
        );
        let jl = dir.path().join("o.jsonl");
        m.write(&jl, Format::Jsonl).unwrap();
        let first: serde_json::Value = serde_json::from_str(
            std::fs::read_to_string(&jl)
                .unwrap()
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(first["positive"][2], "n2");
        assert_eq!(first["scores"][0], 1.0);
        // Only the two files: no temporary left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        // The triplet CSV reads back as a training file.
        let m = setup(OutputFormat::Triplet, false);
        m.write(&csv, Format::Csv).unwrap();
        let ds = crate::table::Dataset::read(&csv).unwrap();
        assert_eq!(ds.columns, ["anchor", "positive", "negative"]);
        assert_eq!(ds.len(), 5);
    }
}
