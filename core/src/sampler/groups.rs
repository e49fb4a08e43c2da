//! Linear-time candidate lookup for samplers: every pool entry gets a (group, distinct
//! text) slot once per part, so drawing k negatives costs O(k), never a scan of the group.
//! [`GroupSampler`] is the ready sampler on top ([`DistinctGroups`] for samplers of their
//! own); [`FxHashMap`]/[`FxHashSet`] and [`hash_text`] are the fast hashing `gen` uses too.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use rand::Rng as _;

use crate::sampler::{CandidatePool, NegativeSampler};
use crate::Rng;

/// A small, fast, non-cryptographic hasher (the Fx hash of rustc) for string keys built
/// from trusted table cells; not DoS-resistant, which table ingest does not need.
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// `HashMap` with [`FxHasher`].
pub type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;
/// `HashSet` with [`FxHasher`].
pub type FxHashSet<K> = HashSet<K, BuildHasherDefault<FxHasher>>;

/// Groups of at most this many entries find equal texts by a linear scan of hashes.
const SMALL_GROUP: usize = 32;

/// Pools smaller than this are hashed on one thread.
const PARALLEL_MIN: usize = 1 << 16;

/// A 64-bit hash of a text: two independent multiply lanes over 16 bytes per step (so the
/// multiplies overlap), then a final avalanche (MurmurHash3's fmix64). Used to find equal
/// texts; equal hashes are always confirmed by comparing the texts.
#[inline]
pub fn hash_text(b: &[u8]) -> u64 {
    const K1: u64 = 0x9E37_79B9_7F4A_7C15;
    const K2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    let (mut h1, mut h2) = (K2 ^ b.len() as u64, K1);
    let mut chunks = b.chunks_exact(16);
    for c in &mut chunks {
        let a = u64::from_le_bytes(c[..8].try_into().unwrap_or([0; 8]));
        let d = u64::from_le_bytes(c[8..].try_into().unwrap_or([0; 8]));
        h1 = (h1 ^ a).wrapping_mul(K1).rotate_left(31);
        h2 = (h2 ^ d).wrapping_mul(K2).rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 16];
        last[..rest.len()].copy_from_slice(rest);
        let a = u64::from_le_bytes(last[..8].try_into().unwrap_or([0; 8]));
        let d = u64::from_le_bytes(last[8..].try_into().unwrap_or([0; 8]));
        h1 = (h1 ^ a).wrapping_mul(K1).rotate_left(31);
        h2 = (h2 ^ d).wrapping_mul(K2).rotate_left(29);
    }
    let mut h = h1 ^ h2.rotate_left(17);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The pool's entries grouped by a key (e.g. the category), with each group's **distinct**
/// anchor texts numbered in first-appearance order.
///
/// Built once per part in O(n) (see [`DistinctGroups::build`]);
/// [`sample_other_positions`](DistinctGroups::sample_other_positions) then draws k distinct
/// texts other than the anchor's own in O(k).
#[derive(Debug, Clone, Default)]
pub struct DistinctGroups {
    /// Per pool entry: (group id, index of its text among the group's distinct texts).
    slot: Vec<(u32, u32)>,
    /// Group `g`'s members are `members[offsets[g]..offsets[g + 1]]`: the pool index of the
    /// first entry carrying each distinct text, in first-appearance order. One flat array
    /// (not a vector per group), so a draw touches one place in memory.
    offsets: Vec<u32>,
    members: Vec<u32>,
}

impl DistinctGroups {
    /// Groups `pool` by `key(i)` (e.g. `|i| pool.categories[i]`).
    ///
    /// Three passes, each reading memory in order or with independent accesses: group ids
    /// and a 64-bit hash of every text (pool order); a stable counting sort of the entries
    /// by group; then each group's distinct texts in first-appearance order, found by hash
    /// in a map the size of the group (texts are compared whenever hashes match, so a
    /// collision never merges two texts).
    pub fn build<'a>(pool: &CandidatePool<'a>, key: impl Fn(usize) -> &'a str) -> Self {
        let n = pool.len();
        assert!(n < u32::MAX as usize, "a part of more than 4 billion rows");
        // Text hashes: the second half on another thread while this one numbers the groups.
        let mut hash: Vec<u64> = Vec::with_capacity(n);
        crate::mem::advise_huge(&mut hash);
        hash.resize(n, 0);
        // Keys are copied: comparing with a borrowed key would read the table at the row
        // where the group first appeared, a cache miss per entry on large tables.
        let mut group_of: FxHashMap<Box<str>, u32> = FxHashMap::default();
        let mut sizes: Vec<u32> = Vec::new();
        let mut gid: Vec<u32> = Vec::with_capacity(n);
        {
            let (h1, h2) = hash.split_at_mut(n / 2);
            let anchors = &pool.anchors;
            let fill = |out: &mut [u64], from: usize| {
                for (k, h) in out.iter_mut().enumerate() {
                    *h = hash_text(anchors[from + k].as_bytes());
                }
            };
            std::thread::scope(|sc| {
                let helper = if n >= PARALLEL_MIN {
                    Some(sc.spawn(move || fill(h2, n / 2)))
                } else {
                    fill(h2, n / 2);
                    None
                };
                for i in 0..n {
                    let k = key(i);
                    let g = match group_of.get(k) {
                        Some(&g) => g,
                        None => {
                            let g = sizes.len() as u32;
                            group_of.insert(k.into(), g);
                            sizes.push(0);
                            g
                        }
                    };
                    sizes[g as usize] += 1;
                    gid.push(g);
                }
                fill(h1, 0);
                if let Some(h) = helper {
                    if let Err(p) = h.join() {
                        std::panic::resume_unwind(p);
                    }
                }
            });
        }
        let mut start = Vec::with_capacity(sizes.len() + 1);
        let mut at = 0u32;
        start.push(0);
        for s in &sizes {
            at += s;
            start.push(at);
        }
        // Stable counting sort by group, carrying each entry's hash along, so the pass over
        // the groups reads in order.
        let mut fill = start.clone();
        let mut order: Vec<(u32, u64)> = Vec::with_capacity(n);
        crate::mem::advise_huge(&mut order);
        order.resize(n, (0, 0));
        for (i, &g) in gid.iter().enumerate() {
            order[fill[g as usize] as usize] = (i as u32, hash[i]);
            fill[g as usize] += 1;
        }
        drop(gid);
        drop(hash);
        let mut slot: Vec<(u32, u32)> = Vec::with_capacity(n);
        crate::mem::advise_huge(&mut slot);
        slot.resize(n, (0, 0));
        let mut offsets = Vec::with_capacity(sizes.len() + 1);
        offsets.push(0u32);
        let mut members: Vec<u32> = Vec::new();
        let mut seen: FxHashMap<u64, u32> = FxHashMap::default();
        let mut small: Vec<(u64, u32)> = Vec::with_capacity(SMALL_GROUP);
        for g in 0..sizes.len() {
            let entries = &order[start[g] as usize..start[g + 1] as usize];
            let base = members.len();
            // The local id of an earlier text with hash `h`, if it is `text` (or, after a
            // hash collision, whichever earlier text of the group equals it).
            let confirm = |members: &[u32], l: u32, text: &str, fresh: u32| -> u32 {
                if pool.anchors[members[base + l as usize] as usize] == text {
                    l
                } else {
                    members[base..]
                        .iter()
                        .position(|&m| pool.anchors[m as usize] == text)
                        .map_or(fresh, |p| p as u32)
                }
            };
            // Small groups (most of them) look hashes up in a short list; large ones in a
            // map reused from group to group.
            let small_group = entries.len() <= SMALL_GROUP;
            if small_group {
                small.clear();
            } else {
                seen.clear();
                seen.reserve(entries.len());
            }
            for &(i, h) in entries {
                let text = pool.anchors[i as usize];
                let fresh = (members.len() - base) as u32;
                let earlier = if small_group {
                    small.iter().find(|e| e.0 == h).map(|e| e.1)
                } else {
                    seen.get(&h).copied()
                };
                let local = match earlier {
                    Some(l) => confirm(&members, l, text, fresh),
                    None => {
                        if small_group {
                            small.push((h, fresh));
                        } else {
                            seen.insert(h, fresh);
                        }
                        fresh
                    }
                };
                if local == fresh {
                    members.push(i);
                }
                slot[i as usize] = (g as u32, local);
            }
            offsets.push(members.len() as u32);
        }
        DistinctGroups {
            slot,
            offsets,
            members,
        }
    }

    /// Number of groups.
    pub fn n_groups(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// The members of group `g` (pool indices, one per distinct text).
    fn group(&self, g: u32) -> &[u32] {
        let g = g as usize;
        &self.members[self.offsets[g] as usize..self.offsets[g + 1] as usize]
    }

    /// Distinct texts in the group of pool entry `i` other than its own text.
    pub fn others(&self, i: usize) -> usize {
        self.group(self.slot[i].0).len() - 1
    }

    /// Pushes onto `out` up to `k` positions in the flat member table, from `anchor`'s
    /// group, whose texts are distinct and differ from the anchor's text, uniformly at
    /// random (a uniformly random subset of size `min(k, others)`, in random order). The
    /// draw reads nothing but the group's bounds; [`DistinctGroups::member`] maps a
    /// position to its pool index.
    pub fn sample_other_positions(
        &self,
        anchor: usize,
        k: usize,
        rng: &mut Rng,
        out: &mut Vec<usize>,
    ) {
        let (g, own) = self.slot[anchor];
        let first = self.offsets[g as usize] as usize;
        let n = (self.offsets[g as usize + 1] as usize - first).saturating_sub(1);
        let take = k.min(n);
        if take == 0 {
            return;
        }
        let at = |x: usize| first + if x >= own as usize { x + 1 } else { x };
        Self::draw(n, take, rng, out, at);
    }

    /// The pool index at position `pos` of the flat member table.
    #[inline]
    pub fn member(&self, pos: usize) -> usize {
        self.members[pos] as usize
    }

    /// `take` distinct values of `0..n`, uniformly, mapped by `at`.
    #[inline]
    fn draw(
        n: usize,
        take: usize,
        rng: &mut Rng,
        out: &mut Vec<usize>,
        at: impl Fn(usize) -> usize,
    ) {
        let start = out.len();
        if take == 1 {
            out.push(at(rng.gen_range(0..n)));
        } else if take * 2 >= n || take > 64 {
            // Partial Fisher-Yates over an index vector: O(n) but n <= 2k here, or k is
            // large enough that a set would cost as much.
            let mut idx: Vec<usize> = (0..n).collect();
            for j in 0..take {
                let r = rng.gen_range(j..n);
                idx.swap(j, r);
                out.push(at(idx[j]));
            }
        } else {
            // Floyd's algorithm: `take` distinct values of 0..n in O(take^2) with take <= 64.
            let mut chosen: Vec<usize> = Vec::with_capacity(take);
            for j in n - take..n {
                let t = rng.gen_range(0..=j);
                let v = if chosen.contains(&t) { j } else { t };
                chosen.push(v);
            }
            // Floyd's order is biased (j tends to come last); shuffle the chosen set.
            for j in (1..take).rev() {
                let r = rng.gen_range(0..=j);
                chosen.swap(j, r);
            }
            out.extend(chosen.into_iter().map(at));
        }
        debug_assert_eq!(out.len() - start, take);
    }
}

/// Which group a pool entry belongs to, for [`GroupSampler`]: a plain function so that a
/// sampler stays `Send + Sync` and costs no allocation.
pub type GroupKey = for<'a> fn(&CandidatePool<'a>, usize) -> &'a str;

/// A ready [`NegativeSampler`]: the negatives of an anchor are distinct anchor texts of its own
/// group (by a [`GroupKey`]) other than its own text, drawn uniformly in O(k) through
/// [`DistinctGroups`]. `same-category` is this keyed by the category, `random` with one group
/// for the whole part; a plugin can key it by anything the pool holds.
#[derive(Debug)]
pub struct GroupSampler {
    key: GroupKey,
    groups: DistinctGroups,
}

impl GroupSampler {
    /// A sampler grouping by `key` (e.g. `|pool, i| pool.categories[i]`).
    pub fn new(key: GroupKey) -> Self {
        GroupSampler {
            key,
            groups: DistinctGroups::default(),
        }
    }
}

impl NegativeSampler for GroupSampler {
    fn prepare(&mut self, pool: &CandidatePool<'_>) -> crate::Result<()> {
        let key = self.key;
        self.groups = DistinctGroups::build(pool, |i| key(pool, i));
        Ok(())
    }

    fn sample(
        &self,
        _pool: &CandidatePool<'_>,
        anchor: usize,
        k: usize,
        rng: &mut Rng,
        out: &mut Vec<usize>,
    ) -> crate::Result<()> {
        self.groups.sample_other_positions(anchor, k, rng, out);
        Ok(())
    }

    fn resolve(&self, id: usize) -> usize {
        self.groups.member(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    /// Pool indices drawn for `anchor` (positions mapped through the member table).
    fn sample(g: &DistinctGroups, anchor: usize, k: usize, rng: &mut Rng, out: &mut Vec<usize>) {
        g.sample_other_positions(anchor, k, rng, out);
        for p in out.iter_mut() {
            *p = g.member(*p);
        }
    }

    #[test]
    fn groups_distinct_texts_in_first_appearance_order() {
        let t = testing::table(
            &["d", "c"],
            &[
                &["a", "x"],
                &["b", "x"],
                &["a", "x"],
                &["c", "y"],
                &["b", "x"],
                &["d", "x"],
            ],
        );
        let pool = testing::pool(&t, "d", "c");
        let g = DistinctGroups::build(&pool, |i| pool.categories[i]);
        assert_eq!(g.n_groups(), 2);
        assert_eq!(g.group(0), &[0, 1, 5]);
        assert_eq!(g.group(1), &[3]);
        assert_eq!(g.slot[2], (0, 0));
        assert_eq!(g.others(0), 2);
        assert_eq!(g.others(3), 0);
    }

    #[test]
    fn samples_are_distinct_others_and_cover_the_group() {
        let rows: Vec<Vec<String>> = (0..40)
            .map(|i| vec![format!("t{}", i % 13), "g".to_string()])
            .collect();
        let t = crate::Table::from_rows(&["d", "c"], &rows);
        let pool = testing::pool(&t, "d", "c");
        let g = DistinctGroups::build(&pool, |i| pool.categories[i]);
        let mut rng = testing::rng(7);
        let mut seen = FxHashSet::default();
        for k in [1usize, 2, 3, 5, 7, 12, 20] {
            for a in 0..pool.len() {
                let mut out = Vec::new();
                sample(&g, a, k, &mut rng, &mut out);
                assert_eq!(out.len(), k.min(12));
                let texts: FxHashSet<&str> = out.iter().map(|&i| pool.anchors[i]).collect();
                assert_eq!(texts.len(), out.len(), "texts not distinct");
                assert!(!texts.contains(pool.anchors[a]));
                seen.extend(texts);
            }
        }
        assert_eq!(seen.len(), 13);
    }

    #[test]
    fn single_draw_is_roughly_uniform() {
        let t = testing::table(
            &["d", "c"],
            &[&["a", "g"], &["b", "g"], &["c", "g"], &["d", "g"]],
        );
        let pool = testing::pool(&t, "d", "c");
        let g = DistinctGroups::build(&pool, |i| pool.categories[i]);
        let mut rng = testing::rng(1);
        let mut counts = [0usize; 4];
        for _ in 0..30_000 {
            let mut out = Vec::new();
            sample(&g, 0, 1, &mut rng, &mut out);
            counts[out[0]] += 1;
        }
        assert_eq!(counts[0], 0);
        for c in &counts[1..] {
            assert!((9_000..11_000).contains(c), "{counts:?}");
        }
    }
}
