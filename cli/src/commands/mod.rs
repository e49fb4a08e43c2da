//! One module per subcommand.
pub mod checks;
#[cfg(feature = "torch")]
pub mod doctor;
#[cfg(feature = "torch")]
pub mod encode;
#[cfg(feature = "torch")]
pub mod eval;
pub mod fetch_model;
pub mod gen;
#[cfg(feature = "torch")]
pub mod launch;
pub mod list;
#[cfg(feature = "torch")]
pub mod mine;
#[cfg(feature = "torch")]
pub mod ranks;
#[cfg(feature = "torch")]
pub mod score;
#[cfg(feature = "torch")]
pub mod train;

#[cfg(feature = "torch")]
pub use torch_args::*;

/// Arguments and helpers shared by the libtorch commands (train, eval, encode, score).
#[cfg(feature = "torch")]
mod torch_args {
    use std::path::{Path, PathBuf};

    use clap::Args;
    use embtune_core::encoder::Precision;
    use tch::Device;

    /// The model folder `--model` names: a folder as given, a Hugging Face id
    /// (`owner/name[@revision]`) through the Hugging Face cache, downloaded when missing
    /// (embtune_core::hub, configured by HF_HUB_CACHE, HF_HOME, HF_ENDPOINT, HF_TOKEN and
    /// HF_HUB_OFFLINE), or without `--model` the embedded default model, which must be
    /// provisioned. Every command that reads a model resolves it here.
    pub fn resolve_model(model: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
        match model {
            Some(m) => Ok(embtune_core::hub::resolve_model(
                m,
                &embtune_core::hub::HubConfig::from_env(),
            )?),
            None => {
                let d = embtune_core::default_model::default_model_dir();
                if !d.join("model.safetensors").is_file() {
                    let m = embtune_core::default_model::ModelsDir::from_env();
                    anyhow::bail!(
                        "the default model is missing at {} (models folder from {}); run `embtune fetch-model` or pass --model DIR (a folder or a Hugging Face id)",
                        d.display(),
                        m.from
                    );
                }
                Ok(d)
            }
        }
    }

    /// `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.
    pub fn resolve_device(s: &str) -> anyhow::Result<Device> {
        let cuda = |i: usize| -> anyhow::Result<Device> {
            if !tch::Cuda::is_available() {
                anyhow::bail!("--device {s}: CUDA is not available here (see `embtune doctor`); use --device cpu");
            }
            let n = tch::Cuda::device_count() as usize;
            if i >= n {
                anyhow::bail!("--device {s}: only {n} CUDA device(s) present");
            }
            Ok(Device::Cuda(i))
        };
        match s {
            "auto" => Ok(Device::cuda_if_available()),
            "cpu" => Ok(Device::Cpu),
            "cuda" => cuda(0),
            _ => match s.strip_prefix("cuda:").and_then(|i| i.parse().ok()) {
                Some(i) => cuda(i),
                None => anyhow::bail!("unknown --device '{s}'; use auto, cpu, cuda or cuda:N"),
            },
        }
    }

    /// `auto` (bf16 on CUDA, fp32 on CPU), `fp32` or `bf16` (CUDA only).
    pub fn resolve_precision(s: &str, device: Device) -> anyhow::Result<Precision> {
        match (s, device) {
            ("auto", Device::Cpu) | ("fp32", _) => Ok(Precision::Fp32),
            ("auto", _) | ("bf16", Device::Cuda(_)) => Ok(Precision::Bf16),
            ("bf16", _) => {
                anyhow::bail!("--precision bf16 needs a CUDA device; use --precision fp32 on CPU")
            }
            (other, _) => anyhow::bail!("unknown --precision '{other}'; use auto, fp32 or bf16"),
        }
    }

    /// Query and document prompts: literal text or a prompt name of the model.
    #[derive(Args, Debug, Clone, Default)]
    pub struct PromptArgs {
        /// Text prepended to queries/anchors.
        #[arg(long, conflicts_with = "query_prompt_name")]
        pub query_prompt: Option<String>,
        /// Name of one of the model's prompts for queries (config_sentence_transformers.json).
        #[arg(long)]
        pub query_prompt_name: Option<String>,
        /// Text prepended to documents (positives, negatives, corpus).
        #[arg(long, conflicts_with = "document_prompt_name")]
        pub document_prompt: Option<String>,
        /// Name of one of the model's prompts for documents.
        #[arg(long)]
        pub document_prompt_name: Option<String>,
    }

    impl PromptArgs {
        /// The (query, document) prompt strings; a name must be one of the model's prompts.
        pub fn resolve(&self, model: &Path) -> anyhow::Result<(String, String)> {
            let pick = |lit: &Option<String>, name: &Option<String>| -> anyhow::Result<String> {
                match (lit, name) {
                    (Some(l), _) => Ok(l.clone()),
                    (None, Some(n)) => model_prompt(model, n),
                    (None, None) => Ok(String::new()),
                }
            };
            Ok((
                pick(&self.query_prompt, &self.query_prompt_name)?,
                pick(&self.document_prompt, &self.document_prompt_name)?,
            ))
        }
    }

    /// The prompt called `name` in the model's config_sentence_transformers.json.
    pub fn model_prompt(model: &Path, name: &str) -> anyhow::Result<String> {
        let config = embtune_core::encoder::folder::read_json_opt(
            &model.join("config_sentence_transformers.json"),
        )?;
        let prompts: std::collections::BTreeMap<String, String> = config
            .and_then(|c| c.get("prompts").cloned())
            .and_then(|p| serde_json::from_value(p).ok())
            .unwrap_or_default();
        prompts.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = prompts.keys().map(String::as_str).collect();
            anyhow::anyhow!(
                "unknown prompt name '{name}' for {}; the model's prompts are: {}",
                model.display(),
                if known.is_empty() {
                    "(none)".to_string()
                } else {
                    known.join(", ")
                }
            )
        })
    }
}
