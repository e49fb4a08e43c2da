//! `cached-mnrl`: CachedMultipleNegativesRankingLoss (GradCache, Gao et al. 2021). The loss
//! value and its gradient with respect to the embeddings are those of `mnrl`; what differs is
//! how the trainer runs it: [`ContrastiveLoss::mini_batch_size`] returns the mini-batch size,
//! and the trainer embeds the batch in mini-batches without a graph, calls
//! [`forward`](ContrastiveLoss::forward) on the detached embeddings to get the gradient
//! w.r.t. them, then re-embeds each mini-batch with a graph (replaying dropout) and
//! backpropagates `dot(embedding, cached_grad)`. Memory stays flat in the batch size.
//! Follows `sentence_transformers/sentence_transformer/losses/cached_multiple_negatives_ranking.py`.

use embtune_core::register_loss;
#[cfg(feature = "torch")]
use embtune_core::{ContrastiveLoss, Error, LossBatch, LossInputs, Result};
use serde::{Deserialize, Serialize};
#[cfg(feature = "torch")]
use tch::Tensor;

#[cfg(feature = "torch")]
use crate::mnrl::Ranking;
use crate::mnrl::{ranking_options_doc, MnrlConfig};

/// Options of `cached-mnrl`: those of `mnrl` plus the mini-batch size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CachedMnrlConfig {
    /// Texts embedded per forward pass with a graph; bounds activation memory.
    pub mini_batch_size: usize,
    /// Token budget of a mini-batch (null: off): consecutive texts are packed while their
    /// real token count stays within it, instead of `mini_batch_size` texts each (see
    /// `embtune_core::train::minibatch_ranges`). Must be > 0.
    pub mini_batch_num_tokens: Option<i64>,
    /// The ranking options, as `mnrl`.
    #[serde(flatten)]
    pub ranking: MnrlConfig,
}

impl Default for CachedMnrlConfig {
    fn default() -> Self {
        CachedMnrlConfig {
            mini_batch_size: 32,
            mini_batch_num_tokens: None,
            ranking: MnrlConfig::default(),
        }
    }
}

/// The `cached-mnrl` loss.
#[cfg(feature = "torch")]
pub struct CachedMnrl {
    mini_batch_size: usize,
    mini_batch_num_tokens: Option<usize>,
    ranking: Ranking,
}

#[cfg(feature = "torch")]
impl CachedMnrl {
    /// Builds the loss from its options.
    pub fn new(cfg: CachedMnrlConfig) -> Result<Self> {
        if cfg.mini_batch_size == 0 {
            return Err(Error::PluginConfig {
                kind: "loss",
                plugin: "cached-mnrl".to_string(),
                message: "mini_batch_size must be at least 1".to_string(),
            });
        }
        Ok(CachedMnrl {
            mini_batch_size: cfg.mini_batch_size,
            mini_batch_num_tokens: checked_num_tokens("cached-mnrl", cfg.mini_batch_num_tokens)?,
            ranking: Ranking::new(&cfg.ranking, "cached-mnrl")?,
        })
    }
}

#[cfg(feature = "torch")]
impl ContrastiveLoss for CachedMnrl {
    fn inputs(&self) -> LossInputs {
        LossInputs::Texts { min: 2, max: None }
    }

    /// The same value as `mnrl` on the same embeddings (the reference chunks this computation
    /// by rows of the score matrix; the sum is the same up to rounding).
    fn forward(&self, batch: &LossBatch<'_>) -> Result<Tensor> {
        self.ranking.loss("cached-mnrl", batch)
    }

    fn mini_batch_size(&self) -> Option<usize> {
        Some(self.mini_batch_size)
    }

    fn mini_batch_num_tokens(&self) -> Option<usize> {
        self.mini_batch_num_tokens
    }
}

/// Validates a `mini_batch_num_tokens` option as sentence-transformers'
/// `_validate_mini_batch_num_tokens` does (`base/losses/gradcache.py`): null or a positive
/// integer. `loss` names the loss in the error.
#[cfg(feature = "torch")]
pub fn checked_num_tokens(loss: &str, value: Option<i64>) -> Result<Option<usize>> {
    match value {
        None => Ok(None),
        Some(n) if n > 0 => Ok(Some(n as usize)),
        Some(n) => Err(Error::PluginConfig {
            kind: "loss",
            plugin: loss.to_string(),
            message: format!(
                "mini_batch_num_tokens must be a positive integer (a token budget per mini-batch) or null (off), got {n}"
            ),
        }),
    }
}

register_loss!(
    name: "cached-mnrl",
    summary: "MNRL with gradient caching (GradCache): large batches in flat memory, about 2x slower",
    long: concat!(
        "CachedMultipleNegativesRankingLoss: the value and gradients of `mnrl`, trained with
gradient caching: the batch is embedded in mini-batches without a graph, the loss gradient
w.r.t. the embeddings is cached, then each mini-batch is embedded again with a graph (dropout
replayed) and backpropagated. Use it for batches that do not fit in memory with `mnrl`.
  mini_batch_size=32       texts per forward pass with a graph
  mini_batch_num_tokens=null
                           token budget per mini-batch instead (sentence-transformers >= 5.7):
                           consecutive texts are packed while their real (non-padding) tokens
                           stay within it, so mini-batches of short texts are not needlessly
                           small; a longer text is a mini-batch of its own; mini_batch_size is
                           then not used
",
        ranking_options_doc!()
    ),
    config: CachedMnrlConfig,
    build: |c| Ok(Box::new(CachedMnrl::new(c)?)),
);

#[cfg(all(test, feature = "torch"))]
mod tests {
    use super::*;
    use embtune_core::testing::{self, random_embeddings};

    #[test]
    fn same_value_as_mnrl_and_reports_its_mini_batch() {
        let cached = testing::build::<dyn ContrastiveLoss>(
            "cached-mnrl",
            &["mini_batch_size=4", "scale=30"],
        )
        .unwrap();
        let plain = testing::build::<dyn ContrastiveLoss>("mnrl", &["scale=30"]).unwrap();
        assert_eq!(cached.mini_batch_size(), Some(4));
        assert_eq!(plain.mini_batch_size(), None);
        let emb: Vec<Tensor> = (0..3).map(|k| random_embeddings(6, 5, k)).collect();
        let batch = LossBatch {
            embeddings: &emb,
            labels: None,
            duplicate_mask: None,
            texts: None,
        };
        let (a, b) = (
            cached.forward(&batch).unwrap(),
            plain.forward(&batch).unwrap(),
        );
        assert_eq!(a.double_value(&[]), b.double_value(&[]));
    }

    #[test]
    fn defaults_and_checks() {
        let c = testing::build::<dyn ContrastiveLoss>("cached-mnrl", &[]).unwrap();
        assert_eq!(c.mini_batch_size(), Some(32));
        assert!(
            testing::build::<dyn ContrastiveLoss>("cached-mnrl", &["mini_batch_size=0"]).is_err()
        );
        let e = testing::build::<dyn ContrastiveLoss>("cached-mnrl", &["minibatch=4"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("mini_batch_size") && e.contains("scale"), "{e}");
        assert!(testing::build::<dyn ContrastiveLoss>("cached-mnrl", &["symmetric=true"]).is_ok());
    }

    #[test]
    fn token_budget_option() {
        let c = testing::build::<dyn ContrastiveLoss>("cached-mnrl", &[]).unwrap();
        assert_eq!(c.mini_batch_num_tokens(), None);
        let c = testing::build::<dyn ContrastiveLoss>(
            "cached-mnrl",
            &["mini_batch_num_tokens=4096", "mini_batch_size=8"],
        )
        .unwrap();
        assert_eq!(c.mini_batch_num_tokens(), Some(4096));
        assert_eq!(c.mini_batch_size(), Some(8));
        let c =
            testing::build::<dyn ContrastiveLoss>("cached-mnrl", &["mini_batch_num_tokens=null"])
                .unwrap();
        assert_eq!(c.mini_batch_num_tokens(), None);
        for bad in ["0", "-5"] {
            let e = testing::build::<dyn ContrastiveLoss>(
                "cached-mnrl",
                &[&format!("mini_batch_num_tokens={bad}")],
            )
            .err()
            .unwrap()
            .to_string();
            assert!(
                e.contains("mini_batch_num_tokens must be a positive integer")
                    && e.contains(&format!("got {bad}")),
                "{e}"
            );
        }
    }
}
