//! The trainer: reads a data file, collates micro-batches ([`collator`]), embeds them with a
//! [`SentenceEncoder`] (weights prepared once per step, one forward per prompt group),
//! applies the [`ContrastiveLoss`] it is given, steps a flat AdamW with warm-up/decay and
//! clipping, evaluates on schedule, keeps `best/`, `final/` and `checkpoint-N/` folders,
//! and resumes exactly.
//!
//! [`train`] runs in named phases: setup (data, encoder, optimizer), resume (a checkpoint's
//! position and moments), step (one optimizer step over its micro-batches),
//! evaluate-and-save (log, evaluate, `best/`, checkpoints, interruption) and finish (last
//! evaluation, `final/`, the summary).
//!
//! Reproducibility: the row order of epoch e is drawn from (seed, e) alone and the torch
//! generator is re-seeded from (seed, step, micro-batch) before every micro-batch's
//! forwards, so a run resumed from a checkpoint on CPU ends with the same weights as an
//! uninterrupted one.

pub mod chart;
pub mod checkpoint;
pub mod collator;
pub mod data;
pub mod optim;
mod step;

pub use step::minibatch_ranges;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::dist::ProcessGroup;
use crate::encoder::{LoadOptions, Precision, SentenceEncoder};
use crate::error::{Error, Result};
use crate::eval::evaluators::{EvalSuite, Metrics};
use crate::lora::LoraConfig;
use crate::loss::ContrastiveLoss;
use crate::model_card::ModelCard;
use collator::{Collator, Shard};
use data::Dataset;
use optim::{clip_divisor, linear_schedule, warmup_steps, AdamWConfig, FlatAdamW};
use step::MicroStep;

/// Everything a training run is configured by (the `embtune train` flags).
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Model folder to start from.
    pub model: PathBuf,
    /// Training data file.
    pub data: PathBuf,
    /// Name of the loss (its registry key for a built-in), used in messages only: the loss
    /// itself is the instance given to [`train`].
    pub loss_name: String,
    /// Output folder.
    pub output: PathBuf,
    /// Passes over the data (ignored when `max_steps` is set).
    pub epochs: usize,
    /// Rows per optimizer micro-batch.
    pub batch_size: usize,
    /// AdamW settings (lr, betas, eps, weight decay).
    pub optimizer: AdamWConfig,
    /// Fraction of steps spent warming up.
    pub warmup_ratio: f64,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Stop after this many optimizer steps.
    pub max_steps: Option<usize>,
    /// Seed for data order and dropout.
    pub seed: u64,
    /// Device to train on.
    pub device: Device,
    /// fp32 or bf16 (CUDA only).
    pub precision: Precision,
    /// Prompt prepended to anchors (first column).
    pub query_prompt: Option<String>,
    /// Prompt prepended to positives and negatives.
    pub document_prompt: Option<String>,
    /// Mask identical in-batch texts out of the negatives.
    pub dedupe: bool,
    /// Evaluate (and checkpoint) every N steps.
    pub eval_every: Option<usize>,
    /// Metric that picks `best/` (e.g. `cosine_ndcg@10`); the suite's main metric when None.
    pub best_metric: Option<String>,
    /// Keep at most this many `checkpoint-N/` folders (oldest removed first).
    pub save_total_limit: Option<usize>,
    /// Log (and sync with the device) every N steps.
    pub log_every: usize,
    /// Truncate texts at this many tokens (the model's max_seq_length when None).
    pub max_seq_length: Option<usize>,
    /// Gradient checkpointing: keep only each transformer layer's input during the
    /// forward and recompute the layer in backward (less memory, about one more forward
    /// per step; the same gradients).
    pub gradient_checkpointing: bool,
    /// Train LoRA adapters only (`--lora`): fresh ones on the model's target modules, or,
    /// when the model (or the resumed checkpoint) is a LoRA adapter folder, its adapters.
    pub lora: Option<LoraConfig>,
    /// Write `final/` and `best/` as plain folders with the adapters merged in
    /// (`--merge-lora`; needs `lora`). Checkpoints stay adapter folders.
    pub merge_lora: bool,
    /// Every dropout probability of the backbone for this run (`--dropout`, in `[0, 1)`);
    /// None keeps the model's. Saved folders keep the model's own `config.json` values.
    pub dropout: Option<f64>,
    /// Data-parallel runs: each rank's loss sees its own `batch_size` rows only (b−1
    /// in-batch negatives per anchor instead of W·b−1; the gradients are averaged over the
    /// ranks, as PyTorch's DDP does). Off: the loss of the whole global batch, negatives
    /// gathered from every rank.
    pub local_negatives: bool,
    /// The loss's options as given (`--loss-opt key=value`), for the model cards of the
    /// saved folders.
    pub loss_options: Vec<(String, String)>,
}

impl TrainConfig {
    /// Checks every number of the config: one line naming the flag, the value, the range
    /// and the fix for the first that is out of range.
    pub fn check(&self) -> Result<()> {
        let whole = |flag: &str, v: usize, e: &str| {
            if v == 0 {
                Err(Error::Invalid(format!(
                    "{flag} 0 is out of range: it must be at least 1; pass e.g. {flag} {e}"
                )))
            } else {
                Ok(())
            }
        };
        whole("--batch-size", self.batch_size, "8")?;
        whole("--grad-accum", self.grad_accum, "1")?;
        whole("--log-every", self.log_every, "10")?;
        whole("--epochs", self.epochs, "1")?;
        if let Some(n) = self.max_steps {
            whole("--max-steps", n, "100")?;
        }
        if let Some(n) = self.eval_every {
            whole("--eval-every", n, "100")?;
        }
        if let Some(n) = self.save_total_limit {
            whole("--save-total-limit", n, "2")?;
        }
        if let Some(n) = self.max_seq_length {
            whole("--max-seq-length", n, "256")?;
        }
        let real = |flag: &str, v: f64, ok: bool, range: &str, e: &str| {
            if v.is_finite() && ok {
                Ok(())
            } else {
                Err(Error::Invalid(format!(
                    "{flag} {v} is out of range: it must be {range}; pass e.g. {flag} {e}"
                )))
            }
        };
        let o = &self.optimizer;
        real("--lr", o.lr, o.lr > 0.0, "a positive number", "5e-5")?;
        real(
            "--weight-decay",
            o.weight_decay,
            o.weight_decay >= 0.0,
            "0 or more",
            "0.01",
        )?;
        real(
            "--warmup-ratio",
            self.warmup_ratio,
            (0.0..=1.0).contains(&self.warmup_ratio),
            "in [0, 1]",
            "0.1",
        )?;
        real(
            "--max-grad-norm",
            self.max_grad_norm,
            self.max_grad_norm > 0.0,
            "a positive number",
            "1.0",
        )?;
        if let Some(p) = self.dropout {
            real("--dropout", p, (0.0..1.0).contains(&p), "in [0, 1)", "0.1")?;
        }
        Ok(())
    }

    /// A config with the reference trainer's defaults for everything but the paths and the
    /// loss's name.
    pub fn new(model: PathBuf, data: PathBuf, loss_name: &str, output: PathBuf) -> Self {
        TrainConfig {
            model,
            data,
            loss_name: loss_name.to_string(),
            output,
            epochs: 1,
            batch_size: 8,
            optimizer: AdamWConfig::default(),
            warmup_ratio: 0.1,
            max_grad_norm: 1.0,
            grad_accum: 1,
            max_steps: None,
            seed: 42,
            device: Device::Cpu,
            precision: Precision::Fp32,
            query_prompt: None,
            document_prompt: None,
            dedupe: true,
            eval_every: None,
            best_metric: None,
            save_total_limit: None,
            log_every: 10,
            max_seq_length: None,
            gradient_checkpointing: false,
            lora: None,
            merge_lora: false,
            dropout: None,
            local_negatives: false,
            loss_options: Vec::new(),
        }
    }
}

/// One logged step, as written to `metrics.jsonl` and shown by the progress bar.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepLog {
    /// Optimizer steps done.
    pub step: usize,
    /// Loss of the last step (mean over its micro-batches); absent for the evaluation
    /// before training.
    pub loss: Option<f64>,
    /// Learning rate used by the last step.
    pub lr: f64,
    /// Pre-clip gradient norm of the last step.
    pub grad_norm: f64,
    /// Training examples per second since the previous log.
    pub examples_per_s: f64,
    /// Evaluation metrics when this step evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval: Option<Metrics>,
}

/// Receives progress; the CLI draws a progress bar from it. Every method has a no-op
/// default.
pub trait TrainObserver {
    /// Called once before the first step with the planned number of steps.
    fn start(&mut self, _total_steps: usize, _start_step: usize) {}
    /// Called after every optimizer step (cheap: no device sync happened for it).
    fn step(&mut self, _step: usize) {}
    /// Called at every log step and after every evaluation.
    fn log(&mut self, _log: &StepLog) {}
    /// Called with one-line messages (checkpoint written, new best).
    fn message(&mut self, _msg: &str) {}
    /// Called when the writer starts a longer piece of work between steps: `"evaluating"`
    /// or `"saving DIR"` (`checkpoint-N/`, `best/`, `final/`), with the step it belongs to.
    /// An interrupt that arrives meanwhile takes effect once the work is done.
    fn phase(&mut self, _step: usize, _what: &str) {}
}

impl TrainObserver for () {}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Steps done.
    pub steps: usize,
    /// Metrics before training (absent on resume).
    pub before: Option<Metrics>,
    /// Metrics at the end.
    pub after: Option<Metrics>,
    /// The final model folder.
    pub final_dir: PathBuf,
    /// The best model folder, if an evaluator ran.
    pub best_dir: Option<PathBuf>,
    /// Wall seconds spent in training steps (evaluations and saving excluded).
    pub train_seconds: f64,
    /// Training rows processed by this invocation.
    pub examples: usize,
    /// On CUDA: the most GiB in live tensors during the training loop (libtorch's caching
    /// allocator; PyTorch's `torch.cuda.max_memory_allocated` after a reset at the start).
    pub peak_gpu_mem_gib: Option<f64>,
    /// On CUDA: the most GiB the allocator held from the driver during the loop, cache
    /// included (`torch.cuda.max_memory_reserved`).
    pub peak_gpu_reserved_gib: Option<f64>,
}

/// The trainer's position, saved in every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: usize,
    /// Micro-batches consumed so far (epoch = this / batches per epoch).
    pub micro_batches: usize,
    /// Best value of the best metric so far.
    pub best: Option<f64>,
    /// The run's seed.
    pub seed: u64,
    /// Trainable parameters of the model (a resume from another model is refused).
    pub parameters: i64,
    /// The model's parameter names, hashed (sha256 of the sorted names).
    pub parameter_names_sha256: String,
    /// Data file and its row count.
    pub data: PathBuf,
    /// Rows in the data file.
    pub rows: usize,
    /// Processes of the data-parallel run that wrote it (1: one process); a resume needs
    /// the same.
    #[serde(default = "one_rank")]
    pub world_size: usize,
}

fn one_rank() -> usize {
    1
}

/// Runs training with `loss` to the end (or until `stop` is set, which finishes the current
/// step, writes a checkpoint and returns [`Error::Interrupted`]). `resume` is a
/// `checkpoint-N/` folder of an earlier run with the same config; `suite` evaluates on
/// schedule and picks `best/`.
pub fn train(
    cfg: &TrainConfig,
    loss: Box<dyn ContrastiveLoss>,
    resume: Option<&Path>,
    suite: Option<&EvalSuite>,
    stop: Arc<AtomicBool>,
    observer: &mut dyn TrainObserver,
) -> Result<TrainSummary> {
    train_with_group(cfg, loss, resume, suite, stop, observer, None)
}

/// [`train`] as one rank of a data-parallel run over `group` (None: one process, the same
/// as [`train`]). Every rank calls it with the same config, data and loss. Each optimizer
/// step's micro-batches hold `world` × `cfg.batch_size` rows drawn from the one seeded
/// order; each rank embeds its part, the loss sees every rank's rows (or its own with
/// `cfg.local_negatives`), and the flat gradient is summed over the ranks before the
/// identical update (see [`crate::dist`] for why that is the one-process gradient). The
/// parameters start from rank 0's. Rank 0 alone evaluates and writes `metrics.jsonl`,
/// checkpoints, `best/` and `final/` while the others wait at a barrier; an interruption
/// on any rank stops all of them after the same step.
pub fn train_with_group(
    cfg: &TrainConfig,
    mut loss: Box<dyn ContrastiveLoss>,
    resume: Option<&Path>,
    suite: Option<&EvalSuite>,
    stop: Arc<AtomicBool>,
    observer: &mut dyn TrainObserver,
    group: Option<&ProcessGroup>,
) -> Result<TrainSummary> {
    loss.to_device(cfg.device)?;
    let world = group.map_or(1, ProcessGroup::world_size);
    let (data, encoder) = load(cfg, loss.as_ref(), resume, world)?;
    loss.check_embedding_dimension(encoder.dimension())?;
    let mut trainer = Trainer::setup(
        cfg,
        loss.as_ref(),
        &encoder,
        &data,
        resume,
        suite,
        observer,
        group,
    )?;
    let before = match resume {
        None => trainer.evaluate_before()?,
        Some(_) => None,
    };
    trainer.start();
    while trainer.state.step < trainer.total_steps {
        trainer.step()?;
        let interrupted = trainer.agree_on_stop(stop.load(Ordering::SeqCst))?;
        trainer.evaluate_and_save(interrupted)?;
    }
    trainer.finish(before)
}

/// Setup, first half: checks the config, reads the data for the loss and loads the encoder
/// (from the checkpoint when resuming).
fn load(
    cfg: &TrainConfig,
    loss: &dyn ContrastiveLoss,
    resume: Option<&Path>,
    world: usize,
) -> Result<(Dataset, SentenceEncoder)> {
    cfg.check()?;
    let data = Dataset::read(&cfg.data)?.prepare_for(&loss.inputs(), &cfg.loss_name)?;
    if cfg.batch_size * world > data.len() {
        let what = if world > 1 {
            format!(
                "--batch-size {} on each of {world} ranks ({} rows a step)",
                cfg.batch_size,
                cfg.batch_size * world
            )
        } else {
            format!("--batch-size {}", cfg.batch_size)
        };
        return Err(Error::Invalid(format!(
            "{what} is larger than the data ({} rows in {}); lower --batch-size",
            data.len(),
            data.path.display()
        )));
    }
    if cfg.merge_lora && cfg.lora.is_none() {
        return Err(Error::Invalid(
            "--merge-lora needs --lora (it merges the trained LoRA adapters into final/ and best/)"
                .into(),
        ));
    }
    let source = resume.unwrap_or(&cfg.model);
    let options = LoadOptions {
        dropout: cfg.dropout,
    };
    let mut encoder = SentenceEncoder::load_with(source, cfg.device, &options)?;
    setup_lora(cfg, &mut encoder, source, resume.is_some())?;
    if cfg.gradient_checkpointing {
        encoder.check_gradient_checkpointing()?;
    }
    encoder.set_precision(cfg.precision)?;
    if let Some(n) = cfg.max_seq_length {
        encoder.set_max_seq_length(n)?;
    }
    Ok((data, encoder))
}

/// LoRA setup: with `--lora`, the adapters the loaded folder carries (a checkpoint or an
/// adapter folder: they must match `--lora`'s r, alpha and targets) or fresh ones drawn
/// from the run's seed; without it, a loaded adapter folder is merged (full fine-tuning of
/// the merged model) and a LoRA checkpoint cannot be resumed.
fn setup_lora(
    cfg: &TrainConfig,
    encoder: &mut SentenceEncoder,
    source: &Path,
    resuming: bool,
) -> Result<()> {
    match (&cfg.lora, encoder.lora().is_some()) {
        (Some(l), true) => {
            let adapters = encoder.lora_mut().expect("adapters present");
            adapters.check_matches(l, source)?;
            adapters.set_dropout(l.dropout);
        }
        (Some(l), false) => {
            if resuming {
                return Err(Error::Invalid(format!(
                    "--resume {}: the checkpoint holds no LoRA adapters (a full fine-tuning run); resume without --lora",
                    source.display()
                )));
            }
            tch::manual_seed(cfg.seed as i64);
            encoder.add_lora(l)?;
        }
        (None, true) if resuming => {
            return Err(Error::Invalid(format!(
                "--resume {}: the checkpoint holds LoRA adapters; resume with the --lora of the run that wrote it",
                source.display()
            )));
        }
        (None, true) => encoder.merge_lora(),
        (None, false) => {}
    }
    Ok(())
}

/// Resume: the position and optimizer moments of checkpoint `dir`, after checking that it
/// was trained from the same model and data as `fresh` describes.
fn resume_from(dir: &Path, fresh: &TrainerState, opt: &mut FlatAdamW) -> Result<TrainerState> {
    let saved = checkpoint::read_state(dir)?;
    if saved.world_size != fresh.world_size {
        let how = |w: usize| match w {
            1 => "one process (no --nproc-per-node, no torchrun)".to_string(),
            w => format!("{w} ranks (--nproc-per-node {w}, or WORLD_SIZE={w})"),
        };
        return Err(Error::Invalid(format!(
            "{}: checkpoint was written by a run of {} but this run has {}; resume with {}",
            dir.display(),
            how(saved.world_size),
            how(fresh.world_size),
            how(saved.world_size)
        )));
    }
    if saved.parameters != fresh.parameters
        || saved.parameter_names_sha256 != fresh.parameter_names_sha256
    {
        return Err(Error::Invalid(format!(
            "{}: checkpoint is from another model ({} parameters, this model has {}); resume with the --model it was trained from",
            dir.display(),
            saved.parameters,
            fresh.parameters
        )));
    }
    if saved.rows != fresh.rows {
        return Err(Error::Invalid(format!(
            "{}: checkpoint was trained on {} rows but {} has {}; resume with the same --data",
            dir.display(),
            saved.rows,
            fresh.data.display(),
            fresh.rows
        )));
    }
    opt.load(&dir.join(checkpoint::OPTIMIZER_FILE))?;
    Ok(saved)
}

/// What the last optimizer step left on the device (read only when logging).
struct LastStep {
    loss: Tensor,
    grad_norm: Tensor,
    lr: f64,
}

/// A run in progress: everything the phases after setup share.
struct Trainer<'a> {
    cfg: &'a TrainConfig,
    encoder: &'a SentenceEncoder,
    loss: &'a dyn ContrastiveLoss,
    suite: Option<&'a EvalSuite>,
    observer: &'a mut dyn TrainObserver,
    collator: Collator<'a>,
    opt: FlatAdamW,
    /// The process group of a data-parallel run.
    group: Option<&'a ProcessGroup>,
    /// This process writes the outputs and evaluates (rank 0, or the only process).
    writer: bool,
    state: TrainerState,
    total_steps: usize,
    warmup: i64,
    /// Rank 0's metrics log (None on the other ranks).
    metrics: Option<checkpoint::MetricsLog>,
    /// The model card of the run, written into every saved folder.
    card: ModelCard,
    last: Option<LastStep>,
    /// All steps so far had a finite loss and gradient (checked at log steps, or every
    /// step on CPU where the check costs no device sync).
    all_ok: Tensor,
    examples_since_log: usize,
    examples_total: usize,
    log_clock: Instant,
    loop_start: Instant,
    /// Seconds spent evaluating and saving inside the loop (left out of train time).
    excluded: f64,
}

impl<'a> Trainer<'a> {
    /// Setup, second half: collator, optimizer, schedule, the position (resumed or fresh)
    /// and the metrics log.
    #[allow(clippy::too_many_arguments)]
    fn setup(
        cfg: &'a TrainConfig,
        loss: &'a dyn ContrastiveLoss,
        encoder: &'a SentenceEncoder,
        data: &'a Dataset,
        resume: Option<&Path>,
        suite: Option<&'a EvalSuite>,
        observer: &'a mut dyn TrainObserver,
        group: Option<&'a ProcessGroup>,
    ) -> Result<Self> {
        let shard = group.map_or(Shard::SINGLE, |g| Shard {
            rank: g.rank(),
            world: g.world_size(),
            local: cfg.local_negatives,
        });
        let collator =
            Collator::new(data, &loss.inputs(), encoder.tokenizer(), cfg)?.with_shard(shard);
        let vars = encoder.trainable_parameters();
        let mut opt = FlatAdamW::new(vars, cfg.optimizer, cfg.device)?;
        if let Some(g) = group {
            // Every rank starts from rank 0's parameters (fresh LoRA matrices included).
            g.broadcast(opt.params_buffer(), 0)?;
        }
        let steps_per_epoch = collator.batches_per_epoch().div_ceil(cfg.grad_accum);
        let total_steps = cfg.max_steps.unwrap_or(steps_per_epoch * cfg.epochs.max(1));
        let mut state = TrainerState {
            step: 0,
            micro_batches: 0,
            best: None,
            seed: cfg.seed,
            parameters: opt.numel(),
            parameter_names_sha256: crate::default_model::sha256_hex(
                opt.names().join("\n").as_bytes(),
            ),
            data: cfg.data.clone(),
            rows: data.len(),
            world_size: shard.world,
        };
        if let Some(dir) = resume {
            state = resume_from(dir, &state, &mut opt)?;
        }
        let writer = shard.rank == 0;
        let metrics = if writer {
            std::fs::create_dir_all(&cfg.output).map_err(|e| Error::io(&cfg.output, e))?;
            checkpoint::remove_stale_temporaries(&cfg.output);
            let path = cfg.output.join("metrics.jsonl");
            Some(match resume {
                Some(_) => checkpoint::MetricsLog::open_resumed(&path, state.step)?,
                None => checkpoint::MetricsLog::open(&path, false)?,
            })
        } else {
            None
        };
        if let (Some(s), Some(k)) = (suite, &cfg.best_metric) {
            s.check_metric(k)?;
        }
        Ok(Trainer {
            cfg,
            encoder,
            loss,
            suite,
            observer,
            collator,
            opt,
            group,
            writer,
            card: ModelCard::from_train(cfg, encoder, data.len(), &cfg.loss_options),
            state,
            total_steps,
            warmup: warmup_steps(cfg.warmup_ratio, total_steps as i64),
            metrics,
            last: None,
            all_ok: Tensor::from(true).to_device(cfg.device),
            examples_since_log: 0,
            examples_total: 0,
            log_clock: Instant::now(),
            loop_start: Instant::now(),
            excluded: 0.0,
        })
    }

    /// The evaluation before training (logged as step 0; it does not pick `best/`).
    fn evaluate_before(&mut self) -> Result<Option<Metrics>> {
        let m = self.evaluate()?;
        if m.is_some() {
            self.log(m.clone(), 0.0)?;
        }
        self.card.metrics_before = m.clone();
        self.barrier()?;
        Ok(m)
    }

    /// Data-parallel runs: waits until every rank is here (the others wait while rank 0
    /// evaluates and writes), bounded by the group's timeout.
    fn barrier(&self) -> Result<()> {
        match self.group {
            Some(g) => g.barrier(),
            None => Ok(()),
        }
    }

    /// Whether the run stops after this step: `local` (this process was interrupted), or,
    /// in a data-parallel run, any rank was (one all-reduce of a flag).
    fn agree_on_stop(&self, local: bool) -> Result<bool> {
        let Some(g) = self.group else {
            return Ok(local);
        };
        let flag = Tensor::from_slice(&[i32::from(local)]).to_device(g.device());
        g.all_reduce_sum(&flag)?;
        Ok(i32::try_from(&flag)? > 0)
    }

    /// Starts the clocks and the GPU memory peaks (as the reference's bench does: after
    /// loading and the first evaluation).
    fn start(&mut self) {
        if let Device::Cuda(i) = self.cfg.device {
            let _ = crate::device_mem::reset_cuda_peak(i);
        }
        self.observer.message(&start_line(self.encoder));
        self.observer.start(self.total_steps, self.state.step);
        self.log_clock = Instant::now();
        self.loop_start = Instant::now();
    }

    /// Step: one optimizer step over up to `grad_accum` micro-batches (never spanning two
    /// epochs), all sharing one preparation of the weights.
    fn step(&mut self) -> Result<()> {
        let cfg = self.cfg;
        self.opt.zero_grad();
        let lr = linear_schedule(
            self.state.step as i64,
            self.warmup,
            self.total_steps as i64,
            cfg.optimizer.lr,
        );
        let mut step_loss = Tensor::zeros([], (Kind::Float, cfg.device));
        let rank = self.group.map_or(0, ProcessGroup::rank);
        {
            let weights = self.encoder.prepare();
            let micro_step = MicroStep {
                encoder: self.encoder,
                weights: &weights,
                loss: self.loss,
                accum: cfg.grad_accum as f64,
                checkpointing: cfg.gradient_checkpointing,
                dist: self.group.filter(|_| !cfg.local_negatives),
            };
            let per_epoch = self.collator.batches_per_epoch();
            for micro in 0..cfg.grad_accum {
                let batch = self.collator.batch(self.state.micro_batches)?;
                let seed = rank_seed(step_seed(cfg.seed, self.state.step, micro), rank);
                let l = micro_step.run(&batch, seed)?;
                step_loss += l.to_kind(Kind::Float) / cfg.grad_accum as f64;
                self.examples_since_log += batch.global_rows;
                self.examples_total += batch.global_rows;
                self.state.micro_batches += 1;
                if self.state.micro_batches.is_multiple_of(per_epoch) {
                    break;
                }
            }
        }
        let mut grad = self.opt.flat_grad();
        if let Some(g) = self.group {
            // The sum of the ranks' shares is the gradient of the global loss; with local
            // negatives each rank's loss is its own, and the step takes their mean.
            g.all_reduce_sum(&grad)?;
            if cfg.local_negatives {
                let w = g.world_size() as f64;
                grad /= w;
                let l = step_loss.reshape([1]);
                g.all_reduce_sum(&l)?;
                step_loss = l.reshape([]) / w;
            }
        }
        // The clipping divisor is applied inside the fused update; a non-finite gradient
        // entry makes the norm non-finite, so the norm alone tells whether the step is sound.
        let (grad_norm, divisor) = clip_divisor(&grad, cfg.max_grad_norm);
        let ok = step_loss.isfinite().logical_and(&grad_norm.isfinite());
        self.opt.step_scaled(&grad, lr, Some(&divisor), Some(&ok))?;
        self.all_ok = self.all_ok.logical_and(&ok);
        self.last = Some(LastStep {
            loss: step_loss,
            grad_norm,
            lr,
        });
        self.state.step += 1;
        self.observer.step(self.state.step);
        Ok(())
    }

    /// Evaluate-and-save, after every step: the non-finite check, the log, the scheduled
    /// evaluation with `best/` and `checkpoint-N/`, and the checkpoint of an interruption.
    fn evaluate_and_save(&mut self, interrupted: bool) -> Result<()> {
        let (cfg, step) = (self.cfg, self.state.step);
        let do_log = step.is_multiple_of(cfg.log_every) || step == self.total_steps || interrupted;
        if cfg.device == Device::Cpu || do_log {
            self.check_finite()?;
        }
        let do_eval =
            cfg.eval_every.is_some_and(|n| step.is_multiple_of(n)) && step < self.total_steps;
        if !(do_log || do_eval) {
            return Ok(());
        }
        let side_clock = Instant::now();
        let eval = if do_eval { self.evaluate()? } else { None };
        let elapsed = self.log_clock.elapsed().as_secs_f64().max(1e-9);
        self.log(eval.clone(), self.examples_since_log as f64 / elapsed)?;
        self.examples_since_log = 0;
        self.log_clock = Instant::now();
        if let Some(m) = &eval {
            self.save_best(m)?;
        }
        if do_eval || interrupted {
            let dir = cfg.output.join(format!("checkpoint-{}", self.state.step));
            if self.writer {
                let card = self.card.at_step(step, eval.as_ref());
                self.observer
                    .phase(step, &format!("saving checkpoint-{step}/"));
                checkpoint::save_checkpoint_with_card(
                    self.encoder,
                    &self.opt,
                    &self.state,
                    &cfg.output,
                    Some(&card),
                )?;
                if do_eval {
                    checkpoint::prune(&cfg.output, cfg.save_total_limit)?;
                    self.observer
                        .message(&format!("checkpoint written: {}", dir.display()));
                }
            }
            self.barrier()?;
            if interrupted {
                return Err(Error::Interrupted {
                    step,
                    checkpoint: dir,
                });
            }
        }
        self.excluded += side_clock.elapsed().as_secs_f64();
        Ok(())
    }

    /// Finish: train time and GPU peaks, the last evaluation (which may pick `best/`),
    /// `final/` and the summary.
    fn finish(mut self, before: Option<Metrics>) -> Result<TrainSummary> {
        if let Some(last) = &self.last {
            let _ = f64::try_from(&last.loss); // wait for the device before reading the clock
        }
        let train_seconds = (self.loop_start.elapsed().as_secs_f64() - self.excluded).max(0.0);
        let gpu = match self.cfg.device {
            Device::Cuda(i) => crate::device_mem::cuda_memory(i).ok(),
            _ => None,
        };
        let after = self.evaluate()?;
        if let Some(m) = &after {
            self.log(Some(m.clone()), 0.0)?;
            self.save_best(m)?;
        }
        let final_dir = self.cfg.output.join("final");
        if self.writer {
            self.observer.phase(self.state.step, "saving final/");
            checkpoint::save_model_with_card(
                self.encoder,
                &final_dir,
                &self.opt,
                self.cfg.merge_lora,
                Some(&self.card.finished(after.as_ref())),
            )?;
        }
        self.barrier()?;
        let best_dir = self.cfg.output.join("best");
        Ok(TrainSummary {
            steps: self.state.step,
            before,
            after,
            final_dir,
            best_dir: best_dir.is_dir().then_some(best_dir),
            train_seconds,
            examples: self.examples_total,
            peak_gpu_mem_gib: gpu.map(|m| m.peak_allocated_gib()),
            peak_gpu_reserved_gib: gpu.map(|m| m.peak_reserved_gib()),
        })
    }

    /// The suite's metrics now (rank 0 only: None on the other ranks).
    fn evaluate(&mut self) -> Result<Option<Metrics>> {
        let Some(suite) = self.suite.filter(|_| self.writer) else {
            return Ok(None);
        };
        self.observer.phase(self.state.step, "evaluating");
        suite.run(self.encoder).map(Some)
    }

    /// Writes and shows the log of the current step (the last step's loss, rate and norm;
    /// none before the first step).
    fn log(&mut self, eval: Option<Metrics>, examples_per_s: f64) -> Result<()> {
        let last = self.last.as_ref();
        let log = StepLog {
            step: self.state.step,
            loss: last.and_then(|l| f64::try_from(&l.loss).ok()),
            lr: last.map_or(0.0, |l| l.lr),
            grad_norm: last.map_or(0.0, |l| f64::try_from(&l.grad_norm).unwrap_or(f64::NAN)),
            examples_per_s,
            eval,
        };
        if let Some(metrics) = &mut self.metrics {
            metrics.write(&log)?;
        }
        self.observer.log(&log);
        Ok(())
    }

    /// Saves `best/` when `m`'s best metric beats the best so far.
    fn save_best(&mut self, m: &Metrics) -> Result<()> {
        let Some(suite) = self.suite else {
            return Ok(());
        };
        let key = self
            .cfg
            .best_metric
            .as_deref()
            .unwrap_or(suite.main_metric());
        let Some(&v) = m.get(key) else {
            return Ok(());
        };
        if self.state.best.is_none_or(|b| v > b) {
            self.state.best = Some(v);
            self.observer.phase(self.state.step, "saving best/");
            checkpoint::save_model_with_card(
                self.encoder,
                &self.cfg.output.join("best"),
                &self.opt,
                self.cfg.merge_lora,
                Some(&self.card.at_step(self.state.step, Some(m))),
            )?;
            self.observer.message(&format!(
                "step {}: new best {v:.4}, saved best/",
                self.state.step
            ));
        }
        Ok(())
    }

    /// The error of a run whose loss or gradient turned non-finite (that step's update
    /// was skipped by the optimizer).
    fn check_finite(&self) -> Result<()> {
        if bool::try_from(&self.all_ok).unwrap_or(false) {
            Ok(())
        } else {
            Err(non_finite(self.state.step, &self.cfg.output))
        }
    }
}

/// The run's first line: what trains, e.g. `training 4,096 of 1,234,567 parameters (0.33%):
/// LoRA r=16 alpha=32 dropout=0 on query, value (24 modules)`.
fn start_line(encoder: &SentenceEncoder) -> String {
    let (trainable, total) = encoder.parameter_counts();
    let pct = 100.0 * trainable as f64 / (total.max(1) as f64);
    let head = format!(
        "training {} of {} parameters ({pct:.2}%)",
        thousands(trainable),
        thousands(total)
    );
    match encoder.lora() {
        Some(l) => format!(
            "{head}: LoRA {} on {} ({} modules)",
            l.config().describe(),
            l.config().targets.clone().unwrap_or_default().join(", "),
            l.adapters().len()
        ),
        None => format!("{head}: full fine-tuning"),
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: i64) -> String {
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn non_finite(step: usize, output: &Path) -> Error {
    Error::NonFinite {
        step,
        hint: format!(
            "the weights were not updated by that step; lower --lr or check the data, and resume from the latest checkpoint in {} if any",
            output.display()
        ),
    }
}

/// The forward and backward of micro-batch `micro_batch` of a run of `cfg` with `loss`, as
/// an optimizer step of [`train`] runs it (prompt groups, GradCache, the loss divided by
/// `cfg.grad_accum`, gradient checkpointing when `cfg.gradient_checkpointing`, the dropout
/// seed of step 0): the encoder's gradients are zeroed first and hold the micro-batch's
/// gradients after; returns the loss. For tests that compare gradients between settings.
#[doc(hidden)]
pub fn micro_batch_gradients(
    cfg: &TrainConfig,
    loss: &dyn ContrastiveLoss,
    encoder: &SentenceEncoder,
    micro_batch: usize,
) -> Result<f64> {
    if cfg.gradient_checkpointing {
        encoder.check_gradient_checkpointing()?;
    }
    let data = Dataset::read(&cfg.data)?.prepare_for(&loss.inputs(), &cfg.loss_name)?;
    let mut collator = Collator::new(&data, &loss.inputs(), encoder.tokenizer(), cfg)?;
    for (_, t) in encoder
        .named_parameters()
        .into_iter()
        .chain(encoder.trainable_parameters())
    {
        let mut g = t.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
    let weights = encoder.prepare();
    let micro_step = MicroStep {
        encoder,
        weights: &weights,
        loss,
        accum: cfg.grad_accum as f64,
        checkpointing: cfg.gradient_checkpointing,
        dist: None,
    };
    let batch = collator.batch(micro_batch)?;
    let l = micro_step.run(&batch, step_seed(cfg.seed, 0, micro_batch))?;
    Ok(f64::try_from(&l)?)
}

/// The generator seed of rank `rank` for a step seed: rank 0 keeps it (a run of one
/// process is unchanged), the others mix their rank in, so that row k of each rank's part
/// draws its own dropout mask.
fn rank_seed(seed: i64, rank: usize) -> i64 {
    seed ^ ((rank as i64) << 48)
}

/// Seed of the torch generator for (step, micro-batch): dropout replays exactly on resume.
pub fn step_seed(seed: u64, step: usize, micro: usize) -> i64 {
    (seed
        .wrapping_mul(1_000_003)
        .wrapping_add(step as u64 * 64 + micro as u64)
        & 0x7fff_ffff_ffff) as i64
}
