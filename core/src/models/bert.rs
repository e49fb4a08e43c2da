//! BERT (`model_type: bert`, e.g. all-MiniLM-L6-v2) as transformers' `BertModel` computes
//! it (transformers/models/bert/modeling_bert.py): learned absolute positions, token-type
//! embeddings (all type 0 for single texts), post-LayerNorm layers, exact erf GELU,
//! attention through `scaled_dot_product_attention` with an additive mask on padded keys
//! ([`super::layers`]), dropout (`hidden_dropout_prob`, `attention_probs_dropout_prob`) only in training.
//!
//! RoBERTa and XLM-RoBERTa (`model_type: roberta`, `xlm-roberta`; [`Roberta`]) are the same
//! layer stack (transformers/models/roberta/modeling_roberta.py) with fairseq's position
//! ids: real tokens count from `padding_idx + 1` and padding keeps `padding_idx`
//! (`padding_idx` = `pad_token_id`), computed from `input_ids != padding_idx` as
//! transformers' `create_position_ids_from_input_ids` does; the position table is
//! `padding_idx + 1` rows longer than the longest sequence.
//!
//! Checkpoint names follow sentence-transformers folders (no `bert.` / `roberta.` prefix;
//! a prefixed checkpoint is accepted): `embeddings.word_embeddings.weight`,
//! `encoder.layer.{i}.attention.self.query.weight`, ... `pooler.*` is not used.

use std::path::Path;

use serde::Deserialize;
use tch::{Kind, Tensor};

use super::layers::{attention, layer_norm, padding_mask, Unpad};
use super::lora::{CastWeights, PreparedLinear};
use super::params::{Checkpoint, ParamId, ParamTable};
use super::{Architecture, Stages};
use crate::error::{Error, Result};

/// The fields of a BERT `config.json` that the forward pass uses.
#[derive(Debug, Clone, Deserialize)]
struct BertConfig {
    vocab_size: i64,
    hidden_size: i64,
    num_hidden_layers: usize,
    num_attention_heads: i64,
    intermediate_size: i64,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_dropout")]
    hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    attention_probs_dropout_prob: f64,
    max_position_embeddings: i64,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: i64,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    position_embedding_type: Option<String>,
    #[serde(default)]
    pad_token_id: Option<i64>,
}

/// Where the position ids come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Positions {
    /// BERT: `0..s` in every row.
    Absolute,
    /// RoBERTa: real tokens count from `padding_idx + 1`, padding keeps `padding_idx`.
    AfterPadding { padding_idx: i64 },
}

/// The model families this file runs: they differ in position ids and checkpoint prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Bert,
    Roberta,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_type_vocab() -> i64 {
    2
}
fn default_eps() -> f64 {
    1e-12
}

struct Linear {
    w: ParamId,
    b: ParamId,
}

struct Norm {
    w: ParamId,
    b: ParamId,
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln_attn: Norm,
    inter: Linear,
    out: Linear,
    ln_out: Norm,
}

/// A BERT encoder whose weights live in a [`ParamTable`].
pub struct Bert {
    cfg: BertConfig,
    positions: Positions,
    word: ParamId,
    pos: ParamId,
    tok_type: ParamId,
    ln_emb: Norm,
    layers: Vec<Layer>,
    act: Act,
}

#[derive(Clone, Copy)]
enum Act {
    Gelu,
    GeluTanh,
    Relu,
}

/// Weights of one layer prepared for a forward pass (cast, q/k/v fused, LoRA branches).
struct LayerW {
    qkv: PreparedLinear,
    o: PreparedLinear,
    ln1_w: Tensor,
    ln1_b: Tensor,
    inter: PreparedLinear,
    out: PreparedLinear,
    ln2_w: Tensor,
    ln2_b: Tensor,
}

/// BERT's weights prepared for one precision (per training step, or once per `encode`).
pub struct BertWeights {
    word: Tensor,
    pos: Tensor,
    tok_type: Tensor,
    ln_w: Tensor,
    ln_b: Tensor,
    layers: Vec<LayerW>,
    kind: Kind,
}

/// A RoBERTa or XLM-RoBERTa encoder: [`Bert`]'s layers with RoBERTa's position ids.
pub struct Roberta(Bert);

impl Bert {
    fn load_family(
        dir: &Path,
        config: &serde_json::Value,
        ckpt: &mut Checkpoint,
        params: &mut ParamTable,
        family: Family,
    ) -> Result<Self> {
        let name = match family {
            Family::Bert => "BERT",
            Family::Roberta => "RoBERTa",
        };
        let cfg: BertConfig = super::parse_config(dir, config, name)?;
        let positions = match family {
            Family::Bert => Positions::Absolute,
            Family::Roberta => {
                // RobertaConfig's default pad_token_id.
                let padding_idx = cfg.pad_token_id.unwrap_or(1);
                if padding_idx < 0 || padding_idx + 1 >= cfg.max_position_embeddings {
                    return Err(Error::model(dir, format!("config.json: pad_token_id {padding_idx} leaves no positions in max_position_embeddings {}", cfg.max_position_embeddings)));
                }
                Positions::AfterPadding { padding_idx }
            }
        };
        let act = match cfg.hidden_act.as_str() {
            "gelu" => Act::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Act::GeluTanh,
            "relu" => Act::Relu,
            other => return Err(Error::model(dir, format!("config.json: hidden_act '{other}' is not supported (supported: gelu, gelu_new, relu)"))),
        };
        if let Some(p) = &cfg.position_embedding_type {
            if p != "absolute" {
                return Err(Error::model(dir, format!("config.json: position_embedding_type '{p}' is not supported (supported: absolute)")));
            }
        }
        super::head_dim(dir, cfg.hidden_size, cfg.num_attention_heads)?;
        let prefixes: &[&str] = match family {
            Family::Bert => &["bert.", "model."],
            Family::Roberta => &["roberta.", "model."],
        };
        ckpt.detect_prefix("embeddings.word_embeddings.weight", prefixes);
        let h = cfg.hidden_size;
        let i = cfg.intermediate_size;
        let mut p = |name: &str, shape: &[i64]| ckpt.param(params, "", name, shape);
        let word = p("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?;
        let pos = p(
            "embeddings.position_embeddings.weight",
            &[cfg.max_position_embeddings, h],
        )?;
        let tok_type = p(
            "embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab_size, h],
        )?;
        let ln_emb = Norm {
            w: p("embeddings.LayerNorm.weight", &[h])?,
            b: p("embeddings.LayerNorm.bias", &[h])?,
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let pre = format!("encoder.layer.{l}.");
            let mut lin = |name: &str, out: i64, inp: i64| -> Result<Linear> {
                Ok(Linear {
                    w: p(&format!("{pre}{name}.weight"), &[out, inp])?,
                    b: p(&format!("{pre}{name}.bias"), &[out])?,
                })
            };
            let q = lin("attention.self.query", h, h)?;
            let k = lin("attention.self.key", h, h)?;
            let v = lin("attention.self.value", h, h)?;
            let o = lin("attention.output.dense", h, h)?;
            let inter = lin("intermediate.dense", i, h)?;
            let out = lin("output.dense", h, i)?;
            let ln_attn = Norm {
                w: p(&format!("{pre}attention.output.LayerNorm.weight"), &[h])?,
                b: p(&format!("{pre}attention.output.LayerNorm.bias"), &[h])?,
            };
            let ln_out = Norm {
                w: p(&format!("{pre}output.LayerNorm.weight"), &[h])?,
                b: p(&format!("{pre}output.LayerNorm.bias"), &[h])?,
            };
            layers.push(Layer {
                q,
                k,
                v,
                o,
                ln_attn,
                inter,
                out,
                ln_out,
            });
        }
        Ok(Bert {
            cfg,
            positions,
            word,
            pos,
            tok_type,
            ln_emb,
            layers,
            act,
        })
    }
}

impl Architecture for Bert {
    type Weights = BertWeights;
    const STAGED: bool = true;

    fn load(
        dir: &Path,
        config: &serde_json::Value,
        ckpt: &mut Checkpoint,
        params: &mut ParamTable,
    ) -> Result<Self> {
        Bert::load_family(dir, config, ckpt, params, Family::Bert)
    }

    fn hidden_size(&self) -> i64 {
        self.cfg.hidden_size
    }

    /// The position table's length, less RoBERTa's `padding_idx + 1` offset.
    fn max_positions(&self) -> i64 {
        match self.positions {
            Positions::Absolute => self.cfg.max_position_embeddings,
            Positions::AfterPadding { padding_idx } => {
                self.cfg.max_position_embeddings - padding_idx - 1
            }
        }
    }

    /// The word, position and token-type tables.
    fn embedding_ids(&self) -> Vec<ParamId> {
        vec![self.word, self.pos, self.tok_type]
    }

    /// Casts, and fuses q/k/v into one matrix per layer.
    fn prepare(&self, w: &CastWeights<'_>, kind: Kind) -> BertWeights {
        let lin = |l: &Linear| w.linear(&[l.w], Some(&[l.b]));
        let layers = self
            .layers
            .iter()
            .map(|l| LayerW {
                qkv: w.linear(&[l.q.w, l.k.w, l.v.w], Some(&[l.q.b, l.k.b, l.v.b])),
                o: lin(&l.o),
                ln1_w: w[l.ln_attn.w].shallow_clone(),
                ln1_b: w[l.ln_attn.b].shallow_clone(),
                inter: lin(&l.inter),
                out: lin(&l.out),
                ln2_w: w[l.ln_out.w].shallow_clone(),
                ln2_b: w[l.ln_out.b].shallow_clone(),
            })
            .collect();
        BertWeights {
            word: w[self.word].shallow_clone(),
            pos: w[self.pos].shallow_clone(),
            tok_type: w[self.tok_type].shallow_clone(),
            ln_w: w[self.ln_emb.w].shallow_clone(),
            ln_b: w[self.ln_emb.b].shallow_clone(),
            layers,
            kind,
        }
    }

    /// Stages: embeddings (+ LayerNorm, dropout), one per layer, re-padding. The hidden
    /// states between them are the real tokens' rows `(t, h)`.
    fn stages<'a>(
        &'a self,
        w: &'a BertWeights,
        ids: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Result<Option<Box<dyn Stages + 'a>>> {
        let (b, s) = ids.size2()?;
        if s > self.max_positions() {
            return Err(Error::Invalid(format!(
                "sequence of {s} tokens is longer than the model's {} positions; lower max_seq_length",
                self.max_positions()
            )));
        }
        Ok(Some(Box::new(BertStages {
            bert: self,
            w,
            ids: ids.shallow_clone(),
            // Unpadded: everything but attention on the real tokens only (layers::Unpad).
            unpad: Unpad::new(mask, b, s),
            add_mask: padding_mask(mask, w.kind)?,
            b,
            s,
            train,
        })))
    }
}

/// One batch's forward through [`Bert`], cut into [`Stages`].
struct BertStages<'a> {
    bert: &'a Bert,
    w: &'a BertWeights,
    ids: Tensor,
    unpad: Unpad,
    /// Additive key padding mask `(b, 1, 1, s)`.
    add_mask: Tensor,
    b: i64,
    s: i64,
    train: bool,
}

impl Stages for BertStages<'_> {
    fn num_layers(&self) -> usize {
        self.w.layers.len()
    }

    /// Word + position + type-0 embeddings gathered from the fp32 tables, cast, LayerNorm,
    /// dropout: `(t, h)`.
    fn embed(&self) -> Result<Tensor> {
        let (w, cfg) = (self.w, &self.bert.cfg);
        let type0 = w.tok_type.get(0);
        let emb = Tensor::f_embedding(&w.word, &self.unpad.tokens(&self.ids), -1, false, false)?;
        let positions = match self.bert.positions {
            Positions::Absolute => self.unpad.positions(),
            Positions::AfterPadding { padding_idx } => {
                // transformers' create_position_ids_from_input_ids: from the ids, not the
                // attention mask (a real token equal to the pad id keeps padding_idx too).
                let real = self.ids.ne(padding_idx).to_kind(Kind::Int64);
                let pos = real.cumsum(1, Kind::Int64) * &real + padding_idx; // (b, s)
                self.unpad.tokens(&pos)
            }
        };
        let emb = emb + type0 + w.pos.index_select(0, &positions); // (t, h)
        let emb = emb.to_kind(w.kind);
        Ok(layer_norm(&emb, &w.ln_w, &w.ln_b, cfg.layer_norm_eps)
            .dropout(cfg.hidden_dropout_prob, self.train))
    }

    /// Post-LayerNorm layer: self-attention, residual, norm; GELU MLP, residual, norm.
    fn layer(&self, i: usize, x: &Tensor) -> Result<Tensor> {
        let (cfg, l, unpad) = (&self.bert.cfg, &self.w.layers[i], &self.unpad);
        let (b, s, train) = (self.b, self.s, self.train);
        let h = cfg.hidden_size;
        let nh = cfg.num_attention_heads;
        let hd = h / nh;
        let eps = cfg.layer_norm_eps;
        let p_hidden = cfg.hidden_dropout_prob;
        let p_attn = if train {
            cfg.attention_probs_dropout_prob
        } else {
            0.0
        };
        let qkv = unpad.to_padded(&l.qkv.forward(x, train)); // (b * s, 3h)
        let qkv = qkv.view([b, s, 3, nh, hd]).permute([2, 0, 3, 1, 4]); // (3, b, nh, s, hd)
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let a = attention(&q, &k, &v, &self.add_mask, p_attn, None)?;
        let a = unpad.from_padded(&a.transpose(1, 2).reshape([b * s, h])); // (t, h)
        let a = l.o.forward(&a, train).dropout(p_hidden, train);
        let a = layer_norm(&(a + x), &l.ln1_w, &l.ln1_b, eps);
        let i = l.inter.forward(&a, train);
        let i = match self.bert.act {
            Act::Gelu => i.gelu("none"),
            Act::GeluTanh => i.gelu("tanh"),
            Act::Relu => i.relu(),
        };
        let o = l.out.forward(&i, train).dropout(p_hidden, train);
        Ok(layer_norm(&(o + &a), &l.ln2_w, &l.ln2_b, eps))
    }

    /// `(t, h)` back to `(b, s, h)`, zeros at padding.
    fn finish(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.bert.cfg.hidden_size;
        Ok(self.unpad.to_padded(x).view([self.b, self.s, h]))
    }
}

impl Architecture for Roberta {
    type Weights = BertWeights;
    const STAGED: bool = true;

    fn load(
        dir: &Path,
        config: &serde_json::Value,
        ckpt: &mut Checkpoint,
        params: &mut ParamTable,
    ) -> Result<Self> {
        Bert::load_family(dir, config, ckpt, params, Family::Roberta).map(Roberta)
    }

    fn hidden_size(&self) -> i64 {
        self.0.hidden_size()
    }

    /// `max_position_embeddings - padding_idx - 1` (514 - 2 = 512 for roberta-base).
    fn max_positions(&self) -> i64 {
        self.0.max_positions()
    }

    fn embedding_ids(&self) -> Vec<ParamId> {
        self.0.embedding_ids()
    }

    fn prepare(&self, w: &CastWeights<'_>, kind: Kind) -> BertWeights {
        self.0.prepare(w, kind)
    }

    fn stages<'a>(
        &'a self,
        w: &'a BertWeights,
        ids: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Result<Option<Box<dyn Stages + 'a>>> {
        self.0.stages(w, ids, mask, train)
    }
}
