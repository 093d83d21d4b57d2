//! A private sshd for tests: `/usr/sbin/sshd` on 127.0.0.1 on a free port, with host and
//! client keys generated in a temp dir, and an ssh_config with node aliases `node1..nodeN`
//! pointing at it (host key pre-trusted). Nothing touches the system sshd or port 22.
//!
//! ```ignore
//! let sshd = Sshd::start(5);
//! let repo = TestRepo::new()
//!     .file("cinch.toml", &sshd.cinch_toml())
//!     .file("nodes.toml", &sshd.nodes_toml(5));
//! repo.cinch(&["run", "all", "true"]).expect_code(0);
//! ```
//!
//! Root's `~/.bashrc` on these machines is slow (pyenv init), and bash sources it even for
//! `bash -c` when started by sshd. The test sshd therefore sets `SetEnv HOME=<tempdir>/home`
//! (server-side `SetEnv`, OpenSSH >= 8.7): the login shell finds an empty home and starts in
//! milliseconds, while commands still run as the real user with the real PATH.

#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

/// A running private sshd; stopped when dropped.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// How many `nodeN` aliases the ssh_config has.
    pub nodes: usize,
    /// The user the aliases log in as (the current user).
    pub user: String,
    child: Child,
}

/// Runs a command to completion, panicking with its output if it fails.
fn must(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Generates an ed25519 key pair at `path` (and `path.pub`); returns the public key line.
pub fn keygen(path: &Path) -> String {
    must(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "cinch-test", "-f"])
            .arg(path),
    );
    std::fs::read_to_string(path.with_extension("pub"))
        .expect("read public key")
        .trim()
        .to_string()
}

fn current_user() -> String {
    must(Command::new("id").arg("-un")).trim().to_string()
}

impl Sshd {
    /// Starts an sshd with `nodes` aliases. Panics (never skips) when sshd is missing.
    pub fn start(nodes: usize) -> Sshd {
        Self::start_with(nodes, "")
    }

    /// Like [`Sshd::start`] with `extra` lines first in sshd_config (the first value of an
    /// option wins there), e.g. a tight `MaxStartups`.
    pub fn start_with(nodes: usize, extra: &str) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server (apt-get install -y openssh-server)"
        );
        // sshd insists on its privilege-separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        // A port can be taken between probing and binding by a parallel test: retry.
        for _attempt in 0..8 {
            if let Some(sshd) = Self::try_start(nodes, extra) {
                return sshd;
            }
        }
        panic!("sshd could not bind a free port in 8 attempts");
    }

    fn try_start(nodes: usize, extra: &str) -> Option<Sshd> {
        let dir = tempfile::Builder::new()
            .prefix("cinch-sshd")
            .tempdir()
            .expect("tempdir");
        let d = dir.path().to_path_buf();
        let host_pub = keygen(&d.join("host_key"));
        let client_pub = keygen(&d.join("client_key"));
        std::fs::write(d.join("authorized_keys"), format!("{client_pub}\n"))
            .expect("authorized_keys");
        std::fs::create_dir_all(d.join("home")).expect("home");
        std::fs::create_dir_all(d.join("nodes")).expect("nodes dir");
        let port = free_port();
        let config = d.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "{extra}Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
                 AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nMaxSessions 20\nMaxStartups 100:30:200\n\
                 PidFile none\nSetEnv HOME={d}/home\nLogLevel INFO\n",
                d = d.display()
            ),
        )
        .expect("sshd_config");
        let log = std::fs::File::create(d.join("sshd.log")).expect("sshd.log");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting sshd");
        let mut sshd = Sshd {
            dir,
            port,
            nodes,
            user: current_user(),
            child,
        };
        if !sshd.wait_listening() {
            let log = sshd.log();
            assert!(
                log.contains("Address already in use") || log.contains("Cannot bind"),
                "sshd did not start:\n{log}"
            );
            return None;
        }
        sshd.write_client_files(&host_pub);
        Some(sshd)
    }

    /// True once sshd logged that it listens; false if it exited first.
    fn wait_listening(&mut self) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if self.log().contains("Server listening on") {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("sshd did not start within 20 s:\n{}", self.log());
    }

    fn write_client_files(&self, host_pub: &str) {
        let d = self.dir.path();
        let key = host_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        std::fs::write(
            self.known_hosts(),
            format!("[127.0.0.1]:{} {key}\n", self.port),
        )
        .expect("known_hosts");
        let aliases: Vec<String> = (1..=self.nodes).map(|i| format!("node{i}")).collect();
        std::fs::write(
            self.ssh_config(),
            format!(
                "Host {aliases}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  \
                 IdentityFile {d}/client_key\n  IdentitiesOnly yes\n  UserKnownHostsFile {kh}\n  \
                 GlobalKnownHostsFile /dev/null\n  LogLevel ERROR\n",
                aliases = aliases.join(" "),
                port = self.port,
                user = self.user,
                d = d.display(),
                kh = self.known_hosts().display(),
            ),
        )
        .expect("ssh_config");
    }

    /// The ssh_config with the node aliases (`ssh -F`).
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    /// The known_hosts file that trusts this sshd's host key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// The client's private key.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// The sshd's public host key line (`ssh-ed25519 AAAA...`).
    pub fn host_key(&self) -> String {
        let line = std::fs::read_to_string(self.dir.path().join("host_key.pub")).expect("host key");
        line.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The alias of node `i` (1-based).
    pub fn alias(i: usize) -> String {
        format!("node{i}")
    }

    /// A cinch.toml that makes a repo use this sshd's ssh_config.
    pub fn cinch_toml(&self) -> String {
        format!(
            "[ssh]\nconfig_file = {:?}\n",
            self.ssh_config().display().to_string()
        )
    }

    /// nodes.toml with `node1..nodeN` (N <= the aliases started).
    pub fn nodes_toml(&self, n: usize) -> String {
        assert!(n <= self.nodes, "only {} aliases", self.nodes);
        (1..=n).map(|i| format!("[nodes.node{i}]\n")).collect()
    }

    /// A directory that belongs to one node, so nodes sharing this machine do not collide.
    pub fn node_dir(&self, node: &str) -> PathBuf {
        let p = self.dir.path().join("nodes").join(node);
        std::fs::create_dir_all(&p).expect("node dir");
        p
    }

    /// Everything sshd logged so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("sshd.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Ensures a local user `name` exists (with a shell), for tests that log in as someone
    /// else than root; with `sudo_nopasswd` it may run anything through `sudo -n`.
    /// Needs root; panics otherwise.
    pub fn ensure_user(name: &str, sudo_nopasswd: bool) {
        static LOCK: Mutex<()> = Mutex::new(());
        let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(current_user(), "root", "creating test users needs root");
        let exists = Command::new("id")
            .arg(name)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !exists {
            must(Command::new("useradd").args(["--create-home", "--shell", "/bin/sh", name]));
        }
        // useradd leaves the account locked ("!"), which sshd without PAM refuses even for
        // key logins; "*" means "no password" without locking.
        must(Command::new("usermod").args(["-p", "*", name]));
        let sudoers = PathBuf::from(format!("/etc/sudoers.d/{name}"));
        if sudo_nopasswd && !sudoers.exists() {
            std::fs::write(&sudoers, format!("{name} ALL=(ALL:ALL) NOPASSWD: ALL\n"))
                .expect("sudoers");
            must(Command::new("chmod").arg("0440").arg(&sudoers));
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A TCP port on 127.0.0.1 where nothing listens (connections are refused).
pub fn closed_port() -> u16 {
    free_port()
}

/// `ssh` master processes and control sockets of this user that mention `needle` — used to
/// prove cinch leaves none behind.
pub fn leftover_masters(needle: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-a", "-f", &format!("ssh .*-M.*{needle}")])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}
