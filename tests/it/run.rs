//! `cinch run` end to end: the real binary against a private sshd and the local transport.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::{Run, TestRepo, pgrep, wait_until_gone};
use crate::sshd::{Sshd, closed_port};

/// A repo whose nodes `node1..nodeN` are aliases of a private sshd.
fn repo(sshd: &Sshd, n: usize) -> TestRepo {
    TestRepo::new()
        .file("cinch.toml", &sshd.cinch_toml())
        .file("nodes.toml", &sshd.nodes_toml(n))
}

fn token() -> String {
    format!("{}{:06}", std::process::id(), fastrand::u32(..1_000_000))
}

/// The summary-table row of `node`, split into cells.
fn row(r: &Run, node: &str) -> Vec<String> {
    let gap = regex::Regex::new(r"\s{2,}").expect("regex");
    r.stdout
        .lines()
        .filter_map(|l| l.strip_prefix('│')?.strip_suffix('│'))
        .map(|l| gap.split(l.trim()).map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.first().is_some_and(|c| c == node))
        .unwrap_or_else(|| panic!("no table row for {node}:\n{}", r.stdout))
}

#[test]
fn runs_on_five_nodes_in_parallel_with_prefixed_output_and_a_table() {
    let s = Sshd::start(5);
    let start = Instant::now();
    let r = repo(&s, 5)
        .cinch(&["run", "all", "sleep 1; echo hello $((6*7))"])
        .expect_code(0);
    // In parallel: five one-second commands take far less than five seconds.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    for i in 1..=5 {
        let node = format!("node{i}");
        assert!(
            r.stdout.contains(&format!("{node} | hello 42\n")),
            "{}",
            r.stdout
        );
        let cells = row(&r, &node);
        assert_eq!(cells[1], "0", "{cells:?}");
        assert!(cells[2].ends_with('s'), "{cells:?}");
    }
}

#[test]
fn non_zero_exit_is_shown_and_makes_the_run_fail() {
    let s = Sshd::start(1);
    let r = repo(&s, 1)
        .cinch(&["run", "node1", "echo oops >&2; exit 3"])
        .expect_code(1);
    assert!(
        r.stdout.contains("node1 ! oops\n"),
        "stderr lines are marked: {}",
        r.stdout
    );
    assert_eq!(row(&r, "node1")[1], "3");
}

#[test]
fn mixed_results_fail_only_where_the_command_failed() {
    let s = Sshd::start(2);
    let r = repo(&s, 2)
        .file(
            "nodes.toml",
            &format!("{}[nodes.here]\ntransport = \"local\"\n", s.nodes_toml(2)),
        )
        // True over ssh, false on the local node.
        .cinch(&["run", "all", "test -n \"$SSH_CONNECTION\""])
        .expect_code(1);
    assert_eq!(row(&r, "node1")[1], "0");
    assert_eq!(row(&r, "node2")[1], "0");
    assert_eq!(row(&r, "here")[1], "1");
}

#[test]
fn names_are_padded_to_the_longest() {
    let r = TestRepo::new()
        .file(
            "nodes.toml",
            "[nodes.a]\ntransport = \"local\"\n[nodes.longername]\ntransport = \"local\"\n",
        )
        .cinch(&["run", "all", "echo x"])
        .expect_code(0);
    assert!(r.stdout.contains("a          | x\n"), "{}", r.stdout);
    assert!(r.stdout.contains("longername | x\n"), "{}", r.stdout);
}

#[test]
fn unreachable_node_reports_ssh_reason_and_others_continue() {
    let s = Sshd::start(1);
    let nodes = format!(
        "{}[nodes.dead]\nhostname = \"node1\"\nport = {}\n",
        s.nodes_toml(1),
        closed_port()
    );
    let r = repo(&s, 1)
        .file("nodes.toml", &nodes)
        .cinch(&["run", "all", "echo alive"])
        .expect_code(1);
    assert!(r.stdout.contains("node1 | alive\n"), "{}", r.stdout);
    assert!(
        r.stderr.contains("dead") && r.stderr.contains("Connection refused"),
        "{}",
        r.stderr
    );
    let dead = row(&r, "dead");
    assert_eq!(dead[1], "-");
    assert!(
        dead[3].contains("unreachable") && dead[3].contains("Connection refused"),
        "{dead:?}"
    );
    assert_eq!(row(&r, "node1")[1], "0");
}

#[test]
fn wrong_host_key_is_refused() {
    let s = Sshd::start(1);
    let other = crate::sshd::keygen(&s.dir.path().join("impostor"));
    let key = other
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let kh = s.dir.path().join("wrong_known_hosts");
    std::fs::write(&kh, format!("[127.0.0.1]:{} {key}\n", s.port)).expect("kh");
    let toml = format!(
        "{}known_hosts_file = {:?}\n",
        s.cinch_toml(),
        kh.display().to_string()
    );
    let r = repo(&s, 1).file("cinch.toml", &toml);
    for extra in [&[][..], &["--add-host-keys"][..]] {
        let mut args = vec!["run", "node1", "echo should-not-run"];
        args.extend(extra);
        let out = r.cinch(&args).expect_code(1);
        assert!(!out.stdout.contains("should-not-run"));
        assert!(
            out.stderr
                .contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn add_host_keys_accepts_an_unknown_key_once() {
    let s = Sshd::start(1);
    let kh = s.dir.path().join("empty_known_hosts");
    std::fs::write(&kh, "").expect("kh");
    let toml = format!(
        "{}known_hosts_file = {:?}\n",
        s.cinch_toml(),
        kh.display().to_string()
    );
    let r = repo(&s, 1).file("cinch.toml", &toml);
    r.cinch(&["run", "node1", "true"])
        .expect_code(1)
        .stderr_has("--add-host-keys");
    r.cinch(&["run", "--add-host-keys", "node1", "echo in"])
        .expect_code(0)
        .stdout_has("node1 | in");
    assert!(
        std::fs::read_to_string(&kh)
            .expect("kh")
            .contains(&s.host_key())
    );
    r.cinch(&["run", "node1", "echo again"])
        .expect_code(0)
        .stdout_has("node1 | again");
}

#[test]
fn timeout_stops_the_node_and_kills_its_process_tree() {
    let s = Sshd::start(2);
    let tok = token();
    let start = Instant::now();
    let r = repo(&s, 2)
        .cinch(&[
            "run",
            "all",
            "--timeout",
            "1.5",
            &format!("sleep 300.{tok} & sleep 300.{tok}; echo never"),
        ])
        .expect_code(1);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "took {:?}",
        start.elapsed()
    );
    assert!(!r.stdout.contains("never"));
    for n in ["node1", "node2"] {
        let cells = row(&r, n);
        assert_eq!(cells[1], "-");
        assert!(cells[3].contains("timed out"), "{cells:?}");
    }
    let left = wait_until_gone(&format!("sleep 300.{tok}"));
    assert!(left.is_empty(), "orphans on the node: {left:?}");
}

#[test]
fn ten_megabytes_of_output_arrive_whole() {
    let s = Sshd::start(1);
    let r = repo(&s, 1)
        .cinch(&[
            "run",
            "node1",
            "head -c 10000000 /dev/zero | tr '\\0' x | fold -w 99",
        ])
        .expect_code(0);
    let lines: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("node1 | "))
        .collect();
    // 10,000,000 bytes in lines of 99 plus a newline: 101,011 lines, the last one short.
    assert_eq!(lines.len(), 101_011);
    assert!(lines[..101_010].iter().all(|l| l.len() == 8 + 99));
}

#[test]
fn binary_output_and_a_missing_final_newline_survive() {
    let s = Sshd::start(1);
    let r = repo(&s, 1)
        .cinch(&["run", "node1", "printf 'bin\\377\\000ary\\n'; head -c 3000 /dev/urandom >/dev/null; printf 'no newline'"])
        .expect_code(0);
    assert!(
        r.stdout.contains("node1 | bin\u{FFFD}\0ary\n"),
        "{:?}",
        r.stdout
    );
    assert!(r.stdout.contains("node1 | no newline\n"), "{:?}", r.stdout);
    let r = repo(&s, 1)
        .cinch(&["run", "node1", "head -c 100000 /dev/urandom"])
        .expect_code(0);
    assert_eq!(row(&r, "node1")[1], "0");
}

#[test]
fn quotes_and_dollars_reach_the_node_as_typed() {
    let s = Sshd::start(1);
    repo(&s, 1)
        .cinch(&[
            "run", "node1", "echo", "\"it's\"", "'$HOME'", "$((1+2))", "\"a  b\"",
        ])
        .expect_code(0)
        .stdout_has("node1 | it's $HOME 3 a  b\n");
}

#[test]
fn lines_from_different_nodes_never_mix() {
    let s = Sshd::start(5);
    let line = "x".repeat(300);
    let r = repo(&s, 5)
        .cinch(&[
            "run",
            "all",
            &format!("i=0; while [ $i -lt 2000 ]; do echo L$i-{line}; i=$((i+1)); done"),
        ])
        .expect_code(0);
    let mut count = 0;
    for l in r.stdout.lines().filter(|l| l.starts_with("node")) {
        let (_, rest) = l
            .split_once(" | ")
            .unwrap_or_else(|| panic!("torn line {l:?}"));
        let (num, tail) = rest
            .split_once('-')
            .unwrap_or_else(|| panic!("torn line {l:?}"));
        assert!(num.starts_with('L') && tail == line, "torn line {l:?}");
        count += 1;
    }
    assert_eq!(count, 5 * 2000);
}

#[test]
fn become_runs_through_real_sudo() {
    let s = Sshd::start(1);
    Sshd::ensure_user("cinchsudo", true);
    repo(&s, 1)
        .file(
            "nodes.toml",
            "[nodes.node1]\nusername = \"cinchsudo\"\nbecome = \"sudo\"\n",
        )
        .cinch(&["run", "node1", "echo $(id -u) $SUDO_USER"])
        .expect_code(0)
        .stdout_has("node1 | 0 cinchsudo\n");
}

#[test]
fn no_master_or_control_socket_is_left_after_a_run() {
    let s = Sshd::start(3);
    let dir = std::path::PathBuf::from(format!("/tmp/cinch-t{}-run", std::process::id()));
    let r = repo(&s, 3).env("CINCH_SSH_CONTROL_DIR", &dir.display().to_string());
    r.cinch(&["run", "all", "true"]).expect_code(0);
    assert!(dir.is_dir(), "the control directory was used");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("ls")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(pgrep(&format!("ssh .*{}", dir.display())).is_empty());
    let _ = std::fs::remove_dir(&dir);
}

#[test]
fn dummy_nodes_are_skipped_with_a_note() {
    let r = TestRepo::new()
        .file(
            "nodes.toml",
            "[nodes.real]\ntransport = \"local\"\n[nodes.ghost]\ndummy = true\n",
        )
        .cinch(&["run", "all", "echo hi"])
        .expect_code(0)
        .stdout_has("real  | hi")
        .stderr_has("ghost is a dummy node: skipped");
    assert!(
        row(&r, "ghost")[2..].join(" ").contains("skipped"),
        "{}",
        r.stdout
    );
}

#[test]
fn json_lines_carry_output_results_and_summary() {
    let s = Sshd::start(2);
    let r = repo(&s, 2)
        .cinch(&["--json", "run", "all", "echo out; echo err >&2; exit 2"])
        .expect_code(1);
    let v = r.json_lines();
    let of = |e: &str| v.iter().filter(|j| j["event"] == e).collect::<Vec<_>>();
    assert_eq!(of("run_start").len(), 1);
    assert_eq!(of("node_run_start").len(), 2);
    assert_eq!(of("node_ssh_connect").len(), 2);
    let outs = of("output");
    assert!(
        outs.iter()
            .any(|j| j["node"] == "node1" && j["stream"] == "stdout" && j["line"] == "out")
    );
    assert!(
        outs.iter()
            .any(|j| j["node"] == "node2" && j["stream"] == "stderr" && j["line"] == "err")
    );
    let results = of("node_result");
    assert_eq!(results.len(), 2);
    assert!(
        results
            .iter()
            .all(|j| j["return_code"] == 2 && j["ok"] == false)
    );
    let summary = of("summary");
    assert_eq!(summary[0]["exit_code"], 1);
    assert_eq!(summary[0]["failed"], 2);
    assert_eq!(of("run_end").len(), 1);
}

#[test]
fn bad_arguments_are_usage_errors() {
    let r = TestRepo::new().file("nodes.toml", "[nodes.a]\ntransport = \"local\"\n");
    r.cinch(&["run", "a", "--timeout", "-1", "true"])
        .expect_code(2)
        .stderr_has("--timeout");
    r.cinch(&["run", "a", "-p", "0", "true"])
        .expect_code(2)
        .stderr_has("node-workers");
    r.cinch(&["run", "nosuch", "true"])
        .expect_code(2)
        .stderr_has("nosuch");
    r.cinch(&["run", "a", " "])
        .expect_code(2)
        .stderr_has("needs a command");
}

/// A background `cinch`, interrupted twice if a failing test leaves it running.
struct Bg(Option<std::process::Child>);

impl Bg {
    fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, |c| c.id())
    }

    fn wait_with_output(mut self) -> std::io::Result<std::process::Output> {
        self.0.take().expect("running").wait_with_output()
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            sigint(c.id());
            std::thread::sleep(Duration::from_millis(200));
            sigint(c.id());
            let _ = c.wait();
        }
    }
}

/// Starts `cinch run` in the background, for the interrupt tests.
fn spawn(r: &TestRepo, args: &[&str]) -> Bg {
    let mut cmd = crate::harness::cinch_command();
    cmd.arg("-r")
        .arg(r.path())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Bg(Some(cmd.spawn().expect("spawn cinch")))
}

fn sigint(pid: u32) {
    let pid = libc::pid_t::try_from(pid).expect("pid");
    // SAFETY: sending a signal to our own child.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
}

#[test]
fn first_ctrl_c_lets_running_nodes_finish_and_starts_no_more() {
    let s = Sshd::start(3);
    let r = repo(&s, 3);
    let child = spawn(&r, &["run", "all", "-p", "1", "sleep 2; echo finished"]);
    std::thread::sleep(Duration::from_millis(1200));
    sigint(child.id());
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("node1 | finished"), "{stdout}");
    assert!(
        !stdout.contains("node2 | finished") && !stdout.contains("node3 | finished"),
        "{stdout}"
    );
    assert!(stdout.contains("not started"), "{stdout}");
}

#[test]
fn second_ctrl_c_kills_remote_commands_and_exits_130() {
    let s = Sshd::start(2);
    let tok = token();
    let r = repo(&s, 2);
    let child = spawn(&r, &["run", "all", &format!("sleep 300.{tok}; echo never")]);
    let begin = Instant::now();
    let sleeps = format!("^sleep 300.{tok}");
    while pgrep(&sleeps).len() < 2 && begin.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(pgrep(&sleeps).len(), 2, "both remote commands started");
    sigint(child.id());
    std::thread::sleep(Duration::from_millis(300));
    sigint(child.id());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(130));
    assert!(begin.elapsed() < Duration::from_secs(20));
    let left = wait_until_gone(&format!("sleep 300.{tok}"));
    assert!(left.is_empty(), "orphans on the node: {left:?}");
}

#[test]
fn hooks_see_run_events_and_can_skip_a_node() {
    let r = TestRepo::new()
        .file(
            "nodes.toml",
            "[nodes.up]\ntransport = \"local\"\n[nodes.down]\ntransport = \"local\"\n\
             [nodes.down.metadata]\nmaintenance = true\n",
        )
        .file(
            "hooks/run.rhai",
            r#"
fn run_start(repo, target, nodes, command) { log(`start ${target} ${nodes.len()} ${command}`); }
fn node_run_start(repo, node, command) {
    if node.metadata.maintenance == true { skip_node("in maintenance"); }
}
fn node_run_end(repo, node, command, duration, return_code, stdout, stderr) {
    log(`end ${node.name} rc=${return_code} out=${stdout}`);
}
fn run_end(repo, target, nodes, command, duration) { log("done"); }
"#,
        )
        .cinch(&["run", "all", "echo hi"])
        .expect_code(0);
    assert!(r.stdout.contains("start all 2 echo hi"), "{}", r.stdout);
    assert!(r.stdout.contains("end up rc=0 out=hi"), "{}", r.stdout);
    assert!(!r.stdout.contains("end down"), "{}", r.stdout);
    assert!(r.stdout.contains("done"), "{}", r.stdout);
    assert!(
        row(&r, "down")[2..].join(" ").contains("in maintenance"),
        "{}",
        r.stdout
    );
}

/// A repo with one local node `a`.
fn local_repo() -> TestRepo {
    TestRepo::new().file("nodes.toml", "[nodes.a]\ntransport = \"local\"\n")
}

#[test]
fn options_written_after_the_command_are_options_not_remote_text() {
    let start = Instant::now();
    let r = local_repo()
        .cinch(&[
            "run",
            "a",
            "sleep 5; echo late",
            "--timeout",
            "1",
            "-p",
            "1",
        ])
        .expect_code(1);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "--timeout after the command was ignored: took {:?}",
        start.elapsed()
    );
    assert!(!r.stdout.contains("late"), "{}", r.stdout);
    assert!(row(&r, "a")[3].contains("timed out"), "{}", r.stdout);
}

#[test]
fn unknown_option_of_run_is_a_usage_error_never_remote_text() {
    let r = local_repo();
    let marker = r.path().join("ran");
    let cmd = format!("touch '{}'", marker.display());
    r.cinch(&["run", "a", &cmd, "--bogus"])
        .expect_code(2)
        .stderr_has("'--bogus'")
        .stderr_has("put it after --");
    assert!(!marker.exists(), "nothing may run after a usage error");
    // Words starting with '-' belong to the command only after `--`, or inside the quotes.
    r.cinch(&["run", "a", "echo", "-n", "x"])
        .expect_code(2)
        .stderr_has("'-n'");
    r.cinch(&["run", "a", "--", "ls", "-d", "/"])
        .expect_code(0)
        .stdout_has("a | /\n");
    r.cinch(&["run", "a", "printf '%s\\n' -n"])
        .expect_code(0)
        .stdout_has("a | -n\n");
}

/// Collects a child's stderr lines with the time each arrived.
fn timed_lines(stderr: std::process::ChildStderr) -> std::sync::mpsc::Receiver<(Instant, String)> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn first_ctrl_c_says_at_once_that_running_commands_finish() {
    let r = local_repo();
    let mut child = spawn(&r, &["run", "a", "sleep 3; echo finished"]);
    let lines = timed_lines(
        child
            .0
            .as_mut()
            .and_then(|c| c.stderr.take())
            .expect("stderr"),
    );
    std::thread::sleep(Duration::from_millis(700));
    let signalled = Instant::now();
    sigint(child.id());
    let (at, line) = lines
        .recv_timeout(Duration::from_secs(2))
        .expect("a message right after the first Ctrl-C");
    assert_eq!(
        line,
        "stopping after running commands finish — Ctrl-C again to abort"
    );
    assert!(
        at.duration_since(signalled) < Duration::from_secs(1),
        "said only after {:?}",
        at.duration_since(signalled)
    );
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(130));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("a | finished"),
        "the running command still finishes"
    );
}

#[test]
fn unreachable_node_is_named_once() {
    let r = local_repo()
        .file(
            "nodes.toml",
            &format!(
                "[nodes.a]\ntransport = \"local\"\n[nodes.dead]\nhostname = \"127.0.0.1\"\nport = {}\n",
                closed_port()
            ),
        )
        .cinch(&["run", "all", "echo alive"])
        .expect_code(1);
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("dead"))
        .unwrap_or_else(|| panic!("no line about the dead node: {}", r.stderr));
    assert!(line.starts_with("error: dead: unreachable: "), "{line}");
    assert_eq!(line.matches("dead").count(), 1, "{line}");
    assert!(
        row(&r, "dead")[3].starts_with("unreachable: "),
        "{}",
        r.stdout
    );
}

#[test]
fn json_summary_of_run_names_the_command() {
    let r = local_repo()
        .cinch(&["--json", "run", "a", "true"])
        .expect_code(0);
    let summary = r.json_lines().pop().expect("a summary");
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["command"], "run", "{summary}");
}

#[test]
fn add_host_keys_is_an_option_of_connecting_commands_only() {
    let r = local_repo().file("bundles/b/items.toml", "");
    r.write(
        "nodes.toml",
        &format!(
            "[nodes.a]\ntransport = \"local\"\nbundles = [\"b\"]\nlock_dir = \"{}\"\n",
            r.path().join("locks").display()
        ),
    );
    for args in [
        &["run", "a", "true", "--add-host-keys"][..],
        &["apply", "a", "--add-host-keys"],
        &["verify", "--add-host-keys", "a"],
        &["lock", "show", "a", "--add-host-keys"],
        &["lock", "--add-host-keys", "show", "a"],
    ] {
        r.cinch(args).expect_code(0);
    }
    for args in [
        &["test", "--add-host-keys"][..],
        &["nodes", "--add-host-keys"],
        &["--add-host-keys", "items", "a"],
    ] {
        r.cinch(args).expect_code(2).stderr_has("'--add-host-keys'");
    }
}

#[test]
fn completions_are_listed_in_help() {
    let r = local_repo().cinch(&["--help"]).expect_code(0);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("completions ")),
        "{}",
        r.stdout
    );
    local_repo()
        .cinch(&["completions", "bash"])
        .expect_code(0)
        .stdout_has("_cinch()");
}

/// `-p 1000` under the common open-files limit of 1,024 failed a quarter of the nodes with
/// "unreachable: Too many open files": cinch never raised its limit nor capped `-p`. Now
/// nodes in flight are capped to what the (hard) limit allows, said once, and all succeed.
#[test]
fn more_node_workers_than_open_files_allow_are_capped_not_failed_as_unreachable() {
    let nodes: String = (1..=60)
        .map(|i| format!("[nodes.l{i}]\ntransport = \"local\"\n"))
        .collect();
    let repo = TestRepo::new().file("nodes.toml", &nodes);
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n 128 && exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_cinch"))
        .arg("-r")
        .arg(repo.path())
        .args(["run", "-p", "200", "all", "sleep 0.1; echo ok-$((40+2))"])
        .env_remove("CINCH_REPO")
        .env("NO_COLOR", "1");
    let r = crate::harness::run(cmd).expect_code(0);
    assert_eq!(r.stdout.matches("| ok-42").count(), 60, "{}", r.stdout);
    assert_eq!(
        r.stderr.matches("nodes at once instead of").count(),
        1,
        "said once: {}",
        r.stderr
    );
    assert!(!r.stdout.contains("unreachable"), "{}", r.stdout);
}

/// run's output lines and the hooks' `log()` lines are events on the bus: with `--json` the
/// JSON subscriber prints them (a top-level log at load, then `run_start`'s log before the
/// `run_start` line itself, since hooks hear every event first); on the terminal the run
/// renderer prefixes the output and the hook-line renderer shows the log lines.
#[test]
fn run_output_and_hook_log_lines_are_events_for_json_and_terminal() {
    let r = TestRepo::new()
        .file("nodes.toml", "[nodes.here]\ntransport = \"local\"\n")
        .file(
            "hooks/a.rhai",
            "log(\"loaded\");\nfn run_start(repo, target, nodes, command) { log(`starting ${command}`); }\n",
        );
    let json = r
        .cinch(&["--json", "run", "here", "echo hi"])
        .expect_code(0);
    let lines = json.json_lines();
    let events: Vec<&str> = lines
        .iter()
        .map(|v| v["event"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        events[..3],
        ["hook_log", "hook_log", "run_start"],
        "{}",
        json.stdout
    );
    assert_eq!(lines[0]["message"], "loaded");
    assert_eq!(lines[1]["message"], "starting echo hi");
    assert_eq!(lines[1]["file"], "a.rhai");
    let output: Vec<_> = lines.iter().filter(|v| v["event"] == "output").collect();
    assert_eq!(output.len(), 1, "{}", json.stdout);
    assert_eq!(output[0]["line"], "hi");
    assert_eq!(output[0]["stream"], "stdout");
    assert_eq!(events.last(), Some(&"summary"), "{}", json.stdout);
    assert!(!json.stdout.contains("here | hi"), "{}", json.stdout);

    let human = r.cinch(&["run", "here", "echo hi"]).expect_code(0);
    let log_at = human
        .stdout
        .find("hook a.rhai: starting echo hi\n")
        .unwrap_or_else(|| panic!("no hook log line: {}", human.stdout));
    let out_at = human
        .stdout
        .find("here | hi\n")
        .unwrap_or_else(|| panic!("no output line: {}", human.stdout));
    assert!(log_at < out_at, "{}", human.stdout);
    assert!(!human.stdout.contains("\"event\""), "{}", human.stdout);
    // -q hides hook log lines, not the output the user asked for.
    let quiet = r.cinch(&["-q", "run", "here", "echo hi"]).expect_code(0);
    assert!(!quiet.stdout.contains("starting"), "{}", quiet.stdout);
    assert!(quiet.stdout.contains("here | hi\n"), "{}", quiet.stdout);
}
