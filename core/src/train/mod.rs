//! The trainer: reads a data file, encodes each column with a [`SentenceEncoder`], applies
//! a [`ContrastiveLoss`], steps a flat AdamW with warm-up/decay and clipping, evaluates on
//! schedule, keeps `best/`, `final/` and `checkpoint-N/` folders, and resumes exactly.
//!
//! Reproducibility: the row order of epoch e is drawn from (seed, e) alone and the torch
//! generator is re-seeded from (seed, step, micro-batch) before every forward, so a run
//! resumed from a checkpoint on CPU ends with the same weights as an uninterrupted one.

pub mod chart;
pub mod checkpoint;
pub mod data;
pub mod optim;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tch::{Device, Kind, Tensor};

use crate::encoder::{Precision, SentenceEncoder};
use crate::error::{Error, Result};
use crate::eval::evaluators::{EvalSuite, Metrics};
use crate::loss::{ContrastiveLoss, LossBatch, LossInputs};
use crate::registry;
use data::{batches_per_epoch, epoch_order, Dataset};
use optim::{clip_grad_norm, linear_schedule, warmup_steps, AdamWConfig, FlatAdamW};

/// Everything a training run is configured by (the `embtune train` flags).
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Model folder to start from.
    pub model: PathBuf,
    /// Training data file.
    pub data: PathBuf,
    /// Loss registry name.
    pub loss: String,
    /// Loss options (`--loss-opt`).
    pub loss_options: Map<String, Value>,
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
}

impl TrainConfig {
    /// A config with the reference trainer's defaults for everything but the paths.
    pub fn new(model: PathBuf, data: PathBuf, loss: &str, output: PathBuf) -> Self {
        TrainConfig {
            model,
            data,
            loss: loss.to_string(),
            loss_options: Map::new(),
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
}

/// Runs training to the end (or until `stop` is set, which finishes the current step,
/// writes a checkpoint and returns [`Error::Interrupted`]).
pub fn train(
    cfg: &TrainConfig,
    resume: Option<&Path>,
    suite: Option<&EvalSuite>,
    stop: Arc<AtomicBool>,
    observer: &mut dyn TrainObserver,
) -> Result<TrainSummary> {
    if cfg.batch_size == 0 || cfg.grad_accum == 0 || cfg.log_every == 0 {
        return Err(Error::Invalid(
            "--batch-size, --grad-accum and --log-every must be at least 1".into(),
        ));
    }
    let loss = registry::build::<dyn ContrastiveLoss>(&cfg.loss, &cfg.loss_options)?;
    let inputs = loss.inputs();
    let data = Dataset::read(&cfg.data)?.prepare_for(&inputs, &cfg.loss)?;
    if cfg.batch_size > data.len() {
        return Err(Error::Invalid(format!(
            "--batch-size {} is larger than the data ({} rows in {}); lower --batch-size",
            cfg.batch_size,
            data.len(),
            data.path.display()
        )));
    }
    let model_dir = resume.unwrap_or(&cfg.model);
    let mut encoder = SentenceEncoder::load(model_dir, cfg.device)?;
    encoder.set_precision(cfg.precision)?;
    if let Some(n) = cfg.max_seq_length {
        encoder.set_max_seq_length(n)?;
    }
    let query_prompt = cfg.query_prompt.clone().unwrap_or_default();
    let doc_prompt = cfg.document_prompt.clone().unwrap_or_default();

    let vars: Vec<(String, Tensor)> = encoder.var_store().variables().into_iter().collect();
    let mut opt = FlatAdamW::new(vars, cfg.optimizer, cfg.device)?;
    let names_hash = crate::default_model::sha256_hex(opt.names().join("\n").as_bytes());

    let per_epoch = batches_per_epoch(data.len(), cfg.batch_size);
    let steps_per_epoch = per_epoch.div_ceil(cfg.grad_accum);
    let total_steps = cfg.max_steps.unwrap_or(steps_per_epoch * cfg.epochs.max(1));
    let warmup = warmup_steps(cfg.warmup_ratio, total_steps as i64);

    let mut state = TrainerState {
        step: 0,
        micro_batches: 0,
        best: None,
        seed: cfg.seed,
        parameters: opt.numel(),
        parameter_names_sha256: names_hash.clone(),
        data: cfg.data.clone(),
        rows: data.len(),
    };
    if let Some(dir) = resume {
        let saved = checkpoint::read_state(dir)?;
        if saved.parameters != state.parameters || saved.parameter_names_sha256 != names_hash {
            return Err(Error::Invalid(format!(
                "{}: checkpoint is from another model ({} parameters, this model has {}); resume with the --model it was trained from",
                dir.display(),
                saved.parameters,
                state.parameters
            )));
        }
        if saved.rows != data.len() {
            return Err(Error::Invalid(format!(
                "{}: checkpoint was trained on {} rows but {} has {}; resume with the same --data",
                dir.display(),
                saved.rows,
                cfg.data.display(),
                data.len()
            )));
        }
        opt.load(&dir.join(checkpoint::OPTIMIZER_FILE))?;
        state = saved;
    }
    std::fs::create_dir_all(&cfg.output).map_err(|e| Error::io(&cfg.output, e))?;
    let metrics_path = cfg.output.join("metrics.jsonl");
    let mut metrics_log = checkpoint::MetricsLog::open(&metrics_path, resume.is_some())?;

    let evaluate = |enc: &SentenceEncoder| -> Result<Option<Metrics>> {
        suite.map(|s| s.run(enc)).transpose()
    };
    let best_key = |m: &Metrics, suite: &EvalSuite| -> Option<f64> {
        let key = cfg
            .best_metric
            .clone()
            .unwrap_or_else(|| suite.main_metric().to_string());
        m.get(&key).copied()
    };
    if let (Some(s), Some(k)) = (suite, &cfg.best_metric) {
        s.check_metric(k)?;
    }

    let mut before = None;
    if resume.is_none() {
        if let Some(m) = evaluate(&encoder)? {
            let log = StepLog {
                step: 0,
                loss: None,
                lr: 0.0,
                grad_norm: 0.0,
                examples_per_s: 0.0,
                eval: Some(m.clone()),
            };
            metrics_log.write(&log)?;
            observer.log(&log);
            before = Some(m);
        }
    }

    // GPU memory is reported for the training loop, as the reference's bench does: peaks
    // reset here, after loading and the first evaluation, read right after the loop.
    let cuda_index = match cfg.device {
        Device::Cuda(i) => Some(i),
        _ => None,
    };
    if let Some(i) = cuda_index {
        let _ = crate::device_mem::reset_cuda_peak(i);
    }
    observer.start(total_steps, state.step);
    let mut all_ok = Tensor::from(true).to_device(cfg.device);
    let mut loss_acc = Tensor::zeros([], (Kind::Float, cfg.device));
    let mut last_norm = Tensor::zeros([], (Kind::Float, cfg.device));
    let mut last_lr = 0.0;
    let mut examples_since = 0usize;
    let mut clock = Instant::now();
    let sync_every_step = cfg.device == Device::Cpu;
    let loop_start = Instant::now();
    let mut excluded = 0.0f64; // seconds spent evaluating and saving inside the loop
    let mut examples_total = 0usize;

    while state.step < total_steps {
        opt.zero_grad();
        let lr = linear_schedule(
            state.step as i64,
            warmup,
            total_steps as i64,
            cfg.optimizer.lr,
        );
        let mut step_loss = Tensor::zeros([], (Kind::Float, cfg.device));
        for micro in 0..cfg.grad_accum {
            let epoch = state.micro_batches / per_epoch;
            let in_epoch = state.micro_batches % per_epoch;
            let order = epoch_order(data.len(), cfg.seed, epoch as u64);
            let rows = &order
                [in_epoch * cfg.batch_size..((in_epoch + 1) * cfg.batch_size).min(order.len())];
            tch::manual_seed(step_seed(cfg.seed, state.step, micro));
            let l = if let Some(mb) = loss.mini_batch_size() {
                cached_step(
                    &encoder,
                    loss.as_ref(),
                    &data,
                    rows,
                    &inputs,
                    &query_prompt,
                    &doc_prompt,
                    cfg,
                    mb,
                    state.step,
                    micro,
                )?
            } else {
                let embeddings = embed_columns(
                    &encoder,
                    &data,
                    rows,
                    &inputs,
                    &query_prompt,
                    &doc_prompt,
                    true,
                )?;
                let mask = duplicate_mask(&data, rows, &inputs, cfg)?;
                let labels = labels_tensor(&data, rows, cfg.device);
                let l = loss.forward(&LossBatch {
                    embeddings: &embeddings,
                    labels: labels.as_ref(),
                    duplicate_mask: mask.as_ref(),
                })?;
                (&l / cfg.grad_accum as f64).f_backward()?;
                l.detach()
            };
            step_loss += l.to_kind(Kind::Float) / cfg.grad_accum as f64;
            examples_since += rows.len();
            examples_total += rows.len();
            state.micro_batches += 1;
            if state.micro_batches.is_multiple_of(per_epoch) {
                break; // an optimizer step never spans two epochs
            }
        }
        let mut grad = opt.flat_grad();
        let norm = clip_grad_norm(&mut grad, cfg.max_grad_norm);
        let ok = step_loss.isfinite().logical_and(&grad.isfinite().all());
        opt.step(&grad, lr, Some(&ok));
        all_ok = all_ok.logical_and(&ok);
        loss_acc = step_loss;
        last_norm = norm;
        last_lr = lr;
        state.step += 1;
        observer.step(state.step);

        let interrupted = stop.load(Ordering::SeqCst);
        let do_log =
            state.step.is_multiple_of(cfg.log_every) || state.step == total_steps || interrupted;
        if (sync_every_step || do_log) && !bool::try_from(&all_ok).unwrap_or(false) {
            return Err(non_finite(state.step, &cfg.output));
        }
        let do_eval = cfg.eval_every.is_some_and(|n| state.step.is_multiple_of(n))
            && state.step < total_steps;
        if do_log || do_eval {
            let side_clock = Instant::now();
            let elapsed = clock.elapsed().as_secs_f64().max(1e-9);
            let eval = if do_eval { evaluate(&encoder)? } else { None };
            let log = StepLog {
                step: state.step,
                loss: f64::try_from(&loss_acc).ok(),
                lr: last_lr,
                grad_norm: f64::try_from(&last_norm).unwrap_or(f64::NAN),
                examples_per_s: examples_since as f64 / elapsed,
                eval: eval.clone(),
            };
            metrics_log.write(&log)?;
            observer.log(&log);
            examples_since = 0;
            clock = Instant::now();
            if let (Some(m), Some(s)) = (&eval, suite) {
                if let Some(v) = best_key(m, s) {
                    if state.best.is_none_or(|b| v > b) {
                        state.best = Some(v);
                        checkpoint::save_model(&encoder, &cfg.output.join("best"), &opt)?;
                        observer.message(&format!(
                            "step {}: new best {v:.4}, saved best/",
                            state.step
                        ));
                    }
                }
            }
            if do_eval {
                let dir = checkpoint::save_checkpoint(&encoder, &opt, &state, &cfg.output)?;
                checkpoint::prune(&cfg.output, cfg.save_total_limit)?;
                observer.message(&format!("checkpoint written: {}", dir.display()));
            }
            excluded += side_clock.elapsed().as_secs_f64();
        }
        if interrupted {
            let dir = checkpoint::save_checkpoint(&encoder, &opt, &state, &cfg.output)?;
            return Err(Error::Interrupted {
                step: state.step,
                checkpoint: dir,
            });
        }
    }

    let _ = f64::try_from(&loss_acc); // wait for the device before reading the clock
    let train_seconds = (loop_start.elapsed().as_secs_f64() - excluded).max(0.0);
    let gpu = cuda_index.and_then(|i| crate::device_mem::cuda_memory(i).ok());
    let after = evaluate(&encoder)?;
    if let Some(m) = &after {
        let log = StepLog {
            step: state.step,
            loss: f64::try_from(&loss_acc).ok(),
            lr: last_lr,
            grad_norm: f64::try_from(&last_norm).unwrap_or(f64::NAN),
            examples_per_s: 0.0,
            eval: Some(m.clone()),
        };
        metrics_log.write(&log)?;
        observer.log(&log);
        if let Some(s) = suite {
            if let Some(v) = best_key(m, s) {
                if state.best.is_none_or(|b| v > b) {
                    state.best = Some(v);
                    checkpoint::save_model(&encoder, &cfg.output.join("best"), &opt)?;
                }
            }
        }
    }
    let final_dir = cfg.output.join("final");
    checkpoint::save_model(&encoder, &final_dir, &opt)?;
    let best_dir = cfg.output.join("best");
    Ok(TrainSummary {
        steps: state.step,
        before,
        after,
        final_dir,
        best_dir: best_dir.is_dir().then_some(best_dir),
        train_seconds,
        examples: examples_total,
        peak_gpu_mem_gib: gpu.map(|m| m.peak_allocated_gib()),
        peak_gpu_reserved_gib: gpu.map(|m| m.peak_reserved_gib()),
    })
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

/// Seed of the torch generator for (step, micro-batch): dropout replays exactly on resume.
pub fn step_seed(seed: u64, step: usize, micro: usize) -> i64 {
    (seed
        .wrapping_mul(1_000_003)
        .wrapping_add(step as u64 * 64 + micro as u64)
        & 0x7fff_ffff_ffff) as i64
}

/// Texts of column `c` for `rows`.
fn column_texts<'d>(data: &'d Dataset, c: usize, rows: &[usize]) -> Vec<&'d str> {
    rows.iter().map(|&r| data.texts[c][r].as_str()).collect()
}

/// Tokenizes `texts` with `prompt` prepended as the reference does (and its tokens
/// excluded from pooling where the model says `include_prompt: false`).
fn tokenize(
    enc: &SentenceEncoder,
    texts: &[&str],
    prompt: &str,
) -> Result<crate::encoder::TokenBatch> {
    enc.tokenize_with_prompt(texts, Some(prompt))
}

/// One `(B, D)` embedding per loss input column (two dropout passes for SimCSE).
fn embed_columns(
    enc: &SentenceEncoder,
    data: &Dataset,
    rows: &[usize],
    inputs: &LossInputs,
    qp: &str,
    dp: &str,
    train: bool,
) -> Result<Vec<Tensor>> {
    let mut out = Vec::new();
    match inputs {
        LossInputs::SingleTextTwice => {
            let batch = tokenize(enc, &column_texts(data, 0, rows), qp)?;
            out.push(enc.forward(&batch, train)?);
            out.push(enc.forward(&batch, train)?);
        }
        _ => {
            for c in 0..data.columns.len() {
                let batch = tokenize(
                    enc,
                    &column_texts(data, c, rows),
                    if c == 0 { qp } else { dp },
                )?;
                out.push(enc.forward(&batch, train)?);
            }
        }
    }
    Ok(out)
}

fn labels_tensor(data: &Dataset, rows: &[usize], device: Device) -> Option<Tensor> {
    data.labels.as_ref().map(|l| {
        let v: Vec<f32> = rows.iter().map(|&r| l[r] as f32).collect();
        Tensor::from_slice(&v).to_device(device)
    })
}

fn duplicate_mask(
    data: &Dataset,
    rows: &[usize],
    inputs: &LossInputs,
    cfg: &TrainConfig,
) -> Result<Option<Tensor>> {
    if !cfg.dedupe || matches!(inputs, LossInputs::ScoredPairs { .. }) {
        return Ok(None);
    }
    let mut cols: Vec<Vec<&str>> = data
        .texts
        .iter()
        .map(|col| rows.iter().map(|&r| col[r].as_str()).collect())
        .collect();
    if matches!(inputs, LossInputs::SingleTextTwice) {
        cols.push(cols[0].clone());
    }
    let slices: Vec<&[&str]> = cols.iter().map(Vec::as_slice).collect();
    Ok(Some(
        crate::loss::duplicate_mask(&slices)?.to_device(cfg.device),
    ))
}

/// GradCache (Gao et al. 2021, as sentence-transformers'
/// losses/CachedMultipleNegativesRankingLoss.py): embed every column in mini-batches
/// without a graph, take the loss and its gradient w.r.t. the embeddings, then re-embed
/// each mini-batch with a graph (same dropout seed) and backpropagate dot(embedding, grad).
#[allow(clippy::too_many_arguments)]
fn cached_step(
    enc: &SentenceEncoder,
    loss: &dyn ContrastiveLoss,
    data: &Dataset,
    rows: &[usize],
    inputs: &LossInputs,
    qp: &str,
    dp: &str,
    cfg: &TrainConfig,
    mini: usize,
    step: usize,
    micro: usize,
) -> Result<Tensor> {
    let mini = mini.max(1);
    let n_cols = match inputs {
        LossInputs::SingleTextTwice => 2,
        _ => data.columns.len(),
    };
    let col_texts = |c: usize| -> (Vec<&str>, &str) {
        match inputs {
            LossInputs::SingleTextTwice => (column_texts(data, 0, rows), qp),
            _ => (column_texts(data, c, rows), if c == 0 { qp } else { dp }),
        }
    };
    let seed_of = |c: usize, chunk: usize| {
        step_seed(cfg.seed, step, micro) ^ (((c as i64) << 20) + chunk as i64 + 1)
    };
    // Pass 1: embeddings without a graph.
    let mut detached = Vec::with_capacity(n_cols);
    for c in 0..n_cols {
        let (texts, prompt) = col_texts(c);
        let mut parts = Vec::new();
        for (chunk, piece) in texts.chunks(mini).enumerate() {
            tch::manual_seed(seed_of(c, chunk));
            let e = tch::no_grad(|| -> Result<Tensor> {
                enc.forward(&tokenize(enc, piece, prompt)?, true)
            })?;
            parts.push(e.to_kind(Kind::Float));
        }
        detached.push(Tensor::cat(&parts, 0).detach().set_requires_grad(true));
    }
    let mask = duplicate_mask(data, rows, inputs, cfg)?;
    let labels = labels_tensor(data, rows, cfg.device);
    let l = loss.forward(&LossBatch {
        embeddings: &detached,
        labels: labels.as_ref(),
        duplicate_mask: mask.as_ref(),
    })?;
    (&l / cfg.grad_accum as f64).f_backward()?;
    // Pass 2: re-embed with a graph, chain the cached gradients in.
    for (c, emb) in detached.iter().enumerate() {
        let grad = emb.grad();
        let (texts, prompt) = col_texts(c);
        for (chunk, piece) in texts.chunks(mini).enumerate() {
            tch::manual_seed(seed_of(c, chunk));
            let e = enc.forward(&tokenize(enc, piece, prompt)?, true)?;
            let g = grad.narrow(0, (chunk * mini) as i64, piece.len() as i64);
            (e.to_kind(Kind::Float) * g).sum(Kind::Float).f_backward()?;
        }
    }
    Ok(l.detach())
}
