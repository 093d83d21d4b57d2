//! `cinch apply` end to end: the real binary, real repos, the local transport on temp dirs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::{Run, TestRepo, cinch_command};

/// A repo with one local node `n1` whose bundle `b` has `items` (TOML), and a scratch dir
/// (`@` in `items` is replaced by its path).
pub struct Scene {
    pub repo: TestRepo,
    pub dir: tempfile::TempDir,
}

impl Scene {
    pub fn new(items: &str) -> Scene {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = TestRepo::new();
        let locks = repo.path().join("locks");
        repo.write(
            "nodes.toml",
            &format!(
                "[nodes.n1]\ntransport = \"local\"\nbundles = [\"b\"]\nlock_dir = \"{}\"\n",
                locks.display()
            ),
        );
        let s = Scene { repo, dir };
        s.items(items);
        s
    }

    /// Replaces the bundle's items.
    pub fn items(&self, items: &str) {
        self.repo
            .write("bundles/b/items.toml", &items.replace('@', self.root()));
    }

    pub fn root(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 temp path")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn cinch(&self, args: &[&str]) -> Run {
        self.repo.cinch(args)
    }

    /// `apply n1 --json` and its summary object.
    pub fn apply_json(&self, extra: &[&str]) -> (Run, serde_json::Value) {
        let mut args = vec!["--json", "apply", "n1"];
        args.extend_from_slice(extra);
        let run = self.cinch(&args);
        let summary = run
            .json_lines()
            .into_iter()
            .find(|l| l["event"] == "summary")
            .unwrap_or_else(|| panic!("no summary\n{}\n{}", run.stdout, run.stderr));
        (run, summary)
    }
}

fn mtime(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

const BASIC: &str = r#"
[directories."@/app"]
mode = "0750"

[files."@/app/a.conf"]
content = "a = 1\n"
mode = "0640"
triggers = ["action:hello"]

[files."@/app/tpl"]
content = "name={{ node.name }}\n"
content_type = "jinja2"

[symlinks."@/app/current"]
target = "@/app/a.conf"

[actions.hello]
command = "echo hi"
triggered = true
"#;

#[test]
fn second_apply_fixes_nothing_and_touches_nothing() {
    let s = Scene::new(BASIC);
    let run = s.cinch(&["apply", "n1"]).expect_code(0);
    assert!(
        run.stdout.contains("file:") && run.stdout.contains("created"),
        "{}",
        run.stdout
    );
    assert_eq!(
        std::fs::read_to_string(s.path("app/a.conf")).unwrap(),
        "a = 1\n"
    );
    assert_eq!(
        std::fs::read_to_string(s.path("app/tpl")).unwrap(),
        "name=n1\n"
    );
    assert_eq!(mode(&s.path("app")), 0o750);
    assert_eq!(mode(&s.path("app/a.conf")), 0o640);
    let before = mtime(&s.path("app/a.conf"));
    std::thread::sleep(Duration::from_millis(20));

    let (_, summary) = s.apply_json(&[]);
    let n = &summary["nodes"][0];
    assert_eq!(n["fixed"], 0, "{summary}");
    assert_eq!(n["ok"], 4, "{summary}");
    assert_eq!(n["skipped"], 1, "the action is not triggered: {summary}");
    assert_eq!(
        n["commands"], 2,
        "the first unchanged apply is two remote commands (lock + probe, release + steady marker; later ones are one, tests/it/steady.rs): {summary}"
    );
    assert_eq!(mtime(&s.path("app/a.conf")), before);
}

#[test]
fn files_are_fixed_and_deleted() {
    let s = Scene::new(BASIC);
    s.cinch(&["apply", "n1"]).expect_code(0);
    std::fs::write(s.path("app/a.conf"), "a = 2\n").unwrap();
    std::fs::set_permissions(
        s.path("app/tpl"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let run = s.cinch(&["apply", "n1"]).expect_code(0);
    assert!(
        run.stdout.contains("-a = 2") && run.stdout.contains("+a = 1"),
        "{}",
        run.stdout
    );
    assert_eq!(
        std::fs::read_to_string(s.path("app/a.conf")).unwrap(),
        "a = 1\n"
    );
    s.items("[files.\"@/app/a.conf\"]\ndelete = true\n");
    s.cinch(&["apply", "n1"])
        .expect_code(0)
        .stdout_has("deleted");
    assert!(!s.path("app/a.conf").exists());
}

#[test]
fn purge_removes_unmanaged_entries_with_odd_names() {
    let s = Scene::new(
        r#"
[directories."@/p"]
purge = true
[files."@/p/keep me"]
content = "k\n"
[directories."@/p/sub"]
"#,
    );
    std::fs::create_dir(s.path("p")).unwrap();
    for n in [
        "a b",
        "it's",
        "`x`",
        "nl\nnl",
        "ünï",
        ".dot",
        "$(touch HACKED)",
    ] {
        std::fs::write(s.path("p").join(n), "junk").unwrap();
    }
    std::fs::create_dir(s.path("p/old dir")).unwrap();
    std::fs::write(s.path("p/old dir/f"), "x").unwrap();
    s.cinch(&["apply", "n1"]).expect_code(0);
    let mut left: Vec<String> = std::fs::read_dir(s.path("p"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["keep me", "sub"]);
    assert!(!s.path("HACKED").exists() && !Path::new("HACKED").exists());
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(summary["total"]["fixed"], 0, "{summary}");
}

#[test]
fn symlink_replaces_a_directory_and_a_file() {
    let s = Scene::new(
        r#"
[symlinks."@/l1"]
target = "/etc"
[symlinks."@/l2"]
target = "relative/target"
"#,
    );
    std::fs::create_dir(s.path("l1")).unwrap();
    std::fs::write(s.path("l1/x"), "x").unwrap();
    std::fs::write(s.path("l2"), "file").unwrap();
    s.cinch(&["apply", "n1"]).expect_code(0);
    assert_eq!(std::fs::read_link(s.path("l1")).unwrap(), Path::new("/etc"));
    assert_eq!(
        std::fs::read_link(s.path("l2")).unwrap(),
        Path::new("relative/target")
    );
}

#[test]
fn failing_action_fails_the_run_and_skips_what_needs_it() {
    let s = Scene::new(
        r#"
[actions.bad]
command = "echo broken-stderr >&2; exit 4"
[actions.after]
command = "touch @/after-ran"
needs = ["action:bad"]
[actions.listed]
command = "exit 3"
expected_return_code = [0, 3]
[actions.stdin]
command = "cat > @/stdin-got"
data_stdin = "fed via stdin\n"
[actions.stdout]
command = "echo yes"
expected_stdout = "yes\n"
"#,
    );
    let run = s.cinch(&["apply", "n1"]).expect_code(1);
    assert!(run.stderr.contains("action:bad  failed"), "{}", run.stderr);
    assert!(
        run.stderr.contains("return code 4, expected 0"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("broken-stderr"), "{}", run.stderr);
    assert!(
        run.stdout
            .contains("action:after  skipped (dependency failed: action:bad)"),
        "{}",
        run.stdout
    );
    assert!(!s.path("after-ran").exists());
    assert_eq!(
        std::fs::read_to_string(s.path("stdin-got")).unwrap(),
        "fed via stdin\n"
    );
    assert!(
        run.stdout.contains("action:listed  succeeded"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("action:stdout  succeeded"),
        "{}",
        run.stdout
    );
}

#[test]
fn triggered_action_runs_only_when_its_trigger_changed() {
    let s = Scene::new(
        r#"
[files."@/conf"]
content = "v1\n"
triggers = ["action:reload"]
[actions.reload]
command = "echo reload >> @/log"
triggered = true
[actions.guarded]
command = "echo guarded >> @/log"
unless = "test -f @/conf"
needs = ["file:@/conf"]
"#,
    );
    s.cinch(&["apply", "n1"]).expect_code(0);
    assert_eq!(std::fs::read_to_string(s.path("log")).unwrap(), "reload\n");
    s.cinch(&["apply", "n1"]).expect_code(0);
    assert_eq!(std::fs::read_to_string(s.path("log")).unwrap(), "reload\n");
    std::fs::write(s.path("conf"), "drift\n").unwrap();
    s.cinch(&["apply", "n1"]).expect_code(0);
    assert_eq!(
        std::fs::read_to_string(s.path("log")).unwrap(),
        "reload\nreload\n"
    );
}

#[test]
fn missing_parent_directory_is_a_clear_failure() {
    let s = Scene::new("[files.\"@/no/such/dir/f\"]\ncontent = \"x\"\n");
    let run = s.cinch(&["apply", "n1"]).expect_code(1);
    assert!(
        run.stderr.contains("parent directory") && run.stderr.contains("/no/such/dir"),
        "{}",
        run.stderr
    );
}

#[test]
fn managed_parent_directory_is_created_first() {
    let s = Scene::new("[files.\"@/d/f\"]\ncontent = \"x\"\n[directories.\"@/d\"]\n");
    s.cinch(&["apply", "n1"]).expect_code(0);
    assert_eq!(std::fs::read_to_string(s.path("d/f")).unwrap(), "x");
}

#[test]
fn template_error_names_file_and_line_and_changes_nothing() {
    let s = Scene::new(
        "[files.\"@/ok\"]\ncontent = \"fine\"\n[files.\"@/t\"]\nsource = \"t.j2\"\ncontent_type = \"jinja2\"\n",
    );
    s.repo
        .write("bundles/b/files/t.j2", "line one\n{{ node.nmae }}\n");
    let run = s.cinch(&["apply", "n1"]).expect_code(2);
    assert!(run.stderr.contains("t.j2:2"), "{}", run.stderr);
    assert!(
        !s.path("ok").exists(),
        "nothing may be applied when the repo is broken"
    );
}

#[test]
fn unreachable_node_does_not_stop_the_others() {
    let s = Scene::new("[files.\"@/f\"]\ncontent = \"x\"\n");
    s.repo.write(
        "nodes.toml",
        &format!(
            "[nodes.n1]\ntransport = \"local\"\nbundles = [\"b\"]\nlock_dir = \"{locks}\"\n\
             [nodes.broken]\ntransport = \"local\"\nbundles = [\"b\"]\nbecome = \"/nonexistent/become-wrapper\"\n",
            locks = s.repo.path().join("locks").display()
        ),
    );
    let run = s.cinch(&["apply", "n1,broken"]).expect_code(1);
    assert!(run.stderr.contains("broken"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(s.path("f")).unwrap(), "x");
    assert!(run.stdout.contains("total (2 nodes)"), "{}", run.stdout);
}

#[test]
fn sensitive_content_is_never_printed() {
    let s = Scene::new(
        "[files.\"@/secret\"]\ncontent = \"s3cr3t-new\\n\"\nsensitive = true\n\
         [files.\"@/missing/secret\"]\ncontent = \"s3cr3t-fail\\n\"\nsensitive = true\n",
    );
    std::fs::write(s.path("secret"), "s3cr3t-old\n").unwrap();
    for args in [
        vec!["verify", "n1"],
        vec!["--json", "verify", "n1"],
        vec!["apply", "n1", "-v"],
    ] {
        let run = s.cinch(&args);
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(!all.contains("s3cr3t"), "{args:?} leaked:\n{all}");
    }
    std::fs::write(s.path("secret"), "s3cr3t-old\n").unwrap();
    let run = s.cinch(&["--json", "apply", "n1"]);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(!all.contains("s3cr3t"), "leaked:\n{all}");
    assert_eq!(
        std::fs::read_to_string(s.path("secret")).unwrap(),
        "s3cr3t-new\n"
    );
    let run = s.cinch(&["apply", "n1"]);
    assert!(!format!("{}{}", run.stdout, run.stderr).contains("s3cr3t"));
}

#[test]
fn only_pulls_in_needs_and_skip_leaves_out() {
    let s = Scene::new(
        r#"
[directories."@/d"]
[files."@/d/a"]
content = "a"
[files."@/b"]
content = "b"
[files."@/c"]
content = "c"
"#,
    );
    s.cinch(&["apply", "n1", "-o", &format!("file:{}/d/a", s.root())])
        .expect_code(0);
    assert!(
        s.path("d/a").exists(),
        "the directory it needs was pulled in"
    );
    assert!(!s.path("b").exists() && !s.path("c").exists());
    s.cinch(&["apply", "n1", "-s", &format!("file:{}/b", s.root())])
        .expect_code(0);
    assert!(!s.path("b").exists() && s.path("c").exists());
}

#[test]
fn json_output_is_events_then_a_summary() {
    let s = Scene::new(BASIC);
    let (run, summary) = s.apply_json(&[]);
    let lines = run.json_lines();
    let names: Vec<&str> = lines.iter().filter_map(|l| l["event"].as_str()).collect();
    assert_eq!(names.first(), Some(&"apply_start"));
    assert!(names.contains(&"node_apply_start") && names.contains(&"item_apply_end"));
    assert!(names.contains(&"action_run_end"));
    assert_eq!(names.last(), Some(&"summary"));
    assert_eq!(summary["total"]["fixed"], 5, "{summary}");
}

#[test]
fn interrupted_apply_finishes_running_work_and_exits_130() {
    let s = Scene::new(
        r#"
[actions.slow]
command = "sleep 1; touch @/slow-done"
[actions.next]
command = "touch @/next-ran"
needs = ["action:slow"]
"#,
    );
    let mut cmd = cinch_command();
    cmd.arg("-r").arg(s.repo.path()).args(["apply", "n1"]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.path("slow-done").exists(), "running work finishes");
    assert!(!s.path("next-ran").exists(), "no new work starts");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("node"),
        "summary is printed"
    );
}

#[test]
fn killed_apply_never_leaves_a_partial_file() {
    let s = Scene::new("[files.\"@/big\"]\nsource = \"big\"\ncontent_type = \"binary\"\n");
    let big: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::create_dir_all(s.repo.path().join("bundles/b/files")).unwrap();
    std::fs::write(s.repo.path().join("bundles/b/files/big"), &big).unwrap();
    std::fs::write(s.path("big"), "old\n").unwrap();
    // A `become` wrapper that lets 1 MiB of an upload through, then stalls: cinch is killed
    // while the node holds a partial temp file.
    let wrapper = s.path("stall");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\nshift\nif [ -p /dev/stdin ]; then\n  { head -c 1048576; sleep 2; cat; } | \"$@\"\nelse\n  exec \"$@\"\nfi\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    s.repo.write(
        "nodes.toml",
        &format!(
            "[nodes.n1]\ntransport = \"local\"\nbundles = [\"b\"]\nbecome = \"{}\"\nlock_dir = \"{}\"\n",
            wrapper.display(),
            s.repo.path().join("locks").display()
        ),
    );
    let tmps = || -> Vec<PathBuf> {
        std::fs::read_dir(s.dir.path())
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(".cinch-tmp-"))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut cmd = cinch_command();
    cmd.arg("-r").arg(s.repo.path()).args(["apply", "n1"]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tmps().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        !tmps().is_empty(),
        "the upload goes through a temp file beside the target"
    );
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(
        std::fs::read(s.path("big")).unwrap(),
        b"old\n",
        "target untouched mid-upload"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tmps().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        tmps().is_empty(),
        "the node side removes its partial temp file"
    );
    assert_eq!(std::fs::read(s.path("big")).unwrap(), b"old\n");
    // A SIGKILLed apply cannot give its hard lock back: the next apply is refused until the
    // user forces it (or the lock goes stale after 8 h).
    s.cinch(&["apply", "n1"])
        .expect_code(1)
        .stderr_has("locked by");
    // And a forced apply afterwards writes the whole file.
    s.cinch(&["apply", "n1", "--force"]).expect_code(0);
    assert!(std::fs::read(s.path("big")).unwrap() == big);
}

/// `cinch ARGS` on a real pseudo-terminal (util-linux `script`), driven key by key.
struct Pty {
    child: Option<std::process::Child>,
    keys: Option<std::process::ChildStdin>,
    out: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Pty {
    fn spawn(repo: &TestRepo, args: &str) -> Pty {
        use std::io::Read;
        let inner = format!(
            "'{}' -r '{}' {args}",
            env!("CARGO_BIN_EXE_cinch"),
            repo.path().display()
        );
        let mut child = std::process::Command::new("script")
            .args(["-qec", &inner, "/dev/null"])
            .env("NO_COLOR", "1")
            .env("CINCH_IDENTITY", "tester")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("util-linux `script` is needed for the -i tests (apt-get install bsdutils)");
        let keys = child.stdin.take();
        let mut stdout = child.stdout.take().expect("stdout");
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().expect("output").push_str(&text);
            }
        });
        Pty {
            child: Some(child),
            keys,
            out,
        }
    }

    fn output(&self) -> String {
        self.out.lock().expect("output").clone()
    }

    /// Waits until the `n`th question is on screen, then presses `key` (no Enter).
    fn answer(&mut self, n: usize, key: &str) {
        use std::io::Write;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.output().matches("[Y/n/q]").count() < n {
            assert!(
                Instant::now() < deadline,
                "question {n} never came:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Let cinch switch the terminal to raw mode before the key arrives.
        std::thread::sleep(Duration::from_millis(200));
        let keys = self.keys.as_mut().expect("stdin");
        keys.write_all(key.as_bytes()).expect("key");
        keys.flush().expect("flush");
    }

    /// Waits for cinch to exit; its exit code and everything it printed.
    fn finish(mut self) -> (Option<i32>, String) {
        let status = self.child.take().expect("child").wait().expect("wait");
        self.keys.take();
        // The reader thread drains the rest; give it a moment after exit.
        std::thread::sleep(Duration::from_millis(100));
        (status.code(), self.output())
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn interactive_asks_per_item_through_a_pty() {
    let s = Scene::new(
        "[files.\"@/a\"]\ncontent = \"A\\n\"\n[files.\"@/b\"]\ncontent = \"B\\n\"\n[files.\"@/c\"]\ncontent = \"C\\n\"\n",
    );
    let mut pty = Pty::spawn(&s.repo, "apply -i n1");
    // Single key presses answer on a terminal: no Enter after them.
    pty.answer(1, "n");
    pty.answer(2, "y");
    pty.answer(3, "q");
    let (code, out) = pty.finish();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Create file:"), "{out}");
    assert!(out.contains("+A"), "the question shows the diff: {out}");
    assert!(out.contains("skipped (declined interactively)"), "{out}");
    assert!(out.contains("skipped (quit interactively)"), "{out}");
    assert!(!s.path("a").exists(), "answered no");
    assert_eq!(
        std::fs::read_to_string(s.path("b")).unwrap(),
        "B\n",
        "answered yes"
    );
    assert!(!s.path("c").exists(), "quit");
}

#[test]
fn interactive_answers_are_single_keys_without_enter() {
    let s =
        Scene::new("[files.\"@/a\"]\ncontent = \"A\\n\"\n[files.\"@/b\"]\ncontent = \"B\\n\"\n");
    let mut pty = Pty::spawn(&s.repo, "apply -i n1");
    pty.answer(1, "y");
    // Line-buffered input would still wait for Enter here, and the second question never come.
    pty.answer(2, "n");
    let (code, out) = pty.finish();
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(std::fs::read_to_string(s.path("a")).unwrap(), "A\n");
    assert!(!s.path("b").exists(), "{out}");
}

#[test]
fn interactive_diff_is_shown_once() {
    let s = Scene::new("[files.\"@/a\"]\ncontent = \"only-once\\n\"\n");
    let mut pty = Pty::spawn(&s.repo, "apply -i n1");
    pty.answer(1, "y");
    let (code, out) = pty.finish();
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.matches("+only-once").count(), 1, "{out}");
    assert!(out.contains("created"), "{out}");
}

#[test]
fn interactive_quit_stops_every_node_and_asks_nothing_more() {
    let s = Scene::new("");
    let locks = s.repo.path().join("locks");
    // One bundle per node so each has its own file; three nodes, two of them in parallel.
    let mut nodes = String::new();
    for n in ["n1", "n2", "n3"] {
        nodes.push_str(&format!(
            "[nodes.{n}]\ntransport = \"local\"\nbundles = [\"{n}\"]\nlock_dir = \"{}\"\n",
            locks.display()
        ));
        s.repo.write(
            &format!("bundles/{n}/items.toml"),
            &format!(
                "[files.\"{}\"]\ncontent = \"x\\n\"\ncascade_skip = false\n[actions.after-{n}]\ncommand = \"touch {}\"\ninteractive = false\nneeds = [\"file:{}\"]\n",
                s.path(n).display(),
                s.path(&format!("{n}-action")).display(),
                s.path(n).display()
            ),
        );
    }
    s.repo.write("nodes.toml", &nodes);
    let mut pty = Pty::spawn(&s.repo, "apply -i all -p 2");
    pty.answer(1, "q");
    let (code, out) = pty.finish();
    assert_eq!(code, Some(0), "quitting is not a failure: {out}");
    assert_eq!(
        out.matches("[Y/n/q]").count(),
        1,
        "asked again after q: {out}"
    );
    for n in ["n1", "n2", "n3"] {
        assert!(!s.path(n).exists(), "{n} was changed after q: {out}");
        assert!(
            !s.path(&format!("{n}-action")).exists(),
            "an action of {n} ran after q: {out}"
        );
    }
}

#[test]
fn interactive_quit_does_not_list_correct_items_as_skipped() {
    let s = Scene::new(
        r#"
[files."@/change-me"]
content = "new\n"
[files."@/already-right"]
content = "right\n"
after = ["file:@/change-me"]
[files."@/needs-it"]
content = "right\n"
needs = ["file:@/change-me"]
"#,
    );
    std::fs::write(s.path("already-right"), "right\n").unwrap();
    std::fs::write(s.path("needs-it"), "right\n").unwrap();
    let mut pty = Pty::spawn(&s.repo, "-v apply -i n1");
    pty.answer(1, "q");
    let (code, out) = pty.finish();
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("change-me  skipped (quit interactively)"),
        "{out}"
    );
    for right in ["already-right", "needs-it"] {
        assert!(
            out.contains(&format!("{right}  ok")),
            "{right} is correct: {out}"
        );
        assert!(
            !out.contains(&format!("{right}  skipped")),
            "{right} is correct, not skipped: {out}"
        );
    }
}

#[test]
fn interactive_without_answers_is_an_error_not_a_quiet_quit() {
    let s = Scene::new("[files.\"@/a\"]\ncontent = \"A\\n\"\n");
    let mut cmd = cinch_command();
    cmd.env("CINCH_IDENTITY", "tester")
        .arg("-r")
        .arg(s.repo.path())
        .args(["apply", "-i", "n1"])
        .stdin(std::process::Stdio::null());
    let run = crate::harness::run(cmd).expect_code(2);
    assert!(run.stderr.contains("input ended"), "{}", run.stderr);
    assert!(
        !s.path("a").exists(),
        "nothing is applied without an answer"
    );
    // Answers on stdin, one per line, still work without a terminal.
    let mut cmd = cinch_command();
    cmd.env("CINCH_IDENTITY", "tester")
        .arg("-r")
        .arg(s.repo.path())
        .args(["apply", "-i", "n1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"yes\n").expect("answer");
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(std::fs::read_to_string(s.path("a")).unwrap(), "A\n");
}

#[test]
fn over_ssh_steady_state_is_two_commands_and_a_dead_node_does_not_stop_others() {
    let sshd = crate::sshd::Sshd::start(2);
    let mut nodes = String::new();
    let repo = TestRepo::new().file("cinch.toml", &sshd.cinch_toml());
    for n in ["node1", "node2"] {
        let d = sshd.node_dir(n);
        let d = d.display();
        nodes.push_str(&format!(
            "[nodes.{n}]\nbundles = [\"{n}\"]\nlock_dir = \"{}\"\n",
            repo.path().join("locks").display()
        ));
        let mut items = format!("[directories.\"{d}/etc\"]\npurge = true\n");
        for k in 0..30 {
            items.push_str(&format!(
                "[files.\"{d}/etc/f{k} it's `odd`\"]\ncontent = \"{n} {k}\\n\"\nmode = \"0600\"\n"
            ));
        }
        repo.write(&format!("bundles/{n}/items.toml"), &items);
    }
    nodes.push_str("[nodes.dead]\nhostname = \"127.0.0.1\"\nport = 1\nbundles = [\"node1\"]\n");
    repo.write("nodes.toml", &nodes);
    std::fs::create_dir_all(sshd.node_dir("node1").join("etc")).unwrap();
    std::fs::write(sshd.node_dir("node1").join("etc/stray $(x)"), "junk").unwrap();

    let run = repo.cinch(&["apply", "all"]).expect_code(1);
    assert!(run.stderr.contains("dead"), "{}", run.stderr);
    let f = sshd.node_dir("node2").join("etc/f7 it's `odd`");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "node2 7\n");
    assert!(!sshd.node_dir("node1").join("etc/stray $(x)").exists());
    let before = mtime(&f);

    let run = repo
        .cinch(&["--json", "apply", "node1,node2", "--stats"])
        .expect_code(0);
    let summary = run.json_lines().pop().unwrap();
    for n in summary["nodes"].as_array().unwrap() {
        assert_eq!(n["fixed"], 0, "{summary}");
        assert_eq!(n["ok"], 31, "{summary}");
        assert_eq!(
            n["commands"], 2,
            "the first unchanged apply over ssh is two remote commands (lock + probe, release + steady marker): {summary}"
        );
    }
    assert_eq!(mtime(&f), before);
    std::fs::write(&f, "drift\n").unwrap();
    repo.cinch(&["verify", "node2"])
        .expect_code(1)
        .stdout_has("+node2 7");
    repo.cinch(&["apply", "node2"]).expect_code(0);
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "node2 7\n");
    repo.cinch(&["verify", "node1,node2"]).expect_code(0);
}

#[test]
fn an_apply_of_many_files_is_not_limited_by_the_command_line_length() {
    let mut items = String::from("[directories.\"@/many\"]\n");
    for k in 0..800 {
        items.push_str(&format!(
            "[files.\"@/many/a file with a long name number {k}\"]\ncontent = \"{k}\\n\"\n"
        ));
    }
    let s = Scene::new(&items);
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(summary["nodes"][0]["fixed"], 801, "{summary}");
    assert_eq!(
        std::fs::read_to_string(s.path("many/a file with a long name number 799")).unwrap(),
        "799\n"
    );
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(summary["nodes"][0]["ok"], 801, "{summary}");
}

#[test]
fn only_or_skip_selectors_matching_nothing_are_usage_errors_and_nothing_is_applied() {
    let s = Scene::new("[files.\"@/motd\"]\ncontent = \"hi\\n\"\n");
    let typo = format!("file:{}/mtod", s.root());
    s.cinch(&["apply", "n1", "-s", &typo])
        .expect_code(2)
        .stderr_has("matches no item")
        .stderr_has(&format!("did you mean `file:{}/motd`", s.root()));
    s.cinch(&["apply", "n1", "-o", "tag:nosuchtag"])
        .expect_code(2)
        .stderr_has("'tag:nosuchtag' matches no item");
    assert!(!s.path("motd").exists(), "nothing applied");
    s.cinch(&["apply", "n1", "-o", &format!("file:{}/motd", s.root())])
        .expect_code(0);
    assert!(s.path("motd").exists());
}

#[test]
fn first_ctrl_c_says_at_once_that_running_items_finish() {
    use std::io::BufRead;
    let s = Scene::new("[actions.slow]\ncommand = \"sleep 3\"\n");
    let mut cmd = cinch_command();
    cmd.env("CINCH_IDENTITY", "tester")
        .arg("-r")
        .arg(s.repo.path())
        .args(["apply", "n1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send((Instant::now(), line));
        }
    });
    std::thread::sleep(Duration::from_millis(700));
    let signalled = Instant::now();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let (at, line) = rx
        .recv_timeout(Duration::from_secs(2))
        .expect("a message right after the first Ctrl-C");
    assert_eq!(
        line,
        "stopping after running items finish — Ctrl-C again to abort"
    );
    assert!(at.duration_since(signalled) < Duration::from_secs(1));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
}

#[test]
fn unreachable_node_is_named_once_and_its_row_counts_its_items() {
    let s = Scene::new("[files.\"@/f\"]\ncontent = \"x\"\n[files.\"@/g\"]\ncontent = \"y\"\n");
    s.repo.write(
        "nodes.toml",
        &format!(
            "[nodes.dead]\nhostname = \"127.0.0.1\"\nport = {}\nbundles = [\"b\"]\n",
            crate::sshd::closed_port()
        ),
    );
    let run = s.cinch(&["apply", "dead"]).expect_code(1);
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("unreachable"))
        .unwrap_or_else(|| panic!("no unreachable line: {}", run.stderr));
    assert_eq!(line.matches("dead").count(), 1, "{line}");
    let row: Vec<&str> = run
        .stdout
        .lines()
        .find(|l| l.contains("dead"))
        .unwrap_or_else(|| panic!("no row: {}", run.stdout))
        .trim_matches('│')
        .split_whitespace()
        .collect();
    assert_eq!(row[..2], ["dead", "2"], "{}", run.stdout);
    let (_, summary) = {
        let run = s.cinch(&["--json", "apply", "dead"]);
        let summary = run.json_lines().pop().expect("summary");
        (run, summary)
    };
    assert_eq!(summary["nodes"][0]["items"], 2, "{summary}");
}

#[test]
fn json_summaries_name_their_command() {
    let s = Scene::new("[files.\"@/f\"]\ncontent = \"x\"\n");
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(summary["command"], "apply", "{summary}");
    let summary = s
        .cinch(&["--json", "verify", "n1"])
        .json_lines()
        .pop()
        .expect("summary");
    assert_eq!(summary["command"], "verify", "{summary}");
    for (sub, extra) in [("add", None), ("show", None), ("remove", Some("ZZZZ"))] {
        let mut args = vec!["--json", "lock", sub, "n1"];
        args.extend(extra);
        let summary = s.cinch(&args).json_lines().pop().expect("summary");
        assert_eq!(summary["event"], "summary", "{summary}");
        assert_eq!(summary["command"], format!("lock {sub}"), "{summary}");
    }
}
