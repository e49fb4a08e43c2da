//! embtune-plugins: the built-in pair strategies, negative samplers and contrastive losses.
//! One file per plugin, named after its registry key; each registers itself with a
//! `register_*!` macro from embtune-core.
//!
//! Binaries must refer to this crate (e.g. [`link`]) so the linker keeps its registrations.

/// Call once from a binary (the CLI does) so the built-in plugins are linked in.
pub fn link() {}
