//! The libtorch commands of a build without the `torch` feature: handed to the libtorch
//! binary `embtune-torch` with the same arguments (the git/cargo subcommand pattern), so
//! `gen` and `list` never load libtorch while `embtune train ...` keeps working.
//!
//! The binary is `$EMBTUNE_TORCH_BIN` when set (an explicit override wins), else
//! `embtune-torch` in the folder of this program's executable (where `make build` puts
//! both), else the first `embtune-torch` on `PATH`. On unix the process `exec`s it (its
//! `argv[0]` is `embtune`), so exit status, signals and Ctrl-C are the libtorch binary's
//! own; elsewhere it runs as a child and its exit code is passed on.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// The name of the libtorch binary.
pub const BACKEND: &str = "embtune-torch";

/// Set in the environment of the libtorch binary, so that a front end found in its place
/// (a wrong `$EMBTUNE_TORCH_BIN`) fails instead of handing the command on forever.
const FORWARDED: &str = "EMBTUNE_FORWARDED";

/// Set in the environment of the libtorch binary to the front end's own path.
pub const FRONT_END: &str = "EMBTUNE_FRONT_END";

/// The arguments of a libtorch command, passed on untouched (its `--help` included) to
/// the libtorch binary, which parses them.
#[derive(Args, Debug, Clone)]
#[command(disable_help_flag = true)]
pub struct Forwarded {
    /// Arguments of the command (see `embtune COMMAND --help`, answered by embtune-torch).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<OsString>,
}

/// The libtorch binary: `$EMBTUNE_TORCH_BIN`, `embtune-torch` beside this executable, or
/// on `PATH`; otherwise an error saying where it looked and how to build it.
pub fn backend() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("EMBTUNE_TORCH_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            anyhow::bail!(
                "EMBTUNE_TORCH_BIN={} is not a file; point it at the libtorch binary {BACKEND} or unset it",
                p.display()
            )
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(BACKEND)));
    if let Some(p) = beside.as_ref().filter(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(BACKEND))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    if let Some(p) = on_path {
        return Ok(p);
    }
    let beside = beside
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "beside this program".into());
    anyhow::bail!(
        "the libtorch binary {BACKEND} was not found (looked at $EMBTUNE_TORCH_BIN: unset, {beside}, and PATH); \
         build it with `make build` or `cargo build --release -p {BACKEND}`"
    )
}

/// Hands `embtune COMMAND ...` (`args`, the whole command line) to the libtorch binary.
/// On unix this returns only on failure.
pub fn run(command: &str, args: &[OsString]) -> anyhow::Result<ExitCode> {
    if std::env::var_os(FORWARDED).is_some() {
        anyhow::bail!(
            "`embtune {command}` was handed to a binary without libtorch; {BACKEND} must be built with the `torch` feature (`cargo build --release -p {BACKEND}`)"
        );
    }
    let bin = backend().map_err(|e| e.context(format!("`embtune {command}` needs libtorch")))?;
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(args.iter().skip(1)).env(FORWARDED, "1");
    if let Ok(me) = std::env::current_exe() {
        // For `embtune doctor`, which reports both binaries.
        cmd.env(FRONT_END, me);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let e = cmd.arg0("embtune").exec();
        anyhow::bail!("cannot run {}: {e}", bin.display())
    }
    #[cfg(not(unix))]
    {
        let status = cmd
            .status()
            .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", bin.display()))?;
        Ok(ExitCode::from(
            status.code().unwrap_or(1).clamp(0, 255) as u8
        ))
    }
}
