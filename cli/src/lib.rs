//! embtune's command line as a library: [`run`] parses the arguments, dispatches to a
//! command and turns any error into one line on stderr and a non-zero exit. A third-party
//! binary links its own plugin crates and calls [`run`] (docs/PLUGINS.md).
//!
//! Two builds of the same command line:
//! - without the `torch` feature (the default; the `embtune` binary that `make build`
//!   installs), `gen`, `list`, `fetch-model`, `--help` and `--version` run in-process and never load
//!   libtorch, and the libtorch commands (`train`, `eval`, `encode`, `score`, `mine`, `doctor`)
//!   are handed, arguments untouched, to the libtorch binary `embtune-torch` installed
//!   beside it ([`forward`]; the git/cargo subcommand pattern);
//! - with `torch` (the `embtune-torch` package, or a third-party binary with loss
//!   plugins), every command runs in-process.
//!
//! Both parse the same [`Cli`], so `embtune --help` lists every command either way.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod commands;
#[cfg(not(feature = "torch"))]
pub mod forward;

/// Fine-tune text-embedding models on libtorch.
#[derive(Parser, Debug)]
#[command(name = "embtune", version, about, long_about = None)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Turn a CSV table into contrastive training data (strategies + samplers).
    Gen(Box<commands::gen::GenArgs>),
    /// List the registered plugins: strategies, samplers and losses.
    List(commands::list::ListArgs),
    /// Report versions, devices, where models and libtorch are, and whether the default model verifies.
    Doctor(torch_commands::Doctor),
    /// Download and verify the default model (all-MiniLM-L6-v2) into the models folder.
    FetchModel(commands::fetch_model::FetchModelArgs),
    /// Fine-tune a sentence encoder with a named loss.
    Train(torch_commands::Train),
    /// Evaluate a model folder (retrieval, triplet accuracy, combined margin); prints JSON.
    Eval(torch_commands::Eval),
    /// Embed the texts of a file (.txt or .csv) into .npy or .jsonl.
    Encode(torch_commands::Encode),
    /// Cosine scores of one query against documents, highest first.
    Score(torch_commands::Score),
    /// Mine hard negatives for (anchor, positive) pairs with a model (sentence-transformers' mine_hard_negatives).
    Mine(torch_commands::Mine),
}

/// The argument types of the libtorch commands: parsed in this build.
#[cfg(feature = "torch")]
pub mod torch_commands {
    use crate::commands;

    /// `embtune doctor`.
    pub type Doctor = commands::doctor::DoctorArgs;
    /// `embtune train`.
    pub type Train = Box<commands::train::TrainArgs>;
    /// `embtune eval`.
    pub type Eval = commands::eval::EvalArgs;
    /// `embtune encode`.
    pub type Encode = commands::encode::EncodeArgs;
    /// `embtune score`.
    pub type Score = commands::score::ScoreArgs;
    /// `embtune mine`.
    pub type Mine = Box<commands::mine::MineArgs>;
}

/// The argument types of the libtorch commands: in a build without `torch`, passed on
/// untouched to the libtorch binary, which parses them ([`forward`]).
#[cfg(not(feature = "torch"))]
pub mod torch_commands {
    use crate::forward::Forwarded;

    /// `embtune doctor`.
    pub type Doctor = Forwarded;
    /// `embtune train`.
    pub type Train = Forwarded;
    /// `embtune eval`.
    pub type Eval = Forwarded;
    /// `embtune encode`.
    pub type Encode = Forwarded;
    /// `embtune score`.
    pub type Score = Forwarded;
    /// `embtune mine`.
    pub type Mine = Forwarded;
}

/// Runs the command line of this process and returns its exit code.
pub fn run() -> ExitCode {
    run_from(std::env::args_os())
}

/// Runs the command line `args` (the first item is the program name).
pub fn run_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match try_run_from(args) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("embtune: error: {}", f.line);
            ExitCode::from(f.status)
        }
    }
}

/// A command that failed: its exit status (2 for a usage error, 1 otherwise) and the one
/// line [`run_from`] prints after `embtune: error: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The exit status.
    pub status: u8,
    /// The error line.
    pub line: String,
}

/// [`run_from`] without printing the error: the exit code of a command that ran (help and
/// version included), or its [`Failure`].
pub fn try_run_from<I, T>(args: I) -> Result<ExitCode, Failure>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            return Err(Failure {
                status: 2,
                line: usage_error_line(&e),
            })
        }
        Err(e) => {
            // --help, --version.
            let _ = e.print();
            return Ok(ExitCode::SUCCESS);
        }
    };
    dispatch(cli.command, &args).map_err(|e| Failure {
        status: 1,
        line: error_line(&e),
    })
}

/// Runs `cmd`; `args` is the whole command line, for a command handed to the libtorch
/// binary.
#[cfg(feature = "torch")]
fn dispatch(cmd: Command, args: &[OsString]) -> anyhow::Result<ExitCode> {
    if matches!(
        cmd,
        Command::Train(_)
            | Command::Eval(_)
            | Command::Encode(_)
            | Command::Score(_)
            | Command::Mine(_)
    ) {
        // Tensor work: reuse freed activation buffers instead of mapping them afresh.
        embtune_core::mem::keep_large_allocations();
    }
    match cmd {
        Command::Gen(a) => commands::gen::run(*a),
        Command::List(a) => commands::list::run(a),
        Command::FetchModel(a) => commands::fetch_model::run(a),
        Command::Doctor(a) => commands::doctor::run(a),
        Command::Train(a) => return commands::train::run(*a, args),
        Command::Eval(a) => commands::eval::run(a),
        Command::Encode(a) => return commands::encode::run(a, args),
        Command::Score(a) => commands::score::run(a),
        Command::Mine(a) => return commands::mine::run(*a, args),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `cmd`; `args` is the whole command line, for a command handed to the libtorch
/// binary.
#[cfg(not(feature = "torch"))]
fn dispatch(cmd: Command, args: &[OsString]) -> anyhow::Result<ExitCode> {
    let name = match cmd {
        // A sampler that runs a model (model-mined) needs the libtorch binary.
        Command::Gen(a) if commands::gen::needs_libtorch(&a) => "gen",
        Command::Gen(a) => return commands::gen::run(*a).map(|()| ExitCode::SUCCESS),
        Command::List(a) => return commands::list::run(a).map(|()| ExitCode::SUCCESS),
        Command::FetchModel(a) => return commands::fetch_model::run(a).map(|()| ExitCode::SUCCESS),
        Command::Doctor(_) => "doctor",
        Command::Train(_) => "train",
        Command::Eval(_) => "eval",
        Command::Encode(_) => "encode",
        Command::Score(_) => "score",
        Command::Mine(_) => "mine",
    };
    forward::run(name, args)
}

/// A usage error of the command line (clap's) on one line: its message lines without the
/// usage and help hints, joined, with a pointer to `--help`.
pub fn usage_error_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut parts: Vec<&str> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if !line.is_empty() {
            parts.push(line.strip_prefix("error: ").unwrap_or(line));
        }
    }
    format!("{} (see --help)", parts.join(" "))
}

/// The one line a failed command prints after `embtune: error: `: the error and its
/// causes, each on one line, joined by `: `.
pub fn error_line(e: &anyhow::Error) -> String {
    let parts: Vec<String> = e
        .chain()
        .map(|c| embtune_core::error::one_line(&c.to_string()))
        .collect();
    parts.join(": ")
}
