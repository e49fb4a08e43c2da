//! embtune-plugins: the built-in pair strategies, negative samplers and contrastive losses.
//! One file per plugin, named after its registry key; each registers itself with a
//! `register_*!` macro from embtune-core.
//!
//! Binaries must refer to this crate (e.g. [`link`]) so the linker keeps its registrations.

// Pair strategies.
pub mod baseline;
pub mod domainwise;
pub mod fusion_multineg;

// Negative samplers.
pub mod random;
pub mod same_category;

// Contrastive losses.
#[cfg(feature = "torch")]
pub mod angle;
#[cfg(feature = "torch")]
pub mod cached_mnrl;
#[cfg(feature = "torch")]
pub mod cosent;
#[cfg(feature = "torch")]
pub mod loss_math;
#[cfg(feature = "torch")]
pub mod mnrl;
#[cfg(feature = "torch")]
pub mod simcse;
#[cfg(feature = "torch")]
pub mod triplet;

/// Call once from a binary (the CLI does) so the built-in plugins are linked in.
pub fn link() {}
