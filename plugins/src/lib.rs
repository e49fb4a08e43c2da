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
pub mod bm25;
pub mod model_mined;
pub mod random;
pub mod same_category;

// Contrastive losses: options, docs and registration in every build (`embtune list`
// shows them without libtorch), the tensor code with the `torch` feature.
pub mod angle;
pub mod cached_gist;
pub mod cached_mnrl;
pub mod cosent;
pub mod distill_kl;
pub mod gist;
#[cfg(feature = "torch")]
pub mod loss_math;
pub mod margin_mse;
pub mod matryoshka;
pub mod mnrl;
pub mod simcse;
pub mod triplet;

/// Call once from a binary (the CLI does) so the built-in plugins are linked in.
pub fn link() {}
