//! Named text columns taken from a [`Table`]: what `train` and `eval` read (a file written by
//! `embtune gen`, or any similar CSV or JSON Lines file).

use std::path::{Path, PathBuf};

use super::{ReadOptions, Table};
use crate::error::{Error, Result};

/// Text columns plus an optional label column, all rows the same width. The text columns
/// keep file order (first = anchor, second = positive, the rest negatives); a column named
/// `label` or `score` (any case) is the label column, parsed as numbers; a column named
/// `scores` or `labels` holds a JSON list of numbers per row (teacher scores, as
/// `embtune mine --output-scores` writes them: `[positive, negative...]`), kept apart from
/// the texts.
///
/// The trainer's reshaping for a loss, `prepare_for`, lives with the trainer
/// (`train::data`).
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
    /// Name of the score-list column (`scores` or `labels`), if the file has one.
    pub score_list_column: Option<String>,
    /// One list of numbers per row when `score_list_column` is set: teacher scores for the
    /// distillation losses (`margin-mse`, `distill-kl`), which receive them as `(B, K)` labels.
    pub score_lists: Option<Vec<Vec<f64>>>,
}

fn is_label(name: &str) -> bool {
    name.eq_ignore_ascii_case("label") || name.eq_ignore_ascii_case("score")
}

fn is_score_list(name: &str) -> bool {
    name.eq_ignore_ascii_case("labels") || name.eq_ignore_ascii_case("scores")
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

    /// Reads a CSV or JSON Lines file (by extension; UTF-8, any byte-order mark) with
    /// [`Table::read`], then [`Dataset::from_table`].
    pub fn read(path: &Path) -> Result<Self> {
        let table = Table::read(path, &ReadOptions::default())?;
        Dataset::from_table(&table, path)
    }

    /// The text and label columns of `table` (read from `path`, which names it in errors):
    /// a label that is not a number is an error naming its line and column.
    pub fn from_table(table: &Table, path: &Path) -> Result<Self> {
        let headers = table.headers();
        let label_idx = headers.iter().position(|h| is_label(h));
        let list_idx = headers.iter().position(|h| is_score_list(h));
        let n = table.n_rows();
        let mut columns = Vec::new();
        let mut texts = Vec::new();
        for (c, h) in headers.iter().enumerate() {
            if Some(c) != label_idx && Some(c) != list_idx {
                columns.push(h.clone());
                texts.push((0..n).map(|r| table.cell(r, c).to_string()).collect());
            }
        }
        let labels = label_idx
            .map(|c| {
                (0..n)
                    .map(|r| {
                        let cell = table.cell(r, c);
                        cell.parse::<f64>().map_err(|_| {
                            Error::cell(
                                path,
                                table.line(r),
                                &headers[c],
                                format!("label '{cell}' is not a number"),
                            )
                        })
                    })
                    .collect::<Result<Vec<f64>>>()
            })
            .transpose()?;
        let score_lists = list_idx
            .map(|c| {
                (0..n)
                    .map(|r| {
                        let cell = table.cell(r, c);
                        serde_json::from_str::<Vec<f64>>(cell).map_err(|_| {
                            Error::cell(
                                path,
                                table.line(r),
                                &headers[c],
                                format!("'{cell}' is not a list of numbers such as [0.8, 0.2]"),
                            )
                        })
                    })
                    .collect::<Result<Vec<Vec<f64>>>>()
            })
            .transpose()?;
        Ok(Dataset {
            path: path.to_path_buf(),
            columns,
            texts,
            label_column: label_idx.map(|c| headers[c].clone()),
            labels,
            score_list_column: list_idx.map(|c| headers[c].clone()),
            score_lists,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, body: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        (dir, p)
    }

    #[test]
    fn reads_gen_csv_with_bom_and_jsonl() {
        let (_d, p) = write(
            "s.csv",
            "\u{feff}anchor,positive,hard_negative\na,b,c\nd,e,f\n".as_bytes(),
        );
        let ds = Dataset::read(&p).unwrap();
        assert_eq!(ds.columns, ["anchor", "positive", "hard_negative"]);
        assert_eq!(ds.texts[2], ["c", "f"]);
        // JSON Lines keep the file's key order (not alphabetical), with or without a BOM.
        let (_d, p) = write(
            "s.jsonl",
            "\u{feff}{\"query\":\"a\",\"doc\":\"b\",\"score\":0.5}\n{\"query\":\"c\",\"doc\":\"d\",\"score\":1}\n"
                .as_bytes(),
        );
        let ds = Dataset::read(&p).unwrap();
        assert_eq!(ds.columns, ["query", "doc"]);
        assert_eq!(ds.texts[1], ["b", "d"]);
        assert_eq!(ds.label_column.as_deref(), Some("score"));
        assert_eq!(ds.labels, Some(vec![0.5, 1.0]));
    }

    #[test]
    fn score_lists_are_kept_apart_from_the_texts() {
        // As `embtune mine --output-scores` writes them, in CSV and in JSON Lines.
        let (_d, p) = write(
            "m.csv",
            b"anchor,positive,negative,scores\na,b,c,\"[0.9, 0.2]\"\nd,e,f,\"[0.7,-0.1]\"\n",
        );
        let ds = Dataset::read(&p).unwrap();
        assert_eq!(ds.columns, ["anchor", "positive", "negative"]);
        assert_eq!(ds.score_lists, Some(vec![vec![0.9, 0.2], vec![0.7, -0.1]]));
        let (_d, p) = write(
            "m.jsonl",
            b"{\"anchor\":\"a\",\"positive\":\"b\",\"scores\":[0.5,0.25]}\n",
        );
        let ds = Dataset::read(&p).unwrap();
        assert_eq!(ds.columns, ["anchor", "positive"]);
        assert_eq!(ds.score_list_column.as_deref(), Some("scores"));
        assert_eq!(ds.score_lists, Some(vec![vec![0.5, 0.25]]));
        let (_d, p) = write("bad.csv", b"anchor,positive,scores\na,b,high\n");
        let e = Dataset::read(&p).unwrap_err().to_string();
        assert!(e.contains("'high' is not a list of numbers"), "{e}");
    }

    #[test]
    fn a_bad_label_names_line_and_column() {
        let (_d, p) = write("s.csv", b"anchor,positive,Label\na,b,1\n\nc,d,high\n");
        let e = Dataset::read(&p).unwrap_err().to_string();
        assert!(
            e.contains("s.csv, line 4, column 'Label'")
                && e.contains("label 'high' is not a number"),
            "{e}"
        );
        let (_d, p) = write(
            "s.jsonl",
            b"{\"a\":\"x\",\"score\":1}\n{\"a\":\"y\",\"score\":\"n/a\"}\n",
        );
        let e = Dataset::read(&p).unwrap_err().to_string();
        assert!(e.contains("line 2, column 'score'"), "{e}");
    }

    #[test]
    fn training_files_are_utf8_and_say_how_to_convert() {
        let (cp, _, _) = encoding_rs::EUC_KR.encode("anchor,positive\n사과,과일\n");
        let (_d, p) = write("s.csv", &cp);
        let e = Dataset::read(&p).unwrap_err().to_string();
        assert!(
            e.contains("line 2") && e.contains("iconv") && !e.contains("--encoding"),
            "{e}"
        );
        let (_d, p) = write("s.csv", b"anchor,positive\n");
        assert!(Dataset::read(&p)
            .unwrap_err()
            .to_string()
            .contains("no data rows"));
    }
}
