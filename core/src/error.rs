//! The one error type of embtune-core and of plugins. Every variant renders as one line
//! that says what is wrong, where, and what to do about it.

use std::path::PathBuf;

/// Result alias used across core and plugins.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong on user input or environment; no panics on either.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name asked of a registry that no plugin registered.
    #[error("unknown {kind} '{name}'; valid names: {valid}")]
    UnknownPlugin {
        /// The registry: "strategy", "sampler" or "loss".
        kind: &'static str,
        /// The name asked for.
        name: String,
        /// The registered names, comma-separated.
        valid: String,
    },

    /// Two plugins registered the same name in one registry.
    #[error(
        "duplicate {kind} name '{name}': registered by {first} and by {second}; rename one of them"
    )]
    DuplicatePlugin {
        /// The registry: "strategy", "sampler" or "loss".
        kind: &'static str,
        /// The name registered twice.
        name: String,
        /// Module path of the first registration.
        first: String,
        /// Module path of the second registration.
        second: String,
    },

    /// A plugin option that the plugin's config does not know or cannot parse.
    #[error("{kind} '{plugin}': {message}")]
    PluginConfig {
        /// The registry: "strategy", "sampler" or "loss".
        kind: &'static str,
        /// The plugin's registry name.
        plugin: String,
        /// What is wrong with the option, with the valid ones.
        message: String,
    },

    /// A file that could not be opened, read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS message, on one line.
        message: String,
    },

    /// Input data that is malformed; `line` is 1-based where known.
    #[error("{path}{}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Data {
        /// The input file.
        path: PathBuf,
        /// 1-based line, where known.
        line: Option<u64>,
        /// What is wrong and what to do.
        message: String,
    },

    /// One cell of input data that is malformed: the file, the 1-based line where known,
    /// and the column (or JSON key).
    #[error("{path}{}, column '{column}': {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Cell {
        /// The input file.
        path: PathBuf,
        /// 1-based line, where known.
        line: Option<u64>,
        /// The column name (or JSON key).
        column: String,
        /// What is wrong and what to do.
        message: String,
    },

    /// Columns asked for that the table does not have.
    #[error("{path}: missing column(s) {missing}; available columns: {available}")]
    MissingColumns {
        /// The input file.
        path: PathBuf,
        /// The columns asked for and absent, comma-separated.
        missing: String,
        /// The columns the file has, comma-separated.
        available: String,
    },

    /// Invalid arguments or combinations of options.
    #[error("{0}")]
    Invalid(String),

    /// A model folder that is missing, incomplete or inconsistent.
    #[error("model folder {path}: {message}")]
    Model {
        /// The model folder (or the file in it).
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },

    /// Training stopped on a signal after writing a checkpoint.
    #[error("interrupted after step {step}; checkpoint written to {checkpoint}; continue with the same command plus --resume {checkpoint}")]
    Interrupted {
        /// Optimizer steps done.
        step: usize,
        /// The checkpoint folder written on the way out.
        checkpoint: PathBuf,
    },

    /// The loss or the gradients became NaN or infinite.
    #[error("non-finite loss or gradient at step {step}; {hint}")]
    NonFinite {
        /// The optimizer step that produced it.
        step: usize,
        /// What to do.
        hint: String,
    },

    /// A plugin that runs a model was asked for in a build without libtorch (the torch-free
    /// `embtune` front end hands such commands to `embtune-torch`).
    #[error("{what} needs libtorch: run it with embtune-torch (built by `make build`)")]
    NeedsLibtorch {
        /// The plugin, e.g. "the sampler model-mined".
        what: String,
    },

    /// An error from libtorch (shapes, devices, out of memory).
    #[error("libtorch: {0}")]
    Torch(String),
}

impl Error {
    /// An I/O error on `path`, keeping the OS message short and on one line.
    pub fn io(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> Self {
        let message = one_line(&err.to_string());
        // The OS says what went wrong; add what to do for the common cases.
        let hint = [
            ("No such file or directory", "check the path"),
            (
                "Permission denied",
                "check its permissions or choose another path",
            ),
            (
                "Read-only file system",
                "choose a folder on a writable file system",
            ),
            (
                "No space left on device",
                "free some space or choose another folder",
            ),
            (
                "Disk quota exceeded",
                "free some space or choose another folder",
            ),
            (
                "Not a directory",
                "a part of the path is a file, not a folder; fix the path",
            ),
            (
                "Is a directory",
                "the path names a folder; give a file name",
            ),
        ]
        .iter()
        .find(|(os, _)| message.contains(os))
        .map(|(_, fix)| *fix);
        Error::Io {
            path: path.into(),
            message: match hint {
                Some(fix) => format!("{message}; {fix}"),
                None => message,
            },
        }
    }

    /// A data error at an optional 1-based line.
    pub fn data(path: impl Into<PathBuf>, line: Option<u64>, message: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            line,
            message: message.into(),
        }
    }

    /// A data error in one cell: column `column` at an optional 1-based line.
    pub fn cell(
        path: impl Into<PathBuf>,
        line: Option<u64>,
        column: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Cell {
            path: path.into(),
            line,
            column: column.into(),
            message: message.into(),
        }
    }

    /// A model-folder error.
    pub fn model(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Model {
            path: path.into(),
            message: message.into(),
        }
    }
}

#[cfg(feature = "torch")]
impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        let msg = one_line(&e.to_string());
        if msg.contains("out of memory") {
            Error::Torch(format!(
                "{msg}; out of GPU memory: lower --batch-size or use --loss cached-mnrl"
            ))
        } else {
            Error::Torch(msg)
        }
    }
}

/// First line of a possibly multi-line message (libtorch appends C++ backtraces).
pub fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}
