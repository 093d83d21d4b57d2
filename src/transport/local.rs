//! `transport = "local"`: the same commands, run on this machine with `sh -c`, with the same
//! semantics as ssh: clean locale, `become`, time limits and killing the whole process tree.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::{Command, Output, Stats, Stream, Transport, TransportError};
use crate::repo::Node;

/// How often a running command checks its deadline and the interrupt counter.
const TICK: Duration = Duration::from_millis(100);
/// After TERM, how long processes get before KILL.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// After KILL, how long we still wait for pipes held open by escaped processes.
const DRAIN_GRACE: Duration = Duration::from_secs(3);

/// Runs commands on the control machine itself.
pub struct LocalTransport {
    node: String,
    become_: Option<String>,
    stats: Mutex<Stats>,
}

impl LocalTransport {
    /// A transport for `node` (its `become` setting is honoured).
    pub fn new(node: &Node) -> Self {
        LocalTransport {
            node: node.name.clone(),
            become_: node.become_.clone(),
            stats: Mutex::new(Stats::default()),
        }
    }

    fn io_err(&self, context: &str, source: std::io::Error) -> TransportError {
        TransportError::Io {
            node: self.node.clone(),
            context: context.into(),
            source,
        }
    }

    fn spawn(&self, cmd: &Command) -> Result<std::process::Child, TransportError> {
        let line = crate::shell::command_line(&cmd.script, self.become_.as_deref());
        let mut c = std::process::Command::new("sh");
        c.arg("-c")
            .arg(line)
            // Its own process group: Ctrl-C on the terminal does not reach it (the first
            // Ctrl-C lets running commands finish), and a timeout can kill the whole tree.
            .process_group(0)
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().map_err(|e| self.io_err("starting sh", e))
    }

    /// Signals the process group `pgid`; through `become` when set, since the group then
    /// belongs to another user.
    fn signal_group(&self, pgid: u32, kill: bool) {
        if self.become_.is_some() {
            if kill {
                return; // the become'd kill script escalates to KILL by itself
            }
            let line = crate::shell::kill_group(pgid, self.become_.as_deref());
            let _ = std::process::Command::new("sh")
                .arg("-c")
                .arg(line)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map(|mut c| std::thread::spawn(move || c.wait()));
            return;
        }
        let sig = if kill { libc::SIGKILL } else { libc::SIGTERM };
        if let Ok(pg) = libc::pid_t::try_from(pgid) {
            // SAFETY: killpg has no memory-safety preconditions; a stale pgid only yields ESRCH.
            unsafe {
                libc::killpg(pg, sig);
            }
        }
    }
}

impl Transport for LocalTransport {
    fn node(&self) -> &str {
        &self.node
    }

    fn run_streaming(
        &self,
        cmd: &Command,
        sink: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<Output, TransportError> {
        let started = Instant::now();
        let cmd = &*cmd.fit_for_exec();
        let mut child = self.spawn(cmd)?;
        let pgid = child.id();
        let stdin = child.stdin.take();
        let data = cmd.stdin.clone();
        // A command that does not read its stdin closes the pipe: that is not an error.
        let writer = std::thread::spawn(move || {
            if let (Some(mut pipe), Some(data)) = (stdin, data) {
                let _ = pipe.write_all(&data);
            }
        });
        let no_pipe = || std::io::Error::other("no pipe");
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| self.io_err("stdout", no_pipe()))?;
        let mut stderr = child
            .stderr
            .take()
            .ok_or_else(|| self.io_err("stderr", no_pipe()))?;
        let (tx, rx) = std::sync::mpsc::channel::<(Stream, Vec<u8>)>();
        let tx2 = tx.clone();
        std::thread::spawn(move || pump(&mut stdout, Stream::Stdout, &tx));
        std::thread::spawn(move || pump(&mut stderr, Stream::Stderr, &tx2));

        let deadline = cmd.timeout.map(|t| started + t);
        let mut timed_out = false;
        let mut stopped_at: Option<Instant> = None;
        let mut killed = false;
        let mut received = 0u64;
        let mut pipes_open = true;
        let mut exited = None;
        loop {
            if pipes_open {
                match rx.recv_timeout(TICK) {
                    Ok((s, chunk)) => {
                        received += chunk.len() as u64;
                        sink(s, &chunk);
                    }
                    Err(RecvTimeoutError::Disconnected) => pipes_open = false,
                    Err(RecvTimeoutError::Timeout) => {}
                }
            }
            if !pipes_open {
                // Output is done; the process may still run with its pipes closed.
                match child.try_wait() {
                    Ok(Some(st)) => {
                        exited = Some(st);
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                    Err(e) => return Err(self.io_err("waiting for sh", e)),
                }
            }
            match stopped_at {
                None => {
                    let expired = deadline.is_some_and(|d| Instant::now() >= d);
                    if expired || crate::interrupt::abandon(cmd.cleanup) {
                        timed_out = expired;
                        self.signal_group(pgid, false);
                        stopped_at = Some(Instant::now());
                    }
                }
                Some(at) => {
                    if !killed && at.elapsed() >= KILL_GRACE {
                        self.signal_group(pgid, true);
                        killed = true;
                    }
                    // Something left the process group and holds our pipes: stop waiting.
                    if at.elapsed() >= KILL_GRACE + DRAIN_GRACE {
                        break;
                    }
                }
            }
        }
        let status = match exited {
            Some(st) => st,
            None => child.wait().map_err(|e| self.io_err("waiting for sh", e))?,
        };
        drop(writer);
        let mut st = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        st.commands += 1;
        st.bytes_sent += cmd.script.len() as u64 + cmd.stdin.as_ref().map_or(0, |d| d.len() as u64);
        st.bytes_received += received;
        Ok(Output {
            status: if stopped_at.is_some() {
                None
            } else {
                status.code()
            },
            timed_out,
            ..Default::default()
        })
    }

    fn close(&self) -> Result<(), TransportError> {
        Ok(())
    }

    fn stats(&self) -> Stats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn pump(r: &mut impl Read, s: Stream, tx: &Sender<(Stream, Vec<u8>)>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send((s, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
}
