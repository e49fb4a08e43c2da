//! Checkpoints: `checkpoint-N/` is a sentence-transformers model folder plus the optimizer
//! moments (`optimizer.safetensors`) and the trainer's position (`trainer_state.json`).
//! Every folder is written under a temporary name and renamed (an existing one is replaced
//! without ever being partial, [`crate::encoder::folder::write_atomically`]), pruned folders
//! are renamed away before they are deleted, and nothing is saved with non-finite weights,
//! so a run killed at any moment leaves only complete `checkpoint-N/`, `best/` and `final/`. The `*_with_card` variants also write the folder's model card (`README.md`,
//! [`crate::model_card`]) inside the temporary folder, so it appears with the folder.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::encoder::SentenceEncoder;
use crate::error::{Error, Result};
use crate::model_card::{FolderKind, ModelCard};
use crate::train::optim::FlatAdamW;
use crate::train::{StepLog, TrainerState};

/// Optimizer moments inside a checkpoint folder.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Trainer position inside a checkpoint folder.
pub const STATE_FILE: &str = "trainer_state.json";

fn refuse_non_finite(opt: &FlatAdamW, dir: &Path) -> Result<()> {
    if opt.params_finite() {
        Ok(())
    } else {
        Err(Error::model(
            dir,
            "refusing to save non-finite weights; lower --lr and resume from the latest checkpoint",
        ))
    }
}

/// Saves the model alone (for `best/` and `final/`), replacing what was there: a LoRA
/// adapter folder when the encoder carries adapters, unless `merge_lora` asks for a plain
/// folder with them merged in.
pub fn save_model(
    enc: &SentenceEncoder,
    dir: &Path,
    opt: &FlatAdamW,
    merge_lora: bool,
) -> Result<()> {
    save_model_with_card(enc, dir, opt, merge_lora, None)
}

/// The kind of folder `enc` is saved as.
fn folder_kind(enc: &SentenceEncoder, merge_lora: bool) -> FolderKind {
    match (enc.lora().is_some(), merge_lora) {
        (false, _) => FolderKind::Plain,
        (true, false) => FolderKind::Adapter,
        (true, true) => FolderKind::Merged,
    }
}

/// [`save_model`] with the folder's model card: `card` (the run's, with this folder's step
/// and metrics already set, e.g. `card.finished(after)` for `final/` or `card.at_step(step,
/// Some(m))` for `best/`) is written as `README.md` with the folder kind (plain, adapter or
/// merged) and `dir` as the usage path set here. None writes no card.
pub fn save_model_with_card(
    enc: &SentenceEncoder,
    dir: &Path,
    opt: &FlatAdamW,
    merge_lora: bool,
    card: Option<&ModelCard>,
) -> Result<()> {
    refuse_non_finite(opt, dir)?;
    let card = card.map(|c| c.for_folder(folder_kind(enc, merge_lora), dir));
    enc.save_with(dir, merge_lora, |tmp| match &card {
        Some(c) => c.write(tmp),
        None => Ok(()),
    })
}

/// Writes `checkpoint-<step>/` under `output` and returns its path.
pub fn save_checkpoint(
    enc: &SentenceEncoder,
    opt: &FlatAdamW,
    state: &TrainerState,
    output: &Path,
) -> Result<PathBuf> {
    save_checkpoint_with_card(enc, opt, state, output, None)
}

/// [`save_checkpoint`] with the folder's model card: `card` (the run's, with this step's
/// metrics set: `card.at_step(state.step, metrics)`, None metrics when the step did not
/// evaluate) is written as `README.md` with the folder kind and path set here. None
/// writes no card.
pub fn save_checkpoint_with_card(
    enc: &SentenceEncoder,
    opt: &FlatAdamW,
    state: &TrainerState,
    output: &Path,
    card: Option<&ModelCard>,
) -> Result<PathBuf> {
    let dir = output.join(format!("checkpoint-{}", state.step));
    refuse_non_finite(opt, &dir)?;
    let card = card.map(|c| c.for_folder(folder_kind(enc, false), &dir));
    // The whole folder (model, optimizer, state, card) is built under a temporary name and
    // renamed into place, replacing an earlier checkpoint-N without exposing a partial one.
    enc.save_with(&dir, false, |tmp| {
        opt.save(&tmp.join(OPTIMIZER_FILE))?;
        let json = serde_json::to_string_pretty(state).expect("state serializes");
        std::fs::write(tmp.join(STATE_FILE), json)
            .map_err(|e| Error::io(tmp.join(STATE_FILE), e))?;
        match &card {
            Some(c) => c.write(tmp),
            None => Ok(()),
        }
    })?;
    Ok(dir)
}

/// Reads the trainer position of a checkpoint folder.
pub fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::io(
            &path,
            format!("{e}; --resume takes a checkpoint-N folder written by embtune train"),
        )
    })?;
    serde_json::from_str(&text)
        .map_err(|e| Error::data(&path, None, format!("corrupt trainer state: {e}")))
}

/// Checkpoint folders under `output`, oldest (lowest step) first.
pub fn list_checkpoints(output: &Path) -> Vec<(usize, PathBuf)> {
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(output)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n = name.strip_prefix("checkpoint-")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// Removes the oldest checkpoints beyond `limit`.
pub fn prune(output: &Path, limit: Option<usize>) -> Result<()> {
    let Some(limit) = limit else { return Ok(()) };
    let found = list_checkpoints(output);
    if found.len() > limit {
        for (n, p) in &found[..found.len() - limit] {
            // Renamed away first, so no partly deleted checkpoint-N is ever visible.
            let doomed = output.join(format!(".checkpoint-{n}.tmp-prune-{}", std::process::id()));
            std::fs::rename(p, &doomed).map_err(|e| Error::io(p, e))?;
            std::fs::remove_dir_all(&doomed).map_err(|e| Error::io(&doomed, e))?;
        }
    }
    Ok(())
}

/// Removes what killed runs left in `output` under the temporary names of the trainer's own
/// writes (`.checkpoint-N.tmp…`, `.best.tmp…`, `.final.tmp…`, `.metrics.jsonl.tmp…`,
/// `.training.png.tmp…`): they are never read, only disk space. Called by rank 0 when a run
/// starts; a leftover that cannot be removed is left (the next save uses a new name).
pub fn remove_stale_temporaries(output: &Path) {
    let owned = |name: &str| {
        let Some(rest) = name.strip_prefix('.') else {
            return false;
        };
        let stem = rest.split(".tmp").next().unwrap_or("");
        rest.len() > stem.len()
            && (["best", "final", "metrics.jsonl", "training.png"].contains(&stem)
                || stem
                    .strip_prefix("checkpoint-")
                    .is_some_and(|n| n.parse::<usize>().is_ok()))
    };
    for e in std::fs::read_dir(output).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if owned(&name) {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// `metrics.jsonl`: one JSON object per logged step, appended and flushed as it goes.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens the log; a fresh run truncates it, a resumed run appends.
    pub fn open(path: &Path, append: bool) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Opens the log of a run resumed from `checkpoint-<step>`: the lines of later steps
    /// (written by the run that was stopped after that checkpoint) are dropped first, so the
    /// resumed run does not log them twice. The kept lines are rewritten under a temporary
    /// name and renamed over the log, so it is never seen half-rewritten.
    pub fn open_resumed(path: &Path, step: usize) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(path, e)),
        };
        let kept: String = text
            .split_inclusive('\n')
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v.get("step")?.as_u64())
                    .is_some_and(|s| s <= step as u64)
            })
            .flat_map(|l| [l.trim_end_matches('\n'), "\n"])
            .collect();
        if kept != text {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
            std::fs::write(&tmp, &kept).map_err(|e| Error::io(&tmp, e))?;
            std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        }
        Self::open(path, true)
    }

    /// Appends one record.
    pub fn write(&mut self, log: &StepLog) -> Result<()> {
        let mut line = serde_json::to_string(log).expect("log serializes");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Reads every record of a log file.
    pub fn read(path: &Path) -> Result<Vec<StepLog>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| Error::data(path, Some(i as u64 + 1), e.to_string()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumed_log_drops_the_steps_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let line = |s: usize| format!("{{\"step\":{s},\"lr\":0.1}}\n");
        let text: String = [1, 2, 3, 4, 4, 5].map(line).concat();
        std::fs::write(&path, &text).unwrap();
        drop(MetricsLog::open_resumed(&path, 3).unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            [1, 2, 3].map(line).concat()
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["metrics.jsonl"], "no temporary left");
        // A resume with no log yet starts one.
        let fresh = dir.path().join("other.jsonl");
        drop(MetricsLog::open_resumed(&fresh, 3).unwrap());
        assert_eq!(std::fs::read_to_string(&fresh).unwrap(), "");
    }

    #[test]
    fn stale_temporaries_of_the_trainer_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in [
            ".checkpoint-4.tmp-1-2",
            ".best.tmp-old-3-4",
            ".final.tmp-5-6",
        ] {
            std::fs::create_dir_all(d.join(f).join("1_Pooling")).unwrap();
        }
        for f in [".metrics.jsonl.tmp-7", ".training.png.tmp", "keep.csv"] {
            std::fs::write(d.join(f), "x").unwrap();
        }
        for f in ["checkpoint-2", "best", ".cache", ".mine.tmp-1"] {
            std::fs::create_dir_all(d.join(f)).unwrap();
        }
        remove_stale_temporaries(d);
        let mut names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [".cache", ".mine.tmp-1", "best", "checkpoint-2", "keep.csv"]
        );
    }
}
