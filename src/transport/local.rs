//! `transport = "local"`: the same commands, run on this machine with `sh -c`.

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::Mutex;

use super::{Command, Output, Stats, Stream, Transport, TransportError};
use crate::repo::Node;

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

    fn spawn(&self, cmd: &Command) -> Result<std::process::Child, TransportError> {
        let mut c = match &self.become_ {
            Some(wrapper) => {
                let mut c = std::process::Command::new(wrapper);
                c.args(["-n", "sh", "-c", &cmd.script]);
                c
            }
            None => {
                let mut c = std::process::Command::new("sh");
                c.args(["-c", &cmd.script]);
                c
            }
        };
        c.stdin(if cmd.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        c.spawn().map_err(|source| TransportError::Io {
            node: self.node.clone(),
            context: "starting sh".into(),
            source,
        })
    }
}

impl Transport for LocalTransport {
    fn run(&self, cmd: &Command) -> Result<Output, TransportError> {
        let mut out = Output::default();
        let (mut so, mut se) = (Vec::new(), Vec::new());
        let res = self.run_streaming(cmd, &mut |s, b| match s {
            Stream::Stdout => so.extend_from_slice(b),
            Stream::Stderr => se.extend_from_slice(b),
        })?;
        out.status = res.status;
        out.timed_out = res.timed_out;
        out.stdout = so;
        out.stderr = se;
        Ok(out)
    }

    fn run_streaming(
        &self,
        cmd: &Command,
        sink: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<Output, TransportError> {
        let mut child = self.spawn(cmd)?;
        let io_err = |context: &str, source| TransportError::Io {
            node: self.node.clone(),
            context: context.into(),
            source,
        };
        let stdin = child.stdin.take();
        let data = cmd.stdin.clone();
        let writer = std::thread::spawn(move || {
            if let (Some(mut pipe), Some(data)) = (stdin, data) {
                let _ = pipe.write_all(&data);
            }
        });
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| io_err("stdout", std::io::Error::other("no pipe")))?;
        let mut stderr = child
            .stderr
            .take()
            .ok_or_else(|| io_err("stderr", std::io::Error::other("no pipe")))?;
        let (tx, rx) = std::sync::mpsc::channel::<(Stream, Vec<u8>)>();
        let tx2 = tx.clone();
        let r1 = std::thread::spawn(move || pump(&mut stdout, Stream::Stdout, &tx));
        let r2 = std::thread::spawn(move || pump(&mut stderr, Stream::Stderr, &tx2));
        let mut received = 0u64;
        for (s, chunk) in rx {
            received += chunk.len() as u64;
            sink(s, &chunk);
        }
        let _ = r1.join();
        let _ = r2.join();
        let _ = writer.join();
        let status = child.wait().map_err(|e| io_err("waiting for sh", e))?;
        let mut st = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        st.commands += 1;
        st.bytes_sent += cmd.script.len() as u64 + cmd.stdin.as_ref().map_or(0, |d| d.len() as u64);
        st.bytes_received += received;
        Ok(Output {
            status: status.code(),
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

fn pump(r: &mut impl Read, s: Stream, tx: &std::sync::mpsc::Sender<(Stream, Vec<u8>)>) {
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
