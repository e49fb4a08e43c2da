//! `embtune mine`: hard negatives for (anchor, positive) pairs from a model's nearest
//! documents, with sentence-transformers' `mine_hard_negatives` semantics
//! (`embtune_core::mine`). Everything the input decides is checked before the model loads.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use embtune_core::gen::Format;
use embtune_core::mine::{self, MineConfig, MineObserver, OutputFormat, Pairs, Plan};
use embtune_core::table::{read_text, InputFormat, ReadOptions, Table};
use indicatif::{ProgressBar, ProgressStyle};

use embtune_core::dist::ProcessGroup;
use embtune_core::encoder::SentenceEncoder;
use tch::Device;

use super::ranks::{self, DistArgs};
use super::resolve_precision;

/// Arguments of `embtune mine`.
#[derive(Args, Debug, Clone)]
pub struct MineArgs {
    /// Model folder [default: the embedded all-MiniLM-L6-v2].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// (anchor, positive) pairs: CSV or JSON Lines; anchors are the first column and
    /// positives the second unless named.
    #[arg(long)]
    pub data: PathBuf,
    /// Output file: `.csv` or `.jsonl` (or any name with --format).
    #[arg(long)]
    pub output: PathBuf,
    /// Output file format, when the extension does not say: csv or jsonl.
    #[arg(long, value_parser = ["csv", "jsonl"])]
    pub format: Option<String>,
    /// Documents searched besides the positives: CSV/JSON Lines (see --corpus-column) or
    /// a text file with one document per line.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Column of a CSV/JSON Lines --corpus holding the documents [default: its first
    /// column].
    #[arg(long, requires = "corpus")]
    pub corpus_column: Option<String>,
    /// Column of the anchors [default: the first].
    #[arg(long)]
    pub anchor_column: Option<String>,
    /// Column of the positives [default: the second].
    #[arg(long)]
    pub positive_column: Option<String>,
    /// Candidates skipped at the top of each ranking.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub range_min: usize,
    /// Candidates considered per anchor [default: range-min + num-negatives + the most
    /// positives of one anchor; x10 negatives with a margin or --max-score].
    #[arg(long, allow_negative_numbers = true)]
    pub range_max: Option<usize>,
    /// Skip candidates scoring above this.
    #[arg(long, allow_negative_numbers = true)]
    pub max_score: Option<f64>,
    /// Skip candidates scoring below this.
    #[arg(long, allow_negative_numbers = true)]
    pub min_score: Option<f64>,
    /// Skip candidates with score + margin > the anchor's lowest positive score.
    #[arg(long, allow_negative_numbers = true)]
    pub absolute_margin: Option<f64>,
    /// Skip candidates with score > positive - |positive| * margin (0.05: NV-Retriever's
    /// TopK-PercPos).
    #[arg(long, allow_negative_numbers = true)]
    pub relative_margin: Option<f64>,
    /// Negatives per anchor.
    #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
    pub num_negatives: usize,
    /// top (the best candidates) or random (a sample of the surviving ones).
    #[arg(long, default_value = "top", value_parser = ["top", "random"])]
    pub sampling_strategy: String,
    /// Keep the positives among the candidates (forces --output-format n-tuple).
    #[arg(long)]
    pub include_positives: bool,
    /// triplet, n-tuple, labeled-pair or labeled-list.
    #[arg(long, default_value = "triplet", value_parser = ["triplet", "n-tuple", "labeled-pair", "labeled-list"])]
    pub output_format: String,
    /// Add the similarity scores (a `scores` column, or `score` for labeled-pair).
    #[arg(long)]
    pub output_scores: bool,
    /// Text prepended to the anchors [default: the model's `query` prompt, if any].
    #[arg(long, conflicts_with = "query_prompt_name")]
    pub query_prompt: Option<String>,
    /// Name of one of the model's prompts for the anchors.
    #[arg(long)]
    pub query_prompt_name: Option<String>,
    /// Text prepended to the documents [default: the model's `document`, `passage` or
    /// `corpus` prompt, if any].
    #[arg(long, conflicts_with = "corpus_prompt_name")]
    pub corpus_prompt: Option<String>,
    /// Name of one of the model's prompts for the documents.
    #[arg(long)]
    pub corpus_prompt_name: Option<String>,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32, allow_negative_numbers = true)]
    pub batch_size: usize,
    /// Rows per block of the exact search (a block of scores is rows x rows floats).
    #[arg(long, default_value_t = mine::DEFAULT_BLOCK_ROWS, allow_negative_numbers = true)]
    pub block_rows: usize,
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16.
    #[arg(long, default_value = "auto")]
    pub precision: String,
    /// Seed of --sampling-strategy random.
    #[arg(long, default_value_t = 42, allow_negative_numbers = true)]
    pub seed: u64,
    /// Folder caching the embeddings (by model, prompt and texts) for later runs.
    #[arg(long)]
    pub cache_folder: Option<PathBuf>,
    /// No progress bars, notes or statistics (errors still print).
    #[arg(long)]
    pub quiet: bool,
    /// With several ranks each embeds its share of the corpus and the anchors; rank 0
    /// searches and writes the output.
    #[command(flatten)]
    pub dist: DistArgs,
}

/// The output format: `--format`, else the extension.
fn output_format(args: &MineArgs) -> anyhow::Result<Format> {
    match args.format.as_deref() {
        Some("csv") => return Ok(Format::Csv),
        Some(_) => return Ok(Format::Jsonl),
        None => {}
    }
    match InputFormat::from_extension(&args.output) {
        Some(InputFormat::Csv) => Ok(Format::Csv),
        Some(InputFormat::Jsonl) => Ok(Format::Jsonl),
        None => anyhow::bail!(
            "{}: unknown output format; use a .csv or .jsonl file name, or --format csv|jsonl",
            args.output.display()
        ),
    }
}

/// The documents of `--corpus`: a column of a CSV/JSON Lines file, or the non-empty lines
/// of any other file (trimmed, as table cells are).
pub fn read_corpus(path: &Path, column: Option<&str>) -> anyhow::Result<Vec<String>> {
    if !path.is_file() {
        anyhow::bail!(
            "--corpus {}: no such file; pass an existing CSV, JSON Lines or text file",
            path.display()
        );
    }
    if InputFormat::from_extension(path).is_some() {
        let table = Table::read(path, &ReadOptions::default())?;
        let c = match column {
            Some(name) => {
                table.require_columns([name], path)?;
                table.column(name).expect("checked above")
            }
            None => 0,
        };
        return Ok((0..table.n_rows())
            .map(|r| table.cell(r, c).to_string())
            .collect());
    }
    if column.is_some() {
        anyhow::bail!(
            "{}: --corpus-column applies to .csv and .jsonl corpora only",
            path.display()
        );
    }
    let text = read_text(path, None)?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// The model's identity in the embedding cache: its folder, and the size and time of its
/// weights (a model re-trained into the same folder gets new entries).
fn model_identity(dir: &Path) -> String {
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let weights = std::fs::metadata(dir.join("model.safetensors")).ok();
    let stamp = weights
        .map(|m| {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}:{t}", m.len())
        })
        .unwrap_or_default();
    format!("{}|{stamp}", canon.display())
}

/// Progress bars on a terminal, notes on stderr; nothing with --quiet.
struct Progress {
    quiet: bool,
    tty: bool,
    bar: Option<ProgressBar>,
}

impl MineObserver for Progress {
    fn note(&mut self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }
    fn phase(&mut self, name: &str, total: usize) {
        if self.quiet {
            return;
        }
        if self.tty {
            let b = ProgressBar::new(total as u64);
            b.set_style(
                ProgressStyle::with_template(&format!(
                    "{name:<16} {{bar:40}} {{pos}}/{{len}} [{{elapsed_precise}}<{{eta_precise}}]"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            self.bar = Some(b);
        } else {
            eprintln!("embtune: {name} ({total})");
        }
    }
    fn progress(&mut self, done: usize) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
        }
    }
    fn phase_done(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// Runs `embtune mine`.
pub fn run(args: MineArgs, argv: &[OsString]) -> anyhow::Result<ExitCode> {
    let format = output_format(&args)?;
    super::checks::at_least_one("--batch-size", args.batch_size, 32)?;
    super::checks::at_least_one("--block-rows", args.block_rows, 4096)?;
    let table = Table::read(&args.data, &ReadOptions::default())?;
    let pairs = Pairs::from_table(
        &table,
        &args.data,
        args.anchor_column.as_deref(),
        args.positive_column.as_deref(),
    )?;
    drop(table);
    let corpus = args
        .corpus
        .as_ref()
        .map(|p| read_corpus(p, args.corpus_column.as_deref()))
        .transpose()?;
    let cfg = MineConfig {
        range_min: args.range_min,
        range_max: args.range_max,
        max_score: args.max_score,
        min_score: args.min_score,
        absolute_margin: args.absolute_margin,
        relative_margin: args.relative_margin,
        num_negatives: args.num_negatives,
        sampling_strategy: args.sampling_strategy.parse()?,
        include_positives: args.include_positives,
        output_format: args.output_format.parse::<OutputFormat>()?,
        output_scores: args.output_scores,
        query_prompt: args.query_prompt.clone(),
        corpus_prompt: args.corpus_prompt.clone(),
        batch_size: args.batch_size,
        block_rows: args.block_rows,
        seed: args.seed,
        cache_folder: args.cache_folder.clone(),
        model_name: String::new(),
    };
    // The reference's checks (range window, empty data) before the model loads.
    Plan::new(&pairs, corpus.as_deref(), &cfg)?;
    let model_dir = super::encode::model_dir(&args.model)?;
    ranks::run(
        &args.dist,
        &args.device,
        argv,
        &args.data,
        |device, group| {
            mine_rank(
                &args, &model_dir, device, cfg, &pairs, corpus, format, group,
            )?;
            Ok(ExitCode::SUCCESS)
        },
    )
}

/// Loads the model and mines as one process or as one rank of `group` (rank 0 writes).
#[allow(clippy::too_many_arguments)]
fn mine_rank(
    args: &MineArgs,
    model_dir: &Path,
    device: Device,
    mut cfg: MineConfig,
    pairs: &Pairs,
    corpus: Option<Vec<String>>,
    format: Format,
    group: Option<&ProcessGroup>,
) -> anyhow::Result<()> {
    cfg.model_name = model_identity(model_dir);
    let mut enc = SentenceEncoder::load(model_dir, device)?;
    enc.set_precision(resolve_precision(&args.precision, device)?)?;
    let writer = group.is_none_or(|g| g.rank() == 0);
    if let Some(n) = &args.query_prompt_name {
        cfg.query_prompt = Some(enc.prompt(n)?.to_string());
    }
    if let Some(n) = &args.corpus_prompt_name {
        cfg.corpus_prompt = Some(enc.prompt(n)?.to_string());
    }
    let mut progress = Progress {
        quiet: args.quiet || !writer,
        tty: std::io::stderr().is_terminal(),
        bar: None,
    };
    let mined = mine::mine_with_group(&enc, pairs, corpus.as_deref(), &cfg, &mut progress, group)
        .with_context(|| format!("mining {}", args.data.display()))?;
    let Some(mined) = mined else {
        return Ok(()); // not rank 0
    };
    if mined.stats.rows == 0 {
        anyhow::bail!(
            "no row could be mined: every candidate was filtered out; {}",
            "raise --range-max, or loosen --max-score, --min-score and the margins"
        );
    }
    mined.write(&args.output, format)?;
    if !args.quiet {
        let shown = mine::stats::ParamsShown {
            absolute_margin: cfg.absolute_margin.is_some(),
            relative_margin: cfg.relative_margin.is_some(),
            max_score: cfg.max_score.is_some(),
        };
        eprint!("{}", mined.stats.report(cfg.range_min, &shown));
        eprintln!(
            "embtune: wrote {} rows ({}) for {} anchors, {} documents searched, to {}",
            mined.stats.rows,
            mined.columns.join(", "),
            mined.stats.n_queries,
            mined.stats.n_corpus,
            args.output.display()
        );
    }
    Ok(())
}
