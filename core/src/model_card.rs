//! Model cards: the `README.md` every folder `embtune train` saves carries (`final/`,
//! `best/`, `checkpoint-N/`, LoRA adapter folders and merged folders), in the shape of the
//! cards sentence-transformers writes (`sentence_transformers/model_card.py` and
//! `model_card_template.md`, v5): YAML front matter (`library_name`, `pipeline_tag`, tags
//! with `dataset_size:N` and `loss:NAME`, `base_model`), then the model's facts, usage,
//! evaluation and training details. The text is our own; the facts and their order follow
//! that template.
//!
//! [`ModelCard`] is plain data: the trainer fills it once ([`ModelCard::from_train`]), the
//! save functions of `train::checkpoint` set the folder's kind and the metrics known at that
//! point, and [`ModelCard::render`] turns it into Markdown. Rendering needs no libtorch.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// Metric name to value, as the evaluators report them (`cosine_ndcg@10`, ...).
pub type CardMetrics = BTreeMap<String, f64>;

/// The file name of a model card inside a model folder.
pub const CARD_FILE: &str = "README.md";

/// What kind of folder a card describes; decides the usage snippet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FolderKind {
    /// A full sentence-transformers folder.
    #[default]
    Plain,
    /// A PEFT LoRA adapter folder (`adapter_config.json`, `adapter_model.safetensors`) that
    /// needs its base model.
    Adapter,
    /// A full folder with LoRA adapters merged into the weights (`--merge-lora`).
    Merged,
}

/// LoRA settings of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct CardLora {
    /// Rank `r`.
    pub r: i64,
    /// `lora_alpha`.
    pub alpha: f64,
    /// `lora_dropout`.
    pub dropout: f64,
    /// The adapted modules (PEFT `target_modules`).
    pub targets: Vec<String>,
}

/// The trainer's settings as the card lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct HyperParameters {
    /// Passes over the data (ignored when `max_steps` is set).
    pub epochs: usize,
    /// Rows per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Fraction of steps warming up.
    pub warmup_ratio: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Gradient-norm clip.
    pub max_grad_norm: f64,
    /// Seed of data order and dropout.
    pub seed: u64,
    /// Step limit, when one was set.
    pub max_steps: Option<usize>,
    /// `fp32` or `bf16`.
    pub precision: String,
    /// Identical in-batch texts masked out of the negatives.
    pub dedupe: bool,
    /// Gradient checkpointing on.
    pub gradient_checkpointing: bool,
    /// The run's dropout override, when one was set.
    pub dropout: Option<f64>,
}

impl Default for HyperParameters {
    /// The trainer's defaults (`TrainConfig::new`).
    fn default() -> Self {
        HyperParameters {
            epochs: 1,
            batch_size: 8,
            grad_accum: 1,
            learning_rate: 5e-5,
            warmup_ratio: 0.1,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            seed: 42,
            max_steps: None,
            precision: "fp32".into(),
            dedupe: true,
            gradient_checkpointing: false,
            dropout: None,
        }
    }
}

/// Everything a model card states. Fields that are not known stay `None` or empty and
/// their lines are left out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelCard {
    /// The model training started from: a Hugging Face id when it came from the hub cache
    /// ([`hub_id_from_cache_path`]), else its folder as given.
    pub base_model: String,
    /// The commit of `base_model` when it is a Hugging Face id.
    pub base_model_revision: Option<String>,
    /// `config.json`'s `model_type` (`bert`, `xlm-roberta`, `qwen3`, ...).
    pub model_type: Option<String>,
    /// The modules in order, one line each (`Transformer (bert)`, `Pooling (mean)`, ...).
    pub modules: Vec<String>,
    /// Width of the sentence embeddings.
    pub dimension: i64,
    /// Truncation length in tokens.
    pub max_seq_length: usize,
    /// Pooling mode(s), sentence-transformers' names joined by `+` (`mean`, `cls`).
    pub pooling: String,
    /// Whether the embeddings are L2-normalized by the model.
    pub normalized: bool,
    /// The model's named prompts (`config_sentence_transformers.json`).
    pub prompts: BTreeMap<String, String>,
    /// The prompt prepended to anchors in training.
    pub query_prompt: Option<String>,
    /// The prompt prepended to positives and negatives in training.
    pub document_prompt: Option<String>,
    /// The loss's registry name (`mnrl`).
    pub loss_name: String,
    /// Its one-line description (`MultipleNegativesRankingLoss: ...`), when registered.
    pub loss_summary: Option<String>,
    /// The loss options given (`--loss-opt key=value`), in order.
    pub loss_options: Vec<(String, String)>,
    /// The training data file.
    pub data_path: PathBuf,
    /// Its number of rows.
    pub rows: usize,
    /// The trainer's settings.
    pub hyper: HyperParameters,
    /// LoRA settings, when the run trained adapters.
    pub lora: Option<CardLora>,
    /// The kind of folder the card sits in (set by the save functions).
    pub kind: FolderKind,
    /// The path shown in the usage snippet (set by the save functions to the folder).
    pub usage_path: Option<String>,
    /// The optimizer step this folder was saved at; None for the end of training.
    pub step: Option<usize>,
    /// Evaluation before training.
    pub metrics_before: Option<CardMetrics>,
    /// Evaluation of this folder's weights (at `step`, or after training); the section is
    /// left out when None.
    pub metrics_after: Option<CardMetrics>,
    /// The embtune version that wrote the folder.
    pub embtune_version: String,
}

/// The Hugging Face id and commit of a snapshot folder of the hub cache
/// (`.../models--owner--name/snapshots/<commit>`), as embtune resolves `--model owner/name`;
/// None for any other folder.
pub fn hub_id_from_cache_path(path: &Path) -> Option<(String, String)> {
    let parts: Vec<String> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    let n = parts.len();
    if n < 3 || parts[n - 2] != "snapshots" {
        return None;
    }
    let repo = parts[n - 3].strip_prefix("models--")?;
    let (owner, name) = repo.split_once("--")?;
    if owner.is_empty() || name.is_empty() || name.contains("--") {
        return None;
    }
    Some((format!("{owner}/{name}"), parts[n - 1].clone()))
}

/// A YAML scalar: a JSON string is a valid YAML double-quoted scalar (same escapes).
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// `1234567` as `1,234,567`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A setting as the command line takes it: `5e-5`, `0.1`, `0`, `1`.
fn number(x: f64) -> String {
    if x != 0.0 && x.abs() < 1e-3 {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// A metric value: four decimals.
fn metric(x: f64) -> String {
    format!("{x:.4}")
}

/// Text inside a Markdown table cell or inline code: pipes and backticks escaped, one line.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Inline code that survives backticks inside.
fn code(s: &str) -> String {
    let s = s.replace('\n', " ");
    if s.contains('`') {
        format!("`` {s} ``")
    } else {
        format!("`{s}`")
    }
}

/// A Python string literal.
fn py_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

impl ModelCard {
    /// The card with `kind` and the usage path set (what the save functions do).
    pub fn for_folder(&self, kind: FolderKind, dir: &Path) -> ModelCard {
        ModelCard {
            kind,
            usage_path: Some(dir.to_string_lossy().into_owned()),
            ..self.clone()
        }
    }

    /// The card of a folder saved at optimizer step `step` with the metrics evaluated there
    /// (None: unknown, the "after" section is left out).
    pub fn at_step(&self, step: usize, metrics: Option<&CardMetrics>) -> ModelCard {
        ModelCard {
            step: Some(step),
            metrics_after: metrics.cloned(),
            ..self.clone()
        }
    }

    /// The card of the end of training with the final metrics.
    pub fn finished(&self, metrics: Option<&CardMetrics>) -> ModelCard {
        ModelCard {
            step: None,
            metrics_after: metrics.cloned(),
            ..self.clone()
        }
    }

    /// The base model is a Hugging Face id (not a local folder).
    fn base_is_hub_id(&self) -> bool {
        self.base_model_revision.is_some()
    }

    /// The card as Markdown with YAML front matter.
    pub fn render(&self) -> String {
        let mut s = String::new();
        self.front_matter(&mut s);
        self.details(&mut s);
        self.usage(&mut s);
        self.evaluation(&mut s);
        self.training(&mut s);
        let _ = writeln!(s, "## Framework Versions\n");
        let _ = writeln!(s, "- embtune: {}", self.embtune_version);
        s
    }

    fn front_matter(&self, s: &mut String) {
        s.push_str("---\n");
        s.push_str("library_name: sentence-transformers\n");
        s.push_str("pipeline_tag: sentence-similarity\n");
        s.push_str("tags:\n");
        let mut tags = vec![
            "sentence-transformers".to_string(),
            "sentence-similarity".into(),
            "feature-extraction".into(),
            "embtune".into(),
            format!("dataset_size:{}", self.rows),
            format!("loss:{}", self.loss_name),
        ];
        if self.lora.is_some() {
            tags.push("lora".into());
        }
        if self.kind == FolderKind::Adapter {
            tags.push("peft".into());
        }
        for t in tags {
            let _ = writeln!(s, "- {}", yaml_str(&t));
        }
        if !self.base_model.is_empty() {
            let _ = writeln!(s, "base_model: {}", yaml_str(&self.base_model));
        }
        s.push_str("---\n\n");
    }

    fn details(&self, s: &mut String) {
        let what = match self.kind {
            FolderKind::Adapter => "a LoRA adapter (PEFT) for a sentence-transformers model",
            _ => "a [sentence-transformers](https://www.SBERT.net) model",
        };
        let _ = writeln!(s, "# Sentence Transformer model fine-tuned with embtune\n");
        let _ = write!(s, "This folder holds {what}");
        if !self.base_model.is_empty() {
            let _ = write!(s, " fine-tuned from {}", self.base_markdown());
        }
        let _ = writeln!(
            s,
            " with embtune on {} rows of {}. It maps texts to a {}-dimensional dense vector space for semantic search, clustering and similarity.\n",
            thousands(self.rows),
            code(&self.data_path.to_string_lossy()),
            self.dimension
        );
        if let Some(step) = self.step {
            let _ = writeln!(s, "Saved at optimizer step {step}.\n");
        }
        let _ = writeln!(s, "## Model Details\n");
        let _ = writeln!(s, "- **Model type:** Sentence Transformer");
        if !self.base_model.is_empty() {
            let _ = writeln!(s, "- **Base model:** {}", self.base_markdown());
        }
        if let Some(t) = &self.model_type {
            let _ = writeln!(s, "- **Architecture (model_type):** {}", code(t));
        }
        let _ = writeln!(
            s,
            "- **Maximum sequence length:** {} tokens",
            self.max_seq_length
        );
        let _ = writeln!(
            s,
            "- **Output dimensionality:** {} dimensions",
            self.dimension
        );
        let _ = writeln!(
            s,
            "- **Pooling:** {}{}",
            code(&self.pooling),
            if self.normalized {
                ", then L2-normalized"
            } else {
                ""
            }
        );
        let _ = writeln!(s, "- **Similarity function:** cosine similarity");
        let _ = writeln!(
            s,
            "- **Training data:** {} ({} rows)",
            code(&self.data_path.to_string_lossy()),
            thousands(self.rows)
        );
        match self.kind {
            FolderKind::Adapter => {
                let _ = writeln!(s, "- **Folder:** PEFT LoRA adapter (`adapter_config.json`, `adapter_model.safetensors`); the base model's weights are not in it");
            }
            FolderKind::Merged => {
                let _ = writeln!(
                    s,
                    "- **Folder:** full model, LoRA adapters merged into the weights"
                );
            }
            FolderKind::Plain => {}
        }
        s.push('\n');
        if !self.modules.is_empty() {
            let _ = writeln!(s, "### Modules\n");
            for (i, m) in self.modules.iter().enumerate() {
                let _ = writeln!(s, "{i}. {m}");
            }
            s.push('\n');
        }
        if !self.prompts.is_empty() || self.query_prompt.is_some() || self.document_prompt.is_some()
        {
            let _ = writeln!(s, "### Prompts\n");
            if let Some(p) = &self.query_prompt {
                let _ = writeln!(
                    s,
                    "- Queries were trained with the prompt {}",
                    code(&cell(p))
                );
            }
            if let Some(p) = &self.document_prompt {
                let _ = writeln!(
                    s,
                    "- Documents were trained with the prompt {}",
                    code(&cell(p))
                );
            }
            if !self.prompts.is_empty() {
                let _ = writeln!(
                    s,
                    "\nThe model's named prompts (`config_sentence_transformers.json`):\n"
                );
                let _ = writeln!(s, "| name | prompt |\n| --- | --- |");
                for (name, p) in &self.prompts {
                    let _ = writeln!(s, "| {} | {} |", code(&cell(name)), code(&cell(p)));
                }
            }
            s.push('\n');
        }
    }

    fn base_markdown(&self) -> String {
        if self.base_is_hub_id() {
            let rev = self
                .base_model_revision
                .as_deref()
                .map(|r| format!(" (revision {})", code(r)))
                .unwrap_or_default();
            format!("[{0}](https://huggingface.co/{0}){rev}", self.base_model)
        } else {
            code(&self.base_model)
        }
    }

    fn usage(&self, s: &mut String) {
        let path = self.usage_path.as_deref().unwrap_or("path/to/this/folder");
        let _ = writeln!(s, "## Usage\n");
        let _ = writeln!(s, "Install sentence-transformers:\n\n```bash\npip install -U sentence-transformers{}\n```\n",
            if self.kind == FolderKind::Adapter { " peft" } else { "" });
        if self.kind == FolderKind::Adapter {
            let _ = writeln!(s, "This folder is a PEFT adapter: sentence-transformers loads the base model named by `adapter_config.json` (`base_model_name_or_path`) and then the adapter. The `peft` package must be installed.\n");
        }
        let _ = writeln!(
            s,
            "```python\nfrom sentence_transformers import SentenceTransformer\n"
        );
        let _ = writeln!(s, "model = SentenceTransformer({})", py_str(path));
        if self.kind == FolderKind::Adapter && !self.base_model.is_empty() {
            let _ = writeln!(
                s,
                "# or: the base model, then the adapter\n# model = SentenceTransformer({})\n# model.load_adapter({})",
                py_str(&self.base_model),
                py_str(path)
            );
        }
        let prompt = |p: &Option<String>| {
            p.as_deref()
                .map(|p| format!(", prompt={}", py_str(p)))
                .unwrap_or_default()
        };
        let _ = writeln!(
            s,
            "queries = [\"The weather is lovely today.\"]\ndocuments = [\"It's so sunny outside!\", \"He drove to the stadium.\"]"
        );
        let _ = writeln!(
            s,
            "query_embeddings = model.encode(queries{})",
            prompt(&self.query_prompt)
        );
        let _ = writeln!(
            s,
            "document_embeddings = model.encode(documents{})",
            prompt(&self.document_prompt)
        );
        let _ = writeln!(
            s,
            "print(document_embeddings.shape)\n# (2, {})",
            self.dimension
        );
        let _ = writeln!(
            s,
            "print(model.similarity(query_embeddings, document_embeddings))\n```\n"
        );
    }

    fn evaluation(&self, s: &mut String) {
        let before = self.metrics_before.as_ref().filter(|m| !m.is_empty());
        let after = self.metrics_after.as_ref().filter(|m| !m.is_empty());
        if before.is_none() && after.is_none() {
            return;
        }
        let _ = writeln!(s, "## Evaluation\n");
        let after_title = match self.step {
            Some(step) => format!("At step {step}"),
            None => "After training".to_string(),
        };
        let mut names: Vec<&String> = before
            .iter()
            .chain(after.iter())
            .flat_map(|m| m.keys())
            .collect();
        names.sort();
        names.dedup();
        let value = |m: Option<&CardMetrics>, k: &String| {
            m.and_then(|m| m.get(k))
                .map(|v| metric(*v))
                .unwrap_or_else(|| "-".into())
        };
        match (before, after) {
            (Some(_), Some(_)) => {
                let _ = writeln!(
                    s,
                    "| Metric | Before training | {after_title} |\n| --- | ---: | ---: |"
                );
                for k in names {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} |",
                        cell(k),
                        value(before, k),
                        value(after, k)
                    );
                }
            }
            (Some(_), None) => {
                let _ = writeln!(s, "| Metric | Before training |\n| --- | ---: |");
                for k in names {
                    let _ = writeln!(s, "| {} | {} |", cell(k), value(before, k));
                }
            }
            (None, _) => {
                let _ = writeln!(s, "| Metric | {after_title} |\n| --- | ---: |");
                for k in names {
                    let _ = writeln!(s, "| {} | {} |", cell(k), value(after, k));
                }
            }
        }
        s.push('\n');
    }

    fn training(&self, s: &mut String) {
        let h = &self.hyper;
        let _ = writeln!(s, "## Training Details\n");
        let _ = writeln!(s, "### Training Data\n");
        let _ = writeln!(s, "- File: {}", code(&self.data_path.to_string_lossy()));
        let _ = writeln!(s, "- Size: {} training rows\n", thousands(self.rows));
        let _ = writeln!(s, "### Loss\n");
        let _ = write!(s, "{}", code(&self.loss_name));
        if let Some(sum) = &self.loss_summary {
            let _ = write!(s, " ({sum})");
        }
        if self.loss_options.is_empty() {
            let _ = writeln!(s, " with its default options.\n");
        } else {
            let _ = writeln!(s, " with these options:\n");
            for (k, v) in &self.loss_options {
                let _ = writeln!(s, "- {}: {}", code(k), code(v));
            }
            s.push('\n');
        }
        let _ = writeln!(s, "### Training Hyperparameters\n");
        let mut rows: Vec<(&str, String)> = vec![
            ("epochs", h.epochs.to_string()),
            ("batch_size", h.batch_size.to_string()),
            ("gradient_accumulation_steps", h.grad_accum.to_string()),
            ("learning_rate", number(h.learning_rate)),
            ("warmup_ratio", number(h.warmup_ratio)),
            ("weight_decay", number(h.weight_decay)),
            ("max_grad_norm", number(h.max_grad_norm)),
            ("seed", h.seed.to_string()),
            (
                "max_steps",
                h.max_steps.map_or("none".to_string(), |n| n.to_string()),
            ),
            ("precision", h.precision.clone()),
            ("dedupe_in_batch", h.dedupe.to_string()),
            (
                "gradient_checkpointing",
                h.gradient_checkpointing.to_string(),
            ),
        ];
        if let Some(d) = h.dropout {
            rows.push(("dropout", number(d)));
        }
        if let Some(l) = &self.lora {
            rows.push((
                "lora",
                format!(
                    "r={} alpha={} dropout={} targets={}",
                    l.r,
                    number(l.alpha),
                    number(l.dropout),
                    l.targets.join(",")
                ),
            ));
        }
        for (k, v) in rows {
            let _ = writeln!(s, "- `{k}`: {v}");
        }
        s.push('\n');
    }

    /// Writes the card as `dir/README.md`, through a temporary name renamed into place.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(CARD_FILE);
        let tmp = dir.join(format!(".{CARD_FILE}.tmp-{}", std::process::id()));
        std::fs::write(&tmp, self.render()).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(&path, e)
        })
    }
}

#[cfg(feature = "torch")]
impl ModelCard {
    /// The card of a training run, from what the trainer holds: its config, the encoder
    /// being trained (after `--lora` and `--max-seq-length` were applied), the number of
    /// rows of the data file and the loss options given (`--loss-opt key=value`, which
    /// `TrainConfig` does not carry). The folder kind, usage path, step and metrics are set
    /// later, per folder ([`Self::for_folder`], [`Self::at_step`], [`Self::finished`];
    /// `train::checkpoint::save_model_with_card` sets the kind and path itself), and
    /// `metrics_before` by the caller when the run evaluated before training.
    pub fn from_train(
        cfg: &crate::train::TrainConfig,
        encoder: &crate::encoder::SentenceEncoder,
        rows: usize,
        loss_options: &[(String, String)],
    ) -> ModelCard {
        // An adapter's base is the model under it; a hub snapshot is named by its id.
        let base_dir = encoder
            .lora()
            .map(|l| l.base_model().to_path_buf())
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| cfg.model.clone());
        let (base_model, base_model_revision) = match hub_id_from_cache_path(&base_dir) {
            Some((id, commit)) => (id, Some(commit)),
            None => (base_dir.to_string_lossy().into_owned(), None),
        };
        let loss_summary = crate::registry::loss_infos()
            .ok()
            .and_then(|all| all.into_iter().find(|l| l.name == cfg.loss_name))
            .map(|l| l.summary.to_string());
        let lora = encoder.lora().map(|l| {
            let c = l.config();
            CardLora {
                r: c.r,
                alpha: c.alpha,
                dropout: c.dropout,
                targets: c
                    .targets
                    .clone()
                    .or_else(|| {
                        encoder
                            .model_type()
                            .and_then(crate::lora::default_targets)
                            .map(|t| t.iter().map(|m| m.to_string()).collect())
                    })
                    .unwrap_or_else(|| l.modules().iter().map(|m| m.to_string()).collect()),
            }
        });
        let modes: Vec<&str> = encoder.pooling().modes.iter().map(|m| m.name()).collect();
        ModelCard {
            base_model,
            base_model_revision,
            model_type: encoder.model_type().map(str::to_string),
            modules: encoder.module_lines(),
            dimension: encoder.dimension(),
            max_seq_length: encoder.max_seq_length(),
            pooling: modes.join("+"),
            normalized: encoder.normalizes(),
            prompts: encoder.prompts().clone(),
            query_prompt: cfg.query_prompt.clone().filter(|p| !p.is_empty()),
            document_prompt: cfg.document_prompt.clone().filter(|p| !p.is_empty()),
            loss_name: cfg.loss_name.clone(),
            loss_summary,
            loss_options: loss_options.to_vec(),
            data_path: cfg.data.clone(),
            rows,
            hyper: HyperParameters {
                epochs: cfg.epochs,
                batch_size: cfg.batch_size,
                grad_accum: cfg.grad_accum,
                learning_rate: cfg.optimizer.lr,
                warmup_ratio: cfg.warmup_ratio,
                weight_decay: cfg.optimizer.weight_decay,
                max_grad_norm: cfg.max_grad_norm,
                seed: cfg.seed,
                max_steps: cfg.max_steps,
                precision: match cfg.precision {
                    crate::encoder::Precision::Fp32 => "fp32".into(),
                    crate::encoder::Precision::Bf16 => "bf16".into(),
                },
                dedupe: cfg.dedupe,
                gradient_checkpointing: cfg.gradient_checkpointing,
                dropout: cfg.dropout,
            },
            lora,
            kind: FolderKind::Plain,
            usage_path: None,
            step: None,
            metrics_before: None,
            metrics_after: None,
            embtune_version: crate::VERSION.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> ModelCard {
        ModelCard {
            base_model: "sentence-transformers/all-MiniLM-L6-v2".into(),
            base_model_revision: Some("c9745ed1d9f207416be6d2e6f8de32d1f16199bf".into()),
            model_type: Some("bert".into()),
            modules: vec![
                "Transformer (bert, max 256 tokens)".into(),
                "Pooling (mean, 384 -> 384)".into(),
                "Normalize".into(),
            ],
            dimension: 384,
            max_seq_length: 256,
            pooling: "mean".into(),
            normalized: true,
            prompts: BTreeMap::from([("query".to_string(), "query: ".to_string())]),
            query_prompt: Some("query: ".into()),
            document_prompt: None,
            loss_name: "mnrl".into(),
            loss_summary: Some("MultipleNegativesRankingLoss: InfoNCE".into()),
            loss_options: vec![("scale".into(), "20".into())],
            data_path: PathBuf::from("out/data/all_supervised.csv"),
            rows: 12345,
            hyper: HyperParameters {
                learning_rate: 2e-5,
                max_steps: Some(100),
                ..HyperParameters::default()
            },
            lora: None,
            kind: FolderKind::Plain,
            usage_path: Some("out/model/final".into()),
            step: None,
            metrics_before: Some(CardMetrics::from([
                ("cosine_ndcg@10".to_string(), 0.51234),
                ("cosine_mrr@10".to_string(), 0.4),
            ])),
            metrics_after: Some(CardMetrics::from([
                ("cosine_ndcg@10".to_string(), 0.73456),
                ("cosine_mrr@10".to_string(), 0.65),
            ])),
            embtune_version: "0.1.0".into(),
        }
    }

    /// The front matter's lines between the `---` fences, and the body after them.
    fn split(md: &str) -> (Vec<&str>, &str) {
        let rest = md.strip_prefix("---\n").expect("starts with ---");
        let end = rest.find("\n---\n").expect("closing ---");
        (rest[..end].lines().collect(), &rest[end + 5..])
    }

    /// Parses the front matter's subset of YAML that cards use (`key: scalar`, `key:` then
    /// `- scalar` items; scalars plain or double-quoted) into key -> values, failing on any
    /// other line; a quoted scalar must be a valid YAML/JSON double-quoted string.
    fn parse_front_matter(lines: &[&str]) -> BTreeMap<String, Vec<String>> {
        let scalar = |v: &str| -> String {
            if v.starts_with('"') {
                serde_json::from_str::<String>(v).unwrap_or_else(|e| panic!("bad scalar {v}: {e}"))
            } else {
                assert!(
                    !v.is_empty()
                        && !v.contains(": ")
                        && !v.starts_with(['-', '[', '{', '\'', '#']),
                    "unsafe plain scalar {v:?}"
                );
                v.to_string()
            }
        };
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut list: Option<String> = None;
        for l in lines {
            if let Some(item) = l.strip_prefix("- ") {
                let key = list
                    .clone()
                    .unwrap_or_else(|| panic!("list item outside a list: {l}"));
                out.get_mut(&key).unwrap().push(scalar(item));
            } else if let Some(key) = l.strip_suffix(':') {
                assert!(!out.contains_key(key), "duplicate key {key}");
                out.insert(key.to_string(), vec![]);
                list = Some(key.to_string());
            } else {
                let (k, v) = l
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("not YAML: {l:?}"));
                assert!(!k.contains(' ') && !out.contains_key(k), "bad key {k}");
                out.insert(k.to_string(), vec![scalar(v)]);
                list = None;
            }
        }
        out
    }

    #[test]
    fn front_matter_is_valid_and_names_library_tags_and_base() {
        let md = card().render();
        let (lines, _) = split(&md);
        let fm = parse_front_matter(&lines);
        assert_eq!(fm["library_name"], ["sentence-transformers"]);
        assert_eq!(fm["pipeline_tag"], ["sentence-similarity"]);
        assert_eq!(fm["base_model"], ["sentence-transformers/all-MiniLM-L6-v2"]);
        for t in [
            "sentence-transformers",
            "sentence-similarity",
            "feature-extraction",
            "embtune",
            "dataset_size:12345",
            "loss:mnrl",
        ] {
            assert!(
                fm["tags"].iter().any(|x| x == t),
                "tag {t}: {:?}",
                fm["tags"]
            );
        }
        assert!(!fm["tags"].iter().any(|x| x == "peft" || x == "lora"));
    }

    #[test]
    fn awkward_strings_stay_valid_yaml_and_markdown() {
        let mut c = card();
        c.base_model = "/data/models/my \"best\": model #1\n".into();
        c.base_model_revision = None;
        c.loss_name = "my-loss".into();
        let md = c.render();
        let (lines, body) = split(&md);
        let fm = parse_front_matter(&lines);
        assert_eq!(fm["base_model"], [c.base_model.as_str()]);
        // A local folder is not linked to the hub.
        assert!(!body.contains("huggingface.co//data"), "{body}");
        assert!(
            body.contains("- **Base model:** `/data/models/my \"best\": model #1 `"),
            "{body}"
        );
    }

    #[test]
    fn body_has_every_section_and_fact() {
        let md = card().render();
        let (_, body) = split(&md);
        for needle in [
            "# Sentence Transformer model fine-tuned with embtune",
            "fine-tuned from [sentence-transformers/all-MiniLM-L6-v2](https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2) (revision `c9745ed1d9f207416be6d2e6f8de32d1f16199bf`)",
            "on 12,345 rows of `out/data/all_supervised.csv`",
            "384-dimensional dense vector space",
            "## Model Details",
            "- **Architecture (model_type):** `bert`",
            "- **Maximum sequence length:** 256 tokens",
            "- **Output dimensionality:** 384 dimensions",
            "- **Pooling:** `mean`, then L2-normalized",
            "- **Training data:** `out/data/all_supervised.csv` (12,345 rows)",
            "### Modules\n\n0. Transformer (bert, max 256 tokens)\n1. Pooling (mean, 384 -> 384)\n2. Normalize\n",
            "### Prompts",
            "- Queries were trained with the prompt `query: `",
            "| `query` | `query: ` |",
            "## Usage",
            "pip install -U sentence-transformers\n",
            "from sentence_transformers import SentenceTransformer",
            "model = SentenceTransformer(\"out/model/final\")",
            "query_embeddings = model.encode(queries, prompt=\"query: \")",
            "document_embeddings = model.encode(documents)\n",
            "# (2, 384)",
            "## Evaluation",
            "## Training Details",
            "- Size: 12,345 training rows",
            "`mnrl` (MultipleNegativesRankingLoss: InfoNCE) with these options:\n\n- `scale`: `20`",
            "- `epochs`: 1",
            "- `batch_size`: 8",
            "- `gradient_accumulation_steps`: 1",
            "- `learning_rate`: 2e-5",
            "- `warmup_ratio`: 0.1",
            "- `weight_decay`: 0",
            "- `max_grad_norm`: 1",
            "- `seed`: 42",
            "- `max_steps`: 100",
            "- `precision`: fp32",
            "## Framework Versions\n\n- embtune: 0.1.0\n",
        ] {
            assert!(body.contains(needle), "missing {needle:?} in\n{body}");
        }
        assert!(!body.contains("lora"), "{body}");
        assert!(!body.contains("Saved at optimizer step"), "{body}");
        // Sections in the template's order.
        let at = |h: &str| body.find(h).unwrap();
        assert!(at("## Model Details") < at("## Usage"));
        assert!(at("## Usage") < at("## Evaluation"));
        assert!(at("## Evaluation") < at("## Training Details"));
        assert!(at("## Training Details") < at("## Framework Versions"));
    }

    #[test]
    fn metrics_table_before_and_after() {
        let md = card().render();
        assert!(
            md.contains(
                "| Metric | Before training | After training |\n| --- | ---: | ---: |\n\
             | cosine_mrr@10 | 0.4000 | 0.6500 |\n\
             | cosine_ndcg@10 | 0.5123 | 0.7346 |\n"
            ),
            "{md}"
        );

        // A checkpoint: the metrics at its step, a metric only one side has shows "-".
        let mut m = CardMetrics::from([("cosine_ndcg@10".to_string(), 0.6)]);
        m.insert("extra".into(), 1.0);
        let md = card().at_step(50, Some(&m)).render();
        assert!(md.contains("Saved at optimizer step 50."), "{md}");
        assert!(
            md.contains("| Metric | Before training | At step 50 |"),
            "{md}"
        );
        assert!(md.contains("| extra | - | 1.0000 |"), "{md}");
        assert!(md.contains("| cosine_mrr@10 | 0.4000 | - |"), "{md}");
    }

    #[test]
    fn no_after_section_when_unknown() {
        let md = card().at_step(30, None).render();
        assert!(
            md.contains(
                "| Metric | Before training |\n| --- | ---: |\n| cosine_mrr@10 | 0.4000 |\n"
            ),
            "{md}"
        );
        assert!(
            !md.contains("After training") && !md.contains("At step"),
            "{md}"
        );

        let mut c = card();
        c.metrics_before = None;
        c.metrics_after = None;
        let md = c.render();
        assert!(!md.contains("## Evaluation"), "{md}");
        let md = c
            .finished(Some(&CardMetrics::from([("acc".to_string(), 0.5)])))
            .render();
        assert!(
            md.contains("| Metric | After training |\n| --- | ---: |\n| acc | 0.5000 |"),
            "{md}"
        );
    }

    #[test]
    fn adapter_and_merged_folders() {
        let mut c = card();
        c.lora = Some(CardLora {
            r: 8,
            alpha: 16.0,
            dropout: 0.05,
            targets: vec!["query".into(), "value".into()],
        });
        let a = c.for_folder(FolderKind::Adapter, Path::new("out/checkpoint-10"));
        let md = a.render();
        let (lines, body) = split(&md);
        let tags = &parse_front_matter(&lines)["tags"];
        assert!(tags.iter().any(|t| t == "peft") && tags.iter().any(|t| t == "lora"));
        for needle in [
            "This folder holds a LoRA adapter (PEFT)",
            "pip install -U sentence-transformers peft",
            "This folder is a PEFT adapter",
            "model = SentenceTransformer(\"out/checkpoint-10\")",
            "# model = SentenceTransformer(\"sentence-transformers/all-MiniLM-L6-v2\")\n# model.load_adapter(\"out/checkpoint-10\")",
            "- `lora`: r=8 alpha=16 dropout=0.05 targets=query,value",
            "PEFT LoRA adapter (`adapter_config.json`, `adapter_model.safetensors`)",
        ] {
            assert!(body.contains(needle), "missing {needle:?} in\n{body}");
        }
        let m = c
            .for_folder(FolderKind::Merged, Path::new("out/final"))
            .render();
        assert!(m.contains("LoRA adapters merged into the weights"), "{m}");
        assert!(
            !m.contains("load_adapter") && !m.contains("- \"peft\""),
            "{m}"
        );
        assert!(m.contains("- \"lora\""), "{m}");
    }

    #[test]
    fn number_formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(number(5e-5), "5e-5");
        assert_eq!(number(3e-4), "3e-4");
        assert_eq!(number(0.01), "0.01");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(1.0), "1");
        assert_eq!(metric(0.73456), "0.7346");
    }

    #[test]
    fn hub_ids_from_cache_paths() {
        assert_eq!(
            hub_id_from_cache_path(Path::new(
                "/home/u/.cache/huggingface/hub/models--BAAI--bge-m3/snapshots/abc123"
            )),
            Some(("BAAI/bge-m3".into(), "abc123".into()))
        );
        assert_eq!(
            hub_id_from_cache_path(Path::new("models/all-MiniLM-L6-v2")),
            None
        );
        assert_eq!(hub_id_from_cache_path(Path::new("x/snapshots/abc")), None);
        assert_eq!(
            hub_id_from_cache_path(Path::new("models--a--b--c/snapshots/abc")),
            None
        );
    }

    #[test]
    fn write_is_atomic_and_replaces() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(CARD_FILE), "old").unwrap();
        card().write(tmp.path()).unwrap();
        let text = std::fs::read_to_string(tmp.path().join(CARD_FILE)).unwrap();
        assert_eq!(text, card().render());
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [CARD_FILE]);
        let e = card().write(&tmp.path().join("absent")).unwrap_err();
        assert!(e.to_string().contains("absent"), "{e}");
    }
}
