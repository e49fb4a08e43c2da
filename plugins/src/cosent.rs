//! `cosent`: CoSENTLoss on scored pairs, as
//! `sentence_transformers/sentence_transformer/losses/cosent.py` (6.0.1):
//! `loss = logsumexp([0] + [s_i - s_j for all (i, j) with y_i < y_j])`, `s = scale * sim`.
//! The pair-ranking core [`cosent_from_scores`] and the scored-pair plumbing
//! [`scored_pairs`] are shared with `angle`.

use embtune_core::register_loss;
#[cfg(feature = "torch")]
use embtune_core::{ContrastiveLoss, Error, LossBatch, LossInputs, Result};
use serde::{Deserialize, Serialize};
#[cfg(feature = "torch")]
use tch::{Kind, Tensor};

#[cfg(feature = "torch")]
use crate::loss_math::{check_columns, pairwise_cos_sim};

/// Options of `cosent` and `angle`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScoredPairConfig {
    /// Scores are `scale * similarity`.
    pub scale: f64,
    /// Label of an (anchor, positive) pair made from a triplet file.
    pub positive_label: f64,
    /// Label of an (anchor, negative) pair made from a triplet file.
    pub negative_label: f64,
}

impl Default for ScoredPairConfig {
    fn default() -> Self {
        ScoredPairConfig {
            scale: 20.0,
            positive_label: 0.95,
            negative_label: 0.05,
        }
    }
}

#[cfg(feature = "torch")]
impl ScoredPairConfig {
    pub(crate) fn check(&self, loss: &'static str) -> Result<()> {
        if !(self.scale > 0.0 && self.scale.is_finite()) {
            return Err(Error::PluginConfig {
                kind: "loss",
                plugin: loss.to_string(),
                message: format!("scale must be a positive number, got {}", self.scale),
            });
        }
        Ok(())
    }

    pub(crate) fn inputs(&self) -> LossInputs {
        LossInputs::ScoredPairs {
            positive_label: self.positive_label,
            negative_label: self.negative_label,
        }
    }
}

/// The `(left, right, labels)` pairs of a batch: `[left, right]` with `batch.labels` (B,), or
/// n-tuples `[anchor, positive, negative...]` turned into pairs (anchor, column k): labels
/// `batch.labels` (or `positive_label`) for the positives and `1 - labels` (or
/// `negative_label`) for the negatives, as the reference's AnglELoss does with n-tuples.
#[cfg(feature = "torch")]
pub fn scored_pairs(
    loss: &str,
    batch: &LossBatch<'_>,
    cfg: &ScoredPairConfig,
) -> Result<(Tensor, Tensor, Tensor)> {
    let emb = batch.embeddings;
    let (b, _d) = check_columns(loss, emb, 2, None)?;
    let opts = (Kind::Double, emb[0].device());
    if let Some(l) = batch.labels {
        if l.size() != [b] {
            return Err(Error::Invalid(format!(
                "loss '{loss}': labels have shape {:?}, expected [{b}]",
                l.size()
            )));
        }
    }
    if emb.len() == 2 {
        let labels = batch.labels.ok_or_else(|| {
            Error::Invalid(format!(
                "loss '{loss}': pairs need a label/score column (or give a triplet file)"
            ))
        })?;
        return Ok((
            emb[0].shallow_clone(),
            emb[1].shallow_clone(),
            labels.f_to_kind(Kind::Double)?,
        ));
    }
    let negatives = emb.len() as i64 - 2;
    let (pos, neg) = match batch.labels {
        Some(l) => {
            let l = l.f_to_device(emb[0].device())?.f_to_kind(Kind::Double)?;
            (l.shallow_clone(), l.f_neg()?.f_add_scalar(1.0)?)
        }
        None => (
            Tensor::f_full([b], cfg.positive_label, opts)?,
            Tensor::f_full([b], cfg.negative_label, opts)?,
        ),
    };
    let left = emb[0].f_repeat([negatives + 1, 1].as_slice())?; // (b * (1 + k), d)
    let right = Tensor::f_cat(&emb[1..], 0)?;
    let labels = Tensor::f_cat(&[pos, neg.f_repeat([negatives].as_slice())?], 0)?;
    Ok((left, right, labels))
}

/// CoSENT on precomputed similarities: `scores (N,)`, `labels (N,)`; pairs with
/// `labels_i < labels_j` contribute `scale * (s_i - s_j)` to a logsumexp that starts with 0.
#[cfg(feature = "torch")]
pub fn cosent_from_scores(scores: &Tensor, labels: &Tensor, scale: f64) -> Result<Tensor> {
    let s = scores.f_mul_scalar(scale)?;
    let diff = s.f_unsqueeze(1)?.f_sub(&s.f_unsqueeze(0)?)?; // (n, n): s_i - s_j
    let labels = labels.f_to_device(scores.device())?;
    let ordered = labels
        .f_unsqueeze(1)?
        .f_lt_tensor(&labels.f_unsqueeze(0)?)?; // y_i < y_j
    let diff = diff.f_masked_fill(&ordered.f_logical_not()?, f64::NEG_INFINITY)?;
    let zero = Tensor::f_zeros([1], (diff.kind(), diff.device()))?;
    Ok(Tensor::f_cat(&[zero, diff.f_flatten(0, 1)?], 0)?.f_logsumexp([0i64].as_slice(), false)?)
}

/// A CoSENT-style loss over scored pairs: `cosent` with the cosine, `angle` with the angle
/// similarity; only the pairwise similarity differs.
#[cfg(feature = "torch")]
pub struct ScoredPairLoss {
    name: &'static str,
    cfg: ScoredPairConfig,
    similarity: fn(&Tensor, &Tensor) -> Result<Tensor>,
}

#[cfg(feature = "torch")]
impl ScoredPairLoss {
    /// The loss `name` with config `cfg` (checked here) and the pairwise `similarity`.
    pub fn new(
        name: &'static str,
        cfg: ScoredPairConfig,
        similarity: fn(&Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<Self> {
        cfg.check(name)?;
        Ok(ScoredPairLoss {
            name,
            cfg,
            similarity,
        })
    }
}

#[cfg(feature = "torch")]
impl ContrastiveLoss for ScoredPairLoss {
    fn inputs(&self) -> LossInputs {
        self.cfg.inputs()
    }

    fn forward(&self, batch: &LossBatch<'_>) -> Result<Tensor> {
        let (left, right, labels) = scored_pairs(self.name, batch, &self.cfg)?;
        cosent_from_scores(&(self.similarity)(&left, &right)?, &labels, self.cfg.scale)
    }
}

register_loss!(
    name: "cosent",
    summary: "CoSENTLoss: ranks scored pairs so that higher-labelled pairs get higher cosine",
    long: "CoSENTLoss, as sentence-transformers. Input: two text columns and a float label/score
column; a triplet file (anchor, positive, negative...) becomes (anchor, positive, positive_label)
and (anchor, negative, negative_label) pairs. With s = scale * cos(left, right),
loss = log(1 + sum over pairs with label_i < label_j of exp(s_i - s_j)). Only the order of the
labels matters.
  scale=20             the reference's default
  positive_label=0.95  label of (anchor, positive) pairs made from triplets (the original's)
  negative_label=0.05  label of (anchor, negative) pairs made from triplets",
    config: ScoredPairConfig,
    build: |c| Ok(Box::new(ScoredPairLoss::new("cosent", c, pairwise_cos_sim)?)),
);

#[cfg(all(test, feature = "torch"))]
mod tests {
    use super::*;
    use crate::loss_math::test_support::{cos, logsumexp, permute_rows, rows};
    use embtune_core::testing::{self, random_embeddings};

    fn naive(left: &[Vec<f64>], right: &[Vec<f64>], labels: &[f64], scale: f64) -> f64 {
        let s: Vec<f64> = left
            .iter()
            .zip(right)
            .map(|(a, b)| scale * cos(a, b))
            .collect();
        let mut terms = vec![0.0];
        for i in 0..s.len() {
            for j in 0..s.len() {
                if labels[i] < labels[j] {
                    terms.push(s[i] - s[j]);
                }
            }
        }
        logsumexp(&terms)
    }

    #[test]
    fn vectorized_equals_naive_and_is_permutation_invariant() {
        let loss = testing::build::<dyn ContrastiveLoss>("cosent", &[]).unwrap();
        let emb = [random_embeddings(6, 5, 1), random_embeddings(6, 5, 2)];
        let y = [0.9, 0.1, 0.5, 0.5, 0.3, 0.75];
        let labels = Tensor::from_slice(&y);
        let got = loss
            .forward(&LossBatch {
                embeddings: &emb,
                labels: Some(&labels),
                duplicate_mask: None,
                texts: None,
            })
            .unwrap();
        let r = rows(&emb);
        let want = naive(&r[0], &r[1], &y, 20.0);
        assert!((got.double_value(&[]) - want).abs() < 1e-10);
        let perm = [5i64, 3, 1, 0, 2, 4];
        let pe = permute_rows(&emb, &perm);
        let pl = labels.index_select(0, &Tensor::from_slice(&perm));
        let again = loss
            .forward(&LossBatch {
                embeddings: &pe,
                labels: Some(&pl),
                duplicate_mask: None,
                texts: None,
            })
            .unwrap();
        assert!((again.double_value(&[]) - want).abs() < 1e-10);
    }

    #[test]
    fn triplets_become_pairs_with_soft_labels() {
        let loss = testing::build::<dyn ContrastiveLoss>("cosent", &[]).unwrap();
        assert_eq!(
            loss.inputs(),
            LossInputs::ScoredPairs {
                positive_label: 0.95,
                negative_label: 0.05
            }
        );
        let emb: Vec<Tensor> = (0..3).map(|k| random_embeddings(4, 5, 10 + k)).collect();
        let got = loss
            .forward(&LossBatch {
                embeddings: &emb,
                labels: None,
                duplicate_mask: None,
                texts: None,
            })
            .unwrap();
        let r = rows(&emb);
        let left: Vec<Vec<f64>> = r[0].iter().chain(&r[0]).cloned().collect();
        let right: Vec<Vec<f64>> = r[1].iter().chain(&r[2]).cloned().collect();
        let y: Vec<f64> = [0.95; 4].into_iter().chain([0.05; 4]).collect();
        assert!((got.double_value(&[]) - naive(&left, &right, &y, 20.0)).abs() < 1e-10);
    }

    #[test]
    fn equal_labels_give_zero_and_pairs_need_labels() {
        let loss = testing::build::<dyn ContrastiveLoss>("cosent", &[]).unwrap();
        let emb = [random_embeddings(3, 4, 1), random_embeddings(3, 4, 2)];
        let same = Tensor::from_slice(&[0.5, 0.5, 0.5]);
        let v = loss
            .forward(&LossBatch {
                embeddings: &emb,
                labels: Some(&same),
                duplicate_mask: None,
                texts: None,
            })
            .unwrap();
        assert_eq!(v.double_value(&[]), 0.0);
        let e = loss
            .forward(&LossBatch {
                embeddings: &emb,
                labels: None,
                duplicate_mask: None,
                texts: None,
            })
            .unwrap_err();
        assert!(e.to_string().contains("label"), "{e}");
        assert!(testing::build::<dyn ContrastiveLoss>("cosent", &["scale=-1"]).is_err());
    }
}
