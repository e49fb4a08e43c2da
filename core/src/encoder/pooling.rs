//! Token embeddings to one vector per text, as sentence-transformers' `Pooling` module
//! (sentence_transformers/sentence_transformer/modules/pooling.py): modes `cls`, `max`,
//! `mean`, `mean_sqrt_len_tokens`, `weightedmean`, `lasttoken`, several concatenated in
//! the configured order; `include_prompt: false` drops the prompt's tokens from the mask.
//! Both config spellings are read: legacy `{"word_embedding_dimension", "pooling_mode_*"}`
//! and newer `{"embedding_dimension", "pooling_mode": "mean" | [..], "include_prompt"}`.

use std::path::Path;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// One pooling mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolingMode {
    /// The first token's embedding.
    Cls,
    /// The element-wise maximum over real tokens.
    Max,
    /// The mean over real tokens.
    Mean,
    /// The sum over real tokens divided by the square root of their count.
    MeanSqrtLen,
    /// The mean weighted by token position (1-based).
    WeightedMean,
    /// The last real token's embedding.
    LastToken,
}

impl PoolingMode {
    /// The reference's name of the mode.
    pub fn name(self) -> &'static str {
        match self {
            PoolingMode::Cls => "cls",
            PoolingMode::Max => "max",
            PoolingMode::Mean => "mean",
            PoolingMode::MeanSqrtLen => "mean_sqrt_len_tokens",
            PoolingMode::WeightedMean => "weightedmean",
            PoolingMode::LastToken => "lasttoken",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "cls" => PoolingMode::Cls,
            "max" => PoolingMode::Max,
            "mean" => PoolingMode::Mean,
            "mean_sqrt_len_tokens" => PoolingMode::MeanSqrtLen,
            "weightedmean" => PoolingMode::WeightedMean,
            "lasttoken" => PoolingMode::LastToken,
            _ => return None,
        })
    }

    /// Legacy config keys in the order the reference converts them.
    const LEGACY: [(&'static str, PoolingMode); 6] = [
        ("pooling_mode_cls_token", PoolingMode::Cls),
        ("pooling_mode_max_tokens", PoolingMode::Max),
        ("pooling_mode_mean_tokens", PoolingMode::Mean),
        (
            "pooling_mode_mean_sqrt_len_tokens",
            PoolingMode::MeanSqrtLen,
        ),
        (
            "pooling_mode_weightedmean_tokens",
            PoolingMode::WeightedMean,
        ),
        ("pooling_mode_lasttoken", PoolingMode::LastToken),
    ];
}

/// A configured pooling module.
#[derive(Debug, Clone)]
pub struct Pooling {
    /// Width of the token embeddings it pools.
    pub dimension: i64,
    /// The modes, concatenated in this order (output width = modes x dimension).
    pub modes: Vec<PoolingMode>,
    /// Whether prompt tokens are pooled (`include_prompt`; false skips the prompt).
    pub include_prompt: bool,
}

impl Pooling {
    /// Mean pooling over `dimension`-wide token embeddings (what the reference uses for a
    /// plain Hugging Face folder).
    pub fn mean(dimension: i64) -> Self {
        Pooling {
            dimension,
            modes: vec![PoolingMode::Mean],
            include_prompt: true,
        }
    }

    /// Parses a pooling `config.json` (either spelling); `dir` names the folder in errors.
    pub fn from_config(dir: &Path, v: &serde_json::Value) -> Result<Self> {
        let bad = |m: String| Error::model(dir, format!("config.json: {m}"));
        let dimension = v
            .get("embedding_dimension")
            .or_else(|| v.get("word_embedding_dimension"))
            .and_then(|d| d.as_i64())
            .ok_or_else(|| {
                bad("embedding_dimension (or word_embedding_dimension) is missing".into())
            })?;
        let valid = "cls, max, mean, mean_sqrt_len_tokens, weightedmean, lasttoken";
        let modes = match v.get("pooling_mode") {
            Some(serde_json::Value::String(s)) => {
                vec![PoolingMode::parse(s).ok_or_else(|| {
                    bad(format!(
                        "pooling mode '{s}' is not supported (supported: {valid})"
                    ))
                })?]
            }
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|m| {
                    let s = m.as_str().unwrap_or_default();
                    PoolingMode::parse(s).ok_or_else(|| {
                        bad(format!(
                            "pooling mode '{s}' is not supported (supported: {valid})"
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            Some(other) => {
                return Err(bad(format!(
                    "pooling_mode {other} is neither a string nor a list"
                )))
            }
            None => {
                let m: Vec<PoolingMode> = PoolingMode::LEGACY
                    .iter()
                    .filter(|(k, _)| v.get(*k).and_then(|b| b.as_bool()).unwrap_or(false))
                    .map(|(_, m)| *m)
                    .collect();
                if m.is_empty() {
                    vec![PoolingMode::Mean]
                } else {
                    m
                }
            }
        };
        if modes.is_empty() {
            return Err(bad("pooling_mode is empty".into()));
        }
        let include_prompt = v
            .get("include_prompt")
            .and_then(|b| b.as_bool())
            .unwrap_or(true);
        Ok(Pooling {
            dimension,
            modes,
            include_prompt,
        })
    }

    /// The legacy config that every sentence-transformers version reads.
    pub fn legacy_config(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("word_embedding_dimension".into(), self.dimension.into());
        for (k, mode) in PoolingMode::LEGACY {
            m.insert(k.into(), self.modes.contains(&mode).into());
        }
        m.insert("include_prompt".into(), self.include_prompt.into());
        serde_json::Value::Object(m)
    }

    /// Width of the pooled vector.
    pub fn output_dimension(&self) -> i64 {
        self.dimension * self.modes.len() as i64
    }

    /// Pools `tokens (b, s, h)` under `mask (b, s)` (1 = real; padding on the right or
    /// the left) into `(b, h * modes)`. `prompt_length` (when `include_prompt` is false)
    /// drops the first real tokens of every row from the mask (after any left padding, as
    /// the reference's `Pooling._exclude_prompt_from_mask`).
    pub fn forward(
        &self,
        tokens: &Tensor,
        mask: &Tensor,
        prompt_length: Option<usize>,
    ) -> Result<Tensor> {
        let (b, s, h) = tokens.size3()?;
        if h != self.dimension {
            return Err(Error::Invalid(format!(
                "pooling expects {}-wide token embeddings, got {h}",
                self.dimension
            )));
        }
        let kind = tokens.kind();
        let mut mask = mask.shallow_clone();
        if let (false, Some(pl)) = (self.include_prompt, prompt_length) {
            // First real column of each row: 0 with right padding, the pad count with left.
            let first = mask.to_kind(Kind::Int).argmax(1, true); // (b, 1)
            let keep = Tensor::arange(s, (Kind::Int64, mask.device()))
                .view([1, s])
                .ge_tensor(&(first + pl as i64));
            mask = &mask * keep.to_kind(mask.kind());
        }
        let m = mask.to_kind(kind).unsqueeze(-1); // (b, s, 1)
        let mut outs: Vec<Tensor> = Vec::with_capacity(self.modes.len());
        for mode in &self.modes {
            let v = match mode {
                PoolingMode::Cls => {
                    // First real position (0 with right padding).
                    let first = mask.to_kind(Kind::Int).argmax(1, false); // (b,)
                    tokens
                        .gather(1, &first.view([b, 1, 1]).expand([b, 1, h], false), false)
                        .squeeze_dim(1)
                }
                PoolingMode::Max => tokens
                    .masked_fill(&m.eq(0.0), f64::NEG_INFINITY)
                    .amax([1], false),
                PoolingMode::Mean | PoolingMode::MeanSqrtLen => {
                    let sum = (tokens * &m).sum_dim_intlist(1, false, kind);
                    let n = m.sum_dim_intlist(1, false, kind).clamp_min(1e-9);
                    if *mode == PoolingMode::Mean {
                        sum / n
                    } else {
                        sum / n.sqrt()
                    }
                }
                PoolingMode::WeightedMean => {
                    let wts =
                        Tensor::arange_start(1, s + 1, (kind, tokens.device())).view([1, s, 1]);
                    let wm = &m * wts;
                    let sum = (tokens * &wm).sum_dim_intlist(1, false, kind);
                    sum / wm.sum_dim_intlist(1, false, kind).clamp_min(1e-9)
                }
                PoolingMode::LastToken => {
                    // Last real position; a row with no real token takes position 0.
                    let (values, idx) = mask.flip([1]).max_dim(1, false);
                    let idx = idx.where_self(&values.ne(0), &idx.full_like(s - 1));
                    let last = (idx.neg() + (s - 1))
                        .view([b, 1, 1])
                        .expand([b, 1, h], false);
                    (tokens * &m).gather(1, &last, false).squeeze_dim(1)
                }
            };
            outs.push(v);
        }
        Ok(if outs.len() == 1 {
            outs.pop().unwrap()
        } else {
            Tensor::cat(&outs, -1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(v).view(shape)
    }

    #[test]
    fn legacy_and_new_configs() {
        let p = Pooling::from_config(
            Path::new("x"),
            &serde_json::json!({"word_embedding_dimension": 4, "pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true}),
        )
        .unwrap();
        assert_eq!(p.modes, vec![PoolingMode::Cls, PoolingMode::Mean]);
        let p = Pooling::from_config(Path::new("x"), &serde_json::json!({"embedding_dimension": 4, "pooling_mode": "lasttoken", "include_prompt": false})).unwrap();
        assert_eq!(p.modes, vec![PoolingMode::LastToken]);
        assert!(!p.include_prompt);
        assert!(Pooling::from_config(
            Path::new("x"),
            &serde_json::json!({"embedding_dimension": 4, "pooling_mode": "median"})
        )
        .is_err());
    }

    #[test]
    fn modes_against_loops() {
        // b=2, s=3, h=2; row 0 has 3 real tokens, row 1 has 2.
        let tok = t(
            &[1., 2., 3., 4., 5., 6., -1., 0., 7., 8., 100., 100.],
            &[2, 3, 2],
        );
        let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 0]).view([2, 3]);
        let run = |mode, pl: Option<usize>, inc: bool| {
            let p = Pooling {
                dimension: 2,
                modes: vec![mode],
                include_prompt: inc,
            };
            Vec::<f32>::try_from(p.forward(&tok, &mask, pl).unwrap().flatten(0, -1)).unwrap()
        };
        assert_eq!(run(PoolingMode::Mean, None, true), vec![3., 4., 3., 4.]);
        assert_eq!(run(PoolingMode::Cls, None, true), vec![1., 2., -1., 0.]);
        assert_eq!(run(PoolingMode::Max, None, true), vec![5., 6., 7., 8.]);
        assert_eq!(
            run(PoolingMode::LastToken, None, true),
            vec![5., 6., 7., 8.]
        );
        // Left padding: last token is the last column; a 1-token prompt is skipped after
        // the padding (row 1 = [pad, 7 8, 100 100] pools [100 100] alone).
        let left = Tensor::from_slice(&[1i64, 1, 1, 0, 1, 1]).view([2, 3]);
        let tok_left = t(
            &[1., 2., 3., 4., 5., 6., -1., 0., 7., 8., 100., 100.],
            &[2, 3, 2],
        );
        let run_left = |mode, pl: Option<usize>| {
            let p = Pooling {
                dimension: 2,
                modes: vec![mode],
                include_prompt: false,
            };
            Vec::<f32>::try_from(p.forward(&tok_left, &left, pl).unwrap().flatten(0, -1)).unwrap()
        };
        assert_eq!(
            run_left(PoolingMode::LastToken, None),
            vec![5., 6., 100., 100.]
        );
        assert_eq!(
            run_left(PoolingMode::Mean, Some(1)),
            vec![4., 5., 100., 100.]
        );
        assert_eq!(run_left(PoolingMode::Cls, None), vec![1., 2., 7., 8.]);
        // Skipping a 1-token prompt: row 0 means tokens 1..3, row 1 token 1.
        assert_eq!(run(PoolingMode::Mean, Some(1), false), vec![4., 5., 7., 8.]);
        assert_eq!(run(PoolingMode::Mean, Some(1), true), vec![3., 4., 3., 4.]);
        let w = run(PoolingMode::WeightedMean, None, true);
        assert!((w[0] - (1. + 2. * 3. + 3. * 5.) / 6.).abs() < 1e-6);
    }
}
