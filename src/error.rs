//! The library's error type; only the binary decides how errors look and which exit code they get.

use crate::diag::Diagnostic;

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

/// Why a node could not be talked to.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Connecting failed; `reason` is what ssh said.
    #[error("{node}: cannot connect: {reason}")]
    Connect { node: String, reason: String },
    /// The connection broke while a command ran.
    #[error("{node}: connection lost: {reason}")]
    Disconnected { node: String, reason: String },
    /// A helper command (upload, ...) ran but failed; `reason` is its stderr.
    #[error("{node}: {what} failed: {reason}")]
    Failed {
        node: String,
        what: String,
        reason: String,
    },
    /// A local problem starting or feeding the command.
    #[error("{node}: {context}: {source}")]
    Io {
        node: String,
        context: String,
        source: std::io::Error,
    },
}

impl TransportError {
    /// The error without the node's name, for lines that already start with it (so the
    /// user never reads "web1: web1: …"); a failed connection reads "unreachable: …".
    pub fn reason(&self) -> String {
        match self {
            TransportError::Connect { reason, .. } => format!("unreachable: {reason}"),
            TransportError::Disconnected { reason, .. } => format!("connection lost: {reason}"),
            TransportError::Failed { what, reason, .. } => format!("{what} failed: {reason}"),
            TransportError::Io {
                context, source, ..
            } => format!("{context}: {source}"),
        }
    }
}

/// Shorthand used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
