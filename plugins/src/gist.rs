//! `gist`: GISTEmbedLoss (Solatorio 2024, arXiv:2402.16829): InfoNCE whose in-batch negatives
//! are vetted by a guide model. The guide embeds the batch's texts without gradients; a
//! candidate the guide scores above the anchor-positive pair (minus a margin) is a likely
//! false negative and leaves the softmax. Follows
//! `sentence_transformers/sentence_transformer/losses/gist_embed.py` (6.0.1), `forward`, and
//! for more than one hard-negative column `cached_gist_embed.py`, `calculate_loss` (the
//! non-cached reference takes at most one). `cached-gist` reuses [`gist_loss`] and [`Guide`].
//!
//! The options ([`GistConfig`]) and the registration are torch-free (`embtune list` shows
//! them in every build); the loss and the guide need the `torch` feature.

use embtune_core::register_loss;
#[cfg(feature = "torch")]
use embtune_core::{ContrastiveLoss, Error, LossBatch, LossInputs, Result};
use serde::{Deserialize, Serialize};
#[cfg(feature = "torch")]
use tch::Tensor;

#[cfg(feature = "torch")]
use crate::loss_math::{check_columns, checked_mask, cos_sim};

/// How the guide's anchor-positive score becomes the threshold above which a candidate is
/// dropped (the reference's `margin_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarginStrategy {
    /// Drop a candidate whose guide score is `> positive_score - margin`.
    Absolute,
    /// Drop a candidate whose guide score is `> positive_score - |positive_score| * margin`.
    Relative,
}

/// Options of `gist`; names and defaults are the reference's (its `gather_across_devices`
/// is not offered: training runs on one device).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GistConfig {
    /// The guide model: a sentence-transformers folder or a Hugging Face id. Required.
    pub guide: Option<String>,
    /// Logits are `cos / temperature`.
    pub temperature: f64,
    /// `absolute` or `relative`.
    pub margin_strategy: MarginStrategy,
    /// Margin of the false-negative filter; 0 drops candidates the guide scores above the pair.
    pub margin: f64,
    /// Add the anchor-anchor block (other anchors as negatives).
    pub contrast_anchors: bool,
    /// Add the positive-positive block (other positives as negatives of row i's positive).
    pub contrast_positives: bool,
}

impl Default for GistConfig {
    fn default() -> Self {
        GistConfig {
            guide: None,
            temperature: 0.01,
            margin_strategy: MarginStrategy::Absolute,
            margin: 0.0,
            contrast_anchors: true,
            contrast_positives: true,
        }
    }
}

#[cfg(feature = "torch")]
impl GistConfig {
    /// Checks the numeric options as the reference's constructor would; `loss` names the loss
    /// in errors. The guide is checked when it is loaded ([`Guide::load`]).
    pub fn validate(&self, loss: &'static str) -> Result<()> {
        let invalid = |message: String| Error::PluginConfig {
            kind: "loss",
            plugin: loss.to_string(),
            message,
        };
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(invalid(format!(
                "temperature must be a positive number, got {}",
                self.temperature
            )));
        }
        if !self.margin.is_finite() {
            return Err(invalid(format!(
                "margin must be a finite number, got {}",
                self.margin
            )));
        }
        if self.guide.as_deref().is_some_and(|g| g.trim().is_empty()) {
            return Err(invalid(
                "guide is empty; give a model folder or a Hugging Face id".to_string(),
            ));
        }
        Ok(())
    }
}

/// The GIST loss of fixed embeddings.
///
/// `embeddings = [anchors, positives, negatives...]`, each `(B, D)`; `guide` the guide's
/// embeddings of the same columns, each `(B, Dg)` (any device and float kind: only their
/// cosine similarities are compared, in their own precision). `duplicate_mask` is
/// [`LossBatch::duplicate_mask`], `(B, B*(C-1))`.
///
/// With `t = guide cos(a_i, p_i)` and `thr_i = t - margin` (absolute) or
/// `t - |t| * margin` (relative), each block of row i's candidates, a-p `(B, B)`, a-a
/// (`contrast_anchors`), p-p (`contrast_positives`) and a-n_k for every negative column,
/// gets `-inf` where the guide's score of the same pair is `> thr_i` (strictly), except row
/// i's own positive in the a-p block (the a-a and p-p diagonals, guide score 1, drop out).
/// The duplicate mask drops the same candidates as in `mnrl`: its first B columns in the
/// a-p, a-a and p-p blocks, column block k in a-n_k. Loss = mean_i cross-entropy of
/// `cat(blocks) / temperature` to target i. Returns a 0-d tensor.
#[cfg(feature = "torch")]
pub fn gist_loss(
    cfg: &GistConfig,
    embeddings: &[Tensor],
    guide: &[Tensor],
    duplicate_mask: Option<&Tensor>,
) -> Result<Tensor> {
    gist_loss_named("gist", cfg, embeddings, guide, duplicate_mask)
}

#[cfg(feature = "torch")]
pub(crate) fn gist_loss_named(
    loss: &str,
    cfg: &GistConfig,
    embeddings: &[Tensor],
    guide: &[Tensor],
    duplicate_mask: Option<&Tensor>,
) -> Result<Tensor> {
    let n = embeddings.len();
    let (b, _d) = check_columns(loss, embeddings, 2, None)?;
    let (gb, _dg) = check_columns(loss, guide, n, Some(n))
        .map_err(|e| Error::Invalid(format!("{e} (guide embeddings: one per embedding column)")))?;
    if gb != b {
        return Err(Error::Invalid(format!(
            "loss '{loss}': guide embeddings have {gb} rows but the batch has {b}"
        )));
    }
    let device = embeddings[0].device();
    let docs = (n - 1) as i64;
    let batch = LossBatch {
        embeddings,
        labels: None,
        duplicate_mask,
        texts: None,
    };
    let dup = checked_mask(loss, &batch, b, docs, device)?; // (b, b * docs)
    let dup_block = |k: i64| -> Result<Option<Tensor>> {
        Ok(match &dup {
            Some(m) => Some(m.f_narrow(1, k * b, b)?),
            None => None,
        })
    };
    let guide: Vec<Tensor> = guide
        .iter()
        .map(|g| g.f_to_device(device))
        .collect::<std::result::Result<_, _>>()?;
    let (anchor, positive) = (&embeddings[0], &embeddings[1]);
    let (anchor_g, positive_g) = (&guide[0], &guide[1]);

    let guided_ap = cos_sim(anchor_g, positive_g)?; // (b, b)
    let guided_sim = guided_ap.f_diagonal(0, 0, 1)?.f_view([-1, 1])?; // (b, 1)
    let threshold = match cfg.margin_strategy {
        MarginStrategy::Absolute => guided_sim.f_sub_scalar(cfg.margin)?,
        MarginStrategy::Relative => {
            guided_sim.f_sub(&guided_sim.f_abs()?.f_mul_scalar(cfg.margin)?)?
        }
    }; // (b, 1)
    let eye = Tensor::f_eye(b, (tch::Kind::Bool, device))?;
    // The reference's mask_false_negatives: -inf where the guide scores the candidate above
    // the row's threshold (never the own positive when `protect` is given).
    let suppress = |guided: Tensor,
                    sim: Tensor,
                    protect: Option<&Tensor>,
                    dup: Option<Tensor>|
     -> Result<Tensor> {
        let mut mask = guided.f_gt_tensor(&threshold)?; // (b, b)
        if let Some(own) = protect {
            mask = mask.f_logical_and(&own.f_logical_not()?)?;
        }
        if let Some(d) = dup {
            mask = mask.f_logical_or(&d)?;
        }
        Ok(sim.f_masked_fill(&mask, f64::NEG_INFINITY)?)
    };

    let first = dup_block(0)?;
    let mut scores = vec![suppress(
        guided_ap,
        cos_sim(anchor, positive)?,
        Some(&eye),
        first.as_ref().map(Tensor::shallow_clone),
    )?];
    if cfg.contrast_anchors {
        scores.push(suppress(
            cos_sim(anchor_g, anchor_g)?,
            cos_sim(anchor, anchor)?,
            None,
            first.as_ref().map(Tensor::shallow_clone),
        )?);
    }
    if cfg.contrast_positives {
        scores.push(suppress(
            cos_sim(positive_g, positive_g)?,
            cos_sim(positive, positive)?,
            None,
            first.as_ref().map(Tensor::shallow_clone),
        )?);
    }
    for k in 2..n {
        scores.push(suppress(
            cos_sim(anchor_g, &guide[k])?,
            cos_sim(anchor, &embeddings[k])?,
            None,
            dup_block(k as i64 - 1)?,
        )?);
    }
    let logits = Tensor::f_cat(&scores, 1)?.f_div_scalar(cfg.temperature)?; // (b, b * blocks)
    let target = logits.f_narrow(1, 0, b)?.f_diagonal(0, 0, 1)?; // (b,)
    let log_z = logits.f_logsumexp([1i64].as_slice(), false)?;
    Ok(log_z.f_sub(&target)?.f_mean(None::<tch::Kind>)?)
}

/// A guide model, loaded on first use, that embeds a batch's texts without gradients.
#[cfg(feature = "torch")]
pub struct Guide {
    loss: &'static str,
    spec: Option<String>,
    /// Texts per guide forward (None: a whole column at once).
    chunk: Option<usize>,
    /// Behind a mutex because `forward` takes `&self` and may load it on first use.
    loaded: std::sync::Mutex<Option<LoadedGuide>>,
}

/// The guide's encoder and its weights, prepared once (they never change).
#[cfg(feature = "torch")]
struct LoadedGuide {
    encoder: embtune_core::encoder::SentenceEncoder,
    weights: embtune_core::encoder::PreparedWeights,
}

#[cfg(feature = "torch")]
impl Guide {
    /// A guide for loss `loss` (named in errors) from the `guide` option; nothing is loaded yet.
    pub fn new(loss: &'static str, spec: Option<String>, chunk: Option<usize>) -> Self {
        Guide {
            loss,
            spec,
            chunk,
            loaded: std::sync::Mutex::new(None),
        }
    }

    fn error(&self, message: String) -> Error {
        Error::PluginConfig {
            kind: "loss",
            plugin: self.loss.to_string(),
            message,
        }
    }

    /// Loads the guide on `device` (again when it is on another device). A missing `guide`
    /// option or a guide that cannot load is an [`Error::PluginConfig`] naming `guide`.
    pub fn load(&self, device: tch::Device) -> Result<()> {
        let mut slot = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|g| g.encoder.device() == device) {
            return Ok(());
        }
        *slot = None;
        let encoder = self.open(device)?;
        let weights = tch::no_grad(|| encoder.prepare());
        *slot = Some(LoadedGuide { encoder, weights });
        Ok(())
    }

    fn open(&self, device: tch::Device) -> Result<embtune_core::encoder::SentenceEncoder> {
        let Some(spec) = self.spec.as_deref() else {
            return Err(self.error(
                "guide is required: give guide=<model folder or Hugging Face id> \
                 (e.g. --loss-opt guide=BAAI/bge-m3)"
                    .to_string(),
            ));
        };
        let path = std::path::Path::new(spec);
        let loaded =
            embtune_core::hub::resolve_model(path, &embtune_core::hub::HubConfig::from_env())
                .and_then(|dir| embtune_core::encoder::SentenceEncoder::load(&dir, device));
        loaded.map_err(|e| {
            let why = match &e {
                Error::Model { path: p, message } if p == path => message.clone(),
                other => other.to_string(),
            };
            let hint = if why.contains("Hugging Face id") {
                ""
            } else {
                "; give a model folder or a Hugging Face id"
            };
            self.error(format!("guide={spec}: {why}{hint}"))
        })
    }

    /// The guide's embeddings of `batch.texts`, one `(B, Dg)` fp32 tensor per column on
    /// `device`: each column's texts with its prompt prepended, tokenized by the guide's own
    /// tokenizer (truncated at its max_seq_length), embedded in eval mode under `no_grad`.
    /// Loads the guide on `device` first when [`Self::load`] has not run.
    pub fn embed(&self, batch: &LossBatch<'_>, device: tch::Device) -> Result<Vec<Tensor>> {
        let texts = batch.texts.ok_or_else(|| {
            Error::Invalid(format!(
                "loss '{}': the batch carries no texts, and the guide model must embed them \
                 (the trainer fills LossBatch::texts for losses whose needs_texts() is true)",
                self.loss
            ))
        })?;
        let n = batch.embeddings.len();
        if texts.columns.len() != n || texts.prompts.len() != n {
            return Err(Error::Invalid(format!(
                "loss '{}': the batch has {n} embedding columns but {} text columns and {} prompts",
                self.loss,
                texts.columns.len(),
                texts.prompts.len()
            )));
        }
        self.load(device)?;
        let slot = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let LoadedGuide {
            encoder: guide,
            weights,
        } = slot.as_ref().expect("loaded above");
        let _no_grad = tch::no_grad_guard();
        let mut out = Vec::with_capacity(n);
        for (column, prompt) in texts.columns.iter().zip(texts.prompts) {
            let chunk = self.chunk.unwrap_or(column.len()).max(1);
            let mut parts = Vec::with_capacity(column.len().div_ceil(chunk));
            for rows in column.chunks(chunk) {
                let tokens = guide.tokenize_with_prompt(rows, prompt.as_deref())?;
                parts.push(guide.forward_prepared(weights, &tokens, false)?);
            }
            out.push(Tensor::f_cat(&parts, 0)?.f_to_device(device)?);
        }
        Ok(out)
    }
}

/// The `gist` loss.
#[cfg(feature = "torch")]
pub struct Gist {
    cfg: GistConfig,
    guide: Guide,
}

#[cfg(feature = "torch")]
impl Gist {
    /// Builds the loss from its options; the guide loads in `to_device` (or the first forward).
    pub fn new(cfg: GistConfig) -> Result<Self> {
        cfg.validate("gist")?;
        let guide = Guide::new("gist", cfg.guide.clone(), None);
        Ok(Gist { cfg, guide })
    }
}

#[cfg(feature = "torch")]
impl ContrastiveLoss for Gist {
    fn inputs(&self) -> LossInputs {
        LossInputs::Texts { min: 2, max: None }
    }

    fn forward(&self, batch: &LossBatch<'_>) -> Result<Tensor> {
        check_columns("gist", batch.embeddings, 2, None)?;
        let guide = self.guide.embed(batch, batch.embeddings[0].device())?;
        gist_loss_named(
            "gist",
            &self.cfg,
            batch.embeddings,
            &guide,
            batch.duplicate_mask,
        )
    }

    fn needs_texts(&self) -> bool {
        true
    }

    fn to_device(&mut self, device: tch::Device) -> Result<()> {
        self.guide.load(device)
    }
}

/// The options part of the long help, shared with `cached-gist`.
macro_rules! gist_options_doc {
    () => {
        "Options (names and defaults as sentence-transformers):
  guide=PATH|ID            the guide model: a sentence-transformers folder or a Hugging Face id
                           (required); it embeds every column again, prompt + text, with its own
                           tokenizer, without gradients and without dropout
  temperature=0.01         logits = cos / temperature (MNRL's scale 20 is temperature 0.05)
  margin_strategy=absolute absolute: drop a candidate whose guide score > s - margin;
                           relative: drop it when guide score > s - |s| * margin,
                           where s = the guide's cos(anchor_i, positive_i)
  margin=0                 0: drop the candidates the guide ranks above the true pair
  contrast_anchors=true    other anchors are negatives too (anchor-anchor block)
  contrast_positives=true  other positives are negatives of positive i (positive-positive block)
Identical texts inside a batch are masked out as in mnrl unless --no-dedupe (the guide
drops most of them anyway: an identical text scores 1)."
    };
}
pub(crate) use gist_options_doc;

register_loss!(
    name: "gist",
    summary: "GISTEmbedLoss: InfoNCE whose in-batch negatives a guide model vets (false negatives dropped)",
    long: concat!(
        "GISTEmbedLoss (Solatorio 2024). Input: (anchor, positive[, negative_1, ...]) columns.
A guide model embeds the same texts; for anchor i, every in-batch candidate (other positives,
other anchors, other positives of positive i, the hard negatives) that the guide scores
above the guide's anchor_i-positive_i similarity (minus a margin) is taken for a false
negative and left out. The rest form one softmax over cos / temperature that must pick
positive i; loss = mean cross-entropy. Same value and gradients as sentence-transformers'
GISTEmbedLoss given the same guide embeddings (more than one negative column: as its
CachedGISTEmbedLoss). Costs one guide forward (no gradients) per batch.
",
        gist_options_doc!()
    ),
    config: GistConfig,
    build: |c| Ok(Box::new(Gist::new(c)?)),
);

#[cfg(all(test, feature = "torch"))]
mod tests {
    use super::*;
    use crate::loss_math::test_support::{cos, logsumexp, permute_rows, rows, to_vec2};
    use embtune_core::loss::duplicate_mask;
    use embtune_core::testing::{self, random_embeddings};

    fn columns(n: usize, b: i64, d: i64, seed: i64) -> Vec<Tensor> {
        (0..n)
            .map(|k| random_embeddings(b, d, seed * 10 + k as i64))
            .collect()
    }

    /// GIST by loops, straight from the reference's description.
    fn naive(
        cfg: &GistConfig,
        emb: &[Vec<Vec<f64>>],
        guide: &[Vec<Vec<f64>>],
        mask: Option<&[Vec<bool>]>,
    ) -> f64 {
        let b = emb[0].len();
        let mut total = 0.0;
        for i in 0..b {
            let s = cos(&guide[0][i], &guide[1][i]);
            let thr = match cfg.margin_strategy {
                MarginStrategy::Absolute => s - cfg.margin,
                MarginStrategy::Relative => s - s.abs() * cfg.margin,
            };
            let dup =
                |c: usize, j: usize| mask.is_some_and(|m| m[i][c * b + j]) && !(c == 0 && j == i);
            let mut terms = Vec::new();
            // (query column, candidate column, duplicate-mask block)
            let mut blocks = vec![(0, 1, 0)];
            if cfg.contrast_anchors {
                blocks.push((0, 0, 0));
            }
            if cfg.contrast_positives {
                blocks.push((1, 1, 0));
            }
            for k in 2..emb.len() {
                blocks.push((0, k, k - 1));
            }
            for (bi, &(q, c, m)) in blocks.iter().enumerate() {
                for j in 0..b {
                    let own = bi == 0 && j == i;
                    let dropped = cos(&guide[q][i], &guide[c][j]) > thr || dup(m, j);
                    if own || !dropped {
                        terms.push(cos(&emb[q][i], &emb[c][j]) / cfg.temperature);
                    }
                }
            }
            total += logsumexp(&terms) - cos(&emb[0][i], &emb[1][i]) / cfg.temperature;
        }
        total / b as f64
    }

    fn value(cfg: &GistConfig, emb: &[Tensor], guide: &[Tensor], m: Option<&Tensor>) -> f64 {
        gist_loss(cfg, emb, guide, m).unwrap().double_value(&[])
    }

    #[test]
    fn vectorized_equals_naive_loop() {
        let variants = [
            GistConfig::default(),
            GistConfig {
                margin: 0.1,
                temperature: 0.05,
                ..GistConfig::default()
            },
            GistConfig {
                margin_strategy: MarginStrategy::Relative,
                margin: 0.3,
                contrast_anchors: false,
                ..GistConfig::default()
            },
            GistConfig {
                contrast_positives: false,
                margin: -0.2,
                ..GistConfig::default()
            },
        ];
        for cfg in &variants {
            for n in [2, 3, 5] {
                let emb = columns(n, 6, 5, n as i64);
                let guide = columns(n, 6, 3, 100 + n as i64);
                let texts: Vec<Vec<String>> = (0..n)
                    .map(|c| (0..6).map(|i| format!("t{}", (c * 7 + i) % 9)).collect())
                    .collect();
                let cols: Vec<&[String]> = texts.iter().map(Vec::as_slice).collect();
                let mask = duplicate_mask(&cols).unwrap();
                for m in [None, Some(&mask)] {
                    let got = value(cfg, &emb, &guide, m);
                    let want = naive(cfg, &rows(&emb), &rows(&guide), m.map(to_vec2).as_deref());
                    assert!(
                        (got - want).abs() < 1e-10 * want.abs().max(1.0),
                        "{cfg:?} n={n}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn permuting_the_batch_leaves_the_loss_unchanged() {
        let perm = [3, 0, 4, 1, 5, 2];
        let cfg = GistConfig {
            margin: 0.05,
            ..GistConfig::default()
        };
        let emb = columns(3, 6, 5, 7);
        let guide = columns(3, 6, 4, 8);
        let a = value(&cfg, &emb, &guide, None);
        let b = value(
            &cfg,
            &permute_rows(&emb, &perm),
            &permute_rows(&guide, &perm),
            None,
        );
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn a_guide_that_agrees_with_everything_leaves_only_the_positive() {
        // Every guide vector equal: every candidate scores 1 = the pair's score, so nothing
        // is strictly above it and all stay; a margin of 0.5 drops them all.
        let emb = columns(3, 4, 5, 2);
        let same = Tensor::ones([4, 3], (tch::Kind::Double, tch::Device::Cpu));
        let guide = vec![same.shallow_clone(), same.shallow_clone(), same];
        let keep = value(&GistConfig::default(), &emb, &guide, None);
        assert!(keep > 0.0);
        let cfg = GistConfig {
            margin: 0.5,
            ..GistConfig::default()
        };
        let v = value(&cfg, &emb, &guide, None);
        assert!(v.abs() < 1e-12, "only the positive left: loss 0, got {v}");
    }

    #[test]
    fn gradients_reach_every_column_and_not_the_guide() {
        let emb: Vec<Tensor> = columns(3, 5, 4, 3)
            .into_iter()
            .map(|t| t.set_requires_grad(true))
            .collect();
        let guide = columns(3, 5, 4, 4);
        let cfg = GistConfig {
            margin: 0.3,
            ..GistConfig::default()
        };
        gist_loss(&cfg, &emb, &guide, None).unwrap().backward();
        for (k, e) in emb.iter().enumerate() {
            assert!(e.grad().defined(), "column {k} has no gradient");
            assert!(bool::try_from(e.grad().isfinite().all()).unwrap());
        }
        assert!(!guide[0].requires_grad());
    }

    #[test]
    fn options_and_inputs_are_checked() {
        let build = |o: &[&str]| {
            testing::build::<dyn ContrastiveLoss>("gist", o)
                .err()
                .map(|e| e.to_string())
        };
        assert!(build(&["temperature=0"]).unwrap().contains("temperature"));
        let e = build(&["margin_strategy=sideways"]).unwrap();
        assert!(e.contains("absolute") && e.contains("relative"), "{e}");
        let e = build(&["scale=20"]).unwrap();
        assert!(
            e.contains("unknown option 'scale'") && e.contains("guide"),
            "{e}"
        );
        assert!(build(&["guide=some/model", "margin=0.1", "margin_strategy=relative"]).is_none());

        // No guide: building works (the registry builds every loss from {}), using it does not.
        let mut loss = testing::build::<dyn ContrastiveLoss>("gist", &[]).unwrap();
        assert!(loss.needs_texts());
        let e = loss.to_device(tch::Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("loss 'gist'") && e.contains("guide"), "{e}");

        let mut loss =
            testing::build::<dyn ContrastiveLoss>("gist", &["guide=/nonexistent/guide"]).unwrap();
        let e = loss.to_device(tch::Device::Cpu).unwrap_err().to_string();
        assert!(
            e.starts_with("loss 'gist': guide=/nonexistent/guide: ") && !e.contains('\n'),
            "{e}"
        );

        // Without texts the guide has nothing to embed.
        let emb = columns(2, 3, 4, 1);
        let batch = LossBatch {
            embeddings: &emb,
            labels: None,
            duplicate_mask: None,
            texts: None,
        };
        let e = loss.forward(&batch).unwrap_err().to_string();
        assert!(e.contains("no texts"), "{e}");

        // Guide columns must match the embedding columns.
        let e = gist_loss(&GistConfig::default(), &emb, &emb[..1], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("guide embeddings"), "{e}");
    }
}
