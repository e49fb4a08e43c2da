//! LoRA adapters (`embtune train --lora r=16,alpha=32,dropout=0.05,targets=query,value`):
//! the option, the adapter parameters an encoder carries, and PEFT's adapter folder files.
//!
//! Semantics follow PEFT's `LoraConfig` and `lora.Linear` (peft/tuners/lora/config.py,
//! peft/tuners/lora/layer.py): every targeted linear layer `W (out, in)` gets `A (r, in)`
//! (kaiming-uniform with `a = sqrt(5)`, i.e. uniform in `±1/sqrt(in)`) and `B (out, r)`
//! (zeros), and computes `W x + b + B A dropout(x) * alpha / r` (`use_rslora` off); the base
//! weights are frozen and only the adapters train and hold optimizer state. The branch runs
//! in the forward pass beside the base matmul ([`crate::models::lora`]); merging
//! (`W + alpha / r * B A`) happens only when a merged folder is written (`--merge-lora`).
//!
//! Targets follow PEFT's `target_modules` list rule (peft/tuners/tuners_utils.py,
//! `check_target_module_exists`): a module matches a target when its name equals it or ends
//! with `.` + target, so `query` matches `encoder.layer.3.attention.self.query`. Module names
//! are the checkpoint names of the backbone's linear weights without `.weight` (the names
//! PEFT sees on the transformers model sentence-transformers loads). Defaults per
//! `model_type` are PEFT's `TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`
//! (peft/utils/constants.py): the attention query and value projections; ModernBERT, which
//! PEFT's table lacks, gets its fused `Wqkv`.
//!
//! An adapter folder is a sentence-transformers folder without the backbone's `config.json`
//! and `model.safetensors`, with PEFT's `adapter_config.json` (whose
//! `base_model_name_or_path` names the base model folder) and `adapter_model.safetensors`
//! (keys `base_model.model.<module>.lora_A.weight` / `.lora_B.weight`), as
//! sentence-transformers' `save` writes a model with an adapter; its loader
//! (`SentenceTransformer(folder)`) loads the base and then the adapter.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{nn, Device, Kind, Tensor};

use crate::encoder::{folder, safetensors};
use crate::error::{Error, Result};
use crate::models::lora::Branch;
use crate::models::ParamId;

/// PEFT's adapter config file.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// PEFT's adapter weights file.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// The prefix PEFT's `get_peft_model_state_dict` puts before module names.
const KEY_PREFIX: &str = "base_model.model.";

/// The `--lora` option: rank, alpha, dropout and target modules.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Rank `r` of the adapters (PEFT `r`).
    pub r: i64,
    /// Scaling numerator: the branch is multiplied by `alpha / r` (PEFT `lora_alpha`).
    pub alpha: f64,
    /// Dropout probability of the branch input in training (PEFT `lora_dropout`).
    pub dropout: f64,
    /// Target module names (PEFT `target_modules`); None: the architecture's default
    /// ([`default_targets`]).
    pub targets: Option<Vec<String>>,
}

impl Default for LoraConfig {
    /// r 16, alpha 32, dropout 0 (PEFT's default `lora_dropout`), default targets.
    fn default() -> Self {
        LoraConfig {
            r: 16,
            alpha: 32.0,
            dropout: 0.0,
            targets: None,
        }
    }
}

/// The keys `--lora` takes.
pub const LORA_KEYS: &[&str] = &["r", "alpha", "dropout", "targets"];

fn bad(message: String) -> Error {
    Error::Invalid(format!("--lora: {message}"))
}

impl LoraConfig {
    /// Parses `r=16,alpha=32,dropout=0.05,targets=query,value` (every key optional, empty
    /// for all defaults). `targets` takes the comma-separated names after it up to the next
    /// `key=`. Bad input is one line naming `--lora`, the problem and the valid values.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut cfg = LoraConfig::default();
        let mut in_targets = false;
        let mut seen: Vec<&str> = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                if in_targets {
                    cfg.targets
                        .get_or_insert_with(Vec::new)
                        .push(item.to_string());
                    continue;
                }
                return Err(bad(format!(
                    "'{item}' is not key=value; valid keys: {}",
                    LORA_KEYS.join(", ")
                )));
            };
            let (key, value) = (key.trim(), value.trim());
            in_targets = false;
            if seen.contains(&key) {
                return Err(bad(format!("{key} is given twice")));
            }
            match key {
                "r" => {
                    cfg.r = value
                        .parse::<i64>()
                        .ok()
                        .filter(|&r| r > 0)
                        .ok_or_else(|| bad(format!("r={value} must be a positive integer")))?
                }
                "alpha" => {
                    cfg.alpha = value
                        .parse::<f64>()
                        .ok()
                        .filter(|a| a.is_finite() && *a > 0.0)
                        .ok_or_else(|| bad(format!("alpha={value} must be a number > 0")))?
                }
                "dropout" => {
                    cfg.dropout = value
                        .parse::<f64>()
                        .ok()
                        .filter(|p| (0.0..1.0).contains(p))
                        .ok_or_else(|| bad(format!("dropout={value} must be a number in [0, 1)")))?
                }
                "targets" => {
                    in_targets = true;
                    let t = cfg.targets.get_or_insert_with(Vec::new);
                    if !value.is_empty() {
                        t.push(value.to_string());
                    }
                }
                other => {
                    return Err(bad(format!(
                        "unknown key '{other}'; valid keys: {}",
                        LORA_KEYS.join(", ")
                    )))
                }
            }
            seen.push(key);
        }
        if cfg.targets.as_ref().is_some_and(Vec::is_empty) {
            return Err(bad(
                "targets= names no module; give module names such as targets=query,value".into(),
            ));
        }
        Ok(cfg)
    }

    /// The branch scaling `alpha / r`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }

    /// `r=16 alpha=32 dropout=0.05`, for messages.
    pub fn describe(&self) -> String {
        format!("r={} alpha={} dropout={}", self.r, self.alpha, self.dropout)
    }
}

/// PEFT's default target modules for `model_type`
/// (`TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`; ModernBERT: its fused `Wqkv`).
pub fn default_targets(model_type: &str) -> Option<&'static [&'static str]> {
    match model_type {
        "bert" | "roberta" | "xlm-roberta" => Some(&["query", "value"]),
        "qwen3" | "gemma3_text" => Some(&["q_proj", "v_proj"]),
        "modernbert" => Some(&["Wqkv"]),
        _ => None,
    }
}

/// PEFT's list rule: `module` is `target` or ends with `.target`.
fn matches(module: &str, target: &str) -> bool {
    module == target
        || (module.len() > target.len()
            && module.ends_with(target)
            && module.as_bytes()[module.len() - target.len() - 1] == b'.')
}

/// The names to offer for `modules`: each name after its layer index
/// (`encoder.layer.0.attention.self.query` -> `attention.self.query`), deduplicated.
fn valid_names(modules: &[LinearModule]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in modules {
        let parts: Vec<&str> = m.name.split('.').collect();
        let short = match parts.iter().position(|p| p.parse::<u64>().is_ok()) {
            Some(i) if i + 1 < parts.len() => parts[i + 1..].join("."),
            _ => m.name.clone(),
        };
        if !out.contains(&short) {
            out.push(short);
        }
    }
    out
}

/// A linear layer of the backbone that an adapter may target.
#[derive(Debug, Clone)]
pub struct LinearModule {
    /// Module name (the weight's checkpoint name without `.weight`).
    pub name: String,
    /// Id of the weight in the encoder's parameter table.
    pub weight: ParamId,
    /// Output features (rows of the weight).
    pub out_features: i64,
    /// Input features (columns of the weight).
    pub in_features: i64,
}

/// One adapter: the module it adapts and its two trainable matrices (fp32).
pub struct Adapter {
    /// The adapted module's name.
    pub module: String,
    /// Id of the adapted weight in the encoder's parameter table.
    pub weight: ParamId,
    /// `lora_A.weight`, `(r, in)`.
    pub a: Tensor,
    /// `lora_B.weight`, `(out, r)`.
    pub b: Tensor,
}

/// The LoRA adapters of an encoder: their config, the base model they apply to, and the
/// adapter matrices in their own VarStore (the only trainable tensors of a LoRA run).
pub struct LoraAdapters {
    config: LoraConfig,
    /// Branch scaling (`alpha / r`, or `alpha / sqrt(r)` for a loaded rsLoRA adapter).
    scale: f64,
    base_model: PathBuf,
    /// Linear modules of the base checkpoint that embtune does not run (a BERT pooler)
    /// but a target matches: written as PEFT's `exclude_modules`, so that PEFT adapts
    /// exactly the modules embtune trained.
    excluded: Vec<String>,
    vs: nn::VarStore,
    adapters: Vec<Adapter>,
}

impl LoraAdapters {
    /// Fresh adapters for `config` on the `modules` its targets select (the defaults of
    /// `model_type` when it names none): A kaiming-uniform (`±1/sqrt(in)`, from the torch
    /// generator), B zeros, so the model's function is unchanged until B moves.
    /// `base_model` is the folder `adapter_config.json` will name; `unused` are the names
    /// of linear modules of its checkpoint that embtune does not run (excluded when a
    /// target matches them). A target matching no module is an error listing this model's
    /// module names.
    pub fn new(
        config: &LoraConfig,
        modules: &[LinearModule],
        unused: &[String],
        model_type: &str,
        base_model: &Path,
        device: Device,
    ) -> Result<Self> {
        let targets: Vec<String> = match &config.targets {
            Some(t) => t.clone(),
            None => default_targets(model_type)
                .ok_or_else(|| {
                    bad(format!(
                        "model_type {model_type} has no default targets; name them with targets=... (valid module names: {})",
                        valid_names(modules).join(", ")
                    ))
                })?
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        for t in &targets {
            if !modules.iter().any(|m| matches(&m.name, t)) {
                return Err(bad(format!(
                    "targets={t} matches no linear layer of this {model_type} model; valid module names: {}",
                    valid_names(modules).join(", ")
                )));
            }
        }
        let vs = nn::VarStore::new(device);
        let mut adapters = Vec::new();
        for m in modules
            .iter()
            .filter(|m| targets.iter().any(|t| matches(&m.name, t)))
        {
            let bound = 1.0 / (m.in_features as f64).sqrt();
            let a = Tensor::empty([config.r, m.in_features], (Kind::Float, device))
                .uniform_(-bound, bound);
            let b = Tensor::zeros([m.out_features, config.r], (Kind::Float, device));
            adapters.push(Self::var(&vs, m, a, b));
        }
        let excluded = unused
            .iter()
            .filter(|m| targets.iter().any(|t| matches(m, t)))
            .cloned()
            .collect();
        Ok(LoraAdapters {
            config: LoraConfig {
                targets: Some(targets),
                ..config.clone()
            },
            scale: config.scale(),
            base_model: base_model.to_path_buf(),
            excluded,
            vs,
            adapters,
        })
    }

    /// Registers `a`, `b` for module `m` as trainable variables `<module>.lora_A.weight`,
    /// `<module>.lora_B.weight`.
    fn var(vs: &nn::VarStore, m: &LinearModule, a: Tensor, b: Tensor) -> Adapter {
        let mut path = vs.root();
        for p in m.name.split('.') {
            path = path.sub(p);
        }
        let a = path.sub("lora_A").var_copy("weight", &a);
        let b = path.sub("lora_B").var_copy("weight", &b);
        Adapter {
            module: m.name.clone(),
            weight: m.weight,
            a,
            b,
        }
    }

    /// The adapters of the PEFT adapter folder `dir` (`adapter_config.json` parsed as
    /// `config`, `adapter_model.safetensors`) on `modules`. `base_model` is the resolved
    /// base folder. Only plain LoRA is read (no DoRA, no bias, no modules_to_save, no rank
    /// or alpha patterns); anything else is an error naming the field.
    pub fn from_folder(
        dir: &Path,
        config: &serde_json::Value,
        modules: &[LinearModule],
        base_model: &Path,
        device: Device,
    ) -> Result<Self> {
        let fail = |m: String| Error::model(dir, format!("{ADAPTER_CONFIG}: {m}"));
        let peft_type = config.get("peft_type").and_then(|v| v.as_str());
        if peft_type != Some("LORA") {
            return Err(fail(format!(
                "peft_type {} is not supported (supported: LORA)",
                peft_type.unwrap_or("<missing>")
            )));
        }
        let flag = |k: &str| config.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
        for k in ["use_dora", "fan_in_fan_out", "lora_bias"] {
            if flag(k) {
                return Err(fail(format!("{k}: true is not supported")));
            }
        }
        if config
            .get("bias")
            .and_then(|v| v.as_str())
            .unwrap_or("none")
            != "none"
        {
            return Err(fail("bias other than \"none\" is not supported".into()));
        }
        for k in ["rank_pattern", "alpha_pattern"] {
            if config
                .get(k)
                .and_then(|v| v.as_object())
                .is_some_and(|o| !o.is_empty())
            {
                return Err(fail(format!("{k} is not supported")));
            }
        }
        if config
            .get("modules_to_save")
            .is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
        {
            return Err(fail("modules_to_save is not supported".into()));
        }
        let r = config
            .get("r")
            .and_then(|v| v.as_i64())
            .filter(|&r| r > 0)
            .ok_or_else(|| fail("r is missing or not a positive integer".into()))?;
        let alpha = config
            .get("lora_alpha")
            .and_then(|v| v.as_f64())
            .unwrap_or(8.0);
        let dropout = config
            .get("lora_dropout")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
        let scale = if flag("use_rslora") {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        };
        let targets = match config.get("target_modules") {
            Some(serde_json::Value::Array(a)) => Some(
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect(),
            ),
            Some(serde_json::Value::String(s)) => Some(vec![s.clone()]),
            _ => None,
        };
        let mut tensors = safetensors::read(&dir.join(ADAPTER_WEIGHTS))?;
        let vs = nn::VarStore::new(device);
        let mut adapters = Vec::new();
        let mut take = |module: &str, which: &str, shape: [i64; 2]| -> Result<Option<Tensor>> {
            let key = format!("{KEY_PREFIX}{module}.{which}.weight");
            let Some(t) = tensors.remove(&key) else {
                return Ok(None);
            };
            if t.size() != shape {
                return Err(Error::model(
                    dir,
                    format!(
                        "{ADAPTER_WEIGHTS}: '{key}' has shape {:?}, r={r} and the base model imply {shape:?}",
                        t.size()
                    ),
                ));
            }
            Ok(Some(t.to_kind(Kind::Float).to_device(device)))
        };
        for m in modules {
            let a = take(&m.name, "lora_A", [r, m.in_features])?;
            let b = take(&m.name, "lora_B", [m.out_features, r])?;
            match (a, b) {
                (Some(a), Some(b)) => adapters.push(Self::var(&vs, m, a, b)),
                (None, None) => {}
                _ => {
                    return Err(Error::model(
                        dir,
                        format!(
                            "{ADAPTER_WEIGHTS}: module '{}' has only one of lora_A and lora_B",
                            m.name
                        ),
                    ))
                }
            }
        }
        // The pooler (BERT-style models) never reaches sentence embeddings: PEFT adapts
        // `pooler.dense` when a target such as `dense` matches it, embtune does not load it.
        tensors.retain(|k, _| !k.starts_with(&format!("{KEY_PREFIX}pooler.")));
        if let Some(k) = tensors.keys().next() {
            return Err(Error::model(
                dir,
                format!(
                    "{ADAPTER_WEIGHTS}: '{k}' is not a LoRA weight of a linear layer of the base model {} (expected {KEY_PREFIX}<module>.lora_A.weight / .lora_B.weight)",
                    base_model.display()
                ),
            ));
        }
        if adapters.is_empty() {
            return Err(Error::model(
                dir,
                format!("{ADAPTER_WEIGHTS} holds no adapter"),
            ));
        }
        let excluded = match config.get("exclude_modules") {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        Ok(LoraAdapters {
            config: LoraConfig {
                r,
                alpha,
                dropout,
                targets,
            },
            scale,
            base_model: base_model.to_path_buf(),
            excluded,
            vs,
            adapters,
        })
    }

    /// The config (targets resolved to the names given or defaulted).
    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// Sets the training dropout of the branch input.
    pub fn set_dropout(&mut self, p: f64) {
        self.config.dropout = p;
    }

    /// The base model folder the adapters apply to.
    pub fn base_model(&self) -> &Path {
        &self.base_model
    }

    /// The adapters, in module order.
    pub fn adapters(&self) -> &[Adapter] {
        &self.adapters
    }

    /// The adapted modules' names.
    pub fn modules(&self) -> Vec<&str> {
        self.adapters.iter().map(|a| a.module.as_str()).collect()
    }

    /// The trainable tensors (`<module>.lora_A.weight`, `<module>.lora_B.weight`) in
    /// module order.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.adapters
            .iter()
            .flat_map(|a| {
                [
                    (format!("{}.lora_A.weight", a.module), a.a.shallow_clone()),
                    (format!("{}.lora_B.weight", a.module), a.b.shallow_clone()),
                ]
            })
            .collect()
    }

    /// The adapters' VarStore.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Scalars in the adapters.
    pub fn numel(&self) -> i64 {
        self.adapters
            .iter()
            .map(|a| (a.a.numel() + a.b.numel()) as i64)
            .sum()
    }

    /// The forward passes' branches in `kind`, keyed by adapted weight id (differentiable
    /// casts of the fp32 adapters).
    pub fn branches(&self, kind: Kind) -> HashMap<ParamId, Branch> {
        let cast = |t: &Tensor| {
            if t.kind() == kind {
                t.shallow_clone()
            } else {
                t.to_kind(kind)
            }
        };
        self.adapters
            .iter()
            .map(|a| {
                (
                    a.weight,
                    Branch {
                        a: cast(&a.a),
                        b: cast(&a.b),
                        scale: self.scale,
                        dropout: self.config.dropout,
                    },
                )
            })
            .collect()
    }

    /// `scale * B A` of each adapter (fp32, no graph), keyed by adapted weight id: what
    /// merging adds to the base weight (PEFT's `get_delta_weight`).
    pub fn deltas(&self) -> HashMap<ParamId, Tensor> {
        tch::no_grad(|| {
            self.adapters
                .iter()
                .map(|a| (a.weight, a.b.matmul(&a.a) * self.scale))
                .collect()
        })
    }

    /// PEFT's `adapter_config.json` for these adapters.
    pub fn peft_config(&self) -> serde_json::Value {
        serde_json::json!({
            "peft_type": "LORA",
            "task_type": null,
            "base_model_name_or_path": self.base_model.to_string_lossy(),
            "revision": null,
            "inference_mode": true,
            "r": self.config.r,
            "lora_alpha": self.config.alpha,
            "lora_dropout": self.config.dropout,
            "target_modules": self.config.targets.clone().unwrap_or_default(),
            "exclude_modules": if self.excluded.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::json!(self.excluded)
            },
            "bias": "none",
            "fan_in_fan_out": false,
            "use_rslora": (self.scale - self.config.scale()).abs() > 1e-12,
            "use_dora": false,
            "lora_bias": false,
            "modules_to_save": null,
            "init_lora_weights": true,
            "layers_to_transform": null,
            "layers_pattern": null,
            "rank_pattern": {},
            "alpha_pattern": {},
        })
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` (fp32, PEFT's keys)
    /// into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        folder::write_json(&dir.join(ADAPTER_CONFIG), &self.peft_config())?;
        let tensors: Vec<(String, Tensor)> = self
            .named_parameters()
            .into_iter()
            .map(|(n, t)| (format!("{KEY_PREFIX}{n}"), t.detach()))
            .collect();
        safetensors::write(&dir.join(ADAPTER_WEIGHTS), &tensors)
    }

    /// Ok when `cfg` (a run's `--lora`) describes these adapters: same r and alpha, and the
    /// same targets when `cfg` names them. Otherwise the error saying how they differ.
    pub fn check_matches(&self, cfg: &LoraConfig, dir: &Path) -> Result<()> {
        let same_targets = match &cfg.targets {
            None => true,
            Some(t) => {
                let mut want = t.clone();
                want.sort();
                let mut have = self.config.targets.clone().unwrap_or_default();
                have.sort();
                want == have
            }
        };
        if cfg.r != self.config.r || cfg.alpha != self.config.alpha || !same_targets {
            return Err(bad(format!(
                "r={} alpha={} targets={} does not match the adapters in {} (r={} alpha={} targets={}); pass the --lora of the run that wrote them",
                cfg.r,
                cfg.alpha,
                cfg.targets.as_ref().map_or("<default>".into(), |t| t.join(",")),
                dir.display(),
                self.config.r,
                self.config.alpha,
                self.config.targets.clone().unwrap_or_default().join(",")
            )));
        }
        Ok(())
    }
}

/// The adapter folder's parsed `adapter_config.json` and its base model folder, when `dir`
/// is a PEFT adapter folder (None otherwise). `base_model_name_or_path` is read as a folder
/// (as given, or relative to `dir`), else as a Hugging Face id found in the local cache.
pub fn read_adapter_folder(dir: &Path) -> Result<Option<(serde_json::Value, PathBuf)>> {
    let Some(cfg) = folder::read_json_opt(&dir.join(ADAPTER_CONFIG))? else {
        return Ok(None);
    };
    let base = cfg
        .get("base_model_name_or_path")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Error::model(
                dir,
                format!("{ADAPTER_CONFIG}: base_model_name_or_path is missing; set it to the base model's folder"),
            )
        })?;
    let p = Path::new(base);
    let found = if p.is_dir() {
        Some(p.to_path_buf())
    } else if dir.join(p).is_dir() {
        Some(dir.join(p))
    } else {
        crate::hub::ModelId::parse(base)
            .and_then(|id| crate::hub::cached_snapshot(&crate::hub::HubConfig::from_env(), &id))
    };
    let base = found.ok_or_else(|| {
        Error::model(
            dir,
            format!("{ADAPTER_CONFIG}: base_model_name_or_path '{base}' is not a folder (nor a Hugging Face id in the local cache); set it to the base model's folder"),
        )
    })?;
    let base = std::fs::canonicalize(&base).unwrap_or(base);
    Ok(Some((cfg, base)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, id: ParamId) -> LinearModule {
        LinearModule {
            name: name.into(),
            weight: id,
            out_features: 4,
            in_features: 3,
        }
    }

    #[test]
    fn parse_keys_defaults_and_targets() {
        assert_eq!(LoraConfig::parse("").unwrap(), LoraConfig::default());
        let c = LoraConfig::parse("r=8,alpha=16,dropout=0.05,targets=query,value").unwrap();
        assert_eq!(c.r, 8);
        assert_eq!(c.alpha, 16.0);
        assert_eq!(c.dropout, 0.05);
        assert_eq!(c.targets, Some(vec!["query".into(), "value".into()]));
        let c = LoraConfig::parse("targets=q_proj,v_proj,r=4").unwrap();
        assert_eq!(c.r, 4);
        assert_eq!(c.targets.unwrap().len(), 2);
        assert_eq!(LoraConfig::default().scale(), 2.0);
    }

    #[test]
    fn bad_input_names_the_option_and_the_valid_values() {
        for (spec, want) in [
            (
                "rank=4",
                "--lora: unknown key 'rank'; valid keys: r, alpha, dropout, targets",
            ),
            ("r=0", "--lora: r=0 must be a positive integer"),
            ("r=x", "--lora: r=x must be a positive integer"),
            ("alpha=0", "--lora: alpha=0 must be a number > 0"),
            ("alpha=-1", "--lora: alpha=-1 must be a number > 0"),
            ("dropout=1", "--lora: dropout=1 must be a number in [0, 1)"),
            (
                "dropout=-0.1",
                "--lora: dropout=-0.1 must be a number in [0, 1)",
            ),
            ("r=4,r=8", "--lora: r is given twice"),
            ("query", "--lora: 'query' is not key=value"),
            ("targets=", "--lora: targets= names no module"),
        ] {
            let e = LoraConfig::parse(spec).unwrap_err().to_string();
            assert!(e.starts_with(want), "{spec}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn targets_follow_peft_suffix_rule() {
        assert!(matches("encoder.layer.0.attention.self.query", "query"));
        assert!(matches(
            "encoder.layer.0.attention.output.dense",
            "output.dense"
        ));
        assert!(matches("encoder.layer.0.output.dense", "output.dense"));
        assert!(!matches("encoder.layer.0.attention.self.query", "uery"));
        assert!(matches("query", "query"));
    }

    #[test]
    fn unknown_targets_list_the_model_modules() {
        let modules = vec![
            module("encoder.layer.0.attention.self.query", 0),
            module("encoder.layer.0.attention.self.value", 1),
            module("encoder.layer.1.attention.self.query", 2),
            module("encoder.layer.1.output.dense", 3),
        ];
        let cfg = LoraConfig::parse("targets=q_proj").unwrap();
        let e = LoraAdapters::new(&cfg, &modules, &[], "bert", Path::new("base"), Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            "--lora: targets=q_proj matches no linear layer of this bert model; valid module names: attention.self.query, attention.self.value, output.dense"
        );
        let l = LoraAdapters::new(
            &LoraConfig::default(),
            &modules,
            &["pooler.dense".to_string()],
            "bert",
            Path::new("base"),
            Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            l.modules(),
            vec![
                "encoder.layer.0.attention.self.query",
                "encoder.layer.0.attention.self.value",
                "encoder.layer.1.attention.self.query"
            ]
        );
        assert_eq!(l.numel(), 3 * (16 * 3 + 4 * 16));
        assert_eq!(l.peft_config()["exclude_modules"], serde_json::Value::Null);
        let cfg = LoraConfig::parse("targets=dense").unwrap();
        let l = LoraAdapters::new(
            &cfg,
            &modules,
            &["pooler.dense".to_string()],
            "bert",
            Path::new("base"),
            Device::Cpu,
        )
        .unwrap();
        assert_eq!(l.modules(), vec!["encoder.layer.1.output.dense"]);
        assert_eq!(
            l.peft_config()["exclude_modules"],
            serde_json::json!(["pooler.dense"])
        );
        // B starts at zero: no change to the model.
        for d in l.deltas().values() {
            assert_eq!(d.abs().max().double_value(&[]), 0.0);
        }
    }
}
