//! The library's error type; only the binary decides how errors look and which exit code they get.

use crate::diag::Diagnostic;
use crate::transport::TransportError;

/// Everything that can stop a command before or while it works.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The repo is broken: every problem found, each with its place.
    #[error("{}", render_diagnostics(.0))]
    Repo(Vec<Diagnostic>),
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// A node could not be reached or talked to.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A local I/O problem (writing output, creating a repo, ...).
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// The user pressed Ctrl-C.
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    /// The exit code README.md ("Exit codes") assigns to this kind of failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Repo(_) | Error::Usage(_) => 2,
            Error::Transport(_) | Error::Io { .. } => 1,
            Error::Interrupted => 130,
        }
    }

    /// Wraps an I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<Diagnostic> for Error {
    fn from(d: Diagnostic) -> Self {
        Error::Repo(vec![d])
    }
}

fn render_diagnostics(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        // The binary prefixes the first with "error: "; every further problem gets its own.
        .join("\nerror: ")
}

/// Shorthand used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
