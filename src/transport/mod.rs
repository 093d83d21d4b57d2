//! How cinch talks to a node: a small trait with an `ssh` and a `local` implementation.

pub mod local;

use std::time::Duration;

use crate::repo::Node;

/// One remote command: a complete POSIX sh script, optional stdin, optional time limit.
#[derive(Debug, Clone, Default)]
pub struct Command {
    /// Built by [`crate::shell`]; run with `sh -c` on the node (wrapped by `become` if set).
    pub script: String,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
}

impl Command {
    /// A command with no stdin and no time limit.
    pub fn new(script: impl Into<String>) -> Self {
        Command {
            script: script.into(),
            ..Default::default()
        }
    }
}

/// What a finished command produced.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Exit code; `None` when killed by a signal or timed out.
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Counters users see with `--stats`: the round trips are the budget.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Stats {
    pub commands: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
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
    /// A local problem starting or feeding the command.
    #[error("{node}: {context}: {source}")]
    Io {
        node: String,
        context: String,
        source: std::io::Error,
    },
}

/// A connection to one node. Implementations are shared by that node's item workers.
pub trait Transport: Send + Sync {
    /// Runs a command and captures its output.
    fn run(&self, cmd: &Command) -> Result<Output, TransportError>;

    /// Runs a command, handing output chunks to `sink` as they arrive; the returned
    /// [`Output`] has empty `stdout`/`stderr`.
    fn run_streaming(
        &self,
        cmd: &Command,
        sink: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<Output, TransportError>;

    /// Closes the connection, leaving no master process or socket behind.
    fn close(&self) -> Result<(), TransportError>;

    /// Commands run and bytes moved so far.
    fn stats(&self) -> Stats;
}

/// Opens (lazily, for ssh) a transport to `node`.
pub fn open(node: &Node) -> Box<dyn Transport> {
    Box::new(local::LocalTransport::new(node))
}
