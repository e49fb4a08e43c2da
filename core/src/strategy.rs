//! The [`PairStrategy`] extension point: turns one part of the table into unsupervised
//! texts and supervised rows (`anchor, positive, negative…`).

use crate::error::Result;
use crate::sampler::{CandidatePool, NegativeSampler};
use crate::table::Table;
use crate::Rng;

/// Column names a strategy uses when the user gives none (the original scripts' defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultColumns {
    /// Anchor ("description") column.
    pub desc: &'static str,
    /// Grouping column: hard negatives come from the same group.
    pub category: &'static str,
    /// Positive columns.
    pub positives: &'static [&'static str],
    /// Negatives per supervised row when `--num-negatives` is left out.
    pub num_negatives: usize,
}

/// How a strategy treats `--domain-col`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainUse {
    /// Without a domain column the whole table is one part named `all` (or the
    /// baseline's explicit output files).
    Optional,
    /// A domain column must be given (domainwise).
    Required,
}

/// The columns of one generation run, resolved against the table.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSpec {
    /// Anchor column name.
    pub desc: String,
    /// Category column name.
    pub category: String,
    /// Positive column names, in command-line order.
    pub positives: Vec<String>,
    /// Domain column name, if the table is split by domain.
    pub domain: Option<String>,
    /// Negatives per supervised row (k).
    pub num_negatives: usize,
}

/// Receives what a strategy generates for one part.
pub trait ExampleSink {
    /// One unsupervised text (the single `text` column) made from the row whose anchor
    /// text is `anchor` (the sink uses it to keep held-out eval anchors out of training).
    fn unsupervised(&mut self, anchor: &str, text: &str) -> Result<()>;
    /// One supervised row; `fields` follow [`PairStrategy::supervised_header`], and
    /// `fields[0]` is the anchor text.
    fn supervised(&mut self, fields: &[&str]) -> Result<()>;
}

/// Everything a strategy may read while it generates one part.
pub struct GenContext<'a> {
    /// The whole table (cells trimmed).
    pub table: &'a Table,
    /// Table row index of each pool entry (the part's kept rows, in table order).
    pub rows: &'a [usize],
    /// Kept rows of the part: anchors and categories.
    pub pool: &'a CandidatePool<'a>,
    /// Column names, resolved.
    pub spec: &'a ColumnSpec,
    /// The chosen sampler, already prepared on `pool`.
    pub sampler: &'a dyn NegativeSampler,
    /// The run's seeded generator; strategies draw all randomness from it.
    pub rng: &'a mut Rng,
    /// Negatives that had to be repeated to fill `k` columns, summed over the part.
    pub repeats: u64,
    /// (name, table column) of the unsupervised template's columns, sorted by name.
    text_columns: Vec<(&'a str, usize)>,
}

impl<'a> GenContext<'a> {
    /// A context for one part; `sampler` must already be prepared on `pool`. Columns of
    /// `spec` that the table lacks read as empty text.
    pub fn new(
        table: &'a Table,
        rows: &'a [usize],
        pool: &'a CandidatePool<'a>,
        spec: &'a ColumnSpec,
        sampler: &'a dyn NegativeSampler,
        rng: &'a mut Rng,
    ) -> Self {
        let mut names: Vec<&'a str> = std::iter::once(spec.desc.as_str())
            .chain(spec.positives.iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        let text_columns = names
            .into_iter()
            .map(|n| (n, table.column(n).unwrap_or(usize::MAX)))
            .collect();
        GenContext {
            table,
            rows,
            pool,
            spec,
            sampler,
            rng,
            repeats: 0,
            text_columns,
        }
    }

    /// Exactly `k` negative texts for pool entry `anchor`, or an empty vector when the
    /// sampler found no candidate. When the sampler returns fewer than `k` distinct
    /// negatives, the missing columns repeat returned ones (drawn uniformly) and the
    /// repeats are counted in [`GenContext::repeats`].
    pub fn negatives(
        &mut self,
        anchor: usize,
        k: usize,
        scratch: &mut Vec<usize>,
    ) -> Result<Vec<&'a str>> {
        let mut out = Vec::with_capacity(k);
        scratch.clear();
        self.draw_negatives(anchor, k, scratch)?;
        self.resolve_negatives(scratch, &mut out);
        Ok(out)
    }

    /// The draws of one [`GenContext::negatives`] call without the text lookup: appends
    /// exactly `k` sampler ids to `ids` (repeats filled in and counted as there), or none
    /// when the sampler has no candidate, and returns how many were appended. Strategies
    /// that handle many rows at once draw for all of them first and then call
    /// [`GenContext::resolve_negatives`] once: the same draws in the same order, with the
    /// memory reads of the lookups overlapping.
    pub fn draw_negatives(
        &mut self,
        anchor: usize,
        k: usize,
        ids: &mut Vec<usize>,
    ) -> Result<usize> {
        let start = ids.len();
        self.sampler.sample(self.pool, anchor, k, self.rng, ids)?;
        ids.truncate(start + k);
        let distinct = ids.len() - start;
        if distinct > 0 {
            while ids.len() < start + k {
                let pick = ids[start + rand::Rng::gen_range(self.rng, 0..distinct)];
                ids.push(pick);
                self.repeats += 1;
            }
        }
        Ok(ids.len() - start)
    }

    /// Appends the texts of ids from [`GenContext::draw_negatives`] to `out`, in order;
    /// `ids` are replaced by their pool indices on the way.
    pub fn resolve_negatives(&self, ids: &mut [usize], out: &mut Vec<&'a str>) {
        // Ids to pool indices, then to texts: two tight loops of independent reads.
        for id in ids.iter_mut() {
            *id = self.sampler.resolve(*id);
        }
        let anchors = &self.pool.anchors;
        out.extend(ids.iter().map(|&i| anchors[i]));
    }

    /// The original's unsupervised template for table row `row`: for each column of
    /// (anchor + positives) sorted by name, `[<column>] <value>`, joined by one space.
    pub fn unsupervised_text(&self, row: usize) -> String {
        let mut out = String::new();
        self.unsupervised_text_into(row, &mut out);
        out
    }

    /// [`unsupervised_text`](Self::unsupervised_text) into a reused buffer (cleared first).
    pub fn unsupervised_text_into(&self, row: usize, out: &mut String) {
        out.clear();
        for &(name, col) in &self.text_columns {
            let v = if col == usize::MAX {
                ""
            } else {
                self.table.cell(row, col)
            };
            if !out.is_empty() {
                out.push(' ');
            }
            out.push('[');
            out.push_str(name);
            out.push_str("] ");
            out.push_str(v);
        }
    }
}

/// Negatives drawn for several supervised rows first and looked up together afterwards
/// ([`GenContext::draw_negatives`], then one [`GenContext::resolve_negatives`]): the same
/// draws in the same order as one row at a time, with the memory reads of the lookups
/// overlapping. A strategy pushes one draw per row it means to emit, resolves, then reads
/// each row's negatives by the order of its draws.
#[derive(Debug, Default)]
pub struct NegativeBatch<'a> {
    ids: Vec<usize>,
    /// Per draw: the end of its ids (and texts).
    ends: Vec<usize>,
    texts: Vec<&'a str>,
}

impl<'a> NegativeBatch<'a> {
    /// Forgets every draw (keeps the buffers).
    pub fn clear(&mut self) {
        self.ids.clear();
        self.ends.clear();
        self.texts.clear();
    }

    /// Draws exactly `k` negatives for pool entry `anchor`, or none when the sampler has no
    /// candidate (as [`GenContext::negatives`]); read them with [`NegativeBatch::get`] by
    /// the order of the draws, after [`NegativeBatch::resolve`].
    pub fn draw(&mut self, ctx: &mut GenContext<'a>, anchor: usize, k: usize) -> Result<()> {
        ctx.draw_negatives(anchor, k, &mut self.ids)?;
        self.ends.push(self.ids.len());
        Ok(())
    }

    /// Looks up the texts of every draw so far.
    pub fn resolve(&mut self, ctx: &GenContext<'a>) {
        self.texts.clear();
        ctx.resolve_negatives(&mut self.ids, &mut self.texts);
    }

    /// The texts of draw `d` (0 = the first since [`NegativeBatch::clear`]); empty when the
    /// sampler had no candidate.
    pub fn get(&self, d: usize) -> &[&'a str] {
        let start = if d == 0 { 0 } else { self.ends[d - 1] };
        &self.texts[start..self.ends[d]]
    }
}

/// Turns a part of the table into training examples.
///
/// Required: [`default_columns`](Self::default_columns),
/// [`supervised_header`](Self::supervised_header) and [`generate`](Self::generate).
/// Optional: [`domain_use`](Self::domain_use) (default [`DomainUse::Optional`]).
///
/// `generate` is called once per part (per domain value, or once for the whole table),
/// after the sampler was prepared on the part's pool. It walks `ctx.rows` in order and
/// writes to `sink`: at most one unsupervised text per kept row, and supervised rows whose
/// length equals `supervised_header(spec).len()`. Invariants: every row's anchor is the
/// row's non-empty anchor cell; a positive is never empty; negatives come only from
/// [`GenContext::negatives`]; all randomness comes from `ctx.rng`, so a seed fixes the
/// output.
pub trait PairStrategy: Send + Sync {
    /// The original script's column defaults, used for every column flag left out.
    fn default_columns(&self) -> DefaultColumns;

    /// Whether a domain column is required.
    fn domain_use(&self) -> DomainUse {
        DomainUse::Optional
    }

    /// Column names of the supervised file for this spec.
    fn supervised_header(&self, spec: &ColumnSpec) -> Vec<String>;

    /// Generates one part.
    fn generate(&self, ctx: &mut GenContext<'_>, sink: &mut dyn ExampleSink) -> Result<()>;
}
