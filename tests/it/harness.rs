//! A small builder over a temporary repo, so tests read like user stories:
//! `TestRepo::new().file("nodes.toml", "...").cinch(&["apply", "web1"]).expect_code(0)`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A repo in a temporary directory, deleted when dropped.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

/// What one `cinch` invocation produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts the exit code, showing all output when it differs.
    #[track_caller]
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts stdout contains `needle`.
    #[track_caller]
    pub fn stdout_has(self, needle: &str) -> Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts stderr contains `needle`.
    #[track_caller]
    pub fn stderr_has(self, needle: &str) -> Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Stdout parsed as JSON lines.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect()
    }
}

impl TestRepo {
    /// An empty repo directory (with an empty `bundles/`).
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cinch-test")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("bundles")).expect("bundles dir");
        TestRepo {
            dir,
            env: vec![("CINCH_IDENTITY".into(), "tester".into())],
        }
    }

    /// The repo's root.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file relative to the repo root, creating parent directories.
    pub fn file(self, rel: &str, content: &str) -> Self {
        self.write(rel, content);
        self
    }

    /// Like [`TestRepo::file`] but by reference, for tests that change a repo between runs.
    pub fn write(&self, rel: &str, content: &str) {
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, content).expect("write");
    }

    /// Sets an environment variable for every cinch run.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs `cinch -r REPO ARGS...` and captures everything.
    pub fn cinch(&self, args: &[&str]) -> Run {
        let mut cmd = cinch_command();
        cmd.arg("-r").arg(self.dir.path()).args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        run(cmd)
    }
}

impl TestRepo {
    /// Like [`TestRepo::cinch`] with extra environment variables for this run only.
    pub fn cinch_env(&self, env: &[(&str, &str)], args: &[&str]) -> Run {
        let mut cmd = cinch_command();
        cmd.arg("-r").arg(self.dir.path()).args(args);
        for (k, v) in self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(env.iter().copied())
        {
            cmd.env(k, v);
        }
        run(cmd)
    }
}

/// The binary under test, with a clean environment for repo discovery.
pub fn cinch_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cinch"));
    cmd.env_remove("CINCH_REPO").env("NO_COLOR", "1");
    cmd
}

/// Runs a prepared command, capturing output.
pub fn run(mut cmd: Command) -> Run {
    let out = cmd.output().expect("running cinch");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Path of the repo-template shipped with cinch.
pub fn repo_template() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("repo-template")
}

/// Processes whose command line matches `pattern` (`pgrep -a -f`), one line each.
pub fn pgrep(pattern: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-a", "-f", pattern])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits up to 6 s for every process matching `pattern` to exit; returns those still there.
pub fn wait_until_gone(pattern: &str) -> Vec<String> {
    let start = std::time::Instant::now();
    loop {
        let left = pgrep(pattern);
        if left.is_empty() || start.elapsed() > std::time::Duration::from_secs(6) {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Runs cinch with `args`, sends `signal` after `after`, and returns the run once it exits;
/// fails (killing it) if it is still running 20 s after the signal.
pub fn signalled(r: &TestRepo, args: &[&str], signal: i32, after: std::time::Duration) -> Run {
    let mut cmd = cinch_command();
    cmd.arg("-r").arg(r.path()).args(args);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawning cinch");
    std::thread::sleep(after);
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, signal) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().expect("waiting for cinch").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reaping cinch");
            panic!(
                "cinch ignored signal {signal} for 20 s\n--- stderr\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("reaping cinch");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
