//! Atomic writes: a folder or file is built under a temporary sibling name and renamed into
//! place, so a kill at any moment leaves either the old content or the new one under the
//! final name, never a partial one. Used by model saves (encoder::folder), `gen`, the
//! trainer and `embtune fetch-model`; torch-free.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Whether `name` (a file or folder name) is a temporary name of an atomic write: it starts
/// with `.` and contains `tmp` (folders of [`write_atomically`], files of `embtune gen`, the
/// trainer's `metrics.jsonl` rewrite and `training.png`).
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains("tmp")
}

/// Writes a folder through a temporary sibling and renames it into place, so an
/// interrupted save (even SIGKILL) never leaves a half-written folder under the final name.
/// An existing folder at `dir` is replaced without ever being partial: it is renamed to a
/// temporary name first, the new one renamed in, then the old one deleted (a kill between
/// the two renames leaves `dir` absent, never incomplete). Temporary names are
/// `.<name>.tmp-<pid>-<nanos>` and `.<name>.tmp-old-<pid>-<nanos>` (unique, so a leftover of
/// a killed run never collides with a later save; [`is_temporary`] recognises them).
pub fn write_atomically(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = parent.join(format!(".{name}.tmp-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        let old = parent.join(format!(".{name}.tmp-old-{}-{stamp}", std::process::id()));
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}
