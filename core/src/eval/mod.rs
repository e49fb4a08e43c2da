//! Evaluators and metrics: retrieval (as sentence-transformers), triplet accuracy, combined margin.
//!
//! [`metrics`] holds the pure functions (score matrices in, numbers out); evaluators that
//! embed texts with a model build on them.

#[cfg(feature = "torch")]
pub mod evaluators;
pub mod metrics;

pub use metrics::{
    combined_margin, information_retrieval, triplet_accuracy, RetrievalCutoffs, RetrievalMetrics,
    ORIGINAL_MARGIN_WEIGHTS,
};
