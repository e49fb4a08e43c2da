//! Evaluation metrics as pure functions over precomputed scores.
//!
//! - [`information_retrieval`]: Accuracy/Precision/Recall@k, MRR@k, NDCG@k and MAP@k exactly as
//!   sentence-transformers' `InformationRetrievalEvaluator` computes them
//!   (`sentence_transformers/sentence_transformer/evaluation/information_retrieval.py`,
//!   `compute_metrics`), including its ranking: score descending, ties by corpus id ascending
//!   (string order).
//! - [`triplet_accuracy`]: the fraction of triplets with `s(a, p) > s(a, n) + margin`
//!   (`TripletEvaluator`).
//! - [`combined_margin`]: the original fine-tuning script's model-selection score,
//!   `0.7 * (s1 - s2) + 0.3 * (s1 - s3)`, generalized to any weights.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// The cutoffs k of each retrieval metric; the default is sentence-transformers' default.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RetrievalCutoffs {
    /// Accuracy@k (hit rate): `[1, 3, 5, 10]`.
    pub accuracy_at_k: Vec<usize>,
    /// Precision@k and Recall@k: `[1, 3, 5, 10]`.
    pub precision_recall_at_k: Vec<usize>,
    /// MRR@k: `[10]`.
    pub mrr_at_k: Vec<usize>,
    /// NDCG@k: `[10]`.
    pub ndcg_at_k: Vec<usize>,
    /// MAP@k: `[100]`.
    pub map_at_k: Vec<usize>,
}

impl Default for RetrievalCutoffs {
    fn default() -> Self {
        RetrievalCutoffs {
            accuracy_at_k: vec![1, 3, 5, 10],
            precision_recall_at_k: vec![1, 3, 5, 10],
            mrr_at_k: vec![10],
            ndcg_at_k: vec![10],
            map_at_k: vec![100],
        }
    }
}

impl RetrievalCutoffs {
    /// The deepest cutoff: how many ranked hits per query the metrics need.
    pub fn max_k(&self) -> usize {
        [
            &self.accuracy_at_k,
            &self.precision_recall_at_k,
            &self.mrr_at_k,
            &self.ndcg_at_k,
            &self.map_at_k,
        ]
        .into_iter()
        .flatten()
        .copied()
        .max()
        .unwrap_or(0)
    }
}

/// Retrieval metrics averaged over the evaluated queries (those with at least one relevant
/// document), keyed by cutoff k.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RetrievalMetrics {
    /// Fraction of queries with a relevant document in the top k.
    pub accuracy_at_k: BTreeMap<usize, f64>,
    /// Mean of `|top_k ∩ R| / k`.
    pub precision_at_k: BTreeMap<usize, f64>,
    /// Mean of `|top_k ∩ R| / |R|`.
    pub recall_at_k: BTreeMap<usize, f64>,
    /// Mean binary-gain NDCG@k.
    pub ndcg_at_k: BTreeMap<usize, f64>,
    /// Mean reciprocal rank of the first relevant hit in the top k (0 when none).
    pub mrr_at_k: BTreeMap<usize, f64>,
    /// Mean average precision at k, normalized by `min(k, |R|)`.
    pub map_at_k: BTreeMap<usize, f64>,
    /// How many queries were evaluated.
    pub queries: usize,
}

impl RetrievalMetrics {
    /// The metrics under sentence-transformers' names, in its order: `{score_fn}_accuracy@k`,
    /// `_precision@k`, `_recall@k`, `_ndcg@k`, `_mrr@k`, `_map@k` (e.g. `cosine_ndcg@10`).
    /// Each group lists its cutoffs ascending.
    pub fn named(&self, score_fn: &str) -> Vec<(String, f64)> {
        let groups = [
            ("accuracy", &self.accuracy_at_k),
            ("precision", &self.precision_at_k),
            ("recall", &self.recall_at_k),
            ("ndcg", &self.ndcg_at_k),
            ("mrr", &self.mrr_at_k),
            ("map", &self.map_at_k),
        ];
        groups
            .into_iter()
            .flat_map(|(name, values)| {
                values
                    .iter()
                    .map(move |(k, v)| (format!("{score_fn}_{name}@{k}"), *v))
            })
            .collect()
    }
}

/// Retrieval metrics of a `(Q, C)` score matrix.
///
/// - `scores`: row-major, `Q * C` values; row q scores query q against every corpus entry.
/// - `corpus_ids`: the C corpus ids; equal scores rank by ascending id (plain string order,
///   as the reference compares Python strings).
/// - `relevant`: for each of the Q queries, the corpus indices (0-based columns) of its
///   relevant documents; duplicates count once. Queries with none are skipped, as the
///   reference skips them.
///
/// Each query's ranked list holds its top `min(max_k, C)` hits; Precision@k still divides by
/// k. An error when the sizes disagree, an index is out of range, or no query has a relevant
/// document.
pub fn information_retrieval<S: AsRef<str>>(
    scores: &[f64],
    corpus_ids: &[S],
    relevant: &[Vec<usize>],
    cutoffs: &RetrievalCutoffs,
) -> Result<RetrievalMetrics> {
    let (q, c) = (relevant.len(), corpus_ids.len());
    if scores.len() != q * c {
        return Err(Error::Invalid(format!(
            "retrieval metrics: {} scores for {q} queries x {c} corpus entries (expected {})",
            scores.len(),
            q * c
        )));
    }
    if let Some(bad) = relevant.iter().flatten().find(|&&d| d >= c) {
        return Err(Error::Invalid(format!(
            "retrieval metrics: relevant index {bad} out of range for a corpus of {c}"
        )));
    }
    // Rank of each corpus entry in ascending id order: the tie-break key.
    let mut by_id: Vec<usize> = (0..c).collect();
    by_id.sort_by(|&a, &b| corpus_ids[a].as_ref().cmp(corpus_ids[b].as_ref()));
    let mut id_rank = vec![0usize; c];
    for (rank, &doc) in by_id.iter().enumerate() {
        id_rank[doc] = rank;
    }
    let top_k = cutoffs.max_k().min(c);

    let mut per_query = Accumulator::new(cutoffs);
    let mut is_relevant = vec![false; c];
    let mut order: Vec<usize> = Vec::with_capacity(c);
    for (row, rel) in scores.chunks(c.max(1)).zip(relevant) {
        rel.iter().for_each(|&d| is_relevant[d] = true);
        let n_relevant = is_relevant.iter().filter(|&&r| r).count();
        if n_relevant > 0 {
            order.clear();
            order.extend(0..c);
            let key = |&a: &usize, &b: &usize| {
                row[b].total_cmp(&row[a]).then(id_rank[a].cmp(&id_rank[b]))
            };
            if top_k > 0 && top_k < c {
                order.select_nth_unstable_by(top_k - 1, key);
            }
            order.truncate(top_k);
            order.sort_by(key);
            let hits: Vec<bool> = order.iter().map(|&d| is_relevant[d]).collect();
            per_query.add(&hits, n_relevant);
        }
        rel.iter().for_each(|&d| is_relevant[d] = false);
    }
    per_query.finish()
}

/// Per-query metric values, averaged at the end like the reference (`np.mean` of per-query
/// lists; accuracy and MRR as sums divided by the query count).
struct Accumulator<'a> {
    cutoffs: &'a RetrievalCutoffs,
    accuracy: Vec<f64>,
    precision: Vec<Vec<f64>>,
    recall: Vec<Vec<f64>>,
    mrr: Vec<f64>,
    ndcg: Vec<Vec<f64>>,
    map: Vec<Vec<f64>>,
    queries: usize,
}

impl<'a> Accumulator<'a> {
    fn new(cutoffs: &'a RetrievalCutoffs) -> Self {
        Accumulator {
            cutoffs,
            accuracy: vec![0.0; cutoffs.accuracy_at_k.len()],
            precision: vec![Vec::new(); cutoffs.precision_recall_at_k.len()],
            recall: vec![Vec::new(); cutoffs.precision_recall_at_k.len()],
            mrr: vec![0.0; cutoffs.mrr_at_k.len()],
            ndcg: vec![Vec::new(); cutoffs.ndcg_at_k.len()],
            map: vec![Vec::new(); cutoffs.map_at_k.len()],
            queries: 0,
        }
    }

    /// `hits[r]`: whether the hit at 0-based rank r is relevant; `n_relevant = |R|`.
    fn add(&mut self, hits: &[bool], n_relevant: usize) {
        let top = |k: usize| &hits[..k.min(hits.len())];
        self.queries += 1;
        for (acc, &k) in self.accuracy.iter_mut().zip(&self.cutoffs.accuracy_at_k) {
            if top(k).iter().any(|&h| h) {
                *acc += 1.0;
            }
        }
        for (i, &k) in self.cutoffs.precision_recall_at_k.iter().enumerate() {
            let correct = top(k).iter().filter(|&&h| h).count() as f64;
            self.precision[i].push(correct / k as f64);
            self.recall[i].push(correct / n_relevant as f64);
        }
        for (mrr, &k) in self.mrr.iter_mut().zip(&self.cutoffs.mrr_at_k) {
            if let Some(rank) = top(k).iter().position(|&h| h) {
                *mrr += 1.0 / (rank + 1) as f64;
            }
        }
        for (i, &k) in self.cutoffs.ndcg_at_k.iter().enumerate() {
            let ideal = dcg_at_k((0..n_relevant).map(|_| true), k);
            self.ndcg[i].push(dcg_at_k(top(k).iter().copied(), k) / ideal);
        }
        for (i, &k) in self.cutoffs.map_at_k.iter().enumerate() {
            let (mut correct, mut sum) = (0usize, 0.0);
            for (rank, _) in top(k).iter().enumerate().filter(|(_, &h)| h) {
                correct += 1;
                sum += correct as f64 / (rank + 1) as f64;
            }
            self.map[i].push(sum / k.min(n_relevant) as f64);
        }
    }

    fn finish(self) -> Result<RetrievalMetrics> {
        let n = self.queries;
        if n == 0 {
            return Err(Error::Invalid(
                "retrieval metrics: no query has a relevant document in the corpus".to_string(),
            ));
        }
        let c = self.cutoffs;
        let sums = |ks: &[usize], v: Vec<f64>| {
            ks.iter()
                .copied()
                .zip(v.into_iter().map(|s| s / n as f64))
                .collect()
        };
        let means = |ks: &[usize], v: Vec<Vec<f64>>| {
            ks.iter().copied().zip(v.iter().map(|l| mean(l))).collect()
        };
        Ok(RetrievalMetrics {
            accuracy_at_k: sums(&c.accuracy_at_k, self.accuracy),
            precision_at_k: means(&c.precision_recall_at_k, self.precision),
            recall_at_k: means(&c.precision_recall_at_k, self.recall),
            ndcg_at_k: means(&c.ndcg_at_k, self.ndcg),
            mrr_at_k: sums(&c.mrr_at_k, self.mrr),
            map_at_k: means(&c.map_at_k, self.map),
            queries: n,
        })
    }
}

/// Binary-gain DCG over the first k relevances: `sum_{i<k} rel_i / log2(i + 2)`.
fn dcg_at_k(relevances: impl Iterator<Item = bool>, k: usize) -> f64 {
    relevances
        .take(k)
        .enumerate()
        .filter(|(_, r)| *r)
        .map(|(i, _)| 1.0 / ((i + 2) as f64).log2())
        .sum()
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Triplet accuracy: the fraction of triplets whose positive score beats the negative score
/// by more than `margin` (`s_pos > s_neg + margin`, as sentence-transformers'
/// `TripletEvaluator`; margin 0 there by default). Scores are one per triplet, e.g. cosine
/// similarities of (anchor, positive) and (anchor, negative).
pub fn triplet_accuracy(
    positive_scores: &[f64],
    negative_scores: &[f64],
    margin: f64,
) -> Result<f64> {
    if positive_scores.len() != negative_scores.len() || positive_scores.is_empty() {
        return Err(Error::Invalid(format!(
            "triplet accuracy: {} positive scores and {} negative scores (need the same, non-zero count)",
            positive_scores.len(),
            negative_scores.len()
        )));
    }
    let correct = positive_scores
        .iter()
        .zip(negative_scores)
        .filter(|(p, n)| **p > **n + margin)
        .count();
    Ok(correct as f64 / positive_scores.len() as f64)
}

/// The weights of the original fine-tuning script's combined margin.
pub const ORIGINAL_MARGIN_WEIGHTS: [f64; 2] = [0.7, 0.3];

/// The combined margin of one query: `sum_k weights[k] * (scores[0] - scores[k + 1])`, where
/// `scores[0]` is the score of the document that should rank first and `scores[1..]` those
/// that should rank below it. With [`ORIGINAL_MARGIN_WEIGHTS`] this is the original script's
/// `0.7 * (s1 - s2) + 0.3 * (s1 - s3)`; higher is better. An error unless
/// `scores.len() == weights.len() + 1`.
pub fn combined_margin(scores: &[f64], weights: &[f64]) -> Result<f64> {
    if scores.len() != weights.len() + 1 {
        return Err(Error::Invalid(format!(
            "combined margin: {} scores for {} weights (need one score more than weights: the target document first)",
            scores.len(),
            weights.len()
        )));
    }
    Ok(weights
        .iter()
        .zip(&scores[1..])
        .map(|(w, s)| w * (scores[0] - s))
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn perfect_and_worst_rankings() {
        // 2 queries x 4 docs; query 0 ranks its two relevant docs first, query 1 last.
        let scores = [0.9, 0.8, 0.1, 0.0, 0.9, 0.8, 0.1, 0.0];
        let ids = ["a", "b", "c", "d"];
        let m = information_retrieval(
            &scores,
            &ids,
            &[vec![0, 1], vec![3]],
            &RetrievalCutoffs::default(),
        )
        .unwrap();
        assert_eq!(m.queries, 2);
        assert_relative_eq!(m.accuracy_at_k[&1], 0.5);
        assert_relative_eq!(m.accuracy_at_k[&5], 1.0);
        assert_relative_eq!(m.precision_at_k[&1], 0.5);
        assert_relative_eq!(m.recall_at_k[&3], 0.5);
        assert_relative_eq!(m.mrr_at_k[&10], (1.0 + 0.25) / 2.0);
        assert_relative_eq!(m.ndcg_at_k[&10], (1.0 + 1.0 / 5f64.log2()) / 2.0);
        assert_relative_eq!(m.map_at_k[&100], (1.0 + 0.25) / 2.0);
    }

    #[test]
    fn ties_rank_by_ascending_id_as_strings() {
        // All scores equal: order is "d10" < "d2" < "d3" as strings.
        let ids = ["d3", "d2", "d10"];
        let m = information_retrieval(&[0.5; 3], &ids, &[vec![2]], &RetrievalCutoffs::default())
            .unwrap();
        assert_relative_eq!(m.accuracy_at_k[&1], 1.0);
        let m = information_retrieval(&[0.5; 3], &ids, &[vec![0]], &RetrievalCutoffs::default())
            .unwrap();
        assert_relative_eq!(m.mrr_at_k[&10], 1.0 / 3.0);
    }

    #[test]
    fn queries_without_relevant_docs_are_skipped() {
        let m = information_retrieval(
            &[1.0, 0.0, 1.0, 0.0],
            &["a", "b"],
            &[vec![], vec![0]],
            &Default::default(),
        )
        .unwrap();
        assert_eq!(m.queries, 1);
        assert_relative_eq!(m.accuracy_at_k[&1], 1.0);
        assert!(information_retrieval(&[1.0], &["a"], &[vec![]], &Default::default()).is_err());
        assert!(information_retrieval(&[1.0], &["a"], &[vec![1]], &Default::default()).is_err());
        assert!(
            information_retrieval(&[1.0, 2.0], &["a"], &[vec![0]], &Default::default()).is_err()
        );
    }

    #[test]
    fn names_follow_sentence_transformers() {
        let m = information_retrieval(&[1.0, 0.0], &["a", "b"], &[vec![0]], &Default::default())
            .unwrap();
        let names: Vec<String> = m.named("cosine").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 15);
        assert_eq!(names[0], "cosine_accuracy@1");
        assert!(names.contains(&"cosine_ndcg@10".to_string()));
        assert_eq!(names.last().unwrap(), "cosine_map@100");
    }

    #[test]
    fn triplet_accuracy_and_margin() {
        assert_relative_eq!(
            triplet_accuracy(&[0.9, 0.2, 0.5], &[0.1, 0.3, 0.45], 0.0).unwrap(),
            2.0 / 3.0
        );
        assert_relative_eq!(
            triplet_accuracy(&[0.9, 0.2, 0.5], &[0.1, 0.3, 0.45], 0.1).unwrap(),
            1.0 / 3.0
        );
        assert!(triplet_accuracy(&[0.1], &[], 0.0).is_err());
    }

    #[test]
    fn combined_margin_of_the_original_example() {
        // The original's reported scores: NISA 0.404, regular savings 0.329, home loan 0.108.
        let m = combined_margin(&[0.404, 0.329, 0.108], &ORIGINAL_MARGIN_WEIGHTS).unwrap();
        assert_relative_eq!(
            m,
            0.7 * (0.404 - 0.329) + 0.3 * (0.404 - 0.108),
            epsilon = 1e-15
        );
        assert!(combined_margin(&[0.4, 0.3], &ORIGINAL_MARGIN_WEIGHTS).is_err());
    }
}
