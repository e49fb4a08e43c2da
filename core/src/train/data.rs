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
            LossInputs::TextsWithScores { min, max, margins } => {
                let n = self.columns.len();
                if n < *min || max.is_some_and(|m| n > m) {
                    let need = match max {
                        Some(m) if m == min => format!("exactly {min} text columns"),
                        Some(m) => format!("{min} to {m} text columns (anchor, positive, negatives) and teacher scores"),
                        None => format!("at least {min} text columns (anchor, positive, negatives...) and teacher scores"),
                    };
                    return Err(mismatch(&need));
                }
                self.check_teacher_scores(loss_name, n - 2, *margins)?;
                Ok(self)
            }
        }
    }

    /// For [`LossInputs::TextsWithScores`] with `negatives` negative columns: a score-list
    /// column whose every row holds 1+N scores (or N margins when `margins`), all rows the
    /// same length, no NaN; else a float label column where one margin per row will do.
    fn check_teacher_scores(&self, loss_name: &str, negatives: usize, margins: bool) -> Result<()> {
        let path = self.path.display();
        let scores = negatives + 1;
        let want = if margins {
            format!(
                "{scores} numbers [positive, negative_1, ...] or {negatives} margin(s) positive - negative_i"
            )
        } else {
            format!("{scores} numbers [positive, negative_1, ...]")
        };
        let columns = format!(
            "{} text columns (anchor, positive, {negatives} negative(s))",
            negatives + 2
        );
        let how = "`embtune mine --output-format n-tuple --output-scores` writes such files, or add a `scores` list of teacher (e.g. reranker) scores to each row";
        if let Some(lists) = &self.score_lists {
            let col = self.score_list_column.as_deref().unwrap_or("scores");
            let first = lists.first().map_or(0, Vec::len);
            for (r, list) in lists.iter().enumerate() {
                let k = list.len();
                if !(k == scores || (margins && k == negatives)) {
                    return Err(Error::Invalid(format!(
                        "{path}, data row {}: column '{col}' has {k} number(s), but loss '{loss_name}' on {columns} needs {want}; {how}",
                        r + 1
                    )));
                }
                if k != first {
                    return Err(Error::Invalid(format!(
                        "{path}, data row {}: column '{col}' has {k} numbers but data row 1 has {first}; loss '{loss_name}' needs every row in one form ({want})",
                        r + 1
                    )));
                }
                if list.iter().any(|x| x.is_nan()) {
                    return Err(Error::Invalid(format!(
                        "{path}, data row {}: column '{col}' holds NaN; loss '{loss_name}' needs finite teacher scores ({want})",
                        r + 1
                    )));
                }
            }
            return Ok(());
        }
        match (&self.labels, &self.label_column) {
            (Some(labels), Some(col)) if margins && negatives == 1 => {
                if let Some(r) = labels.iter().position(|x| x.is_nan()) {
                    return Err(Error::Invalid(format!(
                        "{path}, data row {}: column '{col}' holds NaN; loss '{loss_name}' needs a finite teacher margin positive - negative",
                        r + 1
                    )));
                }
                Ok(())
            }
            (Some(_), Some(col)) => Err(Error::Invalid(format!(
                "{path}: loss '{loss_name}' on {columns} needs a `scores` column with a JSON list of {want} per row, but the file has only the one-number column '{col}'{}; {how}",
                if margins { " (one margin per row fits triplets only)" } else { "" }
            ))),
            _ => Err(Error::Invalid(format!(
                "{path}: loss '{loss_name}' needs teacher scores, but the file has no `scores` column (columns: {}); give each row a `scores` list of {want}{}; {how}",
                self.columns.join(", "),
                if margins && negatives == 1 { ", or a float `label` column holding the margin" } else { "" }
            ))),
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
    fn distillation_needs_teacher_scores_of_the_right_length() {
        let kl = LossInputs::TextsWithScores {
            min: 3,
            max: None,
            margins: false,
        };
        let mse = LossInputs::TextsWithScores {
            min: 3,
            max: None,
            margins: true,
        };
        let prepare = |body: &str, inputs: &LossInputs, loss: &str| {
            let (_d, p) = write("d.jsonl", body);
            Dataset::read(&p).unwrap().prepare_for(inputs, loss)
        };
        let ok = "{\"q\":\"a\",\"p\":\"b\",\"n1\":\"c\",\"n2\":\"d\",\"scores\":[0.9,0.2,0.1]}\n";
        let ds = prepare(ok, &kl, "distill-kl").unwrap();
        assert_eq!(ds.score_lists, Some(vec![vec![0.9, 0.2, 0.1]]));
        prepare(ok, &mse, "margin-mse").unwrap();
        // Margins (N numbers) suit margin-mse only.
        let margins = "{\"q\":\"a\",\"p\":\"b\",\"n1\":\"c\",\"n2\":\"d\",\"scores\":[0.7,0.8]}\n";
        prepare(margins, &mse, "margin-mse").unwrap();
        let e = prepare(margins, &kl, "distill-kl").unwrap_err().to_string();
        assert!(
            e.contains("data row 1: column 'scores' has 2 number(s)")
                && e.contains("loss 'distill-kl' on 4 text columns")
                && e.contains("needs 3 numbers [positive, negative_1, ...]")
                && e.contains("embtune mine"),
            "{e}"
        );
        // Rows in two forms cannot share a batch.
        let mixed = format!("{ok}{margins}");
        let e = prepare(&mixed, &mse, "margin-mse").unwrap_err().to_string();
        assert!(
            e.contains("data row 2") && e.contains("data row 1 has 3"),
            "{e}"
        );
        // No scores at all: one line naming the column and the valid forms.
        let (_d, p) = write("t.csv", "anchor,positive,negative\na,b,c\n");
        let e = Dataset::read(&p)
            .unwrap()
            .prepare_for(&mse, "margin-mse")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("loss 'margin-mse' needs teacher scores")
                && e.contains("no `scores` column (columns: anchor, positive, negative)")
                && e.contains("2 numbers [positive, negative_1, ...] or 1 margin(s)")
                && e.contains("float `label` column")
                && !e.contains('\n'),
            "{e}"
        );
        // A float label is one margin per triplet: margin-mse takes it, distill-kl does not.
        let (_d, p) = write("l.csv", "anchor,positive,negative,label\na,b,c,0.4\n");
        let ds = Dataset::read(&p).unwrap();
        assert_eq!(
            ds.clone().prepare_for(&mse, "margin-mse").unwrap().labels,
            Some(vec![0.4])
        );
        let e = ds.prepare_for(&kl, "distill-kl").unwrap_err().to_string();
        assert!(e.contains("only the one-number column 'label'"), "{e}");
        // Too few text columns.
        let (_d, p) = write("p.csv", "anchor,positive,scores\na,b,\"[1, 0]\"\n");
        let e = Dataset::read(&p)
            .unwrap()
            .prepare_for(&kl, "distill-kl")
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 3 text columns"), "{e}");
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
