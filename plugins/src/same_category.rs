//! `same-category`: the original's hard negatives: other anchors of the same category
//! value. Distinct texts, never empty, never equal to the anchor; linear time.

use embtune_core::sampler::GroupSampler;
use embtune_core::{register_sampler, CandidatePool};
use serde::{Deserialize, Serialize};

/// Config of `same-category` (no options).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SameCategoryConfig {}

/// The group of a pool entry: its category value.
fn category<'a>(pool: &CandidatePool<'a>, i: usize) -> &'a str {
    pool.categories[i]
}

register_sampler!(
    name: "same-category",
    summary: "the original: other anchors of the same category (distinct, never the anchor)",
    long: "Candidates are the distinct anchor texts of the anchor's category group (the category\n\
           column's trimmed value) other than the anchor's own text; empty anchors are never in\n\
           the pool. Draws min(k, candidates) distinct texts uniformly; the framework repeats\n\
           them to fill k columns and records the repeats. Each (category, text) gets an id once\n\
           per part, so a draw costs O(k) (the original scanned the group for every positive).",
    config: SameCategoryConfig,
    build: |_c| Ok(Box::new(GroupSampler::new(category))),
);

#[cfg(test)]
mod tests {
    use super::*;
    use embtune_core::testing;
    use std::collections::{HashMap, HashSet};

    /// A random table: skewed category sizes, repeated texts.
    fn random_table(seed: u64, n: usize) -> embtune_core::Table {
        use rand::Rng as _;
        let mut rng = testing::rng(seed);
        let rows: Vec<Vec<String>> = (0..n)
            .map(|_| {
                let cat = (rng.gen_range(0.0f64..1.0).powi(3) * 12.0) as usize;
                let text = format!("t{}", rng.gen_range(0..n / 2 + 1));
                vec![text, format!("c{cat}")]
            })
            .collect();
        embtune_core::Table::from_rows(&["d", "c"], &rows)
    }

    #[test]
    fn property_negatives_are_same_category_distinct_and_never_the_anchor() {
        for seed in 0..20 {
            let t = random_table(seed, 200);
            let pool = testing::pool(&t, "d", "c");
            // The naive candidate set, as the original computes it.
            let mut by_cat: HashMap<&str, HashSet<&str>> = HashMap::new();
            for i in 0..pool.len() {
                by_cat
                    .entry(pool.categories[i])
                    .or_default()
                    .insert(pool.anchors[i]);
            }
            for k in [1usize, 3, 5] {
                let mut s = GroupSampler::new(category);
                let got = testing::run_sampler(&mut s, &pool, k, seed).unwrap();
                for (a, negs) in got.iter().enumerate() {
                    let allowed: HashSet<&str> = by_cat[pool.categories[a]]
                        .iter()
                        .copied()
                        .filter(|t| *t != pool.anchors[a])
                        .collect();
                    assert_eq!(negs.len(), k.min(allowed.len()), "seed {seed} anchor {a}");
                    let texts: HashSet<&str> = negs.iter().map(|&i| pool.anchors[i]).collect();
                    assert_eq!(texts.len(), negs.len(), "duplicate negative text");
                    for &n in negs {
                        assert_eq!(pool.categories[n], pool.categories[a]);
                        assert!(!pool.anchors[n].is_empty());
                        assert_ne!(pool.anchors[n], pool.anchors[a]);
                    }
                }
            }
        }
    }

    #[test]
    fn reproducible_for_a_seed() {
        let t = random_table(9, 300);
        let pool = testing::pool(&t, "d", "c");
        let a = testing::run_sampler(&mut GroupSampler::new(category), &pool, 4, 11).unwrap();
        let b = testing::run_sampler(&mut GroupSampler::new(category), &pool, 4, 11).unwrap();
        let c = testing::run_sampler(&mut GroupSampler::new(category), &pool, 4, 12).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
