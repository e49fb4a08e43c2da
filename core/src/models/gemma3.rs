//! Gemma3 text with bidirectional attention (`model_type: gemma3_text`,
//! `use_bidirectional_attention: true`, as in EmbeddingGemma), following
//! transformers/models/gemma3/modeling_gemma3.py (`Gemma3TextModel`):
//!
//! h = embed(ids) * sqrt(hidden) (the scale rounded to the compute dtype); per layer:
//! input_layernorm -> q/k/v proj -> q_norm/k_norm (RMSNorm over head_dim) -> RoPE
//! (rotate-half; `rope_theta` per layer type) -> attention (scale query_pre_attn_scalar^-0.5,
//! grouped-query) -> o_proj -> post_attention_layernorm -> residual; pre_feedforward_layernorm
//! -> down(gelu_tanh(gate(x)) * up(x)) -> post_feedforward_layernorm -> residual; final norm.
//! RMSNorm computes in fp32: x * rsqrt(mean(x^2) + eps) * (1 + w).
//!
//! Masks: full-attention layers see every real key; sliding layers see real keys with
//! |q - k| < w where w = sliding_window / 2 + 1 (transformers' Gemma3TextConfig halves the
//! configured window when attention is bidirectional and `config.json` keeps the
//! unhalved value). Without `use_bidirectional_attention` the model is causal, which a
//! sentence encoder with mean pooling does not use: such a config is rejected.
//!
//! Checkpoint names have no `model.` prefix (a prefixed checkpoint is accepted).

use std::path::Path;

use serde::Deserialize;
use tch::{Kind, Tensor};

use super::layers::{
    apply_rope, attention, gated_mlp, padding_mask, rms_norm, sliding_window_mask, GateActivation,
    RmsWeight, Rope, Unpad,
};
use super::lora::{CastWeights, PreparedLinear};
use super::params::{Checkpoint, ParamId, ParamTable};
use super::{Architecture, Stages};
use crate::error::{Error, Result};

/// The fields of a Gemma3 text `config.json` that the forward pass uses.
#[derive(Debug, Clone, Deserialize)]
struct Gemma3Config {
    vocab_size: i64,
    hidden_size: i64,
    intermediate_size: i64,
    num_hidden_layers: usize,
    num_attention_heads: i64,
    num_key_value_heads: i64,
    #[serde(default = "default_head_dim")]
    head_dim: i64,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_act")]
    hidden_activation: String,
    #[serde(default = "default_qpas")]
    query_pre_attn_scalar: f64,
    #[serde(default)]
    sliding_window: Option<i64>,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
    #[serde(default)]
    sliding_window_pattern: Option<usize>,
    #[serde(default)]
    use_bidirectional_attention: Option<bool>,
    #[serde(default)]
    attention_bias: Option<bool>,
    #[serde(default)]
    attention_dropout: Option<f64>,
    #[serde(default)]
    attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_local_base_freq: Option<f64>,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: i64,
}

fn default_head_dim() -> i64 {
    256
}
fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "gelu_pytorch_tanh".into()
}
fn default_qpas() -> f64 {
    256.0
}
fn default_max_pos() -> i64 {
    131_072
}

struct Layer {
    sliding: bool,
    q: ParamId,
    k: ParamId,
    v: ParamId,
    o: ParamId,
    q_norm: ParamId,
    k_norm: ParamId,
    ln_in: ParamId,
    ln_post_attn: ParamId,
    ln_pre_ff: ParamId,
    ln_post_ff: ParamId,
    gate: ParamId,
    up: ParamId,
    down: ParamId,
}

/// A bidirectional Gemma3 text encoder whose weights live in a [`ParamTable`].
pub struct Gemma3 {
    cfg: Gemma3Config,
    embed: ParamId,
    norm: ParamId,
    layers: Vec<Layer>,
    /// The effective bidirectional sliding window: keys with |q - k| < this are visible.
    window: i64,
    rope_full: Rope,
    rope_sliding: Rope,
}

struct LayerW {
    qkv: PreparedLinear,
    o: PreparedLinear,
    q_norm: Tensor,
    k_norm: Tensor,
    ln_in: Tensor,
    ln_post_attn: Tensor,
    ln_pre_ff: Tensor,
    ln_post_ff: Tensor,
    gate_up: PreparedLinear,
    down: PreparedLinear,
}

/// Gemma3's weights prepared for one precision (per training step, or once per `encode`).
pub struct Gemma3Weights {
    embed: Tensor,
    norm: Tensor,
    layers: Vec<LayerW>,
    kind: Kind,
}

fn rope_theta(
    dir: &Path,
    cfg: &Gemma3Config,
    layer_type: &str,
    legacy: Option<f64>,
    default: f64,
) -> Result<(f64, f64)> {
    if let Some(rp) = cfg.rope_parameters.as_ref().and_then(|r| r.get(layer_type)) {
        let theta = rp
            .get("rope_theta")
            .and_then(|v| v.as_f64())
            .or(legacy)
            .unwrap_or(default);
        return Ok((theta, rope_factor(dir, rp)?));
    }
    let mut factor = 1.0;
    if layer_type == "full_attention" {
        if let Some(rs) = cfg.rope_scaling.as_ref().filter(|v| !v.is_null()) {
            factor = rope_factor(dir, rs)?;
        }
    }
    Ok((legacy.unwrap_or(default), factor))
}

fn rope_factor(dir: &Path, rp: &serde_json::Value) -> Result<f64> {
    let ty = rp
        .get("rope_type")
        .or_else(|| rp.get("type"))
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    match ty {
        "default" => Ok(1.0),
        "linear" => Ok(rp.get("factor").and_then(|v| v.as_f64()).unwrap_or(1.0)),
        other => Err(Error::model(
            dir,
            format!(
                "config.json: rope_type '{other}' is not supported (supported: default, linear)"
            ),
        )),
    }
}

impl Architecture for Gemma3 {
    type Weights = Gemma3Weights;
    const STAGED: bool = true;

    fn load(
        dir: &Path,
        config: &serde_json::Value,
        ckpt: &mut Checkpoint,
        params: &mut ParamTable,
    ) -> Result<Self> {
        let cfg: Gemma3Config = super::parse_config(dir, config, "gemma3_text")?;
        if cfg.use_bidirectional_attention != Some(true) {
            return Err(Error::model(
                dir,
                "config.json: gemma3_text without use_bidirectional_attention=true is a causal language model; only the bidirectional (EmbeddingGemma) variant is supported",
            ));
        }
        if cfg.attention_bias == Some(true) {
            return Err(Error::model(
                dir,
                "config.json: attention_bias=true is not supported for gemma3_text",
            ));
        }
        if cfg.attn_logit_softcapping.is_some() {
            return Err(Error::model(
                dir,
                "config.json: attn_logit_softcapping is not supported for gemma3_text",
            ));
        }
        if cfg.hidden_activation != "gelu_pytorch_tanh" {
            return Err(Error::model(
                dir,
                format!("config.json: hidden_activation '{}' is not supported (supported: gelu_pytorch_tanh)", cfg.hidden_activation),
            ));
        }
        if cfg.num_key_value_heads <= 0 || cfg.num_attention_heads % cfg.num_key_value_heads != 0 {
            return Err(Error::model(
                dir,
                "config.json: num_attention_heads must be a multiple of num_key_value_heads",
            ));
        }
        let n = cfg.num_hidden_layers;
        let layer_types: Vec<String> = match &cfg.layer_types {
            Some(t) => {
                if t.len() != n {
                    return Err(Error::model(
                        dir,
                        format!(
                            "config.json: layer_types has {} entries for {n} layers",
                            t.len()
                        ),
                    ));
                }
                t.clone()
            }
            None => {
                let pattern = cfg.sliding_window_pattern.unwrap_or(6).max(1);
                (0..n)
                    .map(|i| {
                        if (i + 1) % pattern != 0 {
                            "sliding_attention".into()
                        } else {
                            "full_attention".into()
                        }
                    })
                    .collect()
            }
        };
        for t in &layer_types {
            if t != "sliding_attention" && t != "full_attention" {
                return Err(Error::model(dir, format!("config.json: layer type '{t}' is not supported (supported: sliding_attention, full_attention)")));
            }
        }
        let configured = cfg.sliding_window.unwrap_or(4096);
        let window = configured / 2 + 1;
        let (full_theta, full_factor) =
            rope_theta(dir, &cfg, "full_attention", cfg.rope_theta, 1_000_000.0)?;
        let (slide_theta, slide_factor) = rope_theta(
            dir,
            &cfg,
            "sliding_attention",
            cfg.rope_local_base_freq,
            10_000.0,
        )?;
        ckpt.detect_prefix(
            "embed_tokens.weight",
            &["model.", "model.language_model.", "language_model.model."],
        );
        let (h, hd, nh, nkv, i) = (
            cfg.hidden_size,
            cfg.head_dim,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.intermediate_size,
        );
        let mut p = |name: &str, shape: &[i64]| ckpt.param(params, "", name, shape);
        let embed = p("embed_tokens.weight", &[cfg.vocab_size, h])?;
        let mut layers = Vec::with_capacity(n);
        for (l, ty) in layer_types.iter().enumerate() {
            let pre = format!("layers.{l}.");
            let mut q = |name: &str, shape: &[i64]| p(&format!("{pre}{name}"), shape);
            layers.push(Layer {
                sliding: ty == "sliding_attention",
                q: q("self_attn.q_proj.weight", &[nh * hd, h])?,
                k: q("self_attn.k_proj.weight", &[nkv * hd, h])?,
                v: q("self_attn.v_proj.weight", &[nkv * hd, h])?,
                o: q("self_attn.o_proj.weight", &[h, nh * hd])?,
                q_norm: q("self_attn.q_norm.weight", &[hd])?,
                k_norm: q("self_attn.k_norm.weight", &[hd])?,
                ln_in: q("input_layernorm.weight", &[h])?,
                ln_post_attn: q("post_attention_layernorm.weight", &[h])?,
                ln_pre_ff: q("pre_feedforward_layernorm.weight", &[h])?,
                ln_post_ff: q("post_feedforward_layernorm.weight", &[h])?,
                gate: q("mlp.gate_proj.weight", &[i, h])?,
                up: q("mlp.up_proj.weight", &[i, h])?,
                down: q("mlp.down_proj.weight", &[h, i])?,
            });
        }
        let norm = p("norm.weight", &[h])?;
        Ok(Gemma3 {
            rope_full: Rope::new(full_theta, hd, full_factor)?,
            rope_sliding: Rope::new(slide_theta, hd, slide_factor)?,
            cfg,
            embed,
            norm,
            layers,
            window,
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
    fn prepare(&self, w: &CastWeights<'_>, kind: Kind) -> Gemma3Weights {
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
                ln_pre_ff: w[l.ln_pre_ff].shallow_clone(),
                ln_post_ff: w[l.ln_post_ff].shallow_clone(),
                gate_up: w.linear(&[l.gate, l.up], None),
                down: w.linear(&[l.down], None),
            })
            .collect();
        Gemma3Weights {
            embed: w[self.embed].shallow_clone(),
            norm: w[self.norm].shallow_clone(),
            layers,
            kind,
        }
    }

    /// Stages: scaled embeddings, one per layer, final norm and re-padding. The hidden
    /// states between them are the real tokens' rows `(t, h)`. Attention dropout only when
    /// `train` (Gemma3 has no hidden dropout).
    fn stages<'a>(
        &'a self,
        w: &'a Gemma3Weights,
        ids: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Result<Option<Box<dyn Stages + 'a>>> {
        let (b, s) = ids.size2()?;
        let (kind, device) = (w.kind, ids.device());
        // Unpadded: linear layers, norms and residuals on the real tokens only; q, k, v are
        // scattered into the (b, s) layout for rotary embeddings and attention, and the
        // attention output gathered back (layers::Unpad).
        let unpad = Unpad::new(mask, b, s);
        // Masks: full layers see every real key, sliding ones the band |q - k| < window.
        let full = padding_mask(mask, kind)?;
        let sliding = if self.layers.iter().any(|l| l.sliding) {
            sliding_window_mask(mask, self.window, kind)?
        } else {
            full.shallow_clone()
        };
        Ok(Some(Box::new(Gemma3Stages {
            gemma: self,
            w,
            tok_ids: unpad.tokens(ids),
            unpad,
            full,
            sliding,
            rope_full: self.rope_full.cos_sin(s, device, kind),
            rope_sliding: self.rope_sliding.cos_sin(s, device, kind),
            b,
            s,
            train,
            p_attn: if train {
                self.cfg.attention_dropout.unwrap_or(0.0)
            } else {
                0.0
            },
        })))
    }
}

/// One batch's forward through [`Gemma3`], cut into [`Stages`].
struct Gemma3Stages<'a> {
    gemma: &'a Gemma3,
    w: &'a Gemma3Weights,
    /// The real tokens' ids `(t,)`.
    tok_ids: Tensor,
    unpad: Unpad,
    /// Additive masks: every real key `(b, 1, 1, s)`; the sliding band `(b, 1, s, s)`.
    full: Tensor,
    sliding: Tensor,
    /// `(cos, sin)`, each `(s, head_dim)`, of the full and the sliding layers' rope.
    rope_full: (Tensor, Tensor),
    rope_sliding: (Tensor, Tensor),
    b: i64,
    s: i64,
    /// Training: dropout on (LoRA branch dropout).
    train: bool,
    /// Attention dropout probability (0 outside training).
    p_attn: f64,
}

impl Gemma3Stages<'_> {
    fn norm(&self, x: &Tensor, w: &Tensor) -> Tensor {
        rms_norm(x, w, self.gemma.cfg.rms_norm_eps, RmsWeight::OnePlus)
    }
}

impl Stages for Gemma3Stages<'_> {
    fn num_layers(&self) -> usize {
        self.w.layers.len()
    }

    /// `embed(ids) * sqrt(hidden)`: `(t, h)`.
    fn embed(&self) -> Result<Tensor> {
        let kind = self.w.kind;
        // Embedding scale: sqrt(hidden) rounded to the compute dtype, as the reference
        // multiplies by `embed_scale.to(weight.dtype)`.
        let scale = Tensor::from((self.gemma.cfg.hidden_size as f64).sqrt() as f32)
            .to_kind(kind)
            .to_device(self.tok_ids.device());
        Ok(
            Tensor::f_embedding(&self.w.embed, &self.tok_ids, -1, false, false)?.to_kind(kind)
                * scale,
        )
    }

    /// Pre- and post-normed attention and gated MLP, each with its residual (out of place:
    /// autograd saved the input).
    fn layer(&self, i: usize, x: &Tensor) -> Result<Tensor> {
        let c = &self.gemma.cfg;
        let (l, lw) = (&self.gemma.layers[i], &self.w.layers[i]);
        let (b, s, unpad) = (self.b, self.s, &self.unpad);
        let (hd, nh, nkv) = (c.head_dim, c.num_attention_heads, c.num_key_value_heads);
        let ((cos, sin), m) = if l.sliding {
            (&self.rope_sliding, &self.sliding)
        } else {
            (&self.rope_full, &self.full)
        };
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
        let scaling = c.query_pre_attn_scalar.powf(-0.5);
        let a = attention(&q, &k, &v, m, self.p_attn, Some(scaling))?;
        let a = unpad.from_padded(&a.transpose(1, 2).reshape([b * s, nh * hd]));
        let a = lw.o.forward(&a, self.train); // (t, h)
        let x = x + self.norm(&a, &lw.ln_post_attn);
        let f = gated_mlp(
            &self.norm(&x, &lw.ln_pre_ff),
            &lw.gate_up,
            &lw.down,
            GateActivation::GeluTanh,
            self.train,
        );
        Ok(&x + self.norm(&f, &lw.ln_post_ff))
    }

    /// Final norm, then `(t, h)` back to `(b, s, h)`, zeros at padding.
    fn finish(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.gemma.cfg.hidden_size;
        Ok(self
            .unpad
            .to_padded(&self.norm(x, &self.w.norm))
            .view([self.b, self.s, h]))
    }
}
