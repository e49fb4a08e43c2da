//! `embtune train --nproc-per-node N`: one host, N processes, one rank each (what
//! `torchrun --standalone --nproc-per-node N` does for a Python script). The launcher runs
//! this same program N times with the command line minus `--nproc-per-node`, and with
//! torchrun's variables (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `LOCAL_WORLD_SIZE`,
//! `MASTER_ADDR=127.0.0.1`, `MASTER_PORT`) set, which every rank reads through
//! [`embtune_core::dist::DistEnv`]. The launcher binds the store's port itself and hands
//! the listening socket to rank 0 ([`embtune_core::dist::STORE_FD_VAR`]): no other process
//! can take the port in between.
//!
//! Output: rank 0's stdout is the launcher's (the JSON summary); rank 0's stderr is copied
//! to the launcher's stderr line by line; the other ranks' stdout and stderr go to the
//! launcher's stderr with a `[rank k] ` prefix. When a rank exits with a failure, the
//! launcher stops copying the others' output, stops them (SIGTERM, then SIGKILL after a
//! grace period), prints the failed rank's error line last and exits with its status.
//! Ctrl-C (SIGINT, SIGTERM, SIGHUP) reaching the launcher is passed to every rank as a
//! SIGINT: the first lets them finish the step and write a checkpoint, a second stops
//! them. The ranks run in their own process group (so a terminal's Ctrl-C reaches them
//! once, through the launcher) and die with the launcher (Linux's parent-death signal).
//! A rank's intra-op threads default to the host's cores divided by N (`OMP_NUM_THREADS`,
//! when not set), as torchrun's one-thread default would starve a CPU run.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use embtune_core::dist::{DistEnv, STORE_FD_VAR};

/// The flag the launcher consumes: the ranks never see it.
pub const NPROC_FLAG: &str = "--nproc-per-node";

/// How long stopped ranks get between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// One launch: `program` started `nproc` times as `arg0 args...`.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Processes (ranks) to start, at least 1.
    pub nproc: usize,
    /// The executable each rank runs.
    pub program: PathBuf,
    /// `argv[0]` of each rank.
    pub arg0: OsString,
    /// The arguments of each rank after `argv[0]`.
    pub args: Vec<OsString>,
    /// Time between SIGTERM and SIGKILL when the ranks are stopped after a failure.
    pub grace: Duration,
}

/// Runs `embtune train ... --nproc-per-node N` (`argv`, the whole command line) as N ranks
/// of this same executable; returns the exit code to leave with (0 when every rank
/// succeeded, else the first failed rank's).
pub fn launch_train(nproc: usize, argv: &[OsString]) -> anyhow::Result<ExitCode> {
    let program = std::env::current_exe()
        .context("--nproc-per-node: cannot find this program's executable to start the ranks")?;
    let arg0 = argv.first().cloned().unwrap_or_else(|| "embtune".into());
    let args = strip_nproc_per_node(argv.get(1..).unwrap_or_default());
    run_ranks(&Launch {
        nproc,
        program,
        arg0,
        args,
        grace: DEFAULT_GRACE,
    })
}

/// `args` without `--nproc-per-node N` / `--nproc-per-node=N`.
pub fn strip_nproc_per_node(args: &[OsString]) -> Vec<OsString> {
    let with_value = format!("{NPROC_FLAG}=");
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == NPROC_FLAG {
            it.next();
            continue;
        }
        if a.to_str().is_some_and(|s| s.starts_with(&with_value)) {
            continue;
        }
        if a == "--" {
            // Everything after `--` is a value, not a flag.
            out.push(a.clone());
            out.extend(it.cloned());
            break;
        }
        out.push(a.clone());
    }
    out
}

/// What the rank copiers print and remember, behind one lock so lines never interleave.
struct Printer {
    /// After a failure: the only rank whose lines are still copied.
    only: Option<usize>,
    /// The last line written to stderr, with its rank.
    last: Option<(usize, String)>,
    /// Per rank: its last error line (`embtune: error: ...`, else its last non-empty
    /// stderr line).
    error_line: Vec<Option<String>>,
}

impl Printer {
    fn prefix(rank: usize) -> String {
        if rank == 0 {
            String::new()
        } else {
            format!("[rank {rank}] ")
        }
    }

    /// Copies `line` of `rank` to stderr unless the copying has stopped for it.
    fn print(&mut self, rank: usize, line: &str, from_stderr: bool) {
        if from_stderr && !line.trim().is_empty() {
            let is_error = line.starts_with("embtune: error:");
            let slot = &mut self.error_line[rank];
            let keep_error = slot
                .as_deref()
                .is_some_and(|s| s.starts_with("embtune: error:"));
            if is_error || !keep_error {
                *slot = Some(line.to_string());
            }
        }
        if self.only.is_some_and(|r| r != rank) {
            return;
        }
        let mut err = std::io::stderr().lock();
        // A closed stderr must not stop the launcher from waiting for its ranks.
        let _ = writeln!(err, "{}{line}", Self::prefix(rank));
        self.last = Some((rank, line.to_string()));
    }
}

/// Copies the lines of `from` (a rank's pipe) through `printer` until end of file.
fn copy_lines(
    from: impl Read + Send + 'static,
    rank: usize,
    from_stderr: bool,
    printer: Arc<Mutex<Printer>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']);
                    printer.lock().unwrap_or_else(|e| e.into_inner()).print(
                        rank,
                        line,
                        from_stderr,
                    );
                }
            }
        }
    })
}

fn signal(pid: u32, sig: libc::c_int) {
    // Safety: kill(2) on a child of this process that has not been reaped yet.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// The exit code of a process that ended with `status`: its code, or 128 + the signal.
fn exit_code(status: &ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c.clamp(0, 255) as u8,
        (None, Some(s)) => (128 + s).clamp(0, 255) as u8,
        _ => 1,
    }
}

/// How a rank that printed no error line ended.
fn describe(rank: usize, status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => {
            format!("embtune: error: rank {rank} exited with status {c} without an error message")
        }
        (None, Some(s)) => format!("embtune: error: rank {rank} was killed by signal {s}"),
        _ => format!("embtune: error: rank {rank} failed"),
    }
}

/// Starts the ranks of `launch`, copies their output, waits for them all and returns the
/// exit code to leave with: success when every rank succeeded, else the status of the
/// first rank that failed (the others are then stopped).
pub fn run_ranks(launch: &Launch) -> anyhow::Result<ExitCode> {
    let n = launch.nproc;
    anyhow::ensure!(n >= 1, "{NPROC_FLAG} must be at least 1");
    // The store's port: bound here, handed to rank 0 as a listening socket.
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .context("--nproc-per-node: cannot bind a port on 127.0.0.1 for the rendezvous")?;
    let port = listener.local_addr()?.port();
    let store_fd = listener.as_raw_fd();
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    let omp = (threads / n).max(1).to_string();

    let printer = Arc::new(Mutex::new(Printer {
        only: None,
        last: None,
        error_line: vec![None; n],
    }));
    let mut copiers = Vec::new();
    let mut pids = Vec::with_capacity(n);
    let (done_tx, done_rx) = mpsc::channel::<(usize, std::io::Result<ExitStatus>)>();
    for rank in 0..n {
        let mut cmd = std::process::Command::new(&launch.program);
        cmd.arg0(&launch.arg0).args(&launch.args);
        for (k, v) in DistEnv::vars_for_local_rank(rank, n, port) {
            cmd.env(k, v);
        }
        for k in [
            STORE_FD_VAR,
            "GROUP_RANK",
            "ROLE_RANK",
            "TORCHELASTIC_USE_AGENT_STORE",
            "TORCHELASTIC_RESTART_COUNT",
        ] {
            cmd.env_remove(k);
        }
        if std::env::var_os("OMP_NUM_THREADS").is_none() {
            cmd.env("OMP_NUM_THREADS", &omp);
        }
        if rank == 0 {
            cmd.env(STORE_FD_VAR, store_fd.to_string());
        }
        cmd.stdin(Stdio::null())
            .stdout(if rank == 0 {
                Stdio::inherit()
            } else {
                Stdio::piped()
            })
            .stderr(Stdio::piped())
            .process_group(0);
        let keep_fd = (rank == 0).then_some(store_fd);
        // Safety: only async-signal-safe calls (fcntl, prctl, getppid) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(fd) = keep_fd {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                #[cfg(target_os = "linux")]
                {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                }
                Ok(())
            });
        }
        let mut child: Child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                for &pid in &pids {
                    signal(pid, libc::SIGKILL);
                }
                anyhow::bail!(
                    "--nproc-per-node: cannot start rank {rank} ({}): {e}",
                    launch.program.display()
                );
            }
        };
        pids.push(child.id());
        if let Some(out) = child.stdout.take() {
            copiers.push(copy_lines(out, rank, false, printer.clone()));
        }
        if let Some(err) = child.stderr.take() {
            copiers.push(copy_lines(err, rank, true, printer.clone()));
        }
        let tx = done_tx.clone();
        std::thread::spawn(move || {
            let status = child.wait();
            let _ = tx.send((rank, status));
        });
    }
    // Rank 0 holds the socket now.
    drop(listener);
    drop(done_tx);

    // Signals reach the launcher alone (the ranks have their own process group): each one
    // is passed on as a SIGINT.
    let signals = Arc::new(AtomicUsize::new(0));
    {
        let signals = signals.clone();
        let _ = ctrlc::set_handler(move || {
            signals.fetch_add(1, Ordering::SeqCst);
        });
    }
    let mut forwarded = 0;
    let mut running = vec![true; n];
    let mut failed: Option<(usize, ExitStatus)> = None;
    let mut kill_at: Option<Instant> = None;
    while running.iter().any(|r| *r) {
        match done_rx.recv_timeout(Duration::from_millis(100)) {
            Ok((rank, status)) => {
                running[rank] = false;
                let status = match status {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("embtune: cannot wait for rank {rank}: {e}");
                        ExitStatus::from_raw(1 << 8)
                    }
                };
                if !status.success() && failed.is_none() {
                    failed = Some((rank, status));
                    printer.lock().unwrap_or_else(|e| e.into_inner()).only = Some(rank);
                    for (r, pid) in pids.iter().enumerate() {
                        if running[r] {
                            signal(*pid, libc::SIGTERM);
                        }
                    }
                    kill_at = Some(Instant::now() + launch.grace);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let seen = signals.load(Ordering::SeqCst);
        while forwarded < seen {
            forwarded += 1;
            for (r, pid) in pids.iter().enumerate() {
                if running[r] {
                    signal(*pid, libc::SIGINT);
                }
            }
        }
        if kill_at.is_some_and(|t| Instant::now() >= t) {
            for (r, pid) in pids.iter().enumerate() {
                if running[r] {
                    signal(*pid, libc::SIGKILL);
                }
            }
            kill_at = None;
        }
    }
    for c in copiers {
        let _ = c.join();
    }
    let Some((rank, status)) = failed else {
        return Ok(ExitCode::SUCCESS);
    };
    let mut p = printer.lock().unwrap_or_else(|e| e.into_inner());
    let line = p.error_line[rank]
        .clone()
        .unwrap_or_else(|| describe(rank, &status));
    // Not again when the last line says the same (every rank failed alike).
    if p.last.as_ref().map(|(_, l)| l) != Some(&line) {
        p.only = Some(rank);
        p.print(rank, &line, false);
    }
    Ok(ExitCode::from(exit_code(&status).max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_ranks_get_the_command_line_without_nproc_per_node() {
        assert_eq!(
            strip_nproc_per_node(&os(&["train", "--nproc-per-node", "2", "--data", "d.csv"])),
            os(&["train", "--data", "d.csv"])
        );
        assert_eq!(
            strip_nproc_per_node(&os(&["train", "--nproc-per-node=4", "--lr", "1e-5"])),
            os(&["train", "--lr", "1e-5"])
        );
        assert_eq!(
            strip_nproc_per_node(&os(&["train", "--", "--nproc-per-node", "2"])),
            os(&["train", "--", "--nproc-per-node", "2"])
        );
    }

    #[test]
    fn exit_codes_pass_on_codes_and_signals() {
        assert_eq!(exit_code(&ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(&ExitStatus::from_raw(9)), 137);
        assert!(describe(1, &ExitStatus::from_raw(9)).contains("rank 1 was killed by signal 9"));
    }

    #[test]
    fn the_error_line_is_the_last_error_else_the_last_line() {
        let mut p = Printer {
            only: Some(5),
            last: None,
            error_line: vec![None; 2],
        };
        p.print(1, "loading", true);
        assert_eq!(p.error_line[1].as_deref(), Some("loading"));
        p.print(1, "embtune: error: boom", true);
        p.print(1, "trailing noise", true);
        assert_eq!(p.error_line[1].as_deref(), Some("embtune: error: boom"));
        p.print(0, "stdout line", false);
        assert_eq!(p.error_line[0], None);
    }
}
