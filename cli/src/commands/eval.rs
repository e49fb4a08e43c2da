//! `embtune eval`: run the evaluators on any model folder and print JSON metrics. The
//! evaluator flags are shared with `embtune train`.

use std::path::{Path, PathBuf};

use clap::Args;
use embtune_core::encoder::SentenceEncoder;
use embtune_core::eval::evaluators::{EvalSuite, MarginProbe, RetrievalSet, TripletSet};
use embtune_core::eval::ORIGINAL_MARGIN_WEIGHTS;

use super::{resolve_device, PromptArgs};

/// Where evaluation data comes from.
#[derive(Args, Debug, Clone, Default)]
pub struct EvalSources {
    /// Folder with the eval split of `embtune gen` (eval_queries.csv, eval_corpus.csv,
    /// eval_qrels.csv): retrieval metrics.
    #[arg(long)]
    pub eval_dir: Option<PathBuf>,
    /// Which part's split, when --eval-dir holds several (`<part>_eval_queries.csv`).
    #[arg(long)]
    pub eval_part: Option<String>,
    /// (anchor, positive, negative) file: triplet accuracy.
    #[arg(long)]
    pub triplets: Option<PathBuf>,
    /// Query of the combined-margin probe (the original script's evaluation).
    #[arg(long)]
    pub margin_query: Option<String>,
    /// Documents of the probe, the one that should rank first first.
    #[arg(long, num_args = 2..)]
    pub margin_docs: Vec<String>,
    /// Weights of (s1 - s2), (s1 - s3), ... [default: 0.7 0.3].
    #[arg(long, num_args = 1..)]
    pub margin_weights: Vec<f64>,
}

/// Builds the evaluators the flags ask for (None when none is asked for).
pub fn build_suite(
    src: &EvalSources,
    qp: &str,
    dp: &str,
    batch_size: usize,
) -> anyhow::Result<Option<EvalSuite>> {
    let mut suite = EvalSuite {
        query_prompt: qp.to_string(),
        document_prompt: dp.to_string(),
        batch_size,
        ..Default::default()
    };
    if let Some(dir) = &src.eval_dir {
        suite.retrieval = Some(RetrievalSet::read(dir, src.eval_part.as_deref())?);
        suite.source = Some(dir.clone());
    }
    if let Some(t) = &src.triplets {
        suite.triplets = Some(TripletSet::read(t)?);
    }
    match (&src.margin_query, src.margin_docs.is_empty()) {
        (Some(q), false) => {
            let weights = if src.margin_weights.is_empty() {
                ORIGINAL_MARGIN_WEIGHTS.to_vec()
            } else {
                src.margin_weights.clone()
            };
            if weights.len() + 1 != src.margin_docs.len() {
                anyhow::bail!(
                    "--margin-docs has {} documents, so --margin-weights needs {} weights (got {})",
                    src.margin_docs.len(),
                    src.margin_docs.len() - 1,
                    weights.len()
                );
            }
            suite.margin = Some(MarginProbe {
                query: q.clone(),
                documents: src.margin_docs.clone(),
                weights,
            });
        }
        (Some(_), true) => anyhow::bail!("--margin-query needs --margin-docs DOC1 DOC2 [DOC3...]"),
        (None, false) => anyhow::bail!("--margin-docs needs --margin-query"),
        (None, true) => {}
    }
    Ok((!suite.is_empty()).then_some(suite))
}

/// Arguments of `embtune eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model folder or Hugging Face id (owner/name[@revision]); the embedded default model
    /// when left out.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Encoding batch size.
    #[arg(long, default_value_t = 64, allow_negative_numbers = true)]
    pub batch_size: usize,
    /// Evaluate with the first D dimensions of every embedding (a Matryoshka model's
    /// smaller size; sentence-transformers' `truncate_dim`). 1 to the model's dimension.
    #[arg(long, value_name = "D", allow_negative_numbers = true)]
    pub truncate_dim: Option<usize>,
    #[command(flatten)]
    pub prompts: PromptArgs,
    #[command(flatten)]
    pub eval: EvalSources,
}

/// Evaluates and prints the metrics as JSON.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let metrics = metrics(&args)?;
    println!("{}", serde_json::to_string_pretty(&metrics)?);
    Ok(())
}

/// The metrics `embtune eval` prints for `args`.
pub fn metrics(args: &EvalArgs) -> anyhow::Result<embtune_core::eval::evaluators::Metrics> {
    super::checks::at_least_one("--batch-size", args.batch_size, 64)?;
    let model = super::resolve_model(&args.model)?;
    let (qp, dp) = args.prompts.resolve(&model)?;
    let Some(mut suite) = build_suite(&args.eval, &qp, &dp, args.batch_size)? else {
        anyhow::bail!("nothing to evaluate: give --eval-dir DIR, --triplets FILE or --margin-query Q --margin-docs D1 D2 ...");
    };
    suite.truncate_dim = args.truncate_dim;
    evaluate(&model, &args.device, &suite)
}

/// Loads `model` on `device` and runs `suite` (which checks its `truncate_dim` against the
/// model before embedding anything).
pub fn evaluate(
    model: &Path,
    device: &str,
    suite: &EvalSuite,
) -> anyhow::Result<embtune_core::eval::evaluators::Metrics> {
    let enc = SentenceEncoder::load(model, resolve_device(device)?)?;
    Ok(suite.run(&enc)?)
}
