//! Data generation pipeline (embtune gen): parts, pools, writers, manifest, eval split.
