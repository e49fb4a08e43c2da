//! `mnrl`: MultipleNegativesRankingLoss (InfoNCE with in-batch negatives), with any number of
//! hard-negative columns, the reference's optional directions (symmetric, GTE-style) and
//! hardness weighting. Follows
//! `sentence_transformers/sentence_transformer/losses/multiple_negatives_ranking.py` (6.0.1),
//! `compute_loss_from_embeddings`. `simcse` and `cached-mnrl` reuse [`Ranking`].

//!
//! The options ([`MnrlConfig`]) and the registration are torch-free (`embtune list` shows
//! them in every build); the loss itself needs the `torch` feature.

use embtune_core::register_loss;
#[cfg(feature = "torch")]
use embtune_core::{ContrastiveLoss, Error, LossBatch, LossInputs, Result};
use serde::{Deserialize, Deserializer, Serialize};
#[cfg(feature = "torch")]
use tch::Tensor;

#[cfg(feature = "torch")]
use crate::loss_math::{check_columns, checked_mask, cos_sim, own_documents, own_positive};

/// One similarity interaction term of the ranking loss (the reference's `directions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Query i against every document of the batch (positives and hard negatives); always on.
    QueryToDoc,
    /// Query i against every other query.
    QueryToQuery,
    /// Positive i against every query (the symmetric term).
    DocToQuery,
    /// Positive i against every document that does not belong to query i.
    DocToDoc,
}

/// How the selected directions share the softmax denominator (the reference's `partition_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionMode {
    /// One softmax over the candidates of every direction.
    Joint,
    /// One softmax per direction; the log-partitions are averaged.
    PerDirection,
}

/// Which negatives get the hardness penalty `hardness_strength * stop_grad(cos)` added to
/// their logit (the reference's `hardness_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HardnessMode {
    /// Other rows' positives and negatives (Lan et al. 2025).
    InBatchNegatives,
    /// The row's own hard negatives only (EmbeddingGemma, strength 5).
    HardNegatives,
    /// Every negative.
    AllNegatives,
}

/// Options of `mnrl`; names and defaults are the reference's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MnrlConfig {
    /// Logits are `scale * cos`; `scale = 1 / temperature`.
    pub scale: f64,
    /// Interaction terms: a list or a comma-separated string of `query_to_doc`,
    /// `query_to_query`, `doc_to_query`, `doc_to_doc`; must include `query_to_doc`.
    #[serde(deserialize_with = "directions_list")]
    pub directions: Vec<Direction>,
    /// `joint` or `per_direction` (the latter only with `query_to_doc`/`doc_to_query`).
    pub partition_mode: PartitionMode,
    /// null (off), `in_batch_negatives`, `hard_negatives` or `all_negatives`.
    pub hardness_mode: Option<HardnessMode>,
    /// Strength alpha of the hardness penalty, >= 0.
    pub hardness_strength: f64,
    /// Shorthand for `directions=query_to_doc,doc_to_query partition_mode=per_direction`
    /// (the reference's MultipleNegativesSymmetricRankingLoss).
    pub symmetric: bool,
}

impl Default for MnrlConfig {
    fn default() -> Self {
        MnrlConfig {
            scale: 20.0,
            directions: vec![Direction::QueryToDoc],
            partition_mode: PartitionMode::Joint,
            hardness_mode: None,
            hardness_strength: 0.0,
            symmetric: false,
        }
    }
}

fn directions_list<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<Direction>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<Direction>),
        Csv(String),
    }
    match ListOrString::deserialize(d)? {
        ListOrString::List(v) => Ok(v),
        ListOrString::Csv(s) => s
            .split(',')
            .map(|w| {
                Direction::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(w.trim()))
            })
            .collect(),
    }
}

/// The validated ranking loss shared by `mnrl`, `simcse` and `cached-mnrl`.
#[cfg(feature = "torch")]
#[derive(Debug, Clone)]
pub struct Ranking {
    scale: f64,
    directions: [bool; 4],
    per_direction: bool,
    hardness: Option<(HardnessMode, f64)>,
}

#[cfg(feature = "torch")]
impl Ranking {
    /// The plain InfoNCE of SimCSE: query -> documents, one softmax, at `scale`.
    pub fn info_nce(scale: f64) -> Result<Self> {
        Self::new(
            &MnrlConfig {
                scale,
                ..MnrlConfig::default()
            },
            "simcse",
        )
    }

    /// Validates `cfg` as the reference does; `loss` names the loss in errors.
    pub fn new(cfg: &MnrlConfig, loss: &'static str) -> Result<Self> {
        let invalid = |message: String| Error::PluginConfig {
            kind: "loss",
            plugin: loss.to_string(),
            message,
        };
        if !(cfg.scale > 0.0 && cfg.scale.is_finite()) {
            return Err(invalid(format!(
                "scale must be a positive number, got {}",
                cfg.scale
            )));
        }
        let (directions, partition_mode) = if cfg.symmetric {
            let default = MnrlConfig::default();
            if cfg.directions != default.directions || cfg.partition_mode != default.partition_mode
            {
                return Err(invalid(
                    "symmetric=true sets directions and partition_mode itself; give either symmetric or those two"
                        .to_string(),
                ));
            }
            (
                vec![Direction::QueryToDoc, Direction::DocToQuery],
                PartitionMode::PerDirection,
            )
        } else {
            (cfg.directions.clone(), cfg.partition_mode)
        };
        if !directions.contains(&Direction::QueryToDoc) {
            return Err(invalid(
                "directions must include query_to_doc (it holds the positive pair)".to_string(),
            ));
        }
        let has = |d| directions.contains(&d);
        let per_direction = partition_mode == PartitionMode::PerDirection;
        if per_direction && (has(Direction::QueryToQuery) || has(Direction::DocToDoc)) {
            return Err(invalid(
                "partition_mode=per_direction needs every direction to contain the positive pair; \
                 query_to_query and doc_to_doc do not: use partition_mode=joint"
                    .to_string(),
            ));
        }
        if cfg.hardness_strength.is_nan() || cfg.hardness_strength < 0.0 {
            return Err(invalid(format!(
                "hardness_strength must be >= 0, got {}",
                cfg.hardness_strength
            )));
        }
        Ok(Ranking {
            scale: cfg.scale,
            directions: [
                true,
                has(Direction::QueryToQuery),
                has(Direction::DocToQuery),
                has(Direction::DocToDoc),
            ],
            per_direction,
            hardness: cfg
                .hardness_mode
                .filter(|_| cfg.hardness_strength > 0.0)
                .map(|m| (m, cfg.hardness_strength)),
        })
    }

    /// The loss of `batch.embeddings = [queries, positives, negatives...]`, each `(B, D)`.
    ///
    /// Logits of query->doc are `(B, B*(C-1))` with row i's positive at column i; masked
    /// candidates (self-pairs of query_to_query, the row's own documents in doc_to_doc,
    /// duplicates from `batch.duplicate_mask`) get `-inf`. The duplicate mask applies to
    /// query->doc and doc->doc as given, to query->query through its first B columns and to
    /// doc->query through their transpose. Loss = mean_i(logZ_i - logit_ii).
    pub fn loss(&self, loss: &str, batch: &LossBatch<'_>) -> Result<Tensor> {
        let emb = batch.embeddings;
        let (b, _d) = check_columns(loss, emb, 2, None)?;
        let docs = (emb.len() - 1) as i64;
        let device = emb[0].device();
        let queries = &emb[0];
        let docs_pos = &emb[1];
        let docs_all = Tensor::f_cat(&emb[1..], 0)?; // (b * docs, d)
        let dup = checked_mask(loss, batch, b, docs, device)?;
        let dup_first = dup.as_ref().map(|m| m.f_narrow(1, 0, b)).transpose()?; // (b, b)
        let ninf = f64::NEG_INFINITY;
        let [_, q2q_on, d2q_on, d2d_on] = self.directions;

        let q2d_cos = cos_sim(queries, &docs_all)?; // (b, b * docs)
        let mut q2d = q2d_cos.f_mul_scalar(self.scale)?;
        if let Some((mode, strength)) = self.hardness {
            let own = own_documents(b, docs, device)?;
            let pos = own_positive(b, docs, device)?;
            let excluded = match mode {
                HardnessMode::HardNegatives => {
                    own.f_logical_and(&pos.f_logical_not()?)?.f_logical_not()?
                }
                HardnessMode::InBatchNegatives => own,
                HardnessMode::AllNegatives => pos,
            };
            let penalty = q2d_cos
                .f_detach()?
                .f_mul_scalar(strength)?
                .f_masked_fill(&excluded, 0.0)?;
            q2d = q2d.f_add(&penalty)?;
        }
        if let Some(m) = &dup {
            q2d = q2d.f_masked_fill(m, ninf)?;
        }
        let positive = q2d.f_narrow(1, 0, b)?.f_diagonal(0, 0, 1)?; // (b,)

        let mut logits = vec![q2d];
        if q2q_on {
            let eye = tch::Tensor::f_eye(b, (tch::Kind::Bool, device))?;
            let mut q2q = cos_sim(queries, queries)?
                .f_mul_scalar(self.scale)?
                .f_masked_fill(&eye, ninf)?;
            if let Some(m) = &dup_first {
                q2q = q2q.f_masked_fill(m, ninf)?;
            }
            logits.push(q2q);
        }
        if d2q_on {
            let mut d2q = cos_sim(queries, docs_pos)?
                .f_transpose(0, 1)?
                .f_mul_scalar(self.scale)?;
            if let Some(m) = &dup_first {
                d2q = d2q.f_masked_fill(&m.f_transpose(0, 1)?, ninf)?;
            }
            logits.push(d2q);
        }
        if d2d_on {
            let own = own_documents(b, docs, device)?;
            let mut d2d = cos_sim(&docs_all, docs_pos)?
                .f_transpose(0, 1)?
                .f_mul_scalar(self.scale)?;
            d2d = d2d.f_masked_fill(&own, ninf)?;
            if let Some(m) = &dup {
                d2d = d2d.f_masked_fill(m, ninf)?;
            }
            logits.push(d2d);
        }

        let log_z = if self.per_direction {
            let n = logits.len() as f64;
            let mut sum = logits[0].f_logsumexp([1i64].as_slice(), false)?;
            for l in &logits[1..] {
                sum = sum.f_add(&l.f_logsumexp([1i64].as_slice(), false)?)?;
            }
            sum.f_div_scalar(n)?
        } else {
            Tensor::f_cat(&logits, 1)?.f_logsumexp([1i64].as_slice(), false)?
        };
        Ok(log_z.f_sub(&positive)?.f_mean(None::<tch::Kind>)?)
    }
}

/// The `mnrl` loss.
#[cfg(feature = "torch")]
pub struct Mnrl {
    ranking: Ranking,
}

#[cfg(feature = "torch")]
impl Mnrl {
    /// Builds the loss from its options.
    pub fn new(cfg: MnrlConfig) -> Result<Self> {
        Ok(Mnrl {
            ranking: Ranking::new(&cfg, "mnrl")?,
        })
    }
}

#[cfg(feature = "torch")]
impl ContrastiveLoss for Mnrl {
    fn inputs(&self) -> LossInputs {
        LossInputs::Texts { min: 2, max: None }
    }

    fn forward(&self, batch: &LossBatch<'_>) -> Result<Tensor> {
        self.ranking.loss("mnrl", batch)
    }
}

/// The options part of the long help, shared with `cached-mnrl`.
macro_rules! ranking_options_doc {
    () => {
        "Options (names and defaults as sentence-transformers):
  scale=20                 logits = scale * cos (temperature 1/scale; the original script used 30)
  directions=query_to_doc  comma-separated terms: query_to_doc (always), query_to_query,
                           doc_to_query (symmetric), doc_to_doc (GTE uses all four, joint)
  partition_mode=joint     joint: one softmax over all terms; per_direction: one per term, averaged
  symmetric=false          shorthand for directions=query_to_doc,doc_to_query
                           partition_mode=per_direction (MultipleNegativesSymmetricRankingLoss)
  hardness_mode=null       in_batch_negatives | hard_negatives | all_negatives: adds
  hardness_strength=0      hardness_strength * stop_grad(cos) to those negatives' logits
                           (EmbeddingGemma: hard_negatives, 5)
Identical texts inside a batch (a candidate equal to the row's anchor or positive, or the
positive of another row with the same anchor) are masked out of the negatives unless
--no-dedupe."
    };
}
pub(crate) use ranking_options_doc;

register_loss!(
    name: "mnrl",
    summary: "MultipleNegativesRankingLoss: InfoNCE over in-batch negatives plus any hard-negative columns",
    long: concat!(
        "MultipleNegativesRankingLoss (InfoNCE). Input: (anchor, positive[, negative_1, ...]) columns.
For each anchor, the softmax over scale * cos(anchor, every document of the batch: all
positives and all negatives) must pick its own positive; loss = mean cross-entropy.
Same value and gradients as sentence-transformers' MultipleNegativesRankingLoss.
",
        ranking_options_doc!()
    ),
    config: MnrlConfig,
    build: |c| Ok(Box::new(Mnrl::new(c)?)),
);

#[cfg(all(test, feature = "torch"))]
mod tests {
    use super::*;
    use crate::loss_math::test_support::{naive_ranking, permute_rows, rows, to_vec2};
    use embtune_core::loss::duplicate_mask;
    use embtune_core::testing::{self, random_embeddings};

    fn batch_loss(loss: &dyn ContrastiveLoss, emb: &[Tensor], mask: Option<&Tensor>) -> f64 {
        let batch = LossBatch {
            embeddings: emb,
            labels: None,
            duplicate_mask: mask,
            texts: None,
        };
        loss.forward(&batch).unwrap().double_value(&[])
    }

    fn columns(n: usize, b: i64, seed: i64) -> Vec<Tensor> {
        (0..n)
            .map(|k| random_embeddings(b, 5, seed * 10 + k as i64))
            .collect()
    }

    #[test]
    fn vectorized_equals_naive_loop() {
        for (opts, symmetric) in [(&[][..], false), (&["symmetric=true"][..], true)] {
            let loss = testing::build::<dyn ContrastiveLoss>("mnrl", opts).unwrap();
            for n in [2, 3, 5] {
                let emb = columns(n, 6, n as i64);
                let texts: Vec<Vec<String>> = (0..n)
                    .map(|c| (0..6).map(|i| format!("t{}", (c * 7 + i) % 9)).collect())
                    .collect();
                let cols: Vec<&[String]> = texts.iter().map(Vec::as_slice).collect();
                let mask = duplicate_mask(&cols).unwrap();
                for m in [None, Some(&mask)] {
                    let got = batch_loss(&*loss, &emb, m);
                    let want =
                        naive_ranking(&rows(&emb), 20.0, symmetric, m.map(to_vec2).as_deref());
                    assert!(
                        (got - want).abs() < 1e-10 * want.abs().max(1.0),
                        "n={n} sym={symmetric}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn permuting_the_batch_leaves_the_loss_unchanged() {
        let perm = [3, 0, 4, 1, 5, 2];
        for opts in [
            &[][..],
            &["symmetric=true"][..],
            &["directions=query_to_doc,query_to_query,doc_to_query,doc_to_doc"][..],
        ] {
            let loss = testing::build::<dyn ContrastiveLoss>("mnrl", opts).unwrap();
            let emb = columns(3, 6, 7);
            let permuted = permute_rows(&emb, &perm);
            let (a, b) = (
                batch_loss(&*loss, &emb, None),
                batch_loss(&*loss, &permuted, None),
            );
            assert!((a - b).abs() < 1e-12, "{opts:?}: {a} vs {b}");
        }
    }

    #[test]
    fn dedupe_mask_changes_the_loss_exactly_when_duplicates_exist() {
        let loss = testing::build::<dyn ContrastiveLoss>("mnrl", &[]).unwrap();
        let emb = columns(3, 4, 3);
        let distinct: [&[&str]; 3] = [
            &["a", "b", "c", "d"],
            &["p", "q", "r", "s"],
            &["w", "x", "y", "z"],
        ];
        let dup: [&[&str]; 3] = [
            &["a", "b", "c", "d"],
            &["p", "q", "p", "s"],
            &["w", "x", "y", "z"],
        ];
        let plain = batch_loss(&*loss, &emb, None);
        let m = duplicate_mask(&distinct).unwrap();
        assert_eq!(batch_loss(&*loss, &emb, Some(&m)), plain);
        let m = duplicate_mask(&dup).unwrap();
        let masked = batch_loss(&*loss, &emb, Some(&m));
        assert!(
            masked < plain,
            "masking negatives must lower the loss: {masked} vs {plain}"
        );
    }

    #[test]
    fn masking_everything_keeps_the_positive_and_stays_finite() {
        let loss = testing::build::<dyn ContrastiveLoss>("mnrl", &["symmetric=true"]).unwrap();
        let emb = columns(2, 3, 4);
        let all = Tensor::ones([3, 3], (tch::Kind::Bool, tch::Device::Cpu));
        let v = batch_loss(&*loss, &emb, Some(&all));
        assert!(v.abs() < 1e-12, "only the positive left: loss 0, got {v}");
    }

    #[test]
    fn options_are_checked() {
        let build = |o: &[&str]| {
            testing::build::<dyn ContrastiveLoss>("mnrl", o)
                .err()
                .map(|e| e.to_string())
        };
        assert!(build(&["directions=doc_to_query"])
            .unwrap()
            .contains("query_to_doc"));
        assert!(build(&[
            "directions=query_to_doc,query_to_query",
            "partition_mode=per_direction"
        ])
        .unwrap()
        .contains("joint"));
        assert!(build(&["symmetric=true", "partition_mode=per_direction"])
            .unwrap()
            .contains("symmetric"));
        assert!(build(&["scale=0"]).unwrap().contains("positive"));
        assert!(build(&["directions=sideways"])
            .unwrap()
            .contains("bad option value"));
        let e = build(&["temperature=0.05"]).unwrap();
        assert!(
            e.contains("unknown option 'temperature'") && e.contains("scale"),
            "{e}"
        );
        assert!(build(&[
            "directions=[\"query_to_doc\",\"doc_to_query\"]",
            "hardness_mode=hard_negatives"
        ])
        .is_none());
    }

    #[test]
    fn bad_mask_shape_is_an_error() {
        let loss = testing::build::<dyn ContrastiveLoss>("mnrl", &[]).unwrap();
        let emb = columns(3, 4, 1);
        let m = Tensor::zeros([4, 4], (tch::Kind::Bool, tch::Device::Cpu));
        let batch = LossBatch {
            embeddings: &emb,
            labels: None,
            duplicate_mask: Some(&m),
            texts: None,
        };
        let e = loss.forward(&batch).unwrap_err().to_string();
        assert!(e.contains("[4, 8]"), "{e}");
    }
}
