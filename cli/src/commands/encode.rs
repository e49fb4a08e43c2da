//! `embtune encode`: embed every text of a file with a model folder and write the
//! embeddings as `.npy` (float32, one row per text, input order) or `.jsonl`
//! (`{"text": ..., "embedding": [...]}` per line).

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use embtune_core::dist::{gather_parts_with_own_grad, ProcessGroup};
use embtune_core::encoder::SentenceEncoder;
use embtune_core::error::Error;
use embtune_core::table::{read_text, InputFormat, ReadOptions, Table};
use embtune_core::train::collator::{part_range, shard_sizes};
use tch::Device;

use super::ranks::{self, DistArgs};
use super::{resolve_device, resolve_precision};

/// Arguments of `embtune encode`.
#[derive(Args, Debug, Clone)]
pub struct EncodeArgs {
    /// Model folder (sentence-transformers or Hugging Face) or Hugging Face id
    /// (owner/name[@revision], from the cache or downloaded) [default: the embedded
    /// all-MiniLM-L6-v2].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Texts: `.csv` or `.jsonl` (with --column), or any other file with one text per
    /// line (UTF-8).
    #[arg(long)]
    pub input: PathBuf,
    /// Column of a `.csv` or `.jsonl` input holding the texts.
    #[arg(long)]
    pub column: Option<String>,
    /// Output: `.npy` (float32 matrix) or `.jsonl`.
    #[arg(long)]
    pub output: PathBuf,
    /// Text prepended to every input (as sentence-transformers' `prompt=`).
    #[arg(long, conflicts_with = "prompt_name")]
    pub prompt: Option<String>,
    /// Name of one of the model's prompts (config_sentence_transformers.json); without
    /// --prompt or --prompt-name the model's default prompt, if any, applies.
    #[arg(long)]
    pub prompt_name: Option<String>,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 64, allow_negative_numbers = true)]
    pub batch_size: usize,
    /// Write only the first D dimensions of every embedding (a Matryoshka model's smaller
    /// size), as sentence-transformers' `truncate_dim`: the model's output cut, not
    /// re-normalised. 1 to the model's dimension.
    #[arg(long, value_name = "D", allow_negative_numbers = true)]
    pub truncate_dim: Option<usize>,
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16.
    #[arg(long, default_value = "auto")]
    pub precision: String,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// With several ranks each embeds its share of the texts (contiguous parts, in rank
    /// order) and rank 0 writes them all.
    #[command(flatten)]
    pub dist: DistArgs,
}

/// The model folder: see [`super::resolve_model`] (a folder, a Hugging Face id, or the
/// embedded default).
pub fn model_dir(model: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    super::resolve_model(model)
}

/// Loads the model on the device and precision the flags ask for.
pub fn load_model(
    model: &Option<PathBuf>,
    device: &str,
    precision: &str,
) -> anyhow::Result<SentenceEncoder> {
    let dir = model_dir(model)?;
    let device = resolve_device(device)?;
    let precision = resolve_precision(precision, device)?;
    let mut enc = SentenceEncoder::load(&dir, device)?;
    enc.set_precision(precision)?;
    Ok(enc)
}

/// Reads the texts of a table (`.csv`, `.jsonl`: column `column`, cells trimmed as every
/// table's are) or of any other file (one text per line, kept as written); UTF-8 or a
/// byte-order mark's encoding, errors naming the line.
pub fn read_texts(path: &Path, column: Option<&str>) -> anyhow::Result<Vec<String>> {
    if InputFormat::from_extension(path).is_some() {
        let col = column.ok_or_else(|| {
            anyhow::anyhow!(
                "{}: a .csv or .jsonl input needs --column NAME",
                path.display()
            )
        })?;
        let table = Table::read(path, &ReadOptions::default())?;
        table.require_columns([col], path)?;
        let c = table.column(col).expect("checked above");
        return Ok((0..table.n_rows())
            .map(|r| table.cell(r, c).to_string())
            .collect());
    }
    if column.is_some() {
        anyhow::bail!(
            "{}: --column applies to .csv and .jsonl inputs only",
            path.display()
        );
    }
    let text = read_text(path, None)?;
    let mut lines: Vec<String> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect();
    if text.ends_with('\n') {
        lines.pop();
    }
    Ok(lines)
}

/// Writes `emb (n, d)` for `texts` to `path` (.npy or .jsonl) through a temporary file.
pub fn write_embeddings(path: &Path, texts: &[String], emb: &tch::Tensor) -> anyhow::Result<()> {
    let (_, d) = emb.size2()?;
    let data = Vec::<f32>::try_from(emb.contiguous().view([-1]))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> anyhow::Result<()> {
        match ext.as_str() {
            "npy" => emb
                .contiguous()
                .write_npy(&tmp)
                .map_err(|e| Error::io(&tmp, e))?,
            "jsonl" => {
                let f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
                let mut w = std::io::BufWriter::new(f);
                for (i, t) in texts.iter().enumerate() {
                    let row = &data[i * d as usize..(i + 1) * d as usize];
                    let line = serde_json::json!({"text": t, "embedding": row});
                    writeln!(w, "{line}").map_err(|e| Error::io(&tmp, e))?;
                }
                w.flush().map_err(|e| Error::io(&tmp, e))?;
            }
            _ => anyhow::bail!(
                "{}: unknown output format; use a .npy or .jsonl file name",
                path.display()
            ),
        }
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Runs `embtune encode`; `argv` is the whole command line. With `--nproc-per-node N` > 1
/// it starts N ranks ([`super::launch`]); as one rank of several (torchrun's variables) it
/// embeds its share of the texts and rank 0 writes the output.
pub fn run(args: EncodeArgs, argv: &[OsString]) -> anyhow::Result<ExitCode> {
    let ext = args
        .output
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ext != "npy" && ext != "jsonl" {
        anyhow::bail!(
            "{}: unknown output format; use a .npy or .jsonl file name",
            args.output.display()
        );
    }
    super::checks::at_least_one("--batch-size", args.batch_size, 64)?;
    let texts = read_texts(&args.input, args.column.as_deref())?;
    let model = model_dir(&args.model)?;
    ranks::run(
        &args.dist,
        &args.device,
        argv,
        &args.input,
        |device, group| {
            encode_rank(&args, &model, device, &texts, group)?;
            Ok(ExitCode::SUCCESS)
        },
    )
}

/// Embeds this rank's share of `texts` (all of them for one process); rank 0 gathers every
/// rank's rows and writes the output.
fn encode_rank(
    args: &EncodeArgs,
    model: &Path,
    device: Device,
    texts: &[String],
    group: Option<&ProcessGroup>,
) -> anyhow::Result<()> {
    let mut enc = SentenceEncoder::load(model, device)?;
    enc.set_precision(resolve_precision(&args.precision, device)?)?;
    embtune_core::eval::evaluators::check_truncate_dim(
        args.truncate_dim,
        enc.dimension().max(0) as usize,
    )?;
    let prompt: Option<String> = match (&args.prompt, &args.prompt_name) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(n)) => Some(enc.prompt(n)?.to_string()),
        (None, None) => enc.default_prompt().map(String::from),
    };
    let (rank, world) = group.map_or((0, 1), |g| (g.rank(), g.world_size()));
    let parts = shard_sizes(texts.len(), world);
    let own = &texts[part_range(&parts, rank)];
    let refs: Vec<&str> = own.iter().map(String::as_str).collect();
    let bar = if rank == 0 && !args.quiet && std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(own.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} texts [{elapsed_precise}<{eta_precise}, {per_sec}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let emb = if refs.is_empty() {
        tch::Tensor::zeros([0, enc.dimension()], (tch::Kind::Float, device))
    } else {
        enc.encode_with_progress(&refs, prompt.as_deref(), args.batch_size, &mut |done| {
            if let Some(b) = &bar {
                b.set_position(done as u64);
            }
        })
        .with_context(|| format!("encoding {}", args.input.display()))?
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let emb = match group {
        Some(g) => {
            let local = emb.to_kind(tch::Kind::Float).to_device(g.device());
            gather_parts_with_own_grad(g, &local, &parts)?
        }
        None => emb,
    };
    if rank != 0 {
        return Ok(());
    }
    let emb = match args.truncate_dim {
        Some(d) => emb.f_narrow(1, 0, d as i64)?,
        None => emb,
    };
    write_embeddings(&args.output, texts, &emb)?;
    eprintln!(
        "embtune: wrote {} embeddings of dimension {} to {}{}",
        texts.len(),
        emb.size2()?.1,
        args.output.display(),
        if world > 1 {
            format!(" ({world} ranks)")
        } else {
            String::new()
        }
    );
    Ok(())
}
