//! How cinch talks to a node: a small trait with an `ssh` and a `local` implementation.

pub mod local;
pub mod ssh;

use std::path::PathBuf;
use std::time::Duration;

use crate::repo::{Node, TransportKind};

/// One remote command: a complete POSIX sh script, optional stdin, optional time limit.
#[derive(Debug, Clone, Default)]
pub struct Command {
    /// Built by [`crate::shell`]; run with `sh -c` on the node (wrapped by `become` if set).
    pub script: String,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
    /// Clean-up work (releasing a lock) that must finish even after a second Ctrl-C; it
    /// still obeys `timeout`.
    pub cleanup: bool,
}

impl Command {
    /// This command in a form any transport can start: a script too long for one command-line
    /// argument is moved to the front of stdin behind a small bootstrap.
    pub fn fit_for_exec(&self) -> std::borrow::Cow<'_, Command> {
        if self.script.len() <= crate::shell::MAX_INLINE_SCRIPT {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut stdin =
            Vec::with_capacity(self.script.len() + self.stdin.as_ref().map_or(0, Vec::len));
        stdin.extend_from_slice(self.script.as_bytes());
        stdin.extend_from_slice(self.stdin.as_deref().unwrap_or_default());
        std::borrow::Cow::Owned(Command {
            script: crate::shell::stdin_bootstrap(self.script.len()),
            stdin: Some(stdin),
            ..self.clone()
        })
    }

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

/// Why a node could not be talked to (defined with the other errors, below the transports).
pub use crate::error::TransportError;

/// A connection to one node. Implementations are shared by that node's item workers.
///
/// Every implementation stops a command (and every process it started) when its
/// [`Command::timeout`] passes or when the user forces an interrupt
/// ([`crate::interrupt::forced`]), and then returns with `timed_out` / `status: None`.
pub trait Transport: Send + Sync {
    /// Connects now instead of on the first command, so callers can fire `node_ssh_connect`
    /// just before and tell connection failures apart from command failures.
    fn connect(&self) -> Result<(), TransportError> {
        Ok(())
    }

    /// The node's name, for messages.
    fn node(&self) -> &str;

    /// Runs a command and captures its output.
    fn run(&self, cmd: &Command) -> Result<Output, TransportError> {
        let (mut so, mut se) = (Vec::new(), Vec::new());
        let res = self.run_streaming(cmd, &mut |s, b| match s {
            Stream::Stdout => so.extend_from_slice(b),
            Stream::Stderr => se.extend_from_slice(b),
        })?;
        Ok(Output {
            stdout: so,
            stderr: se,
            ..res
        })
    }

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

/// Connection choices that come from the repo (`[ssh]` in cinch.toml) and the command line.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// `ssh -F`: an ssh_config used instead of `~/.ssh/config`.
    pub config_file: Option<PathBuf>,
    /// `UserKnownHostsFile`.
    pub known_hosts_file: Option<PathBuf>,
    /// `ConnectTimeout`; `None` leaves it to the ssh config.
    pub connect_timeout: Option<Duration>,
    /// `KexAlgorithms`; `None` leaves it to the ssh config.
    pub kex_algorithms: Option<String>,
    /// `ControlPersist` seconds of a master kept for the next invocation; `None` closes it.
    pub persist: Option<u64>,
    /// `--add-host-keys`: accept (and remember) unknown host keys; changed keys stay refused.
    pub add_host_keys: bool,
    /// Where control sockets live; default `/tmp/cinch-UID` (`$CINCH_SSH_CONTROL_DIR`
    /// overrides). Must stay short: socket paths are limited to ~100 bytes.
    pub control_dir: Option<PathBuf>,
}

impl ConnectOptions {
    /// Options from a repo's settings; relative paths in cinch.toml are relative to the repo.
    pub fn from_settings(
        repo_path: &std::path::Path,
        ssh: &crate::repo::settings::SshSettings,
        add_host_keys: bool,
    ) -> Self {
        let abs = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                repo_path.join(p)
            }
        };
        ConnectOptions {
            config_file: ssh.config_file.as_ref().map(abs),
            known_hosts_file: ssh.known_hosts_file.as_ref().map(abs),
            connect_timeout: ssh.connect_timeout.map(Duration::from_secs),
            kex_algorithms: ssh.kex_algorithms.clone(),
            persist: ssh.persist,
            add_host_keys,
            control_dir: std::env::var_os("CINCH_SSH_CONTROL_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }
}

/// Opens a transport to `node`; ssh connects lazily on the first command (or [`Transport::connect`]).
pub fn open(node: &Node, opts: &ConnectOptions) -> Box<dyn Transport> {
    match node.transport {
        TransportKind::Local => Box::new(local::LocalTransport::new(node)),
        TransportKind::Ssh => Box::new(ssh::SshTransport::new(node, opts)),
    }
}

/// Writes `bytes` to `path` on the node atomically (temp file beside it, fsync, rename), so an
/// interrupted upload never leaves a half-written file. `mode` is applied before the rename.
pub fn upload_atomic(
    t: &dyn Transport,
    path: &str,
    bytes: &[u8],
    mode: Option<u32>,
) -> Result<(), TransportError> {
    let cmd = Command {
        script: crate::shell::upload_script(path, mode),
        stdin: Some(bytes.to_vec()),
        timeout: None,
        cleanup: false,
    };
    let out = t.run(&cmd)?;
    if out.status == Some(0) {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(TransportError::Failed {
        node: t.node().to_string(),
        what: format!("writing {path}"),
        reason: match (out.status, stderr.is_empty()) {
            (_, false) => stderr,
            (Some(c), true) => format!("exit code {c}"),
            (None, true) => "killed".to_string(),
        },
    })
}
