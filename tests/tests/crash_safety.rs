//! Crash safety end to end: `embtune gen` and `embtune train` run as separate processes and
//! are SIGKILLed at seeded random moments (some chosen while a save is in flight). After
//! each kill every visible output is complete: gen's files are byte-identical to an
//! uninterrupted run's, train's `checkpoint-N/`, `best/` and `final/` load, its
//! `metrics.jsonl` parses; only temporary names (`.…tmp…`) may hold partial data. Killed
//! training runs resumed from their newest checkpoint end with the weights of an
//! uninterrupted run. Ctrl-C (SIGINT) while the trainer evaluates or saves lets that work
//! complete and stops after the next step with its checkpoint; a second Ctrl-C during a save
//! leaves that folder under its temporary name only. This binary has its own `main`
//! (`harness = false`): with `EMBTUNE_CRASH_TEST_ROLE=cli` it is the embtune command line,
//! otherwise the test runner (embtune_tests::run_named_tests).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use embtune_core::encoder::folder::is_temporary;
use embtune_core::encoder::SentenceEncoder;
use embtune_core::train::checkpoint::{self, MetricsLog};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};

const ROLE: &str = "EMBTUNE_CRASH_TEST_ROLE";
/// Kills per command (at least).
const KILLS: usize = 20;

fn main() -> ExitCode {
    match std::env::var(ROLE).as_deref() {
        Ok("cli") => {
            embtune_plugins::link();
            embtune::run_from(std::env::args_os())
        }
        _ => run_tests(),
    }
}

fn cli(args: &[OsString]) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.env(ROLE, "cli")
        .env("OMP_NUM_THREADS", "1")
        .env_remove("WORLD_SIZE")
        .args(args);
    c
}

/// Runs the command line to completion; panics with its stderr unless it succeeds.
fn cli_ok(args: &[OsString]) -> Duration {
    let start = Instant::now();
    let out = cli(args).output().unwrap();
    assert!(
        out.status.success(),
        "embtune {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed()
}

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

/// How a killed process ended: true when the SIGKILL landed (false: it had already exited).
fn kill_now(child: &mut std::process::Child) -> bool {
    let _ = child.kill();
    let status = child.wait().unwrap();
    match status.signal() {
        Some(9) => true,
        None => {
            assert!(status.success(), "the run failed on its own: {status}");
            false
        }
        Some(s) => panic!("the run died of signal {s}"),
    }
}

/// Every entry of `dir` split into (temporary names, visible names).
fn entries(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().partition(|n| is_temporary(n))
}

/// Every file of `dir` (name → bytes), temporaries left out; in a manifest (it names the
/// output files) the folder's path reads `OUT`.
fn visible_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let (_, visible) = entries(dir);
    for n in visible {
        let p = dir.join(&n);
        assert!(p.is_file(), "unexpected visible entry {n}");
        let mut bytes = std::fs::read(&p).unwrap();
        if n.ends_with("manifest.json") {
            let text = String::from_utf8(bytes).unwrap();
            bytes = text.replace(&*dir.to_string_lossy(), "OUT").into_bytes();
        }
        out.insert(n, bytes);
    }
    out
}

// ---------------------------------------------------------------------------------------
// gen

/// A products table of `rows` rows in six domains.
fn gen_table(dir: &Path, rows: usize) -> PathBuf {
    let p = dir.join("table.csv");
    let mut s = String::from("설명,분류,대분류,중분류,도메인\n");
    for i in 0..rows {
        s.push_str(&format!(
            "상품 {i}의 설명입니다. 가입 기간은 {}개월이고 금리는 {}.{}%입니다,분류{},대분류{},중분류{},도메인{}\n",
            i % 36 + 1,
            i % 5,
            i % 10,
            i % 37,
            i % 7,
            i % 13,
            i % 6
        ));
    }
    std::fs::write(&p, s).unwrap();
    p
}

/// `embtune gen` into a folder (one file pair and eval split per domain, manifest.json) or,
/// `files`, into the two files of `--output-unsupervised/--output-supervised`.
fn gen_args(table: &Path, out: &Path, files: bool) -> Vec<OsString> {
    let mut v = os(&["gen", "--quiet", "--seed", "5", "--eval-ratio", "0.1"]);
    v.extend(["--data".into(), table.as_os_str().to_owned()]);
    if files {
        v.extend([
            "--output-unsupervised".into(),
            out.join("unsup.csv").into_os_string(),
            "--output-supervised".into(),
            out.join("sup.csv").into_os_string(),
        ]);
    } else {
        v.extend(os(&["--domain-col", "도메인", "--output-dir"]));
        v.push(out.as_os_str().to_owned());
    }
    v
}

fn gen_is_never_seen_half_written() {
    let start = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let table = gen_table(tmp.path(), 60_000);
    let mut reference = Vec::new();
    for files in [false, true] {
        let out = tmp.path().join(format!("ref-{files}"));
        std::fs::create_dir_all(&out).unwrap();
        let took = cli_ok(&gen_args(&table, &out, files));
        let (temps, _) = entries(&out);
        assert!(temps.is_empty(), "a finished run left {temps:?}");
        let want = visible_files(&out);
        assert!(want.len() >= 3, "{:?}", want.keys());
        reference.push((want, took));
    }
    eprintln!(
        "gen: uninterrupted runs take {:?} (folder, {} files) and {:?} (two files)",
        reference[0].1,
        reference[0].0.len(),
        reference[1].1
    );

    let mut rng = ChaCha8Rng::seed_from_u64(0xdead_5eed);
    let (mut kills, mut during_write, mut during_commit, mut attempts) = (0, 0, 0, 0);
    // One folder for all the kills of each variant: files and leftovers accumulate, as they
    // would for a user re-running after each crash.
    while kills < KILLS {
        attempts += 1;
        assert!(attempts < 4 * KILLS, "too few kills landed: {kills}");
        let files = attempts % 4 == 0;
        let (want, took) = &reference[files as usize];
        let out = tmp.path().join(format!("killed-{attempts}"));
        std::fs::create_dir_all(&out).unwrap();
        // Spread over the run, a third of them over its last quarter (the renames).
        let frac = if rng.gen_bool(1.0 / 3.0) {
            rng.gen_range(0.75..1.0)
        } else {
            rng.gen_range(0.0..1.0)
        };
        let mut child = cli(&gen_args(&table, &out, files))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(took.mul_f64(frac));
        let killed = kill_now(&mut child);
        let (temps, visible) = entries(&out);
        let got = visible_files(&out);
        for (name, bytes) in &got {
            let w = want
                .get(name)
                .unwrap_or_else(|| panic!("unexpected visible file {name}"));
            assert!(
                w == bytes,
                "{name} is visible but differs from the uninterrupted run's ({} bytes, expected {}) after a kill at {frac:.2} of the run",
                bytes.len(),
                w.len()
            );
        }
        if !killed {
            assert_eq!(&got, want, "a finished run wrote everything");
            continue;
        }
        kills += 1;
        if !temps.is_empty() {
            during_write += 1;
            if !visible.is_empty() {
                during_commit += 1;
            }
        }
    }
    // A run in a folder full of a killed run's leftovers still writes everything (with
    // --overwrite: the killed run may have got as far as its manifest).
    let out = tmp.path().join(format!("killed-{attempts}"));
    let mut again = gen_args(&table, &out, attempts % 4 == 0);
    again.push("--overwrite".into());
    cli_ok(&again);
    assert_eq!(
        &visible_files(&out),
        &reference[(attempts % 4 == 0) as usize].0
    );
    eprintln!(
        "gen crash safety: {kills} kills, {during_write} while writing, {during_commit} of them between renames, every visible file complete ({:.1} s)",
        start.elapsed().as_secs_f64()
    );
    assert!(during_write > 0, "no kill landed while files were written");
}

// ---------------------------------------------------------------------------------------
// train

fn model() -> PathBuf {
    embtune_tests::default_model()
}

/// 24 query/answer pairs.
fn pairs(dir: &Path) -> PathBuf {
    let p = dir.join("pairs.csv");
    let mut s = String::from("anchor,positive\n");
    for i in 0..24 {
        s.push_str(&format!(
            "how does plan {i} work,plan {i} pays {} percent after {} months\n",
            i % 7,
            i % 5 + 1
        ));
    }
    std::fs::write(&p, s).unwrap();
    p
}

/// The run every test run makes: 12 steps, evaluated (margin probe) and checkpointed every
/// 2, the last two checkpoints kept (so pruning is killed too).
fn train_args(data: &Path, out: &Path) -> Vec<OsString> {
    let mut v = os(&["train", "--device", "cpu"]);
    v.extend(["--model".into(), model().into_os_string()]);
    v.extend(["--data".into(), data.as_os_str().to_owned()]);
    v.extend(["--output".into(), out.as_os_str().to_owned()]);
    v.extend(os(&[
        "--batch-size",
        "4",
        "--max-steps",
        "12",
        "--eval-every",
        "2",
        "--dropout",
        "0",
        "--seed",
        "7",
        "--log-every",
        "1",
        "--lr",
        "1e-4",
        "--save-total-limit",
        "2",
        "--margin-query",
        "how does plan 3 work",
        "--margin-docs",
        "plan 3 pays 3 percent after 4 months",
        "plan 5 pays 5 percent after 1 months",
        "plan 10 pays 3 percent after 1 months",
    ]));
    v
}

fn weights(dir: &Path) -> Vec<(String, Tensor)> {
    let mut w = Tensor::read_safetensors(dir.join("model.safetensors"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

fn max_diff(a: &Path, b: &Path) -> f64 {
    let (a, b) = (weights(a), weights(b));
    assert_eq!(
        a.iter().map(|x| &x.0).collect::<Vec<_>>(),
        b.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    a.iter()
        .zip(&b)
        .map(|((_, x), (_, y))| f64::try_from((x - y).abs().max()).unwrap())
        .fold(0.0, f64::max)
}

/// Checks every visible entry of a (killed) training output folder is complete.
fn check_train_output(out: &Path) {
    let (_, visible) = entries(out);
    for name in visible {
        let p = out.join(&name);
        let folder = |p: &Path| {
            SentenceEncoder::load(p, Device::Cpu)
                .unwrap_or_else(|e| panic!("{name} is visible but does not load: {e}"));
            assert!(p.join("README.md").is_file(), "{name} has no model card");
        };
        match name.as_str() {
            "best" | "final" => folder(&p),
            "metrics.jsonl" => {
                MetricsLog::read(&p).unwrap_or_else(|e| panic!("{e}"));
            }
            "training.png" => {
                let png = std::fs::read(&p).unwrap();
                assert!(
                    png.ends_with(&[b'I', b'E', b'N', b'D', 0xae, 0x42, 0x60, 0x82]),
                    "training.png is cut short"
                );
            }
            n if n.starts_with("checkpoint-") => {
                folder(&p);
                let state = checkpoint::read_state(&p).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(format!("checkpoint-{}", state.step), n);
                let moments = Tensor::read_safetensors(p.join(checkpoint::OPTIMIZER_FILE))
                    .unwrap_or_else(|e| panic!("{n}: optimizer moments: {e}"));
                assert!(!moments.is_empty(), "{n}: no optimizer moments");
            }
            n => panic!("unexpected visible entry {n} in a training output folder"),
        }
    }
}

/// The steps of a metrics log, in order.
fn logged_steps(out: &Path) -> Vec<usize> {
    MetricsLog::read(&out.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|l| l.step)
        .collect()
}

/// Removes a run's output folder (absent when the run was killed before creating it).
fn remove(out: &Path) {
    match std::fs::remove_dir_all(out) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{}: {e}", out.display()),
        _ => {}
    }
}

/// Resumes the killed run in `out` from its newest complete checkpoint (from scratch in the
/// same folder when it has none) and checks it ends exactly as `reference` did: final/ and
/// best/ weights, the logged steps. Returns the largest weight difference and whether it
/// started from scratch.
fn resume_and_compare(data: &Path, out: &Path, reference: &Path) -> (f64, bool) {
    let mut args = train_args(data, out);
    let newest = checkpoint::list_checkpoints(out).pop();
    match &newest {
        Some((_, dir)) => args.extend(["--resume".into(), dir.clone().into_os_string()]),
        // No checkpoint yet: the killed run's log is there, so start again over it.
        None => args.push("--overwrite".into()),
    }
    cli_ok(&args);
    let (temps, _) = entries(out);
    assert!(temps.is_empty(), "the resumed run left {temps:?}");
    check_train_output(out);
    let d = max_diff(&reference.join("final"), &out.join("final"));
    let what = match &newest {
        Some((n, _)) => format!("resumed from checkpoint-{n}"),
        None => "restarted".into(),
    };
    assert!(
        d <= 1e-6,
        "{what}: final/ differs from the uninterrupted run's by {d}"
    );
    let b = max_diff(&reference.join("best"), &out.join("best"));
    assert!(b <= 1e-6, "{what}: best/ differs by {b}");
    assert_eq!(
        logged_steps(out),
        logged_steps(reference),
        "{what}: the log repeats or misses steps"
    );
    (d.max(b), newest.is_none())
}

fn train_is_never_seen_half_written_and_resumes_exactly() {
    let start = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let data = pairs(tmp.path());
    let reference = tmp.path().join("reference");
    let took = cli_ok(&train_args(&data, &reference));
    let (temps, _) = entries(&reference);
    assert!(temps.is_empty(), "a finished run left {temps:?}");
    check_train_output(&reference);
    assert_eq!(
        checkpoint::list_checkpoints(&reference)
            .iter()
            .map(|c| c.0)
            .collect::<Vec<_>>(),
        [8, 10],
        "--save-total-limit 2 keeps the last two checkpoints"
    );
    assert!(
        reference.join("best").is_dir() && reference.join("final").is_dir(),
        "the reference run saved best/ and final/"
    );
    eprintln!("train: the uninterrupted run takes {took:?}");

    let mut rng = ChaCha8Rng::seed_from_u64(0x7ea1_c0de);
    // Resumes run right after their kill (each killed folder is removed once checked, to
    // bound the disk used): every kill that landed during a save and every fourth other
    // kill, at least three, more while the time budget allows.
    let budget = Duration::from_secs(170);
    let (mut kills, mut during_save, mut attempts) = (0, 0, 0);
    let (mut resumed, mut from_scratch, mut worst) = (0, 0, 0f64);
    let mut checking = Duration::ZERO;
    while kills < KILLS {
        attempts += 1;
        assert!(attempts < 3 * KILLS, "too few kills landed: {kills}");
        let out = tmp.path().join(format!("killed-{attempts}"));
        let mut child = cli(&train_args(&data, &out))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if attempts % 2 == 1 {
            // At a moment drawn over the whole run.
            std::thread::sleep(took.mul_f64(rng.gen_range(0.05..1.0)));
        } else {
            // While a save is in flight: once the n-th temporary name has appeared, after a
            // further 0-60 ms.
            let nth = rng.gen_range(1..=9);
            let extra = Duration::from_millis(rng.gen_range(0..60));
            let mut seen = BTreeSet::new();
            while seen.len() < nth && child.try_wait().unwrap().is_none() {
                seen.extend(entries(&out).0);
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(extra);
        }
        if !kill_now(&mut child) {
            remove(&out);
            continue; // finished before the kill
        }
        kills += 1;
        let (temps, _) = entries(&out);
        let in_save = !temps.is_empty();
        during_save += in_save as usize;
        let t = Instant::now();
        check_train_output(&out);
        checking += t.elapsed();
        let wanted = in_save || kills % 4 == 0;
        let left = KILLS - kills;
        let affordable = start.elapsed() + took.mul_f64(1.0 + 0.6 * left as f64) < budget;
        if wanted && (resumed < 3 || affordable) {
            let (d, scratch) = resume_and_compare(&data, &out, &reference);
            worst = worst.max(d);
            resumed += 1;
            from_scratch += scratch as usize;
        }
        remove(&out);
    }
    assert!(
        during_save >= 3,
        "only {during_save} kills landed during a save"
    );
    assert!(resumed >= 3, "only {resumed} killed runs were resumed");
    eprintln!(
        "train crash safety: {kills} kills, {during_save} during a save, every visible folder complete ({:.1} s checking them); {resumed} resumed ({from_scratch} from scratch), final/ and best/ weights within {worst:e} of the uninterrupted run's ({:.1} s)",
        checking.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
}

/// Runs training in `out` and sends SIGINT as soon as its stderr shows `line` (a phase the
/// trainer announces: "step 4: evaluating...", "step 6: saving checkpoint-6/..."); with
/// `second`, a second SIGINT once a temporary name starting with it has appeared in `out`
/// (the save is writing that folder). Returns the exit status and the whole stderr.
fn interrupt_at(
    data: &Path,
    out: &Path,
    line: &str,
    second: Option<&str>,
) -> (std::process::ExitStatus, String) {
    use std::io::BufRead;
    let mut child = cli(&train_args(data, out))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid, which has not been waited for yet.
    let signal = |sig| assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({sig})");
    let int = || signal(libc::SIGINT);
    let mut stderr = String::new();
    let mut sent = false;
    for l in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let l = l.unwrap();
        if !sent && l.contains(line) {
            int();
            if let Some(prefix) = second {
                let start = Instant::now();
                while !entries(out).0.iter().any(|n| n.starts_with(prefix)) {
                    assert!(
                        start.elapsed() < Duration::from_secs(20),
                        "no temporary {prefix}* appeared"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
                // Frozen mid-save while the second signal is queued, so that it is handled
                // as soon as the run continues rather than after a scheduling delay here.
                signal(libc::SIGSTOP);
                int();
                signal(libc::SIGCONT);
            }
            sent = true;
        }
        stderr.push_str(&l);
        stderr.push('\n');
    }
    let status = child.wait().unwrap();
    assert!(sent, "the run never printed {line:?}:\n{stderr}");
    (status, stderr)
}

/// Ctrl-C while rank 0 evaluates or saves: the evaluation or save completes, the run stops
/// after the next step with that step's checkpoint (nothing half-written, no final/), and
/// the resumed run ends with the uninterrupted run's weights. A second Ctrl-C during a save
/// exits at once (130) and leaves only temporary names partial. Ctrl-C during the final
/// save lets the run finish.
fn ctrl_c_during_an_evaluation_or_a_save_completes_it_then_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let data = pairs(tmp.path());
    let reference = tmp.path().join("reference");
    cli_ok(&train_args(&data, &reference));

    for (i, (line, stops_at)) in [
        ("step 4: evaluating...", 5),
        ("step 6: saving checkpoint-6/...", 7),
        ("step 2: saving best/...", 3),
    ]
    .into_iter()
    .enumerate()
    {
        let out = tmp.path().join(format!("interrupted-{i}"));
        let (status, err) = interrupt_at(&data, &out, line, None);
        assert_eq!(status.code(), Some(1), "{line}: {err}");
        let last = err.lines().last().unwrap_or("");
        let expected = format!(
            "interrupted after step {stops_at}; checkpoint written to {}",
            out.join(format!("checkpoint-{stops_at}")).display()
        );
        assert!(
            last.contains(&expected),
            "{line}: the last line is {last:?}"
        );
        assert!(err.contains("interrupt received"), "{line}: {err}");
        let (temps, visible) = entries(&out);
        assert!(temps.is_empty(), "{line}: left {temps:?}");
        assert!(
            !visible.contains(&"final".to_string()),
            "{line}: {visible:?}"
        );
        check_train_output(&out);
        assert_eq!(
            logged_steps(&out).last(),
            Some(&stops_at),
            "{line}: the log ends at the interrupted step"
        );
        let newest = checkpoint::list_checkpoints(&out).pop().unwrap();
        assert_eq!(newest.0, stops_at, "{line}");
        resume_and_compare(&data, &out, &reference);
        eprintln!("ctrl-c at {line:?}: stopped after step {stops_at}, resumed to the same weights");
    }

    // Twice during a save: out at once, nothing visible half-written; the resume (which
    // clears stale temporaries) still ends with the same weights. Whether the second signal
    // arrives before the save's rename is a race with the save (tens of ms); every attempt
    // must leave complete visible folders, and one of at most five must land inside it.
    let mut landed = None;
    for attempt in 0..5 {
        let out = tmp.path().join(format!("twice-{attempt}"));
        let (status, err) = interrupt_at(
            &data,
            &out,
            "step 8: saving checkpoint-8/...",
            Some(".checkpoint-8.tmp-"),
        );
        assert_eq!(status.code(), Some(130), "{err}");
        assert!(
            err.contains("second interrupt, exiting without a checkpoint"),
            "{err}"
        );
        let (temps, visible) = entries(&out);
        check_train_output(&out);
        let cut = temps.iter().any(|t| t.starts_with(".checkpoint-8.tmp-"));
        if cut {
            assert!(
                !visible.contains(&"checkpoint-8".to_string()),
                "checkpoint-8 is both visible and under a temporary name: {visible:?}"
            );
            resume_and_compare(&data, &out, &reference);
            landed = Some((attempt + 1, temps.len()));
            break;
        }
        eprintln!("ctrl-c twice: attempt {attempt}: the save of checkpoint-8 had finished");
    }
    let (attempts, left) = landed.expect("no second Ctrl-C landed inside the save in 5 attempts");
    eprintln!(
        "ctrl-c twice while saving checkpoint-8/ (attempt {attempts}): exit 130, checkpoint-8 only under its temporary name, visible folders complete, {left} temporary name(s) left until the resume"
    );

    // During the final save: the run completes.
    let out = tmp.path().join("final");
    let (status, err) = interrupt_at(&data, &out, "saving final/...", None);
    assert!(status.success(), "{err}");
    check_train_output(&out);
    let d = max_diff(&reference.join("final"), &out.join("final"));
    assert!(d <= 1e-6, "final/ differs by {d}");
}

fn run_tests() -> ExitCode {
    let tests: &[(&str, fn())] = &[
        (
            "gen_is_never_seen_half_written",
            gen_is_never_seen_half_written,
        ),
        (
            "train_is_never_seen_half_written_and_resumes_exactly",
            train_is_never_seen_half_written_and_resumes_exactly,
        ),
        (
            "ctrl_c_during_an_evaluation_or_a_save_completes_it_then_stops",
            ctrl_c_during_an_evaluation_or_a_save_completes_it_then_stops,
        ),
    ];
    embtune_tests::run_named_tests(tests)
}
