//! embtune's command line as a library: [`run`] parses the arguments, dispatches to a
//! command and turns any error into one line on stderr and a non-zero exit. A third-party
//! binary links its own plugin crates and calls [`run`] (docs/PLUGINS.md).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod commands;

/// Fine-tune text-embedding models on libtorch.
#[derive(Parser, Debug)]
#[command(name = "embtune", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Turn a CSV table into contrastive training data (strategies + samplers).
    Gen(commands::gen::GenArgs),
    /// List the registered plugins: strategies, samplers and (in builds with libtorch) losses.
    List(commands::list::ListArgs),
    /// Report versions, devices and whether the default model verifies.
    #[cfg(feature = "torch")]
    Doctor(commands::doctor::DoctorArgs),
    /// Fine-tune a sentence encoder with a named loss.
    #[cfg(feature = "torch")]
    Train(Box<commands::train::TrainArgs>),
    /// Evaluate a model folder (retrieval, triplet accuracy, combined margin); prints JSON.
    #[cfg(feature = "torch")]
    Eval(commands::eval::EvalArgs),
    /// Embed the texts of a file (.txt or .csv) into .npy or .jsonl.
    #[cfg(feature = "torch")]
    Encode(commands::encode::EncodeArgs),
    /// Cosine scores of one query against documents, highest first.
    #[cfg(feature = "torch")]
    Score(commands::score::ScoreArgs),
}

/// Runs the command line of this process and returns its exit code.
pub fn run() -> ExitCode {
    run_from(std::env::args_os())
}

/// Runs the command line `args` (the first item is the program name).
pub fn run_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embtune: error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: Command) -> anyhow::Result<()> {
    #[cfg(feature = "torch")]
    if matches!(
        cmd,
        Command::Train(_) | Command::Eval(_) | Command::Encode(_) | Command::Score(_)
    ) {
        // Tensor work: reuse freed activation buffers instead of mapping them afresh.
        embtune_core::mem::keep_large_allocations();
    }
    match cmd {
        Command::Gen(a) => commands::gen::run(a),
        Command::List(a) => commands::list::run(a),
        #[cfg(feature = "torch")]
        Command::Doctor(a) => commands::doctor::run(a),
        #[cfg(feature = "torch")]
        Command::Train(a) => commands::train::run(*a),
        #[cfg(feature = "torch")]
        Command::Eval(a) => commands::eval::run(a),
        #[cfg(feature = "torch")]
        Command::Encode(a) => commands::encode::run(a),
        #[cfg(feature = "torch")]
        Command::Score(a) => commands::score::run(a),
    }
}

/// The error and its context chain on one line.
pub fn error_line(e: &anyhow::Error) -> String {
    let parts: Vec<String> = e
        .chain()
        .map(|c| embtune_core::error::one_line(&c.to_string()))
        .collect();
    parts.join(": ")
}
