//! Training data as the trainer sees it: a [`Dataset`] (read by the one reader,
//! [`crate::table`]) checked against what the loss needs and reshaped for it, and the
//! seeded epoch order that cuts it into batches.

use rand::seq::SliceRandom;

pub use crate::table::Dataset;

use crate::error::{Error, Result};
use crate::loss::LossInputs;

impl Dataset {
    /// Checks the columns against what `inputs` needs and reshapes the data for it:
    /// scored-pair losses turn (anchor, positive, negative…) rows into (anchor, doc, label)
    /// pairs with the soft labels the loss names.
    pub fn prepare_for(self, inputs: &LossInputs, loss_name: &str) -> Result<Self> {
        let have = || {
            let mut cols = self.columns.clone();
            if let Some(l) = &self.label_column {
                cols.push(format!("{l} (label)"));
            }
            cols.join(", ")
        };
        let mismatch = |need: &str| {
            Error::Invalid(format!(
                "{}: loss '{loss_name}' needs {need}, but the file has columns: {}",
                self.path.display(),
                have()
            ))
        };
        match inputs {
            LossInputs::SingleTextTwice => {
                if self.columns.len() != 1 || self.labels.is_some() {
                    return Err(mismatch(
                        "exactly one text column (e.g. `text`, an *_unsupervised file)",
                    ));
                }
                Ok(self)
            }
            LossInputs::Texts { min, max } => {
                let n = self.columns.len();
                let need = match max {
                    Some(m) if m == min => format!("exactly {min} text columns"),
                    Some(m) => format!("{min} to {m} text columns (anchor, positive, negatives)"),
                    None => format!("at least {min} text columns (anchor, positive, negatives...)"),
                };
                if n < *min || max.is_some_and(|m| n > m) || self.labels.is_some() {
                    return Err(mismatch(&need));
                }
                Ok(self)
            }
            LossInputs::ScoredPairs {
                positive_label,
                negative_label,
            } => {
                if self.labels.is_some() {
                    if self.columns.len() != 2 {
                        return Err(mismatch("two text columns and a label/score column"));
                    }
                    return Ok(self);
                }
                if self.columns.len() < 3 {
                    return Err(mismatch("two text columns and a label/score column, or (anchor, positive, negative...) triplets"));
                }
                let n = self.len();
                let k = self.columns.len() - 2;
                let mut a = Vec::with_capacity(n * (1 + k));
                let mut d = Vec::with_capacity(n * (1 + k));
                let mut labels = Vec::with_capacity(n * (1 + k));
                for i in 0..n {
                    a.push(self.texts[0][i].clone());
                    d.push(self.texts[1][i].clone());
                    labels.push(*positive_label);
                    for c in 2..self.columns.len() {
                        a.push(self.texts[0][i].clone());
                        d.push(self.texts[c][i].clone());
                        labels.push(*negative_label);
                    }
                }
                Ok(Dataset {
                    path: self.path,
                    columns: vec!["sentence1".into(), "sentence2".into()],
                    texts: vec![a, d],
                    label_column: Some("label".into()),
                    labels: Some(labels),
                    score_list_column: None,
                    score_lists: None,
                })
            }
        }
    }
}

/// The row order of one epoch: a permutation of `0..n` drawn from `seed` and `epoch` alone,
/// so a resumed run sees the same order.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = crate::seeded_rng(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    order.shuffle(&mut rng);
    order
}

/// Batches per epoch for `n` rows (the last, smaller batch is kept, as the reference does).
pub fn batches_per_epoch(n: usize, batch_size: usize) -> usize {
    n.div_ceil(batch_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, body: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        (dir, p)
    }

    #[test]
    fn checks_columns_against_the_loss() {
        let (_d, p) = write("s.csv", "text\nhello\n");
        let ds = Dataset::read(&p).unwrap();
        let e = ds
            .prepare_for(&LossInputs::Texts { min: 2, max: None }, "mnrl")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("loss 'mnrl' needs at least 2 text columns") && e.contains("columns: text"),
            "{e}"
        );
        let (_d, p) = write("s.csv", "anchor,positive\n");
        assert!(Dataset::read(&p)
            .unwrap_err()
            .to_string()
            .contains("no data rows"));
    }

    #[test]
    fn triplets_become_soft_labelled_pairs() {
        let (_d, p) = write("t.csv", "anchor,positive,n1,n2\na,p,x,y\n");
        let ds = Dataset::read(&p)
            .unwrap()
            .prepare_for(
                &LossInputs::ScoredPairs {
                    positive_label: 0.95,
                    negative_label: 0.05,
                },
                "cosent",
            )
            .unwrap();
        assert_eq!(ds.texts[0], ["a", "a", "a"]);
        assert_eq!(ds.texts[1], ["p", "x", "y"]);
        assert_eq!(ds.labels, Some(vec![0.95, 0.05, 0.05]));
    }

    #[test]
    fn epoch_orders_are_seeded_permutations() {
        let a = epoch_order(50, 42, 0);
        assert_eq!(a, epoch_order(50, 42, 0));
        assert_ne!(a, epoch_order(50, 42, 1));
        assert_ne!(a, epoch_order(50, 43, 0));
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
    }
}
