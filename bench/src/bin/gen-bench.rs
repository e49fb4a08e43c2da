//! `gen-bench`: times `embtune gen` end to end (read, generate, write) for each built-in
//! strategy on a synthetic table of the original's shape, on the binary the README builds
//! (`target/release/embtune` from `make build`: the torch-free front end), and its
//! `embtune list` start-up; then runs the Python re-implementation of the original scripts
//! (bench/reference/original_gen.py) on the same table for the side-by-side ratio.
//!
//! Run (after `make build`): `cargo run --release -p embtune-bench --bin gen-bench`
//! Options: `--rows N` (default 75000), `--big-rows N` (default 1000000; 0 skips),
//! `--no-reference`, `--out DIR` (default bench-out/gen), `--python PATH` (default
//! .venv-ref/bin/python, or $EMBTUNE_REF_PYTHON), `--embtune PATH` (the binary to time;
//! default target/release/embtune; `target/release/embtune-torch` times the libtorch
//! build for comparison), `--repeat N` (measurements per strategy, median reported),
//! `--list-repeat N` (runs of `embtune list`), `--no-samplers` (skip the `--sampler bm25`
//! runs), `--samplers-only` (only those).
//!
//! Besides the strategies (with the default sampler), `baseline` is timed with the samplers
//! of `SAMPLER_RUNS`: `--sampler bm25` at both sizes, `scope=part` at `--rows` only
//! (target, issue 12: 75,000 rows in 5 s).
//!
//! Each figure is one child process: wall time from spawn to exit, CPU and peak RSS from
//! `wait4`. Linux hands a process's peak RSS on to a child through `exec` (this binary
//! maps libtorch for its sibling encode-bench), so the child runs under `/usr/bin/time -f
//! %M`, a small process whose fork starts with fresh accounting, and its peak RSS is read
//! from there; wall and CPU still come from `wait4`. Without /usr/bin/time the RSS printed
//! is `max(this process, child)` and says so. Targets (issue 10): 75,000 rows in 0.2 s and
//! 60 MB per strategy; `embtune list` in 20 ms.

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

/// Samplers timed under `baseline` besides the default: (label, `--sampler-opt`s, also at
/// `--big-rows`). `scope=part` ranks every anchor against the whole part: its cost grows
/// with rows squared over the vocabulary, minutes at 1M rows of this table's 1,600 bigrams.
const SAMPLER_RUNS: [(&str, &[&str], bool); 2] = [
    ("bm25", &[], true),
    ("bm25 scope=part", &["scope=part"], false),
];

/// Issue 12's target for `--sampler bm25` at 75,000 rows, wall seconds.
const TARGET_BM25_S: f64 = 5.0;

/// Issue 10's targets at 75,000 rows, per strategy: wall seconds and peak RSS in MB.
const TARGET_WALL_S: f64 = 0.2;
const TARGET_RSS_MB: f64 = 60.0;
/// `embtune list` start-up target, seconds.
const TARGET_LIST_S: f64 = 0.020;

/// The binary the README builds (`make build`).
const README_BINARY: &str = "target/release/embtune";

fn main() -> ExitCode {
    match bench(&Opts::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
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
    /// The binary to time.
    #[arg(long, default_value = README_BINARY)]
    embtune: PathBuf,
    /// Measurements per strategy at --rows (half as many at --big-rows); the median is
    /// reported.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Runs of `embtune list`; the median is reported.
    #[arg(long, default_value_t = 20)]
    list_repeat: usize,
    /// Skip the samplers of SAMPLER_RUNS (`--sampler bm25`).
    #[arg(long = "no-samplers", action = clap::ArgAction::SetFalse)]
    samplers: bool,
    /// Time only the samplers of SAMPLER_RUNS (no strategies, no reference).
    #[arg(long)]
    samplers_only: bool,
}

/// Runs `cmd` (stdout discarded) as one measured child: wall and CPU from `wait4`, peak
/// RSS from `/usr/bin/time` (see the module doc) when it exists.
fn measure(cmd: &Command, rss_file: &Path) -> Result<Measured, String> {
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

/// Whether `bin` maps libtorch when it starts (`ldd`); None when ldd is unavailable.
fn links_libtorch(bin: &Path) -> Option<bool> {
    let out = Command::new("ldd").arg(bin).output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).contains("libtorch"))
}

/// `within` or `OVER` against a target.
fn verdict(value: f64, target: f64) -> &'static str {
    if value <= target {
        "within"
    } else {
        "OVER"
    }
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
    out_rows: u64,
}

/// Runs `embtune gen` once; returns the measurement and the supervised rows written.
fn run_ours(
    exe: &Path,
    data: &Path,
    out: &Path,
    strategy: &str,
    extra: &[&str],
) -> Result<(Measured, u64), String> {
    let _ = std::fs::remove_dir_all(out);
    let mut cmd = Command::new(exe);
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
    cmd.args(extra);
    cmd.arg("--output-dir").arg(out);
    let m = measure(&cmd, &out.with_extension("rss"))?;
    if m.code != 0 {
        return Err(format!(
            "embtune gen --strategy {strategy} failed with code {}",
            m.code
        ));
    }
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
    Ok((m, sup))
}

/// `runs` runs of [`run_ours`], each after `sync`: the median run (its peak RSS replaced
/// by the largest of all runs), its supervised rows, and the fastest and slowest wall times.
fn time_gen(
    exe: &Path,
    data: &Path,
    out: &Path,
    strategy: &str,
    extra: &[&str],
    runs: usize,
) -> Result<(Measured, u64, f64, f64), String> {
    let mut all = Vec::with_capacity(runs);
    for _ in 0..runs {
        let _ = std::fs::remove_dir_all(out);
        let _ = Command::new("sync").status();
        all.push(run_ours(exe, data, out, strategy, extra)?);
    }
    all.sort_by(|a, b| a.0.wall_s.total_cmp(&b.0.wall_s));
    let (min_w, max_w) = (all[0].0.wall_s, all[all.len() - 1].0.wall_s);
    let peak = all.iter().map(|r| r.0.peak_rss_mib).fold(0.0, f64::max);
    let (mut m, sup) = all[all.len() / 2];
    m.peak_rss_mib = peak;
    Ok((m, sup, min_w, max_w))
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
    std::fs::create_dir_all(&o.out).map_err(|e| e.to_string())?;
    let exe = &o.embtune;
    if !exe.is_file() {
        return Err(format!(
            "{} not found: build the README's binaries first (`make build`), or pass --embtune PATH",
            exe.display()
        ));
    }
    let mut results: Vec<Row> = Vec::new();
    println!(
        "load average: {} (figures are inflated when other work shares the CPUs)",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let libtorch = links_libtorch(exe);
    println!(
        "binary: {} (links libtorch: {})",
        exe.display(),
        match libtorch {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown, no ldd",
        }
    );
    if !Path::new("/usr/bin/time").exists() {
        println!("(no /usr/bin/time: peak RSS below is max(gen-bench, child), see the module doc)");
    }

    // Start-up: `embtune list` (no table, no files): the process floor of every command.
    let mut list_cmd = Command::new(exe);
    list_cmd.arg("list");
    let mut lists = Vec::with_capacity(o.list_repeat.max(1));
    for _ in 0..o.list_repeat.max(1) {
        let m = measure(&list_cmd, &o.out.join("list.rss"))?;
        if m.code != 0 {
            return Err(format!(
                "{} list failed with code {}",
                exe.display(),
                m.code
            ));
        }
        lists.push(m);
    }
    lists.sort_by(|a, b| a.wall_s.total_cmp(&b.wall_s));
    let floor = lists[lists.len() / 2];
    println!(
        "embtune list start-up: {:.1} ms wall (median of {}; {:.1}-{:.1}), {:.1} ms CPU, {:.1} MiB peak RSS; target {:.0} ms: {}",
        floor.wall_s * 1e3,
        lists.len(),
        lists[0].wall_s * 1e3,
        lists[lists.len() - 1].wall_s * 1e3,
        floor.cpu_s * 1e3,
        floor.peak_rss_mib,
        TARGET_LIST_S * 1e3,
        verdict(floor.wall_s, TARGET_LIST_S)
    );

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
        // Repeated runs, each after `sync` (so the previous run's files are not being
        // written back to disk during this one): the median is reported.
        let runs = if n == o.rows {
            o.repeat
        } else {
            o.repeat.div_ceil(2)
        }
        .max(1);
        let strategies: &[(&str, &str)] = if o.samplers_only { &[] } else { &STRATEGIES };
        for &(strategy, script) in strategies {
            let out = o.out.join(format!("ours_{strategy}_{n}"));
            let (m, sup, min_w, max_w) = time_gen(exe, &data, &out, strategy, &[], runs)?;
            let targets = if n == 75_000 {
                let mb = m.peak_rss_mib * 1.048576;
                format!(
                    "; targets {TARGET_WALL_S} s: {}, {TARGET_RSS_MB:.0} MB: {} ({mb:.1} MB)",
                    verdict(m.wall_s, TARGET_WALL_S),
                    verdict(mb, TARGET_RSS_MB)
                )
            } else {
                String::new()
            };
            println!(
                "  embtune {strategy:16} {:6.3} s wall (median of {runs}; {min_w:.3}-{max_w:.3}), {:.3} s CPU, {:6.1} MiB peak RSS (max of the runs), {:>9.0} rows/s, {sup} supervised rows{targets}",
                m.wall_s,
                m.cpu_s,
                m.peak_rss_mib,
                n as f64 / m.wall_s
            );
            results.push(Row {
                what: format!("embtune {strategy}"),
                rows: n,
                m,
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
                            out_rows: 0,
                        });
                    }
                    Err(e) => println!("  (reference {script} failed: {e})"),
                }
                let _ = std::fs::remove_dir_all(&rout);
            }
        }
        // Samplers other than the default, under `baseline` (one draw per positive cell).
        let sampler_runs: &[(&str, &[&str], bool)] = if o.samplers { &SAMPLER_RUNS } else { &[] };
        for &(label, opts, big) in sampler_runs {
            if n != o.rows && !big {
                println!("  embtune baseline + {label:24} skipped at {n} rows (see SAMPLER_RUNS)");
                continue;
            }
            let mut extra = vec!["--sampler", "bm25"];
            for opt in opts {
                extra.extend(["--sampler-opt", opt]);
            }
            let out = o.out.join(format!("ours_sampler_{n}"));
            let (m, sup, min_w, max_w) = time_gen(exe, &data, &out, "baseline", &extra, runs)?;
            let target = if n == 75_000 {
                format!(
                    "; target {TARGET_BM25_S} s: {}",
                    verdict(m.wall_s, TARGET_BM25_S)
                )
            } else {
                String::new()
            };
            println!(
                "  embtune baseline + {label:24} {:6.3} s wall (median of {runs}; {min_w:.3}-{max_w:.3}), {:.3} s CPU, {:6.1} MiB peak RSS (max of the runs), {sup} supervised rows{target}",
                m.wall_s, m.cpu_s, m.peak_rss_mib
            );
            results.push(Row {
                what: format!("embtune baseline --sampler {label}"),
                rows: n,
                m,
                out_rows: sup,
            });
            let _ = std::fs::remove_dir_all(&out);
        }
    }
    let json: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            serde_json::json!({
                "what": r.what, "rows": r.rows, "wall_s": r.m.wall_s, "cpu_s": r.m.cpu_s,
                "peak_rss_mib": r.m.peak_rss_mib, "rows_per_s": r.rows as f64 / r.m.wall_s,
                "supervised_rows": r.out_rows,
            })
        })
        .collect();
    let summary = serde_json::json!({
        "binary": exe.display().to_string(),
        "links_libtorch": libtorch,
        "list": { "wall_s": floor.wall_s, "cpu_s": floor.cpu_s, "peak_rss_mib": floor.peak_rss_mib, "runs": lists.len() },
        "targets": { "wall_s_75k": TARGET_WALL_S, "peak_rss_mb_75k": TARGET_RSS_MB, "list_s": TARGET_LIST_S },
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
