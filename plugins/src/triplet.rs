//! `triplet`: TripletLoss, `mean(relu(d(a, p) - d(a, n) + margin))`, as
//! `sentence_transformers/sentence_transformer/losses/triplet.py` (6.0.1).

use embtune_core::register_loss;
#[cfg(feature = "torch")]
use embtune_core::{ContrastiveLoss, LossBatch, LossInputs, Result};
use serde::{Deserialize, Serialize};
#[cfg(feature = "torch")]
use tch::{Kind, Tensor};

#[cfg(feature = "torch")]
use crate::loss_math::{check_columns, pairwise_cos_sim};

/// The distance d of the triplet loss (the reference's `TripletDistanceMetric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DistanceMetric {
    /// `||a - b||_2` (not squared).
    #[serde(alias = "EUCLIDEAN", alias = "TripletDistanceMetric.EUCLIDEAN")]
    Euclidean,
    /// `1 - cos(a, b)`.
    #[serde(alias = "COSINE", alias = "TripletDistanceMetric.COSINE")]
    Cosine,
    /// `||a - b||_1`.
    #[serde(alias = "MANHATTAN", alias = "TripletDistanceMetric.MANHATTAN")]
    Manhattan,
}

#[cfg(feature = "torch")]
impl DistanceMetric {
    /// Row-wise distance: `(B, D) x (B, D) -> (B,)`.
    pub fn distance(self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let sum_last = |t: Tensor| t.f_sum_dim_intlist([-1i64].as_slice(), false, None::<Kind>);
        Ok(match self {
            DistanceMetric::Cosine => pairwise_cos_sim(a, b)?.f_neg()?.f_add_scalar(1.0)?,
            DistanceMetric::Euclidean => sum_last(a.f_sub(b)?.f_square()?)?.f_sqrt()?,
            DistanceMetric::Manhattan => sum_last(a.f_sub(b)?.f_abs()?)?,
        })
    }
}

/// Options of `triplet`; names and defaults are the reference's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TripletConfig {
    /// `euclidean`, `cosine` or `manhattan`.
    pub distance_metric: DistanceMetric,
    /// The margin by which the negative must be farther than the positive.
    pub triplet_margin: f64,
}

impl Default for TripletConfig {
    fn default() -> Self {
        TripletConfig {
            distance_metric: DistanceMetric::Euclidean,
            triplet_margin: 5.0,
        }
    }
}

/// The `triplet` loss.
#[cfg(feature = "torch")]
pub struct Triplet {
    cfg: TripletConfig,
}

#[cfg(feature = "torch")]
impl ContrastiveLoss for Triplet {
    fn inputs(&self) -> LossInputs {
        LossInputs::Texts {
            min: 3,
            max: Some(3),
        }
    }

    /// `embeddings = [anchor, positive, negative]`, each `(B, D)`; no in-batch candidates, so
    /// the duplicate mask is ignored.
    fn forward(&self, batch: &LossBatch<'_>) -> Result<Tensor> {
        check_columns("triplet", batch.embeddings, 3, Some(3))?;
        let [a, p, n] = batch.embeddings else {
            unreachable!("checked: three columns")
        };
        let metric = self.cfg.distance_metric;
        let (dp, dn) = (metric.distance(a, p)?, metric.distance(a, n)?);
        Ok(dp
            .f_sub(&dn)?
            .f_add_scalar(self.cfg.triplet_margin)?
            .f_relu()?
            .f_mean(None::<Kind>)?)
    }
}

register_loss!(
    name: "triplet",
    summary: "TripletLoss: relu(d(anchor, positive) - d(anchor, negative) + margin), averaged",
    long: "TripletLoss, as sentence-transformers. Input: anchor, positive, negative columns.
loss = mean(relu(d(a, p) - d(a, n) + triplet_margin)).
  distance_metric=euclidean  euclidean (||a-b||, not squared) | cosine (1 - cos) | manhattan (L1)
  triplet_margin=5           the reference's default, suited to euclidean distances
The original fine-tuning script used distance_metric=cosine triplet_margin=0.7.",
    config: TripletConfig,
    build: |c| Ok(Box::new(Triplet { cfg: c })),
);

#[cfg(all(test, feature = "torch"))]
mod tests {
    use super::*;
    use crate::loss_math::test_support::{cos, permute_rows, rows};
    use embtune_core::testing::{self, random_embeddings};

    fn naive(cols: &[Vec<Vec<f64>>], metric: DistanceMetric, margin: f64) -> f64 {
        let d = |x: &[f64], y: &[f64]| match metric {
            DistanceMetric::Euclidean => x
                .iter()
                .zip(y)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
                .sqrt(),
            DistanceMetric::Manhattan => x.iter().zip(y).map(|(a, b)| (a - b).abs()).sum::<f64>(),
            DistanceMetric::Cosine => 1.0 - cos(x, y),
        };
        let b = cols[0].len();
        (0..b)
            .map(|i| (d(&cols[0][i], &cols[1][i]) - d(&cols[0][i], &cols[2][i]) + margin).max(0.0))
            .sum::<f64>()
            / b as f64
    }

    #[test]
    fn vectorized_equals_naive_and_is_permutation_invariant() {
        let emb: Vec<Tensor> = (0..3).map(|k| random_embeddings(7, 5, 40 + k)).collect();
        for (metric, key) in [
            (DistanceMetric::Euclidean, "euclidean"),
            (DistanceMetric::Cosine, "cosine"),
            (DistanceMetric::Manhattan, "manhattan"),
        ] {
            for margin in [0.5, 5.0] {
                let opts = [
                    format!("distance_metric={key}"),
                    format!("triplet_margin={margin}"),
                ];
                let loss = testing::build::<dyn ContrastiveLoss>("triplet", &[&opts[0], &opts[1]])
                    .unwrap();
                let got = loss
                    .forward(&LossBatch {
                        embeddings: &emb,
                        labels: None,
                        duplicate_mask: None,
                        texts: None,
                    })
                    .unwrap();
                let want = naive(&rows(&emb), metric, margin);
                assert!(
                    (got.double_value(&[]) - want).abs() < 1e-12,
                    "{key} {margin}"
                );
                let perm = permute_rows(&emb, &[6, 2, 0, 5, 1, 3, 4]);
                let again = loss
                    .forward(&LossBatch {
                        embeddings: &perm,
                        labels: None,
                        duplicate_mask: None,
                        texts: None,
                    })
                    .unwrap();
                assert!((again.double_value(&[]) - want).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn config_names_and_aliases() {
        let c: TripletConfig =
            serde_json::from_value(serde_json::json!({"distance_metric": "COSINE"})).unwrap();
        assert_eq!(
            c,
            TripletConfig {
                distance_metric: DistanceMetric::Cosine,
                triplet_margin: 5.0
            }
        );
        let e = testing::build::<dyn ContrastiveLoss>("triplet", &["margin=1"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("triplet_margin") && e.contains("distance_metric"),
            "{e}"
        );
        let loss = testing::build::<dyn ContrastiveLoss>("triplet", &[]).unwrap();
        let two = [random_embeddings(2, 3, 1), random_embeddings(2, 3, 2)];
        let e = loss
            .forward(&LossBatch {
                embeddings: &two,
                labels: None,
                duplicate_mask: None,
                texts: None,
            })
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("expected 3 embedding columns, got 2"),
            "{e}"
        );
    }
}
