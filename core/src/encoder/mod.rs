//! Sentence encoders on tch: sentence-transformers folders in and out, a backbone from
//! [`crate::models`] (chosen by `config.json`'s `model_type`), pooling, dense layers and
//! normalization.
//!
//! [`SentenceEncoder`] is the one type callers use: [`SentenceEncoder::load`] reads a
//! folder, [`SentenceEncoder::tokenize`] + [`SentenceEncoder::forward`] give differentiable
//! `(B, D)` embeddings for training ([`SentenceEncoder::prepare`] +
//! [`SentenceEncoder::forward_prepared`] when one step runs several forwards),
//! [`SentenceEncoder::encode`] gives `(N, D)` fp32 CPU embeddings for inference, and
//! [`SentenceEncoder::save`] writes a folder that sentence-transformers loads unchanged.
//! Every trainable tensor lives in one `tch::nn::VarStore` ([`SentenceEncoder::var_store`])
//! under its checkpoint name.
//!
//! An encoder may carry LoRA adapters ([`crate::lora`]): [`SentenceEncoder::add_lora`] adds
//! fresh ones (the base weights freeze; [`SentenceEncoder::trainable_parameters`] is then
//! the adapters alone), loading a PEFT adapter folder loads its base model and its
//! adapters, [`SentenceEncoder::save`] writes an adapter folder and
//! [`SentenceEncoder::save_merged`] a plain folder with the adapters merged in.

pub mod dense;
pub mod folder;
pub mod pooling;
pub mod safetensors;
pub mod tokenize;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::lora::{LinearModule, LoraAdapters, LoraConfig};
use crate::models::{
    load_backbone, run_checkpointed, Backbone, CastWeights, Checkpoint, Checkpointed, ParamId,
    ParamTable, PreparedBackbone,
};
use dense::Dense;
use folder::{ModuleEntry, ModuleKind};
use pooling::Pooling;
use tokenize::TextTokenizer;

/// Numeric precision of forward passes. Master weights are always fp32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in fp32.
    #[default]
    Fp32,
    /// Compute in bf16 (CUDA only); weights are cast once per [`SentenceEncoder::prepare`],
    /// gradients reach the fp32 masters through the cast.
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fp32" | "f32" | "float32" => Ok(Precision::Fp32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(Error::Invalid(format!(
                "unknown precision '{s}'; valid: fp32, bf16"
            ))),
        }
    }
}

/// Tokenized texts on the encoder's device, padded to the longest of the batch on the
/// tokenizer's side ([`tokenize::PaddingSide`]: right, or left for Qwen3-Embedding).
pub struct TokenBatch {
    /// `(b, s)` int64 token ids.
    pub input_ids: Tensor,
    /// `(b, s)` int64, 1 on real tokens and 0 on padding.
    pub attention_mask: Tensor,
    /// Tokens of a prompt at the start of every row's real tokens that pooling skips when
    /// the Pooling config says `include_prompt: false` (None: no prompt).
    pub prompt_length: Option<usize>,
}

/// An encoder's weights prepared for one forward precision by [`SentenceEncoder::prepare`]:
/// cast (bf16) and fused (q/k/v, gate/up) once, then read by every
/// [`SentenceEncoder::forward_prepared`] call. Differentiable: a backward pass through the
/// forwards reaches the fp32 masters. Opaque; valid for the encoder that made it until its
/// weights or precision change (prepare again after an optimizer step).
pub struct PreparedWeights {
    /// Every parameter in the forward's precision (embedding tables left fp32).
    params: Vec<Tensor>,
    backbone: Box<dyn PreparedBackbone>,
}

enum Stage {
    Dense(Dense),
    Normalize {
        path: String,
        config: Option<serde_json::Value>,
    },
}

/// Options of [`SentenceEncoder::load_with`]; the default is [`SentenceEncoder::load`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadOptions {
    /// Every dropout probability of the backbone (hidden, attention, embedding, MLP:
    /// [`crate::models::DROPOUT_KEYS`]) for this encoder's training forwards, in `[0, 1)`;
    /// None keeps the model's. The folder [`SentenceEncoder::save`] writes keeps the
    /// model's own `config.json` values. LoRA adapters' dropout is their own
    /// ([`LoraConfig::dropout`]).
    pub dropout: Option<f64>,
}

/// A sentence-transformers model: Transformer -> Pooling -> Dense* -> Normalize?.
pub struct SentenceEncoder {
    /// The folder whose tokenizer files are read and copied on save (the Transformer
    /// module's folder; an adapter folder without tokenizer files: its base's).
    transformer_dir: PathBuf,
    /// The files of `transformer_dir` every save copies (tokenizer, its configs, ...), read
    /// when the encoder is loaded: a save never depends on that folder still existing (a
    /// run resumed from a checkpoint that `--save-total-limit` later prunes).
    transformer_files: Vec<(String, Vec<u8>)>,
    /// The folder of the backbone's `config.json` and weights (an adapter folder's base).
    weights_dir: PathBuf,
    /// LoRA adapters, when the encoder carries them (the base weights are then frozen).
    lora: Option<LoraAdapters>,
    device: Device,
    precision: Precision,
    params: ParamTable,
    n_backbone: usize,
    backbone: Box<dyn Backbone>,
    backbone_config: serde_json::Value,
    extras: Vec<(String, Tensor)>,
    tokenizer: TextTokenizer,
    pooling: Pooling,
    pooling_path: String,
    pooling_config: Option<serde_json::Value>,
    stages: Vec<Stage>,
    prompts: BTreeMap<String, String>,
    default_prompt_name: Option<String>,
    st_config: Option<serde_json::Value>,
    sbert_config: Option<serde_json::Value>,
    max_seq_length: usize,
    embedding_ids: Vec<ParamId>,
}

fn read_checkpoint(dir: &Path) -> Result<BTreeMap<String, Tensor>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return safetensors::read(&single);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let v = folder::read_json(&index)?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::model(dir, "model.safetensors.index.json has no weight_map"))?;
        let mut files: Vec<&str> = map.values().filter_map(|f| f.as_str()).collect();
        files.sort();
        files.dedup();
        let mut out = BTreeMap::new();
        for f in files {
            out.extend(safetensors::read(&dir.join(f))?);
        }
        return Ok(out);
    }
    if dir.join("pytorch_model.bin").is_file() {
        return Err(Error::model(dir, "only model.safetensors is supported, found pytorch_model.bin; re-save the model with safe_serialization=True"));
    }
    Err(Error::model(dir, "model.safetensors is missing"))
}

impl SentenceEncoder {
    /// Loads a sentence-transformers folder (or a plain Hugging Face folder, read as
    /// Transformer + mean pooling) onto `device`. Every bad input is an [`Error::Model`]
    /// naming the folder and the problem.
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        Self::load_with(dir, device, &LoadOptions::default())
    }

    /// [`Self::load`] with `options` (e.g. a dropout override for training). A dropout
    /// outside `[0, 1)` is an [`Error::Invalid`].
    pub fn load_with(dir: &Path, device: Device, options: &LoadOptions) -> Result<Self> {
        if let Some(p) = options.dropout {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::Invalid(format!(
                    "--dropout {p} is not a probability in [0, 1); pass e.g. --dropout 0 (no dropout) or 0.1"
                )));
            }
        }
        if !dir.is_dir() {
            return Err(Error::model(dir, "no such folder"));
        }
        let entries = folder::read_modules(dir)?;
        let plain = entries.is_none();
        let entries = entries.unwrap_or_else(|| {
            vec![ModuleEntry {
                path: String::new(),
                kind: ModuleKind::Transformer,
            }]
        });
        let first = entries
            .first()
            .ok_or_else(|| Error::model(dir, "modules.json lists no modules"))?;
        if first.kind != ModuleKind::Transformer {
            return Err(Error::model(
                dir,
                "modules.json: the first module must be a Transformer",
            ));
        }
        let module_dir = dir.join(&first.path);
        // A PEFT adapter folder: the backbone comes from its base model.
        let adapter = crate::lora::read_adapter_folder(&module_dir)?;
        let weights_dir = match &adapter {
            Some((_, base)) => base_weights_dir(base)?,
            None => module_dir.clone(),
        };
        let transformer_dir = if adapter.is_some() && !module_dir.join("tokenizer.json").is_file() {
            weights_dir.clone()
        } else {
            module_dir.clone()
        };
        let config = folder::read_json(&weights_dir.join("config.json"))?;
        let sbert_config =
            match folder::read_json_opt(&module_dir.join("sentence_bert_config.json"))? {
                Some(c) => Some(c),
                None => folder::read_json_opt(&transformer_dir.join("sentence_bert_config.json"))?,
            };

        let mut params = ParamTable::new(device);
        let tensors = read_checkpoint(&weights_dir)?;
        let mut ckpt = Checkpoint::new(&weights_dir, "model.safetensors", tensors);
        // The override reaches the backbone only: `config` is saved as the model's.
        let backbone = match options.dropout {
            Some(p) => {
                let overridden = crate::models::with_dropout(&config, p);
                load_backbone(&weights_dir, &overridden, &mut ckpt, &mut params)?
            }
            None => load_backbone(&weights_dir, &config, &mut ckpt, &mut params)?,
        };
        let (hidden, max_pos) = (backbone.hidden_size(), backbone.max_positions());
        let embedding_ids = backbone.embedding_ids();
        let n_backbone = params.tensors().len();
        let extras = ckpt.into_rest();

        // Tokenizer and max_seq_length as the reference's Transformer module sets them.
        let tok_config = folder::read_json_opt(&transformer_dir.join("tokenizer_config.json"))?;
        let max_seq_length = match sbert_config
            .as_ref()
            .and_then(|c| c.get("max_seq_length"))
            .and_then(|v| v.as_u64())
        {
            Some(m) => m as usize,
            None => {
                let tok_max = tok_config
                    .as_ref()
                    .and_then(|c| c.get("model_max_length"))
                    .and_then(|v| v.as_f64())
                    .unwrap_or(f64::MAX);
                tok_max.min(max_pos as f64) as usize
            }
        };
        if max_seq_length as i64 > max_pos {
            return Err(Error::model(
                dir,
                format!("max_seq_length {max_seq_length} exceeds the model's {max_pos} positions"),
            ));
        }
        let lowercase = sbert_config
            .as_ref()
            .and_then(|c| c.get("do_lower_case"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let pad_id = config.get("pad_token_id").and_then(|v| v.as_i64());
        let tokenizer = TextTokenizer::load(&transformer_dir, max_seq_length, pad_id, lowercase)?;

        // Pooling, then Dense / Normalize in order.
        let (pooling, pooling_path, pooling_config) = match entries.get(1) {
            Some(e) if e.kind == ModuleKind::Pooling => {
                let cfg = folder::read_json(&dir.join(&e.path).join("config.json"))?;
                let p = Pooling::from_config(&dir.join(&e.path), &cfg)?;
                if p.dimension != hidden {
                    return Err(Error::model(
                        dir.join(&e.path),
                        format!("config.json: embedding dimension {} does not match the backbone's hidden size {hidden}", p.dimension),
                    ));
                }
                (p, e.path.clone(), Some(cfg))
            }
            None if plain => (Pooling::mean(hidden), "1_Pooling".to_string(), None),
            _ => {
                return Err(Error::model(
                    dir,
                    "modules.json: the second module must be a Pooling module",
                ))
            }
        };
        let mut stages = Vec::new();
        let mut width = pooling.output_dimension();
        for e in entries.iter().skip(2) {
            match e.kind {
                ModuleKind::Dense => {
                    let d = Dense::load(&dir.join(&e.path), &e.path, &mut params)?;
                    if d.in_features != width {
                        return Err(Error::model(
                            dir.join(&e.path),
                            format!("config.json: in_features {} does not match the previous module's output width {width}", d.in_features),
                        ));
                    }
                    width = d.out_features;
                    stages.push(Stage::Dense(d));
                }
                ModuleKind::Normalize => {
                    let config = folder::read_json_opt(&dir.join(&e.path).join("config.json"))?;
                    stages.push(Stage::Normalize {
                        path: e.path.clone(),
                        config,
                    })
                }
                k => {
                    return Err(Error::model(
                        dir,
                        format!(
                            "modules.json: a {} module after the Pooling module is not supported",
                            k.class()
                        ),
                    ))
                }
            }
        }

        let st_config = folder::read_json_opt(&dir.join("config_sentence_transformers.json"))?;
        let mut prompts = BTreeMap::new();
        let mut default_prompt_name = None;
        if let Some(c) = &st_config {
            if let Some(p) = c.get("prompts").and_then(|p| p.as_object()) {
                for (k, v) in p {
                    prompts.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
                }
            }
            default_prompt_name = c
                .get("default_prompt_name")
                .and_then(|v| v.as_str())
                .map(String::from);
        }
        let lora = match &adapter {
            Some((cfg, base)) => {
                let modules = linear_modules(&params, n_backbone, &embedding_ids);
                let l = LoraAdapters::from_folder(&module_dir, cfg, &modules, base, device)?;
                params.var_store_mut().freeze();
                Some(l)
            }
            None => None,
        };
        let transformer_files = read_copied_files(&transformer_dir)?;
        Ok(SentenceEncoder {
            transformer_dir,
            transformer_files,
            weights_dir,
            lora,
            device,
            precision: Precision::Fp32,
            params,
            n_backbone,
            backbone,
            backbone_config: config,
            extras,
            tokenizer,
            pooling,
            pooling_path,
            pooling_config,
            stages,
            prompts,
            default_prompt_name,
            st_config,
            sbert_config,
            max_seq_length,
            embedding_ids,
        })
    }

    /// The device of the weights and of every tensor this encoder returns from
    /// [`Self::tokenize`] and [`Self::forward`].
    pub fn device(&self) -> Device {
        self.device
    }

    /// Truncation length in tokens (special tokens included).
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Sets the truncation length (at most the model's positions).
    pub fn set_max_seq_length(&mut self, n: usize) -> Result<()> {
        let max_pos = self.backbone.max_positions();
        if n == 0 || n as i64 > max_pos {
            return Err(Error::Invalid(format!(
                "--max-seq-length {n} is out of range: this model takes 1 to {max_pos} tokens; pass a length in that range"
            )));
        }
        let t = &self.tokenizer;
        self.tokenizer =
            TextTokenizer::load(&self.transformer_dir, n, Some(t.pad_id()), t.lowercase())?;
        self.max_seq_length = n;
        Ok(())
    }

    /// The model's named prompts (`config_sentence_transformers.json`).
    pub fn prompts(&self) -> &BTreeMap<String, String> {
        &self.prompts
    }

    /// The prompt the reference applies when a caller names none (`default_prompt_name`).
    /// [`Self::encode`] does not apply it; the command line does.
    pub fn default_prompt(&self) -> Option<&str> {
        self.default_prompt_name
            .as_deref()
            .and_then(|n| self.prompts.get(n))
            .map(String::as_str)
    }

    /// The prompt named `name`; an unknown name lists the known ones.
    pub fn prompt(&self, name: &str) -> Result<&str> {
        self.prompts.get(name).map(String::as_str).ok_or_else(|| {
            let known: Vec<&str> = self.prompts.keys().map(String::as_str).collect();
            Error::Invalid(format!(
                "the model has no prompt named '{name}'; its prompts: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
    }

    /// Width of the sentence embeddings.
    pub fn dimension(&self) -> i64 {
        let mut d = self.pooling.output_dimension();
        for s in &self.stages {
            if let Stage::Dense(x) = s {
                d = x.out_features;
            }
        }
        d
    }

    /// `config.json`'s `model_type` of the backbone (`bert`, `qwen3`, ...).
    pub fn model_type(&self) -> Option<&str> {
        self.backbone_config
            .get("model_type")
            .and_then(|v| v.as_str())
    }

    /// The pooling module.
    pub fn pooling(&self) -> &Pooling {
        &self.pooling
    }

    /// Whether the model ends with a Normalize module (unit-length embeddings).
    pub fn normalizes(&self) -> bool {
        self.stages
            .iter()
            .any(|s| matches!(s, Stage::Normalize { .. }))
    }

    /// The modules in order, one line each, for model cards: `Transformer (bert, max 256
    /// tokens)`, `Pooling (mean, 384 -> 384)`, `Dense (384 -> 256, tanh)`, `Normalize`.
    pub fn module_lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "Transformer ({}, max {} tokens)",
            self.model_type().unwrap_or("unknown model_type"),
            self.max_seq_length
        )];
        let modes: Vec<&str> = self.pooling.modes.iter().map(|m| m.name()).collect();
        out.push(format!(
            "Pooling ({}, {} -> {})",
            modes.join("+"),
            self.pooling.dimension,
            self.pooling.output_dimension()
        ));
        for s in &self.stages {
            out.push(match s {
                Stage::Dense(d) => format!(
                    "Dense ({} -> {}, {:?})",
                    d.in_features, d.out_features, d.activation
                ),
                Stage::Normalize { .. } => "Normalize".to_string(),
            });
        }
        out
    }

    /// The precision of forward passes.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Sets the precision; bf16 needs a CUDA device. Weights stay fp32.
    pub fn set_precision(&mut self, p: Precision) -> Result<()> {
        if p == Precision::Bf16 && !self.device.is_cuda() {
            return Err(Error::Invalid(
                "--precision bf16 needs a CUDA device; use fp32 on CPU".into(),
            ));
        }
        self.precision = p;
        Ok(())
    }

    /// Sets the precision without the CUDA check: bf16 on CPU is slow and only meant for
    /// tests of the bf16 code path on machines without a GPU.
    #[doc(hidden)]
    pub fn force_precision(&mut self, p: Precision) {
        self.precision = p;
    }

    fn kind(&self) -> Kind {
        match self.precision {
            Precision::Fp32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
        }
    }

    /// Every trainable parameter (backbone, then Dense modules) in one VarStore; variable
    /// names are checkpoint names (`encoder.layer.0.attention.self.query.weight`,
    /// `2_Dense.linear.weight`). Training these tensors changes what [`Self::save`] writes.
    pub fn var_store(&self) -> &tch::nn::VarStore {
        self.params.var_store()
    }

    /// The VarStore, mutably (e.g. for `freeze`).
    pub fn var_store_mut(&mut self) -> &mut tch::nn::VarStore {
        self.params.var_store_mut()
    }

    /// The trainable tensors in a fixed order with their names (the same tensors as the
    /// VarStore's, without its hash-map order).
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.params
            .names()
            .iter()
            .cloned()
            .zip(self.params.tensors().iter().map(|t| t.shallow_clone()))
            .collect()
    }

    /// Adds fresh LoRA adapters for `cfg` (see [`LoraAdapters::new`]) and freezes every
    /// other parameter: training then updates the adapters only. An encoder that already
    /// carries adapters, or a target matching no linear layer, is an error.
    pub fn add_lora(&mut self, cfg: &LoraConfig) -> Result<()> {
        if self.lora.is_some() {
            return Err(Error::Invalid(
                "--lora: the model already carries LoRA adapters".into(),
            ));
        }
        let modules = linear_modules(&self.params, self.n_backbone, &self.embedding_ids);
        let model_type = self
            .backbone_config
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let base =
            std::fs::canonicalize(&self.weights_dir).unwrap_or_else(|_| self.weights_dir.clone());
        // Linear weights of the checkpoint that embtune does not run (BERT's pooler), by
        // the module name transformers' base model gives them.
        let unused: Vec<String> = self
            .extras
            .iter()
            .filter(|(_, t)| t.dim() == 2 && t.is_floating_point())
            .filter_map(|(n, _)| n.strip_suffix(".weight"))
            .map(|n| {
                ["bert.", "roberta.", "model."]
                    .iter()
                    .find_map(|p| n.strip_prefix(p))
                    .unwrap_or(n)
                    .to_string()
            })
            .collect();
        self.lora = Some(LoraAdapters::new(
            cfg,
            &modules,
            &unused,
            model_type,
            &base,
            self.device,
        )?);
        self.params.var_store_mut().freeze();
        Ok(())
    }

    /// The LoRA adapters, when the encoder carries them.
    pub fn lora(&self) -> Option<&LoraAdapters> {
        self.lora.as_ref()
    }

    /// The LoRA adapters, mutably (e.g. to set the training dropout).
    pub fn lora_mut(&mut self) -> Option<&mut LoraAdapters> {
        self.lora.as_mut()
    }

    /// Merges the LoRA adapters into the base weights (`W += alpha / r * B A`), drops
    /// them and unfreezes the base: the encoder is then a plain model computing the same
    /// function. No-op without adapters.
    pub fn merge_lora(&mut self) {
        if let Some(l) = self.lora.take() {
            let deltas = l.deltas();
            tch::no_grad(|| {
                for (id, d) in &deltas {
                    let mut t = self.params.tensors()[*id].shallow_clone();
                    let _ = t.g_add_(d);
                }
            });
            self.params.var_store_mut().unfreeze();
        }
    }

    /// The tensors training updates, with their names: the LoRA adapters
    /// (`<module>.lora_A.weight`, ...) when the encoder carries them, else every
    /// parameter of [`Self::var_store`].
    pub fn trainable_parameters(&self) -> Vec<(String, Tensor)> {
        match &self.lora {
            Some(l) => l.named_parameters(),
            None => self.var_store().variables().into_iter().collect(),
        }
    }

    /// `(trainable, total)` parameter counts (scalars): the adapters and base + adapters
    /// with LoRA, else all parameters twice.
    pub fn parameter_counts(&self) -> (i64, i64) {
        let base: i64 = self.params.tensors().iter().map(|t| t.numel() as i64).sum();
        match &self.lora {
            Some(l) => (l.numel(), base + l.numel()),
            None => (base, base),
        }
    }

    /// The tokenizer with the reference's batch settings.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Tokenizes `texts` as they are (no prompt): ids and mask on the device, padded to the
    /// longest text, truncated at [`Self::max_seq_length`].
    pub fn tokenize(&self, texts: &[&str]) -> Result<TokenBatch> {
        let ids = self.tokenizer.encode_ids(texts)?;
        self.batch_from_ids(&ids, None)
    }

    /// Tokenizes `prompt + text` for every text, as the reference prepends prompts, and
    /// records the prompt's token count for `include_prompt: false` pooling.
    pub fn tokenize_with_prompt(&self, texts: &[&str], prompt: Option<&str>) -> Result<TokenBatch> {
        match prompt.filter(|p| !p.is_empty()) {
            None => self.tokenize(texts),
            Some(p) => {
                let ids = self.tokenizer.encode_ids_with_prompt(texts, Some(p))?;
                let pl = self.tokenizer.prompt_length(p)?;
                self.batch_from_ids(&ids, Some(pl))
            }
        }
    }

    /// A batch of already tokenized texts (`ids`, one row per text, as
    /// [`TextTokenizer::encode_ids`] gives them) on the device, padded with the pad id to
    /// the longest row on the tokenizer's padding side (left padding puts every row's
    /// tokens at the end). `prompt_length` is the prompt's token count at the start of every
    /// row for `include_prompt: false` pooling (None: no prompt; see
    /// [`TextTokenizer::prompt_length`]). Rows are not truncated here.
    pub fn batch_from_ids(
        &self,
        ids: &[Vec<u32>],
        prompt_length: Option<usize>,
    ) -> Result<TokenBatch> {
        let b = ids.len();
        let s = ids.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let pad = self.tokenizer.pad_id();
        let mut flat = vec![pad; b * s];
        let mut mask = vec![0i64; b * s];
        let left = self.tokenizer.padding_side() == tokenize::PaddingSide::Left;
        for (r, row) in ids.iter().enumerate() {
            let start = r * s + if left { s - row.len() } else { 0 };
            for (c, &id) in row.iter().enumerate() {
                flat[start + c] = id as i64;
                mask[start + c] = 1;
            }
        }
        let to = |v: Vec<i64>| {
            Tensor::from_slice(&v)
                .view([b as i64, s as i64])
                .to_device(self.device)
        };
        Ok(TokenBatch {
            input_ids: to(flat),
            attention_mask: to(mask),
            prompt_length,
        })
    }

    /// The weights cast to the encoder's [`Self::precision`] and fused, once: a training
    /// step calls this once and runs all its forwards ([`Self::forward_prepared`]) with the
    /// result. With gradients enabled the result is part of the autograd graph (the cast
    /// is differentiable); under `tch::no_grad` it is not.
    pub fn prepare(&self) -> PreparedWeights {
        let kind = self.kind();
        let params = self.params.cast(kind, &self.embedding_ids);
        let branches = self.lora.as_ref().map(|l| l.branches(kind));
        let w = match &branches {
            Some(b) => CastWeights::with_branches(&params, b),
            None => CastWeights::plain(&params),
        };
        let backbone = self.backbone.prepare(&w, kind);
        PreparedWeights { params, backbone }
    }

    /// Sentence embeddings `(b, D)` in fp32 on the device, as [`Self::forward`] gives them,
    /// with weights `w` from this encoder's [`Self::prepare`]. Dropout only when `train`.
    pub fn forward_prepared(
        &self,
        w: &PreparedWeights,
        batch: &TokenBatch,
        train: bool,
    ) -> Result<Tensor> {
        let (ids, mask) = (&batch.input_ids, &batch.attention_mask);
        let tokens = w.backbone.forward(ids, mask, train)?;
        self.head(w, &tokens, batch)
    }

    /// [`Self::forward_prepared`] with gradient checkpointing: the backbone keeps only
    /// each layer's input hidden states (see [`crate::models::run_checkpointed`]). Returns
    /// the same embeddings `(b, D)`, differentiable back to the backbone's last hidden
    /// states, and the pass: once the loss's backward has run, call
    /// [`Checkpointed::backward`] to recompute the layers one at a time and finish the
    /// gradients. An architecture without [`crate::models::Stages`] is an
    /// [`Error::Invalid`] naming its `model_type`.
    pub fn forward_checkpointed<'w>(
        &self,
        w: &'w PreparedWeights,
        batch: &TokenBatch,
        train: bool,
    ) -> Result<(Tensor, Checkpointed<'w>)> {
        let (ids, mask) = (&batch.input_ids, &batch.attention_mask);
        let (tokens, pass) = run_checkpointed(w.backbone.stages(ids, mask, train)?, train)?;
        Ok((self.head(w, &tokens, batch)?, pass))
    }

    /// Ok when the backbone supports gradient checkpointing
    /// ([`Self::forward_checkpointed`]); otherwise the error naming its `model_type`.
    pub fn check_gradient_checkpointing(&self) -> Result<()> {
        self.backbone.check_staged()
    }

    /// Pooling, Dense layers and Normalize over token embeddings `tokens (b, s, h)` of
    /// `batch`: `(b, D)` fp32.
    fn head(&self, w: &PreparedWeights, tokens: &Tensor, batch: &TokenBatch) -> Result<Tensor> {
        let mut x = self
            .pooling
            .forward(tokens, &batch.attention_mask, batch.prompt_length)?;
        for s in &self.stages {
            x = match s {
                Stage::Dense(d) => d.forward(&w.params, &x),
                Stage::Normalize { .. } => {
                    let n = x
                        .norm_scalaropt_dim(2.0, [-1i64].as_slice(), true)
                        .clamp_min(1e-12);
                    x / n
                }
            };
        }
        Ok(x.to_kind(Kind::Float))
    }

    /// Sentence embeddings `(b, D)` in fp32 on the device, through pooling, dense layers
    /// and normalization; differentiable with respect to [`Self::var_store`]. Dropout is
    /// active only when `train`. Weights are cast (bf16) and fused once per call
    /// ([`Self::prepare`] then [`Self::forward_prepared`]).
    pub fn forward(&self, batch: &TokenBatch, train: bool) -> Result<Tensor> {
        self.forward_prepared(&self.prepare(), batch, train)
    }

    /// Embeddings `(N, D)` fp32 on the CPU of `texts` in input order, without gradients
    /// and without dropout. Texts are sorted by token count and batched `batch_size` at a
    /// time, so padding is small. No prompt is applied (see [`Self::encode_with_prompt`]).
    pub fn encode(&self, texts: &[&str], batch_size: usize) -> Result<Tensor> {
        self.encode_with_prompt(texts, None, batch_size)
    }

    /// [`Self::encode`] with `prompt` prepended to every text (the reference's
    /// `encode(texts, prompt=...)`).
    pub fn encode_with_prompt(
        &self,
        texts: &[&str],
        prompt: Option<&str>,
        batch_size: usize,
    ) -> Result<Tensor> {
        self.encode_with_progress(texts, prompt, batch_size, &mut |_| {})
    }

    /// [`Self::encode_with_prompt`] calling `progress(done)` after every batch.
    pub fn encode_with_progress(
        &self,
        texts: &[&str],
        prompt: Option<&str>,
        batch_size: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let d = self.dimension();
        if texts.is_empty() {
            return Ok(Tensor::zeros([0, d], (Kind::Float, Device::Cpu)));
        }
        let batch_size = batch_size.max(1);
        let prompt = prompt.filter(|p| !p.is_empty());
        let prompt_length = match prompt {
            Some(p) => Some(self.tokenizer.prompt_length(p)?),
            None => None,
        };
        let ids = self.tokenizer.encode_ids_with_prompt(texts, prompt)?;
        // Batches of similar length, longest first, as sentence-transformers' `encode` forms
        // them (`np.argsort(-len(text))`, `base/model.py::_input_length`: characters, not
        // tokens): the same batches pad the same way, so the float noise of padding is the
        // reference's too and near-tied retrieval scores rank alike. Ties keep input order.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].chars().count()));
        let w = self.prepare();
        let mut out: Vec<f32> = vec![0.0; texts.len() * d as usize];
        let mut done = 0;
        for chunk in order.chunks(batch_size) {
            let batch_ids: Vec<Vec<u32>> = chunk.iter().map(|&i| ids[i].clone()).collect();
            let batch = self.batch_from_ids(&batch_ids, prompt_length)?;
            let e = self
                .forward_prepared(&w, &batch, false)?
                .to_device(Device::Cpu)
                .contiguous();
            let v = Vec::<f32>::try_from(e.view([-1]))?;
            for (r, &i) in chunk.iter().enumerate() {
                out[i * d as usize..(i + 1) * d as usize]
                    .copy_from_slice(&v[r * d as usize..(r + 1) * d as usize]);
            }
            done += chunk.len();
            progress(done);
        }
        Ok(Tensor::from_slice(&out).view([texts.len() as i64, d]))
    }

    /// Writes a sentence-transformers folder to `dir` (through a temporary folder renamed
    /// into place): the backbone at the root (`config.json`, `model.safetensors` with
    /// `{"format":"pt"}` metadata, tokenizer files), `sentence_bert_config.json`,
    /// `config_sentence_transformers.json`, `modules.json` with the legacy type strings,
    /// then the Pooling, Dense and Normalize folders. Weights are written in fp32.
    ///
    /// With LoRA adapters the folder is a PEFT adapter folder instead: no `config.json` nor
    /// `model.safetensors`, but `adapter_config.json` (naming the base model folder) and
    /// `adapter_model.safetensors`, as sentence-transformers saves a model with an adapter.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mode = if self.lora.is_some() {
            SaveMode::Adapter
        } else {
            SaveMode::Plain
        };
        folder::write_atomically(dir, |tmp| self.write_folder(tmp, mode))
    }

    /// [`Self::save`] as a plain folder with the LoRA adapters merged into the backbone's
    /// weights (`W + alpha / r * B A`, PEFT's `merge_and_unload`); without adapters the
    /// same folder as [`Self::save`].
    pub fn save_merged(&self, dir: &Path) -> Result<()> {
        folder::write_atomically(dir, |tmp| self.write_folder(tmp, SaveMode::Merged))
    }

    /// [`Self::save`] (or [`Self::save_merged`] when `merged`) that also lets `extra` write
    /// files into the temporary folder before it is renamed into place (a model card), so
    /// the folder appears complete or not at all.
    pub fn save_with(
        &self,
        dir: &Path,
        merged: bool,
        extra: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let mode = match (merged, self.lora.is_some()) {
            (true, _) => SaveMode::Merged,
            (false, true) => SaveMode::Adapter,
            (false, false) => SaveMode::Plain,
        };
        folder::write_atomically(dir, |tmp| {
            self.write_folder(tmp, mode)?;
            extra(tmp)
        })
    }

    fn write_folder(&self, out: &Path, mode: SaveMode) -> Result<()> {
        let _guard = tch::no_grad_guard();
        // Backbone files copied as they were when loaded (tokenizer, its configs, ...).
        for (name, bytes) in &self.transformer_files {
            let path = out.join(name);
            std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
        }
        match (mode, &self.lora) {
            (SaveMode::Adapter, Some(l)) => l.write(out)?,
            _ => {
                let deltas = match (mode, &self.lora) {
                    (SaveMode::Merged, Some(l)) => l.deltas(),
                    _ => Default::default(),
                };
                folder::write_json(&out.join("config.json"), &self.backbone_config)?;
                let mut tensors: Vec<(String, Tensor)> = self.params.names()[..self.n_backbone]
                    .iter()
                    .cloned()
                    .zip(
                        self.params.tensors()[..self.n_backbone]
                            .iter()
                            .enumerate()
                            .map(|(id, t)| match deltas.get(&id) {
                                Some(d) => t.detach() + d,
                                None => t.detach(),
                            }),
                    )
                    .collect();
                tensors.extend(
                    self.extras
                        .iter()
                        .map(|(n, t)| (n.clone(), t.shallow_clone())),
                );
                safetensors::write(&out.join("model.safetensors"), &tensors)?;
            }
        }
        let sbert = match &self.sbert_config {
            Some(v) => {
                let mut v = v.clone();
                v["max_seq_length"] = self.max_seq_length.into();
                v
            }
            None => {
                serde_json::json!({"max_seq_length": self.max_seq_length, "do_lower_case": false})
            }
        };
        folder::write_json(&out.join("sentence_bert_config.json"), &sbert)?;
        let st = match &self.st_config {
            Some(v) => v.clone(),
            None => {
                serde_json::json!({"prompts": self.prompts, "default_prompt_name": self.default_prompt_name, "similarity_fn_name": "cosine"})
            }
        };
        folder::write_json(&out.join("config_sentence_transformers.json"), &st)?;

        let mut modules = vec![
            serde_json::json!({"idx": 0, "name": "0", "path": "", "type": ModuleKind::Transformer.legacy_type()}),
        ];
        let mut push = |kind: ModuleKind, path: &str| {
            let idx = modules.len();
            modules.push(serde_json::json!({"idx": idx, "name": idx.to_string(), "path": path, "type": kind.legacy_type()}));
        };
        let pdir = out.join(&self.pooling_path);
        std::fs::create_dir_all(&pdir).map_err(|e| Error::io(&pdir, e))?;
        let pcfg = self
            .pooling_config
            .clone()
            .unwrap_or_else(|| self.pooling.legacy_config());
        folder::write_json(&pdir.join("config.json"), &pcfg)?;
        push(ModuleKind::Pooling, &self.pooling_path);
        for s in &self.stages {
            match s {
                Stage::Dense(d) => {
                    let ddir = out.join(&d.folder);
                    std::fs::create_dir_all(&ddir).map_err(|e| Error::io(&ddir, e))?;
                    folder::write_json(&ddir.join("config.json"), &d.config)?;
                    let t: Vec<(String, Tensor)> = d
                        .checkpoint(self.params.tensors())
                        .into_iter()
                        .map(|(n, t)| (n, t.detach()))
                        .collect();
                    safetensors::write(&ddir.join("model.safetensors"), &t)?;
                    push(ModuleKind::Dense, &d.folder);
                }
                Stage::Normalize { path, config } => {
                    let ndir = out.join(path);
                    std::fs::create_dir_all(&ndir).map_err(|e| Error::io(&ndir, e))?;
                    if let Some(c) = config {
                        folder::write_json(&ndir.join("config.json"), c)?;
                    }
                    push(ModuleKind::Normalize, path);
                }
            }
        }
        folder::write_json(
            &out.join("modules.json"),
            &serde_json::Value::Array(modules),
        )?;
        Ok(())
    }
}

/// The files of `dir` that a save copies as they are ([`folder::copied_on_save`]).
fn read_copied_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) && folder::copied_on_save(&name)
        {
            let bytes = std::fs::read(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            files.push((name, bytes));
        }
    }
    Ok(files)
}

/// What [`SentenceEncoder::write_folder`] writes for the backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SaveMode {
    /// `config.json` and `model.safetensors` (no adapters).
    Plain,
    /// PEFT's adapter files instead of the backbone's.
    Adapter,
    /// `config.json` and `model.safetensors` with the adapters merged in.
    Merged,
}

/// The backbone's linear layers that LoRA may target: every 2-D `.weight` of the backbone
/// (ids below `n_backbone`) but the embedding tables.
fn linear_modules(
    params: &ParamTable,
    n_backbone: usize,
    embedding_ids: &[ParamId],
) -> Vec<LinearModule> {
    params.names()[..n_backbone]
        .iter()
        .zip(params.tensors())
        .enumerate()
        .filter_map(|(id, (name, t))| {
            let module = name.strip_suffix(".weight")?;
            if t.dim() != 2 || embedding_ids.contains(&id) {
                return None;
            }
            let size = t.size();
            Some(LinearModule {
                name: module.to_string(),
                weight: id,
                out_features: size[0],
                in_features: size[1],
            })
        })
        .collect()
}

/// The folder of an adapter's base model that holds `config.json` and the weights: the
/// base folder itself, or the Transformer module's folder of a sentence-transformers base.
fn base_weights_dir(base: &Path) -> Result<PathBuf> {
    if base.join("config.json").is_file() {
        return Ok(base.to_path_buf());
    }
    match folder::read_modules(base)? {
        Some(entries) => match entries.first() {
            Some(e) => Ok(base.join(&e.path)),
            None => Err(Error::model(base, "modules.json lists no modules")),
        },
        None => Ok(base.to_path_buf()),
    }
}
