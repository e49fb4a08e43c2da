//! Evaluators that embed texts with a [`SentenceEncoder`] and score them with the pure
//! functions of [`super::metrics`]: retrieval over the eval split written by `embtune gen`,
//! triplet accuracy over an (anchor, positive, negative) file, and the original script's
//! combined margin for one query and ranked documents.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use super::metrics::{combined_margin, information_retrieval, triplet_accuracy, RetrievalCutoffs};
use crate::encoder::SentenceEncoder;
use crate::error::{Error, Result};
use crate::table::{Dataset, ReadOptions, Table};

/// Metric name -> value (sentence-transformers' names, e.g. `cosine_ndcg@10`).
pub type Metrics = BTreeMap<String, f64>;

/// Queries, corpus and relevance judgements (the eval split of `embtune gen`).
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalSet {
    /// `(id, text)` of each query.
    pub queries: Vec<(String, String)>,
    /// `(id, text)` of each corpus document.
    pub corpus: Vec<(String, String)>,
    /// Corpus indices relevant to each query.
    pub relevant: Vec<Vec<usize>>,
}

/// The first two columns of the CSV file at `path`, which must be named `want`, with each
/// row's line (for messages).
fn read_two_columns(path: &Path, want: [&str; 2]) -> Result<Vec<(String, String, Option<u64>)>> {
    let table = Table::read(path, &ReadOptions::default())?;
    let header = table.headers();
    if header.len() < 2 || header[0] != want[0] || header[1] != want[1] {
        return Err(Error::data(
            path,
            Some(1),
            format!(
                "expected the header {},{} but found {}",
                want[0],
                want[1],
                header.join(",")
            ),
        ));
    }
    Ok((0..table.n_rows())
        .map(|r| {
            (
                table.cell(r, 0).to_string(),
                table.cell(r, 1).to_string(),
                table.line(r),
            )
        })
        .collect())
}

impl RetrievalSet {
    /// Reads `<prefix>eval_queries.csv`, `<prefix>eval_corpus.csv` and
    /// `<prefix>eval_qrels.csv` from `dir`. With `part` None, the folder must hold exactly
    /// one such set (unprefixed or with one part prefix).
    pub fn read(dir: &Path, part: Option<&str>) -> Result<Self> {
        let prefix = match part {
            Some(p) => format!("{p}_"),
            None => {
                let mut prefixes: Vec<String> = std::fs::read_dir(dir)
                    .map_err(|e| Error::io(dir, e))?
                    .flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()?
                            .strip_suffix("eval_queries.csv")
                            .map(str::to_string)
                    })
                    .collect();
                prefixes.sort();
                match prefixes.len() {
                    1 => prefixes.remove(0),
                    0 => {
                        return Err(Error::Invalid(format!(
                            "{}: no eval_queries.csv; write an eval split with `embtune gen --eval-ratio 0.1`",
                            dir.display()
                        )))
                    }
                    _ => {
                        let parts: Vec<&str> = prefixes.iter().map(|p| p.trim_end_matches('_')).collect();
                        return Err(Error::Invalid(format!(
                            "{}: several eval splits ({}); choose one with --eval-part",
                            dir.display(),
                            parts.join(", ")
                        )));
                    }
                }
            }
        };
        let pairs = |rows: Vec<(String, String, Option<u64>)>| -> Vec<(String, String)> {
            rows.into_iter().map(|(id, text, _)| (id, text)).collect()
        };
        let queries = pairs(read_two_columns(
            &dir.join(format!("{prefix}eval_queries.csv")),
            ["id", "text"],
        )?);
        let corpus = pairs(read_two_columns(
            &dir.join(format!("{prefix}eval_corpus.csv")),
            ["id", "text"],
        )?);
        let qrels_path = dir.join(format!("{prefix}eval_qrels.csv"));
        let qrels = read_two_columns(&qrels_path, ["query_id", "corpus_id"])?;
        let q_index: HashMap<&str, usize> = queries
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (id.as_str(), i))
            .collect();
        let c_index: HashMap<&str, usize> = corpus
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (id.as_str(), i))
            .collect();
        let mut relevant = vec![Vec::new(); queries.len()];
        for (q, c, line) in &qrels {
            let (Some(&qi), Some(&ci)) = (q_index.get(q.as_str()), c_index.get(c.as_str())) else {
                return Err(Error::data(
                    &qrels_path,
                    *line,
                    format!("qrel ({q}, {c}) names an unknown query or document"),
                ));
            };
            relevant[qi].push(ci);
        }
        Ok(RetrievalSet {
            queries,
            corpus,
            relevant,
        })
    }
}

/// One query and documents in the order they should rank (the original script's probe).
#[derive(Debug, Clone, PartialEq)]
pub struct MarginProbe {
    /// The query.
    pub query: String,
    /// Documents; the first should score highest.
    pub documents: Vec<String>,
    /// Weights of `s0 - s_k` for k = 1..; `[0.7, 0.3]` in the original.
    pub weights: Vec<f64>,
}

/// Triplets for triplet accuracy.
#[derive(Debug, Clone, PartialEq)]
pub struct TripletSet {
    /// Anchors.
    pub anchors: Vec<String>,
    /// Positives.
    pub positives: Vec<String>,
    /// Negatives (the first negative column).
    pub negatives: Vec<String>,
}

impl TripletSet {
    /// Reads the first three text columns of a CSV/JSONL file (anchor, positive, negative).
    pub fn read(path: &Path) -> Result<Self> {
        let ds = Dataset::read(path)?;
        if ds.columns.len() < 3 {
            return Err(Error::Invalid(format!(
                "{}: triplet evaluation needs anchor, positive and negative columns, found: {}",
                path.display(),
                ds.columns.join(", ")
            )));
        }
        let mut t = ds.texts.into_iter();
        Ok(TripletSet {
            anchors: t.next().unwrap(),
            positives: t.next().unwrap(),
            negatives: t.next().unwrap(),
        })
    }
}

/// The evaluators of a run, with the prompts they apply.
#[derive(Debug, Clone, Default)]
pub struct EvalSuite {
    /// Retrieval over an eval split.
    pub retrieval: Option<RetrievalSet>,
    /// Triplet accuracy.
    pub triplets: Option<TripletSet>,
    /// The combined margin probe.
    pub margin: Option<MarginProbe>,
    /// Prompt for queries/anchors.
    pub query_prompt: String,
    /// Prompt for documents.
    pub document_prompt: String,
    /// Encoding batch size.
    pub batch_size: usize,
    /// Where the retrieval set came from (for messages).
    pub source: Option<PathBuf>,
    /// Score with the first `d` dimensions of every embedding only (sentence-transformers'
    /// `truncate_dim`, for Matryoshka models); None: all of them. Checked against the
    /// model in [`Self::run`].
    pub truncate_dim: Option<usize>,
}

impl EvalSuite {
    /// True when no evaluator is configured.
    pub fn is_empty(&self) -> bool {
        self.retrieval.is_none() && self.triplets.is_none() && self.margin.is_none()
    }

    /// The metric that picks `best/` by default.
    pub fn main_metric(&self) -> &'static str {
        if self.retrieval.is_some() {
            "cosine_ndcg@10"
        } else if self.triplets.is_some() {
            "cosine_accuracy"
        } else {
            "combined_margin"
        }
    }

    /// Errors unless `name` is one of the metrics this suite produces.
    pub fn check_metric(&self, name: &str) -> Result<()> {
        let mut names: Vec<String> = Vec::new();
        if self.retrieval.is_some() {
            let c = RetrievalCutoffs::default();
            for (group, ks) in [
                ("accuracy", &c.accuracy_at_k),
                ("precision", &c.precision_recall_at_k),
                ("recall", &c.precision_recall_at_k),
                ("ndcg", &c.ndcg_at_k),
                ("mrr", &c.mrr_at_k),
                ("map", &c.map_at_k),
            ] {
                names.extend(ks.iter().map(|k| format!("cosine_{group}@{k}")));
            }
        }
        if self.triplets.is_some() {
            names.push("cosine_accuracy".into());
        }
        if self.margin.is_some() {
            names.push("combined_margin".into());
        }
        if names.iter().any(|n| n == name) {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "unknown metric '{name}'; this run's evaluators produce: {}",
                names.join(", ")
            )))
        }
    }

    /// Errors unless [`Self::truncate_dim`] is None or between 1 and `enc`'s dimension.
    pub fn check_truncate_dim(&self, enc: &SentenceEncoder) -> Result<()> {
        check_truncate_dim(self.truncate_dim, enc.dimension().max(0) as usize)
    }

    fn embed(&self, enc: &SentenceEncoder, prompt: &str, texts: &[String]) -> Result<Tensor> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut e = enc.encode_with_prompt(&refs, Some(prompt), self.batch_size.max(1))?;
        if let Some(d) = self.truncate_dim {
            // As sentence-transformers' `truncate_embeddings`: the first d columns of the
            // model's output (after its Normalize module, if any); cosine re-normalises.
            e = e.f_narrow(1, 0, d as i64)?;
        }
        let e = e.to_kind(Kind::Double);
        // cos_sim = normalize(x) @ normalize(y)^T
        let norm = e
            .norm_scalaropt_dim(2.0, [1i64].as_slice(), true)
            .clamp_min(1e-12);
        Ok(e / norm)
    }

    /// Runs every configured evaluator (no gradients; the encoder's training flag is
    /// untouched) and returns their metrics.
    pub fn run(&self, enc: &SentenceEncoder) -> Result<Metrics> {
        self.check_truncate_dim(enc)?;
        let mut out = Metrics::new();
        tch::no_grad(|| -> Result<()> {
            if let Some(r) = &self.retrieval {
                let q_texts: Vec<String> = r.queries.iter().map(|(_, t)| t.clone()).collect();
                let c_texts: Vec<String> = r.corpus.iter().map(|(_, t)| t.clone()).collect();
                let q = self.embed(enc, &self.query_prompt, &q_texts)?;
                let c = self.embed(enc, &self.document_prompt, &c_texts)?;
                let scores: Vec<f64> =
                    Vec::<f64>::try_from(q.matmul(&c.tr()).reshape([-1])).map_err(Error::from)?;
                let ids: Vec<&str> = r.corpus.iter().map(|(id, _)| id.as_str()).collect();
                let m = information_retrieval(
                    &scores,
                    &ids,
                    &r.relevant,
                    &RetrievalCutoffs::default(),
                )?;
                out.extend(m.named("cosine"));
            }
            if let Some(t) = &self.triplets {
                let a = self.embed(enc, &self.query_prompt, &t.anchors)?;
                let p = self.embed(enc, &self.document_prompt, &t.positives)?;
                let n = self.embed(enc, &self.document_prompt, &t.negatives)?;
                let pos: Vec<f64> = Vec::<f64>::try_from((&a * &p).sum_dim_intlist(
                    [1i64].as_slice(),
                    false,
                    Kind::Double,
                ))
                .map_err(Error::from)?;
                let neg: Vec<f64> = Vec::<f64>::try_from((&a * &n).sum_dim_intlist(
                    [1i64].as_slice(),
                    false,
                    Kind::Double,
                ))
                .map_err(Error::from)?;
                out.insert("cosine_accuracy".into(), triplet_accuracy(&pos, &neg, 0.0)?);
            }
            if let Some(m) = &self.margin {
                let q = self.embed(enc, &self.query_prompt, std::slice::from_ref(&m.query))?;
                let d = self.embed(enc, &self.document_prompt, &m.documents)?;
                let s: Vec<f64> =
                    Vec::<f64>::try_from(q.matmul(&d.tr()).reshape([-1])).map_err(Error::from)?;
                out.insert("combined_margin".into(), combined_margin(&s, &m.weights)?);
                for (i, v) in s.iter().enumerate() {
                    out.insert(format!("margin_score_{}", i + 1), *v);
                }
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// Errors unless `truncate_dim` is None or between 1 and `dimension` (the model's embedding
/// dimension), naming `--truncate-dim`.
pub fn check_truncate_dim(truncate_dim: Option<usize>, dimension: usize) -> Result<()> {
    match truncate_dim {
        Some(d) if d == 0 || d > dimension => Err(Error::Invalid(format!(
            "--truncate-dim {d}: must be between 1 and the model's embedding dimension {dimension}"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_dim_bounds() {
        assert!(check_truncate_dim(None, 8).is_ok());
        assert!(check_truncate_dim(Some(1), 8).is_ok());
        assert!(check_truncate_dim(Some(8), 8).is_ok());
        for bad in [0, 9] {
            let e = check_truncate_dim(Some(bad), 8).unwrap_err().to_string();
            assert!(
                e.contains("--truncate-dim") && e.contains("dimension 8"),
                "{e}"
            );
        }
    }

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn retrieval_files_with_a_bom_and_errors_with_lines() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "eval_queries.csv", "\u{feff}id,text\nq1, 사과 \n");
        write(
            d.path(),
            "eval_corpus.csv",
            "\u{feff}id,text\nd1,과일\nd2,채소\n",
        );
        write(
            d.path(),
            "eval_qrels.csv",
            "\u{feff}query_id,corpus_id\nq1,d1\nq1,d9\n",
        );
        let e = RetrievalSet::read(d.path(), None).unwrap_err().to_string();
        assert!(
            e.contains("eval_qrels.csv, line 3") && e.contains("(q1, d9)"),
            "{e}"
        );
        write(d.path(), "eval_qrels.csv", "query_id,corpus_id\nq1,d1\n");
        let r = RetrievalSet::read(d.path(), None).unwrap();
        assert_eq!(r.queries, [("q1".to_string(), "사과".to_string())]);
        assert_eq!(r.corpus.len(), 2);
        assert_eq!(r.relevant, [vec![0]]);
    }

    /// `gen`'s table, `train`'s dataset and `eval`'s triplets read the same cells from the
    /// same file, CSV or JSON Lines: each trimmed of white space at both ends.
    #[test]
    fn gen_train_and_eval_trim_alike() {
        let d = tempfile::tempdir().unwrap();
        let csv = write(
            d.path(),
            "t.csv",
            "anchor, positive ,negative\n\" a \",\tb\u{3000},\"c\n\"\n",
        );
        let jsonl = write(
            d.path(),
            "t.jsonl",
            "{\" anchor\":\" a \",\"positive\":\"\\tb\u{3000}\",\"negative\":\"c\\n\"}\n",
        );
        let want = ["a", "b", "c"];
        let gen = Table::read_csv(&csv, "utf-8").unwrap();
        assert_eq!(gen.headers(), &["anchor", "positive", "negative"]);
        assert_eq!((0..3).map(|c| gen.cell(0, c)).collect::<Vec<_>>(), want);
        for p in [&csv, &jsonl] {
            let table = Table::read(p, &ReadOptions::default()).unwrap();
            assert_eq!(table.headers(), gen.headers(), "{}", p.display());
            let train = Dataset::read(p).unwrap();
            assert_eq!(train.columns, gen.headers());
            let got: Vec<&str> = train.texts.iter().map(|c| c[0].as_str()).collect();
            assert_eq!(got, want, "{}", p.display());
            let eval = TripletSet::read(p).unwrap();
            let got = [&eval.anchors[0], &eval.positives[0], &eval.negatives[0]];
            assert_eq!(got, want, "{}", p.display());
        }
    }
}
