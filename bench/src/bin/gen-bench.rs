//! `gen-bench`: times `embtune gen` end to end (read, generate, write) for each built-in
//! strategy on a synthetic table of the original's shape, measures peak RSS, and runs the
//! Python re-implementation of the original scripts (bench/reference/original_gen.py) on
//! the same table for the side-by-side ratio.
//!
//! Run: `cargo run --release -p embtune-bench --bin gen-bench`
//! Options: `--rows N` (default 75000), `--big-rows N` (default 1000000; 0 skips),
//! `--no-reference`, `--out DIR` (default bench-out/gen), `--python PATH` (default
//! .venv-ref/bin/python, or $EMBTUNE_REF_PYTHON), `--embtune PATH` (the torch-free binary
//! to time; default target/lite/release/embtune, built first with
//! `CARGO_TARGET_DIR=target/lite cargo build --release -p embtune --no-default-features`
//! when missing), `--full` (time the full, libtorch-linked build instead, in process).
//!
//! `gen` is timed with the torch-free ("lite") binary: the process floor of a binary that
//! links libtorch (about 1 s and 130-480 MB before any work) would dwarf the work. The full
//! binary's floor is still measured (this binary, which links libtorch, as a child doing
//! `list`) and printed for comparison. Wall time includes process start; peak RSS is the
//! child's `ru_maxrss` from `wait4`. With `--full`, each measurement runs this binary again
//! as a child (`--child gen ...`, which calls `embtune::run_from` exactly like the `embtune`
//! binary) and the child also records the time spent inside `embtune gen` alone.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use clap::Parser;
use embtune_bench::{run_measured, Measured};
use rand::Rng;

const STRATEGIES: [(&str, &str); 3] = [
    ("baseline", "basic"),
    ("domainwise", "domainwise"),
    ("fusion-multineg", "fusion"),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        return child(&args[2..]);
    }
    match bench(&Opts::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Child mode: `--child TIMING_FILE embtune-args...`.
fn child(args: &[String]) -> ExitCode {
    embtune_plugins::link();
    let timing = PathBuf::from(&args[0]);
    let start = Instant::now();
    let code =
        embtune::run_from(std::iter::once("embtune".to_string()).chain(args[1..].iter().cloned()));
    let _ = std::fs::write(timing, format!("{}", start.elapsed().as_secs_f64()));
    code
}

/// `embtune gen` timed against the original scripts.
#[derive(Parser, Debug)]
#[command(name = "gen-bench")]
struct Opts {
    /// Rows of the main table.
    #[arg(long, default_value_t = 75_000)]
    rows: usize,
    /// Rows of the large table (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    big_rows: usize,
    /// Skip the reference.
    #[arg(long = "no-reference", action = clap::ArgAction::SetFalse)]
    reference: bool,
    /// Folder for tables and outputs.
    #[arg(long, default_value = "bench-out/gen")]
    out: PathBuf,
    /// Python of the reference environment.
    #[arg(long, default_value_os_t = embtune_bench::reference_python())]
    python: PathBuf,
    /// The torch-free binary to time (default: target/lite/release/embtune, built when missing).
    #[arg(long)]
    embtune: Option<PathBuf>,
    /// Time the full, libtorch-linked build instead, in process.
    #[arg(long)]
    full: bool,
    /// Measurements per strategy at --rows (half as many at --big-rows); the median is
    /// reported.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
}

const LITE: &str = "target/lite/release/embtune";

/// Linux carries a process's peak RSS across `fork` and `exec`, so a child of this binary
/// (which links libtorch) reports at least this binary's own peak in `ru_maxrss`. The
/// torch-free binary is therefore run under `/usr/bin/time -f %M` (a small process whose
/// fork of the measured program starts with fresh accounting) and its peak RSS taken from
/// there; wall and CPU still come from `wait4`. Without /usr/bin/time the RSS stays inflated.
fn measure_fresh(cmd: &Command, rss_file: &Path) -> Result<Measured, String> {
    let time = Path::new("/usr/bin/time");
    if !time.exists() {
        let mut c = Command::new(cmd.get_program());
        c.args(cmd.get_args()).stdout(Stdio::null());
        return run_measured(&mut c).map_err(|e| e.to_string());
    }
    let mut c = Command::new(time);
    c.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(rss_file)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdout(Stdio::null());
    let mut m = run_measured(&mut c).map_err(|e| e.to_string())?;
    if let Some(kib) = std::fs::read_to_string(rss_file)
        .ok()
        .and_then(|s| s.lines().last().and_then(|l| l.trim().parse::<f64>().ok()))
    {
        m.peak_rss_mib = kib / 1024.0;
    }
    Ok(m)
}

/// The torch-free binary: `--embtune PATH`, or target/lite/release/embtune (built when missing).
fn lite_binary(o: &Opts) -> Result<PathBuf, String> {
    if let Some(p) = &o.embtune {
        return if p.exists() {
            Ok(p.clone())
        } else {
            Err(format!("--embtune {}: no such file", p.display()))
        };
    }
    let p = PathBuf::from(LITE);
    if !p.exists() {
        println!("building the torch-free binary ({LITE}) ...");
        let st = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .env("CARGO_TARGET_DIR", "target/lite")
            .args([
                "build",
                "--release",
                "-p",
                "embtune",
                "--no-default-features",
            ])
            .status()
            .map_err(|e| format!("cargo: {e}"))?;
        if !st.success() || !p.exists() {
            return Err("building the torch-free binary failed".into());
        }
    }
    Ok(p)
}

/// Category sizes with a Zipf-like skew: `categories` groups summing to `rows`, the
/// largest about `largest`.
fn category_sizes(rows: usize, categories: usize, largest: usize) -> Vec<usize> {
    let sizes_for = |a: f64| -> Vec<usize> {
        (0..categories)
            .map(|i| {
                ((largest as f64) / ((1 + i) as f64).powf(a))
                    .round()
                    .max(1.0) as usize
            })
            .collect()
    };
    let (mut lo, mut hi) = (0.0f64, 4.0f64);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if sizes_for(mid).iter().sum::<usize>() > rows {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let mut s = sizes_for(hi);
    // Top up the smallest groups to land exactly on `rows`.
    let mut total: usize = s.iter().sum();
    let mut i = categories;
    while total < rows {
        i = if i == 0 { categories - 1 } else { i - 1 };
        s[i] += 1;
        total += 1;
    }
    s
}

const SYL: &[&str] = &[
    "가", "계", "고", "금", "기", "납", "대", "도", "리", "만", "보", "부", "상", "서", "세", "수",
    "신", "약", "연", "예", "용", "율", "이", "입", "자", "저", "적", "정", "제", "지", "출", "카",
    "통", "투", "한", "해", "험", "환", "회", "혜",
];

fn word(rng: &mut embtune_core::Rng, n: usize) -> String {
    (0..n).map(|_| SYL[rng.gen_range(0..SYL.len())]).collect()
}

/// Writes the synthetic table: 설명, 분류, 대분류, 중분류, 표제어, 영문, 도메인.
fn synthesize(path: &Path, rows: usize) -> std::io::Result<(usize, usize)> {
    let scale = rows as f64 / 75_000.0;
    let categories = ((1_900.0 * scale).round() as usize).max(1);
    let largest = ((3_000.0 * scale).round() as usize).max(1);
    let sizes = category_sizes(rows, categories, largest);
    let mut rng = embtune_core::seeded_rng(2024);
    let mut cat_of: Vec<u32> = sizes
        .iter()
        .enumerate()
        .flat_map(|(c, &n)| std::iter::repeat_n(c as u32, n))
        .collect();
    for i in (1..cat_of.len()).rev() {
        let j = rng.gen_range(0..=i);
        cat_of.swap(i, j);
    }
    let mut out = String::with_capacity(rows * 160);
    out.push_str("설명,분류,대분류,중분류,표제어,영문,도메인\n");
    let mut prev = String::new();
    for (r, &c) in cat_of.iter().enumerate() {
        // About 2% of descriptions repeat an earlier one (real catalogues have duplicates).
        let desc = if r > 0 && rng.gen_range(0..50) == 0 {
            prev.clone()
        } else {
            let words = rng.gen_range(6..12);
            let mut d = String::new();
            for w in 0..words {
                if w > 0 {
                    d.push(' ');
                }
                let len = rng.gen_range(2..5);
                d.push_str(&word(&mut rng, len));
            }
            write!(d, " {}호 상품입니다.", r % 997).ok();
            d
        };
        let product = rng.gen_range(0..40_000);
        writeln!(
            out,
            "{desc},분류{c},대분류{},중분류{},상품{product},Product {product},도메인{}",
            c / 40,
            c / 4,
            c % 20
        )
        .ok();
        prev = desc;
    }
    std::fs::write(path, out)?;
    Ok((categories, sizes[0]))
}

struct Row {
    what: String,
    rows: usize,
    m: Measured,
    inproc_s: Option<f64>,
    out_rows: u64,
}

/// Runs `gen`; `timing`: Some when `exe` is this binary (child mode, records in-gen time).
fn run_ours(
    exe: &Path,
    data: &Path,
    out: &Path,
    strategy: &str,
    timing: Option<&Path>,
) -> Result<(Measured, Option<f64>, u64), String> {
    let _ = std::fs::remove_dir_all(out);
    let mut cmd = Command::new(exe);
    if let Some(t) = timing {
        cmd.arg("--child").arg(t);
    }
    cmd.args(["gen", "--quiet", "--strategy", strategy, "--data"])
        .arg(data);
    cmd.args([
        "--desc-col",
        "설명",
        "--category-col",
        "분류",
        "--positive-cols",
        "중분류",
        "표제어",
        "영문",
    ]);
    if strategy == "domainwise" {
        cmd.args(["--domain-col", "도메인"]);
    }
    cmd.arg("--output-dir").arg(out).stdout(Stdio::null());
    let m = match timing {
        Some(_) => run_measured(&mut cmd).map_err(|e| e.to_string())?,
        None => measure_fresh(&cmd, &out.with_extension("rss"))?,
    };
    if m.code != 0 {
        return Err(format!(
            "embtune gen --strategy {strategy} failed with code {}",
            m.code
        ));
    }
    let inproc: Option<f64> = timing.map(|t| {
        std::fs::read_to_string(t)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(f64::NAN)
    });
    let manifest: serde_json::Value = std::fs::read_to_string(out.join("manifest.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .ok_or("no manifest.json")?;
    let sup: u64 = manifest["files"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter(|e| e["kind"] == "supervised")
                .filter_map(|e| e["rows"].as_u64())
                .sum()
        })
        .unwrap_or(0);
    Ok((m, inproc, sup))
}

fn run_reference(python: &Path, data: &Path, out: &Path, script: &str) -> Result<Measured, String> {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(python);
    cmd.arg("bench/reference/original_gen.py")
        .args(["--script", script, "--data_path"])
        .arg(data);
    cmd.args([
        "--desc_col",
        "설명",
        "--category_col",
        "분류",
        "--positive_cols",
        "중분류",
        "표제어",
        "영문",
    ]);
    match script {
        "basic" => {
            cmd.arg("--output_unsupervised")
                .arg(out.join("u.csv"))
                .arg("--output_supervised")
                .arg(out.join("s.csv"));
        }
        "domainwise" => {
            cmd.args(["--domain_col", "도메인", "--output_dir"])
                .arg(out);
        }
        _ => {
            cmd.arg("--output_dir").arg(out);
        }
    }
    cmd.stdout(Stdio::null());
    let m = run_measured(&mut cmd).map_err(|e| format!("{}: {e}", python.display()))?;
    if m.code != 0 {
        return Err(format!(
            "reference --script {script} failed with code {}",
            m.code
        ));
    }
    Ok(m)
}

fn bench(o: &Opts) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&o.out).map_err(|e| e.to_string())?;
    let timing = o.out.join("timing.txt");
    let mut results: Vec<Row> = Vec::new();

    // Process floor: the same binary doing `embtune list` (exec + libtorch load).
    println!(
        "load average: {} (figures are inflated when other work shares the CPUs)",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let mut floor_cmd = Command::new(&exe);
    floor_cmd
        .arg("--child")
        .arg(&timing)
        .arg("list")
        .stdout(Stdio::null());
    let floor = run_measured(&mut floor_cmd).map_err(|e| e.to_string())?;
    println!(
        "full binary's process floor (embtune list: exec + libtorch load): {:.3} s wall, {:.3} s CPU, {:.1} MiB peak RSS",
        floor.wall_s, floor.cpu_s, floor.peak_rss_mib
    );
    let full_floor = floor;
    let (gen_exe, child_timing, floor) = if o.full {
        (exe.clone(), Some(timing.as_path()), floor)
    } else {
        let lite = lite_binary(o)?;
        let mut c = Command::new(&lite);
        c.arg("list");
        let lf = measure_fresh(&c, &o.out.join("floor.rss"))?;
        println!(
            "torch-free binary ({}) process floor (embtune list): {:.3} s wall, {:.3} s CPU, {:.1} MiB peak RSS; gen is timed with it",
            lite.display(),
            lf.wall_s,
            lf.cpu_s,
            lf.peak_rss_mib
        );
        (lite, None, lf)
    };

    let mut sizes = vec![o.rows];
    if o.big_rows > 0 {
        sizes.push(o.big_rows);
    }
    let mut reference: Vec<(String, Measured)> = Vec::new();
    for &n in &sizes {
        let data = o.out.join(format!("table_{n}.csv"));
        let t = Instant::now();
        let (cats, largest) = synthesize(&data, n).map_err(|e| e.to_string())?;
        let bytes = std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
        println!(
            "\ntable: {n} rows, {cats} categories (largest {largest}), 20 domains, 3 positive columns, {:.1} MiB (made in {:.1} s)",
            bytes as f64 / 1048576.0,
            t.elapsed().as_secs_f64()
        );
        for (strategy, script) in STRATEGIES {
            let out = o.out.join(format!("ours_{strategy}_{n}"));
            // Repeated runs, each after `sync` (so the previous run's files are not being
            // written back to disk during this one): the median is reported.
            let runs = if n == o.rows {
                o.repeat
            } else {
                o.repeat.div_ceil(2)
            }
            .max(1);
            let mut all = Vec::with_capacity(runs);
            for _ in 0..runs {
                let _ = std::fs::remove_dir_all(&out);
                let _ = Command::new("sync").status();
                all.push(run_ours(&gen_exe, &data, &out, strategy, child_timing)?);
            }
            all.sort_by(|a, b| a.0.wall_s.total_cmp(&b.0.wall_s));
            let (min_w, max_w) = (all[0].0.wall_s, all[all.len() - 1].0.wall_s);
            let peak = all.iter().map(|r| r.0.peak_rss_mib).fold(0.0, f64::max);
            let (mut m, inproc, sup) = all[all.len() / 2];
            m.peak_rss_mib = peak;
            let in_gen = inproc
                .map(|t| format!(" ({t:.3} s in gen)"))
                .unwrap_or_default();
            println!(
                "  embtune {strategy:16} {:6.3} s wall (median of {runs}; {min_w:.3}-{max_w:.3}){in_gen}, {:.3} s CPU ({:.3} above floor), {:6.1} MiB peak RSS (+{:.1} above floor), {:>9.0} rows/s, {sup} supervised rows",
                m.wall_s,
                m.cpu_s,
                m.cpu_s - floor.cpu_s,
                m.peak_rss_mib,
                m.peak_rss_mib - floor.peak_rss_mib,
                n as f64 / inproc.unwrap_or(m.wall_s)
            );
            results.push(Row {
                what: format!("embtune {strategy}"),
                rows: n,
                m,
                inproc_s: inproc,
                out_rows: sup,
            });
            let _ = std::fs::remove_dir_all(&out);
            if n == o.rows && o.reference {
                if !o.python.exists() {
                    println!(
                        "  (reference skipped: {} not found; run scripts/ref-env.sh)",
                        o.python.display()
                    );
                    continue;
                }
                let rout = o.out.join(format!("ref_{script}_{n}"));
                match run_reference(&o.python, &data, &rout, script) {
                    Ok(rm) => {
                        println!(
                            "  original {script:15} {:6.3} s wall, {:.3} s CPU, {:6.1} MiB peak RSS, {:>9.0} rows/s  -> embtune {:.0}x faster (wall, process vs process), {:.0}x (CPU)",
                            rm.wall_s,
                            rm.cpu_s,
                            rm.peak_rss_mib,
                            n as f64 / rm.wall_s,
                            rm.wall_s / m.wall_s,
                            rm.cpu_s / m.cpu_s
                        );
                        reference.push((strategy.to_string(), rm));
                        results.push(Row {
                            what: format!("reference {script}"),
                            rows: n,
                            m: rm,
                            inproc_s: None,
                            out_rows: 0,
                        });
                    }
                    Err(e) => println!("  (reference {script} failed: {e})"),
                }
                let _ = std::fs::remove_dir_all(&rout);
            }
        }
    }
    let json: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            serde_json::json!({
                "what": r.what, "rows": r.rows, "wall_s": r.m.wall_s, "in_gen_s": r.inproc_s, "cpu_s": r.m.cpu_s,
                "peak_rss_mib": r.m.peak_rss_mib, "rows_per_s": r.rows as f64 / r.m.wall_s,
                "supervised_rows": r.out_rows,
            })
        })
        .collect();
    let summary = serde_json::json!({
        "binary": if o.full { "full (libtorch)".to_string() } else { gen_exe.display().to_string() },
        "floor": { "wall_s": floor.wall_s, "cpu_s": floor.cpu_s, "peak_rss_mib": floor.peak_rss_mib },
        "full_floor": { "wall_s": full_floor.wall_s, "cpu_s": full_floor.cpu_s, "peak_rss_mib": full_floor.peak_rss_mib },
        "load_average": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "results": json,
    });
    let path = o.out.join("results.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    println!("\nfigures written to {}", path.display());
    Ok(())
}
