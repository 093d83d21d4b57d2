//! `transport = "ssh"`: the real OpenSSH client through the `openssh` crate (native mux).
//!
//! One ControlMaster per node per invocation, started lazily by the first command, shared by
//! every command on that node (at most [`MAX_IN_FLIGHT`] at once) and closed explicitly by
//! [`Transport::close`] or, on error paths, when the transport is dropped. Because the real
//! `ssh` runs, `~/.ssh/config` (ProxyJump, IdentityFile, User, Port, Match, agents) applies.
//!
//! The trait is synchronous because callers are plain worker threads; this module owns one
//! shared tokio runtime and `block_on`s it. Never call it from a runtime thread.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::{Command, ConnectOptions, Output, Stats, Stream, Transport, TransportError};
use crate::repo::Node;
use crate::shell;

/// Commands in flight on one connection: sshd's `MaxSessions` defaults to 10, and kills
/// need a channel of their own ([`KILL_SLOTS`]).
pub const MAX_IN_FLIGHT: usize = 8;
/// Channels reserved for killing timed-out commands, so a kill never waits behind them.
const KILL_SLOTS: usize = 2;
/// A master left behind by a killed cinch exits after this long without clients.
const CONTROL_PERSIST_SECS: usize = 60;
/// Connection attempts after the first when sshd refuses under load (MaxStartups) or this
/// machine is short of descriptors or processes; with [`backoff`] about 15 s in all.
const CONNECT_RETRIES: u32 = 6;
/// How often a running command checks its deadline and the interrupt counter.
const TICK: Duration = Duration::from_millis(100);
/// After asking the node to kill a command, how long we still wait for its end.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Connection handshakes in flight at once per CPU, whatever `-p` is. Each costs the ssh
/// client (and a local sshd) tens of milliseconds of CPU for the key exchange, so hundreds at
/// once on a few cores only thrash: every handshake slows down, and a busy sshd's listener
/// then drops connection attempts until they time out (seen with `-p 500` against one sshd
/// on 2 cores). This many per core still keeps every core busy over a slow link, where a
/// handshake is mostly waiting for round trips.
const HANDSHAKES_PER_CPU: usize = 16;

/// How many connections this process makes at once (the rest wait for one to be up).
pub fn handshakes_at_once() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    HANDSHAKES_PER_CPU * cpus
}

/// The gate every new connection passes while it is being made (not while it is used).
fn handshake_gate() -> &'static Semaphore {
    static GATE: OnceLock<Semaphore> = OnceLock::new();
    GATE.get_or_init(|| Semaphore::new(handshakes_at_once()))
}

/// The runtime every ssh transport shares; created on first use so commands that never
/// connect never start one.
fn runtime() -> Result<&'static Runtime, TransportError> {
    static RT: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cinch-ssh")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| TransportError::Io {
        node: String::new(),
        context: "starting the ssh runtime".into(),
        source: std::io::Error::other(e.clone()),
    })
}

/// `/tmp/cinch-UID` unless configured: short, so control socket paths stay far below the
/// ~100-byte limit whatever `$HOME` or `$TMPDIR` is, and private to the user.
fn control_dir(configured: Option<&Path>) -> Result<PathBuf, String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let dir = configured.map_or_else(
        || PathBuf::from(format!("/tmp/cinch-{uid}")),
        Path::to_path_buf,
    );
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => return Ok(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(&dir)
        .map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{} is not a private directory owned by you; remove it",
            dir.display()
        ));
    }
    Ok(dir)
}

enum Conn {
    Idle,
    Up(Arc<Session>),
    /// Connecting failed; later commands fail the same way instead of retrying.
    Failed(String),
    Closed,
}

/// A lazily connected ControlMaster to one node.
pub struct SshTransport {
    node: String,
    destination: String,
    builder: SessionBuilder,
    add_host_keys: bool,
    control_dir: Option<PathBuf>,
    become_: Option<String>,
    conn: tokio::sync::Mutex<Conn>,
    /// Set when cinch.toml asks for `kex_algorithms` or `persist`: cinch then starts the
    /// master itself (openssh's builder cannot pass those options).
    own: Option<OwnMaster>,
    slots: Semaphore,
    kill_slots: Arc<Semaphore>,
    stats: Mutex<Stats>,
}

impl SshTransport {
    /// A transport for `node`; nothing connects until the first command.
    pub fn new(node: &Node, opts: &ConnectOptions) -> Self {
        let mut b = SessionBuilder::default();
        b.known_hosts_check(if opts.add_host_keys {
            KnownHosts::Add
        } else {
            KnownHosts::Strict
        });
        if let Some(persist) = std::num::NonZeroUsize::new(CONTROL_PERSIST_SECS) {
            b.control_persist(ControlPersist::IdleFor(persist));
        }
        if let Some(u) = &node.username {
            b.user(u.clone());
        }
        if let Some(p) = node.port {
            b.port(p);
        }
        if let Some(f) = &opts.config_file {
            b.config_file(f);
        }
        if let Some(f) = &opts.known_hosts_file {
            b.user_known_hosts_file(f);
        }
        if let Some(t) = opts.connect_timeout {
            b.connect_timeout(t);
        }
        let own = (opts.kex_algorithms.is_some() || opts.persist.is_some()).then(|| OwnMaster {
            kex_algorithms: opts.kex_algorithms.clone(),
            persist: opts.persist,
            user: node.username.clone(),
            port: node.port,
            config_file: opts.config_file.clone(),
            known_hosts_file: opts.known_hosts_file.clone(),
            connect_timeout: opts.connect_timeout,
        });
        SshTransport {
            node: node.name.clone(),
            destination: node.hostname.clone(),
            own,
            builder: b,
            add_host_keys: opts.add_host_keys,
            control_dir: opts.control_dir.clone(),
            become_: node.become_.clone(),
            conn: tokio::sync::Mutex::new(Conn::Idle),
            slots: Semaphore::new(MAX_IN_FLIGHT),
            kill_slots: Arc::new(Semaphore::new(KILL_SLOTS)),
            stats: Mutex::new(Stats::default()),
        }
    }

    fn connect_error(&self, reason: String) -> TransportError {
        TransportError::Connect {
            node: self.node.clone(),
            reason,
        }
    }

    fn lost(&self, reason: String) -> TransportError {
        TransportError::Disconnected {
            node: self.node.clone(),
            reason,
        }
    }

    /// The connection, made on first use. The lock is held while connecting, so parallel
    /// first commands wait for one master instead of racing to start several.
    async fn session(&self) -> Result<Arc<Session>, TransportError> {
        let mut conn = self.conn.lock().await;
        match &*conn {
            Conn::Up(s) => return Ok(s.clone()),
            Conn::Failed(reason) => return Err(self.connect_error(reason.clone())),
            Conn::Closed => return Err(self.lost("the connection was already closed".into())),
            Conn::Idle => {}
        }
        let dir = control_dir(self.control_dir.as_deref()).map_err(|r| self.connect_error(r))?;
        let mut attempt = 0;
        loop {
            // Closed never: the gate lives as long as the process.
            let permit = handshake_gate().acquire().await;
            let result = match &self.own {
                Some(own) => {
                    own.connect(&dir, &self.destination, self.add_host_keys)
                        .await
                }
                None => {
                    let mut b = self.builder.clone();
                    b.control_directory(&dir);
                    b.connect_mux(&self.destination)
                        .await
                        .map_err(|e| Refusal::of(&e, self.add_host_keys))
                }
            };
            let refusal = match result {
                Ok(s) => {
                    let s = Arc::new(s);
                    *conn = Conn::Up(s.clone());
                    return Ok(s);
                }
                Err(r) => r,
            };
            drop(permit);
            let retry = refusal.busy() || refusal.local().is_some();
            if retry && attempt < CONNECT_RETRIES && !crate::interrupt::requested() {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            // Out of descriptors or processes here: this machine's problem, not the node's.
            if let Some(source) = refusal.local() {
                let e = TransportError::Io {
                    node: self.node.clone(),
                    context: "connecting (a resource limit on this machine, not the node)".into(),
                    source,
                };
                *conn = Conn::Failed(e.reason());
                return Err(e);
            }
            *conn = Conn::Failed(refusal.reason.clone());
            return Err(self.connect_error(refusal.reason));
        }
    }

    /// Forgets a master that went away (idle timeout after a long pause) so the next
    /// command starts a new one.
    async fn forget(&self, old: &Arc<Session>) {
        let mut conn = self.conn.lock().await;
        if let Conn::Up(s) = &*conn
            && Arc::ptr_eq(s, old)
        {
            *conn = Conn::Idle;
        }
    }

    async fn spawn(
        &self,
        session: &Arc<Session>,
        line: &str,
        stdin: bool,
    ) -> Result<openssh::Child<Arc<Session>>, openssh::Error> {
        Session::to_raw_command(session.clone(), line)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .await
    }

    async fn run_async(
        &self,
        cmd: &Command,
        sink: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<Output, TransportError> {
        let _permit = self
            .slots
            .acquire()
            .await
            .map_err(|_| self.lost("the connection was closed".into()))?;
        let started = Instant::now();
        let line = shell::report_pgid(&shell::command_line(&cmd.script, self.become_.as_deref()));
        let mut session = self.session().await?;
        let mut child = match self.spawn(&session, &line, cmd.stdin.is_some()).await {
            Ok(c) => c,
            Err(openssh::Error::Disconnected) => {
                self.forget(&session).await;
                session = self.session().await?;
                self.spawn(&session, &line, cmd.stdin.is_some())
                    .await
                    .map_err(|e| self.lost(error_chain(&e)))?
            }
            Err(e) => return Err(self.lost(error_chain(&e))),
        };

        if let (Some(mut pipe), Some(data)) = (child.stdin().take(), cmd.stdin.clone()) {
            // A command that does not read its stdin closes the pipe: not an error.
            tokio::spawn(async move {
                let _ = pipe.write_all(&data).await;
                let _ = pipe.shutdown().await;
            });
        }
        let mut stdout = child.stdout().take();
        let mut stderr = child.stderr().take();
        let (mut bo, mut be) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
        let mut marker = PgidFilter::default();
        let mut tick = tokio::time::interval(TICK);
        let deadline = cmd.timeout.map(|t| started + t);
        let mut timed_out = false;
        let mut stop_at: Option<Instant> = None;
        let mut kill_task: Option<tokio::task::JoinHandle<()>> = None;
        let mut received = 0u64;
        while stdout.is_some() || stderr.is_some() {
            tokio::select! {
                r = read_some(&mut stdout, &mut bo) => match r {
                    Some(n) => {
                        received += n as u64;
                        sink(Stream::Stdout, &bo[..n]);
                    }
                    None => stdout = None,
                },
                r = read_some(&mut stderr, &mut be) => match r {
                    Some(n) => {
                        received += n as u64;
                        marker.feed(&be[..n], &mut |b| sink(Stream::Stderr, b));
                    }
                    None => stderr = None,
                },
                _ = tick.tick() => {}
            }
            if stop_at.is_none() {
                let expired = deadline.is_some_and(|d| Instant::now() >= d);
                if expired || crate::interrupt::abandon(cmd.cleanup) {
                    timed_out = expired;
                    stop_at = Some(Instant::now());
                }
            }
            if let Some(at) = stop_at {
                if kill_task.is_none()
                    && let Some(pgid) = marker.pgid
                {
                    kill_task = Some(self.kill_remote(&session, pgid));
                }
                // Something left the process group and holds the channel open: stop waiting.
                if at.elapsed() >= STOP_GRACE {
                    break;
                }
            }
        }
        marker.finish(&mut |b| sink(Stream::Stderr, b));

        let waited = match stop_at {
            None => Ok(child.wait().await),
            Some(_) => tokio::time::timeout(STOP_GRACE, child.wait()).await,
        };
        // Returning only once the kill is done means: after a timeout, the tree is gone.
        if let Some(task) = kill_task {
            let _ = tokio::time::timeout(STOP_GRACE, task).await;
        }
        let status = match waited {
            Err(_elapsed) => None,
            Ok(Ok(st)) if stop_at.is_none() => st.code(),
            Ok(Ok(_)) => None,
            // native mux reports exit code 127 as an error of its own.
            Ok(Err(openssh::Error::Remote(e))) if e.kind() == std::io::ErrorKind::NotFound => {
                Some(127)
            }
            Ok(Err(openssh::Error::RemoteProcessTerminated)) => {
                // Killed by a signal, or the connection died: only the master can tell.
                if stop_at.is_none() && session.check().await.is_err() {
                    return Err(self.lost(master_log_reason(session.control_socket())));
                }
                None
            }
            Ok(Err(e)) => return Err(self.lost(error_chain(&e))),
        };
        let mut st = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        st.commands += 1;
        st.bytes_sent += line.len() as u64 + cmd.stdin.as_ref().map_or(0, |d| d.len() as u64);
        st.bytes_received += received;
        Ok(Output {
            status,
            timed_out,
            ..Default::default()
        })
    }

    /// Kills process group `pgid` on the node (see [`shell::kill_group`]) over a channel of
    /// its own, without holding up the reading of the command's last output.
    fn kill_remote(&self, session: &Arc<Session>, pgid: u32) -> tokio::task::JoinHandle<()> {
        let line = shell::kill_group(pgid, self.become_.as_deref());
        let session = session.clone();
        let slots = self.kill_slots.clone();
        tokio::spawn(async move {
            let _permit = slots.acquire_owned().await;
            let _ = Session::to_raw_command(session, line)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        })
    }
}

impl Drop for SshTransport {
    /// A master cinch started itself is not ended by openssh when its session drops: end it
    /// here on error paths too (a persistent one is meant to stay).
    fn drop(&mut self) {
        if self.own.as_ref().is_none_or(|o| o.persist.is_some()) {
            return;
        }
        if let Conn::Up(session) = std::mem::replace(self.conn.get_mut(), Conn::Closed) {
            let ctl = session.control_socket().to_path_buf();
            let _ = openssh_mux_client::shutdown_mux_master(&ctl);
            if let Some(dir) = ctl.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

impl Transport for SshTransport {
    fn node(&self) -> &str {
        &self.node
    }

    fn connect(&self) -> Result<(), TransportError> {
        runtime()?.block_on(self.session()).map(|_| ())
    }

    fn run_streaming(
        &self,
        cmd: &Command,
        sink: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<Output, TransportError> {
        runtime()?.block_on(self.run_async(&cmd.fit_for_exec(), sink))
    }

    fn close(&self) -> Result<(), TransportError> {
        let rt = runtime()?;
        rt.block_on(async {
            let mut conn = self.conn.lock().await;
            let Conn::Up(session) = std::mem::replace(&mut *conn, Conn::Closed) else {
                return Ok(());
            };
            // `[ssh] persist`: the master stays for the next invocation (ControlPersist).
            if self.own.as_ref().is_some_and(|o| o.persist.is_some()) {
                return Ok(());
            }
            let ctl = session.control_socket().to_path_buf();
            let pid = master_pid(&ctl).await;
            // A kill still in flight may hold a reference for a moment.
            let mut shared = session;
            let give_up = Instant::now() + STOP_GRACE;
            let owned = loop {
                match Arc::try_unwrap(shared) {
                    Ok(s) => break Some(s),
                    Err(s) if Instant::now() < give_up => {
                        shared = s;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(_) => break None,
                }
            };
            // openssh's close() only asks the master to stop listening, and it then lingers
            // for a while; "terminate" (`ssh -O exit`) ends it at once.
            let res = openssh_mux_client::shutdown_mux_master(&ctl)
                .map_err(|e| self.lost(format!("closing the ssh master: {e}")));
            // Dropping the session removes its temporary directory.
            drop(owned);
            // Make sure the master is gone now rather than when ControlPersist runs out.
            if let Some(pid) = pid {
                reap_master(pid).await;
            }
            if let Some(dir) = ctl.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
            res
        })
    }

    fn stats(&self) -> Stats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads what is available from an optional pipe; `None` at end of stream. A missing pipe
/// never resolves, so `select!` simply stops polling it.
async fn read_some<R: AsyncRead + Unpin>(pipe: &mut Option<R>, buf: &mut [u8]) -> Option<usize> {
    match pipe {
        Some(p) => match p.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        },
        None => std::future::pending().await,
    }
}

/// Strips the `cinch-pgid:N` line the wrapper prints first on stderr, remembering N.
#[derive(Default)]
struct PgidFilter {
    pending: Vec<u8>,
    done: bool,
    pgid: Option<u32>,
}

impl PgidFilter {
    fn feed(&mut self, data: &[u8], out: &mut dyn FnMut(&[u8])) {
        if self.done {
            out(data);
            return;
        }
        self.pending.extend_from_slice(data);
        let marker = shell::PGID_MARKER.as_bytes();
        let prefix_ok = |p: &[u8]| {
            let n = p.len().min(marker.len());
            p[..n] == marker[..n]
        };
        if let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
            let line = &self.pending[..nl];
            let rest = if let Some(num) = line.strip_prefix(marker) {
                self.pgid = std::str::from_utf8(num).ok().and_then(|s| s.parse().ok());
                &self.pending[nl + 1..]
            } else {
                &self.pending[..]
            };
            if !rest.is_empty() {
                out(rest);
            }
            self.done = true;
            self.pending = Vec::new();
        } else if !prefix_ok(&self.pending) || self.pending.len() > marker.len() + 20 {
            out(&self.pending);
            self.done = true;
            self.pending = Vec::new();
        }
    }

    fn finish(&mut self, out: &mut dyn FnMut(&[u8])) {
        if !self.pending.is_empty() {
            out(&self.pending);
            self.pending.clear();
        }
        self.done = true;
    }
}

/// Wait before connection attempt `attempt + 1`: doubling from 250 ms up to 4 s, with
/// jitter so hundreds of refused nodes do not come back in step.
fn backoff(attempt: u32) -> Duration {
    let base = 250u64.saturating_mul(1 << attempt.min(4));
    Duration::from_millis(base + fastrand::u64(0..=base / 2))
}

/// A failed connection attempt: what ssh said, and the error for telling local resource
/// exhaustion and a busy sshd apart from a node that is really unreachable.
#[derive(Debug)]
struct Refusal {
    reason: String,
    /// The OS error of a local failure (starting ssh, opening its socket), when there was one.
    errno: Option<i32>,
}

impl Refusal {
    fn of(e: &openssh::Error, add_host_keys: bool) -> Self {
        let mut errno = None;
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if let Some(io) = err.downcast_ref::<std::io::Error>()
                && let Some(n) = io.raw_os_error()
            {
                errno = Some(n);
            }
            cur = err.source();
        }
        Refusal {
            reason: connect_reason(e, add_host_keys),
            errno,
        }
    }

    /// sshd dropped the connection before the key exchange: MaxStartups under load (or
    /// MaxSessions), which passes.
    fn busy(&self) -> bool {
        is_busy_refusal(&self.reason)
    }

    /// The local resource error (EMFILE, ENFILE, EAGAIN, ENOMEM) behind this failure.
    fn local(&self) -> Option<std::io::Error> {
        const LOCAL: [i32; 4] = [libc::EMFILE, libc::ENFILE, libc::EAGAIN, libc::ENOMEM];
        if let Some(n) = self.errno.filter(|n| LOCAL.contains(n)) {
            return Some(std::io::Error::from_raw_os_error(n));
        }
        // ssh itself ran out: it says so in its log.
        LOCAL
            .iter()
            .map(|&n| std::io::Error::from_raw_os_error(n))
            .find(|e| {
                let text = e.to_string();
                let text = text.split(" (os error").next().unwrap_or_default();
                self.reason.contains(text)
            })
    }
}

/// Whether ssh's words mean sshd refused a new connection under load rather than the node
/// being down or refusing us: `kex_exchange_identification: read: Connection reset by peer`,
/// `kex_exchange_identification: Connection closed by remote host`, `Connection closed by
/// 127.0.0.1 port 22` before any authentication.
pub fn is_busy_refusal(reason: &str) -> bool {
    reason.contains("kex_exchange_identification")
        || (reason.contains("Connection closed by")
            && !reason.contains("Permission denied")
            && !reason.contains("Authentication"))
}

/// A master cinch starts itself, for settings openssh's builder cannot pass: a key exchange
/// (`-o KexAlgorithms=`) and a master that outlives the invocation (`ControlPersist`). The
/// user's ssh_config still applies to everything else.
#[derive(Debug, Clone)]
struct OwnMaster {
    kex_algorithms: Option<String>,
    persist: Option<u64>,
    user: Option<String>,
    port: Option<u16>,
    config_file: Option<PathBuf>,
    known_hosts_file: Option<PathBuf>,
    connect_timeout: Option<Duration>,
}

impl OwnMaster {
    /// A persistent master's socket: the same for the same destination and options, so the
    /// next invocation finds it; a fresh private directory otherwise.
    fn socket(&self, dir: &Path, destination: &str) -> PathBuf {
        if self.persist.is_some() {
            let key = format!(
                "{destination}\0{:?}\0{:?}\0{:?}\0{:?}\0{:?}\0{:?}",
                self.user,
                self.port,
                self.config_file,
                self.known_hosts_file,
                self.kex_algorithms,
                self.persist
            );
            let hash = crate::diff::sha256_hex(key.as_bytes());
            dir.join(format!("p-{}", &hash[..20]))
        } else {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            dir.join(format!("k-{}-{n}", std::process::id()))
        }
    }

    /// Reuses a live persistent master, or starts one (`ssh -M -f -N`) and attaches to it.
    async fn connect(
        &self,
        dir: &Path,
        destination: &str,
        add_host_keys: bool,
    ) -> Result<Session, Refusal> {
        let local = |e: std::io::Error, what: &str| Refusal {
            reason: format!("{what}: {e}"),
            errno: e.raw_os_error(),
        };
        let home = self.socket(dir, destination);
        let ctl = home.join("master");
        let log = home.join("log");
        if self.persist.is_some() && master_pid(&ctl).await.is_some() {
            return Ok(Session::resume_mux(ctl.into_boxed_path(), None));
        }
        // A dead persistent master leaves its socket: start over in the same place.
        let _ = std::fs::remove_dir_all(&home);
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&home)
                .map_err(|e| local(e, "creating the control directory"))?;
        }
        let mut ssh = tokio::process::Command::new("ssh");
        ssh.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .arg("-E")
            .arg(&log)
            .arg("-S")
            .arg(&ctl)
            .args(["-M", "-f", "-N", "-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!(
                "ControlPersist={}",
                self.persist.unwrap_or(CONTROL_PERSIST_SECS as u64)
            ))
            .arg("-o")
            .arg(if add_host_keys {
                "StrictHostKeyChecking=accept-new"
            } else {
                "StrictHostKeyChecking=yes"
            });
        if let Some(kex) = &self.kex_algorithms {
            ssh.arg("-o").arg(format!("KexAlgorithms={kex}"));
        }
        if let Some(t) = self.connect_timeout {
            ssh.arg("-o")
                .arg(format!("ConnectTimeout={}", t.as_secs().max(1)));
        }
        if let Some(p) = self.port {
            ssh.arg("-p").arg(p.to_string());
        }
        if let Some(u) = &self.user {
            ssh.arg("-l").arg(u);
        }
        if let Some(f) = &self.config_file {
            ssh.arg("-F").arg(f);
        }
        if let Some(f) = &self.known_hosts_file {
            ssh.arg("-o")
                .arg(format!("UserKnownHostsFile={}", f.display()));
        }
        // `--` keeps a hostname starting with `-` from being read as an option.
        ssh.arg("--").arg(destination);
        let status = ssh.status().await.map_err(|e| local(e, "starting ssh"))?;
        if !status.success() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = std::fs::remove_dir_all(&home);
            let mut reason = condense_ssh_log(&text);
            if reason.is_empty() {
                reason = "ssh failed without saying why".into();
            }
            if !add_host_keys && reason.contains("you have requested strict checking") {
                reason.push_str(" (to accept an unknown host key once, use --add-host-keys)");
            }
            return Err(Refusal {
                reason,
                errno: None,
            });
        }
        Ok(Session::resume_mux(
            ctl.into_boxed_path(),
            Some(log.into_boxed_path()),
        ))
    }
}

/// The master's pid, asked over the mux socket (no extra process).
async fn master_pid(ctl: &Path) -> Option<i32> {
    let mut conn = openssh_mux_client::Connection::connect(ctl).await.ok()?;
    let pid = conn.send_alive_check().await.ok()?;
    i32::try_from(pid.get()).ok()
}

/// Whether `pid` still runs. A daemonized master that exited is a zombie until init reaps
/// it, which some inits do only every second or so: that counts as gone.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        // SAFETY: signal 0 only checks for existence.
        Err(_) => unsafe { libc::kill(pid, 0) == 0 },
    }
}

/// Waits briefly for the master to exit, then terminates it.
async fn reap_master(pid: i32) {
    for _ in 0..20 {
        if !alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // SAFETY: plain kill(2) of the ssh master we started.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

/// Every message in an error's source chain, because openssh keeps ssh's words in the source.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !parts.contains(&msg) {
            parts.push(msg);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// What ssh said when connecting failed, condensed to the lines that matter.
fn connect_reason(e: &openssh::Error, add_host_keys: bool) -> String {
    let text = match e {
        openssh::Error::Connect(io) => io.to_string(),
        other => return error_chain(other),
    };
    let mut reason = condense_ssh_log(&text);
    if reason.is_empty() {
        reason = "ssh failed without saying why".into();
    }
    if !add_host_keys && reason.contains("you have requested strict checking") {
        reason.push_str(" (to accept an unknown host key once, use --add-host-keys)");
    }
    reason
}

/// Why a master died, from the last lines of its log.
fn master_log_reason(ctl: &Path) -> String {
    let log = ctl.with_file_name("log");
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let reason = condense_ssh_log(&text);
    if reason.is_empty() {
        "the ssh connection was lost".into()
    } else {
        reason
    }
}

/// Keeps ssh's meaningful lines, dropping banners and noise; the man-in-the-middle warning
/// becomes one line plus the facts (which key, which file).
pub fn condense_ssh_log(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim().trim_start_matches("ssh: ").trim())
        .filter(|l| {
            !l.is_empty() && !l.starts_with('@') && !l.starts_with("Warning: Permanently added")
        })
        .collect();
    if text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        let mut out =
            vec!["REMOTE HOST IDENTIFICATION HAS CHANGED (possible man-in-the-middle attack)"];
        out.extend(lines.iter().copied().filter(|l| {
            l.starts_with("Offending")
                || l.starts_with("Host key for")
                || l.starts_with("Host key verification failed")
        }));
        return out.join("; ");
    }
    // Keep the last few lines: earlier ones are usually debug chatter from a verbose config.
    let start = lines.len().saturating_sub(4);
    lines[start..].join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(chunks: &[&[u8]]) -> (Option<u32>, Vec<u8>) {
        let mut f = PgidFilter::default();
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c, &mut |b| out.extend_from_slice(b));
        }
        f.finish(&mut |b| out.extend_from_slice(b));
        (f.pgid, out)
    }

    #[test]
    fn pgid_marker_is_stripped_even_when_split() {
        assert_eq!(
            filter(&[b"cinch-pg", b"id:42\nerr"]),
            (Some(42), b"err".to_vec())
        );
        assert_eq!(filter(&[b"cinch-pgid:7\n"]), (Some(7), Vec::new()));
    }

    #[test]
    fn other_stderr_passes_through_untouched() {
        assert_eq!(filter(&[b"sh: oops\n"]), (None, b"sh: oops\n".to_vec()));
        assert_eq!(filter(&[b"cin"]), (None, b"cin".to_vec()));
    }

    #[test]
    fn host_key_change_is_condensed() {
        let log = "@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@@@@\n\
                   IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\nOffending ED25519 key in /k:1\n\
                   Host key for [127.0.0.1]:2222 has changed and you have requested strict checking.\n\
                   Host key verification failed.\n";
        let r = condense_ssh_log(log);
        assert!(
            r.starts_with("REMOTE HOST IDENTIFICATION HAS CHANGED"),
            "{r}"
        );
        assert!(r.contains("Offending ED25519 key in /k:1"), "{r}");
        assert!(!r.contains("NASTY"), "{r}");
    }
}
