//! One micro-batch of an optimizer step: embed a collated [`Batch`] with the weights
//! prepared once for the step, apply the loss and backpropagate.
//!
//! Every prompt group of the batch (all columns when they share a prompt) is embedded by
//! one forward over its concatenated texts and split back into one `(B, D)` tensor per
//! column, as sentence-transformers' merged forward does. Losses with a gradient-cache
//! mini-batch size run GradCache instead, over the same groups.
//!
//! With gradient checkpointing every forward that backpropagates runs checkpointed
//! ([`SentenceEncoder::forward_checkpointed`]): the backbone keeps each layer's input only,
//! and after the loss's backward each pass recomputes its layers, last first. Under
//! GradCache that is the second pass's re-embedding of each mini-batch, so peak memory is
//! one mini-batch's layer inputs plus one layer's activations.

use tch::{Kind, Tensor};

use crate::encoder::{PreparedWeights, SentenceEncoder, TokenBatch};
use crate::error::Result;
use crate::loss::{ContrastiveLoss, LossBatch};
use crate::models::Checkpointed;
use crate::train::collator::{Batch, GroupIds};

/// What every micro-batch of one optimizer step shares.
pub(crate) struct MicroStep<'a> {
    /// The encoder being trained.
    pub encoder: &'a SentenceEncoder,
    /// Its weights, prepared once for this step (all columns, micro-batches and passes).
    pub weights: &'a PreparedWeights,
    /// The objective.
    pub loss: &'a dyn ContrastiveLoss,
    /// Micro-batches per optimizer step: each micro-batch's loss is divided by it before
    /// backward.
    pub accum: f64,
    /// Run the backbone checkpointed (layers recomputed in backward).
    pub checkpointing: bool,
}

impl<'a> MicroStep<'a> {
    /// Embeds `batch`, backpropagates `loss / accum` into the encoder's gradients and
    /// returns the (unscaled, detached) loss. The torch generator is seeded from `seed`
    /// first, so dropout replays exactly on resume.
    pub fn run(&self, batch: &Batch<'_>, seed: i64) -> Result<Tensor> {
        tch::manual_seed(seed);
        match self.loss.mini_batch_size() {
            Some(mini) => self.cached(batch, mini.max(1), seed),
            None => {
                let mut embeddings = Vec::with_capacity(batch.texts.len());
                let mut passes = Vec::new();
                for g in &batch.groups {
                    let tokens = self.tokens(g, 0..g.ids.len())?;
                    let (e, pass) = self.embed_with_graph(&tokens)?;
                    passes.extend(pass);
                    embeddings.extend(split_columns(&e, g));
                }
                let l = self.loss_of(&embeddings, batch)?;
                (&l / self.accum).f_backward()?;
                for pass in passes {
                    pass.backward()?;
                }
                Ok(l.detach())
            }
        }
    }

    /// GradCache (Gao et al. 2021, as sentence-transformers'
    /// losses/CachedMultipleNegativesRankingLoss.py): embed every group in mini-batches
    /// without a graph, take the loss and its gradient w.r.t. the embeddings, then
    /// re-embed each mini-batch with a graph (same dropout seed, same tokens) and
    /// backpropagate dot(embedding, grad).
    fn cached(&self, batch: &Batch<'_>, mini: usize, seed: i64) -> Result<Tensor> {
        let chunk_seed = |g: usize, chunk: usize| seed ^ (((g as i64) << 20) + chunk as i64 + 1);
        // Pass 1: embeddings without a graph; the token batches are kept for pass 2.
        let mut groups = Vec::with_capacity(batch.groups.len());
        let mut embeddings = Vec::with_capacity(batch.texts.len());
        for (gi, g) in batch.groups.iter().enumerate() {
            let n = g.ids.len();
            let mut tokens = Vec::with_capacity(n.div_ceil(mini));
            let mut parts = Vec::with_capacity(n.div_ceil(mini));
            for (chunk, start) in (0..n).step_by(mini).enumerate() {
                let t = self.tokens(g, start..(start + mini).min(n))?;
                tch::manual_seed(chunk_seed(gi, chunk));
                parts.push(tch::no_grad(|| {
                    self.encoder.forward_prepared(self.weights, &t, true)
                })?);
                tokens.push(t);
            }
            let leaf = Tensor::cat(&parts, 0).set_requires_grad(true);
            embeddings.extend(split_columns(&leaf, g));
            groups.push((leaf, tokens));
        }
        let l = self.loss_of(&embeddings, batch)?;
        (&l / self.accum).f_backward()?;
        // Pass 2: re-embed with a graph, chain the cached gradients in.
        for (gi, (leaf, tokens)) in groups.iter().enumerate() {
            let grad = leaf.grad();
            let mut start = 0;
            for (chunk, t) in tokens.iter().enumerate() {
                tch::manual_seed(chunk_seed(gi, chunk));
                let (e, pass) = self.embed_with_graph(t)?;
                let rows = e.size()[0];
                let g = grad.narrow(0, start, rows);
                (e * g).sum(Kind::Float).f_backward()?;
                if let Some(pass) = pass {
                    pass.backward()?;
                }
                start += rows;
            }
        }
        Ok(l.detach())
    }

    /// Embeddings of `tokens` for a backward pass (dropout on): a plain forward, or with
    /// checkpointing the checkpointed one and its pass, to finish with
    /// [`Checkpointed::backward`] after the backward that reaches the embeddings.
    fn embed_with_graph(&self, tokens: &TokenBatch) -> Result<(Tensor, Option<Checkpointed<'a>>)> {
        if self.checkpointing {
            let (e, pass) = self
                .encoder
                .forward_checkpointed(self.weights, tokens, true)?;
            Ok((e, Some(pass)))
        } else {
            Ok((
                self.encoder.forward_prepared(self.weights, tokens, true)?,
                None,
            ))
        }
    }

    /// The token batch of rows `range` of group `g`.
    fn tokens(&self, g: &GroupIds, range: std::ops::Range<usize>) -> Result<TokenBatch> {
        self.encoder.batch_from_ids(&g.ids[range], g.prompt_length)
    }

    fn loss_of(&self, embeddings: &[Tensor], batch: &Batch<'_>) -> Result<Tensor> {
        self.loss.forward(&LossBatch {
            embeddings,
            labels: batch.labels.as_ref(),
            duplicate_mask: batch.duplicate_mask.as_ref(),
        })
    }
}

/// The `(k*B, D)` embeddings of a group's k columns, one `(B, D)` tensor per column.
fn split_columns(e: &Tensor, g: &GroupIds) -> Vec<Tensor> {
    let rows = e.size()[0] / g.columns.len() as i64;
    e.split(rows, 0)
}
