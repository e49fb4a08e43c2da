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
    if rank == "1" {
        println!("rank one on stdout");
        eprintln!("embtune: error: rank one failed on purpose");
        eprintln!("a line after the error");
        return ExitCode::from(3);
    }
    println!("rank zero working");
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
    let start = Instant::now();
    let out = this_exe("launcher").output().unwrap();
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

fn two_ranks_of_train_join_and_agree_on_the_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let out = this_exe("cli")
        .args(train_args(
            tmp.path(),
            &["--nproc-per-node", "2", "--dist-timeout", "60"],
        ))
        .env_remove("WORLD_SIZE")
        .output()
        .unwrap();
    let err = stderr_lines(&out);
    // The trainer does not run data-parallel steps yet: both ranks joined over Gloo,
    // checked their configuration, and stopped with the same error.
    assert_eq!(out.status.code(), Some(1), "{err:?}");
    let last = err.last().cloned().unwrap_or_default();
    assert!(
        last.contains("embtune: error: data-parallel training is not available in the trainer yet: the 2 ranks joined (gloo) and agree on flags and data"),
        "{err:?}"
    );
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
            "two_ranks_of_train_join_and_agree_on_the_configuration",
            two_ranks_of_train_join_and_agree_on_the_configuration,
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
    // Arguments that are not flags (nor a libtest flag's value) filter the tests by name,
    // as libtest's do.
    let mut filters: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if [
            "--test-threads",
            "--skip",
            "--format",
            "--color",
            "--logfile",
            "-Z",
        ]
        .contains(&a.as_str())
        {
            args.next();
        } else if !a.starts_with('-') {
            filters.push(a);
        }
    }
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in tests {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let ok = std::panic::catch_unwind(test).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    // The line cargo's own harness prints, so scripts/test-summary.sh counts these too.
    println!(
        "test result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out",
        if failed == 0 { "ok" } else { "FAILED" }
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
