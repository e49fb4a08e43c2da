//! The [`ContrastiveLoss`] extension point: maps one embedding tensor per input column to a
//! scalar loss.

use tch::Tensor;

use crate::error::Result;

/// What a loss needs from a data file, checked against the file's columns before training.
#[derive(Debug, Clone, PartialEq)]
pub enum LossInputs {
    /// One text column; the loss receives it embedded twice with independent dropout
    /// (unsupervised SimCSE).
    SingleTextTwice,
    /// Text columns taken by position: first = anchor, second = positive, the rest
    /// negatives; at least `min` and at most `max` (None: unbounded) text columns.
    Texts { min: usize, max: Option<usize> },
    /// Two text columns and a float `label`/`score` column (CoSENT, AnglE); a file of
    /// triplets is turned into scored pairs with the soft labels given here.
    ScoredPairs { positive_label: f64, negative_label: f64 },
}

/// The inputs of one loss evaluation.
pub struct LossBatch<'a> {
    /// One `(B, D)` tensor per text column, in column order (anchor, positive, negatives…).
    /// For [`LossInputs::SingleTextTwice`], the two dropout passes. For
    /// [`LossInputs::ScoredPairs`], the two sides of each pair.
    pub embeddings: &'a [Tensor],
    /// `(B,)` float labels for scored pairs; None otherwise.
    pub labels: Option<&'a Tensor>,
    /// `(B, B*(C-1))` boolean mask, true where candidate column j of row i holds the same
    /// text as row i's positive while j is not row i's own positive (a false negative to be
    /// masked out). None when deduplication is off or the loss has no in-batch candidates.
    pub duplicate_mask: Option<&'a Tensor>,
}

/// A contrastive objective.
///
/// Required: [`inputs`](Self::inputs) and [`forward`](Self::forward). Optional hook:
/// [`mini_batch_size`](Self::mini_batch_size) (default `None`), which asks the trainer to
/// run the loss with gradient caching (embed in mini-batches without a graph, take the
/// gradient with respect to the embeddings, re-embed each mini-batch with a graph).
///
/// Called by the trainer once per step (and by `embtune eval` for a validation loss), after
/// the encoder has produced `batch.embeddings`. `forward` returns a 0-d tensor that
/// autograd can differentiate with respect to every embedding tensor; it must not detach
/// or move them. Invariants: the loss is invariant under a permutation of the rows of the
/// batch applied to every column alike; it is finite for finite inputs.
pub trait ContrastiveLoss: Send {
    /// The columns this loss needs.
    fn inputs(&self) -> LossInputs;

    /// The scalar loss of one batch.
    fn forward(&self, batch: &LossBatch<'_>) -> Result<Tensor>;

    /// Gradient-cache mini-batch size, for losses whose memory must stay flat in batch size.
    fn mini_batch_size(&self) -> Option<usize> {
        None
    }
}
