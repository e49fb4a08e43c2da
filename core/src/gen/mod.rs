//! Data generation pipeline (`embtune gen`): read the table, split it into parts (by the
//! domain column, or one part `all`), build each part's candidate pool, run the
//! [`PairStrategy`] with the [`NegativeSampler`] it is given, hold out an optional eval
//! split, and write everything atomically together with `manifest.json`.
//!
//! [`generate`] takes the strategy and the sampler as instances: the command line builds
//! them by name ([`registry::build`](crate::registry::build)), a library user may pass any
//! implementation, registered or not.
//!
//! Submodules: [`names`] (safe file names for domain values), [`output`] (staged writes,
//! CSV/JSONL writers), [`eval`] (the held-out retrieval split). The candidate lookup of
//! the samplers lives with their API, in [`crate::sampler::groups`].

pub mod eval;
pub mod names;
pub mod output;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
// `groups` is imported as a module too: `eval` and `names` use its hash maps.
use crate::sampler::groups::{self, FxHashMap};
use crate::sampler::{CandidatePool, NegativeSampler};
use crate::strategy::{ColumnSpec, DomainUse, ExampleSink, GenContext, PairStrategy};
use crate::table::Table;

use eval::EvalSplit;
pub use output::Format;
use output::{RowWriter, Staging};

/// Where `embtune gen` writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Write nothing; keep three samples of each kind per part for printing (the
    /// original scripts' behaviour without an output flag).
    Preview,
    /// `<part>_unsupervised.csv`, `<part>_supervised.csv` (+ eval files) and
    /// `manifest.json` in this folder.
    Dir(PathBuf),
    /// The baseline script's explicit files (single part only); the manifest goes beside
    /// the supervised file as `<stem>.manifest.json`, eval files as `<stem>_eval_*.csv`.
    Files {
        /// Unsupervised file.
        unsupervised: PathBuf,
        /// Supervised file.
        supervised: PathBuf,
    },
}

/// One `embtune gen` run, fully described (the CLI builds it from flags). The strategy
/// and sampler themselves are passed to [`generate`]; the request holds their names and
/// options for the manifest and the messages.
#[derive(Debug, Clone)]
pub struct GenRequest {
    /// Input CSV.
    pub data: PathBuf,
    /// Encoding label of the input (`utf-8`, `cp949`, ...).
    pub encoding: String,
    /// Name of the strategy (its registry key for a registered one), for the manifest.
    pub strategy: String,
    /// Name of the sampler (its registry key for a registered one), for the manifest.
    pub sampler: String,
    /// Sampler config overrides (`--sampler-opt key=value`), for the manifest.
    pub sampler_options: Map<String, Value>,
    /// Anchor column; the strategy's default when `None`.
    pub desc_col: Option<String>,
    /// Category column; the strategy's default when `None`.
    pub category_col: Option<String>,
    /// Positive columns; the strategy's defaults when empty.
    pub positive_cols: Vec<String>,
    /// Split the table by this column.
    pub domain_col: Option<String>,
    /// Negatives per supervised row; the strategy's default when `None`.
    pub num_negatives: Option<usize>,
    /// Where to write.
    pub output: Output,
    /// Seed of every random choice.
    pub seed: u64,
    /// Fraction of distinct anchors held out per part for evaluation (0 = none).
    pub eval_ratio: f64,
    /// File format of the training files.
    pub format: Format,
    /// The command line, recorded in the manifest.
    pub command_line: String,
}

impl GenRequest {
    /// A request with the defaults of the command line (names `baseline` and
    /// `same-category`, utf-8, seed 42, CSV, preview only).
    pub fn new(data: impl Into<PathBuf>) -> Self {
        GenRequest {
            data: data.into(),
            encoding: "utf-8".into(),
            strategy: "baseline".into(),
            sampler: "same-category".into(),
            sampler_options: Map::new(),
            desc_col: None,
            category_col: None,
            positive_cols: Vec::new(),
            domain_col: None,
            num_negatives: None,
            output: Output::Preview,
            seed: 42,
            eval_ratio: 0.0,
            format: Format::Csv,
            command_line: String::new(),
        }
    }
}

/// Progress of a run, reported every few thousand rows and at the end of each part.
#[derive(Debug, Clone, Copy)]
pub struct GenProgress {
    /// Table rows processed so far.
    pub done_rows: u64,
    /// Table rows in all.
    pub total_rows: u64,
}

/// What one part produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartReport {
    /// The domain value (or `all`).
    pub part: String,
    /// Its safe file-name prefix.
    pub name: String,
    /// Table rows in the part.
    pub rows: u64,
    /// Rows kept (non-empty anchor).
    pub kept: u64,
    /// Rows skipped because the anchor cell is empty.
    pub skipped_empty_anchor: u64,
    /// Unsupervised texts written (train side).
    pub unsupervised_rows: u64,
    /// Supervised rows written (train side).
    pub supervised_rows: u64,
    /// Negatives repeated to fill `num_negatives` columns (groups too small).
    pub negative_repeats: u64,
    /// Distinct anchors held out for evaluation.
    pub eval_anchors: u64,
    /// Eval queries (held-out anchors with at least one relevant document).
    pub eval_queries: u64,
    /// Eval corpus size (distinct positives of the part).
    pub eval_corpus: u64,
    /// Eval relevance pairs.
    pub eval_qrels: u64,
    /// Up to three unsupervised texts (preview).
    #[serde(skip)]
    pub sample_unsupervised: Vec<String>,
    /// Up to three supervised rows (preview).
    #[serde(skip)]
    pub sample_supervised: Vec<Vec<String>>,
}

/// One written file, as listed in the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct FileEntry {
    /// File name relative to the output folder (or the path given on the command line).
    pub file: String,
    /// Part (domain value or `all`).
    pub part: String,
    /// `unsupervised`, `supervised`, `eval_queries`, `eval_corpus` or `eval_qrels`.
    pub kind: &'static str,
    /// Data rows (header excluded).
    pub rows: u64,
    /// Column names.
    pub columns: Vec<String>,
}

/// The result of a run; serialized (with run metadata) as `manifest.json`.
#[derive(Debug, Clone, Serialize)]
pub struct GenReport {
    /// Table rows read.
    pub rows_read: u64,
    /// Column names used.
    pub columns: ColumnsUsed,
    /// Per part, in first-appearance order of the domain values.
    pub parts: Vec<PartReport>,
    /// Every file written, manifest excluded.
    pub files: Vec<FileEntry>,
    /// The manifest path, when files were written.
    #[serde(skip)]
    pub manifest: Option<PathBuf>,
    /// Supervised header.
    #[serde(skip)]
    pub supervised_header: Vec<String>,
}

/// The resolved columns, for the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnsUsed {
    /// Anchor column.
    pub desc: String,
    /// Category column.
    pub category: String,
    /// Positive columns.
    pub positives: Vec<String>,
    /// Domain column.
    pub domain: Option<String>,
    /// Negatives per supervised row.
    pub num_negatives: usize,
}

impl GenReport {
    /// Sum of a per-part count.
    pub fn total(&self, f: impl Fn(&PartReport) -> u64) -> u64 {
        self.parts.iter().map(f).sum()
    }
}

/// Resolves the column flags of `req` against the strategy's defaults.
pub fn resolve_columns(req: &GenRequest, strategy: &dyn PairStrategy) -> Result<ColumnSpec> {
    let d = strategy.default_columns();
    let spec = ColumnSpec {
        desc: req.desc_col.clone().unwrap_or_else(|| d.desc.to_string()),
        category: req
            .category_col
            .clone()
            .unwrap_or_else(|| d.category.to_string()),
        positives: if req.positive_cols.is_empty() {
            d.positives.iter().map(|s| s.to_string()).collect()
        } else {
            req.positive_cols.clone()
        },
        domain: req.domain_col.clone(),
        num_negatives: req.num_negatives.unwrap_or(d.num_negatives),
    };
    if spec.num_negatives == 0 {
        return Err(Error::Invalid("--num-negatives must be at least 1".into()));
    }
    if spec.domain.is_none() && strategy.domain_use() == DomainUse::Required {
        return Err(Error::Invalid(format!(
            "strategy '{}' writes one file pair per domain and needs --domain-col COLUMN",
            req.strategy
        )));
    }
    Ok(spec)
}

/// Runs `embtune gen` with `strategy` and `sampler` (built by the caller: by name through
/// [`registry::build`](crate::registry::build), or any implementation of the traits):
/// everything or nothing is written (temporary names, renamed at the end). `progress` is
/// called every few thousand rows.
pub fn generate(
    req: &GenRequest,
    strategy: Box<dyn PairStrategy>,
    mut sampler: Box<dyn NegativeSampler>,
    progress: &mut dyn FnMut(GenProgress),
) -> Result<GenReport> {
    if !(0.0..1.0).contains(&req.eval_ratio) || req.eval_ratio.is_nan() {
        return Err(Error::Invalid(format!(
            "--eval-ratio must be in [0, 1), got {}",
            req.eval_ratio
        )));
    }
    let spec = resolve_columns(req, &*strategy)?;
    if spec.domain.is_some() {
        if let Output::Files { .. } = req.output {
            return Err(Error::Invalid(
                "--domain-col writes one file pair per domain: use --output-dir instead of --output-unsupervised/--output-supervised".into(),
            ));
        }
    }

    let mut trace = Trace::from_env();
    let source = crate::table::ReadOptions {
        format: None,
        encoding: Some(&req.encoding),
    };
    let table = Table::read(&req.data, &source)?;
    trace.mark("read and parse");
    let mut needed: Vec<&str> = vec![&spec.desc, &spec.category];
    needed.extend(spec.positives.iter().map(String::as_str));
    needed.extend(spec.domain.as_deref());
    table.require_columns(needed, &req.data)?;

    // Parts: domain values in first-appearance order, or the whole table as `all`.
    let (part_names, part_rows) = partition(&table, spec.domain.as_deref());
    trace.mark("partition");
    let stems = match spec.domain {
        Some(_) => names::unique_stems(part_names.iter().map(String::as_str)),
        None => vec!["all".to_string()],
    };
    let header = strategy.supervised_header(&spec);
    let unsup_header = vec!["text".to_string()];
    let desc_c = table.column(&spec.desc).unwrap_or(0);
    let cat_c = table.column(&spec.category).unwrap_or(0);
    // The first positive column: what a sampler compares a candidate with (margins).
    let pos_c = spec.positives.first().and_then(|p| table.column(p));
    let total_rows = table.n_rows() as u64;

    let mut staging = Staging::default();
    let mut report = GenReport {
        rows_read: total_rows,
        columns: ColumnsUsed {
            desc: spec.desc.clone(),
            category: spec.category.clone(),
            positives: spec.positives.clone(),
            domain: spec.domain.clone(),
            num_negatives: spec.num_negatives,
        },
        parts: Vec::new(),
        files: Vec::new(),
        manifest: None,
        supervised_header: header.clone(),
    };
    let mut rng = crate::seeded_rng(req.seed);
    let mut done_rows = 0u64;
    // Files whose writer threads are still finishing (waited for before the commit).
    let mut closing = Vec::new();
    let ext = req.format.extension();
    let prefix_eval = spec.domain.is_some();

    for (p, rows_all) in part_rows.iter().enumerate() {
        let part = &part_names[p];
        let stem = &stems[p];
        // A domain's rows are scattered over the table: gather them into a table of their
        // own first (one pass, prefetching ahead), so everything after reads memory in
        // order. (One pass over the whole table for all domains at once measured slower.)
        let gathered;
        let whole: Vec<usize>;
        let (table, rows_all): (&Table, &[usize]) = if spec.domain.is_some() {
            gathered = table.select_rows(rows_all);
            whole = (0..rows_all.len()).collect();
            (&gathered, &whole)
        } else {
            (&table, rows_all)
        };
        // The part's pool: rows with a non-empty anchor, in table order.
        let mut rows = Vec::with_capacity(rows_all.len());
        let mut pool = CandidatePool {
            anchors: Vec::with_capacity(rows_all.len()),
            categories: Vec::with_capacity(rows_all.len()),
            positives: Vec::with_capacity(if pos_c.is_some() { rows_all.len() } else { 0 }),
        };
        // Samplers read the pool at random places: huge pages where offered.
        crate::mem::advise_huge(&mut pool.anchors);
        crate::mem::advise_huge(&mut pool.categories);
        for &r in rows_all {
            let a = table.cell(r, desc_c);
            if !a.is_empty() {
                rows.push(r);
                pool.anchors.push(a);
                pool.categories.push(table.cell(r, cat_c));
                if let Some(c) = pos_c {
                    pool.positives.push(table.cell(r, c));
                }
            }
        }
        trace.mark("pool");
        sampler.prepare(&pool)?;
        trace.mark("sampler prepare");

        // Files of this part.
        let (unsup_path, sup_path, eval_base): (
            Option<PathBuf>,
            Option<PathBuf>,
            Option<(PathBuf, String)>,
        ) = match &req.output {
            Output::Preview => (None, None, None),
            Output::Dir(dir) => (
                Some(dir.join(format!("{stem}_unsupervised.{ext}"))),
                Some(dir.join(format!("{stem}_supervised.{ext}"))),
                Some((
                    dir.clone(),
                    if prefix_eval {
                        format!("{stem}_")
                    } else {
                        String::new()
                    },
                )),
            ),
            Output::Files {
                unsupervised,
                supervised,
            } => {
                let dir = supervised
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                let s = file_stem(supervised);
                (
                    Some(unsupervised.clone()),
                    Some(supervised.clone()),
                    Some((dir, format!("{s}_"))),
                )
            }
        };
        let open = |staging: &mut Staging,
                    path: &Option<PathBuf>,
                    header: &[String]|
         -> Result<Option<RowWriter>> {
            match path {
                None => Ok(None),
                Some(p) => Ok(Some(RowWriter::with_table(
                    staging.create(p)?,
                    p,
                    req.format,
                    header.to_vec(),
                    table,
                )?)),
            }
        };
        let unsup_w = open(&mut staging, &unsup_path, &unsup_header)?;
        let sup_w = open(&mut staging, &sup_path, &header)?;
        let split = if req.eval_ratio > 0.0 && eval_base.is_some() {
            let mut erng = crate::seeded_rng(req.seed);
            erng.set_stream(p as u64 + 1);
            Some(EvalSplit::choose(&pool.anchors, req.eval_ratio, &mut erng))
        } else {
            None
        };

        let mut sink = PartSink {
            unsup: unsup_w,
            sup: sup_w,
            split,
            preview: req.output == Output::Preview,
            report: PartReport {
                part: part.clone(),
                name: stem.clone(),
                rows: rows_all.len() as u64,
                kept: rows.len() as u64,
                skipped_empty_anchor: (rows_all.len() - rows.len()) as u64,
                ..Default::default()
            },
            seen: 0,
            done_before: done_rows,
            total_rows,
            progress,
        };
        let mut ctx = GenContext::new(table, &rows, &pool, &spec, &*sampler, &mut rng);
        strategy.generate(&mut ctx, &mut sink)?;
        trace.mark("generate");
        let repeats = ctx.repeats;
        let PartSink {
            unsup,
            sup,
            split,
            report: mut part_report,
            ..
        } = sink;
        part_report.negative_repeats = repeats;
        for (w, kind) in [(unsup, "unsupervised"), (sup, "supervised")] {
            if let Some(w) = w {
                report.files.push(FileEntry {
                    file: display_name(&req.output, w.path()),
                    part: part.clone(),
                    kind,
                    rows: w.rows(),
                    columns: w.header().to_vec(),
                });
                closing.push(w.close()?);
            }
        }
        trace.mark("close files");
        if let (Some(split), Some((dir, pre))) = (split, eval_base) {
            part_report.eval_anchors = split.n_held() as u64;
            for f in split.write(&mut staging, &dir, &pre)? {
                match f.kind {
                    "eval_queries" => part_report.eval_queries = f.rows,
                    "eval_corpus" => part_report.eval_corpus = f.rows,
                    _ => part_report.eval_qrels = f.rows,
                }
                report.files.push(FileEntry {
                    file: display_name(&req.output, Path::new(&f.file)),
                    part: part.clone(),
                    ..f
                });
            }
        }
        done_rows += rows_all.len() as u64;
        progress(GenProgress {
            done_rows,
            total_rows,
        });
        report.parts.push(part_report);
    }

    for c in closing {
        c.wait()?;
    }
    trace.mark("finish files");

    let manifest_path = match &req.output {
        Output::Preview => None,
        Output::Dir(dir) => Some(dir.join("manifest.json")),
        Output::Files { supervised, .. } => {
            let dir = supervised
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            Some(dir.join(format!("{}.manifest.json", file_stem(supervised))))
        }
    };
    if let Some(mp) = &manifest_path {
        let manifest = Manifest {
            embtune_version: crate::VERSION,
            command: &req.command_line,
            seed: req.seed,
            strategy: &req.strategy,
            sampler: &req.sampler,
            sampler_options: &req.sampler_options,
            data: req.data.to_string_lossy().into_owned(),
            encoding: &req.encoding,
            format: req.format,
            eval_ratio: req.eval_ratio,
            report: &report,
        };
        let mut json =
            serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Invalid(e.to_string()))?;
        json.push(b'\n');
        output::write_small(&mut staging, mp, &json)?;
        staging.commit()?;
    }
    report.manifest = manifest_path;
    Ok(report)
}

#[derive(Serialize)]
struct Manifest<'a> {
    embtune_version: &'a str,
    command: &'a str,
    seed: u64,
    strategy: &'a str,
    sampler: &'a str,
    sampler_options: &'a Map<String, Value>,
    data: String,
    encoding: &'a str,
    format: Format,
    eval_ratio: f64,
    #[serde(flatten)]
    report: &'a GenReport,
}

/// Phase times on standard error when `EMBTUNE_TRACE` is set (for profiling `gen`).
struct Trace {
    /// When the last phase ended; None when tracing is off.
    last: Option<std::time::Instant>,
}

impl Trace {
    fn from_env() -> Self {
        let on = std::env::var_os("EMBTUNE_TRACE").is_some();
        Trace {
            last: on.then(std::time::Instant::now),
        }
    }

    fn mark(&mut self, what: &str) {
        if let Some(t) = self.last {
            let now = std::time::Instant::now();
            eprintln!("trace: {what}: {:.1} ms", (now - t).as_secs_f64() * 1e3);
            self.last = Some(now);
        }
    }
}

/// The part names and the table rows of each part, in first-appearance order.
fn partition(table: &Table, domain: Option<&str>) -> (Vec<String>, Vec<Vec<usize>>) {
    let n = table.n_rows();
    let Some(col) = domain.and_then(|d| table.column(d)) else {
        return (vec!["all".to_string()], vec![(0..n).collect()]);
    };
    // Owned keys: comparing with a borrowed one would read the table where the value
    // first appeared, a cache miss per row on large tables.
    let mut index: FxHashMap<Box<str>, usize> = FxHashMap::default();
    let mut names = Vec::new();
    let mut rows: Vec<Vec<usize>> = Vec::new();
    for r in 0..n {
        let v = table.cell(r, col);
        let p = match index.get(v) {
            Some(&p) => p,
            None => {
                index.insert(v.into(), rows.len());
                names.push(v.to_string());
                rows.push(Vec::new());
                rows.len() - 1
            }
        };
        rows[p].push(r);
    }
    (names, rows)
}

fn file_stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into())
}

/// How a file is named in the manifest: relative to the output folder, or as given.
fn display_name(output: &Output, path: &Path) -> String {
    match output {
        Output::Dir(_) => path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        _ => path.to_string_lossy().into_owned(),
    }
}

/// The sink of one part: writes the train side, routes held-out anchors to the eval split,
/// keeps preview samples and reports progress.
struct PartSink<'t, 'p> {
    unsup: Option<RowWriter>,
    sup: Option<RowWriter>,
    split: Option<EvalSplit<'t>>,
    preview: bool,
    report: PartReport,
    seen: u64,
    done_before: u64,
    total_rows: u64,
    progress: &'p mut dyn FnMut(GenProgress),
}

const PROGRESS_EVERY: u64 = 1 << 14;

impl ExampleSink for PartSink<'_, '_> {
    fn unsupervised(&mut self, anchor: &str, text: &str) -> Result<()> {
        self.seen += 1;
        if self.seen.is_multiple_of(PROGRESS_EVERY) {
            (self.progress)(GenProgress {
                done_rows: self.done_before + self.seen,
                total_rows: self.total_rows,
            });
        }
        if self.split.as_ref().is_some_and(|s| s.is_held(anchor)) {
            return Ok(());
        }
        self.report.unsupervised_rows += 1;
        if let Some(w) = &mut self.unsup {
            w.write(&[text])?;
        } else if self.preview && self.report.sample_unsupervised.len() < 3 {
            self.report.sample_unsupervised.push(text.to_string());
        }
        Ok(())
    }

    fn supervised(&mut self, fields: &[&str]) -> Result<()> {
        if let Some(split) = &mut self.split {
            if split.observe(fields) {
                return Ok(());
            }
        }
        self.report.supervised_rows += 1;
        if let Some(w) = &mut self.sup {
            w.write(fields)?;
        } else if self.preview && self.report.sample_supervised.len() < 3 {
            self.report
                .sample_supervised
                .push(fields.iter().map(|s| s.to_string()).collect());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::DefaultColumns;

    /// One supervised row per kept row: (anchor, its `pos` cell, the sampler's negative).
    struct Triples;

    impl PairStrategy for Triples {
        fn default_columns(&self) -> DefaultColumns {
            DefaultColumns {
                desc: "desc",
                category: "cat",
                positives: &["pos"],
                num_negatives: 1,
            }
        }

        fn supervised_header(&self, _spec: &ColumnSpec) -> Vec<String> {
            vec!["anchor".into(), "positive".into(), "negative".into()]
        }

        fn generate(&self, ctx: &mut GenContext<'_>, sink: &mut dyn ExampleSink) -> Result<()> {
            let pos = ctx.table.column("pos").unwrap_or(0);
            let mut scratch = Vec::new();
            for i in 0..ctx.rows.len() {
                let (anchor, positive) = (ctx.pool.anchors[i], ctx.table.cell(ctx.rows[i], pos));
                let negatives = ctx.negatives(i, 1, &mut scratch)?;
                if let Some(n) = negatives.first() {
                    sink.supervised(&[anchor, positive, n])?;
                }
            }
            Ok(())
        }
    }

    /// The last pool entry whose text differs from the anchor's: no built-in draws that.
    struct LastOther;

    impl NegativeSampler for LastOther {
        fn prepare(&mut self, _pool: &CandidatePool<'_>) -> Result<()> {
            Ok(())
        }

        fn sample(
            &self,
            pool: &CandidatePool<'_>,
            anchor: usize,
            _k: usize,
            _rng: &mut crate::Rng,
            out: &mut Vec<usize>,
        ) -> Result<()> {
            out.extend(
                (0..pool.len())
                    .rev()
                    .find(|&i| pool.anchors[i] != pool.anchors[anchor]),
            );
            Ok(())
        }
    }

    #[test]
    fn runs_plugins_passed_as_instances_that_no_registry_knows() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("t.csv");
        std::fs::write(&data, "desc,cat,pos\na,x,pa\nb,x,pb\nc,y,pc\nd,y,pd\n").unwrap();
        let mut req = GenRequest::new(&data);
        req.strategy = "triples".into();
        req.sampler = "last-other".into();
        req.output = Output::Dir(dir.path().join("out"));
        let report = generate(&req, Box::new(Triples), Box::new(LastOther), &mut |_| {}).unwrap();
        assert_eq!(report.total(|p| p.supervised_rows), 4);
        let out = Table::read_csv(dir.path().join("out/all_supervised.csv"), "utf-8").unwrap();
        let rows: Vec<Vec<&str>> = (0..out.n_rows())
            .map(|r| (0..3).map(|c| out.cell(r, c)).collect())
            .collect();
        assert_eq!(
            rows,
            [
                ["a", "pa", "d"],
                ["b", "pb", "d"],
                ["c", "pc", "d"],
                ["d", "pd", "c"]
            ]
        );
        let manifest = std::fs::read_to_string(dir.path().join("out/manifest.json")).unwrap();
        assert!(
            manifest.contains("\"sampler\": \"last-other\""),
            "{manifest}"
        );
    }
}
