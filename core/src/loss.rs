//! The [`ContrastiveLoss`] extension point: maps one embedding tensor per input column to a
//! scalar loss.

use std::collections::HashMap;

#[cfg(feature = "torch")]
use tch::Tensor;

use crate::error::{Error, Result};

/// What a loss needs from a data file, checked against the file's columns before training.
#[derive(Debug, Clone, PartialEq)]
pub enum LossInputs {
    /// One text column; the loss receives it embedded twice with independent dropout
    /// (unsupervised SimCSE).
    SingleTextTwice,
    /// Text columns taken by position: first = anchor, second = positive, the rest
    /// negatives; at least `min` and at most `max` (None: unbounded) text columns.
    Texts {
        /// Fewest text columns (anchor and positive: 2).
        min: usize,
        /// Most text columns; None: unbounded.
        max: Option<usize>,
    },
    /// Two text columns and a float `label`/`score` column (CoSENT, AnglE); a file of
    /// triplets is turned into scored pairs with the soft labels given here.
    ScoredPairs {
        /// Label of an (anchor, positive) pair made from a triplet row.
        positive_label: f64,
        /// Label of an (anchor, negative) pair made from a triplet row.
        negative_label: f64,
    },
    /// Text columns as in [`LossInputs::Texts`] (anchor, positive, N negatives) plus teacher
    /// scores for every row (distillation: `margin-mse`, `distill-kl`), read from a score-list
    /// column (`scores`/`labels`, a JSON list of numbers per row, as `embtune mine
    /// --output-scores` writes them) or from a float `label`/`score` column. Every list holds
    /// 1+N scores `[teacher(anchor, positive), teacher(anchor, negative_1), ...]`, or, when
    /// `margins` is true, N margins `teacher(anchor, positive) - teacher(anchor, negative_i)`;
    /// all rows the same length. A float label column is one margin per row, so it is taken
    /// only when `margins` is true and N is 1. The loss receives the scores in
    /// [`LossBatch::labels`]: `(B, K)` from lists of K numbers, `(B,)` from a label column.
    TextsWithScores {
        /// Fewest text columns (anchor, positive and one negative: 3).
        min: usize,
        /// Most text columns; None: unbounded.
        max: Option<usize>,
        /// Whether N margins per row (or one float label for triplets) are accepted besides
        /// 1+N raw scores.
        margins: bool,
    },
}

/// The inputs of one loss evaluation.
#[cfg(feature = "torch")]
pub struct LossBatch<'a> {
    /// One `(B, D)` tensor per text column, in column order (anchor, positive, negatives…).
    /// For [`LossInputs::SingleTextTwice`], the two dropout passes. For
    /// [`LossInputs::ScoredPairs`], the two sides of each pair.
    pub embeddings: &'a [Tensor],
    /// `(B,)` float labels for scored pairs; for [`LossInputs::TextsWithScores`] the teacher
    /// scores, `(B, K)` (score lists) or `(B,)` (a label column); None otherwise.
    pub labels: Option<&'a Tensor>,
    /// `(B, B*(C-1))` boolean mask over the in-batch candidates of each row (the C-1 document
    /// columns concatenated column-wise, so candidate `c*B + j` is row j of document column c),
    /// true where the candidate is a false negative to be left out of row i's softmax; see
    /// [`duplicate_mask`] for the rule and for building it from the texts of the batch. Row
    /// i's own positive (candidate i) is never masked. None when deduplication is off
    /// (`--no-dedupe`) or the loss has no in-batch candidates (triplet, CoSENT, AnglE).
    pub duplicate_mask: Option<&'a Tensor>,
    /// The raw texts of the batch, for losses that look at them (a guide model re-embeds
    /// them, e.g. `gist`); the trainer fills it for losses whose
    /// [`ContrastiveLoss::needs_texts`] is true, None otherwise (and in unit tests on fixed
    /// embeddings).
    pub texts: Option<BatchTexts<'a>>,
}

/// The texts behind [`LossBatch::embeddings`].
#[cfg(feature = "torch")]
#[derive(Clone, Copy)]
pub struct BatchTexts<'a> {
    /// `columns[c][i]`: loss input column c of row i, without its prompt.
    pub columns: &'a [Vec<&'a str>],
    /// The prompt the trainer prepended to each column's texts before embedding them
    /// (None: no prompt), one entry per column.
    pub prompts: &'a [Option<String>],
}

/// A contrastive objective.
///
/// Required: [`inputs`](Self::inputs) and [`forward`](Self::forward). Optional hook:
/// [`mini_batch_size`](Self::mini_batch_size) (default `None`), which asks the trainer to
/// run the loss with gradient caching (embed in mini-batches without a graph, take the
/// gradient with respect to the embeddings, re-embed each mini-batch with a graph).
///
/// The trainer takes the loss as an instance ([`crate::train::train`] with `Box::new(loss)`);
/// `embtune train --loss NAME` builds a registered one by name. [`forward`](Self::forward)
/// is called once per micro-batch (per optimizer step when `--grad-accum` is 1), after the
/// encoder has produced `batch.embeddings`; the trainer embeds the columns that share a
/// prompt in one forward and hands each column over as its own `(B, D)` view. `forward`
/// returns a 0-d tensor that autograd can differentiate with respect to every embedding
/// tensor; it must not detach or move them. Invariants: the loss is invariant under a
/// permutation of the rows of the batch applied to every column alike; it is finite for
/// finite inputs.
#[cfg(feature = "torch")]
pub trait ContrastiveLoss: Send {
    /// The columns this loss needs.
    fn inputs(&self) -> LossInputs;

    /// The scalar loss of one batch.
    fn forward(&self, batch: &LossBatch<'_>) -> Result<Tensor>;

    /// Gradient-cache mini-batch size, for losses whose memory must stay flat in batch size.
    fn mini_batch_size(&self) -> Option<usize> {
        None
    }

    /// Token budget of a gradient-cache mini-batch (sentence-transformers'
    /// `mini_batch_num_tokens`): with it, the trainer packs consecutive texts into a
    /// mini-batch while their real (non-padding) token count stays within the budget; as in
    /// the reference, [`Self::mini_batch_size`] then no longer caps the texts per
    /// mini-batch (a single text over the budget forms its own). Only read when
    /// [`Self::mini_batch_size`] is Some (the loss runs GradCache). Default None.
    fn mini_batch_num_tokens(&self) -> Option<usize> {
        None
    }

    /// Whether [`forward`](Self::forward) reads [`LossBatch::texts`] (a loss with a guide
    /// model re-embeds them). The trainer fills `texts` only for losses that say so.
    /// Default false.
    fn needs_texts(&self) -> bool {
        false
    }

    /// Called once by the trainer before training, with the training device: a loss that
    /// holds tensors or a model of its own (a guide model) moves them there. Default: nothing.
    fn to_device(&mut self, _device: tch::Device) -> Result<()> {
        Ok(())
    }

    /// Called once by the trainer before training with the model's embedding dimension: a
    /// loss with options about dimensions (`matryoshka`) refuses ones the model cannot give
    /// before any step runs. Default: accept.
    fn check_embedding_dimension(&self, _dimension: i64) -> Result<()> {
        Ok(())
    }
}

/// The false-negative mask of [`LossBatch::duplicate_mask`], built from the raw texts of one
/// batch: `columns[0]` the anchors, `columns[1]` the positives, `columns[2..]` the negative
/// columns, each of the same length B (for [`LossInputs::SingleTextTwice`] pass the text
/// column twice). Returns a CPU `(B, B*(C-1))` boolean tensor; move it to the loss's device.
///
/// Candidate `(c, j)` (row j of document column `c+1`) is masked for row i, unless it is row
/// i's own positive `(0, i)`, when
/// - its text equals row i's positive or row i's anchor (a duplicate of the pair), or
/// - it is the positive of a row j whose anchor text equals row i's anchor (the same query
///   with another positive, as the baseline strategy emits one row per positive column).
///
/// Another row's hard negative for the same anchor stays a negative. Sentence-transformers
/// reaches the same end with its no-duplicates batch sampler, which keeps such texts out of
/// a batch; masking them is cheaper and keeps the batch size.
#[cfg(feature = "torch")]
pub fn duplicate_mask<S: AsRef<str>>(columns: &[&[S]]) -> Result<Tensor> {
    let (b, flags) = duplicate_flags(columns)?;
    let docs = columns.len() - 1;
    Ok(Tensor::from_slice(&flags).reshape([b as i64, (b * docs) as i64]))
}

/// Row-major flags of [`duplicate_mask`] with the batch size: `flags[i * B*(C-1) + c*B + j]`.
pub fn duplicate_flags<S: AsRef<str>>(columns: &[&[S]]) -> Result<(usize, Vec<bool>)> {
    if columns.len() < 2 {
        return Err(Error::Invalid(format!(
            "duplicate mask: need at least an anchor and a positive column, got {} column(s)",
            columns.len()
        )));
    }
    let b = columns[0].len();
    if let Some((k, col)) = columns.iter().enumerate().find(|(_, c)| c.len() != b) {
        return Err(Error::Invalid(format!(
            "duplicate mask: column {k} has {} texts but the anchor column has {b}",
            col.len()
        )));
    }
    // Texts as small integers, so each comparison is one integer compare.
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let cols: Vec<Vec<u32>> = columns
        .iter()
        .map(|col| {
            col.iter()
                .map(|s| {
                    let next = ids.len() as u32;
                    *ids.entry(s.as_ref()).or_insert(next)
                })
                .collect()
        })
        .collect();
    let (anchor, positive) = (&cols[0], &cols[1]);
    let docs = &cols[1..];
    let width = b * docs.len();
    let mut flags = vec![false; b * width];
    for i in 0..b {
        let row = &mut flags[i * width..(i + 1) * width];
        for (c, doc) in docs.iter().enumerate() {
            for j in 0..b {
                if c == 0 && j == i {
                    continue;
                }
                let text = doc[j];
                row[c * b + j] =
                    text == positive[i] || text == anchor[i] || (c == 0 && anchor[j] == anchor[i]);
            }
        }
    }
    Ok((b, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(columns: &[&[&str]]) -> Vec<Vec<bool>> {
        let (b, flags) = duplicate_flags(columns).unwrap();
        let width = flags.len() / b;
        flags.chunks(width).map(<[bool]>::to_vec).collect()
    }

    #[test]
    fn no_duplicates_no_mask() {
        let m = mask(&[
            &["a1", "a2", "a3"],
            &["p1", "p2", "p3"],
            &["n1", "n2", "n3"],
        ]);
        assert!(m.iter().flatten().all(|&f| !f));
    }

    #[test]
    fn same_positive_and_same_anchor_are_masked_but_never_the_own_positive() {
        // Rows 0 and 1 share the anchor; rows 0 and 2 share the positive; row 2's negative
        // is row 0's anchor text.
        let m = mask(&[&["a", "a", "b"], &["p", "q", "p"], &["x", "y", "a"]]);
        // Row 0: candidates p(0) own, q(1) positive of the same anchor, p(2) same text, x y a(5) = own anchor.
        assert_eq!(m[0], vec![false, true, true, false, false, true]);
        // Row 1: p(0) positive of the same anchor "a"; q own; p(2) is not (anchor b); a(5) equals anchor.
        assert_eq!(m[1], vec![true, false, false, false, false, true]);
        // Row 2: p(0) same text as own positive; q(1) no; own p(2) never; negatives no.
        assert_eq!(m[2], vec![true, false, false, false, false, false]);
    }

    #[test]
    fn single_text_twice_masks_repeated_texts() {
        let t = ["x", "y", "x"];
        let m = mask(&[&t, &t]);
        assert_eq!(
            m,
            vec![
                vec![false, false, true],
                vec![false, false, false],
                vec![true, false, false]
            ]
        );
        #[cfg(feature = "torch")]
        {
            let tensor = duplicate_mask(&[&t[..], &t[..]]).unwrap();
            assert_eq!(tensor.size(), [3, 3]);
            assert_eq!(tensor.kind(), tch::Kind::Bool);
        }
    }

    #[test]
    fn ragged_columns_are_an_error() {
        let e = duplicate_flags(&[&["a", "b"][..], &["p"][..]])
            .unwrap_err()
            .to_string();
        assert!(e.contains("column 1 has 1 texts"), "{e}");
        assert!(duplicate_flags(&[&["a"][..]]).is_err());
    }
}
