//! `distill-kl`: DistillKLDivLoss (Lin et al. 2020), distillation of a teacher's score
//! distribution over each row's candidates, as
//! `sentence_transformers/sentence_transformer/losses/distill_kl_div.py` (6.0.1),
//! `compute_loss_from_embeddings`:
//! `s_ik = sim(q_i, d_k[i]) / T_s`, `t_ik = teacher_ik / T_t` over the N+1 candidate columns
//! (positive, negative_1..N); `loss = T_s^2 * sum_i KL(softmax(t_i) || softmax(s_i)) / B`
//! (`nn.KLDivLoss(reduction="batchmean")`). `T_s` = `student_temperature`, `T_t` =
//! `teacher_temperature`, both `temperature` unless set.

use embtune_core::register_loss;
#[cfg(feature = "torch")]
use embtune_core::{ContrastiveLoss, Error, LossBatch, LossInputs, Result};
use serde::{Deserialize, Serialize};
#[cfg(feature = "torch")]
use tch::{Kind, Reduction, Tensor};

use crate::margin_mse::SimilarityFct;
#[cfg(feature = "torch")]
use crate::{loss_math::check_columns, margin_mse::teacher_labels};

/// Options of `distill-kl`; names and defaults are the reference's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DistillKlConfig {
    /// The student's similarity: `dot` (default), `cosine`, `euclidean` or `manhattan`.
    pub similarity_fct: SimilarityFct,
    /// Softens both distributions (higher: softer); 1.0 leaves the scores as they are.
    pub temperature: f64,
    /// Student-side override of `temperature`; the loss is scaled by its square.
    pub student_temperature: Option<f64>,
    /// Teacher-side override of `temperature`.
    pub teacher_temperature: Option<f64>,
}

impl Default for DistillKlConfig {
    fn default() -> Self {
        DistillKlConfig {
            similarity_fct: SimilarityFct::Dot,
            temperature: 1.0,
            student_temperature: None,
            teacher_temperature: None,
        }
    }
}

impl DistillKlConfig {
    /// `(student, teacher)` temperatures, each checked to be a positive finite number.
    pub fn temperatures(&self) -> std::result::Result<(f64, f64), String> {
        let student = self.student_temperature.unwrap_or(self.temperature);
        let teacher = self.teacher_temperature.unwrap_or(self.temperature);
        for (name, v) in [
            ("temperature", self.temperature),
            ("student_temperature", student),
            ("teacher_temperature", teacher),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(format!(
                    "{name} must be a positive finite number (e.g. 1.0), got {v}"
                ));
            }
        }
        Ok((student, teacher))
    }
}

/// The `distill-kl` loss.
#[cfg(feature = "torch")]
pub struct DistillKl {
    similarity: SimilarityFct,
    student_temperature: f64,
    teacher_temperature: f64,
}

#[cfg(feature = "torch")]
impl DistillKl {
    /// The loss with `cfg`; a temperature that is not a positive finite number is an error.
    pub fn new(cfg: DistillKlConfig) -> Result<Self> {
        let (student_temperature, teacher_temperature) =
            cfg.temperatures().map_err(|message| Error::PluginConfig {
                kind: "loss",
                plugin: "distill-kl".into(),
                message,
            })?;
        Ok(DistillKl {
            similarity: cfg.similarity_fct,
            student_temperature,
            teacher_temperature,
        })
    }
}

#[cfg(feature = "torch")]
impl ContrastiveLoss for DistillKl {
    fn inputs(&self) -> LossInputs {
        LossInputs::TextsWithScores {
            min: 3,
            max: None,
            margins: false,
        }
    }

    /// `embeddings = [query, positive, negative_1..N]`, each `(B, D)`; `labels` `(B, N+1)`
    /// teacher scores in the same column order. No in-batch candidates: the duplicate mask is
    /// ignored.
    fn forward(&self, batch: &LossBatch<'_>) -> Result<Tensor> {
        let emb = batch.embeddings;
        let (b, _d) = check_columns("distill-kl", emb, 3, None)?;
        let ways = emb.len() as i64 - 1;
        let want =
            format!("({b}, {ways}) scores [positive, negative_1, ...], one per candidate column");
        let labels = teacher_labels("distill-kl", batch, &want)?;
        if labels.size() != [b, ways] {
            return Err(Error::Invalid(format!(
                "loss 'distill-kl': teacher scores have shape {:?}, expected {want}",
                labels.size()
            )));
        }
        let student = self
            .similarity
            .against_columns(&emb[0], &emb[1..])? // (b, ways)
            .f_div_scalar(self.student_temperature)?
            .f_log_softmax(1, None::<Kind>)?;
        let teacher = labels
            .f_div_scalar(self.teacher_temperature)?
            .f_softmax(1, None::<Kind>)?;
        // KLDivLoss(batchmean): sum(t * (log t - s)) / B, with 0 * log 0 = 0.
        let kl = student
            .f_kl_div(&teacher, Reduction::Sum, false)?
            .f_div_scalar(b as f64)?;
        Ok(kl.f_mul_scalar(self.student_temperature * self.student_temperature)?)
    }
}

register_loss!(
    name: "distill-kl",
    summary: "DistillKLDivLoss: matches the softmax over each row's candidates to the teacher's",
    long: "DistillKLDivLoss, as sentence-transformers. Input: query, positive, negative_1..N columns
and a `scores` column holding the teacher's N+1 scores [teacher(q, pos), teacher(q, neg_1), ...]
per row (as `embtune mine --output-scores` or a reranker writes them).
loss = T_s^2 * mean over rows of KL(softmax(teacher / T_t) || softmax(sim(q, candidates) / T_s)).
  similarity_fct=dot         the student's similarity: dot (the reference's pairwise_dot_score)
                             | cosine | euclidean (-L2) | manhattan (-L1)
  temperature=1              T_s and T_t unless overridden; higher = softer distributions
  student_temperature=null   override of T_s (the loss is scaled by T_s^2)
  teacher_temperature=null   override of T_t; match it to the spread of the teacher's scores
                             (a row spread / T_t above about 100 zeroes candidates out)",
    config: DistillKlConfig,
    build: |c| Ok(Box::new(DistillKl::new(c)?)),
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

    fn softmax(v: &[f64]) -> Vec<f64> {
        let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = v.iter().map(|x| (x - m).exp()).collect();
        let z: f64 = e.iter().sum();
        e.iter().map(|x| x / z).collect()
    }

    /// The loss by loops, cosine or dot similarity.
    fn naive(cols: &[Vec<Vec<f64>>], teacher: &[Vec<f64>], cosine: bool, ts: f64, tt: f64) -> f64 {
        let b = cols[0].len();
        let mut total = 0.0;
        for i in 0..b {
            let q = &cols[0][i];
            let s: Vec<f64> = cols[1..]
                .iter()
                .map(|c| {
                    let d = &c[i];
                    let v = if cosine {
                        cos(q, d)
                    } else {
                        q.iter().zip(d).map(|(x, y)| x * y).sum()
                    };
                    v / ts
                })
                .collect();
            let p = softmax(&s);
            let t = softmax(&teacher[i].iter().map(|x| x / tt).collect::<Vec<_>>());
            total += t
                .iter()
                .zip(&p)
                .map(|(t, p)| if *t > 0.0 { t * (t.ln() - p.ln()) } else { 0.0 })
                .sum::<f64>();
        }
        ts * ts * total / b as f64
    }

    #[test]
    fn equals_the_loop_with_temperatures_and_is_permutation_invariant() {
        let emb: Vec<Tensor> = (0..4).map(|k| random_embeddings(5, 6, 70 + k)).collect();
        let r = rows(&emb);
        let teacher: Vec<Vec<f64>> = (0..5)
            .map(|i| vec![2.0 + i as f64, 0.5, -(i as f64)])
            .collect();
        let t = Tensor::from_slice2(&teacher);
        for (opts, cosine, ts, tt) in [
            (vec![], false, 1.0, 1.0),
            (vec!["temperature=2"], false, 2.0, 2.0),
            (
                vec!["similarity_fct=cosine", "temperature=0.05"],
                true,
                0.05,
                0.05,
            ),
            (
                vec!["student_temperature=0.5", "teacher_temperature=3"],
                false,
                0.5,
                3.0,
            ),
        ] {
            let loss = testing::build::<dyn ContrastiveLoss>("distill-kl", &opts).unwrap();
            let got = loss
                .forward(&batch(&emb, Some(&t)))
                .unwrap()
                .double_value(&[]);
            let want = naive(&r, &teacher, cosine, ts, tt);
            assert!(
                (got - want).abs() < 1e-10 * want.abs().max(1e-3),
                "{opts:?}: {got} vs {want}"
            );
            let perm = [3i64, 0, 4, 2, 1];
            let pt = t.index_select(0, &Tensor::from_slice(&perm));
            let again = loss
                .forward(&batch(&permute_rows(&emb, &perm), Some(&pt)))
                .unwrap()
                .double_value(&[]);
            assert!(
                (again - want).abs() < 1e-10 * want.abs().max(1e-3),
                "{opts:?}"
            );
        }
    }

    #[test]
    fn matching_the_teacher_gives_zero() {
        let loss = testing::build::<dyn ContrastiveLoss>("distill-kl", &[]).unwrap();
        let emb: Vec<Tensor> = (0..3).map(|k| random_embeddings(4, 5, 80 + k)).collect();
        let student = Tensor::stack(
            &[
                (&emb[0] * &emb[1]).sum_dim_intlist([-1i64].as_slice(), false, Kind::Double),
                (&emb[0] * &emb[2]).sum_dim_intlist([-1i64].as_slice(), false, Kind::Double),
            ],
            1,
        );
        let v = loss
            .forward(&batch(&emb, Some(&student)))
            .unwrap()
            .double_value(&[]);
        assert!(v.abs() < 1e-12, "{v}");
        assert_eq!(
            loss.inputs(),
            LossInputs::TextsWithScores {
                min: 3,
                max: None,
                margins: false
            }
        );
    }

    #[test]
    fn missing_or_mis_sized_labels_and_bad_temperatures_are_one_line_errors() {
        let loss = testing::build::<dyn ContrastiveLoss>("distill-kl", &[]).unwrap();
        let emb: Vec<Tensor> = (0..3).map(|k| random_embeddings(3, 4, 90 + k)).collect();
        let e = loss.forward(&batch(&emb, None)).unwrap_err().to_string();
        assert!(
            e.contains("needs teacher scores") && e.contains("(3, 2) scores") && !e.contains('\n'),
            "{e}"
        );
        // Margins (B, N) or a (B,) label do not fit: the softmax needs every candidate's score.
        for shape in [vec![3i64, 1], vec![3]] {
            let l = Tensor::zeros(shape.as_slice(), (Kind::Double, tch::Device::Cpu));
            let e = loss
                .forward(&batch(&emb, Some(&l)))
                .unwrap_err()
                .to_string();
            assert!(e.contains("expected (3, 2) scores"), "{e}");
        }
        for bad in [
            "temperature=0",
            "student_temperature=-1",
            "teacher_temperature=-0.5",
        ] {
            let e = testing::build::<dyn ContrastiveLoss>("distill-kl", &[bad])
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"))
                .to_string();
            let key = bad.split('=').next().unwrap();
            assert!(
                e.contains("distill-kl")
                    && e.contains(&format!("{key} must be a positive finite number")),
                "{e}"
            );
        }
        let e = check_columns("distill-kl", &emb[..2], 3, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 3"), "{e}");
    }
}
