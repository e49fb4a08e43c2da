//! `encode-bench`: encoding throughput of `SentenceEncoder::encode` against
//! sentence-transformers' `encode` (bench/reference/st_encode.py) on the same texts and
//! batch size, run side by side; prints texts/s for both and the ratio.
//!
//! Run: `cargo run --release -p embtune-bench --bin encode-bench`
//! Options: `--model DIR` (default: the embedded all-MiniLM-L6-v2), `--texts N` (default
//! 2000, seeded synthetic table-like texts from a few to a few hundred words),
//! `--batch-size N` (64), `--device cpu|cuda|auto` (cpu), `--precision fp32|bf16` (fp32),
//! `--repeats N` (3; the two sides alternate, the best of each is reported), `--no-reference`, `--python PATH` (default
//! .venv-ref/bin/python, or $EMBTUNE_REF_PYTHON).

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::Parser;
use embtune_core::encoder::{Precision, SentenceEncoder};
use rand::{Rng, SeedableRng};

/// Encoding throughput, embtune against sentence-transformers.
#[derive(Parser, Debug)]
#[command(name = "encode-bench")]
struct Opts {
    /// Model folder (default: the embedded all-MiniLM-L6-v2).
    #[arg(long, default_value_os_t = embtune_core::default_model::default_model_dir())]
    model: PathBuf,
    /// Number of seeded synthetic texts.
    #[arg(long, default_value_t = 2000)]
    texts: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// cpu, cuda or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// fp32 or bf16.
    #[arg(long, default_value = "fp32")]
    precision: String,
    /// Rounds; the two sides alternate and the best of each is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Skip the reference.
    #[arg(long = "no-reference", action = clap::ArgAction::SetFalse)]
    reference: bool,
    /// Python of the reference environment.
    #[arg(long, default_value_os_t = embtune_bench::reference_python())]
    python: PathBuf,
}

/// Seeded texts shaped like table cells: 40% short (3-12 words), 40% medium (15-60),
/// 20% long (80-300, past MiniLM's 256-token limit for the longest).
fn make_texts(n: usize) -> Vec<String> {
    const WORDS: &str = "the a model embedding vector search query document table column category product price \
        customer order shipping fast slow red blue green large small ancient modern river mountain data science \
        learning neural network transformer token sentence paragraph retrieval ranking apple banana cherry coffee \
        tea water fire earth wind music guitar piano violin city village running jumping thinking writing reading \
        quickly slowly carefully stainless steel bottle insulated warranty battery charger wireless bluetooth \
        서울 배송 가격 품질 제품 고객 주문";
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    (0..n)
        .map(|_| {
            let r: f64 = rng.gen();
            let len = if r < 0.4 {
                rng.gen_range(3..=12)
            } else if r < 0.8 {
                rng.gen_range(15..=60)
            } else {
                rng.gen_range(80..=300)
            };
            (0..len)
                .map(|_| words[rng.gen_range(0..words.len())])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn bench(o: &Opts) -> Result<(), String> {
    if std::env::var_os("EMBTUNE_DEFAULT_MALLOC").is_none() {
        // As `embtune encode` does (cli/src/lib.rs, dispatch).
        embtune_core::mem::keep_large_allocations();
    }
    let texts = make_texts(o.texts);
    let device = embtune::commands::resolve_device(&o.device).map_err(|e| e.to_string())?;
    let precision: Precision = o
        .precision
        .parse()
        .map_err(|e: embtune_core::Error| e.to_string())?;
    let mut enc = SentenceEncoder::load(&o.model, device).map_err(|e| e.to_string())?;
    enc.set_precision(precision).map_err(|e| e.to_string())?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    // Warm-up: the first batches (allocator, kernels).
    let warm = (o.batch_size * 2).min(refs.len());
    let _ = enc
        .encode(&refs[..warm], o.batch_size)
        .map_err(|e| e.to_string())?;
    let file = std::env::temp_dir().join(format!("encode-bench-{}.txt", std::process::id()));
    if o.reference {
        std::fs::write(&file, texts.join("\n") + "\n")
            .map_err(|e| format!("{}: {e}", file.display()))?;
    }
    // The script beside the sources this binary was built from, else the one under the
    // current folder (a binary carried to another machine runs from a copy of the tree).
    let script = [
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reference/st_encode.py"),
        PathBuf::from("bench/reference/st_encode.py"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .ok_or("bench/reference/st_encode.py not found: run from the repository root")?;
    // One reference run (its own process: model load, warm-up, one timed pass).
    let run_reference = || -> Result<serde_json::Value, String> {
        let out = Command::new(&o.python)
            .arg(&script)
            .args([
                "--model",
                &o.model.to_string_lossy(),
                "--texts",
                &file.to_string_lossy(),
            ])
            .args([
                "--batch-size",
                &o.batch_size.to_string(),
                "--device",
                &o.device,
                "--precision",
                &o.precision,
            ])
            .args(["--repeats", "1"])
            .output()
            .map_err(|e| {
                format!(
                    "cannot run {} ({e}); create it with scripts/ref-env.sh or pass --no-reference",
                    o.python.display()
                )
            })?;
        if !out.status.success() {
            return Err(format!(
                "reference failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ));
        }
        let line = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .to_string();
        serde_json::from_str(&line).map_err(|e| format!("reference output {line:?}: {e}"))
    };
    // Repeats alternate between the two sides, so a change in the machine's load hits both
    // alike; the best run of each side is reported.
    let mut best = f64::INFINITY;
    let mut best_cpu = f64::INFINITY;
    let mut theirs: Option<serde_json::Value> = None;
    for _ in 0..o.repeats.max(1) {
        let (t, c) = (Instant::now(), cpu_seconds());
        let e = enc.encode(&refs, o.batch_size).map_err(|e| e.to_string())?;
        let _ = e.size(); // encode returns CPU data: the GPU work is done
        best = best.min(t.elapsed().as_secs_f64());
        best_cpu = best_cpu.min(cpu_seconds() - c);
        if o.reference {
            let v = run_reference();
            let v = match v {
                Ok(v) => v,
                Err(e) => {
                    let _ = std::fs::remove_file(&file);
                    return Err(e);
                }
            };
            let better = |a: &serde_json::Value, b: &serde_json::Value| {
                a["texts_per_s"].as_f64().unwrap_or(0.0) > b["texts_per_s"].as_f64().unwrap_or(0.0)
            };
            if theirs.as_ref().is_none_or(|t| better(&v, t)) {
                theirs = Some(v);
            }
        }
    }
    let _ = std::fs::remove_file(&file);
    let ours = texts.len() as f64 / best;
    println!("encode-bench: model {}", o.model.display());
    println!(
        "encode-bench: {} texts, batch {}, device {}, precision {}, threads {}",
        texts.len(),
        o.batch_size,
        o.device,
        o.precision,
        num_threads()
    );
    println!("embtune               {:>9.1} texts/s  ({best:.3} s wall, {best_cpu:.3} s CPU, best of {})", ours, o.repeats);
    let Some(v) = theirs else {
        return Ok(());
    };
    let their_tps = v["texts_per_s"]
        .as_f64()
        .ok_or("reference output has no texts_per_s")?;
    let their_cpu = v["cpu_seconds"].as_f64().unwrap_or(f64::NAN);
    println!(
        "sentence-transformers {:>9.1} texts/s  ({:.3} s wall, {their_cpu:.3} s CPU, best of {}, threads {})",
        their_tps,
        v["seconds"].as_f64().unwrap_or(0.0),
        o.repeats,
        v["threads"]
    );
    println!(
        "ratio (embtune / reference): {:.2}x texts/s (wall), {:.2}x CPU seconds per text",
        ours / their_tps,
        their_cpu / best_cpu
    );
    Ok(())
}

/// User + system CPU seconds of this process (all threads).
fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn num_threads() -> String {
    std::env::var("OMP_NUM_THREADS").unwrap_or_else(|_| "libtorch default".into())
}

fn main() -> ExitCode {
    match bench(&Opts::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("encode-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}
