//! embtune-core: the traits and registries of embtune's plugins ([`PairStrategy`],
//! [`NegativeSampler`], [`ContrastiveLoss`]), table ingest, the error type and the test
//! harness. A plugin crate depends on this crate alone.

#![deny(missing_docs)]

pub mod atomic;
pub mod default_model;
#[cfg(feature = "torch")]
pub mod device_mem;
#[cfg(feature = "torch")]
pub mod dist;
#[cfg(feature = "torch")]
pub mod encoder;
pub mod error;
pub mod eval;
#[doc(hidden)]
pub mod fuzzing;
pub mod gen;
pub mod hub;
#[cfg(feature = "torch")]
pub mod lora;
pub mod loss;
pub mod mem;
#[cfg(feature = "torch")]
pub mod mine;
pub mod model_card;
#[cfg(feature = "torch")]
pub mod models;
pub mod registry;
pub mod sampler;
pub mod strategy;
pub mod table;
pub mod testing;
#[cfg(feature = "torch")]
pub mod train;

pub use error::{Error, Result};
pub use loss::LossInputs;
#[cfg(feature = "torch")]
pub use loss::{BatchTexts, ContrastiveLoss, LossBatch};
pub use sampler::{CandidatePool, NegativeSampler};
pub use strategy::{
    ColumnSpec, DefaultColumns, DomainUse, ExampleSink, GenContext, NegativeBatch, PairStrategy,
};
pub use table::Table;

/// Re-exported so the registration macros work in crates that depend on core alone.
pub use inventory;
pub use serde_json;

/// The one random generator of embtune: seeded, portable, reproducible across platforms.
pub type Rng = rand_chacha::ChaCha8Rng;

/// A generator seeded with `seed`.
pub fn seeded_rng(seed: u64) -> Rng {
    <Rng as rand::SeedableRng>::seed_from_u64(seed)
}

/// The version of embtune (all crates share it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
