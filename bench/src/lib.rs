//! embtune-bench: benchmark binaries (`src/bin/`). Each prints its figures and compares
//! against the Python reference run side by side in the same process tree.
//!
//! Shared helpers: [`run_measured`] runs a child process and returns its wall time and
//! peak resident memory; [`reference_python`] is where the reference environment lives.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// The Python of the reference environment: `$EMBTUNE_REF_PYTHON`, else the repository's
/// `.venv-ref/bin/python` (made by `scripts/ref-env.sh`).
pub fn reference_python() -> PathBuf {
    std::env::var_os("EMBTUNE_REF_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv-ref/bin/python")
        })
}

/// Wall seconds, peak RSS in MiB and exit status of a child process.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Wall-clock seconds from spawn to exit.
    pub wall_s: f64,
    /// Peak resident set size of the child (`ru_maxrss` from wait4), MiB.
    pub peak_rss_mib: f64,
    /// User + system CPU seconds of the child (robust against a loaded machine).
    pub cpu_s: f64,
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
}

/// Spawns `cmd`, waits with `wait4` and reports wall time and peak RSS of that child.
pub fn run_measured(cmd: &mut Command) -> std::io::Result<Measured> {
    let start = Instant::now();
    let child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child `pid`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall_s = start.elapsed().as_secs_f64();
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    std::mem::forget(child); // already reaped
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    let cpu_s = secs(usage.ru_utime) + secs(usage.ru_stime);
    Ok(Measured {
        wall_s,
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
        cpu_s,
        code,
    })
}
