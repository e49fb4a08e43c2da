//! `cached-gist`: CachedGISTEmbedLoss, GISTEmbedLoss trained with gradient caching
//! (GradCache, Gao et al. 2021) like `cached-mnrl`. The value and its gradient with respect to
//! the embeddings are those of `gist` ([`gist_loss`](crate::gist::gist_loss)); the trainer
//! embeds the batch in mini-batches without a graph ([`ContrastiveLoss::mini_batch_size`]),
//! calls [`forward`](ContrastiveLoss::forward) once on the detached embeddings of the whole
//! batch, then re-embeds each mini-batch with a graph and backpropagates the cached gradient.
//! The guide embeds in mini-batches of the same size, so its memory stays flat too.
//! Follows `sentence_transformers/sentence_transformer/losses/cached_gist_embed.py` (6.0.1),
//! `calculate_loss` (the reference also chunks the score matrix by rows; the sum is the same
//! up to rounding).

use embtune_core::register_loss;
#[cfg(feature = "torch")]
use embtune_core::{ContrastiveLoss, Error, LossBatch, LossInputs, Result};
use serde::{Deserialize, Serialize};
#[cfg(feature = "torch")]
use tch::Tensor;

#[cfg(feature = "torch")]
use crate::gist::{gist_loss_named, Guide};
use crate::gist::{gist_options_doc, GistConfig};
#[cfg(feature = "torch")]
use crate::loss_math::check_columns;

/// Options of `cached-gist`: those of `gist` plus the reference's mini-batch options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CachedGistConfig {
    /// Texts embedded per forward pass (with a graph, and by the guide); bounds memory.
    pub mini_batch_size: usize,
    /// Token budget of a mini-batch (non-padding tokens); None: `mini_batch_size` texts.
    pub mini_batch_num_tokens: Option<i64>,
    /// The GIST options, as `gist`.
    #[serde(flatten)]
    pub gist: GistConfig,
}

impl Default for CachedGistConfig {
    fn default() -> Self {
        CachedGistConfig {
            mini_batch_size: 32,
            mini_batch_num_tokens: None,
            gist: GistConfig::default(),
        }
    }
}

/// The `cached-gist` loss.
#[cfg(feature = "torch")]
pub struct CachedGist {
    mini_batch_size: usize,
    mini_batch_num_tokens: Option<usize>,
    cfg: GistConfig,
    guide: Guide,
}

#[cfg(feature = "torch")]
impl CachedGist {
    /// Builds the loss from its options; the guide loads in `to_device` (or the first forward).
    pub fn new(cfg: CachedGistConfig) -> Result<Self> {
        let invalid = |message: &str| Error::PluginConfig {
            kind: "loss",
            plugin: "cached-gist".to_string(),
            message: message.to_string(),
        };
        if cfg.mini_batch_size == 0 {
            return Err(invalid("mini_batch_size must be at least 1"));
        }
        let mini_batch_num_tokens =
            crate::cached_mnrl::checked_num_tokens("cached-gist", cfg.mini_batch_num_tokens)?;
        cfg.gist.validate("cached-gist")?;
        let guide = Guide::new(
            "cached-gist",
            cfg.gist.guide.clone(),
            Some(cfg.mini_batch_size),
        );
        Ok(CachedGist {
            mini_batch_size: cfg.mini_batch_size,
            mini_batch_num_tokens,
            cfg: cfg.gist,
            guide,
        })
    }
}

#[cfg(feature = "torch")]
impl ContrastiveLoss for CachedGist {
    fn inputs(&self) -> LossInputs {
        LossInputs::Texts { min: 2, max: None }
    }

    /// The value of `gist` on the same embeddings and guide embeddings.
    fn forward(&self, batch: &LossBatch<'_>) -> Result<Tensor> {
        check_columns("cached-gist", batch.embeddings, 2, None)?;
        let guide = self.guide.embed(batch, batch.embeddings[0].device())?;
        gist_loss_named(
            "cached-gist",
            &self.cfg,
            batch.embeddings,
            &guide,
            batch.duplicate_mask,
        )
    }

    fn mini_batch_size(&self) -> Option<usize> {
        Some(self.mini_batch_size)
    }

    fn mini_batch_num_tokens(&self) -> Option<usize> {
        self.mini_batch_num_tokens
    }

    fn needs_texts(&self) -> bool {
        true
    }

    fn to_device(&mut self, device: tch::Device) -> Result<()> {
        self.guide.load(device)
    }
}

register_loss!(
    name: "cached-gist",
    summary: "GISTEmbedLoss with gradient caching (GradCache): guided negatives at large batch sizes in flat memory",
    long: concat!(
        "CachedGISTEmbedLoss: the value and gradients of `gist`, trained with gradient caching as
`cached-mnrl`: the batch is embedded in mini-batches without a graph (the guide embeds in
mini-batches too), the loss gradient w.r.t. the embeddings is cached, then each mini-batch
is embedded again with a graph (dropout replayed) and backpropagated. Large batches give
GIST many in-batch negatives; the guide keeps the false ones out. KURE-v1 was trained from
BAAI/bge-m3 this way, guided by bge-m3 itself.
  mini_batch_size=32       texts per forward pass (the model's with a graph, and the guide's)
  mini_batch_num_tokens=null  pack mini-batches by non-padding token count instead
",
        gist_options_doc!()
    ),
    config: CachedGistConfig,
    build: |c| Ok(Box::new(CachedGist::new(c)?)),
);

#[cfg(all(test, feature = "torch"))]
mod tests {
    use super::*;
    use embtune_core::testing;

    #[test]
    fn defaults_and_checks() {
        let c = testing::build::<dyn ContrastiveLoss>("cached-gist", &[]).unwrap();
        assert_eq!(c.mini_batch_size(), Some(32));
        assert_eq!(c.mini_batch_num_tokens(), None);
        assert!(c.needs_texts());
        let c = testing::build::<dyn ContrastiveLoss>(
            "cached-gist",
            &[
                "guide=BAAI/bge-m3",
                "mini_batch_size=4",
                "mini_batch_num_tokens=512",
                "margin_strategy=relative",
                "margin=0.05",
                "contrast_positives=false",
            ],
        )
        .unwrap();
        assert_eq!(c.mini_batch_size(), Some(4));
        assert_eq!(c.mini_batch_num_tokens(), Some(512));
        for bad in [
            "mini_batch_size=0",
            "mini_batch_num_tokens=0",
            "temperature=-1",
        ] {
            assert!(
                testing::build::<dyn ContrastiveLoss>("cached-gist", &[bad]).is_err(),
                "{bad}"
            );
        }
        let e = testing::build::<dyn ContrastiveLoss>("cached-gist", &["minibatch=4"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("mini_batch_size") && e.contains("guide") && e.contains("temperature"),
            "{e}"
        );
        let mut c = testing::build::<dyn ContrastiveLoss>("cached-gist", &[]).unwrap();
        let e = c.to_device(tch::Device::Cpu).unwrap_err().to_string();
        assert!(
            e.contains("loss 'cached-gist'") && e.contains("guide"),
            "{e}"
        );
    }
}
