//! `angle`: AnglELoss (Li & Li 2023), CoSENT with the angle similarity (complex-space division
//! of the two halves of each vector) instead of cosine, as
//! `sentence_transformers/sentence_transformer/losses/angle.py` (6.0.1), n-tuples included.

use embtune_core::register_loss;

use crate::cosent::ScoredPairConfig;
#[cfg(feature = "torch")]
use crate::cosent::ScoredPairLoss;
#[cfg(feature = "torch")]
use crate::loss_math::pairwise_angle_sim;

register_loss!(
    name: "angle",
    summary: "AnglELoss: CoSENT with the angle (complex-division) similarity, for scored pairs",
    long: "AnglELoss, as sentence-transformers. Input: two text columns and a float label/score
column; a triplet file (anchor, positive, negative...) becomes (anchor, positive, positive_label)
and (anchor, negative, negative_label) pairs, as the original script built them. The score of a
pair is scale * |sum(re + im)| of the normalized complex quotient of the two vectors (first half
real, second half imaginary; an odd dimension is padded with a zero); the loss is CoSENT's.
  scale=20             the reference's default (the original script used 30)
  positive_label=0.95  label of (anchor, positive) pairs made from triplets (the original's)
  negative_label=0.05  label of (anchor, negative) pairs made from triplets",
    config: ScoredPairConfig,
    build: |c| Ok(Box::new(ScoredPairLoss::new("angle", c, pairwise_angle_sim)?)),
);

#[cfg(all(test, feature = "torch"))]
mod tests {
    use crate::loss_math::test_support::{logsumexp, permute_rows, rows};
    use embtune_core::testing::{self, random_embeddings};
    use embtune_core::{ContrastiveLoss, LossBatch, LossInputs};
    use tch::Tensor;

    /// The angle similarity by loops over complex components.
    fn angle_sim(x: &[f64], y: &[f64]) -> f64 {
        let pad = |v: &[f64]| {
            let mut v = v.to_vec();
            if v.len() % 2 == 1 {
                v.push(0.0);
            }
            v
        };
        let (x, y) = (pad(x), pad(y));
        let h = x.len() / 2;
        let (mut z, mut nx) = (0.0, 0.0);
        for k in 0..h {
            z += y[k] * y[k] + y[h + k] * y[h + k];
            nx += x[k] * x[k] + x[h + k] * x[h + k];
        }
        let ratio = nx.sqrt() / z.sqrt();
        (0..h)
            .map(|k| {
                let (a, b, c, d) = (x[k], x[h + k], y[k], y[h + k]);
                ((a * c + b * d) / z + (b * c - a * d) / z) / ratio
            })
            .sum::<f64>()
            .abs()
    }

    #[test]
    fn vectorized_equals_naive_and_is_permutation_invariant() {
        let loss = testing::build::<dyn ContrastiveLoss>("angle", &["scale=30"]).unwrap();
        for d in [6, 7] {
            let emb = [random_embeddings(5, d, 1), random_embeddings(5, d, 2)];
            let y = [0.2, 0.9, 0.4, 0.4, 0.0];
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
            let s: Vec<f64> = (0..5)
                .map(|i| 30.0 * angle_sim(&r[0][i], &r[1][i]))
                .collect();
            let mut terms = vec![0.0];
            for i in 0..5 {
                for j in 0..5 {
                    if y[i] < y[j] {
                        terms.push(s[i] - s[j]);
                    }
                }
            }
            assert!(
                (got.double_value(&[]) - logsumexp(&terms)).abs() < 1e-9,
                "d={d}"
            );
            let perm = [4i64, 2, 0, 1, 3];
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
            assert!((again.double_value(&[]) - got.double_value(&[])).abs() < 1e-10);
        }
    }

    #[test]
    fn inputs_are_scored_pairs_with_the_configured_labels() {
        let loss = testing::build::<dyn ContrastiveLoss>(
            "angle",
            &["positive_label=1", "negative_label=0"],
        )
        .unwrap();
        assert_eq!(
            loss.inputs(),
            LossInputs::ScoredPairs {
                positive_label: 1.0,
                negative_label: 0.0
            }
        );
    }
}
