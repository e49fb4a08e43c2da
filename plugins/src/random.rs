//! `random`: negatives drawn uniformly from the anchors of any other row of the part
//! (distinct texts, never the anchor's own text): an easy-negative baseline.

use embtune_core::register_sampler;
use embtune_core::sampler::GroupSampler;
use serde::{Deserialize, Serialize};

/// Config of `random` (no options).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RandomConfig {}

register_sampler!(
    name: "random",
    summary: "anchors of any other row of the part, uniformly (distinct, never the anchor)",
    long: "Candidates are all distinct anchor texts of the part other than the anchor's own,\n\
           whatever their category: in-domain random negatives, an easy baseline against\n\
           same-category hard negatives. O(k) per draw.",
    config: RandomConfig,
    build: |_c| Ok(Box::new(GroupSampler::new(|_, _| ""))),
);

#[cfg(test)]
mod tests {
    use super::*;
    use embtune_core::testing;
    use std::collections::HashSet;

    #[test]
    fn draws_from_other_categories_too_and_never_the_anchor() {
        let t = testing::table(
            &["d", "c"],
            &[
                &["a", "x"],
                &["b", "y"],
                &["c", "z"],
                &["a", "w"],
                &["", "x"],
            ],
        );
        let pool = testing::pool(&t, "d", "c");
        let mut s = GroupSampler::new(|_, _| "");
        let got = testing::run_sampler(&mut s, &pool, 5, 3).unwrap();
        for (i, negs) in got.iter().enumerate() {
            let texts: HashSet<&str> = negs.iter().map(|&n| pool.anchors[n]).collect();
            assert_eq!(
                negs.len(),
                2,
                "three distinct texts, minus the anchor's own"
            );
            assert_eq!(texts.len(), 2);
            assert!(!texts.contains(pool.anchors[i]));
        }
        // "a" (category x) gets b (y) and c (z): categories are ignored.
        let a: HashSet<&str> = got[0].iter().map(|&n| pool.anchors[n]).collect();
        assert_eq!(a, HashSet::from(["b", "c"]));
    }

    #[test]
    fn single_text_part_has_no_candidates() {
        let t = testing::table(&["d", "c"], &[&["a", "x"], &["a", "y"]]);
        let pool = testing::pool(&t, "d", "c");
        let got = testing::run_sampler(&mut GroupSampler::new(|_, _| ""), &pool, 2, 1).unwrap();
        assert!(got.iter().all(Vec::is_empty));
    }
}
