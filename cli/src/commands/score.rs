//! `embtune score`: cosine similarity of one query to several documents, printed highest
//! first as `score<TAB>document`.

use std::path::PathBuf;

use clap::Args;
use embtune_core::encoder::SentenceEncoder;
use embtune_core::Result;

use super::PromptArgs;

/// Arguments of `embtune score`.
#[derive(Args, Debug, Clone)]
pub struct ScoreArgs {
    /// Model folder or Hugging Face id (owner/name[@revision]) [default: the embedded
    /// all-MiniLM-L6-v2].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The query.
    #[arg(long)]
    pub query: String,
    /// The documents to score against the query.
    #[arg(long, num_args = 1.., required = true)]
    pub documents: Vec<String>,
    #[command(flatten)]
    pub prompts: PromptArgs,
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16.
    #[arg(long, default_value = "auto")]
    pub precision: String,
}

/// (document index, cosine) pairs, highest score first (ties by index).
pub fn score_documents(
    enc: &SentenceEncoder,
    query: &str,
    docs: &[&str],
    query_prompt: &str,
    doc_prompt: &str,
) -> Result<Vec<(usize, f32)>> {
    let q = enc.encode_with_prompt(&[query], Some(query_prompt), 1)?;
    let d = enc.encode_with_prompt(docs, Some(doc_prompt), 64)?;
    let qn = &q
        / q.norm_scalaropt_dim(2.0, [-1i64].as_slice(), true)
            .clamp_min(1e-12);
    let dn = &d
        / d.norm_scalaropt_dim(2.0, [-1i64].as_slice(), true)
            .clamp_min(1e-12);
    let s = Vec::<f32>::try_from(dn.matmul(&qn.tr()).view([-1]))?;
    let mut out: Vec<(usize, f32)> = s.into_iter().enumerate().collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(out)
}

/// Runs `embtune score`.
pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    let dir = super::encode::model_dir(&args.model)?;
    let (qp, dp) = args.prompts.resolve(&dir)?;
    let enc = super::encode::load_model(&Some(dir), &args.device, &args.precision)?;
    let docs: Vec<&str> = args.documents.iter().map(String::as_str).collect();
    for (i, s) in score_documents(&enc, &args.query, &docs, &qp, &dp)? {
        println!("{s:.4}\t{}", args.documents[i]);
    }
    Ok(())
}
