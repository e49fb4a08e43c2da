//! Cross-crate tests live in `tests/tests/`; this library holds the helpers several of them
//! share.

use std::path::{Path, PathBuf};

/// The default model folder, verified; panics with the provisioning command when it is
/// missing (these tests need it).
pub fn default_model() -> PathBuf {
    let dir = embtune_core::default_model::default_model_dir();
    embtune_core::default_model::verify_default_model(&dir).unwrap_or_else(|e| {
        panic!("{e} (these tests need the default model: run scripts/fetch-model.sh)")
    });
    dir
}

/// A float32 `.npy` matrix as (row-major data, rows, cols), read by tch.
pub fn read_npy(path: &Path) -> Result<(Vec<f32>, usize, usize), tch::TchError> {
    let t = tch::Tensor::read_npy(path)?;
    let (rows, cols) = t.size2()?;
    Ok((
        Vec::<f32>::try_from(t.view([-1]))?,
        rows as usize,
        cols as usize,
    ))
}
