//! ModernBERT (`model_type: modernbert`) as transformers' `ModernBertModel` computes it
//! (transformers/models/modernbert/modeling_modernbert.py): token embeddings, LayerNorm and
//! dropout; pre-norm layers (the first layer's attention norm is the identity) of
//! attention with rotary position embeddings over a fused `Wqkv`, and a GeGLU MLP over a
//! fused `Wi` (its first half activated, its second half the gate) and `Wo`; a final norm.
//! Norms, attention and MLP projections have biases only where `norm_bias`,
//! `attention_bias` and `mlp_bias` say.
//!
//! Every `global_attn_every_n_layers`-th layer (the first included) attends globally with
//! `global_rope_theta`; the others see the keys with `|q - k| <= local_attention / 2` and
//! use `local_rope_theta` (transformers 4.x fields). transformers 5.x writes the same as
//! `layer_types` and per-type `rope_parameters` (configuration_modernbert.py), which take
//! precedence when present; its `sliding_window` is `local_attention // 2` and
//! masking_utils' bidirectional overlay keeps `|q - k| <= sliding_window`.
//!
//! The model's 8,192 positions are capped by `max_seq_length` of
//! `sentence_bert_config.json` in the encoder, as sentence-transformers caps them.
//!
//! Checkpoint names have no `model.` prefix (a prefixed checkpoint is accepted):
//! `embeddings.tok_embeddings.weight`, `layers.{i}.attn.Wqkv.weight`, `final_norm.weight`.

use std::path::Path;

use serde::Deserialize;
use tch::{Kind, Tensor};

use super::layers::{apply_rope, attention, padding_mask, sliding_window_mask, Rope, Unpad};
use super::lora::{CastWeights, PreparedLinear};
use super::params::{Checkpoint, ParamId, ParamTable};
use super::{Architecture, Stages};
use crate::error::{Error, Result};

/// The fields of a ModernBERT `config.json` that the forward pass uses (defaults:
/// transformers' `ModernBertConfig`).
#[derive(Debug, Clone, Deserialize)]
struct ModernBertConfig {
    vocab_size: i64,
    hidden_size: i64,
    intermediate_size: i64,
    num_hidden_layers: usize,
    num_attention_heads: i64,
    #[serde(default = "default_act")]
    hidden_activation: String,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: i64,
    #[serde(default = "default_eps")]
    norm_eps: f64,
    #[serde(default)]
    norm_bias: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    attention_dropout: f64,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default)]
    mlp_dropout: f64,
    #[serde(default)]
    embedding_dropout: f64,
    #[serde(default = "default_every_n")]
    global_attn_every_n_layers: usize,
    #[serde(default = "default_local_attention")]
    local_attention: i64,
    #[serde(default = "default_global_theta")]
    global_rope_theta: f64,
    /// An explicit `null` means the global base (transformers 4.x).
    #[serde(default = "default_local_theta")]
    local_rope_theta: Option<f64>,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
    #[serde(default)]
    rope_parameters: Option<serde_json::Value>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_max_pos() -> i64 {
    8192
}
fn default_eps() -> f64 {
    1e-5
}
fn default_every_n() -> usize {
    3
}
fn default_local_attention() -> i64 {
    128
}
fn default_global_theta() -> f64 {
    160_000.0
}
fn default_local_theta() -> Option<f64> {
    Some(10_000.0)
}

/// A weight and its optional bias.
struct Linear {
    w: ParamId,
    b: Option<ParamId>,
}

#[derive(Clone, Copy)]
enum Act {
    Gelu,
    GeluTanh,
    Silu,
}

struct Layer {
    sliding: bool,
    /// None for the first layer (transformers' `nn.Identity`).
    attn_norm: Option<Linear>,
    wqkv: Linear,
    wo: Linear,
    mlp_norm: Linear,
    wi: Linear,
    mlp_wo: Linear,
}

/// A ModernBERT encoder whose weights live in a [`ParamTable`].
pub struct ModernBert {
    cfg: ModernBertConfig,
    embed: ParamId,
    emb_norm: Linear,
    layers: Vec<Layer>,
    final_norm: Linear,
    act: Act,
    /// Sliding layers see the keys with |q - k| < this (`local_attention / 2 + 1`).
    window: i64,
    rope_global: Rope,
    rope_local: Rope,
}

/// A prepared norm weight and optional bias.
struct LinearW {
    w: Tensor,
    b: Option<Tensor>,
}

/// The linear layer `l` prepared from `w` (with its LoRA branch, if any).
fn prepared(l: &Linear, w: &CastWeights<'_>) -> PreparedLinear {
    w.linear(&[l.w], l.b.as_ref().map(std::slice::from_ref))
}

impl LinearW {
    fn of(l: &Linear, w: &CastWeights<'_>) -> Self {
        LinearW {
            w: w[l.w].shallow_clone(),
            b: l.b.map(|b| w[b].shallow_clone()),
        }
    }

    /// LayerNorm over the last dimension with this weight and optional bias.
    fn norm(&self, x: &Tensor, eps: f64) -> Tensor {
        let h = x.size()[x.dim() - 1];
        x.layer_norm([h], Some(&self.w), self.b.as_ref(), eps, true)
    }
}

struct LayerW {
    attn_norm: Option<LinearW>,
    wqkv: PreparedLinear,
    wo: PreparedLinear,
    mlp_norm: LinearW,
    wi: PreparedLinear,
    mlp_wo: PreparedLinear,
}

/// ModernBERT's weights prepared for one precision (per training step, or once per `encode`).
pub struct ModernBertWeights {
    embed: Tensor,
    emb_norm: LinearW,
    layers: Vec<LayerW>,
    final_norm: LinearW,
    kind: Kind,
}

/// The rope base of `layer_type` from transformers 5.x's per-type `rope_parameters`, else
/// `legacy` (4.x `global_rope_theta` / `local_rope_theta`). Only the default rope is
/// supported.
fn rope_theta(dir: &Path, cfg: &ModernBertConfig, layer_type: &str, legacy: f64) -> Result<f64> {
    let Some(rp) = cfg.rope_parameters.as_ref().and_then(|r| r.get(layer_type)) else {
        return Ok(legacy);
    };
    let ty = rp
        .get("rope_type")
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    if ty != "default" {
        return Err(Error::model(
            dir,
            format!("config.json: rope_type '{ty}' is not supported for modernbert (supported: default)"),
        ));
    }
    Ok(rp
        .get("rope_theta")
        .and_then(|v| v.as_f64())
        .unwrap_or(legacy))
}

/// What the config says about each layer's attention, read from either layout.
#[derive(Debug, PartialEq)]
struct Plan {
    /// Per layer: true for a sliding-window (local) layer.
    sliding: Vec<bool>,
    global_theta: f64,
    local_theta: f64,
    /// Sliding layers see the keys with |q - k| < this.
    window: i64,
}

impl Plan {
    fn of(dir: &Path, cfg: &ModernBertConfig) -> Result<Self> {
        let n = cfg.num_hidden_layers;
        let every = cfg.global_attn_every_n_layers.max(1);
        let sliding = match &cfg.layer_types {
            Some(t) if t.len() != n => {
                return Err(Error::model(
                    dir,
                    format!(
                        "config.json: layer_types has {} entries for {n} layers",
                        t.len()
                    ),
                ))
            }
            Some(t) => t
                .iter()
                .map(|t| match t.as_str() {
                    "sliding_attention" => Ok(true),
                    "full_attention" => Ok(false),
                    other => Err(Error::model(dir, format!("config.json: layer type '{other}' is not supported (supported: sliding_attention, full_attention)"))),
                })
                .collect::<Result<Vec<bool>>>()?,
            // transformers 4.x: `layer_id % global_attn_every_n_layers != 0` is local.
            None => (0..n).map(|i| i % every != 0).collect(),
        };
        let local_legacy = cfg.local_rope_theta.unwrap_or(cfg.global_rope_theta);
        Ok(Plan {
            sliding,
            global_theta: rope_theta(dir, cfg, "full_attention", cfg.global_rope_theta)?,
            local_theta: rope_theta(dir, cfg, "sliding_attention", local_legacy)?,
            // `sliding_window = local_attention // 2`, inclusive.
            window: cfg.local_attention / 2 + 1,
        })
    }
}

impl Architecture for ModernBert {
    type Weights = ModernBertWeights;
    const STAGED: bool = true;

    fn load(
        dir: &Path,
        config: &serde_json::Value,
        ckpt: &mut Checkpoint,
        params: &mut ParamTable,
    ) -> Result<Self> {
        let cfg: ModernBertConfig = super::parse_config(dir, config, "modernbert")?;
        let act = match cfg.hidden_activation.as_str() {
            "gelu" => Act::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Act::GeluTanh,
            "silu" | "swish" => Act::Silu,
            other => return Err(Error::model(dir, format!("config.json: hidden_activation '{other}' is not supported (supported: gelu, gelu_pytorch_tanh, silu)"))),
        };
        let hd = super::head_dim(dir, cfg.hidden_size, cfg.num_attention_heads)?;
        let plan = Plan::of(dir, &cfg)?;
        ckpt.detect_prefix("embeddings.tok_embeddings.weight", &["model."]);
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let mut p = |name: &str, shape: &[i64]| ckpt.param(params, "", name, shape);
        let mut lin = |name: &str, out: i64, inp: Option<i64>, bias: bool| -> Result<Linear> {
            let wshape: Vec<i64> = match inp {
                Some(inp) => vec![out, inp],
                None => vec![out],
            };
            Ok(Linear {
                w: p(&format!("{name}.weight"), &wshape)?,
                b: if bias {
                    Some(p(&format!("{name}.bias"), &[out])?)
                } else {
                    None
                },
            })
        };
        let embed = lin("embeddings.tok_embeddings", cfg.vocab_size, Some(h), false)?.w;
        let emb_norm = lin("embeddings.norm", h, None, cfg.norm_bias)?;
        let mut layers = Vec::with_capacity(plan.sliding.len());
        for (l, &sliding) in plan.sliding.iter().enumerate() {
            let pre = format!("layers.{l}.");
            layers.push(Layer {
                sliding,
                attn_norm: if l == 0 {
                    None
                } else {
                    Some(lin(&format!("{pre}attn_norm"), h, None, cfg.norm_bias)?)
                },
                wqkv: lin(
                    &format!("{pre}attn.Wqkv"),
                    3 * h,
                    Some(h),
                    cfg.attention_bias,
                )?,
                wo: lin(&format!("{pre}attn.Wo"), h, Some(h), cfg.attention_bias)?,
                mlp_norm: lin(&format!("{pre}mlp_norm"), h, None, cfg.norm_bias)?,
                wi: lin(&format!("{pre}mlp.Wi"), 2 * i, Some(h), cfg.mlp_bias)?,
                mlp_wo: lin(&format!("{pre}mlp.Wo"), h, Some(i), cfg.mlp_bias)?,
            });
        }
        let final_norm = lin("final_norm", h, None, cfg.norm_bias)?;
        Ok(ModernBert {
            rope_global: Rope::new(plan.global_theta, hd, 1.0)?,
            rope_local: Rope::new(plan.local_theta, hd, 1.0)?,
            window: plan.window,
            cfg,
            embed,
            emb_norm,
            layers,
            final_norm,
            act,
        })
    }

    fn hidden_size(&self) -> i64 {
        self.cfg.hidden_size
    }

    /// `max_position_embeddings` (8,192 for ModernBERT-base).
    fn max_positions(&self) -> i64 {
        self.cfg.max_position_embeddings
    }

    /// The token embedding table.
    fn embedding_ids(&self) -> Vec<ParamId> {
        vec![self.embed]
    }

    /// Casts (Wqkv and Wi are already fused in the checkpoint).
    fn prepare(&self, w: &CastWeights<'_>, kind: Kind) -> ModernBertWeights {
        let layers = self
            .layers
            .iter()
            .map(|l| LayerW {
                attn_norm: l.attn_norm.as_ref().map(|n| LinearW::of(n, w)),
                wqkv: prepared(&l.wqkv, w),
                wo: prepared(&l.wo, w),
                mlp_norm: LinearW::of(&l.mlp_norm, w),
                wi: prepared(&l.wi, w),
                mlp_wo: prepared(&l.mlp_wo, w),
            })
            .collect();
        ModernBertWeights {
            embed: w[self.embed].shallow_clone(),
            emb_norm: LinearW::of(&self.emb_norm, w),
            layers,
            final_norm: LinearW::of(&self.final_norm, w),
            kind,
        }
    }

    /// Stages: embeddings (+ norm, dropout), one per layer, final norm and re-padding. The
    /// hidden states between them are the real tokens' rows `(t, h)`. Embedding, attention
    /// (probabilities and output) and MLP dropout only when `train`.
    fn stages<'a>(
        &'a self,
        w: &'a ModernBertWeights,
        ids: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Result<Option<Box<dyn Stages + 'a>>> {
        let (b, s) = ids.size2()?;
        let c = &self.cfg;
        if s > c.max_position_embeddings {
            return Err(Error::Invalid(format!(
                "sequence of {s} tokens is longer than the model's {} positions; lower max_seq_length",
                c.max_position_embeddings
            )));
        }
        let (kind, device) = (w.kind, ids.device());
        // Unpadded: linear layers, norms and residuals on the real tokens only; q, k, v are
        // scattered into the (b, s) layout for rotary embeddings and attention (layers::Unpad).
        let unpad = Unpad::new(mask, b, s);
        let global = padding_mask(mask, kind)?;
        let local = if self.layers.iter().any(|l| l.sliding) {
            sliding_window_mask(mask, self.window, kind)?
        } else {
            global.shallow_clone()
        };
        Ok(Some(Box::new(ModernBertStages {
            bert: self,
            w,
            tok_ids: unpad.tokens(ids),
            unpad,
            global,
            local,
            rope_global: self.rope_global.cos_sin(s, device, kind),
            rope_local: self.rope_local.cos_sin(s, device, kind),
            b,
            s,
            train,
        })))
    }
}

/// One batch's forward through [`ModernBert`], cut into [`Stages`].
struct ModernBertStages<'a> {
    bert: &'a ModernBert,
    w: &'a ModernBertWeights,
    /// The real tokens' ids `(t,)`.
    tok_ids: Tensor,
    unpad: Unpad,
    /// Additive masks: every real key `(b, 1, 1, s)`; the sliding band `(b, 1, s, s)`.
    global: Tensor,
    local: Tensor,
    /// `(cos, sin)`, each `(s, head_dim)`, of the global and the local layers' rope.
    rope_global: (Tensor, Tensor),
    rope_local: (Tensor, Tensor),
    b: i64,
    s: i64,
    train: bool,
}

impl Stages for ModernBertStages<'_> {
    fn num_layers(&self) -> usize {
        self.w.layers.len()
    }

    /// Token embeddings gathered from the fp32 table, cast, norm, dropout: `(t, h)`.
    fn embed(&self) -> Result<Tensor> {
        let c = &self.bert.cfg;
        let emb = Tensor::f_embedding(&self.w.embed, &self.tok_ids, -1, false, false)?
            .to_kind(self.w.kind);
        Ok(self
            .w
            .emb_norm
            .norm(&emb, c.norm_eps)
            .dropout(c.embedding_dropout, self.train))
    }

    /// Pre-norm layer: (norm,) rotary attention, residual; norm, GeGLU MLP, residual.
    fn layer(&self, i: usize, x: &Tensor) -> Result<Tensor> {
        let (c, l, lw) = (&self.bert.cfg, &self.bert.layers[i], &self.w.layers[i]);
        let (b, s, train, unpad) = (self.b, self.s, self.train, &self.unpad);
        let (h, nh) = (c.hidden_size, c.num_attention_heads);
        let hd = h / nh;
        let eps = c.norm_eps;
        let p_attn = if train { c.attention_dropout } else { 0.0 };
        let ((cos, sin), m) = if l.sliding {
            (&self.rope_local, &self.local)
        } else {
            (&self.rope_global, &self.global)
        };
        let r = match &lw.attn_norm {
            Some(n) => n.norm(x, eps),
            None => x.shallow_clone(),
        };
        let qkv = unpad.to_padded(&lw.wqkv.forward(&r, train)); // (b * s, 3h)
        let qkv = qkv.view([b, s, 3, nh, hd]).permute([2, 0, 3, 1, 4]); // (3, b, nh, s, hd)
        let q = apply_rope(&qkv.get(0), cos, sin);
        let k = apply_rope(&qkv.get(1), cos, sin);
        let a = attention(&q, &k, &qkv.get(2), m, p_attn, None)?;
        let a = unpad.from_padded(&a.transpose(1, 2).reshape([b * s, h])); // (t, h)
                                                                           // Out of place: `+=` would modify a tensor autograd saved.
        let x = x + lw.wo.forward(&a, train).dropout(p_attn, train);
        // GeGLU: Wi's first half activated, its second half the gate.
        let gu = lw.wi.forward(&lw.mlp_norm.norm(&x, eps), train); // (t, 2i)
        let i = c.intermediate_size;
        let (input, gate) = (gu.narrow(-1, 0, i), gu.narrow(-1, i, i));
        let input = match self.bert.act {
            Act::Gelu => input.gelu("none"),
            Act::GeluTanh => input.gelu("tanh"),
            Act::Silu => input.silu(),
        };
        let f = (input * gate).dropout(c.mlp_dropout, train);
        Ok(x + lw.mlp_wo.forward(&f, train))
    }

    /// Final norm, `(t, h)` back to `(b, s, h)` (zeros at padding).
    fn finish(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.bert.cfg;
        let x = self.w.final_norm.norm(x, c.norm_eps);
        Ok(self
            .unpad
            .to_padded(&x)
            .view([self.b, self.s, c.hidden_size]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(config: serde_json::Value) -> Result<Plan> {
        let mut base = serde_json::json!({
            "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
            "num_hidden_layers": 4, "num_attention_heads": 2,
        });
        for (k, v) in config.as_object().unwrap() {
            base[k] = v.clone();
        }
        let cfg: ModernBertConfig = serde_json::from_value(base).unwrap();
        Plan::of(Path::new("m"), &cfg)
    }

    /// transformers 4.x fields and the 5.x layout of the same model give the same plan.
    #[test]
    fn both_config_layouts_give_the_same_plan() {
        let v4 = plan(serde_json::json!({
            "global_attn_every_n_layers": 3, "local_attention": 8,
            "global_rope_theta": 80000.0, "local_rope_theta": 5000.0,
        }))
        .unwrap();
        let v5 = plan(serde_json::json!({
            "layer_types": ["full_attention", "sliding_attention", "sliding_attention", "full_attention"],
            "local_attention": 8,
            "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": 80000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 5000.0},
            },
        }))
        .unwrap();
        let want = Plan {
            sliding: vec![false, true, true, false],
            global_theta: 80000.0,
            local_theta: 5000.0,
            window: 5,
        };
        assert_eq!(v4, want);
        assert_eq!(v5, want);
    }

    #[test]
    fn defaults_are_modernbert_base() {
        let p = plan(serde_json::json!({})).unwrap();
        assert_eq!(p.sliding, vec![false, true, true, false]);
        assert_eq!(
            (p.global_theta, p.local_theta, p.window),
            (160000.0, 10000.0, 65)
        );
        // An explicit null local base means the global one (transformers 4.x).
        let p = plan(serde_json::json!({"local_rope_theta": null})).unwrap();
        assert_eq!(p.local_theta, 160000.0);
    }

    #[test]
    fn unsupported_layouts_are_rejected() {
        let e = plan(serde_json::json!({"layer_types": ["full_attention"]})).unwrap_err();
        assert!(e.to_string().contains("1 entries for 4 layers"), "{e}");
        let e = plan(serde_json::json!({"rope_parameters": {
            "full_attention": {"rope_type": "yarn", "rope_theta": 1.0}}}))
        .unwrap_err();
        assert!(e.to_string().contains("rope_type 'yarn'"), "{e}");
    }
}
