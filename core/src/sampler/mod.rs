//! The [`NegativeSampler`] extension point: picks hard negatives for an anchor from the
//! candidate pool of one part of the table.
//!
//! Building blocks for sampler authors live here too: [`GroupSampler`] (a ready sampler
//! drawing distinct texts of the anchor's group, keyed by any function of the pool) and
//! the [`groups`] module it is built on (linear-time grouping, O(k) draws, fast hashing).

pub mod groups;

pub use groups::{GroupKey, GroupSampler};

use crate::error::Result;
use crate::Rng;

/// The kept rows of one part of the table, in table order: every entry has a non-empty,
/// trimmed anchor text and its (trimmed) category value. A sampler refers to candidates by
/// their index in this pool.
#[derive(Debug, Clone, Default)]
pub struct CandidatePool<'a> {
    /// Anchor text of each kept row (never empty).
    pub anchors: Vec<&'a str>,
    /// Category value of each kept row ("" when the cell is empty).
    pub categories: Vec<&'a str>,
    /// Text of each kept row's first positive column ("" when the cell is empty). `gen`
    /// fills it; a pool built without positives (a test's) leaves it empty, so a sampler
    /// that reads it checks `positives.len() == anchors.len()` first.
    pub positives: Vec<&'a str>,
}

impl<'a> CandidatePool<'a> {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }
    /// True when the part kept no row.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }
}

/// Chooses negatives for anchors.
///
/// Required: [`prepare`](Self::prepare) and [`sample`](Self::sample). Optional:
/// [`resolve`](Self::resolve), for samplers that draw positions in tables of their own.
///
/// Lifecycle: for each part of the table, the strategy calls `prepare` once with that part's
/// pool, then `sample` for the anchors it emits rows for, in pool order. Calls are
/// sequential; state built in `prepare` belongs to the current part only.
///
/// Invariants every implementation keeps (the registry test and the property tests check
/// them): a returned index is a valid pool index whose anchor text is **not equal** to the
/// anchor's text (hence never the anchor itself and never empty); indices returned for one
/// call are **distinct** and **distinct in text**; at most `k` are returned; the result
/// depends only on the pool, the arguments and the `rng` state (runs are reproducible).
/// Returning fewer than `k` means the pool has no more suitable candidates: the framework
/// then repeats the returned ones to fill `k` columns and counts the repeats, and skips the
/// anchor when none is returned. (With [`resolve`](Self::resolve), "returned index" means
/// the resolved one.)
pub trait NegativeSampler: Send + Sync {
    /// Called once per part, before any `sample` call for that part.
    fn prepare(&mut self, pool: &CandidatePool<'_>) -> Result<()>;

    /// Pushes up to `k` negatives for pool entry `anchor` onto `out` (cleared by the caller).
    fn sample(
        &self,
        pool: &CandidatePool<'_>,
        anchor: usize,
        k: usize,
        rng: &mut Rng,
        out: &mut Vec<usize>,
    ) -> Result<()>;

    /// Maps an id that [`sample`](Self::sample) pushed to its pool index. By default ids
    /// are pool indices. A sampler may push ids that cost nothing to draw (a position in
    /// its own table, say) and read the pool index here: the framework draws all of a
    /// row's negatives first and resolves them afterwards in one tight loop, so on large
    /// tables those memory reads overlap instead of each waiting on the last.
    fn resolve(&self, id: usize) -> usize {
        id
    }
}
