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
//! Adding an architecture: a new file here implementing [`Architecture`] (parse the config,
//! take the weights with [`Checkpoint::param`], prepare, forward from [`layers`]), one line
//! in [`BACKBONES`], and a tiny-model fixture with reference embeddings in the parity tests.

pub mod bert;
pub mod gemma3;
pub mod layers;
pub mod modernbert;
pub mod params;
pub mod qwen3;

use std::path::Path;
use std::sync::Arc;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
pub use params::{Checkpoint, ParamId, ParamTable};

/// One backbone architecture, typed. Implement this; the encoder uses it through
/// [`Backbone`]. An architecture holds its config and the [`ParamId`]s of its weights, no
/// tensors (the weights live in the [`ParamTable`]), so it is `Send + Sync`.
pub trait Architecture: Send + Sync + Sized + 'static {
    /// The weights prepared for one precision (cast, fused), built by [`Self::prepare`].
    type Weights: Send + 'static;

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
    /// reach the fp32 masters through it.
    fn prepare(&self, w: &[Tensor], kind: Kind) -> Self::Weights;

    /// Token embeddings `(b, s, h)` in the prepared kind for `ids (b, s)` int64 and
    /// `mask (b, s)` (1 = real token, 0 = padding). The mask alone says which tokens are
    /// real: padding is on the right, or on the left when the tokenizer pads left
    /// (`padding_side: "left"`, decoders with last-token pooling). Positions are the
    /// column indices `0..s` either way, as transformers' default `position_ids` are (not
    /// shifted past left padding). Rows at padded positions are unspecified (pooling masks
    /// them). Dropout only when `train`.
    fn forward(
        &self,
        w: &Self::Weights,
        ids: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Result<Tensor>;
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
    fn prepare(&self, w: &[Tensor], kind: Kind) -> Box<dyn PreparedBackbone>;
}

/// A backbone bound to weights prepared for one precision: runs forward passes.
pub trait PreparedBackbone: Send {
    /// Token embeddings `(b, s, h)` (see [`Architecture::forward`]).
    fn forward(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor>;
}

struct Shared<A>(Arc<A>);

struct Bound<A: Architecture> {
    arch: Arc<A>,
    weights: A::Weights,
}

impl<A: Architecture> Backbone for Shared<A> {
    fn hidden_size(&self) -> i64 {
        self.0.hidden_size()
    }
    fn max_positions(&self) -> i64 {
        self.0.max_positions()
    }
    fn embedding_ids(&self) -> Vec<ParamId> {
        self.0.embedding_ids()
    }
    fn prepare(&self, w: &[Tensor], kind: Kind) -> Box<dyn PreparedBackbone> {
        Box::new(Bound {
            weights: self.0.prepare(w, kind),
            arch: Arc::clone(&self.0),
        })
    }
}

impl<A: Architecture> PreparedBackbone for Bound<A> {
    fn forward(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor> {
        self.arch.forward(&self.weights, ids, mask, train)
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
    Ok(Box::new(Shared(Arc::new(A::load(
        dir, config, ckpt, params,
    )?))))
}

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
