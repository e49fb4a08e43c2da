//! Test harness for plugins: build a tiny in-memory table, a seeded generator, and run one
//! strategy, sampler or loss in isolation, without files or a model.
//!
//! ```
//! use embtune_core::testing;
//! let table = testing::table(&["desc", "cat"], &[&["apple", "fruit"], &["pear", "fruit"]]);
//! let pool = testing::pool(&table, "desc", "cat");
//! assert_eq!(pool.anchors, vec!["apple", "pear"]);
//! ```

use serde_json::{Map, Value};

use crate::error::Result;
use crate::registry::{self, PluginKind};
use crate::sampler::{CandidatePool, NegativeSampler};
use crate::strategy::{ColumnSpec, ExampleSink, GenContext, PairStrategy};
use crate::table::Table;
use crate::Rng;

/// A table from string literals (cells are trimmed like file input).
pub fn table(headers: &[&str], rows: &[&[&str]]) -> Table {
    let rows: Vec<Vec<&str>> = rows.iter().map(|r| r.to_vec()).collect();
    Table::from_rows(headers, &rows)
}

/// A seeded generator (the same one the CLI uses for `--seed`).
pub fn rng(seed: u64) -> Rng {
    crate::seeded_rng(seed)
}

/// The candidate pool of the whole table: rows with a non-empty anchor, in order.
pub fn pool<'t>(table: &'t Table, desc: &str, category: &str) -> CandidatePool<'t> {
    let (pool, _) = pool_with_rows(table, desc, category);
    pool
}

fn pool_with_rows<'t>(
    table: &'t Table,
    desc: &str,
    category: &str,
) -> (CandidatePool<'t>, Vec<usize>) {
    let d = table.column(desc).expect("desc column exists");
    let c = table.column(category).expect("category column exists");
    let mut pool = CandidatePool::default();
    let mut rows = Vec::new();
    for r in 0..table.n_rows() {
        let a = table.cell(r, d);
        if !a.is_empty() {
            pool.anchors.push(a);
            pool.categories.push(table.cell(r, c));
            rows.push(r);
        }
    }
    (pool, rows)
}

/// Builds a registered plugin by name with `key=value` options.
pub fn build<T: PluginKind + ?Sized>(name: &str, options: &[&str]) -> Result<Box<T>> {
    let opts: Map<String, Value> = registry::parse_options(options.iter().copied())?;
    registry::build::<T>(name, &opts)
}

/// Prepares `sampler` on `pool` and asks it for `k` negatives of every entry.
pub fn run_sampler(
    sampler: &mut dyn NegativeSampler,
    pool: &CandidatePool<'_>,
    k: usize,
    seed: u64,
) -> Result<Vec<Vec<usize>>> {
    sampler.prepare(pool)?;
    let mut rng = rng(seed);
    let mut all = Vec::with_capacity(pool.len());
    for i in 0..pool.len() {
        let mut out = Vec::new();
        sampler.sample(pool, i, k, &mut rng, &mut out)?;
        for id in &mut out {
            *id = sampler.resolve(*id);
        }
        all.push(out);
    }
    Ok(all)
}

/// What a strategy wrote for one part, collected in memory.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Collected {
    /// Unsupervised texts.
    pub unsupervised: Vec<String>,
    /// Supervised rows.
    pub supervised: Vec<Vec<String>>,
    /// Negatives repeated to fill k columns.
    pub repeats: u64,
}

impl ExampleSink for Collected {
    fn unsupervised(&mut self, _anchor: &str, text: &str) -> Result<()> {
        self.unsupervised.push(text.to_string());
        Ok(())
    }
    fn supervised(&mut self, fields: &[&str]) -> Result<()> {
        self.supervised
            .push(fields.iter().map(|s| s.to_string()).collect());
        Ok(())
    }
}

/// Runs `strategy` over the whole `table` as a single part with `sampler`, seeded.
pub fn run_strategy(
    strategy: &dyn PairStrategy,
    sampler: &mut dyn NegativeSampler,
    table: &Table,
    spec: &ColumnSpec,
    seed: u64,
) -> Result<Collected> {
    let (pool, rows) = pool_with_rows(table, &spec.desc, &spec.category);
    sampler.prepare(&pool)?;
    let mut rng = rng(seed);
    let mut out = Collected::default();
    let mut ctx = GenContext::new(table, &rows, &pool, spec, &*sampler, &mut rng);
    strategy.generate(&mut ctx, &mut out)?;
    out.repeats = ctx.repeats;
    Ok(out)
}

/// A `(b, d)` tensor of seeded standard-normal values (CPU, f64 for gradient checks).
#[cfg(feature = "torch")]
pub fn random_embeddings(b: i64, d: i64, seed: i64) -> tch::Tensor {
    tch::manual_seed(seed);
    tch::Tensor::randn([b, d], (tch::Kind::Double, tch::Device::Cpu))
}
