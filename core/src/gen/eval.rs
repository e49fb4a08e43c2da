//! The held-out retrieval split (`--eval-ratio R`): a seeded fraction of a part's distinct
//! anchors becomes queries; the part's distinct positives become the corpus; each held-out
//! anchor's positives are its relevant documents. All rows of a held-out anchor leave the
//! training files (supervised and unsupervised).
//!
//! Files (CSV, UTF-8 without BOM, header row): `eval_queries.csv` (`id,text`),
//! `eval_corpus.csv` (`id,text`), `eval_qrels.csv` (`query_id,corpus_id`); ids are `q1..`
//! and `d1..` in first-appearance order.

use std::path::Path;

use rand::seq::index;

use super::groups::{FxHashMap, FxHashSet};
use super::output::{Format, RowWriter, Staging};
use super::FileEntry;
use crate::error::Result;
use crate::Rng;

/// The split of one part, filled while the strategy runs.
#[derive(Debug, Default)]
pub struct EvalSplit<'t> {
    held: FxHashSet<&'t str>,
    /// Held-out anchor -> query number (1-based), in order of first supervised row.
    queries: FxHashMap<&'t str, u32>,
    query_order: Vec<&'t str>,
    /// Positive text -> corpus number (1-based).
    corpus: FxHashMap<String, u32>,
    corpus_order: Vec<String>,
    qrels: Vec<(u32, u32)>,
    qrel_seen: FxHashSet<(u32, u32)>,
}

impl<'t> EvalSplit<'t> {
    /// Holds out `round(ratio * n)` of the `n` distinct texts among `anchors` (at least one
    /// and at most `n - 1` when `ratio > 0` and `n >= 2`), chosen uniformly with `rng`.
    pub fn choose(anchors: &[&'t str], ratio: f64, rng: &mut Rng) -> Self {
        let mut seen: FxHashSet<&'t str> = FxHashSet::default();
        let distinct: Vec<&'t str> = anchors.iter().copied().filter(|a| seen.insert(a)).collect();
        let n = distinct.len();
        let mut k = (ratio * n as f64).round() as usize;
        if ratio > 0.0 && n >= 2 {
            k = k.clamp(1, n - 1);
        } else if n < 2 {
            k = 0;
        }
        let held = index::sample(rng, n, k)
            .into_iter()
            .map(|i| distinct[i])
            .collect();
        EvalSplit {
            held,
            ..Default::default()
        }
    }

    /// Whether `anchor` is held out.
    pub fn is_held(&self, anchor: &str) -> bool {
        self.held.contains(anchor)
    }

    /// Distinct anchors held out.
    pub fn n_held(&self) -> usize {
        self.held.len()
    }

    /// Records a supervised row (`anchor, positive, ...`): its positive joins the corpus;
    /// a held-out anchor's row becomes a relevance pair. Returns true when the row is
    /// held out (and must not be written to the training file).
    pub fn observe(&mut self, fields: &[&str]) -> bool {
        let (Some(&anchor), Some(&positive)) = (fields.first(), fields.get(1)) else {
            return false;
        };
        let next = self.corpus_order.len() as u32 + 1;
        let d = match self.corpus.get(positive) {
            Some(&d) => d,
            None => {
                self.corpus.insert(positive.to_string(), next);
                self.corpus_order.push(positive.to_string());
                next
            }
        };
        let Some(&key) = self.held.get(anchor) else {
            return false;
        };
        let nq = self.query_order.len() as u32 + 1;
        let q = *self.queries.entry(key).or_insert(nq);
        if q == nq {
            self.query_order.push(key);
        }
        if self.qrel_seen.insert((q, d)) {
            self.qrels.push((q, d));
        }
        true
    }

    /// Writes `<prefix>eval_queries.csv`, `<prefix>eval_corpus.csv` and
    /// `<prefix>eval_qrels.csv` in `dir`; returns their manifest entries (file = full path).
    pub fn write(self, staging: &mut Staging, dir: &Path, prefix: &str) -> Result<Vec<FileEntry>> {
        let mut out = Vec::new();
        let mut emit = |kind: &'static str,
                        header: [&str; 2],
                        rows: &mut dyn Iterator<Item = [String; 2]>|
         -> Result<()> {
            let path = dir.join(format!("{prefix}{kind}.csv"));
            let cols: Vec<String> = header.iter().map(|s| s.to_string()).collect();
            let mut w =
                RowWriter::without_bom(staging.create(&path)?, &path, Format::Csv, cols.clone())?;
            for r in rows {
                w.write(&[&r[0], &r[1]])?;
            }
            let n = w.finish()?;
            out.push(FileEntry {
                file: path.to_string_lossy().into_owned(),
                part: String::new(),
                kind,
                rows: n,
                columns: cols,
            });
            Ok(())
        };
        emit(
            "eval_queries",
            ["id", "text"],
            &mut self
                .query_order
                .iter()
                .enumerate()
                .map(|(i, t)| [format!("q{}", i + 1), t.to_string()]),
        )?;
        emit(
            "eval_corpus",
            ["id", "text"],
            &mut self
                .corpus_order
                .iter()
                .enumerate()
                .map(|(i, t)| [format!("d{}", i + 1), t.clone()]),
        )?;
        emit(
            "eval_qrels",
            ["query_id", "corpus_id"],
            &mut self
                .qrels
                .iter()
                .map(|(q, d)| [format!("q{q}"), format!("d{d}")]),
        )?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_out_whole_anchors_with_their_positives() {
        let anchors = ["a", "b", "a", "c", "d", "e", "f", "g", "h", "i", "j"];
        let mut rng = crate::seeded_rng(3);
        let mut s = EvalSplit::choose(&anchors, 0.2, &mut rng);
        assert_eq!(s.n_held(), 2); // 10 distinct * 0.2
        let held: Vec<&str> = anchors.iter().copied().filter(|a| s.is_held(a)).collect();
        assert!(!held.is_empty());
        let h = held[0];
        assert!(s.observe(&[h, "p1", "n"]));
        assert!(s.observe(&[h, "p2", "n"]));
        assert!(s.observe(&[h, "p1", "m"])); // duplicate pair is kept once
        let other = anchors.iter().copied().find(|a| !s.is_held(a)).unwrap();
        assert!(!s.observe(&[other, "p3", "n"]));
        assert_eq!(s.query_order, vec![h]);
        assert_eq!(s.corpus_order, vec!["p1", "p2", "p3"]);
        assert_eq!(s.qrels, vec![(1, 1), (1, 2)]);
    }

    #[test]
    fn ratio_bounds() {
        let mut rng = crate::seeded_rng(1);
        assert_eq!(EvalSplit::choose(&["a", "b"], 0.01, &mut rng).n_held(), 1);
        assert_eq!(EvalSplit::choose(&["a", "b"], 0.99, &mut rng).n_held(), 1);
        assert_eq!(EvalSplit::choose(&["a"], 0.5, &mut rng).n_held(), 0);
    }
}
