//! `matryoshka`: MatryoshkaLoss, a loss that holds another loss and applies it to the
//! embeddings truncated to each of several leading dimensions (Kusupati et al. 2022). The
//! columns are embedded once; for each dimension `d` the inner loss sees
//! `normalize(e[:, :d])` and the result is `sum_d w_d * inner(normalize(e[:, :d]))`.
//! Follows `sentence_transformers/sentence_transformer/losses/matryoshka.py` (6.0.1): `shrink`
//! (truncate, then L2-normalise with `F.normalize`, eps 1e-12; the full dimension is
//! normalised too), dimensions in decreasing order (the reference sorts them; here they must be given so),
//! weights 1 by default, and `n_dims_per_step` drawing a random subset of the dimensions per
//! step. With a gradient-cache inner loss (`cached-mnrl`) the reference decorates
//! `calculate_loss` to shrink the cached embeddings; here the trainer runs GradCache around
//! this wrapper ([`ContrastiveLoss::mini_batch_size`] is the inner loss's), which computes
//! the same value and the same gradient w.r.t. the embeddings.
//!
//! Options: `loss` (the inner loss's registry name), `matryoshka_dims`, `matryoshka_weights`,
//! `n_dims_per_step`; every other option is the inner loss's
//! (`--loss matryoshka --loss-opt loss=mnrl --loss-opt matryoshka_dims=768,512,256,128
//! --loss-opt hardness_mode=hard_negatives`). The registration is therefore written out by
//! hand rather than with `register_loss!`, whose options are one fixed config type.

#[cfg(feature = "torch")]
use embtune_core::registry::{self, Registration};
use embtune_core::registry::{LossInfo, PluginInfo};
#[cfg(feature = "torch")]
use embtune_core::{ContrastiveLoss, Error, LossBatch, LossInputs, Result};
use serde::{Deserialize, Deserializer, Serialize};
#[cfg(feature = "torch")]
use serde_json::{Map, Value};
#[cfg(feature = "torch")]
use tch::Tensor;

#[cfg(feature = "torch")]
use crate::loss_math::normalize;

/// The registry key.
pub const NAME: &str = "matryoshka";

/// The options that belong to the wrapper; the others go to the inner loss.
pub const OWN_OPTIONS: [&str; 4] = [
    "loss",
    "matryoshka_dims",
    "matryoshka_weights",
    "n_dims_per_step",
];

/// Options of `matryoshka` itself (the reference's argument names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MatryoshkaConfig {
    /// Registry name of the inner loss (any loss but `matryoshka`).
    pub loss: String,
    /// Leading dimensions to train, e.g. `768,512,256,128`; any order (sorted decreasing,
    /// as the reference does), each > 0, no repeats, none above the model's dimension.
    #[serde(deserialize_with = "list_or_csv")]
    pub matryoshka_dims: Vec<i64>,
    /// One weight per dimension, in the order given; null: all 1.
    #[serde(deserialize_with = "optional_list_or_csv")]
    pub matryoshka_weights: Option<Vec<f64>>,
    /// Dimensions per step: -1 all of them, n > 0 a random subset of n each micro-batch.
    pub n_dims_per_step: i64,
}

impl Default for MatryoshkaConfig {
    fn default() -> Self {
        MatryoshkaConfig {
            loss: "mnrl".to_string(),
            matryoshka_dims: vec![768, 512, 256, 128],
            matryoshka_weights: None,
            n_dims_per_step: -1,
        }
    }
}

/// A list given as a JSON array, a comma-separated string or a single number.
#[derive(Deserialize)]
#[serde(untagged)]
enum ListOrCsv<T> {
    List(Vec<T>),
    One(T),
    Csv(String),
}

fn parse_list<T, E>(v: ListOrCsv<T>) -> std::result::Result<Vec<T>, E>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
    E: serde::de::Error,
{
    match v {
        ListOrCsv::List(v) => Ok(v),
        ListOrCsv::One(x) => Ok(vec![x]),
        ListOrCsv::Csv(s) => s
            .split(',')
            .filter(|w| !w.trim().is_empty())
            .map(|w| {
                w.trim()
                    .parse::<T>()
                    .map_err(|e| E::custom(format!("'{}': {e}", w.trim())))
            })
            .collect(),
    }
}

fn list_or_csv<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<i64>, D::Error> {
    parse_list(ListOrCsv::<i64>::deserialize(d)?)
}

fn optional_list_or_csv<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Vec<f64>>, D::Error> {
    match Option::<ListOrCsv<f64>>::deserialize(d)? {
        None => Ok(None),
        Some(v) => parse_list(v).map(Some),
    }
}

/// The `matryoshka` loss: the inner loss and the validated (dimension, weight) pairs,
/// sorted by decreasing dimension.
#[cfg(feature = "torch")]
pub struct Matryoshka {
    inner: Box<dyn ContrastiveLoss>,
    inner_name: String,
    dims: Vec<(i64, f64)>,
    n_dims_per_step: Option<usize>,
}

#[cfg(feature = "torch")]
fn invalid(message: String) -> Error {
    Error::PluginConfig {
        kind: "loss",
        plugin: NAME.to_string(),
        message,
    }
}

#[cfg(feature = "torch")]
impl Matryoshka {
    /// Builds the wrapper from its own options and the inner loss's options.
    pub fn new(cfg: MatryoshkaConfig, inner_options: &Map<String, Value>) -> Result<Self> {
        if cfg.loss == NAME {
            return Err(invalid(
                "loss=matryoshka: the inner loss cannot itself be matryoshka; give another loss \
                 (e.g. loss=mnrl) and list every dimension in matryoshka_dims"
                    .to_string(),
            ));
        }
        let valid_inner = || -> String {
            registry::infos::<dyn ContrastiveLoss>()
                .map(|v| {
                    v.iter()
                        .map(|i| i.name)
                        .filter(|n| *n != NAME)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        let reg: &Registration<dyn ContrastiveLoss> =
            registry::lookup::<dyn ContrastiveLoss>(&cfg.loss).map_err(|_| {
                invalid(format!(
                    "unknown inner loss '{}' in option loss; valid: {}",
                    cfg.loss,
                    valid_inner()
                ))
            })?;
        let inner = reg.build_with(inner_options).map_err(|e| match e {
            Error::PluginConfig { message, .. } => invalid(format!(
                "inner loss '{}': {message} (matryoshka's own options: {})",
                cfg.loss,
                OWN_OPTIONS.join(", ")
            )),
            other => other,
        })?;
        if cfg.matryoshka_dims.is_empty() {
            return Err(invalid(
                "matryoshka_dims is empty; give at least one dimension, e.g. matryoshka_dims=768,512,256,128"
                    .to_string(),
            ));
        }
        if let Some(d) = cfg.matryoshka_dims.iter().find(|&&d| d <= 0) {
            return Err(invalid(format!(
                "matryoshka_dims must all be > 0, got {d} in {:?}",
                cfg.matryoshka_dims
            )));
        }
        let weights = match &cfg.matryoshka_weights {
            None => vec![1.0; cfg.matryoshka_dims.len()],
            Some(w) if w.len() != cfg.matryoshka_dims.len() => {
                return Err(invalid(format!(
                    "matryoshka_weights has {} weight(s) but matryoshka_dims has {} dimension(s); \
                     give one weight per dimension, or leave matryoshka_weights out (all 1)",
                    w.len(),
                    cfg.matryoshka_dims.len()
                )))
            }
            Some(w) => {
                if let Some(x) = w.iter().find(|x| !x.is_finite()) {
                    return Err(invalid(format!(
                        "matryoshka_weights must be finite numbers, got {x}"
                    )));
                }
                w.clone()
            }
        };
        // The reference sorts the (dimension, weight) pairs by decreasing dimension; here they
        // must be given in that order, so the weights plainly belong to the dimensions listed.
        let dims: Vec<(i64, f64)> = cfg.matryoshka_dims.iter().copied().zip(weights).collect();
        if let Some(w) = dims.windows(2).find(|w| w[0].0 <= w[1].0) {
            return Err(invalid(format!(
                "matryoshka_dims must be strictly decreasing, got {} before {} in {:?}; list each \
                 dimension once, largest first, e.g. matryoshka_dims=768,512,256,128",
                w[0].0, w[1].0, cfg.matryoshka_dims
            )));
        }
        let n_dims_per_step = match cfg.n_dims_per_step {
            -1 => None,
            n if n > 0 => Some(n as usize).filter(|&n| n < dims.len()),
            n => {
                return Err(invalid(format!(
                    "n_dims_per_step must be -1 (every dimension each step) or a positive count, got {n}"
                )))
            }
        };
        Ok(Matryoshka {
            inner,
            inner_name: cfg.loss,
            dims,
            n_dims_per_step,
        })
    }

    /// The indices into the sorted dimensions used this step: all of them, or
    /// `n_dims_per_step` drawn without replacement from the torch generator (which the
    /// trainer seeds before every micro-batch, so a resumed run draws the same ones),
    /// in increasing order (decreasing dimension) as the reference sorts its sample.
    fn chosen(&self) -> Result<Vec<usize>> {
        let Some(n) = self.n_dims_per_step else {
            return Ok((0..self.dims.len()).collect());
        };
        let perm =
            Tensor::f_randperm(self.dims.len() as i64, (tch::Kind::Int64, tch::Device::Cpu))?;
        let mut picked: Vec<usize> = Vec::<i64>::try_from(perm.f_narrow(0, 0, n as i64)?)?
            .into_iter()
            .map(|i| i as usize)
            .collect();
        picked.sort_unstable();
        Ok(picked)
    }
}

#[cfg(feature = "torch")]
impl ContrastiveLoss for Matryoshka {
    fn inputs(&self) -> LossInputs {
        self.inner.inputs()
    }

    /// `sum_d w_d * inner(normalize(e[:, :d]) for every column)`, labels, duplicate mask and
    /// texts passed through. Embeddings are `(B, D)`; every dimension must be <= D.
    fn forward(&self, batch: &LossBatch<'_>) -> Result<Tensor> {
        let Some(first) = batch.embeddings.first() else {
            return Err(Error::Invalid(format!(
                "loss '{NAME}': no embedding columns"
            )));
        };
        let full = match first.size()[..] {
            [_, d] => d,
            ref other => {
                return Err(Error::Invalid(format!(
                    "loss '{NAME}': column 0 has shape {other:?}, expected (B, D)"
                )))
            }
        };
        if self.dims[0].0 > full {
            return Err(invalid(format!(
                "matryoshka_dims has {} but the model's embedding dimension is {full}; \
                 use dimensions between 1 and {full}",
                self.dims[0].0
            )));
        }
        let mut total: Option<Tensor> = None;
        for i in self.chosen()? {
            let (dim, weight) = self.dims[i];
            let truncated = batch
                .embeddings
                .iter()
                .map(|e| normalize(&e.f_narrow(1, 0, dim)?))
                .collect::<Result<Vec<Tensor>>>()?;
            let part = self
                .inner
                .forward(&LossBatch {
                    embeddings: &truncated,
                    labels: batch.labels,
                    duplicate_mask: batch.duplicate_mask,
                    texts: batch.texts,
                })?
                .f_mul_scalar(weight)?;
            total = Some(match total {
                None => part,
                Some(t) => t.f_add(&part)?,
            });
        }
        total.ok_or_else(|| {
            Error::Invalid(format!(
                "loss '{NAME}' around '{}': no dimension chosen",
                self.inner_name
            ))
        })
    }

    fn mini_batch_size(&self) -> Option<usize> {
        self.inner.mini_batch_size()
    }

    fn mini_batch_num_tokens(&self) -> Option<usize> {
        self.inner.mini_batch_num_tokens()
    }

    fn needs_texts(&self) -> bool {
        self.inner.needs_texts()
    }

    fn to_device(&mut self, device: tch::Device) -> Result<()> {
        self.inner.to_device(device)
    }

    fn check_embedding_dimension(&self, dimension: i64) -> Result<()> {
        if self.dims[0].0 > dimension {
            return Err(invalid(format!(
                "matryoshka_dims has {} but the model's embedding dimension is {dimension}; \
                 use dimensions between 1 and {dimension}, largest first",
                self.dims[0].0
            )));
        }
        self.inner.check_embedding_dimension(dimension)
    }
}

const SUMMARY: &str =
    "MatryoshkaLoss: another loss on the embeddings truncated to several leading dimensions";

const LONG: &str =
    "MatryoshkaLoss (Matryoshka Representation Learning). Wraps any other loss: the columns are
embedded once and, for each dimension d of matryoshka_dims, the inner loss sees every
embedding truncated to its first d features and L2-normalised again; the loss is
sum_d weight_d * inner_d. The model then works at any of those dimensions
(`embtune encode --truncate-dim d`, `embtune eval --truncate-dim d`).
Same value and gradients as sentence-transformers' MatryoshkaLoss.
Options (names and defaults as sentence-transformers):
  loss=mnrl                        the inner loss's name (any loss but matryoshka)
  matryoshka_dims=768,512,256,128  dimensions (list or comma-separated), strictly
                                   decreasing, each > 0, none above the model's dimension
                                   (checked when training starts)
  matryoshka_weights=null          one weight per dimension, in the order given; null: all 1
  n_dims_per_step=-1               -1: every dimension each step; n > 0: a random n of them
Every other option is the inner loss's, e.g. --loss-opt hardness_mode=hard_negatives
--loss-opt hardness_strength=5 for loss=mnrl, or mini_batch_size=32 for loss=cached-mnrl
(gradient caching and mini_batch_num_tokens then apply to the whole wrapper).";

fn default_config() -> serde_json::Value {
    serde_json::to_value(MatryoshkaConfig::default()).unwrap_or(serde_json::Value::Null)
}

embtune_core::inventory::submit! {
    LossInfo(PluginInfo {
        name: "matryoshka",
        summary: SUMMARY,
        long_doc: LONG,
        origin: module_path!(),
        default_config,
    })
}

/// Splits `value` into the wrapper's options and the inner loss's, and builds the loss.
#[cfg(feature = "torch")]
fn build(value: &Value) -> Result<Box<dyn ContrastiveLoss>> {
    let (mut own, mut rest) = (Map::new(), Map::new());
    match value {
        Value::Null => {}
        Value::Object(m) => {
            for (k, v) in m {
                if OWN_OPTIONS.contains(&k.replace('-', "_").as_str()) {
                    own.insert(k.clone(), v.clone());
                } else {
                    rest.insert(k.clone(), v.clone());
                }
            }
        }
        other => {
            return Err(invalid(format!(
                "config must be a JSON object, got {other}"
            )))
        }
    }
    let cfg: MatryoshkaConfig = registry::parse_config("loss", NAME, &Value::Object(own))?;
    Ok(Box::new(Matryoshka::new(cfg, &rest)?))
}

#[cfg(feature = "torch")]
embtune_core::inventory::submit! {
    Registration::<dyn ContrastiveLoss> {
        name: "matryoshka",
        summary: SUMMARY,
        long_doc: LONG,
        origin: module_path!(),
        default_config,
        build,
    }
}

#[cfg(all(test, feature = "torch"))]
mod tests {
    use super::*;
    use embtune_core::testing::{self, random_embeddings};

    fn build(opts: &[&str]) -> std::result::Result<Box<dyn ContrastiveLoss>, String> {
        testing::build::<dyn ContrastiveLoss>(NAME, opts).map_err(|e| e.to_string())
    }

    fn value(loss: &dyn ContrastiveLoss, emb: &[Tensor]) -> std::result::Result<f64, String> {
        loss.forward(&LossBatch {
            embeddings: emb,
            labels: None,
            duplicate_mask: None,
            texts: None,
        })
        .map(|t| t.double_value(&[]))
        .map_err(|e| e.to_string())
    }

    fn columns(n: i64, b: i64, d: i64) -> Vec<Tensor> {
        (0..n).map(|k| random_embeddings(b, d, 40 + k)).collect()
    }

    #[test]
    fn equals_the_weighted_sum_of_the_inner_loss_on_truncated_columns() {
        let emb = columns(3, 5, 8);
        let m = build(&[
            "loss=mnrl",
            "matryoshka_dims=8,4,2",
            "matryoshka_weights=[1,2,0.5]",
            "scale=30",
        ])
        .unwrap();
        let inner = testing::build::<dyn ContrastiveLoss>("mnrl", &["scale=30"]).unwrap();
        let at = |d: i64| {
            let t: Vec<Tensor> = emb.iter().map(|e| e.narrow(1, 0, d)).collect();
            value(&*inner, &t).unwrap()
        };
        let want = 0.5 * at(2) + 1.0 * at(8) + 2.0 * at(4);
        let got = value(&*m, &emb).unwrap();
        assert!((got - want).abs() < 1e-10, "{got} vs {want}");
    }

    #[test]
    fn delegates_the_hooks_and_the_inner_options() {
        let m = build(&[
            "loss=cached-mnrl",
            "mini_batch_size=4",
            "matryoshka_dims=4,2",
        ])
        .unwrap();
        assert_eq!(m.mini_batch_size(), Some(4));
        assert_eq!(m.inputs(), LossInputs::Texts { min: 2, max: None });
        let m = build(&["loss=cosent", "matryoshka_dims=4"]).unwrap();
        assert!(matches!(m.inputs(), LossInputs::ScoredPairs { .. }));
        assert_eq!(m.mini_batch_size(), None);
        assert!(!m.needs_texts());
    }

    #[test]
    fn a_subset_of_dims_replays_from_the_torch_seed() {
        let emb = columns(2, 4, 8);
        let m = build(&["matryoshka_dims=8,6,4,2", "n_dims_per_step=2"]).unwrap();
        let draw = |seed| {
            tch::manual_seed(seed);
            value(&*m, &emb).unwrap()
        };
        assert_eq!(draw(5), draw(5));
        let distinct: std::collections::BTreeSet<u64> =
            (0..20).map(|s| draw(s).to_bits()).collect();
        assert!(distinct.len() > 1, "different seeds never drew other dims");
        // n_dims_per_step at or above the number of dims is every dim, like -1.
        let all = build(&["matryoshka_dims=8,6,4,2", "n_dims_per_step=4"]).unwrap();
        let every = build(&["matryoshka_dims=8,6,4,2"]).unwrap();
        assert_eq!(value(&*all, &emb), value(&*every, &emb));
    }

    #[test]
    fn bad_input_names_the_option_and_the_valid_values() {
        let e = build(&["loss=matryoshka"]).err().unwrap();
        assert!(
            e.contains("loss=matryoshka") && e.contains("another loss"),
            "{e}"
        );
        let e = build(&["loss=infonce"]).err().unwrap();
        assert!(
            e.contains("'infonce'") && e.contains("option loss") && e.contains("mnrl"),
            "{e}"
        );
        assert!(!e.contains("matryoshka,"), "{e}");
        let e = build(&["matryoshka_dims=8,0"]).err().unwrap();
        assert!(e.contains("matryoshka_dims") && e.contains("> 0"), "{e}");
        for dims in [
            "matryoshka_dims=8,4,8",
            "matryoshka_dims=4,8",
            "matryoshka_dims=8,8",
        ] {
            let e = build(&[dims]).err().unwrap();
            assert!(
                e.contains("matryoshka_dims must be strictly decreasing")
                    && e.contains("e.g. matryoshka_dims=768,512,256,128"),
                "{dims}: {e}"
            );
        }
        let e = build(&["matryoshka_dims=[]"]).err().unwrap();
        assert!(e.contains("matryoshka_dims is empty"), "{e}");
        let e = build(&["matryoshka_dims=8,x"]).err().unwrap();
        assert!(e.contains("bad option value") && e.contains("'x'"), "{e}");
        let e = build(&["matryoshka_dims=8,4", "matryoshka_weights=1"])
            .err()
            .unwrap();
        assert!(
            e.contains("matryoshka_weights has 1") && e.contains("2 dimension"),
            "{e}"
        );
        let e = build(&["n_dims_per_step=0"]).err().unwrap();
        assert!(e.contains("n_dims_per_step") && e.contains("-1"), "{e}");
        let e = build(&["no_such_option=1"]).err().unwrap();
        assert!(
            e.contains("inner loss 'mnrl'")
                && e.contains("unknown option 'no_such_option'")
                && e.contains("scale")
                && e.contains("matryoshka_dims"),
            "{e}"
        );
        let e = build(&["loss=mnrl", "scale=0"]).err().unwrap();
        assert!(
            e.contains("inner loss 'mnrl'") && e.contains("scale"),
            "{e}"
        );
        // Too large for the model: the trainer's check before training (and, failing that,
        // the first forward) says so with the model's dimension.
        let m = build(&["matryoshka_dims=16,8"]).unwrap();
        let e = m.check_embedding_dimension(8).err().unwrap().to_string();
        assert!(
            e.contains("matryoshka_dims has 16") && e.contains("dimension is 8"),
            "{e}"
        );
        m.check_embedding_dimension(16).unwrap();
        let e = value(&*m, &columns(2, 3, 8)).err().unwrap();
        assert!(
            e.contains("matryoshka_dims has 16") && e.contains("dimension is 8"),
            "{e}"
        );
    }

    #[test]
    fn defaults_build_and_list_their_options() {
        let m = build(&[]).unwrap();
        assert_eq!(m.mini_batch_size(), None);
        for k in OWN_OPTIONS {
            assert!(LONG.contains(k), "long doc lacks {k}");
            assert!(
                default_config().get(k).is_some(),
                "default config lacks {k}"
            );
        }
        let cfg: MatryoshkaConfig =
            registry::parse_config("loss", NAME, &default_config()).unwrap();
        assert_eq!(cfg, MatryoshkaConfig::default());
    }
}
