//! Checks of the command line that the core does not make itself: numeric flags (encoding
//! batch sizes) and output folders that hold an earlier run. One line naming what is wrong,
//! where, and the fix.

use std::path::Path;

/// `flag value` must be at least 1 (`example`: a sensible value for the message).
pub fn at_least_one(flag: &str, value: usize, example: usize) -> anyhow::Result<()> {
    if value == 0 {
        anyhow::bail!(
            "{flag} 0 is out of range: it must be at least 1; pass e.g. {flag} {example}"
        );
    }
    Ok(())
}

/// Names in an output folder that a training run writes.
fn is_training_output(name: &str) -> bool {
    matches!(name, "final" | "best" | "metrics.jsonl" | "training.png")
        || name.starts_with("checkpoint-")
        || (name.starts_with(".checkpoint-") && name.contains("tmp"))
}

/// `embtune train --output DIR` for a new run (not `--resume`): DIR must hold no earlier
/// run's outputs (final/, best/, checkpoint-N/, metrics.jsonl, training.png), so two runs'
/// files never mix. With `overwrite` they are removed first (when `remove`: the process
/// that writes; other ranks only check); other files in DIR are left alone.
pub fn fresh_training_output(dir: &Path, overwrite: bool, remove: bool) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(()); // missing (created later) or unreadable (reported when written)
    };
    let mut found: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_training_output(n))
        .collect();
    found.sort();
    if found.is_empty() {
        return Ok(());
    }
    if !overwrite {
        anyhow::bail!(
            "--output {} already holds an earlier training run ({}); pass --overwrite to replace it, --resume {}/checkpoint-N to continue it, or choose another folder",
            dir.display(),
            found.join(", "),
            dir.display()
        );
    }
    if remove {
        for n in &found {
            let p = dir.join(n);
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(|e| embtune_core::Error::io(&p, e))?;
        }
    }
    Ok(())
}

/// `embtune gen --output-dir DIR`: DIR must not hold an earlier run's outputs (its
/// `manifest.json`), so two runs' files never mix. With `overwrite` the files that
/// manifest lists, and the manifest, are removed first.
pub fn fresh_gen_output(dir: &Path, overwrite: bool) -> anyhow::Result<()> {
    let manifest = dir.join("manifest.json");
    if !manifest.is_file() {
        return Ok(());
    }
    if !overwrite {
        anyhow::bail!(
            "--output-dir {} already holds the output of an earlier `embtune gen` (manifest.json); pass --overwrite to replace it, or choose another folder",
            dir.display()
        );
    }
    let text =
        std::fs::read_to_string(&manifest).map_err(|e| embtune_core::Error::io(&manifest, e))?;
    let listed: Vec<String> = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("files").and_then(|f| f.as_array()).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|f| f.get("file").and_then(|n| n.as_str()).map(str::to_string))
        .collect();
    for name in listed {
        // Only plain names inside DIR (the manifest could have been edited).
        let p = Path::new(&name);
        let Some(file) = p.file_name() else { continue };
        let target = dir.join(file);
        if target.is_file() {
            std::fs::remove_file(&target).map_err(|e| embtune_core::Error::io(&target, e))?;
        }
    }
    std::fs::remove_file(&manifest).map_err(|e| embtune_core::Error::io(&manifest, e))?;
    Ok(())
}
