//! Evaluators and metrics: retrieval (as sentence-transformers), triplet accuracy, combined margin.
