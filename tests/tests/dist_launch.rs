//! `embtune train --nproc-per-node N` (cli/src/commands/launch.rs) end to end. The
//! launcher starts its own executable once per rank, so this test binary has its own
//! `main` (`harness = false` in Cargo.toml) and plays every part, chosen by
//! `EMBTUNE_LAUNCH_TEST_ROLE`: `cli` (the embtune command line, as embtune-torch), `launcher`
//! (runs two `rank`s through the launcher), `rank` (rank 1 fails, rank 0 would work on),
//! and, unset, the test runner. It ends with cargo's "test result: ok. N passed; N failed; ..." line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output};
use std::time::{Duration, Instant};

use embtune::commands::launch::{run_ranks, Launch};

const ROLE: &str = "EMBTUNE_LAUNCH_TEST_ROLE";

fn main() -> ExitCode {
    match std::env::var(ROLE).as_deref() {
        Ok("cli") => {
            embtune_plugins::link();
            embtune::run_from(std::env::args_os())
        }
        Ok("launcher") => launcher(),
        Ok("rank") => rank(),
        _ => run_tests(),
    }
}

/// Two ranks of this executable in the `rank` role, stopped 2 s after a failure.
fn launcher() -> ExitCode {
    std::env::set_var(ROLE, "rank");
    let launch = Launch {
        nproc: 2,
        program: std::env::current_exe().unwrap(),
        arg0: "embtune".into(),
        args: Vec::new(),
        grace: Duration::from_secs(2),
    };
    run_ranks(&launch).unwrap_or_else(|e| {
        eprintln!("embtune: error: {e}");
        ExitCode::FAILURE
    })
}

/// Rank 1 prints and fails with status 3; rank 0 prints, then would work for two minutes.
fn rank() -> ExitCode {
    let rank = std::env::var("RANK").unwrap();
    assert_eq!(std::env::var("WORLD_SIZE").unwrap(), "2");
    assert!(
        std::env::var("MASTER_PORT")
            .unwrap()
            .parse::<u16>()
            .unwrap()
            > 0
    );
    // Only rank 0 gets the store's socket.
    assert_eq!(std::env::var_os("EMBTUNE_STORE_FD").is_some(), rank == "0");
    // Rank 1 fails once rank 0 has started and printed (a marker file), so that the
    // launcher's stop of rank 0 is tested whatever the start-up times under load.
    let marker = std::path::PathBuf::from(std::env::var_os("EMBTUNE_LAUNCH_TEST_DIR").unwrap())
        .join("rank0-started");
    if rank == "1" {
        let start = Instant::now();
        while !marker.exists() && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(20));
        }
        println!("rank one on stdout");
        eprintln!("embtune: error: rank one failed on purpose");
        eprintln!("a line after the error");
        return ExitCode::from(3);
    }
    println!("rank zero working");
    std::fs::write(&marker, b"").unwrap();
    std::thread::sleep(Duration::from_secs(120));
    ExitCode::SUCCESS
}

fn this_exe(role: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.env(ROLE, role);
    c
}

fn stderr_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

fn a_failing_rank_stops_the_others_and_its_error_is_printed_last() {
    let tmp = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = this_exe("launcher")
        .env("EMBTUNE_LAUNCH_TEST_DIR", tmp.path())
        .output()
        .unwrap();
    let took = start.elapsed();
    let err = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(3), "{err:?}");
    // Rank 0 was stopped long before its two minutes were up.
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert_eq!(
        err.last().map(String::as_str),
        Some("[rank 1] embtune: error: rank one failed on purpose"),
        "{err:?}"
    );
    assert!(
        err.iter().any(|l| l == "[rank 1] rank one on stdout"),
        "{err:?}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rank zero working"), "{stdout}");
}

fn model() -> PathBuf {
    embtune_tests::default_model()
}

fn data(dir: &Path) -> PathBuf {
    let p = dir.join("train.csv");
    let mut s = String::from("anchor,positive\n");
    for i in 0..8 {
        s.push_str(&format!("question {i},answer {i}\n"));
    }
    std::fs::write(&p, s).unwrap();
    p
}

fn train_args(tmp: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![
        "train".into(),
        "--model".into(),
        model().into(),
        "--data".into(),
        data(tmp).into(),
        "--output".into(),
        tmp.join("out").into(),
        "--device".into(),
        "cpu".into(),
    ];
    v.extend(extra.iter().map(OsString::from));
    v
}

/// `rows` query/answer pairs; every ninth answer is the same text, so the duplicate mask
/// (built over the global batch) has work to do.
fn pairs(dir: &Path, rows: usize) -> PathBuf {
    let p = dir.join(format!("pairs-{rows}.csv"));
    let mut s = String::from("anchor,positive\n");
    for i in 0..rows {
        let answer = if i % 9 == 0 {
            "see the general terms".to_string()
        } else {
            format!("plan {i} pays {} percent after {} months", i % 7, i % 5 + 1)
        };
        s.push_str(&format!("how does plan {i} work,{answer}\n"));
    }
    std::fs::write(&p, s).unwrap();
    p
}

/// `embtune train` arguments for a short deterministic CPU run (dropout 0) on `data`.
fn run_args(data: &Path, out: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![
        "train".into(),
        "--model".into(),
        model().into(),
        "--data".into(),
        data.into(),
        "--output".into(),
        out.into(),
        "--device".into(),
        "cpu".into(),
        "--dropout".into(),
        "0".into(),
        "--lr".into(),
        "1e-4".into(),
        "--log-every".into(),
        "1".into(),
        "--dist-timeout".into(),
        "120".into(),
    ];
    v.extend(extra.iter().map(OsString::from));
    v
}

/// Runs the embtune command line (this executable as `cli`) and checks it succeeded.
fn cli_ok(args: &[OsString]) -> Output {
    let out = this_exe("cli")
        .args(args)
        .env_remove("WORLD_SIZE")
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", stderr_lines(&out));
    out
}

/// A port nobody listens on right now (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `world` ranks started as torchrun starts them: the same command line, each with
/// RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT.
fn env_ranks(args: &[OsString], world: usize) -> Vec<std::process::Child> {
    let port = free_port().to_string();
    (0..world)
        .map(|rank| {
            this_exe("cli")
                .args(args)
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("LOCAL_WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .env("OMP_NUM_THREADS", "1")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

fn weights(dir: &Path) -> Vec<(String, tch::Tensor)> {
    let mut w = tch::Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

/// The largest absolute difference between two folders' weights (same names and shapes),
/// and between each and the model they started from (to show training moved them).
fn max_diff(a: &Path, b: &Path) -> (f64, f64) {
    let (wa, wb, w0) = (weights(a), weights(b), weights(&model()));
    assert_eq!(wa.len(), wb.len());
    let mut diff = 0f64;
    for ((na, ta), (nb, tb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        diff = diff.max(f64::try_from((ta - tb).abs().max()).unwrap());
    }
    let start: std::collections::HashMap<_, _> = w0.into_iter().collect();
    let mut moved = 0f64;
    for (n, t) in &wa {
        if let Some(t0) = start.get(n) {
            moved = moved.max(f64::try_from((t - t0).abs().max()).unwrap());
        }
    }
    (diff, moved)
}

/// The losses metrics.jsonl logged, by step.
fn losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["loss"].as_f64())
        .collect()
}

fn assert_same_run(one: &Path, two: &Path, what: &str) {
    let (diff, moved) = max_diff(&one.join("final"), &two.join("final"));
    eprintln!("{what}: max |w1 - w2| = {diff:.3e} (training moved weights by up to {moved:.3e})");
    assert!(
        moved > 1e-4,
        "{what}: training did not move the weights ({moved})"
    );
    assert!(diff <= 1e-5, "{what}: weights differ by {diff}");
    let (l1, l2) = (losses(one), losses(two));
    assert_eq!(l1.len(), 6, "{what}: {l1:?}");
    assert_eq!(l1.len(), l2.len(), "{what}: {l1:?} vs {l2:?}");
    for (a, b) in l1.iter().zip(&l2) {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs().max(1.0),
            "{what}: losses {l1:?} vs {l2:?}"
        );
    }
}

/// 2 ranks × 8 rows train like 1 process × 16 rows (dropout 0, 6 steps over 37 rows: the
/// third batch of each epoch has 5 rows, split 3 + 2), for mnrl and cached-mnrl, with the
/// launcher; for mnrl also with torchrun's environment.
fn two_ranks_of_b_rows_train_like_one_process_of_2b_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let data = pairs(tmp.path(), 37);
    for (loss, opts) in [
        ("mnrl", vec![]),
        ("cached-mnrl", vec!["--loss-opt", "mini_batch_size=3"]),
    ] {
        let mut common = vec!["--loss", loss, "--max-steps", "6"];
        common.extend(&opts);
        let one = tmp.path().join(format!("{loss}-one"));
        let two = tmp.path().join(format!("{loss}-two"));
        let mut a = common.clone();
        a.extend(["--batch-size", "16"]);
        cli_ok(&run_args(&data, &one, &a));
        let mut a = common.clone();
        a.extend(["--batch-size", "8", "--nproc-per-node", "2"]);
        let out = cli_ok(&run_args(&data, &two, &a));
        // Rank 0 alone prints the report.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.matches("\"steps\": 6").count(), 1, "{stdout}");
        assert_same_run(&one, &two, &format!("{loss}, --nproc-per-node 2"));
        if loss == "mnrl" {
            let env = tmp.path().join("mnrl-env");
            let mut a = common.clone();
            a.extend(["--batch-size", "8"]);
            let ranks = env_ranks(&run_args(&data, &env, &a), 2);
            for r in ranks {
                let o = r.wait_with_output().unwrap();
                assert!(o.status.success(), "{:?}", stderr_lines(&o));
            }
            assert_same_run(&one, &env, "mnrl, torchrun's environment");
        }
    }
}

/// With local negatives, 2 ranks × 8 rows equal 1 process × 8 rows with 2 accumulated
/// micro-batches (the same rows, each loss over its own 8, the mean of the two).
fn local_negatives_match_gradient_accumulation() {
    let tmp = tempfile::tempdir().unwrap();
    let data = pairs(tmp.path(), 32);
    let one = tmp.path().join("accum");
    let two = tmp.path().join("local");
    let common = ["--loss", "mnrl", "--max-steps", "6", "--batch-size", "8"];
    let mut a = common.to_vec();
    a.extend(["--grad-accum", "2"]);
    cli_ok(&run_args(&data, &one, &a));
    let mut a = common.to_vec();
    a.extend(["--local-negatives", "--nproc-per-node", "2"]);
    cli_ok(&run_args(&data, &two, &a));
    assert_same_run(&one, &two, "local negatives vs --grad-accum 2");
}

/// A 2-rank run resumed from its checkpoint (2 ranks again) ends with the weights of the
/// uninterrupted run; resuming it with one process is refused.
fn a_two_rank_run_resumes_from_its_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = pairs(tmp.path(), 37);
    let full = tmp.path().join("full");
    let common = ["--loss", "mnrl", "--max-steps", "6", "--batch-size", "8"];
    let mut a = common.to_vec();
    a.extend(["--eval-every", "3", "--nproc-per-node", "2"]);
    cli_ok(&run_args(&data, &full, &a));
    let ckpt = full.join("checkpoint-3");
    assert!(ckpt.join("trainer_state.json").is_file());
    let resumed = tmp.path().join("resumed");
    let ckpt_s = ckpt.to_str().unwrap();
    let mut a = common.to_vec();
    a.extend([
        "--eval-every",
        "3",
        "--nproc-per-node",
        "2",
        "--resume",
        ckpt_s,
    ]);
    cli_ok(&run_args(&data, &resumed, &a));
    let (diff, _) = max_diff(&full.join("final"), &resumed.join("final"));
    assert!(diff <= 1e-6, "resumed 2-rank run differs by {diff}");
    let mut a = common.to_vec();
    a.extend(["--resume", ckpt_s]);
    let out = this_exe("cli")
        .args(run_args(&data, &tmp.path().join("one"), &a))
        .env_remove("WORLD_SIZE")
        .output()
        .unwrap();
    let err = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(1), "{err:?}");
    assert!(
        err.last()
            .is_some_and(|l| l.contains("checkpoint was written by a run of 2 ranks")
                && l.contains("resume with 2 ranks")),
        "{err:?}"
    );
}

/// One rank killed with SIGKILL mid-run: the other stops with an error within the
/// collective timeout, and writes no final/.
fn a_rank_killed_mid_run_makes_the_other_fail_within_the_timeout() {
    // SIGKILL closes rank 1's connections (Gloo notices at once); SIGSTOP leaves them open,
    // so rank 0 waits out the collective timeout.
    for (signal, timeout, expect) in [
        ("KILL", 20, " by peer"),
        ("STOP", 10, "collective timeout of 10 s"),
    ] {
        rank_stopped_mid_run(signal, timeout, expect);
    }
}

fn rank_stopped_mid_run(signal: &str, timeout: u64, expect: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let data = pairs(tmp.path(), 37);
    let out = tmp.path().join("out");
    let mut args = run_args(
        &data,
        &out,
        &["--loss", "mnrl", "--batch-size", "2", "--epochs", "1000"],
    );
    // run_args' own --dist-timeout, shortened.
    let at = args.iter().position(|a| a == "--dist-timeout").unwrap();
    args[at + 1] = timeout.to_string().into();
    let mut ranks = ranks_under_way(&args, &out, &format!("SIG{signal}"));
    let mut victim = ranks.pop().unwrap();
    let sent = Command::new("kill")
        .args([format!("-{signal}"), victim.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let stopped = Instant::now();
    let survivor = ranks.pop().unwrap();
    let o = survivor.wait_with_output().unwrap();
    let took = stopped.elapsed();
    let _ = victim.kill();
    let _ = victim.wait();
    let err = stderr_lines(&o);
    assert!(!o.status.success(), "{err:?}");
    assert!(
        took < Duration::from_secs(timeout + 15),
        "took {took:?}: {err:?}"
    );
    let last = err.last().cloned().unwrap_or_default();
    eprintln!("rank 1 got SIG{signal}: rank 0 stopped {took:?} later with: {last}");
    assert!(
        last.starts_with("embtune: error: ") && last.contains("distributed"),
        "{err:?}"
    );
    assert!(last.contains(expect), "{err:?}");
    assert!(!out.join("final").exists());
}

/// `embtune encode` and `embtune mine` with 2 ranks (each embeds its share, rank 0 writes)
/// write what one process writes: 11 texts split 6 + 5.
fn encode_and_mine_with_two_ranks_match_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let texts = tmp.path().join("texts.txt");
    let lines: Vec<String> = (0..11)
        .map(|i| format!("text number {i} {}", "long ".repeat(i % 4)))
        .collect();
    std::fs::write(&texts, lines.join("\n") + "\n").unwrap();
    let encode = |out: &Path, extra: &[&str]| {
        let mut a: Vec<OsString> = vec![
            "encode".into(),
            "--model".into(),
            model().into(),
            "--input".into(),
            texts.clone().into(),
            "--output".into(),
            out.into(),
            "--device".into(),
            "cpu".into(),
            "--batch-size".into(),
            "4".into(),
        ];
        a.extend(extra.iter().map(OsString::from));
        cli_ok(&a)
    };
    let one = tmp.path().join("one.npy");
    let two = tmp.path().join("two.npy");
    encode(&one, &[]);
    let out = encode(&two, &["--nproc-per-node", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wrote 11 embeddings of dimension 384") && err.contains("(2 ranks)"),
        "{err}"
    );
    let (a, ra, ca) = embtune_tests::read_npy(&one).unwrap();
    let (b, rb, cb) = embtune_tests::read_npy(&two).unwrap();
    assert_eq!((ra, ca), (11, 384));
    assert_eq!((rb, cb), (ra, ca));
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        diff <= 1e-5,
        "encode: 2 ranks differ from one process by {diff}"
    );

    let data = pairs(tmp.path(), 23);
    let mine = |out: &Path, extra: &[&str]| {
        let mut a: Vec<OsString> = vec![
            "mine".into(),
            "--model".into(),
            model().into(),
            "--data".into(),
            data.clone().into(),
            "--output".into(),
            out.into(),
            "--device".into(),
            "cpu".into(),
            "--num-negatives".into(),
            "2".into(),
            "--quiet".into(),
        ];
        a.extend(extra.iter().map(OsString::from));
        cli_ok(&a)
    };
    let one = tmp.path().join("mined-one.csv");
    let two = tmp.path().join("mined-two.csv");
    mine(&one, &[]);
    mine(&two, &["--nproc-per-node", "2"]);
    let (a, b) = (
        std::fs::read_to_string(&one).unwrap(),
        std::fs::read_to_string(&two).unwrap(),
    );
    assert!(a.lines().count() > 10, "{a}");
    assert_eq!(a, b, "mine: 2 ranks wrote other rows than one process");
}

/// Ctrl-C reaching one rank only (SIGINT to rank 1): the ranks agree to stop after the
/// same step, rank 0 writes that step's checkpoint, and both end with the same
/// "interrupted after step N" error.
fn an_interrupt_on_one_rank_stops_every_rank_after_the_same_step() {
    let tmp = tempfile::tempdir().unwrap();
    let data = pairs(tmp.path(), 37);
    let out = tmp.path().join("out");
    let args = run_args(
        &data,
        &out,
        &["--loss", "mnrl", "--batch-size", "2", "--epochs", "1000"],
    );
    let ranks = ranks_under_way(&args, &out, "interrupt");
    let status = Command::new("kill")
        .args(["-INT", &ranks[1].id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let outs: Vec<Output> = ranks
        .into_iter()
        .map(|r| r.wait_with_output().unwrap())
        .collect();
    let lasts: Vec<String> = outs
        .iter()
        .map(|o| {
            assert_eq!(o.status.code(), Some(1), "{:?}", stderr_lines(o));
            stderr_lines(o).last().cloned().unwrap_or_default()
        })
        .collect();
    let step = |l: &str| -> usize {
        let rest = l
            .split("interrupted after step ")
            .nth(1)
            .unwrap_or_else(|| panic!("{l}"));
        rest.split(';').next().unwrap().parse().unwrap()
    };
    assert_eq!(step(&lasts[0]), step(&lasts[1]), "{lasts:?}");
    let ckpt = out.join(format!("checkpoint-{}", step(&lasts[0])));
    assert!(ckpt.join("trainer_state.json").is_file(), "{lasts:?}");
    assert!(
        lasts[0].contains(&format!("--resume {}", ckpt.display())),
        "{lasts:?}"
    );
}

fn losses_logged(out: &Path) -> usize {
    std::fs::read_to_string(out.join("metrics.jsonl")).map_or(0, |s| s.lines().count())
}

/// Starts 2 ranks of `args` (torchrun's variables) and waits until training is under way
/// (rank 0 logged three steps in `out`); panics with a rank's stderr if one exits before
/// `what` (the signal the test is about to send) or training does not start within 120 s.
fn ranks_under_way(args: &[OsString], out: &Path, what: &str) -> Vec<std::process::Child> {
    let mut ranks = env_ranks(args, 2);
    let started = Instant::now();
    while losses_logged(out) < 3 {
        if let Some(i) = ranks
            .iter_mut()
            .position(|r| r.try_wait().unwrap().is_some())
        {
            let o = ranks.swap_remove(i).wait_with_output().unwrap();
            panic!("a rank exited before the {what}: {:?}", stderr_lines(&o));
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "training never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ranks
}

fn a_rank_with_a_bad_environment_fails_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = this_exe("cli")
        .args(train_args(tmp.path(), &[]))
        .env("WORLD_SIZE", "2")
        .env("RANK", "5")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", "29500")
        .output()
        .unwrap();
    let err = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(1), "{err:?}");
    assert!(
        err.last()
            .is_some_and(|l| l.contains("RANK=5 is not below WORLD_SIZE=2")),
        "{err:?}"
    );
}

fn dropout_out_of_range_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = this_exe("cli")
        .args(train_args(tmp.path(), &["--dropout", "1"]))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is not a probability in [0, 1)"), "{err}");
}

fn run_tests() -> ExitCode {
    let tests: &[(&str, fn())] = &[
        (
            "a_failing_rank_stops_the_others_and_its_error_is_printed_last",
            a_failing_rank_stops_the_others_and_its_error_is_printed_last,
        ),
        (
            "two_ranks_of_b_rows_train_like_one_process_of_2b_rows",
            two_ranks_of_b_rows_train_like_one_process_of_2b_rows,
        ),
        (
            "local_negatives_match_gradient_accumulation",
            local_negatives_match_gradient_accumulation,
        ),
        (
            "a_two_rank_run_resumes_from_its_checkpoint",
            a_two_rank_run_resumes_from_its_checkpoint,
        ),
        (
            "encode_and_mine_with_two_ranks_match_one_process",
            encode_and_mine_with_two_ranks_match_one_process,
        ),
        (
            "an_interrupt_on_one_rank_stops_every_rank_after_the_same_step",
            an_interrupt_on_one_rank_stops_every_rank_after_the_same_step,
        ),
        (
            "a_rank_killed_mid_run_makes_the_other_fail_within_the_timeout",
            a_rank_killed_mid_run_makes_the_other_fail_within_the_timeout,
        ),
        (
            "a_rank_with_a_bad_environment_fails_with_one_line",
            a_rank_with_a_bad_environment_fails_with_one_line,
        ),
        (
            "dropout_out_of_range_is_a_usage_error",
            dropout_out_of_range_is_a_usage_error,
        ),
    ];
    embtune_tests::run_named_tests(tests)
}
