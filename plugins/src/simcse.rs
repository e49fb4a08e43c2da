//! `simcse`: SimCSE (Gao et al. 2021), the method the original repository is named after.
//! Unsupervised: each sentence is encoded twice with dropout as the only noise and InfoNCE at
//! temperature 0.05 picks the second view among the batch. Supervised: InfoNCE over
//! (anchor, positive, hard negative) rows. Both are MultipleNegativesRankingLoss at scale 20
//! (sentence-transformers trains SimCSE with that loss), computed by [`Ranking`].

use embtune_core::register_loss;
#[cfg(feature = "torch")]
use embtune_core::{ContrastiveLoss, LossBatch, LossInputs, Result};
use serde::{Deserialize, Serialize};
#[cfg(feature = "torch")]
use tch::Tensor;

#[cfg(feature = "torch")]
use crate::mnrl::Ranking;

/// Which SimCSE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimcseMode {
    /// One `text` column, embedded twice with dropout (the `*_unsupervised.csv` files).
    Unsupervised,
    /// (anchor, positive, hard negative[, more negatives]) columns (the `*_supervised.csv` files).
    Supervised,
}

/// Options of `simcse`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimcseConfig {
    /// `unsupervised` or `supervised`.
    pub mode: SimcseMode,
    /// Logits are `scale * cos`; SimCSE's temperature 0.05 is scale 20.
    pub scale: f64,
}

impl Default for SimcseConfig {
    fn default() -> Self {
        SimcseConfig {
            mode: SimcseMode::Unsupervised,
            scale: 20.0,
        }
    }
}

/// The `simcse` loss.
#[cfg(feature = "torch")]
pub struct Simcse {
    mode: SimcseMode,
    ranking: Ranking,
}

#[cfg(feature = "torch")]
impl Simcse {
    /// Builds the loss from its options.
    pub fn new(cfg: SimcseConfig) -> Result<Self> {
        Ok(Simcse {
            mode: cfg.mode,
            ranking: Ranking::info_nce(cfg.scale)?,
        })
    }
}

#[cfg(feature = "torch")]
impl ContrastiveLoss for Simcse {
    fn inputs(&self) -> LossInputs {
        match self.mode {
            SimcseMode::Unsupervised => LossInputs::SingleTextTwice,
            SimcseMode::Supervised => LossInputs::Texts { min: 3, max: None },
        }
    }

    /// Unsupervised: `embeddings = [view_1, view_2]` of the same texts; supervised:
    /// `[anchor, positive, negative...]`. Either way InfoNCE with row i's target at column i.
    fn forward(&self, batch: &LossBatch<'_>) -> Result<Tensor> {
        if self.mode == SimcseMode::Unsupervised && batch.embeddings.len() != 2 {
            return Err(embtune_core::Error::Invalid(format!(
                "loss 'simcse' (mode unsupervised): expected the two dropout views of one text column, got {} columns; \
                 for (anchor, positive, negative) files use mode=supervised",
                batch.embeddings.len()
            )));
        }
        self.ranking.loss("simcse", batch)
    }
}

register_loss!(
    name: "simcse",
    summary: "SimCSE: unsupervised (each text twice, dropout noise) or supervised (hard negatives) InfoNCE",
    long: "SimCSE contrastive learning (Gao et al. 2021), InfoNCE at temperature 0.05 over in-batch
negatives; the same value and gradients as sentence-transformers' MultipleNegativesRankingLoss
at scale 20.
  mode=unsupervised  input: one `text` column (the *_unsupervised.csv files); each text is
                     embedded twice in training mode, the two dropout passes are the pair, so
                     the encoder's dropout must be on (it is during training)
  mode=supervised    input: anchor, positive, hard negative[, more negatives] (the
                     *_supervised.csv files)
  scale=20           logits = scale * cos (temperature = 1/scale)
Repeated texts inside a batch are masked out of the negatives unless --no-dedupe.",
    config: SimcseConfig,
    build: |c| Ok(Box::new(Simcse::new(c)?)),
);

#[cfg(all(test, feature = "torch"))]
mod tests {
    use super::*;
    use crate::loss_math::test_support::{naive_ranking, rows, to_vec2};
    use embtune_core::loss::duplicate_mask;
    use embtune_core::testing::{self, random_embeddings};

    #[test]
    fn inputs_follow_the_mode() {
        let unsup = testing::build::<dyn ContrastiveLoss>("simcse", &[]).unwrap();
        assert_eq!(unsup.inputs(), LossInputs::SingleTextTwice);
        let sup = testing::build::<dyn ContrastiveLoss>("simcse", &["mode=supervised"]).unwrap();
        assert_eq!(sup.inputs(), LossInputs::Texts { min: 3, max: None });
        let e = testing::build::<dyn ContrastiveLoss>("simcse", &["mode=self"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("bad option value"), "{e}");
    }

    #[test]
    fn unsupervised_is_info_nce_over_the_two_views_with_repeats_masked() {
        let loss = testing::build::<dyn ContrastiveLoss>("simcse", &[]).unwrap();
        let views = [random_embeddings(5, 4, 1), random_embeddings(5, 4, 2)];
        let texts = ["a", "b", "a", "c", "d"];
        let mask = duplicate_mask(&[&texts[..], &texts[..]]).unwrap();
        for m in [None, Some(&mask)] {
            let batch = LossBatch {
                embeddings: &views,
                labels: None,
                duplicate_mask: m,
                texts: None,
            };
            let got = loss.forward(&batch).unwrap().double_value(&[]);
            let want = naive_ranking(&rows(&views), 20.0, false, m.map(to_vec2).as_deref());
            assert!((got - want).abs() < 1e-10, "{got} vs {want}");
        }
        let three = [
            random_embeddings(5, 4, 1),
            random_embeddings(5, 4, 2),
            random_embeddings(5, 4, 3),
        ];
        let batch = LossBatch {
            embeddings: &three,
            labels: None,
            duplicate_mask: None,
            texts: None,
        };
        assert!(loss
            .forward(&batch)
            .unwrap_err()
            .to_string()
            .contains("mode=supervised"));
    }
}
