//! A third-party negative sampler, written against embtune-core alone.
//!
//! `lexical-overlap` picks the hardest negatives by surface form: among the other anchors of
//! the same category, the ones sharing the most words with the anchor. Words overlapping is
//! what makes a negative "hard" for a lexical matcher, so a model trained on these learns
//! to look past shared words. To bound the cost on big categories it scores at most
//! `max_candidates` candidates per anchor, drawn at random from the group.

use std::collections::{HashMap, HashSet};

use embtune_core::{register_sampler, CandidatePool, NegativeSampler, Result, Rng};
use rand::seq::index::sample;
use serde::{Deserialize, Serialize};

/// Options of `lexical-overlap` (`--sampler-opt max_candidates=64`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LexicalOverlapConfig {
    /// Candidates scored per anchor (a random subset of the group when it is larger).
    pub max_candidates: usize,
}

impl Default for LexicalOverlapConfig {
    fn default() -> Self {
        LexicalOverlapConfig { max_candidates: 64 }
    }
}

/// The sampler: groups of distinct anchor texts per category, built in `prepare`.
#[derive(Debug, Default)]
pub struct LexicalOverlap {
    config: LexicalOverlapConfig,
    /// Per pool entry: its group id.
    group_of: Vec<usize>,
    /// Per group: pool indices of its distinct anchor texts.
    groups: Vec<Vec<usize>>,
}

impl LexicalOverlap {
    /// A sampler with `config`.
    pub fn new(config: LexicalOverlapConfig) -> Self {
        LexicalOverlap {
            config,
            ..Default::default()
        }
    }
}

fn words(s: &str) -> HashSet<&str> {
    s.split_whitespace().collect()
}

impl NegativeSampler for LexicalOverlap {
    fn prepare(&mut self, pool: &CandidatePool<'_>) -> Result<()> {
        let mut group_ids: HashMap<&str, usize> = HashMap::new();
        let mut seen: HashSet<(usize, &str)> = HashSet::new();
        self.groups.clear();
        self.group_of.clear();
        for (i, (&text, &cat)) in pool.anchors.iter().zip(&pool.categories).enumerate() {
            let next = group_ids.len();
            let g = *group_ids.entry(cat).or_insert(next);
            if g == self.groups.len() {
                self.groups.push(Vec::new());
            }
            if seen.insert((g, text)) {
                self.groups[g].push(i);
            }
            self.group_of.push(g);
        }
        Ok(())
    }

    fn sample(
        &self,
        pool: &CandidatePool<'_>,
        anchor: usize,
        k: usize,
        rng: &mut Rng,
        out: &mut Vec<usize>,
    ) -> Result<()> {
        let text = pool.anchors[anchor];
        let group = &self.groups[self.group_of[anchor]];
        let candidates: Vec<usize> = if group.len() > self.config.max_candidates {
            sample(rng, group.len(), self.config.max_candidates)
                .into_iter()
                .map(|i| group[i])
                .collect()
        } else {
            group.clone()
        };
        let mine = words(text);
        let mut scored: Vec<(usize, usize)> = candidates
            .into_iter()
            .filter(|&c| pool.anchors[c] != text)
            .map(|c| (words(pool.anchors[c]).intersection(&mine).count(), c))
            .collect();
        // Most shared words first; pool order breaks ties, so the result is reproducible.
        scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        out.extend(scored.into_iter().take(k).map(|(_, c)| c));
        Ok(())
    }
}

register_sampler!(
    name: "lexical-overlap",
    summary: "same-category negatives sharing the most words with the anchor (example plugin)",
    long: "Among the other anchors of the anchor's category, returns the k that share the most\n\
           whitespace-separated words with it (ties: table order). Scores at most\n\
           max_candidates random candidates per anchor.",
    config: LexicalOverlapConfig,
    build: |c| Ok(Box::new(LexicalOverlap::new(c))),
);

/// Call from a binary so the linker keeps this crate's registration.
pub fn link() {}

#[cfg(test)]
mod tests {
    use super::*;
    use embtune_core::testing;

    #[test]
    fn picks_the_most_overlapping_same_category_anchor() {
        let table = testing::table(
            &["desc", "cat"],
            &[
                &["open a savings account online", "bank"],
                &["open a checking account online", "bank"],
                &["loan interest rates", "bank"],
                &["open a savings account online", "bank"],
                &["open a car insurance policy online", "insurance"],
            ],
        );
        let pool = testing::pool(&table, "desc", "cat");
        let mut s: Box<dyn NegativeSampler> = testing::build("lexical-overlap", &[]).unwrap();
        let got = testing::run_sampler(s.as_mut(), &pool, 1, 7).unwrap();
        assert_eq!(got[0], vec![1], "checking-account text shares 4 words");
        assert_eq!(got[2], vec![0], "a tie on one word goes to table order");
        assert!(got[4].is_empty(), "a category of one has no negative");
        for (i, negs) in got.iter().enumerate() {
            for &n in negs {
                assert_ne!(pool.anchors[n], pool.anchors[i]);
                assert_eq!(pool.categories[n], pool.categories[i]);
            }
        }
    }

    #[test]
    fn resolves_by_name_and_checks_options() {
        assert!(
            testing::build::<dyn NegativeSampler>("lexical-overlap", &["max_candidates=8"]).is_ok()
        );
        let e = testing::build::<dyn NegativeSampler>("lexical-overlap", &["max_cands=8"])
            .err()
            .unwrap();
        assert!(e.to_string().contains("max_candidates"), "{e}");
    }
}
