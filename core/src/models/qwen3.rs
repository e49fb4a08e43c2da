//! Qwen3 as a causal sentence encoder (`model_type: qwen3`, as in Qwen3-Embedding),
//! following transformers/models/qwen3/modeling_qwen3.py (`Qwen3Model`):
//!
//! h = embed(ids); per layer: input_layernorm -> q/k/v proj -> q_norm/k_norm (RMSNorm over
//! head_dim) -> RoPE (rotate-half, `rope_theta`) -> causal attention (scale head_dim^-0.5,
//! grouped-query) -> o_proj -> residual; post_attention_layernorm -> down(silu(gate(x)) *
//! up(x)) -> residual; final norm. RMSNorm is the plain-weight kind: normalized in fp32,
//! cast back, then `w *` ([`RmsWeight::Plain`]).
//!
//! Padding: Qwen3-Embedding's tokenizer pads on the left so that the last column holds
//! every row's last token (its pooling is `lasttoken`). Positions are column indices
//! `0..s` whatever the padding, as `Qwen3Model` builds `position_ids` from
//! `cache_position` when none are passed (sentence-transformers passes none): with left
//! padding a row's first real token has position = its pad count. RoPE attention depends on
//! position differences only, so this shifts results by rounding alone, but the same
//! positions keep them equal to the reference's.
//!
//! Not supported, each rejected with a clear error: sliding-window layers
//! (`use_sliding_window`, off in Qwen3-Embedding), `attention_bias: true`, activations other
//! than `silu`, rope types other than default and linear. `tie_word_embeddings` does not
//! matter (no LM head); an `lm_head.weight` in the checkpoint is kept and saved back.
//! Checkpoint names are `Qwen3Model`'s (`embed_tokens.weight`, `layers.N...`,
//! `norm.weight`); a `model.` prefix (a `Qwen3ForCausalLM` checkpoint) is accepted.

use std::path::Path;

use serde::Deserialize;
use tch::{Kind, Tensor};

use super::layers::{
    apply_rope, attention, causal_mask, gated_mlp, rms_norm, GateActivation, RmsWeight, Rope, Unpad,
};
use super::lora::{CastWeights, PreparedLinear};
use super::params::{Checkpoint, ParamId, ParamTable};
use super::{Architecture, Stages};
use crate::error::{Error, Result};

/// The fields of a Qwen3 `config.json` that the forward pass uses (defaults as
/// transformers' `Qwen3Config`).
#[derive(Debug, Clone, Deserialize)]
struct Qwen3Config {
    vocab_size: i64,
    hidden_size: i64,
    intermediate_size: i64,
    num_hidden_layers: usize,
    num_attention_heads: i64,
    #[serde(default)]
    num_key_value_heads: Option<i64>,
    #[serde(default)]
    head_dim: Option<i64>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    attention_dropout: f64,
    #[serde(default)]
    use_sliding_window: bool,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
    #[serde(default)]
    rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: i64,
    /// The pad token: transformers builds the embedding with `padding_idx` = this id, so
    /// its row never gets a gradient (Qwen3-Embedding pads with `<|endoftext|>`, which is
    /// also the appended last token pooling reads).
    #[serde(default)]
    pad_token_id: Option<i64>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".into()
}
fn default_max_pos() -> i64 {
    32_768
}

struct Layer {
    q: ParamId,
    k: ParamId,
    v: ParamId,
    o: ParamId,
    q_norm: ParamId,
    k_norm: ParamId,
    ln_in: ParamId,
    ln_post_attn: ParamId,
    gate: ParamId,
    up: ParamId,
    down: ParamId,
}

/// A causal Qwen3 encoder whose weights live in a [`ParamTable`].
pub struct Qwen3 {
    cfg: Qwen3Config,
    /// Key/value heads (`num_key_value_heads`, or the query heads when absent).
    nkv: i64,
    /// Width of one head (`head_dim`, or hidden / heads when absent).
    head_dim: i64,
    embed: ParamId,
    norm: ParamId,
    layers: Vec<Layer>,
    rope: Rope,
}

struct LayerW {
    qkv: PreparedLinear,
    o: PreparedLinear,
    q_norm: Tensor,
    k_norm: Tensor,
    ln_in: Tensor,
    ln_post_attn: Tensor,
    gate_up: PreparedLinear,
    down: PreparedLinear,
}

/// Qwen3's weights prepared for one precision (per training step, or once per `encode`).
pub struct Qwen3Weights {
    embed: Tensor,
    norm: Tensor,
    layers: Vec<LayerW>,
    kind: Kind,
}

/// `(rope_theta, linear factor)` from transformers 5.x's `rope_parameters` or the older
/// top-level `rope_theta` + `rope_scaling`; transformers' default base is 10000.
fn rope_settings(dir: &Path, cfg: &Qwen3Config) -> Result<(f64, f64)> {
    let params = cfg
        .rope_parameters
        .as_ref()
        .filter(|v| v.is_object())
        .or(cfg.rope_scaling.as_ref().filter(|v| v.is_object()));
    let theta = cfg
        .rope_parameters
        .as_ref()
        .and_then(|r| r.get("rope_theta"))
        .and_then(|v| v.as_f64())
        .or(cfg.rope_theta)
        .unwrap_or(10_000.0);
    let factor = match params {
        None => 1.0,
        Some(rp) => {
            let ty = rp
                .get("rope_type")
                .or_else(|| rp.get("type"))
                .and_then(|v| v.as_str())
                .unwrap_or("default");
            match ty {
                "default" => 1.0,
                "linear" => rp.get("factor").and_then(|v| v.as_f64()).unwrap_or(1.0),
                other => {
                    return Err(Error::model(
                        dir,
                        format!("config.json: rope_type '{other}' is not supported for qwen3 (supported: default, linear)"),
                    ))
                }
            }
        }
    };
    Ok((theta, factor))
}

impl Architecture for Qwen3 {
    type Weights = Qwen3Weights;
    const STAGED: bool = true;

    fn load(
        dir: &Path,
        config: &serde_json::Value,
        ckpt: &mut Checkpoint,
        params: &mut ParamTable,
    ) -> Result<Self> {
        let cfg: Qwen3Config = super::parse_config(dir, config, "qwen3")?;
        let sliding = cfg
            .layer_types
            .as_ref()
            .is_some_and(|t| t.iter().any(|t| t != "full_attention"));
        if cfg.use_sliding_window || sliding {
            return Err(Error::model(
                dir,
                "config.json: qwen3 with sliding-window layers (use_sliding_window: true or a non-full layer_types entry) is not supported; set use_sliding_window to false (Qwen3-Embedding uses full attention)",
            ));
        }
        if cfg.attention_bias {
            return Err(Error::model(
                dir,
                "config.json: attention_bias=true is not supported for qwen3 (Qwen3 checkpoints have no attention biases)",
            ));
        }
        if cfg.hidden_act != "silu" {
            return Err(Error::model(
                dir,
                format!(
                    "config.json: hidden_act '{}' is not supported for qwen3 (supported: silu)",
                    cfg.hidden_act
                ),
            ));
        }
        let nh = cfg.num_attention_heads;
        let nkv = cfg.num_key_value_heads.unwrap_or(nh);
        if nh <= 0 || nkv <= 0 || nh % nkv != 0 {
            return Err(Error::model(
                dir,
                "config.json: num_attention_heads must be a positive multiple of num_key_value_heads",
            ));
        }
        let hd = cfg.head_dim.unwrap_or(cfg.hidden_size / nh);
        if hd <= 0 || hd % 2 != 0 {
            return Err(Error::model(
                dir,
                format!("config.json: head_dim {hd} must be positive and even (rotary embeddings rotate pairs)"),
            ));
        }
        if let Some(t) = &cfg.layer_types {
            if t.len() != cfg.num_hidden_layers {
                return Err(Error::model(
                    dir,
                    format!(
                        "config.json: layer_types has {} entries for {} layers",
                        t.len(),
                        cfg.num_hidden_layers
                    ),
                ));
            }
        }
        let (theta, factor) = rope_settings(dir, &cfg)?;
        ckpt.detect_prefix("embed_tokens.weight", &["model."]);
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let mut p = |name: &str, shape: &[i64]| ckpt.param(params, "", name, shape);
        let embed = p("embed_tokens.weight", &[cfg.vocab_size, h])?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let pre = format!("layers.{l}.");
            let mut q = |name: &str, shape: &[i64]| p(&format!("{pre}{name}"), shape);
            layers.push(Layer {
                q: q("self_attn.q_proj.weight", &[nh * hd, h])?,
                k: q("self_attn.k_proj.weight", &[nkv * hd, h])?,
                v: q("self_attn.v_proj.weight", &[nkv * hd, h])?,
                o: q("self_attn.o_proj.weight", &[h, nh * hd])?,
                q_norm: q("self_attn.q_norm.weight", &[hd])?,
                k_norm: q("self_attn.k_norm.weight", &[hd])?,
                ln_in: q("input_layernorm.weight", &[h])?,
                ln_post_attn: q("post_attention_layernorm.weight", &[h])?,
                gate: q("mlp.gate_proj.weight", &[i, h])?,
                up: q("mlp.up_proj.weight", &[i, h])?,
                down: q("mlp.down_proj.weight", &[h, i])?,
            });
        }
        let norm = p("norm.weight", &[h])?;
        Ok(Qwen3 {
            rope: Rope::new(theta, hd, factor)?,
            cfg,
            nkv,
            head_dim: hd,
            embed,
            norm,
            layers,
        })
    }

    fn hidden_size(&self) -> i64 {
        self.cfg.hidden_size
    }

    /// `max_position_embeddings`.
    fn max_positions(&self) -> i64 {
        self.cfg.max_position_embeddings
    }

    /// The token embedding table.
    fn embedding_ids(&self) -> Vec<ParamId> {
        vec![self.embed]
    }

    /// Casts, and fuses q/k/v and gate/up into one matrix each per layer.
    fn prepare(&self, w: &CastWeights<'_>, kind: Kind) -> Qwen3Weights {
        let layers = self
            .layers
            .iter()
            .map(|l| LayerW {
                qkv: w.linear(&[l.q, l.k, l.v], None),
                o: w.linear(&[l.o], None),
                q_norm: w[l.q_norm].shallow_clone(),
                k_norm: w[l.k_norm].shallow_clone(),
                ln_in: w[l.ln_in].shallow_clone(),
                ln_post_attn: w[l.ln_post_attn].shallow_clone(),
                gate_up: w.linear(&[l.gate, l.up], None),
                down: w.linear(&[l.down], None),
            })
            .collect();
        Qwen3Weights {
            embed: w[self.embed].shallow_clone(),
            norm: w[self.norm].shallow_clone(),
            layers,
            kind,
        }
    }

    /// Stages: token embeddings, one per layer, final norm and re-padding. The hidden
    /// states between them are the real tokens' rows `(t, h)`. Causal attention over the
    /// real tokens, padding on either side; attention dropout only when `train` (Qwen3 has
    /// no hidden dropout).
    fn stages<'a>(
        &'a self,
        w: &'a Qwen3Weights,
        ids: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Result<Option<Box<dyn Stages + 'a>>> {
        let (b, s) = ids.size2()?;
        let kind = w.kind;
        // Unpadded: linear layers, norms and residuals on the real tokens only; q, k, v are
        // scattered into the (b, s) layout for rotary embeddings and attention, and the
        // attention output gathered back (layers::Unpad).
        let unpad = Unpad::new(mask, b, s);
        // Query q sees the real keys k <= q; positions are the columns 0..s (see the
        // module docs on left padding). With left padding the padded queries see no key:
        // their row is all the finite mask minimum, so softmax stays finite (uniform), and
        // Unpad drops those rows anyway.
        let causal = causal_mask(mask, None, kind)?;
        Ok(Some(Box::new(Qwen3Stages {
            qwen: self,
            w,
            tok_ids: unpad.tokens(ids),
            unpad,
            causal,
            rope: self.rope.cos_sin(s, ids.device(), kind),
            b,
            s,
            train,
            p_attn: if train {
                self.cfg.attention_dropout
            } else {
                0.0
            },
        })))
    }
}

/// One batch's forward through [`Qwen3`], cut into [`Stages`].
struct Qwen3Stages<'a> {
    qwen: &'a Qwen3,
    w: &'a Qwen3Weights,
    /// The real tokens' ids `(t,)`.
    tok_ids: Tensor,
    unpad: Unpad,
    /// Additive causal mask over the real keys.
    causal: Tensor,
    /// `(cos, sin)`, each `(s, head_dim)`.
    rope: (Tensor, Tensor),
    b: i64,
    s: i64,
    /// Training: dropout on (LoRA branch dropout).
    train: bool,
    /// Attention dropout probability (0 outside training).
    p_attn: f64,
}

impl Qwen3Stages<'_> {
    fn norm(&self, x: &Tensor, w: &Tensor) -> Tensor {
        rms_norm(x, w, self.qwen.cfg.rms_norm_eps, RmsWeight::Plain)
    }
}

impl Stages for Qwen3Stages<'_> {
    fn num_layers(&self) -> usize {
        self.w.layers.len()
    }

    /// The token embeddings, gathered from the fp32 table and cast: `(t, h)`. The pad row
    /// gets no gradient (`padding_idx` = `pad_token_id`, as transformers'
    /// `nn.Embedding(..., padding_idx)` in models/qwen3/modeling_qwen3.py).
    fn embed(&self) -> Result<Tensor> {
        let pad = self.qwen.cfg.pad_token_id.unwrap_or(-1);
        Ok(
            Tensor::f_embedding(&self.w.embed, &self.tok_ids, pad, false, false)?
                .to_kind(self.w.kind),
        )
    }

    /// Pre-norm layer: RMSNorm, q/k/v, q/k RMSNorm, RoPE, causal attention, o_proj,
    /// residual; RMSNorm, SiLU-gated MLP, residual.
    fn layer(&self, i: usize, x: &Tensor) -> Result<Tensor> {
        let (lw, unpad, (b, s)) = (&self.w.layers[i], &self.unpad, (self.b, self.s));
        let (hd, nh, nkv) = (
            self.qwen.head_dim,
            self.qwen.cfg.num_attention_heads,
            self.qwen.nkv,
        );
        let (cos, sin) = &self.rope;
        let r = self.norm(x, &lw.ln_in);
        let qkv = unpad
            .to_padded(&lw.qkv.forward(&r, self.train))
            .view([b, s, -1]); // (b, s, (nh + 2 nkv) hd)
        let parts = qkv.split_with_sizes([nh * hd, nkv * hd, nkv * hd], -1);
        let q = parts[0].view([b, s, nh, hd]).transpose(1, 2); // (b, nh, s, hd)
        let k = parts[1].view([b, s, nkv, hd]).transpose(1, 2); // (b, nkv, s, hd)
        let v = parts[2].view([b, s, nkv, hd]).transpose(1, 2);
        let q = apply_rope(&self.norm(&q, &lw.q_norm), cos, sin);
        let k = apply_rope(&self.norm(&k, &lw.k_norm), cos, sin);
        let a = attention(&q, &k, &v, &self.causal, self.p_attn, None)?; // scale hd^-0.5
        let a = unpad.from_padded(&a.transpose(1, 2).reshape([b * s, nh * hd]));
        let a = lw.o.forward(&a, self.train); // (t, h)
                                              // Out of place: `+=` would modify a tensor autograd saved.
        let x = x + a;
        let f = gated_mlp(
            &self.norm(&x, &lw.ln_post_attn),
            &lw.gate_up,
            &lw.down,
            GateActivation::Silu,
            self.train,
        );
        Ok(x + f)
    }

    /// Final RMSNorm, `(t, h)` back to `(b, s, h)` (zeros at padding).
    fn finish(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.qwen.cfg.hidden_size;
        Ok(self
            .unpad
            .to_padded(&self.norm(x, &self.w.norm))
            .view([self.b, self.s, h]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: serde_json::Value) -> serde_json::Value {
        let mut v = serde_json::json!({
            "model_type": "qwen3", "vocab_size": 10, "hidden_size": 8,
            "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 1, "head_dim": 6
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    fn load_err(config: serde_json::Value) -> String {
        let dir = Path::new("m");
        let mut ckpt = Checkpoint::new(dir, "model.safetensors", Default::default());
        let mut params = ParamTable::new(tch::Device::Cpu);
        match Qwen3::load(dir, &config, &mut ckpt, &mut params) {
            Ok(_) => panic!("loaded"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn unsupported_configs_are_named() {
        let e = load_err(cfg(serde_json::json!({"use_sliding_window": true})));
        assert!(e.contains("use_sliding_window"), "{e}");
        let e = load_err(cfg(
            serde_json::json!({"layer_types": ["sliding_attention"]}),
        ));
        assert!(e.contains("sliding-window"), "{e}");
        let e = load_err(cfg(serde_json::json!({"attention_bias": true})));
        assert!(e.contains("attention_bias"), "{e}");
        let e = load_err(cfg(serde_json::json!({"hidden_act": "gelu"})));
        assert!(e.contains("hidden_act 'gelu'"), "{e}");
        let e = load_err(cfg(
            serde_json::json!({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6}}),
        ));
        assert!(e.contains("rope_type 'yarn'"), "{e}");
        // A good config reaches the checkpoint, which is empty here.
        let e = load_err(cfg(serde_json::json!({})));
        assert!(e.contains("embed_tokens.weight"), "{e}");
    }

    #[test]
    fn rope_theta_from_either_spelling() {
        let dir = Path::new("m");
        let parse =
            |v: serde_json::Value| -> Qwen3Config { serde_json::from_value(cfg(v)).unwrap() };
        let new = parse(
            serde_json::json!({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}),
        );
        assert_eq!(rope_settings(dir, &new).unwrap(), (1e6, 1.0));
        let old = parse(serde_json::json!({"rope_theta": 5e5, "rope_scaling": null}));
        assert_eq!(rope_settings(dir, &old).unwrap(), (5e5, 1.0));
        let none = parse(serde_json::json!({}));
        assert_eq!(rope_settings(dir, &none).unwrap(), (10_000.0, 1.0));
    }
}
