//! `mine-bench`: the search and filter of `embtune mine` (`embtune_core::mine::mine_embedded`:
//! the blocked exact top-k, the filters, the output rows) on random unit vectors, to measure
//! time and peak memory for a corpus of N documents without a model. Query i is a noisy
//! copy of document i, which is its positive.
//!
//! Run: `cargo run --release -p embtune-bench --bin mine-bench -- --docs 1000000`
//! Options: `--docs N` (100000), `--queries Q` (10000, at most N), `--dim D` (384),
//! `--num-negatives K` (3), `--relative-margin M` (none), `--block-rows B` (4096),
//! `--device cpu|cuda` (cpu), `--precision fp32|bf16` (fp32; bf16 is the CUDA default of
//! `embtune mine`). Prints one JSON line: seconds, peak resident memory (VmHWM) before and
//! after, the CUDA allocator's peak when on CUDA, and for comparison the bytes of the
//! embeddings and of the full (queries x docs) score matrix that the search never builds.

use std::time::Instant;

use clap::Parser;
use embtune_core::mine::{self, MineConfig, Pairs, Plan};
use tch::{Device, Kind, Tensor};

/// Search + filter of `embtune mine` on random unit vectors.
#[derive(Parser, Debug)]
#[command(name = "mine-bench")]
struct Opts {
    /// Documents in the corpus.
    #[arg(long, default_value_t = 100_000)]
    docs: usize,
    /// Queries (each has document i as its positive).
    #[arg(long, default_value_t = 10_000)]
    queries: usize,
    /// Embedding width.
    #[arg(long, default_value_t = 384)]
    dim: i64,
    #[arg(long, default_value_t = 3)]
    num_negatives: usize,
    #[arg(long)]
    relative_margin: Option<f64>,
    #[arg(long, default_value_t = mine::DEFAULT_BLOCK_ROWS)]
    block_rows: usize,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// fp32 or bf16 (storage of the embeddings; scores are fp32).
    #[arg(long, default_value = "fp32")]
    precision: String,
    #[arg(long, default_value_t = 0)]
    seed: i64,
}

/// Peak resident set size of this process so far, MiB (`VmHWM`).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn unit(x: Tensor) -> Tensor {
    &x / x.norm_scalaropt_dim(2, [1], true)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = Opts::parse();
    let device = match o.device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        d => return Err(format!("--device {d}: use cpu or cuda").into()),
    };
    let kind = match o.precision.as_str() {
        "fp32" => Kind::Float,
        "bf16" => Kind::BFloat16,
        p => return Err(format!("--precision {p}: use fp32 or bf16").into()),
    };
    let nq = o.queries.min(o.docs);
    let pairs = Pairs {
        anchor_column: "anchor".into(),
        positive_column: "positive".into(),
        anchors: (0..nq).map(|i| format!("q{i}")).collect(),
        positives: (0..nq).map(|i| format!("d{i}")).collect(),
    };
    let corpus: Vec<String> = (0..o.docs).map(|i| format!("d{i}")).collect();
    let cfg = MineConfig {
        num_negatives: o.num_negatives,
        relative_margin: o.relative_margin,
        block_rows: o.block_rows,
        ..MineConfig::default()
    };
    let plan = Plan::new(&pairs, Some(&corpus), &cfg)?;
    drop((pairs, corpus));
    tch::manual_seed(o.seed);
    let _guard = tch::no_grad_guard();
    let docs = unit(Tensor::randn([o.docs as i64, o.dim], (Kind::Float, device))).to_kind(kind);
    // The plan's corpus order is the given corpus (the positives are in it already).
    let noise = Tensor::randn([nq as i64, o.dim], (Kind::Float, device)) * 0.5;
    let queries = unit(docs.narrow(0, 0, nq as i64).to_kind(Kind::Float) + noise).to_kind(kind);
    if let Device::Cuda(i) = device {
        embtune_core::device_mem::reset_cuda_peak(i)?;
    }
    let rss_before = peak_rss_mib();
    let start = Instant::now();
    let mined = mine::mine_embedded(plan, &queries, &docs, &cfg, &mut ())?;
    let seconds = start.elapsed().as_secs_f64();
    let cuda_peak_gib = match device {
        Device::Cuda(i) => Some(embtune_core::device_mem::cuda_memory(i)?.peak_allocated_gib()),
        _ => None,
    };
    let elem = if kind == Kind::BFloat16 { 2.0 } else { 4.0 };
    let mib = |bytes: f64| bytes / (1u64 << 20) as f64;
    let line = serde_json::json!({
        "docs": o.docs,
        "queries": nq,
        "dim": o.dim,
        "device": o.device,
        "precision": o.precision,
        "block_rows": o.block_rows,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "rows": mined.stats.rows,
        "peak_rss_mib_before": round_mib(rss_before),
        "peak_rss_mib": round_mib(peak_rss_mib()),
        "cuda_peak_allocated_gib": cuda_peak_gib,
        "embeddings_mib": mib((o.docs + nq) as f64 * o.dim as f64 * elem).round(),
        "full_matrix_mib": mib(nq as f64 * o.docs as f64 * 4.0).round(),
    });
    println!("{line}");
    Ok(())
}

fn round_mib(x: f64) -> f64 {
    x.round()
}
