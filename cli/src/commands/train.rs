//! `embtune train`: fine-tune a sentence encoder on a data file with a named loss.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use embtune_core::dist::ProcessGroup;
use embtune_core::lora::LoraConfig;
use embtune_core::registry::{self, parse_options};
use embtune_core::train::{self, StepLog, TrainConfig, TrainObserver};
use embtune_core::ContrastiveLoss;
use indicatif::{ProgressBar, ProgressStyle};
use tch::Device;

use super::eval::{build_suite, EvalSources};
use super::ranks::{self, DistArgs};
use super::{resolve_precision, PromptArgs};

/// Arguments of `embtune train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Model folder to start from (sentence-transformers or plain Hugging Face) or Hugging
    /// Face id (owner/name[@revision], from the cache or downloaded); the embedded default
    /// model when left out.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Training data (CSV or JSONL, e.g. an *_supervised.csv from `embtune gen`).
    #[arg(long)]
    pub data: PathBuf,
    /// Loss name (`embtune list losses`).
    #[arg(long, default_value = "mnrl")]
    pub loss: String,
    /// Loss option `key=value` (repeatable), checked against the loss's config.
    #[arg(long = "loss-opt", value_name = "KEY=VALUE")]
    pub loss_opt: Vec<String>,
    /// Output folder: final/, best/, checkpoint-N/, metrics.jsonl, training.png.
    #[arg(long)]
    pub output: PathBuf,
    /// Passes over the data.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub epochs: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = 8, allow_negative_numbers = true)]
    pub batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 5e-5, allow_negative_numbers = true)]
    pub lr: f64,
    /// AdamW weight decay (never on biases and norm weights).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub weight_decay: f64,
    /// Fraction of the steps spent warming up linearly.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub warmup_ratio: f64,
    /// Gradient-norm clip.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub max_grad_norm: f64,
    /// Seed for data order and dropout.
    #[arg(long, default_value_t = 42, allow_negative_numbers = true)]
    pub seed: u64,
    /// Stop after this many optimizer steps (overrides --epochs).
    #[arg(long, allow_negative_numbers = true)]
    pub max_steps: Option<usize>,
    /// Micro-batches per optimizer step (does not add in-batch negatives).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub grad_accum: usize,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// fp32, or bf16 (CUDA; fp32 master weights).
    #[arg(long, default_value = "auto")]
    pub precision: String,
    /// Evaluate and checkpoint every N steps.
    #[arg(long, allow_negative_numbers = true)]
    pub eval_every: Option<usize>,
    /// Metric that picks best/ (default: cosine_ndcg@10 with --eval-dir).
    #[arg(long)]
    pub best_metric: Option<String>,
    /// Keep at most N checkpoint-N/ folders.
    #[arg(long, allow_negative_numbers = true)]
    pub save_total_limit: Option<usize>,
    /// Log to metrics.jsonl every N steps.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    pub log_every: usize,
    /// Truncate texts at N tokens (default: the model's max_seq_length).
    #[arg(long, allow_negative_numbers = true)]
    pub max_seq_length: Option<usize>,
    /// Keep identical in-batch texts as negatives (by default they are masked out).
    #[arg(long)]
    pub no_dedupe: bool,
    /// Recompute each transformer layer in backward instead of keeping its activations:
    /// far less memory for big models, about one more forward per step, same gradients.
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Train LoRA adapters only (PEFT-compatible): `r=16,alpha=32,dropout=0,targets=query,value`,
    /// every key optional (`--lora` alone: r 16, alpha 32, dropout 0, the architecture's
    /// attention query/value projections; ModernBERT: Wqkv). final/, best/ and checkpoints
    /// are adapter folders (adapter_config.json + adapter_model.safetensors).
    #[arg(
        long,
        value_name = "r=R,alpha=A,dropout=P,targets=M,..",
        num_args = 0..=1,
        default_missing_value = ""
    )]
    pub lora: Option<String>,
    /// With --lora: write final/ and best/ as plain folders with the adapters merged into
    /// the weights (checkpoints stay adapter folders).
    #[arg(long)]
    pub merge_lora: bool,
    /// Continue from a checkpoint-N/ folder of an earlier run with the same flags.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Replace an earlier run's outputs in --output (final/, best/, checkpoint-N/,
    /// metrics.jsonl, training.png); without it (and without --resume) such a folder is
    /// refused.
    #[arg(long)]
    pub overwrite: bool,
    /// Dropout probability, in [0, 1), for every dropout of the backbone (hidden,
    /// attention, embedding, MLP) during this run, instead of the model's config.json
    /// values; the saved folders keep the model's. LoRA's own dropout is --lora dropout=P.
    #[arg(long, value_name = "P", value_parser = parse_dropout, allow_negative_numbers = true)]
    pub dropout: Option<f64>,
    #[command(flatten)]
    pub dist: DistArgs,
    /// Data-parallel runs: each rank's loss sees only its own --batch-size rows (b−1
    /// in-batch negatives instead of ranks×b−1; gradients averaged over the ranks, as
    /// PyTorch DDP and sentence-transformers' default do). By default the embeddings are
    /// gathered from every rank and the loss is that of the whole global batch.
    #[arg(long)]
    pub local_negatives: bool,
    #[command(flatten)]
    pub prompts: PromptArgs,
    #[command(flatten)]
    pub eval: EvalSources,
}

/// `--dropout P`: a probability in [0, 1).
fn parse_dropout(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..1.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "'{s}' is not a probability in [0, 1); pass e.g. --dropout 0 (no dropout) or 0.1"
        )),
    }
}

/// Runs training and prints a summary; `argv` is the whole command line. With
/// `--nproc-per-node N` > 1 (and no `WORLD_SIZE` in the environment) it starts N ranks
/// instead ([`super::launch`]) and returns the exit code they end with; as one rank of
/// several (`WORLD_SIZE` > 1) it joins the others first.
pub fn run(args: TrainArgs, argv: &[OsString]) -> anyhow::Result<ExitCode> {
    // The loss, its options and --lora are checked before any rank starts.
    let loss_options = parse_options(args.loss_opt.iter().map(String::as_str))?;
    registry::build::<dyn ContrastiveLoss>(&args.loss, &loss_options)?;
    let lora = args.lora.as_deref().map(LoraConfig::parse).transpose()?;
    if args.merge_lora && lora.is_none() {
        anyhow::bail!(
            "--merge-lora needs --lora (it merges the trained LoRA adapters into final/ and best/)"
        );
    }
    // A Hugging Face id is downloaded here, once, before the ranks start.
    let model = super::resolve_model(&args.model)?;
    if args.resume.is_none() {
        // The launcher, or rank 0 (or the only process), removes with --overwrite; the
        // other ranks check.
        let rank0 = std::env::var("RANK").map_or(true, |r| r.trim() == "0");
        super::checks::fresh_training_output(&args.output, args.overwrite, rank0)?;
    }
    ranks::run(
        &args.dist,
        &args.device,
        argv,
        &args.data,
        |device, group| train_rank(&args, model, device, group),
    )
}

/// Trains as one process or as one rank of `group` (rank 0 shows progress and writes the
/// outputs and the report).
fn train_rank(
    args: &TrainArgs,
    model: PathBuf,
    device: Device,
    group: Option<&ProcessGroup>,
) -> anyhow::Result<ExitCode> {
    let writer = group.is_none_or(|g| g.rank() == 0);
    let lora = args.lora.as_deref().map(LoraConfig::parse).transpose()?;
    let loss_options = parse_options(args.loss_opt.iter().map(String::as_str))?;
    let loss = registry::build::<dyn ContrastiveLoss>(&args.loss, &loss_options)?;
    let precision = resolve_precision(&args.precision, device)?;
    let (query_prompt, document_prompt) = args.prompts.resolve(&model)?;
    let mut cfg = TrainConfig::new(
        model.clone(),
        args.data.clone(),
        &args.loss,
        args.output.clone(),
    );
    cfg.epochs = args.epochs;
    cfg.batch_size = args.batch_size;
    cfg.optimizer.lr = args.lr;
    cfg.optimizer.weight_decay = args.weight_decay;
    cfg.warmup_ratio = args.warmup_ratio;
    cfg.max_grad_norm = args.max_grad_norm;
    cfg.seed = args.seed;
    cfg.max_steps = args.max_steps;
    cfg.grad_accum = args.grad_accum;
    cfg.device = device;
    cfg.precision = precision;
    cfg.query_prompt = Some(query_prompt.clone());
    cfg.document_prompt = Some(document_prompt.clone());
    cfg.dedupe = !args.no_dedupe;
    cfg.eval_every = args.eval_every;
    cfg.best_metric = args.best_metric.clone();
    cfg.save_total_limit = args.save_total_limit;
    cfg.log_every = args.log_every;
    cfg.max_seq_length = args.max_seq_length;
    cfg.gradient_checkpointing = args.gradient_checkpointing;
    cfg.lora = lora;
    cfg.merge_lora = args.merge_lora;
    cfg.dropout = args.dropout;
    cfg.local_negatives = args.local_negatives;
    cfg.loss_options = args
        .loss_opt
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let suite = build_suite(
        &args.eval,
        &query_prompt,
        &document_prompt,
        args.batch_size.max(32),
    )?;

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second signal while the step finishes exits at once.
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("embtune: second interrupt, exiting without a checkpoint");
                // _exit, not exit: exit's handlers (libtorch's static destructors) take
                // long enough for the training thread to go on and finish a save; _exit
                // stops every thread now, like a kill, which leaves a save in progress under
                // its temporary name only.
                // SAFETY: _exit(2) never returns and touches no Rust state.
                unsafe { libc::_exit(130) };
            }
            eprintln!(
                "embtune: interrupt received; finishing this step and writing a checkpoint..."
            );
        });
    }
    let mut bar = Progress::new();
    let mut silent = ();
    let observer: &mut dyn TrainObserver = if writer { &mut bar } else { &mut silent };
    let result = train::train_with_group(
        &cfg,
        loss,
        args.resume.as_deref(),
        suite.as_ref(),
        stop,
        observer,
        group,
    );
    bar.finish();
    let metrics_path = cfg.output.join("metrics.jsonl");
    if writer {
        if let Ok(logs) = train::checkpoint::MetricsLog::read(&metrics_path) {
            let _ = train::chart::write_chart(&logs, &cfg.output.join("training.png"));
        }
    }
    let summary = match result {
        Ok(s) => s,
        Err(embtune_core::Error::Interrupted { step, checkpoint }) => {
            let cmd: Vec<String> = std::env::args().collect();
            anyhow::bail!(
                "interrupted after step {step}; checkpoint written to {}; resume with: {} --resume {}",
                checkpoint.display(),
                strip_resume(&cmd).join(" "),
                checkpoint.display()
            );
        }
        Err(e) => return Err(e).context("training failed"),
    };
    if !writer {
        return Ok(ExitCode::SUCCESS);
    }
    let report = serde_json::json!({
        "steps": summary.steps,
        "before": summary.before,
        "after": summary.after,
        "final": summary.final_dir,
        "best": summary.best_dir,
        "metrics": metrics_path,
        "train_seconds": summary.train_seconds,
        "examples": summary.examples,
        "examples_per_s": summary.examples as f64 / summary.train_seconds.max(1e-9),
        "peak_gpu_mem_gib": summary.peak_gpu_mem_gib,
        "peak_gpu_reserved_gib": summary.peak_gpu_reserved_gib,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// The command line without an earlier `--resume DIR`.
fn strip_resume(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
            continue;
        }
        if a == "--resume" {
            skip = true;
            continue;
        }
        if a.starts_with("--resume=") {
            continue;
        }
        out.push(a.clone());
    }
    out
}

/// A progress bar on a terminal (loss, examples/s); silent otherwise except for messages.
struct Progress {
    bar: Option<ProgressBar>,
    /// The bar's message of the last log, shown again after a phase's message.
    last: String,
    in_phase: bool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            bar: None,
            last: String::new(),
            in_phase: false,
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl TrainObserver for Progress {
    fn start(&mut self, total: usize, start: usize) {
        if std::io::stderr().is_terminal() {
            let b = ProgressBar::new(total as u64);
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
                )
                .expect("valid template"),
            );
            b.set_position(start as u64);
            self.bar = Some(b);
        }
    }
    fn step(&mut self, step: usize) {
        if let Some(b) = &self.bar {
            b.set_position(step as u64);
            if std::mem::take(&mut self.in_phase) {
                b.set_message(self.last.clone());
            }
        }
    }
    fn log(&mut self, log: &StepLog) {
        let mut parts = Vec::new();
        if let Some(l) = log.loss {
            parts.push(format!(
                "loss {l:.4} | lr {:.2e} | {:.1} ex/s",
                log.lr, log.examples_per_s
            ));
        }
        if let Some(e) = &log.eval {
            let key = ["cosine_ndcg@10", "cosine_accuracy", "combined_margin"]
                .into_iter()
                .find(|k| e.contains_key(*k));
            if let Some(k) = key {
                parts.push(format!("{k} {:.4}", e[k]));
            }
        }
        let msg = parts.join(" | ");
        match &self.bar {
            Some(b) => {
                self.last = msg.clone();
                self.in_phase = false;
                b.set_message(msg)
            }
            None => eprintln!("step {}: {msg}", log.step),
        }
    }
    fn message(&mut self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }
    fn phase(&mut self, step: usize, what: &str) {
        match &self.bar {
            Some(b) => {
                self.in_phase = true;
                b.set_message(format!("{what}..."))
            }
            None => eprintln!("step {step}: {what}..."),
        }
    }
}
