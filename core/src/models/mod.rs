//! Backbones: one file per architecture, one table from `config.json`'s `model_type` to the
//! architecture that runs it (the way candle-transformers lists one module per model).
//!
//! An architecture implements [`Architecture`]: it is built from `config.json` and the
//! checkpoint (its parameters keep their checkpoint names in the [`ParamTable`]), prepares
//! the weights for one compute precision once per training step (casts, fused q/k/v and
//! gate/up matrices), and runs a forward pass from token ids and mask to `(b, s, h)` token
//! embeddings. [`BACKBONES`] maps each `model_type` to it; the sentence encoder holds the
//! result as a `Box<dyn Backbone>` and never names an architecture.
//!
//! The layers architectures share (attention masks, norms, RoPE, gated MLPs, unpadding)
//! are in [`layers`].
//!
//! Gradient checkpointing (`embtune train --gradient-checkpointing`) needs the forward pass
//! cut into [`Stages`]: embeddings, one stage per transformer layer, a last stage (final
//! norm, re-padding). An architecture that implements [`Architecture::stages`] gets its
//! forward composed from them ([`run_stages`]) and checkpointing ([`run_checkpointed`]) for
//! free; one that only implements [`Architecture::forward`] trains without checkpointing.
//!
//! Adding an architecture: a new file here implementing [`Architecture`] (parse the config,
//! take the weights with [`Checkpoint::param`], prepare, forward from [`layers`]), one line
//! in [`BACKBONES`], and a tiny-model fixture with reference embeddings in the parity tests.

pub mod bert;
pub mod gemma3;
pub mod layers;
pub mod lora;
pub mod modernbert;
pub mod params;
pub mod qwen3;

use std::path::Path;
use std::sync::Arc;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
pub use lora::{CastWeights, PreparedLinear};
pub use params::{Checkpoint, ParamId, ParamTable};

/// One backbone architecture, typed. Implement this; the encoder uses it through
/// [`Backbone`]. An architecture holds its config and the [`ParamId`]s of its weights, no
/// tensors (the weights live in the [`ParamTable`]), so it is `Send + Sync`.
///
/// Required: [`Self::load`], [`Self::hidden_size`], [`Self::max_positions`],
/// [`Self::embedding_ids`], [`Self::prepare`], and one of [`Self::stages`] (with
/// [`Self::STAGED`] set: the forward pass is then composed from the stages and gradient
/// checkpointing works) or [`Self::forward`] (no checkpointing).
pub trait Architecture: Send + Sync + Sized + 'static {
    /// The weights prepared for one precision (cast, fused), built by [`Self::prepare`].
    type Weights: Send + 'static;

    /// True when [`Self::stages`] is implemented (`--gradient-checkpointing` checks it
    /// before training starts). Default false.
    const STAGED: bool = false;

    /// Parses `config` (`dir/config.json`, for error messages) and takes every weight from
    /// `ckpt` into `params` under its checkpoint name, checking the shapes the config
    /// implies. A bad config or checkpoint is an [`Error::Model`] naming `dir`.
    fn load(
        dir: &Path,
        config: &serde_json::Value,
        ckpt: &mut Checkpoint,
        params: &mut ParamTable,
    ) -> Result<Self>;

    /// Width of the token embeddings.
    fn hidden_size(&self) -> i64;

    /// Longest sequence the model's positions cover.
    fn max_positions(&self) -> i64;

    /// Ids of the embedding tables: left in fp32 by the cast, gathered first, cast after.
    fn embedding_ids(&self) -> Vec<ParamId>;

    /// Prepares the weights for forward passes in `kind` from `w`, the [`ParamTable`]'s
    /// tensors already cast to `kind` (but the embedding tables). Differentiable: gradients
    /// reach the fp32 masters through it. Linear layers are prepared with
    /// [`CastWeights::linear`] and run with [`PreparedLinear::forward`], which adds the LoRA
    /// branch of an adapted weight (see [`lora`]).
    fn prepare(&self, w: &CastWeights<'_>, kind: Kind) -> Self::Weights;

    /// The forward pass of one batch (`ids`, `mask` and `train` as in [`Self::forward`])
    /// cut into [`Stages`], with the per-batch state the stages share (unpadding, attention
    /// masks, rotary tables) computed here, once. None (the default) when the architecture does not implement
    /// stages. Errors are those of [`Self::forward`] (a sequence longer than the positions).
    fn stages<'a>(
        &'a self,
        _w: &'a Self::Weights,
        _ids: &Tensor,
        _mask: &Tensor,
        _train: bool,
    ) -> Result<Option<Box<dyn Stages + 'a>>> {
        Ok(None)
    }

    /// Token embeddings `(b, s, h)` in the prepared kind for `ids (b, s)` int64 and
    /// `mask (b, s)` (1 = real token, 0 = padding). The mask alone says which tokens are
    /// real: padding is on the right, or on the left when the tokenizer pads left
    /// (`padding_side: "left"`, decoders with last-token pooling). Positions are the
    /// column indices `0..s` either way, as transformers' default `position_ids` are (not
    /// shifted past left padding). Rows at padded positions are unspecified (pooling masks
    /// them). Dropout only when `train`. The default runs [`Self::stages`] one after the other ([`run_stages`]).
    fn forward(
        &self,
        w: &Self::Weights,
        ids: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        match self.stages(w, ids, mask, train)? {
            Some(st) => run_stages(st.as_ref(), train),
            None => Err(Error::Invalid(
                "this architecture implements neither Architecture::forward nor Architecture::stages".into(),
            )),
        }
    }
}

/// One batch's forward pass cut into stages, as [`Architecture::stages`] builds it: stage 0
/// is [`Self::embed`], stage `1 + i` is [`Self::layer`]`(i, ..)` for `i` in
/// `0..`[`Self::num_layers`], stage `L + 1` is [`Self::finish`]. Running them in order
/// gives [`Architecture::forward`]'s result:
/// `finish(layer(L-1, .. layer(0, embed())))`.
///
/// Contract, which gradient checkpointing ([`run_checkpointed`]) relies on:
/// - a stage reads only its argument, the prepared weights and per-batch state that no
///   stage modifies (masks, rotary tables, the unpadding indices), so a stage run twice on
///   the same input with the same torch seed gives the same output;
/// - a layer's whole effect on what follows is its returned hidden state (residuals stay
///   inside the layer);
/// - the hidden states between stages are one tensor whose layout the architecture chooses
///   (every architecture here passes the real tokens' rows `(t, h)`, see [`layers::Unpad`]).
pub trait Stages {
    /// Transformer layers (L).
    fn num_layers(&self) -> usize;
    /// Stage 0: the hidden states entering layer 0 (embedding lookup, scaling or
    /// LayerNorm, embedding dropout).
    fn embed(&self) -> Result<Tensor>;
    /// Stage `1 + i`: transformer layer `i` applied to the hidden states `x` entering it.
    fn layer(&self, i: usize, x: &Tensor) -> Result<Tensor>;
    /// Stage `L + 1`: token embeddings `(b, s, h)` from the last layer's output (final
    /// norm where the architecture has one, back to the padded layout).
    fn finish(&self, x: &Tensor) -> Result<Tensor>;
}

/// Dropout seeds of one staged forward pass in training. Stage `k` runs right after
/// `tch::manual_seed(seed(k))`, where the seeds derive from one number drawn from the torch
/// generator when the pass starts. A stage's dropout masks then depend on its own seed
/// only, so a checkpointed layer recomputed later sees the masks of its first run, and the
/// plain and checkpointed passes draw the same masks (the draw at the start advances the
/// generator, so two passes in a row get different masks). Outside training nothing is
/// seeded or drawn.
#[derive(Debug, Clone, Copy)]
struct StageSeeds(Option<i64>);

impl StageSeeds {
    fn draw(train: bool) -> Self {
        StageSeeds(train.then(|| {
            Tensor::randint(1 << 62, [1], (Kind::Int64, tch::Device::Cpu)).int64_value(&[0])
        }))
    }

    /// Seeds the torch generator for stage `k` (no-op outside training).
    fn enter(&self, k: usize) {
        if let Some(base) = self.0 {
            let mix = (k as i64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as i64);
            tch::manual_seed(base.wrapping_add(mix) & i64::MAX);
        }
    }
}

/// The plain forward pass over `st`: every stage in order, each seeded for its dropout
/// when `train` (see [`StageSeeds`]). The result is `(b, s, h)` with the autograd graph of
/// every stage when gradients are enabled.
pub fn run_stages(st: &dyn Stages, train: bool) -> Result<Tensor> {
    let seeds = StageSeeds::draw(train);
    seeds.enter(0);
    let mut x = st.embed()?;
    for i in 0..st.num_layers() {
        seeds.enter(1 + i);
        x = st.layer(i, &x)?;
    }
    seeds.enter(st.num_layers() + 1);
    st.finish(&x)
}

/// A forward pass run by [`run_checkpointed`] whose backward through the layers is still
/// to do ([`Self::backward`]). Holds each layer's input hidden states, no graph.
pub struct Checkpointed<'a> {
    stages: Box<dyn Stages + 'a>,
    seeds: StageSeeds,
    /// `inputs[i]`: the hidden states entering layer `i` (no graph).
    inputs: Vec<Tensor>,
    /// The last layer's output as a leaf that requires grad: the finish stage's input.
    last: Tensor,
}

/// Gradient checkpointing of one forward pass: runs embeddings and layers of `st` without
/// a graph, keeping only each layer's input hidden states, then the finish stage with a
/// graph from a leaf copy of the last layer's output. Returns the token embeddings
/// `(b, s, h)` (the values of [`run_stages`]) and the pass, whose
/// [`Checkpointed::backward`] must be called after the loss's backward has reached the
/// token embeddings. Dropout is seeded per stage as in [`run_stages`], so both draw the
/// same masks and give the same gradients. Memory: `L` hidden states instead of every
/// layer's activations; cost: every layer's forward once more in the backward.
pub fn run_checkpointed(
    st: Box<dyn Stages + '_>,
    train: bool,
) -> Result<(Tensor, Checkpointed<'_>)> {
    let seeds = StageSeeds::draw(train);
    let n = st.num_layers();
    let mut inputs = Vec::with_capacity(n);
    let last = tch::no_grad(|| -> Result<Tensor> {
        seeds.enter(0);
        let mut x = st.embed()?;
        for i in 0..n {
            seeds.enter(1 + i);
            let y = st.layer(i, &x)?;
            inputs.push(x);
            x = y;
        }
        Ok(x)
    })?
    .set_requires_grad(true);
    seeds.enter(n + 1);
    let tokens = st.finish(&last)?;
    Ok((
        tokens,
        Checkpointed {
            stages: st,
            seeds,
            inputs,
            last,
        },
    ))
}

impl Checkpointed<'_> {
    /// The backward pass through the layers and embeddings, last layer first: each layer
    /// is recomputed from its saved input (made a leaf that requires grad) after its own
    /// dropout seed, and `sum(output * grad_output)` is backpropagated, which adds the
    /// layer's parameter gradients and gives the gradient of its input; the layer's
    /// activations and saved input are freed before the next. Call it once the loss's
    /// backward has reached the token embeddings (before that there is nothing to
    /// propagate and it does nothing).
    pub fn backward(self) -> Result<()> {
        let mut grad = self.last.grad();
        let mut inputs = self.inputs;
        while let Some(saved) = inputs.pop() {
            if !grad.defined() {
                return Ok(());
            }
            let i = inputs.len();
            let x = saved.set_requires_grad(true);
            self.seeds.enter(1 + i);
            let y = self.stages.layer(i, &x)?;
            (y * &grad).sum(Kind::Float).f_backward()?;
            grad = x.grad();
        }
        if !grad.defined() {
            return Ok(());
        }
        self.seeds.enter(0);
        let x = self.stages.embed()?;
        if x.requires_grad() {
            (x * &grad).sum(Kind::Float).f_backward()?;
        }
        Ok(())
    }
}

/// A backbone as the sentence encoder holds it: any [`Architecture`], type-erased.
pub trait Backbone: Send {
    /// Width of the token embeddings.
    fn hidden_size(&self) -> i64;
    /// Longest sequence the model's positions cover.
    fn max_positions(&self) -> i64;
    /// Ids of the embedding tables (see [`Architecture::embedding_ids`]).
    fn embedding_ids(&self) -> Vec<ParamId>;
    /// The backbone bound to its weights prepared for `kind` (see [`Architecture::prepare`]).
    fn prepare(&self, w: &CastWeights<'_>, kind: Kind) -> Box<dyn PreparedBackbone>;
    /// Ok when the architecture runs in [`Stages`] (gradient checkpointing); otherwise the
    /// error naming its `model_type`.
    fn check_staged(&self) -> Result<()>;
}

/// A backbone bound to weights prepared for one precision: runs forward passes.
pub trait PreparedBackbone: Send {
    /// Token embeddings `(b, s, h)` (see [`Architecture::forward`]).
    fn forward(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor>;
    /// The forward pass cut into stages (see [`Architecture::stages`]); an architecture
    /// without stages is the error of [`Backbone::check_staged`].
    fn stages(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Result<Box<dyn Stages + '_>>;
}

struct Shared<A> {
    arch: Arc<A>,
    model_type: Arc<str>,
}

struct Bound<A: Architecture> {
    arch: Arc<A>,
    model_type: Arc<str>,
    weights: A::Weights,
}

fn not_staged(model_type: &str) -> Error {
    Error::Invalid(format!(
        "--gradient-checkpointing is not supported for model_type {model_type} yet; train without it (a smaller --batch-size, or --loss cached-mnrl, also lowers memory)"
    ))
}

impl<A: Architecture> Backbone for Shared<A> {
    fn hidden_size(&self) -> i64 {
        self.arch.hidden_size()
    }
    fn max_positions(&self) -> i64 {
        self.arch.max_positions()
    }
    fn embedding_ids(&self) -> Vec<ParamId> {
        self.arch.embedding_ids()
    }
    fn prepare(&self, w: &CastWeights<'_>, kind: Kind) -> Box<dyn PreparedBackbone> {
        Box::new(Bound {
            weights: self.arch.prepare(w, kind),
            arch: Arc::clone(&self.arch),
            model_type: Arc::clone(&self.model_type),
        })
    }
    fn check_staged(&self) -> Result<()> {
        if A::STAGED {
            Ok(())
        } else {
            Err(not_staged(&self.model_type))
        }
    }
}

impl<A: Architecture> PreparedBackbone for Bound<A> {
    fn forward(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor> {
        self.arch.forward(&self.weights, ids, mask, train)
    }
    fn stages(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Result<Box<dyn Stages + '_>> {
        self.arch
            .stages(&self.weights, ids, mask, train)?
            .ok_or_else(|| not_staged(&self.model_type))
    }
}

/// Builds a backbone from `dir/config.json` (parsed) and the checkpoint.
pub type Constructor = fn(
    dir: &Path,
    config: &serde_json::Value,
    ckpt: &mut Checkpoint,
    params: &mut ParamTable,
) -> Result<Box<dyn Backbone>>;

/// The constructor of architecture `A`.
fn build<A: Architecture>(
    dir: &Path,
    config: &serde_json::Value,
    ckpt: &mut Checkpoint,
    params: &mut ParamTable,
) -> Result<Box<dyn Backbone>> {
    let model_type = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    Ok(Box::new(Shared {
        arch: Arc::new(A::load(dir, config, ckpt, params)?),
        model_type: model_type.into(),
    }))
}

/// Parses `config` (`dir/config.json`) into an architecture's typed config: a missing or
/// mistyped field is one line naming config.json, the field, and the fix.
pub fn parse_config<T: serde::de::DeserializeOwned>(
    dir: &Path,
    config: &serde_json::Value,
    model_type: &str,
) -> Result<T> {
    // serde would also read a struct from a JSON array (fields by position).
    if !config.is_object() {
        return Err(Error::model(
            dir,
            "config.json is not a JSON object; fix config.json (use the one saved with the checkpoint)",
        ));
    }
    // The loaders size per-layer tables from num_hidden_layers before the first weight is
    // looked up; a corrupt count must not become a huge allocation (fuzz finding).
    if let Some(n) = config
        .get("num_hidden_layers")
        .and_then(serde_json::Value::as_u64)
        .filter(|&n| n > MAX_LAYERS as u64)
    {
        return Err(Error::model(
            dir,
            format!(
                "config.json: num_hidden_layers {n} is out of range (at most {MAX_LAYERS}); fix config.json (use the one saved with the checkpoint)"
            ),
        ));
    }
    serde_json::from_value(config.clone()).map_err(|e| {
        Error::model(
            dir,
            format!(
                "config.json is not a valid {model_type} config: {e}; fix config.json (use the one saved with the checkpoint)"
            ),
        )
    })
}

/// Checks that `hidden_size` splits evenly into `num_attention_heads` heads (both
/// positive; a zero head count used to divide by zero, a fuzz finding) and returns the
/// head dimension.
pub fn head_dim(dir: &Path, hidden_size: i64, num_attention_heads: i64) -> Result<i64> {
    if num_attention_heads <= 0 || hidden_size <= 0 || hidden_size % num_attention_heads != 0 {
        return Err(Error::model(
            dir,
            format!(
                "config.json: hidden_size {hidden_size} is not a positive multiple of num_attention_heads {num_attention_heads}; fix config.json (use the one saved with the checkpoint)"
            ),
        ));
    }
    Ok(hidden_size / num_attention_heads)
}

/// The most layers a `config.json` may declare (published encoders have at most a few
/// hundred).
pub const MAX_LAYERS: usize = 4096;

/// Every backbone embtune runs: `config.json`'s `model_type` and its constructor.
pub const BACKBONES: &[(&str, Constructor)] = &[
    ("bert", build::<bert::Bert>),
    ("gemma3_text", build::<gemma3::Gemma3>),
    ("qwen3", build::<qwen3::Qwen3>),
    ("modernbert", build::<modernbert::ModernBert>),
    ("roberta", build::<bert::Roberta>),
    ("xlm-roberta", build::<bert::Roberta>),
];

/// The `model_type`s of [`BACKBONES`], in table order.
pub const SUPPORTED_MODEL_TYPES: [&str; BACKBONES.len()] = {
    let mut out = [""; BACKBONES.len()];
    let mut i = 0;
    while i < BACKBONES.len() {
        out[i] = BACKBONES[i].0;
        i += 1;
    }
    out
};

/// The `config.json` keys of the dropout probabilities the backbones read: BERT's and
/// (XLM-)RoBERTa's `hidden_dropout_prob` and `attention_probs_dropout_prob`, ModernBERT's
/// `attention_dropout`, `mlp_dropout` and `embedding_dropout`, Qwen3's and Gemma3's
/// `attention_dropout`.
pub const DROPOUT_KEYS: &[&str] = &[
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "attention_dropout",
    "mlp_dropout",
    "embedding_dropout",
];

/// `config` with every dropout probability ([`DROPOUT_KEYS`]) set to `p`, for loading a
/// backbone whose training dropout differs from the model's (`embtune train --dropout`).
/// Keys an architecture does not read are ignored by it, so every key is set: a BERT
/// config without `hidden_dropout_prob` would otherwise keep BERT's default of 0.1.
pub fn with_dropout(config: &serde_json::Value, p: f64) -> serde_json::Value {
    let mut c = config.clone();
    if let Some(obj) = c.as_object_mut() {
        for k in DROPOUT_KEYS {
            obj.insert((*k).to_string(), serde_json::json!(p));
        }
    }
    c
}

/// Builds the backbone `config["model_type"]` names from `config` (`dir/config.json`) and
/// the checkpoint; an unknown or missing `model_type` lists the supported ones.
pub fn load_backbone(
    dir: &Path,
    config: &serde_json::Value,
    ckpt: &mut Checkpoint,
    params: &mut ParamTable,
) -> Result<Box<dyn Backbone>> {
    let model_type = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    match BACKBONES.iter().find(|(t, _)| *t == model_type) {
        Some((_, construct)) => construct(dir, config, ckpt, params),
        None => Err(Error::model(
            dir,
            format!(
                "config.json: model_type '{}' is not supported (supported: {})",
                if model_type.is_empty() {
                    "<missing>"
                } else {
                    model_type
                },
                SUPPORTED_MODEL_TYPES.join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An architecture with a forward pass but no stages.
    struct Whole;

    impl Architecture for Whole {
        type Weights = ();
        fn load(
            _: &Path,
            _: &serde_json::Value,
            _: &mut Checkpoint,
            _: &mut ParamTable,
        ) -> Result<Self> {
            Ok(Whole)
        }
        fn hidden_size(&self) -> i64 {
            1
        }
        fn max_positions(&self) -> i64 {
            8
        }
        fn embedding_ids(&self) -> Vec<ParamId> {
            Vec::new()
        }
        fn prepare(&self, _: &CastWeights<'_>, _: Kind) {}
        fn forward(&self, _: &(), ids: &Tensor, _: &Tensor, _: bool) -> Result<Tensor> {
            Ok(ids.to_kind(Kind::Float).unsqueeze(-1))
        }
    }

    /// Fuzz finding (fuzz/regressions/model_config/crash-modernbert-num-hidden-layers-5e13):
    /// ModernBERT sized its layer plan from num_hidden_layers 50000000000005 and aborted on
    /// the allocation; BERT, RoBERTa and Qwen3 reserved their layer vectors the same way.
    #[test]
    fn a_huge_layer_count_is_one_line_for_every_backbone() {
        let dir = Path::new("m");
        for (model_type, build) in BACKBONES {
            let object = serde_json::json!({
                "model_type": model_type,
                "num_hidden_layers": 50_000_000_000_005u64,
                "hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 16,
                "vocab_size": 10, "max_position_embeddings": 16,
            });
            // The fuzzer's input: the same count as the fourth field of a JSON array, which
            // serde reads into a struct by position.
            let array = serde_json::json!([0, 55, 55, 50_000_000_000_005u64, 5]);
            for (cfg, want) in [
                (
                    object,
                    "num_hidden_layers 50000000000005 is out of range (at most 4096)",
                ),
                (array, "config.json is not a JSON object"),
            ] {
                let mut ckpt = Checkpoint::new(dir, "model.safetensors", Default::default());
                let mut params = ParamTable::new(tch::Device::Cpu);
                let e = match build(dir, &cfg, &mut ckpt, &mut params) {
                    Ok(_) => panic!("{model_type}: loaded {cfg}"),
                    Err(e) => e.to_string(),
                };
                assert!(e.contains(want), "{model_type}: {e}");
            }
        }
        let ok = serde_json::json!({"num_hidden_layers": MAX_LAYERS});
        parse_config::<serde_json::Value>(dir, &ok, "bert").unwrap();
    }

    #[test]
    fn checkpointing_an_architecture_without_stages_names_its_model_type() {
        let b = Shared {
            arch: Arc::new(Whole),
            model_type: "whole".into(),
        };
        let want = "--gradient-checkpointing is not supported for model_type whole yet";
        let e = b.check_staged().unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
        let ids = Tensor::zeros([1, 2], (Kind::Int64, tch::Device::Cpu));
        let p = b.prepare(&CastWeights::plain(&[]), Kind::Float);
        assert_eq!(p.forward(&ids, &ids, false).unwrap().size(), [1, 2, 1]);
        let e = p.stages(&ids, &ids, false).err().unwrap().to_string();
        assert!(e.contains(want), "{e}");
    }
}
