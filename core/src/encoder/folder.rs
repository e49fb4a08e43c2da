//! The sentence-transformers folder layout, read and written (shared PARITY.md,
//! "Sentence-transformers folder"): `modules.json`, the Transformer backbone's files,
//! `k_Pooling/config.json`, `k_Dense/{config.json, model.safetensors}`, `k_Normalize/`,
//! `config_sentence_transformers.json` (prompts) and `sentence_bert_config.json`
//! (`max_seq_length`, `do_lower_case`). A plain Hugging Face folder without
//! `modules.json` reads as Transformer + mean pooling, as the reference does.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Reads and parses a JSON file; a missing or malformed file is an error naming it.
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let dir = path.parent().unwrap_or(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::model(dir, format!("{name} is missing"))
        } else {
            Error::model(
                dir,
                format!(
                    "{name} cannot be read ({})",
                    crate::error::one_line(&e.to_string())
                ),
            )
        }
    })?;
    serde_json::from_str(&text)
        .map_err(|e| Error::model(dir, format!("{name} is not valid JSON ({e})")))
}

/// Reads a JSON file when it exists.
pub fn read_json_opt(path: &Path) -> Result<Option<serde_json::Value>> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// Writes pretty JSON with a trailing newline.
pub fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let mut s =
        serde_json::to_string_pretty(v).map_err(|e| Error::Invalid(format!("json: {e}")))?;
    s.push('\n');
    std::fs::write(path, s).map_err(|e| Error::io(path, e))
}

/// The kinds of module embtune runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    /// The backbone (always the first module).
    Transformer,
    /// Token embeddings to one sentence embedding (the second module).
    Pooling,
    /// A linear layer with an activation.
    Dense,
    /// L2 normalization.
    Normalize,
}

impl ModuleKind {
    /// The legacy type string every sentence-transformers version loads.
    pub fn legacy_type(self) -> &'static str {
        match self {
            ModuleKind::Transformer => "sentence_transformers.models.Transformer",
            ModuleKind::Pooling => "sentence_transformers.models.Pooling",
            ModuleKind::Dense => "sentence_transformers.models.Dense",
            ModuleKind::Normalize => "sentence_transformers.models.Normalize",
        }
    }

    /// The class name (`Transformer`, ...), used for folder names.
    pub fn class(self) -> &'static str {
        match self {
            ModuleKind::Transformer => "Transformer",
            ModuleKind::Pooling => "Pooling",
            ModuleKind::Dense => "Dense",
            ModuleKind::Normalize => "Normalize",
        }
    }
}

/// One entry of `modules.json`.
#[derive(Debug, Clone)]
pub struct ModuleEntry {
    /// The module's folder relative to the model folder (`""` for the root).
    pub path: String,
    /// What the module is.
    pub kind: ModuleKind,
}

#[derive(Deserialize)]
struct RawEntry {
    #[serde(default)]
    idx: Option<i64>,
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    ty: String,
}

/// Parses `dir/modules.json` (None when the folder has none). Any type string whose class
/// is Transformer, Pooling, Dense or Normalize is accepted (legacy
/// `sentence_transformers.models.X` and newer module paths alike).
pub fn read_modules(dir: &Path) -> Result<Option<Vec<ModuleEntry>>> {
    let path = dir.join("modules.json");
    let Some(v) = read_json_opt(&path)? else {
        return Ok(None);
    };
    parse_modules(v, dir).map(Some)
}

/// The modules of a parsed `modules.json` of folder `dir` (see [`read_modules`]).
pub fn parse_modules(v: serde_json::Value, dir: &Path) -> Result<Vec<ModuleEntry>> {
    let mut raw: Vec<RawEntry> = serde_json::from_value(v)
        .map_err(|e| Error::model(dir, format!("modules.json is not a list of modules ({e})")))?;
    raw.sort_by_key(|r| r.idx.unwrap_or(0));
    let mut out = Vec::with_capacity(raw.len());
    for r in raw {
        let class = r.ty.rsplit('.').next().unwrap_or(&r.ty);
        let kind = match class {
            "Transformer" => ModuleKind::Transformer,
            "Pooling" => ModuleKind::Pooling,
            "Dense" => ModuleKind::Dense,
            "Normalize" => ModuleKind::Normalize,
            _ => {
                return Err(Error::model(
                    dir,
                    format!("modules.json: module type '{}' is not supported (supported: Transformer, Pooling, Dense, Normalize)", r.ty),
                ))
            }
        };
        out.push(ModuleEntry { path: r.path, kind });
    }
    Ok(out)
}

/// Whether a file of the backbone folder is copied as-is on save (tokenizer and other
/// configuration files), as opposed to weights and files embtune writes itself.
pub fn copied_on_save(name: &str) -> bool {
    const WRITTEN: &[&str] = &[
        "config.json",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "README.md",
        // LoRA adapter folders: written from the encoder's adapters (crate::lora).
        "adapter_config.json",
    ];
    const WEIGHT_EXT: &[&str] = &[
        ".safetensors",
        ".bin",
        ".pt",
        ".pth",
        ".h5",
        ".msgpack",
        ".onnx",
        ".ckpt",
    ];
    !(WRITTEN.contains(&name)
        || WEIGHT_EXT.iter().any(|e| name.ends_with(e))
        || name.ends_with(".index.json")
        || name.starts_with('.'))
}

pub use crate::atomic::{is_temporary, write_atomically};
