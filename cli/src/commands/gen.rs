//! `embtune gen`: turn a CSV table into contrastive training data (the original scripts'
//! three strategies, any registered sampler), with an optional held-out eval split.
//!
//! Flags are kebab-case; the original scripts' snake_case spellings are aliases, so an
//! existing command line keeps working.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, ValueEnum};
use embtune_core::gen::{self, GenProgress, GenReport, GenRequest, Output};
use embtune_core::registry;
use embtune_core::{NegativeSampler, PairStrategy};
use serde_json::Map;

/// Arguments of `embtune gen`.
#[derive(Args, Debug, Clone)]
pub struct GenArgs {
    /// Pair strategy: baseline, domainwise, fusion-multineg (or a plugin's; see `embtune list strategies`).
    #[arg(long, default_value = "baseline")]
    pub strategy: String,
    /// Negative sampler: same-category, random (or a plugin's; see `embtune list samplers`).
    #[arg(long, default_value = "same-category")]
    pub sampler: String,
    /// Sampler option key=value (repeatable).
    #[arg(long = "sampler-opt", value_name = "KEY=VALUE")]
    pub sampler_opt: Vec<String>,
    /// Input CSV file with a header row.
    #[arg(
        long,
        visible_alias = "data-path",
        alias = "data_path",
        value_name = "FILE"
    )]
    pub data: PathBuf,
    /// Text encoding of the input: utf-8 (BOM or not), cp949, euc-kr, or any WHATWG label.
    #[arg(long, default_value = "utf-8")]
    pub encoding: String,
    /// Anchor ("description") column [default: the strategy's, 설명].
    #[arg(long = "desc-col", alias = "desc_col", value_name = "COLUMN")]
    pub desc_col: Option<String>,
    /// Category column; negatives come from the same category [default: 분류; fusion-multineg: 대분류].
    #[arg(long = "category-col", alias = "category_col", value_name = "COLUMN")]
    pub category_col: Option<String>,
    /// Positive columns, space separated [default: baseline 대분류 중분류; domainwise 표제어 영문;
    /// fusion-multineg 대분류 중분류 표제어 영문].
    #[arg(long = "positive-cols", alias = "positive_cols", value_name = "COLUMN", num_args = 1..)]
    pub positive_cols: Vec<String>,
    /// Split the table by this column: one file pair per value (required by domainwise).
    #[arg(long = "domain-col", alias = "domain_col", value_name = "COLUMN")]
    pub domain_col: Option<String>,
    /// Negatives per supervised row [default: 1; fusion-multineg: 5].
    #[arg(
        long = "num-negatives",
        alias = "num_negatives",
        value_name = "K",
        allow_negative_numbers = true
    )]
    pub num_negatives: Option<usize>,
    /// Output folder: <part>_unsupervised.csv, <part>_supervised.csv, manifest.json.
    #[arg(long = "output-dir", alias = "output_dir", value_name = "DIR", conflicts_with_all = ["output_unsupervised", "output_supervised"])]
    pub output_dir: Option<PathBuf>,
    /// Unsupervised output file (baseline style; give --output-supervised too).
    #[arg(
        long = "output-unsupervised",
        alias = "output_unsupervised",
        value_name = "FILE",
        requires = "output_supervised"
    )]
    pub output_unsupervised: Option<PathBuf>,
    /// Supervised output file (baseline style; give --output-unsupervised too).
    #[arg(
        long = "output-supervised",
        alias = "output_supervised",
        value_name = "FILE",
        requires = "output_unsupervised"
    )]
    pub output_supervised: Option<PathBuf>,
    /// Seed of every random choice: the same input and flags give byte-identical files.
    #[arg(long, default_value_t = 42, allow_negative_numbers = true)]
    pub seed: u64,
    /// Hold out this fraction of each part's anchors as a retrieval eval split
    /// (eval_queries.csv, eval_corpus.csv, eval_qrels.csv).
    #[arg(
        long = "eval-ratio",
        alias = "eval_ratio",
        default_value_t = 0.0,
        value_name = "R",
        allow_negative_numbers = true
    )]
    pub eval_ratio: f64,
    /// Training file format.
    #[arg(long, value_enum, default_value_t = FormatArg::Csv)]
    pub format: FormatArg,
    /// No progress bar and no summary line.
    #[arg(long, short)]
    pub quiet: bool,
    /// Replace the output of an earlier run in --output-dir (the files its manifest.json
    /// lists); without it such a folder is refused.
    #[arg(long)]
    pub overwrite: bool,
}

/// `--format`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatArg {
    /// CSV, UTF-8 with BOM (the original's).
    Csv,
    /// JSON Lines.
    Jsonl,
}

impl GenArgs {
    /// The request for core, with a canonical command line for the manifest.
    pub fn request(&self) -> anyhow::Result<GenRequest> {
        let output = match (
            &self.output_dir,
            &self.output_unsupervised,
            &self.output_supervised,
        ) {
            (Some(d), _, _) => Output::Dir(d.clone()),
            (None, Some(u), Some(s)) => Output::Files {
                unsupervised: u.clone(),
                supervised: s.clone(),
            },
            _ => Output::Preview,
        };
        let mut req = GenRequest::new(&self.data);
        req.encoding = self.encoding.clone();
        req.strategy = self.strategy.clone();
        req.sampler = self.sampler.clone();
        req.sampler_options = registry::parse_options(self.sampler_opt.iter().map(String::as_str))?;
        req.desc_col = self.desc_col.clone();
        req.category_col = self.category_col.clone();
        req.positive_cols = self.positive_cols.clone();
        req.domain_col = self.domain_col.clone();
        req.num_negatives = self.num_negatives;
        req.output = output;
        req.seed = self.seed;
        req.eval_ratio = self.eval_ratio;
        req.format = match self.format {
            FormatArg::Csv => gen::Format::Csv,
            FormatArg::Jsonl => gen::Format::Jsonl,
        };
        req.command_line = self.command_line();
        Ok(req)
    }

    /// `embtune gen ...` with every flag that was given or defaulted, shell-quoted.
    pub fn command_line(&self) -> String {
        let mut a: Vec<String> = vec!["embtune".into(), "gen".into()];
        let mut push = |k: &str, v: String| {
            a.push(k.to_string());
            a.push(shell_quote(&v));
        };
        push("--strategy", self.strategy.clone());
        push("--sampler", self.sampler.clone());
        for o in &self.sampler_opt {
            push("--sampler-opt", o.clone());
        }
        push("--data", self.data.display().to_string());
        push("--encoding", self.encoding.clone());
        for (k, v) in [
            ("--desc-col", &self.desc_col),
            ("--category-col", &self.category_col),
            ("--domain-col", &self.domain_col),
        ] {
            if let Some(v) = v {
                push(k, v.clone());
            }
        }
        if !self.positive_cols.is_empty() {
            a.push("--positive-cols".into());
            a.extend(self.positive_cols.iter().map(|c| shell_quote(c)));
        }
        let mut push = |k: &str, v: String| {
            a.push(k.to_string());
            a.push(shell_quote(&v));
        };
        if let Some(k) = self.num_negatives {
            push("--num-negatives", k.to_string());
        }
        if let Some(d) = &self.output_dir {
            push("--output-dir", d.display().to_string());
        }
        if let (Some(u), Some(s)) = (&self.output_unsupervised, &self.output_supervised) {
            push("--output-unsupervised", u.display().to_string());
            push("--output-supervised", s.display().to_string());
        }
        push("--seed", self.seed.to_string());
        if self.eval_ratio > 0.0 {
            push("--eval-ratio", self.eval_ratio.to_string());
        }
        push(
            "--format",
            if self.format == FormatArg::Csv {
                "csv".into()
            } else {
                "jsonl".into()
            },
        );
        a.join(" ")
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || "-_./=:,+@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// True when `--sampler` names a sampler that runs a model (`model-mined`): in a build
/// without libtorch it can't be built, and the front end hands `gen` to `embtune-torch`.
pub fn needs_libtorch(args: &GenArgs) -> bool {
    let Ok(options) = registry::parse_options(args.sampler_opt.iter().map(String::as_str)) else {
        return false;
    };
    matches!(
        registry::build::<dyn NegativeSampler>(&args.sampler, &options),
        Err(embtune_core::Error::NeedsLibtorch { .. })
    )
}

/// Runs `embtune gen`.
pub fn run(args: GenArgs) -> anyhow::Result<()> {
    let req = args.request()?;
    if let Some(dir) = &args.output_dir {
        super::checks::fresh_gen_output(dir, args.overwrite)?;
    }
    let start = Instant::now();
    let show_bar = !args.quiet && std::io::stderr().is_terminal();
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut progress = |p: GenProgress| {
        // Only big inputs get a bar; small ones finish before it would be seen.
        if !show_bar || p.total_rows < 50_000 {
            return;
        }
        let b = bar.get_or_insert_with(|| {
            let b = indicatif::ProgressBar::new(p.total_rows);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "gen {bar:40} {pos}/{len} rows {per_sec} {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        b.set_position(p.done_rows);
    };
    // Names become instances here, at the top; core runs whatever it is given.
    let report = registry::build::<dyn PairStrategy>(&req.strategy, &Map::new())
        .and_then(|strategy| {
            let sampler =
                registry::build::<dyn NegativeSampler>(&req.sampler, &req.sampler_options)?;
            gen::generate(&req, strategy, sampler, &mut progress)
        })
        .with_context(|| format!("embtune gen --strategy {}", req.strategy))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if req.output == Output::Preview {
        print_preview(&report);
    }
    if !args.quiet {
        eprintln!("{}", summary(&req, &report, start.elapsed().as_secs_f64()));
    }
    Ok(())
}

/// Three samples of each kind per part, like the original scripts without output flags.
fn print_preview(report: &GenReport) {
    for p in &report.parts {
        println!("== part {} ({} rows) ==", p.part, p.rows);
        println!("unsupervised samples:");
        for t in &p.sample_unsupervised {
            println!("  {t}");
        }
        println!(
            "supervised samples ({}):",
            report.supervised_header.join(", ")
        );
        for r in &p.sample_supervised {
            println!("  {}", r.join(" | "));
        }
    }
    println!("(no output flag: nothing written; pass --output-dir DIR to write the files)");
}

/// One line of counts.
pub fn summary(req: &GenRequest, r: &GenReport, secs: f64) -> String {
    let mut s = format!(
        "gen {}/{}: {} rows read, {} part(s), {} unsupervised, {} supervised rows",
        req.strategy,
        req.sampler,
        r.rows_read,
        r.parts.len(),
        r.total(|p| p.unsupervised_rows),
        r.total(|p| p.supervised_rows),
    );
    let skipped = r.total(|p| p.skipped_empty_anchor);
    if skipped > 0 {
        s.push_str(&format!(", {skipped} empty anchors skipped"));
    }
    let repeats = r.total(|p| p.negative_repeats);
    if repeats > 0 {
        s.push_str(&format!(", {repeats} negatives repeated (small groups)"));
    }
    if req.eval_ratio > 0.0 && req.output != Output::Preview {
        s.push_str(&format!(
            ", eval {} queries / {} docs / {} qrels",
            r.total(|p| p.eval_queries),
            r.total(|p| p.eval_corpus),
            r.total(|p| p.eval_qrels)
        ));
    }
    match &r.manifest {
        Some(m) => s.push_str(&format!(
            "; {} files + {} in {secs:.2} s",
            r.files.len(),
            m.display()
        )),
        None => s.push_str(&format!(" in {secs:.2} s (preview only)")),
    }
    s
}
