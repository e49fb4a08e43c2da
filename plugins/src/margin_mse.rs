//! `margin-mse`: MarginMSELoss (Hofstätter et al. 2020), distillation from teacher score
//! margins, as `sentence_transformers/sentence_transformer/losses/margin_mse.py` (6.0.1),
//! `compute_loss_from_embeddings`:
//! `loss = mean_{i,k} ((sim(q_i, p_i) - sim(q_i, n_ik)) - margin_ik)^2`, where the teacher's
//! margins come from the data. The pairwise similarity [`SimilarityFct`] is shared with
//! `distill-kl`.
//!
//! Labels, as the reference reads them, with N negative columns: `(B, N+1)` raw teacher
//! scores `[positive, negative_1..N]`, turned into margins `s_pos - s_neg_i`; `(B, N)` margins;
//! `(B,)` one margin per row (triplets, N = 1).

use embtune_core::register_loss;
#[cfg(feature = "torch")]
use embtune_core::{ContrastiveLoss, Error, LossBatch, LossInputs, Result};
use serde::{Deserialize, Serialize};
#[cfg(feature = "torch")]
use tch::{Kind, Tensor};

#[cfg(feature = "torch")]
use crate::loss_math::{check_columns, pairwise_cos_sim};

/// The student's pairwise similarity `sim(q_i, d_i)` (the reference's `similarity_fct`, one
/// of `sentence_transformers.util`'s pairwise functions). The reference's function names are
/// accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SimilarityFct {
    /// `pairwise_dot_score`: `sum(a * b)` (the reference's default).
    #[serde(alias = "pairwise_dot_score", alias = "dot_score")]
    Dot,
    /// `pairwise_cos_sim`: `normalize(a) . normalize(b)`.
    #[serde(alias = "pairwise_cos_sim", alias = "cos_sim", alias = "cos")]
    Cosine,
    /// `pairwise_euclidean_sim`: `-||a - b||_2`.
    #[serde(alias = "pairwise_euclidean_sim")]
    Euclidean,
    /// `pairwise_manhattan_sim`: `-||a - b||_1`.
    #[serde(alias = "pairwise_manhattan_sim")]
    Manhattan,
}

#[cfg(feature = "torch")]
impl SimilarityFct {
    /// Row-wise similarity: `(B, D) x (B, D) -> (B,)`, op for op as `sentence_transformers/util/similarity.py`.
    pub fn pairwise(self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let sum_last = |t: Tensor| t.f_sum_dim_intlist([-1i64].as_slice(), false, None::<Kind>);
        Ok(match self {
            SimilarityFct::Dot => sum_last(a.f_mul(b)?)?,
            SimilarityFct::Cosine => pairwise_cos_sim(a, b)?,
            SimilarityFct::Euclidean => sum_last(a.f_sub(b)?.f_square()?)?.f_sqrt()?.f_neg()?,
            SimilarityFct::Manhattan => sum_last(a.f_sub(b)?.f_abs()?)?.f_neg()?,
        })
    }

    /// `(B, N)`: `sim(q_i, d_k[i])` for every document column `d_k`.
    pub fn against_columns(self, q: &Tensor, docs: &[Tensor]) -> Result<Tensor> {
        let cols = docs
            .iter()
            .map(|d| self.pairwise(q, d))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::f_stack(&cols, 1)?)
    }
}

/// The teacher scores of a distillation batch on the embeddings' device and dtype (detached),
/// or one line naming what the loss needs.
#[cfg(feature = "torch")]
pub(crate) fn teacher_labels(loss: &str, batch: &LossBatch<'_>, want: &str) -> Result<Tensor> {
    let labels = batch.labels.ok_or_else(|| {
        Error::Invalid(format!(
            "loss '{loss}' needs teacher scores (the batch labels): {want}; give the data file a \
             `scores` column, e.g. from `embtune mine --output-scores`"
        ))
    })?;
    let e = &batch.embeddings[0];
    Ok(labels
        .f_detach()?
        .f_to_device(e.device())?
        .f_to_kind(e.kind())?)
}

/// Options of `margin-mse`; names and defaults are the reference's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MarginMseConfig {
    /// The student's similarity: `dot` (default), `cosine`, `euclidean` or `manhattan`.
    pub similarity_fct: SimilarityFct,
}

impl Default for MarginMseConfig {
    fn default() -> Self {
        MarginMseConfig {
            similarity_fct: SimilarityFct::Dot,
        }
    }
}

/// The `margin-mse` loss.
#[cfg(feature = "torch")]
pub struct MarginMse {
    cfg: MarginMseConfig,
}

#[cfg(feature = "torch")]
impl MarginMse {
    /// The loss with `cfg`.
    pub fn new(cfg: MarginMseConfig) -> Self {
        MarginMse { cfg }
    }
}

#[cfg(feature = "torch")]
impl ContrastiveLoss for MarginMse {
    fn inputs(&self) -> LossInputs {
        LossInputs::TextsWithScores {
            min: 3,
            max: None,
            margins: true,
        }
    }

    /// `embeddings = [query, positive, negative_1..N]`, each `(B, D)`; `labels` `(B,)`,
    /// `(B, N)` or `(B, N+1)` (see the module doc). No in-batch candidates: the duplicate mask
    /// is ignored.
    fn forward(&self, batch: &LossBatch<'_>) -> Result<Tensor> {
        let emb = batch.embeddings;
        let (b, _d) = check_columns("margin-mse", emb, 3, None)?;
        let n = emb.len() as i64 - 2;
        let want = format!(
            "({b}, {n}) margins positive - negative_i, ({b}, {}) scores [positive, negatives...], or ({b},) for triplets",
            n + 1
        );
        let mut labels = teacher_labels("margin-mse", batch, &want)?;
        if labels.size() == [b, n + 1] {
            // Raw scores: the margins s_pos - s_neg_i.
            let pos = labels.f_narrow(1, 0, 1)?;
            labels = pos.f_sub(&labels.f_narrow(1, 1, n)?)?;
        }
        if labels.size() == [b] {
            labels = labels.f_unsqueeze(1)?;
        }
        if labels.size() != [b, n] {
            return Err(Error::Invalid(format!(
                "loss 'margin-mse': teacher scores have shape {:?}, expected {want}",
                labels.size()
            )));
        }
        let sim = self.cfg.similarity_fct;
        let pos = sim.pairwise(&emb[0], &emb[1])?.f_unsqueeze(1)?; // (b, 1)
        let negs = sim.against_columns(&emb[0], &emb[2..])?; // (b, n)
        let margins = pos.f_sub(&negs)?;
        Ok(margins.f_sub(&labels)?.f_square()?.f_mean(None::<Kind>)?)
    }
}

register_loss!(
    name: "margin-mse",
    summary: "MarginMSELoss: distills a teacher's score margins (positive - negative) from the data",
    long: "MarginMSELoss, as sentence-transformers. Input: query, positive, negative_1..N columns
and teacher scores per row: a `scores` column holding [teacher(q, pos), teacher(q, neg_1), ...]
(N+1 numbers, as `embtune mine --output-scores` writes them; converted to margins pos - neg_i),
or N margins teacher(q, pos) - teacher(q, neg_i), or for triplets a float `label` column.
loss = mean over rows and negatives of ((sim(q, pos) - sim(q, neg_i)) - margin_i)^2.
  similarity_fct=dot  the student's similarity: dot (the reference's pairwise_dot_score)
                      | cosine | euclidean (-L2) | manhattan (-L1)",
    config: MarginMseConfig,
    build: |c| Ok(Box::new(MarginMse::new(c))),
);

#[cfg(all(test, feature = "torch"))]
mod tests {
    use super::*;
    use crate::loss_math::test_support::{cos, permute_rows, rows};
    use embtune_core::testing::{self, random_embeddings};

    fn batch<'a>(emb: &'a [Tensor], labels: Option<&'a Tensor>) -> LossBatch<'a> {
        LossBatch {
            embeddings: emb,
            labels,
            duplicate_mask: None,
            texts: None,
        }
    }

    fn sim(kind: SimilarityFct, a: &[f64], b: &[f64]) -> f64 {
        match kind {
            SimilarityFct::Dot => a.iter().zip(b).map(|(x, y)| x * y).sum(),
            SimilarityFct::Cosine => cos(a, b),
            SimilarityFct::Euclidean => -a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f64>()
                .sqrt(),
            SimilarityFct::Manhattan => -a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>(),
        }
    }

    /// The loss by loops, from `margins[i][k]`.
    fn naive(cols: &[Vec<Vec<f64>>], margins: &[Vec<f64>], kind: SimilarityFct) -> f64 {
        let (b, n) = (cols[0].len(), cols.len() - 2);
        let mut total = 0.0;
        for i in 0..b {
            for k in 0..n {
                let m =
                    sim(kind, &cols[0][i], &cols[1][i]) - sim(kind, &cols[0][i], &cols[2 + k][i]);
                total += (m - margins[i][k]).powi(2);
            }
        }
        total / (b * n) as f64
    }

    #[test]
    fn every_label_form_equals_the_loop_and_is_permutation_invariant() {
        let emb: Vec<Tensor> = (0..4).map(|k| random_embeddings(5, 6, 30 + k)).collect();
        let r = rows(&emb);
        let raw: Vec<Vec<f64>> = (0..5)
            .map(|i| vec![1.0 + i as f64, 0.5 * i as f64, -0.3])
            .collect();
        let margins: Vec<Vec<f64>> = raw.iter().map(|s| vec![s[0] - s[1], s[0] - s[2]]).collect();
        for (kind, key) in [
            (SimilarityFct::Dot, "dot"),
            (SimilarityFct::Cosine, "cosine"),
            (SimilarityFct::Euclidean, "pairwise_euclidean_sim"),
            (SimilarityFct::Manhattan, "manhattan"),
        ] {
            let opt = format!("similarity_fct={key}");
            let loss =
                testing::build::<dyn ContrastiveLoss>("margin-mse", &[opt.as_str()]).unwrap();
            let want = naive(&r, &margins, kind);
            for labels in [&raw, &margins] {
                let t = Tensor::from_slice2(labels);
                let got = loss
                    .forward(&batch(&emb, Some(&t)))
                    .unwrap()
                    .double_value(&[]);
                assert!(
                    (got - want).abs() < 1e-10 * want.abs().max(1.0),
                    "{key}: {got} vs {want}"
                );
            }
            let perm = [4i64, 2, 0, 1, 3];
            let pl = Tensor::from_slice2(&raw).index_select(0, &Tensor::from_slice(&perm));
            let again = loss
                .forward(&batch(&permute_rows(&emb, &perm), Some(&pl)))
                .unwrap()
                .double_value(&[]);
            assert!((again - want).abs() < 1e-10 * want.abs().max(1.0), "{key}");
        }
    }

    #[test]
    fn triplets_take_one_margin_per_row() {
        let loss = testing::build::<dyn ContrastiveLoss>("margin-mse", &[]).unwrap();
        assert_eq!(
            loss.inputs(),
            LossInputs::TextsWithScores {
                min: 3,
                max: None,
                margins: true
            }
        );
        let emb: Vec<Tensor> = (0..3).map(|k| random_embeddings(4, 5, 40 + k)).collect();
        let m = [0.5, -1.0, 2.0, 0.0];
        let got = loss
            .forward(&batch(&emb, Some(&Tensor::from_slice(&m))))
            .unwrap()
            .double_value(&[]);
        let margins: Vec<Vec<f64>> = m.iter().map(|&x| vec![x]).collect();
        let want = naive(&rows(&emb), &margins, SimilarityFct::Dot);
        assert!((got - want).abs() < 1e-10 * want.max(1.0));
    }

    #[test]
    fn missing_or_mis_sized_labels_and_bad_options_are_one_line_errors() {
        let loss = testing::build::<dyn ContrastiveLoss>("margin-mse", &[]).unwrap();
        let emb: Vec<Tensor> = (0..4).map(|k| random_embeddings(3, 4, 50 + k)).collect();
        let e = loss.forward(&batch(&emb, None)).unwrap_err().to_string();
        assert!(
            e.contains("needs teacher scores") && e.contains("(3, 2) margins") && !e.contains('\n'),
            "{e}"
        );
        let wrong = Tensor::zeros([3, 4], (Kind::Double, tch::Device::Cpu));
        let e = loss
            .forward(&batch(&emb, Some(&wrong)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("shape [3, 4], expected (3, 2) margins"), "{e}");
        // A (B,) label is one margin: not enough for two negatives.
        let one = Tensor::zeros([3], (Kind::Double, tch::Device::Cpu));
        assert!(loss.forward(&batch(&emb, Some(&one))).is_err());
        let e = testing::build::<dyn ContrastiveLoss>("margin-mse", &["similarity_fct=l2"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("margin-mse") && e.contains("dot") && e.contains("cosine"),
            "{e}"
        );
    }

    #[test]
    fn float32_embeddings_take_float32_scores() {
        let loss = testing::build::<dyn ContrastiveLoss>("margin-mse", &[]).unwrap();
        let emb: Vec<Tensor> = (0..3)
            .map(|k| random_embeddings(4, 5, 60 + k).to_kind(Kind::Float))
            .collect();
        let labels =
            Tensor::from_slice(&[0.1f32, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]).reshape([4, 2]);
        let v = loss.forward(&batch(&emb, Some(&labels))).unwrap();
        assert_eq!(v.kind(), Kind::Float);
        assert!(v.double_value(&[]).is_finite());
    }
}
