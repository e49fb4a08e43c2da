//! One micro-batch of an optimizer step: embed a collated [`Batch`] with the weights
//! prepared once for the step, apply the loss and backpropagate.
//!
//! Every prompt group of the batch (all columns when they share a prompt) is embedded by
//! one forward over its concatenated texts and split back into one `(B, D)` tensor per
//! column, as sentence-transformers' merged forward does. Losses with a gradient-cache
//! mini-batch size run GradCache instead, over the same groups, cut into mini-batches by
//! [`minibatch_ranges`].
//!
//! With gradient checkpointing every forward that backpropagates runs checkpointed
//! ([`SentenceEncoder::forward_checkpointed`]): the backbone keeps each layer's input only,
//! and after the loss's backward each pass recomputes its layers, last first. Under
//! GradCache that is the second pass's re-embedding of each mini-batch, so peak memory is
//! one mini-batch's layer inputs plus one layer's activations.

use std::ops::Range;

use tch::{Kind, Tensor};

use crate::dist::{gather_parts_with_own_grad, ProcessGroup};
use crate::encoder::{PreparedWeights, SentenceEncoder, TokenBatch};
use crate::error::Result;
use crate::loss::{BatchTexts, ContrastiveLoss, LossBatch};
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
    /// The process group of a data-parallel run whose loss sees every rank's rows (None:
    /// one process, or local negatives).
    pub dist: Option<&'a ProcessGroup>,
}

impl<'a> MicroStep<'a> {
    /// Embeds `batch`, backpropagates `loss / accum` into the encoder's gradients and
    /// returns the (unscaled, detached) loss. The torch generator is seeded from `seed`
    /// first, so dropout replays exactly on resume.
    ///
    /// In a data-parallel run this process embeds its own rows and the loss sees every
    /// rank's ([`gather_parts_with_own_grad`]): its backward leaves this rank's share of the
    /// gradient of the global loss, which the trainer's all-reduce sums.
    pub fn run(&self, batch: &Batch<'_>, seed: i64) -> Result<Tensor> {
        tch::manual_seed(seed);
        if batch.parts[batch.part] == 0 && self.dist.is_none() {
            // Local negatives and no rows here (a last batch smaller than the ranks).
            return Ok(Tensor::zeros([], (Kind::Float, self.encoder.device())));
        }
        match self.loss.mini_batch_size() {
            Some(mini) => self.cached(batch, mini.max(1), seed),
            None => {
                let mut embeddings = Vec::with_capacity(batch.texts.len());
                let mut passes = Vec::new();
                for g in &batch.groups {
                    let own = if batch.parts[batch.part] == 0 {
                        self.no_rows(g)
                    } else {
                        let tokens = self.tokens(g, 0..g.ids.len())?;
                        let (e, pass) = self.embed_with_graph(&tokens)?;
                        passes.extend(pass);
                        split_columns(&e, g)
                    };
                    for column in own {
                        embeddings.push(self.gather(&column, batch)?);
                    }
                }
                let l = self.loss_of(&embeddings, batch)?;
                if l.requires_grad() {
                    (&l / self.accum).f_backward()?;
                    for pass in passes {
                        pass.backward()?;
                    }
                }
                Ok(l.detach())
            }
        }
    }

    /// GradCache (Gao et al. 2021, as sentence-transformers'
    /// losses/CachedMultipleNegativesRankingLoss.py): embed every group in mini-batches
    /// without a graph, take the loss and its gradient w.r.t. the embeddings, then
    /// re-embed each mini-batch with a graph (same dropout seed, same tokens) and
    /// backpropagate dot(embedding, grad). In a data-parallel run the first pass's
    /// embeddings are gathered from every rank and each rank re-embeds its own rows with
    /// the gradient of its rows.
    fn cached(&self, batch: &Batch<'_>, mini: usize, seed: i64) -> Result<Tensor> {
        let chunk_seed = |g: usize, chunk: usize| seed ^ (((g as i64) << 20) + chunk as i64 + 1);
        let own_rows = batch.own_rows();
        // Pass 1: embeddings without a graph; the token batches are kept for pass 2.
        let mut groups = Vec::with_capacity(batch.groups.len());
        let mut leaves = Vec::with_capacity(batch.texts.len());
        let budget = self.loss.mini_batch_num_tokens();
        for (gi, g) in batch.groups.iter().enumerate() {
            let lengths: Vec<usize> = g.ids.iter().map(Vec::len).collect();
            let ranges = minibatch_ranges(&lengths, mini, budget);
            let mut tokens = Vec::with_capacity(ranges.len());
            let mut parts = Vec::with_capacity(ranges.len());
            for (chunk, range) in ranges.into_iter().enumerate() {
                let t = self.tokens(g, range)?;
                tch::manual_seed(chunk_seed(gi, chunk));
                parts.push(tch::no_grad(|| {
                    self.encoder.forward_prepared(self.weights, &t, true)
                })?);
                tokens.push(t);
            }
            let own = if parts.is_empty() {
                self.no_rows(g)
            } else {
                split_columns(&Tensor::cat(&parts, 0), g)
            };
            let first = leaves.len();
            for column in own {
                leaves.push(self.gather(&column, batch)?.set_requires_grad(true));
            }
            groups.push((first..leaves.len(), tokens));
        }
        let l = self.loss_of(&leaves, batch)?;
        (&l / self.accum).f_backward()?;
        // Pass 2: re-embed this rank's rows with a graph, chain the cached gradients in.
        for (gi, (columns, tokens)) in groups.iter().enumerate() {
            if tokens.is_empty() {
                continue;
            }
            let own_grads: Vec<Tensor> = leaves[columns.clone()]
                .iter()
                .map(|leaf| {
                    let g = leaf.grad();
                    let g = if g.defined() { g } else { leaf.zeros_like() };
                    g.narrow(0, own_rows.start as i64, own_rows.len() as i64)
                })
                .collect();
            let grad = Tensor::cat(&own_grads, 0);
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

    /// The loss's `(B, D)` embeddings of one column from this rank's `(b, D)` rows: the
    /// rows themselves for one process, else every rank's rows with the gradient flowing
    /// to this rank's.
    fn gather(&self, own: &Tensor, batch: &Batch<'_>) -> Result<Tensor> {
        match self.dist {
            Some(pg) if batch.parts.len() > 1 => gather_parts_with_own_grad(pg, own, &batch.parts),
            _ => Ok(own.shallow_clone()),
        }
    }

    /// Empty `(0, D)` embeddings for each column of group `g`, for a rank with no rows in
    /// this micro-batch (it still takes part in the gathers).
    fn no_rows(&self, g: &GroupIds) -> Vec<Tensor> {
        let shape = [0, self.encoder.dimension()];
        g.columns
            .clone()
            .map(|_| Tensor::zeros(shape, (Kind::Float, self.encoder.device())))
            .collect()
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
    fn tokens(&self, g: &GroupIds, range: Range<usize>) -> Result<TokenBatch> {
        self.encoder.batch_from_ids(&g.ids[range], g.prompt_length)
    }

    fn loss_of(&self, embeddings: &[Tensor], batch: &Batch<'_>) -> Result<Tensor> {
        self.loss.forward(&LossBatch {
            embeddings,
            labels: batch.labels.as_ref(),
            duplicate_mask: batch.duplicate_mask.as_ref(),
            texts: self.loss.needs_texts().then_some(BatchTexts {
                columns: &batch.texts,
                prompts: &batch.prompts,
            }),
        })
    }
}

/// The GradCache mini-batches of one prompt group: consecutive row ranges covering
/// `0..lengths.len()` in order, where `lengths[i]` is row i's real token count (special
/// tokens and prompt included, padding not), as sentence-transformers'
/// `base/losses/gradcache.py::_minibatch_ranges` cuts a column.
///
/// - `mini_batch_num_tokens` None: ranges of `mini_batch_size` rows (the last one shorter).
/// - `Some(budget)`: rows are not reordered; each range greedily takes the following rows
///   while their total token count stays <= `budget`; a row longer than the budget alone
///   forms its own range. `mini_batch_size` does not cap these ranges (the reference
///   ignores it for embedding once a token budget is set).
///
/// `mini_batch_size` 0 is treated as 1; an empty `lengths` gives no ranges.
pub fn minibatch_ranges(
    lengths: &[usize],
    mini_batch_size: usize,
    mini_batch_num_tokens: Option<usize>,
) -> Vec<Range<usize>> {
    let n = lengths.len();
    let Some(budget) = mini_batch_num_tokens else {
        let mini = mini_batch_size.max(1);
        return (0..n)
            .step_by(mini)
            .map(|start| start..(start + mini).min(n))
            .collect();
    };
    let mut ranges = Vec::new();
    let mut begin = 0;
    while begin < n {
        let (mut end, mut tokens) = (begin, 0usize);
        while end < n && tokens + lengths[end] <= budget {
            tokens += lengths[end];
            end += 1;
        }
        // Always make progress, even when one row alone exceeds the budget.
        let end = end.max(begin + 1);
        ranges.push(begin..end);
        begin = end;
    }
    ranges
}

/// The `(k*B, D)` embeddings of a group's k columns, one `(B, D)` tensor per column.
fn split_columns(e: &Tensor, g: &GroupIds) -> Vec<Tensor> {
    let rows = e.size()[0] / g.columns.len() as i64;
    e.split(rows, 0)
}

#[cfg(test)]
mod tests {
    use super::minibatch_ranges;

    #[test]
    fn fixed_size_ranges_without_a_budget() {
        assert_eq!(minibatch_ranges(&[5; 7], 3, None), [0..3, 3..6, 6..7]);
        assert_eq!(minibatch_ranges(&[5; 2], 0, None), [0..1, 1..2]);
        assert!(minibatch_ranges(&[], 4, Some(10)).is_empty());
    }

    #[test]
    fn greedy_packing_within_the_budget_in_order() {
        // 4+5 = 9 <= 10; 8 alone (8+3 > 10); 3+2+5 = 10; an over-budget row alone.
        assert_eq!(
            minibatch_ranges(&[4, 5, 8, 3, 2, 5, 30, 1], 2, Some(10)),
            [0..2, 2..3, 3..6, 6..7, 7..8]
        );
        // The budget ignores mini_batch_size, as the reference does.
        assert_eq!(minibatch_ranges(&[1; 6], 2, Some(100)), vec![0..6]);
    }
}
