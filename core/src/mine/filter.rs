//! From each query's nearest corpus rows to its negatives: the positives masked out, the
//! margin and score filters, the `range_min..range_max` window, then the top or a random
//! sample of what is left. Pure Rust on the CPU; the order of every step, the f32
//! arithmetic and the "skipped" counters follow sentence-transformers v6
//! `sentence_transformers/util/hard_negatives.py` (`mine_hard_negatives`).

use rand::seq::index::sample;

use super::{MineConfig, SamplingStrategy};
use crate::Rng;

/// Each query's nearest corpus rows, as the search returns them.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidates {
    /// Columns per query actually found: `min(range_max + max_positives, corpus size)`.
    pub found: usize,
    /// Columns per query the reference asks its search for, `range_max + max_positives`;
    /// the columns beyond `found` count as `-inf` candidates (the reference pads with them).
    pub asked: usize,
    /// `(queries, found)` row-major, each row sorted descending.
    pub scores: Vec<f32>,
    /// `(queries, found)` row-major corpus rows.
    pub indices: Vec<i64>,
}

/// Candidates one filter removed, as the reference reports them ("Skipped N potential
/// negatives (R%) due to the PARAM of VALUE.").
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// The reference's parameter name (`absolute_margin`, `relative_margin`, `max_score`,
    /// `min_score`).
    pub param: &'static str,
    /// Its value.
    pub value: f64,
    /// Candidates the filter matched (for `min_score` the reference also counts the ones
    /// already removed, since `-inf < min_score`).
    pub count: usize,
    /// `count` over the candidates left before it (the reference's ratio).
    pub ratio: f64,
}

/// The negatives of every unique query: `width` slots each, sorted by score, descending;
/// a slot scored `-inf` holds no negative (too few candidates survived).
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Slots per query: `num_negatives`.
    pub width: usize,
    /// `(queries, width)` row-major scores; `f32::NEG_INFINITY` marks an empty slot.
    pub scores: Vec<f32>,
    /// `(queries, width)` row-major corpus rows (meaningless in empty slots).
    pub indices: Vec<usize>,
    /// What each filter removed, in the reference's order, only filters that removed
    /// something.
    pub skipped: Vec<Skipped>,
}

impl Selection {
    /// The `(score, corpus row)` slots of query `q`, empty ones included.
    pub fn row(&self, q: usize) -> impl Iterator<Item = (f32, usize)> + '_ {
        let r = q * self.width..(q + 1) * self.width;
        self.scores[r.clone()]
            .iter()
            .copied()
            .zip(self.indices[r].iter().copied())
    }
}

/// Chooses the negatives of every query.
///
/// - `candidates`: the search result, `positives[q]`: the corpus rows of query q's
///   positives, `positive_scores`: the score of every (query, positive) pair, queries in
///   order and each query's positives in the order of `positives[q]`.
/// - `range_max` is the resolved one ([`super::Plan::range_max`]); `rng` draws the
///   `random` samples.
///
/// Steps, as the reference: positives set to `-inf` (unless `include_positives`); with a
/// margin, each query's threshold comes from its *smallest* positive score, and a candidate
/// goes when `score + absolute_margin > min_positive` or `score > min_positive -
/// |min_positive| * relative_margin`; then `score > max_score` and `score < min_score` go;
/// the best `range_max` survivors are kept, the first `range_min` skipped, and `top` takes
/// the first `num_negatives` while `random` samples `num_negatives` distinct positions
/// among the survivors (among the first `num_negatives` positions when fewer survived) and
/// sorts them by score.
pub fn select_negatives(
    candidates: &Candidates,
    positives: &[Vec<usize>],
    positive_scores: &[f32],
    cfg: &MineConfig,
    range_max: usize,
    rng: &mut Rng,
) -> Selection {
    let n_queries = positives.len();
    let found = candidates.found;
    let padded = candidates.asked.saturating_sub(found);
    // `num_candidates = scores.numel()` in the reference, padding included.
    let mut num_candidates = (n_queries * candidates.asked) as f64;
    let mut scores = candidates.scores.clone();
    let ninf = f32::NEG_INFINITY;

    if !cfg.include_positives {
        for (q, pos) in positives.iter().enumerate() {
            for j in 0..found {
                if pos.contains(&(candidates.indices[q * found + j] as usize)) {
                    scores[q * found + j] = ninf;
                }
            }
        }
    }

    let mut skipped = Vec::new();
    let remove = |scores: &mut [f32], rule: &dyn Fn(usize, f32) -> bool| -> usize {
        let mut n = 0;
        for (i, s) in scores.iter_mut().enumerate() {
            if rule(i / found.max(1), *s) {
                *s = ninf;
                n += 1;
            }
        }
        n
    };

    if cfg.absolute_margin.is_some() || cfg.relative_margin.is_some() {
        // The *minimum* positive score of each query (the reference calls it
        // `max_positive_scores`: the hardest positive sets the margin).
        let mut min_positive = Vec::with_capacity(n_queries);
        let mut at = 0;
        for pos in positives {
            let m = positive_scores[at..at + pos.len()]
                .iter()
                .copied()
                .fold(f32::INFINITY, f32::min);
            min_positive.push(m);
            at += pos.len();
        }
        if let Some(m) = cfg.absolute_margin {
            let m32 = m as f32;
            let n = remove(&mut scores, &|q, s| s + m32 > min_positive[q]);
            if n > 0 {
                skipped.push(Skipped {
                    param: "absolute_margin",
                    value: m,
                    count: n,
                    ratio: n as f64 / num_candidates,
                });
                num_candidates -= n as f64;
            }
        }
        if let Some(m) = cfg.relative_margin {
            // v6 subtracts |positive| * margin (the sign-safe form, upstream #3819).
            let m32 = m as f32;
            let threshold: Vec<f32> = min_positive.iter().map(|&p| p - p.abs() * m32).collect();
            let n = remove(&mut scores, &|q, s| s > threshold[q]);
            if n > 0 {
                skipped.push(Skipped {
                    param: "relative_margin",
                    value: m,
                    count: n,
                    ratio: n as f64 / num_candidates,
                });
                num_candidates -= n as f64;
            }
        }
    }
    if let Some(m) = cfg.max_score {
        let m32 = m as f32;
        let n = remove(&mut scores, &|_, s| s > m32);
        if n > 0 {
            skipped.push(Skipped {
                param: "max_score",
                value: m,
                count: n,
                ratio: n as f64 / num_candidates,
            });
        }
    }
    if let Some(m) = cfg.min_score {
        let m32 = m as f32;
        // `-inf < min_score` holds, so the reference counts every candidate already gone,
        // the padding columns included.
        let n = remove(&mut scores, &|_, s| s < m32) + n_queries * padded;
        if n > 0 {
            skipped.push(Skipped {
                param: "min_score",
                value: m,
                count: n,
                ratio: n as f64 / num_candidates,
            });
        }
    }

    let width = cfg.num_negatives;
    let mut out_scores = Vec::with_capacity(n_queries * width);
    let mut out_indices = Vec::with_capacity(n_queries * width);
    for q in 0..n_queries {
        // `topk(scores, k=range_max)`: the rows are sorted, so the survivors in order.
        let survivors: Vec<(f32, usize)> = (0..found)
            .filter(|&j| scores[q * found + j] != ninf)
            .map(|j| {
                (
                    scores[q * found + j],
                    candidates.indices[q * found + j] as usize,
                )
            })
            .take(range_max)
            .collect();
        let window = survivors.get(cfg.range_min..).unwrap_or(&[]);
        let mut row: Vec<(f32, usize)> = match cfg.sampling_strategy {
            SamplingStrategy::Top => window.iter().copied().take(width).collect(),
            SamplingStrategy::Random => {
                // `num_options = survivors, at least num_negatives`, then
                // `random.sample(range(num_options), k=num_negatives)` and a sort.
                let options = window.len().max(width);
                let mut picked: Vec<(f32, usize)> = sample(rng, options, width)
                    .into_iter()
                    .filter_map(|p| window.get(p).copied())
                    .collect();
                picked.sort_by(|a, b| b.0.total_cmp(&a.0));
                picked
            }
        };
        row.resize(width, (ninf, usize::MAX));
        for (s, i) in row {
            out_scores.push(s);
            out_indices.push(i);
        }
    }
    Selection {
        width,
        scores: out_scores,
        indices: out_indices,
        skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeded_rng;

    fn cfg(num_negatives: usize) -> MineConfig {
        MineConfig {
            num_negatives,
            ..MineConfig::default()
        }
    }

    /// One query, candidates 0..6 scored 0.9, 0.8, ..., 0.4; its positive is row 1.
    fn one_query() -> (Candidates, Vec<Vec<usize>>, Vec<f32>) {
        let scores = vec![0.9, 0.8, 0.7, 0.6, 0.5, 0.4];
        let c = Candidates {
            found: 6,
            asked: 8,
            scores,
            indices: (0..6).collect(),
        };
        (c, vec![vec![1]], vec![0.8])
    }

    #[test]
    fn top_skips_positives_and_range_min() {
        let (c, pos, ps) = one_query();
        let mut rng = seeded_rng(0);
        let s = select_negatives(&c, &pos, &ps, &cfg(2), 7, &mut rng);
        assert_eq!(s.indices, [0, 2]);
        let s = select_negatives(
            &c,
            &pos,
            &ps,
            &MineConfig {
                range_min: 2,
                ..cfg(2)
            },
            7,
            &mut rng,
        );
        assert_eq!(s.indices, [3, 4]);
        // range_max cuts the survivors: 0, 2, 3 survive, range_min 1 leaves 2, 3.
        let s = select_negatives(
            &c,
            &pos,
            &ps,
            &MineConfig {
                range_min: 1,
                ..cfg(3)
            },
            3,
            &mut rng,
        );
        assert_eq!(&s.indices[..2], [2, 3]);
        assert_eq!(s.scores[2], f32::NEG_INFINITY);
        // include_positives keeps row 1.
        let s = select_negatives(
            &c,
            &pos,
            &ps,
            &MineConfig {
                include_positives: true,
                ..cfg(2)
            },
            7,
            &mut rng,
        );
        assert_eq!(s.indices, [0, 1]);
    }

    #[test]
    fn margins_and_scores_count_as_the_reference() {
        let (c, pos, ps) = one_query();
        let mut rng = seeded_rng(0);
        // Absolute 0.15: removes score + 0.15 > 0.8, i.e. 0.9, 0.7 (0.8 is the positive).
        let s = select_negatives(
            &c,
            &pos,
            &ps,
            &MineConfig {
                absolute_margin: Some(0.15),
                ..cfg(2)
            },
            7,
            &mut rng,
        );
        assert_eq!(s.indices, [3, 4]);
        assert_eq!(s.skipped.len(), 1);
        assert_eq!((s.skipped[0].count, s.skipped[0].ratio), (2, 2.0 / 8.0));
        // Relative 0.2: threshold 0.8 - 0.16 = 0.64 removes 0.9, 0.7; max_score 0.55
        // removes 0.6; min_score 0.45 removes 0.4 and counts the 4 removed + 2 padding.
        let s = select_negatives(
            &c,
            &pos,
            &ps,
            &MineConfig {
                relative_margin: Some(0.2),
                max_score: Some(0.55),
                min_score: Some(0.45),
                ..cfg(1)
            },
            7,
            &mut rng,
        );
        assert_eq!(s.indices, [4]);
        let got: Vec<(&str, usize)> = s.skipped.iter().map(|k| (k.param, k.count)).collect();
        assert_eq!(
            got,
            [("relative_margin", 2), ("max_score", 1), ("min_score", 7)]
        );
        assert_eq!(s.skipped[1].ratio, 1.0 / 6.0);
        // A negative positive score: the threshold goes down, not up (v6's |p| form).
        let s = select_negatives(
            &c,
            &pos,
            &[-0.5],
            &MineConfig {
                relative_margin: Some(0.1),
                ..cfg(1)
            },
            7,
            &mut rng,
        );
        assert_eq!(s.scores, [f32::NEG_INFINITY]);
    }

    #[test]
    fn random_picks_only_survivors_and_sorts_them() {
        let (c, pos, ps) = one_query();
        let mut rng = seeded_rng(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let s = select_negatives(
                &c,
                &pos,
                &ps,
                &MineConfig {
                    sampling_strategy: SamplingStrategy::Random,
                    ..cfg(2)
                },
                7,
                &mut rng,
            );
            assert!(s.scores[0] >= s.scores[1]);
            for i in &s.indices {
                assert!(*i != 1, "a positive was sampled");
                seen.insert(*i);
            }
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [0, 2, 3, 4, 5]);
        // Fewer survivors than slots: the empty slots come last.
        let s = select_negatives(
            &c,
            &pos,
            &ps,
            &MineConfig {
                sampling_strategy: SamplingStrategy::Random,
                max_score: Some(0.55),
                ..cfg(3)
            },
            7,
            &mut rng,
        );
        assert_eq!(&s.indices[..2], [4, 5]);
        assert_eq!(s.scores[2], f32::NEG_INFINITY);
    }
}
