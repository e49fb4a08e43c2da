//! Training data: a file written by `embtune gen` (CSV with or without BOM, or JSONL) or
//! any similar file, read as named text columns taken by position (first = anchor, second
//! = positive, the rest negatives), an optional float `label`/`score` column, checked
//! against what the loss needs, and cut into seeded, shuffled batches.

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;

use crate::error::{Error, Result};
use crate::loss::LossInputs;

/// Text columns plus an optional label column, all rows the same width.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Where it came from (for messages).
    pub path: PathBuf,
    /// Names of the text columns, in file order.
    pub columns: Vec<String>,
    /// `texts[c][i]`: column c of row i.
    pub texts: Vec<Vec<String>>,
    /// Name of the label column, if the file has one.
    pub label_column: Option<String>,
    /// One label per row when `label_column` is set.
    pub labels: Option<Vec<f64>>,
}

fn is_label(name: &str) -> bool {
    matches!(name.trim().to_ascii_lowercase().as_str(), "label" | "score")
}

impl Dataset {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.texts.first().map_or(0, Vec::len)
    }

    /// True when the file has no data row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads a `.csv` (UTF-8, BOM optional) or `.jsonl` file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            Error::data(
                path,
                None,
                format!("not UTF-8 ({e}); training files are UTF-8 (embtune gen writes them so)"),
            )
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let is_jsonl = path
            .extension()
            .is_some_and(|e| e == "jsonl" || e == "json");
        let (header, rows) = if is_jsonl {
            read_jsonl(path, text)?
        } else {
            read_csv(path, text)?
        };
        if rows.is_empty() {
            return Err(Error::data(
                path,
                None,
                "the file has no data rows; generate data with `embtune gen` first",
            ));
        }
        let label_idx = header.iter().position(|h| is_label(h));
        let mut columns = Vec::new();
        let mut texts: Vec<Vec<String>> = Vec::new();
        for (c, h) in header.iter().enumerate() {
            if Some(c) != label_idx {
                columns.push(h.clone());
                texts.push(Vec::with_capacity(rows.len()));
            }
        }
        let mut labels = label_idx.map(|_| Vec::with_capacity(rows.len()));
        for (line, row) in rows {
            let mut t = 0;
            for (c, cell) in row.into_iter().enumerate() {
                if Some(c) == label_idx {
                    let v: f64 = cell.trim().parse().map_err(|_| {
                        Error::data(path, Some(line), format!("label '{cell}' is not a number"))
                    })?;
                    labels.as_mut().expect("label column").push(v);
                } else {
                    texts[t].push(cell);
                    t += 1;
                }
            }
        }
        Ok(Dataset {
            path: path.to_path_buf(),
            columns,
            texts,
            label_column: label_idx.map(|i| header[i].clone()),
            labels,
        })
    }

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
                })
            }
        }
    }
}

/// A header and the rows under it, each with its line number in the file.
type HeaderAndRows = (Vec<String>, Vec<(u64, Vec<String>)>);

fn read_csv(path: &Path, text: &str) -> Result<HeaderAndRows> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(text.as_bytes());
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| Error::data(path, Some(1), format!("cannot read the header: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if header.iter().all(String::is_empty) {
        return Err(Error::data(
            path,
            None,
            "the file is empty; expected a header row and data rows",
        ));
    }
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map(|p| p.line());
            Error::data(path, line, format!("malformed CSV row: {e}"))
        })?;
        let line = rec.position().map_or(0, |p| p.line());
        rows.push((line, rec.iter().map(str::to_string).collect()));
    }
    Ok((header, rows))
}

fn read_jsonl(path: &Path, text: &str) -> Result<HeaderAndRows> {
    let mut header: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let ln = i as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)
            .map_err(|e| Error::data(path, Some(ln), format!("not a JSON object: {e}")))?;
        let keys: Vec<String> = obj.keys().cloned().collect();
        match &header {
            None => header = Some(keys),
            Some(h) if *h != keys => {
                return Err(Error::data(
                    path,
                    Some(ln),
                    format!("keys {keys:?} differ from the first line's {h:?}"),
                ))
            }
            _ => {}
        }
        let cells = obj
            .into_iter()
            .map(|(_, v)| match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .collect();
        rows.push((ln, cells));
    }
    Ok((header.unwrap_or_default(), rows))
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

    fn write(name: &str, body: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        (dir, p)
    }

    #[test]
    fn reads_gen_csv_with_bom_and_jsonl() {
        let (_d, p) = write(
            "s.csv",
            "\u{feff}anchor,positive,hard_negative\na,b,c\nd,e,f\n",
        );
        let ds = Dataset::read(&p).unwrap();
        assert_eq!(ds.columns, ["anchor", "positive", "hard_negative"]);
        assert_eq!(ds.texts[2], ["c", "f"]);
        let (_d, p) = write("s.jsonl", "{\"anchor\":\"a\",\"positive\":\"b\",\"score\":0.5}\n{\"anchor\":\"c\",\"positive\":\"d\",\"score\":1}\n");
        let ds = Dataset::read(&p).unwrap();
        assert_eq!(ds.columns, ["anchor", "positive"]);
        assert_eq!(ds.labels, Some(vec![0.5, 1.0]));
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
