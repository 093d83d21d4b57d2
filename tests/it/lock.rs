//! `cinch lock add/show/remove` and hard locks around apply, on local-transport nodes whose
//! lock_dir lives in the test's temporary repo.

use crate::harness::TestRepo;

/// A repo with two local nodes sharing one lock_dir, each managing one file.
fn repo() -> TestRepo {
    let r = TestRepo::new();
    let root = r.path().display().to_string();
    r.write(
        "nodes.toml",
        &format!(
            r#"
[nodes.n1]
transport = "local"
lock_dir = "{root}/locks"
bundles = ["b"]
metadata = {{ out = "{root}/out1" }}

[nodes.n2]
transport = "local"
lock_dir = "{root}/locks"
bundles = ["b"]
metadata = {{ out = "{root}/out2" }}
"#
        ),
    );
    r.write(
        "bundles/b/items.rhai",
        r#"
let files = #{};
files[node.metadata.out + "/motd"] = #{ content: "hello\n" };
let dirs = #{};
dirs[node.metadata.out] = #{};
#{ files: files, directories: dirs }
"#,
    );
    r
}

fn soft_dir(r: &TestRepo, node: &str) -> std::path::PathBuf {
    r.path().join("locks").join(format!("soft-{node}"))
}

#[test]
fn add_show_remove_round_trip() {
    let r = repo();
    let out = r
        .cinch(&["-q", "lock", "add", "n1", "-c", "db migration", "-e", "1h"])
        .expect_code(0);
    let id = out.stdout.trim().to_string();
    assert_eq!(id.len(), 4, "{id:?}");
    let file = soft_dir(&r, "n1").join(&id);
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(stored["id"], id.as_str());
    assert_eq!(stored["user"], "tester");
    assert_eq!(stored["items"], serde_json::json!(["*"]));
    assert_eq!(stored["comment"], "db migration");
    let expiry = stored["expiry"].as_i64().unwrap() - stored["date"].as_i64().unwrap();
    assert_eq!(expiry, 3600);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().lines().count(),
        1,
        "one line of JSON"
    );

    r.cinch(&["lock", "show", "all"])
        .expect_code(0)
        .stdout_has(&id)
        .stdout_has("db migration")
        .stdout_has("tester");
    let shown = r.cinch(&["--json", "lock", "show", "n1"]).expect_code(0);
    let locks: Vec<_> = shown
        .json_lines()
        .into_iter()
        .filter(|v| v["event"] == "lock")
        .collect();
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0]["lock"]["id"], id.as_str());

    // Ids match case-insensitively.
    r.cinch(&["lock", "remove", "n1", &id.to_lowercase()])
        .expect_code(0)
        .stdout_has("removed");
    assert!(!file.exists());
    r.cinch(&["lock", "show", "n1"])
        .expect_code(0)
        .stdout_has("no soft locks");
}

#[test]
fn removing_an_unknown_id_fails_for_that_node_only() {
    let r = repo();
    let id = r
        .cinch(&["-q", "lock", "add", "n1"])
        .expect_code(0)
        .stdout
        .trim()
        .to_string();
    let out = r.cinch(&["lock", "remove", "n1,n2", &id]).expect_code(1);
    assert!(out.stdout.contains("n1  removed"), "{}", out.stdout);
    assert!(
        out.stderr.contains("n2") && out.stderr.contains("no soft lock"),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_lock_input_is_a_usage_error() {
    let r = repo();
    r.cinch(&["lock", "add", "n1", "-e", "8x"])
        .expect_code(2)
        .stderr_has("s, m, h, d, w");
    r.cinch(&["lock", "remove", "n1", "AB-1"])
        .expect_code(2)
        .stderr_has("4 characters");
    r.cinch(&["lock", "add", "n1", "-i", "file:/nope/motd"])
        .expect_code(2)
        .stderr_has("matches no item");
    assert!(!soft_dir(&r, "n1").exists(), "nothing was locked");
}

#[test]
fn item_selector_typo_suggests_the_close_item() {
    let r = repo();
    let path = format!("file:{}/out1/mtod", r.path().display());
    r.cinch(&["lock", "add", "n1", "-i", &path])
        .expect_code(2)
        .stderr_has("did you mean");
}

#[test]
fn expired_locks_are_hidden_and_cleaned_up_and_corrupt_files_ignored() {
    let r = repo();
    let dir = soft_dir(&r, "n1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("OLD1"),
        r#"{"id":"OLD1","user":"x","date":1,"expiry":2,"items":["*"],"comment":"old"}"#,
    )
    .unwrap();
    std::fs::write(dir.join("BAD1"), "{not json").unwrap();
    std::fs::write(dir.join("README"), "someone's notes").unwrap();
    let out = r
        .cinch(&["lock", "show", "n1"])
        .expect_code(0)
        .stdout_has("no soft locks");
    assert!(
        out.stderr.contains("BAD1") && out.stderr.contains("corrupt"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("README"), "{}", out.stderr);
    assert!(!dir.join("OLD1").exists(), "expired lock removed");
    assert!(dir.join("BAD1").exists(), "foreign files are left alone");
}

#[test]
fn apply_skips_items_soft_locked_by_someone_else_but_not_own_locks() {
    let r = repo();
    let motd = r.path().join("out1/motd");
    let sel = format!("file:{}", motd.display());
    let other = r.cinch(&["-q", "lock", "add", "n1", "-i", &sel]);
    let other = other.expect_code(0);
    // Pretend the lock belongs to someone else.
    let file = soft_dir(&r, "n1").join(other.stdout.trim());
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("\"tester\"", "\"alice\"");
    std::fs::write(&file, text).unwrap();

    let out = r.cinch(&["apply", "n1"]).expect_code(0);
    assert!(
        out.stdout.contains("soft locked by alice"),
        "{}",
        out.stdout
    );
    assert!(!motd.exists(), "a locked item is not touched");

    // My own lock does not block me.
    std::fs::remove_file(&file).unwrap();
    r.cinch(&["lock", "add", "n1", "-i", &sel]).expect_code(0);
    r.cinch(&["apply", "n1"]).expect_code(0);
    assert_eq!(std::fs::read_to_string(&motd).unwrap(), "hello\n");
}

#[test]
fn apply_releases_the_hard_lock_and_refuses_a_held_one() {
    let r = repo();
    let hard = r.path().join("locks/hard-n1");
    r.cinch(&["apply", "n1,n2"]).expect_code(0);
    assert!(
        !hard.exists(),
        "hard lock released after a successful apply"
    );

    std::fs::create_dir_all(&hard).unwrap();
    let now = chrono::Utc::now().timestamp();
    std::fs::write(
        hard.join("info"),
        format!(r#"{{"user":"bob","date":{now},"comment":"upgrading"}}"#),
    )
    .unwrap();
    std::fs::write(r.path().join("out2/motd"), "drift\n").unwrap();
    let out = r.cinch(&["apply", "n1,n2"]).expect_code(1);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("bob") && all.contains("upgrading"), "{all}");
    assert_eq!(
        std::fs::read_to_string(r.path().join("out2/motd")).unwrap(),
        "hello\n",
        "other nodes proceed"
    );
    assert!(hard.exists(), "someone else's lock is left alone");

    r.cinch(&["apply", "n1", "--force"]).expect_code(0);
    assert!(!hard.exists());
}

#[test]
fn a_stale_hard_lock_is_taken_over_with_a_warning() {
    let r = repo();
    let hard = r.path().join("locks/hard-n1");
    std::fs::create_dir_all(&hard).unwrap();
    let old = chrono::Utc::now().timestamp() - 9 * 3600;
    std::fs::write(
        hard.join("info"),
        format!(r#"{{"user":"bob","date":{old},"comment":""}}"#),
    )
    .unwrap();
    let out = r.cinch(&["apply", "n1"]).expect_code(0);
    assert!(out.stderr.contains("stale"), "{}", out.stderr);
    assert!(!hard.exists());
}
/// One local node `n1` with bundle `b` and its locks under the repo; returns the repo and its
/// path, for tests that write `bundles/b/items.toml` around files under that path.
fn local_node_repo() -> (TestRepo, String) {
    let r = TestRepo::new();
    let root = r.path().display().to_string();
    r.write(
        "nodes.toml",
        &format!(
            "[nodes.n1]\ntransport = \"local\"\nlock_dir = \"{root}/locks\"\nbundles = [\"b\"]\n"
        ),
    );
    (r, root)
}

/// A repo whose single node runs a slow action, so an apply holds its hard lock for a while.
fn slow_repo(secs: f64) -> TestRepo {
    let r = TestRepo::new();
    let root = r.path().display().to_string();
    r.write(
        "nodes.toml",
        &format!(
            "[nodes.n1]\ntransport = \"local\"\nlock_dir = \"{root}/locks\"\nbundles = [\"slow\"]\n"
        ),
    );
    r.write(
        "bundles/slow/items.toml",
        &format!("[actions.wait]\ncommand = \"sleep {secs}; touch {root}/done\"\n"),
    );
    r
}

#[test]
fn two_concurrent_applies_on_one_node_exactly_one_proceeds() {
    let r = slow_repo(1.5);
    let spawn = || {
        let mut cmd = crate::harness::cinch_command();
        cmd.arg("-r")
            .arg(r.path())
            .args(["apply", "n1"])
            .env("CINCH_IDENTITY", "tester");
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut codes = [a.status.code().unwrap(), b.status.code().unwrap()];
    codes.sort_unstable();
    assert_eq!(codes, [0, 1], "one applies, one is refused");
    let loser = if a.status.code() == Some(1) { &a } else { &b };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&loser.stdout),
        String::from_utf8_lossy(&loser.stderr)
    );
    assert!(text.contains("locked by tester"), "{text}");
    assert!(!r.path().join("locks/hard-n1").exists());
}

fn interrupt_apply(signals: &[i32]) {
    let r = slow_repo(3.0);
    let mut cmd = crate::harness::cinch_command();
    cmd.arg("-r").arg(r.path()).args(["apply", "n1"]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let hard = r.path().join("locks/hard-n1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !hard.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "apply never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    for &sig in signals {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, sig) };
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !hard.exists(),
        "hard lock released after signals {signals:?}"
    );
}

#[test]
fn first_ctrl_c_lets_the_running_item_finish_and_releases_the_hard_lock() {
    interrupt_apply(&[libc::SIGINT]);
}

#[test]
fn second_ctrl_c_still_releases_the_hard_lock() {
    interrupt_apply(&[libc::SIGINT, libc::SIGINT]);
}

#[test]
fn sigterm_releases_the_hard_lock() {
    interrupt_apply(&[libc::SIGTERM]);
}

#[test]
fn verify_marks_items_soft_locked_by_others() {
    let r = repo();
    let sel = format!("file:{}/out1/motd", r.path().display());
    let id = r
        .cinch(&["-q", "lock", "add", "n1", "-i", &sel])
        .expect_code(0)
        .stdout
        .trim()
        .to_string();
    let file = soft_dir(&r, "n1").join(&id);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("\"tester\"", "\"alice\"");
    std::fs::write(&file, text).unwrap();
    let out = r.cinch(&["verify", "n1"]);
    assert!(
        out.stdout.contains("soft locked by alice"),
        "{}",
        out.stdout
    );
    assert!(
        !r.path().join("locks/hard-n1").exists(),
        "verify takes no hard lock"
    );
}

#[test]
fn lock_hooks_fire_with_their_arguments() {
    let r = repo();
    let log = r.path().join("hook.log");
    r.write(
        "hooks/record.rhai",
        &format!(
            r#"
fn lock_add(repo, node, lock_id, items, expiry, comment) {{
    run_local("echo add " + node.name + " " + lock_id + " " + quote(items[0]) + " " + comment + " >> {log}");
}}
fn lock_show(repo, node, lock_info) {{
    run_local("echo show " + node.name + " " + lock_info.id + " >> {log}");
}}
fn lock_remove(repo, node, lock_id) {{
    run_local("echo remove " + node.name + " " + lock_id + " >> {log}");
}}
"#,
            log = log.display()
        ),
    );
    let id = r
        .cinch(&["-q", "lock", "add", "n1", "-c", "why"])
        .expect_code(0)
        .stdout
        .trim()
        .to_string();
    r.cinch(&["lock", "show", "n1"]).expect_code(0);
    r.cinch(&["lock", "remove", "n1", &id]).expect_code(0);
    let got = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        got,
        format!("add n1 {id} * why\nshow n1 {id}\nremove n1 {id}\n")
    );
}

#[test]
fn lock_commands_over_ssh_run_per_node_and_an_unreachable_node_does_not_stop_the_others() {
    let sshd = crate::sshd::Sshd::start(3);
    let r = TestRepo::new().file("cinch.toml", &sshd.cinch_toml());
    let mut nodes = String::new();
    for n in ["node1", "node2", "node3"] {
        nodes.push_str(&format!(
            "[nodes.{n}]\nlock_dir = \"{}\"\n",
            sshd.node_dir(n).join("locks").display()
        ));
    }
    nodes.push_str(&format!(
        "[nodes.dead]\nhostname = \"127.0.0.1\"\nport = {}\nlock_dir = \"/tmp/never\"\n",
        crate::sshd::closed_port()
    ));
    r.write("nodes.toml", &nodes);

    let out = r
        .cinch(&["--json", "lock", "add", "all", "-c", "maintenance"])
        .expect_code(1);
    let added: Vec<_> = out
        .json_lines()
        .into_iter()
        .filter(|v| v["event"] == "lock_added")
        .collect();
    assert_eq!(added.len(), 3, "{}", out.stdout);
    let failed: Vec<_> = out
        .json_lines()
        .into_iter()
        .filter(|v| v["event"] == "lock_node")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["node"], "dead");
    assert!(
        failed[0]["reason"].as_str().unwrap().contains("connect"),
        "{}",
        failed[0]
    );
    for n in ["node1", "node2", "node3"] {
        let dir = sshd.node_dir(n).join("locks").join(format!("soft-{n}"));
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "{n} has its lock"
        );
    }
    r.cinch(&["lock", "show", "node1,node2,node3"])
        .expect_code(0)
        .stdout_has("maintenance")
        .stdout_has("node3");
}

// ---------------------------------------------------------------------------------------------
// Regression tests for issue 11 (locks) and issue 13 (lock bullets).

/// Sets a lock directory's mtime (the hard lock's heartbeat) `secs_ago` into the past.
fn backdate(dir: &std::path::Path, secs_ago: u64) {
    let when = std::time::SystemTime::now() - std::time::Duration::from_secs(secs_ago);
    std::fs::File::open(dir)
        .and_then(|f| f.set_modified(when))
        .unwrap_or_else(|e| panic!("backdating {}: {e}", dir.display()));
}

/// This machine's host name, as cinch records it for a hard lock's holder.
fn this_host() -> String {
    let out = std::process::Command::new("hostname")
        .output()
        .expect("hostname (install hostname / inetutils)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A pid that no longer exists: a child that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().expect("true");
    let pid = child.id();
    child.wait().expect("wait");
    pid
}

/// Writes a hard lock for n1 as a cinch on `host` with `pid` would, heartbeat `age` seconds old.
fn plant_hard_lock(r: &TestRepo, host: &str, pid: u32, age: u64) -> std::path::PathBuf {
    let hard = r.path().join("locks/hard-n1");
    std::fs::create_dir_all(&hard).unwrap();
    let date = chrono::Utc::now().timestamp() - age as i64;
    let info = serde_json::json!({
        "user": "bob@elsewhere", "date": date, "comment": "cinch apply",
        "token": "0123456789abcdef", "host": host, "pid": pid,
    });
    std::fs::write(hard.join("info"), format!("{info}\n")).unwrap();
    backdate(&hard, age);
    hard
}

#[test]
fn hard_lock_left_by_a_lost_link_is_taken_over_once_its_holder_is_gone() {
    // The real thing: an apply dies mid-run (SIGKILL, like a lost link that kills the client)
    // and leaves hard-n1 behind.
    let r = slow_repo(5.0);
    let mut cmd = crate::harness::cinch_command();
    cmd.arg("-r").arg(r.path()).args(["apply", "n1"]);
    cmd.env("CINCH_IDENTITY", "tester")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let hard = r.path().join("locks/hard-n1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !hard.join("info").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "apply never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(hard.exists(), "a killed apply leaves its lock behind");
    let info: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(hard.join("info")).unwrap().trim()).unwrap();
    assert_eq!(
        info["pid"],
        child.id(),
        "the holder's pid is recorded: {info}"
    );
    assert_eq!(info["host"], this_host().as_str(), "{info}");

    // Right after the crash its heartbeat is fresh: still refused, saying how fresh.
    let out = r.cinch(&["apply", "n1"]).expect_code(1);
    assert!(out.stderr.contains("locked by tester"), "{}", out.stderr);
    assert!(out.stderr.contains("heartbeat"), "{}", out.stderr);

    // A few minutes without a heartbeat and the holder's process gone: taken over, not 8 h.
    backdate(&hard, 4 * 60);
    let out = r.cinch(&["apply", "n1"]).expect_code(0);
    assert!(
        out.stderr.contains("took over") && out.stderr.contains("is gone"),
        "{}",
        out.stderr
    );
    assert!(!hard.exists(), "released after the apply");
}

#[test]
fn hard_lock_of_a_live_holder_on_this_host_is_never_taken_over_for_silence() {
    let r = repo();
    // Our own test process is alive: a silent but living holder keeps its lock.
    let hard = plant_hard_lock(&r, &this_host(), std::process::id(), 40 * 60);
    let out = r.cinch(&["apply", "n1"]).expect_code(1);
    assert!(
        out.stderr.contains("locked by bob@elsewhere"),
        "{}",
        out.stderr
    );
    assert!(hard.exists());
    // A dead pid with a fresh heartbeat is not taken over either (a few minutes' grace).
    std::fs::remove_dir_all(&hard).unwrap();
    let hard = plant_hard_lock(&r, &this_host(), dead_pid(), 30);
    r.cinch(&["apply", "n1"]).expect_code(1);
    assert!(hard.exists());
}

#[test]
fn hard_lock_from_another_host_is_taken_over_only_after_a_long_silence() {
    let r = repo();
    // Another machine's pid cannot be checked: ten quiet minutes are not enough ...
    let hard = plant_hard_lock(&r, "elsewhere.example", 1, 10 * 60);
    let out = r.cinch(&["apply", "n1"]).expect_code(1);
    assert!(
        out.stderr.contains("locked by bob@elsewhere"),
        "{}",
        out.stderr
    );
    assert!(hard.exists());
    // ... forty are (thirty missed heartbeats).
    backdate(&hard, 40 * 60);
    let out = r.cinch(&["apply", "n1"]).expect_code(0);
    assert!(
        out.stderr.contains("took over")
            && out.stderr.contains("no heartbeat from elsewhere.example"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_running_apply_keeps_its_hard_lock_heartbeat_fresh() {
    let (r, root) = local_node_repo();
    r.write(
        "bundles/b/items.toml",
        &format!(
            "[actions.first]\ncommand = \"touch {root}/first; sleep 1\"\n\n\
             [actions.second]\ncommand = \"touch {root}/second; sleep 1\"\nneeds = [\"action:first\"]\n"
        ),
    );
    let mut cmd = crate::harness::cinch_command();
    cmd.arg("-r").arg(r.path()).args(["apply", "n1"]);
    cmd.env("CINCH_IDENTITY", "tester")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let hard = r.path().join("locks/hard-n1");
    let wait_for = |p: &std::path::Path| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !p.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} never appeared",
                p.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    wait_for(&r.path().join("first"));
    backdate(&hard, 3600);
    wait_for(&r.path().join("second"));
    let mtime = std::fs::metadata(&hard).unwrap().modified().unwrap();
    let age = std::time::SystemTime::now()
        .duration_since(mtime)
        .unwrap_or_default();
    assert!(
        age < std::time::Duration::from_secs(30),
        "the second command beat the heartbeat (age {age:?})"
    );
    assert!(child.wait().unwrap().success());
}

#[test]
fn lock_added_to_several_nodes_has_one_id_that_remove_and_show_accept_on_all() {
    let r = repo();
    let out = r
        .cinch(&["lock", "add", "n1,n2", "-c", "one lock"])
        .expect_code(0);
    let ids: Vec<String> = ["n1", "n2"]
        .iter()
        .map(|n| {
            let names: Vec<String> = std::fs::read_dir(soft_dir(&r, n))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names.len(), 1, "{n}: {names:?}");
            names[0].clone()
        })
        .collect();
    assert_eq!(ids[0], ids[1], "one lock, one id: {}", out.stdout);
    let id = &ids[0];
    // Another lock, so the filter has something to filter out.
    r.cinch(&["lock", "add", "n1", "-c", "other"])
        .expect_code(0);
    let shown = r
        .cinch(&["lock", "show", "all", &id.to_lowercase()])
        .expect_code(0);
    assert!(
        shown.stdout.contains("one lock") && !shown.stdout.contains("other"),
        "{}",
        shown.stdout
    );
    assert_eq!(
        shown.stdout.matches(id.as_str()).count(),
        2,
        "{}",
        shown.stdout
    );
    r.cinch(&["lock", "remove", "n1,n2", id]).expect_code(0);
    assert!(!soft_dir(&r, "n1").join(id).exists() && !soft_dir(&r, "n2").join(id).exists());
    r.cinch(&["lock", "show", "all", id])
        .expect_code(0)
        .stdout_has(&format!("no soft lock {id}"));
}

#[test]
fn verify_reports_drift_under_someone_elses_soft_lock_and_exits_1() {
    let r = repo();
    r.cinch(&["apply", "n1"]).expect_code(0);
    let motd = r.path().join("out1/motd");
    let sel = format!("file:{}", motd.display());
    let id = r
        .cinch(&["-q", "lock", "add", "n1", "-i", &sel])
        .expect_code(0)
        .stdout;
    let file = soft_dir(&r, "n1").join(id.trim());
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("\"tester\"", "\"alice\"");
    std::fs::write(&file, text).unwrap();

    // No drift: a locked item that matches is simply ok.
    r.cinch(&["verify", "n1"]).expect_code(0);

    std::fs::write(&motd, "drift\n").unwrap();
    let out = r.cinch(&["verify", "n1"]).expect_code(1);
    assert!(
        out.stdout.contains("would fix (soft locked by alice"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("-drift"),
        "the diff is shown: {}",
        out.stdout
    );
    let json = r.cinch(&["--json", "verify", "n1"]).expect_code(1);
    let summary = json.json_lines().pop().unwrap();
    assert_eq!(summary["total"]["would_change"], 1, "{summary}");
    // apply still leaves it alone.
    r.cinch(&["apply", "n1"])
        .expect_code(0)
        .stdout_has("soft locked by alice");
    assert_eq!(std::fs::read_to_string(&motd).unwrap(), "drift\n");
}

#[test]
fn own_soft_locks_get_one_note_per_node_saying_they_were_ignored() {
    let r = repo();
    let a = r.cinch(&["-q", "lock", "add", "n1"]).expect_code(0).stdout;
    let b = r.cinch(&["-q", "lock", "add", "n1"]).expect_code(0).stdout;
    let out = r.cinch(&["apply", "n1,n2"]).expect_code(0);
    let notes: Vec<&str> = out.stderr.lines().filter(|l| l.contains("yours")).collect();
    assert_eq!(
        notes.len(),
        1,
        "one note for n1, none for n2: {}",
        out.stderr
    );
    assert!(
        notes[0].contains("n1") && notes[0].contains(a.trim()) && notes[0].contains(b.trim()),
        "{}",
        notes[0]
    );
    assert_eq!(
        std::fs::read_to_string(r.path().join("out1/motd")).unwrap(),
        "hello\n"
    );
}

/// Runs cinch with no identity variables at all, as under cron, plus `env`.
fn cinch_bare(r: &TestRepo, env: &[(&str, &str)], args: &[&str]) -> crate::harness::Run {
    let mut cmd = crate::harness::cinch_command();
    cmd.arg("-r").arg(r.path()).args(args);
    cmd.env_remove("CINCH_IDENTITY")
        .env_remove("USER")
        .env_remove("LOGNAME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    crate::harness::run(cmd)
}

#[test]
fn identity_ignores_the_git_branch_so_a_checkout_does_not_lock_you_out() {
    let r = repo();
    r.write(".git/HEAD", "ref: refs/heads/feature-a\n");
    let sel = format!("file:{}/out1/motd", r.path().display());
    let id = cinch_bare(
        &r,
        &[("USER", "alice")],
        &["-q", "lock", "add", "n1", "-i", &sel],
    )
    .expect_code(0)
    .stdout;
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(soft_dir(&r, "n1").join(id.trim())).unwrap())
            .unwrap();
    assert_eq!(
        stored["user"],
        format!("alice@{}", this_host()),
        "no branch in the identity"
    );
    r.write(".git/HEAD", "ref: refs/heads/feature-b\n");
    let out = cinch_bare(&r, &[("USER", "alice")], &["apply", "n1"]).expect_code(0);
    assert!(!out.stdout.contains("soft locked"), "{}", out.stdout);
    assert_eq!(
        std::fs::read_to_string(r.path().join("out1/motd")).unwrap(),
        "hello\n"
    );
    // Someone else is still blocked.
    std::fs::remove_file(r.path().join("out1/motd")).unwrap();
    cinch_bare(&r, &[("USER", "bob")], &["apply", "n1"])
        .expect_code(0)
        .stdout_has("soft locked by alice@");
}

#[test]
fn identity_comes_from_the_password_database_when_user_and_logname_are_unset() {
    let r = repo();
    let me = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("id");
    let me = String::from_utf8_lossy(&me.stdout).trim().to_string();
    let id = cinch_bare(&r, &[], &["-q", "lock", "add", "n1"])
        .expect_code(0)
        .stdout;
    let stored = std::fs::read_to_string(soft_dir(&r, "n1").join(id.trim())).unwrap();
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["user"], format!("{me}@{}", this_host()));
}

#[test]
fn node_controlled_lock_fields_cannot_clear_the_screen_or_forge_lines() {
    let r = repo();
    let dir = soft_dir(&r, "n1");
    std::fs::create_dir_all(&dir).unwrap();
    let far = chrono::Utc::now().timestamp() + 3600;
    let evil = serde_json::json!({
        "id": "EV1L", "user": "\u{1b}[2J\u{1b}[Hmallory", "date": 1, "expiry": far,
        "items": ["*"], "comment": "x\r\n\u{1b}[32m✓ n1  all ok\u{1b}[0m",
    });
    std::fs::write(dir.join("EV1L"), format!("{evil}\n")).unwrap();
    let hard = r.path().join("locks/hard-n2");
    std::fs::create_dir_all(&hard).unwrap();
    let info = serde_json::json!({"user": "eve\u{1b}]0;pwned\u{7}", "date": chrono::Utc::now().timestamp(), "comment": "a\nb"});
    std::fs::write(hard.join("info"), format!("{info}\n")).unwrap();

    for args in [
        &["lock", "show", "all"][..],
        &["apply", "n1,n2"],
        &["verify", "n1"],
    ] {
        let out = r.cinch(args);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(
            !all.contains(['\u{1b}', '\r', '\u{7}']),
            "{args:?} printed raw control characters: {all:?}"
        );
        assert!(
            !all.contains("\n✓ n1  all ok"),
            "{args:?} forged a line: {all}"
        );
    }
    r.cinch(&["lock", "show", "n1"])
        .expect_code(0)
        .stdout_has("\\e[2J\\e[Hmallory")
        .stdout_has("x\\r\\n\\e[32m");
    r.cinch(&["apply", "n2"])
        .expect_code(1)
        .stderr_has("locked by eve\\e]0;pwned\\x07")
        .stderr_has("(a\\nb)");
}

#[test]
fn node_stderr_in_failure_reasons_and_node_state_in_diffs_are_sanitised() {
    let (r, root) = local_node_repo();
    r.write(
        "bundles/b/items.toml",
        &format!(
            "[files.\"{root}/f\"]\ncontent = \"want\\n\"\n\n\
             [actions.loud]\ncommand = \"printf 'boom\\\\033[2J\\\\rX' >&2; exit 3\"\n"
        ),
    );
    std::fs::write(r.path().join("f"), "have \u{1b}[2J\u{1b}[31mred\r\n").unwrap();
    let out = r.cinch(&["verify", "n1"]).expect_code(1);
    assert!(!out.stdout.contains(['\u{1b}', '\r']), "{:?}", out.stdout);
    assert!(
        out.stdout.contains("-have \\e[2J\\e[31mred\\r"),
        "{}",
        out.stdout
    );
    let out = r.cinch(&["apply", "n1"]).expect_code(1);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(!all.contains(['\u{1b}', '\r']), "{all:?}");
    assert!(all.contains("boom\\e[2J\\rX"), "{all}");
}

#[test]
fn lock_times_are_shown_with_their_zone_and_json_uses_utc_rfc3339() {
    let r = repo().env("TZ", "Asia/Kolkata");
    r.cinch(&["lock", "add", "n1", "-c", "tz"])
        .expect_code(0)
        .stdout_has("+05:30");
    r.cinch(&["lock", "show", "n1"])
        .expect_code(0)
        .stdout_has("+05:30");
    let json = r.cinch(&["--json", "lock", "show", "n1"]).expect_code(0);
    let lock = json
        .json_lines()
        .into_iter()
        .find(|v| v["event"] == "lock")
        .unwrap();
    for key in ["created", "expires"] {
        let t = lock[key].as_str().unwrap_or_default();
        assert!(
            chrono::DateTime::parse_from_rfc3339(t).is_ok() && t.ends_with('Z'),
            "{key}: {lock}"
        );
    }
}

/// A local user for one test, removed again (with its home) when dropped.
struct TempUser(String);

impl TempUser {
    fn new() -> TempUser {
        let name = format!("cinchl{}", fastrand::u32(10_000..99_999));
        for attempt in 0.. {
            let st = std::process::Command::new("useradd")
                .args(["--create-home", "--shell", "/bin/sh", &name])
                .status()
                .expect("useradd (install passwd; the tests need root)");
            if st.success() {
                break;
            }
            // Another test may hold /etc/passwd's lock for a moment.
            assert!(attempt < 20, "useradd {name} failed: {st}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        TempUser(name)
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        for _ in 0..20 {
            let ok = std::process::Command::new("userdel")
                .args(["-r", &self.0])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

#[test]
fn unreadable_lock_dir_names_the_user_and_the_fix_instead_of_someone_since_1970() {
    use std::os::unix::fs::PermissionsExt;
    let user = TempUser::new();
    let r = repo();
    // The repo must be readable by the login user; the lock dir is root's, as root made it.
    std::fs::set_permissions(r.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    r.cinch(&["lock", "add", "n1", "-c", "root's lock"])
        .expect_code(0);
    let locks = r.path().join("locks");
    std::fs::create_dir_all(locks.join("hard-n1")).unwrap();
    std::fs::write(
        locks.join("hard-n1/info"),
        "{\"user\":\"root\",\"date\":1}\n",
    )
    .unwrap();
    std::fs::set_permissions(&locks, std::fs::Permissions::from_mode(0o700)).unwrap();
    let as_user = |args: &[&str]| {
        let mut cmd = std::process::Command::new("runuser");
        cmd.args(["-u", &user.0, "--"])
            .arg(env!("CARGO_BIN_EXE_cinch"))
            .arg("-r")
            .arg(r.path())
            .args(args)
            .env("NO_COLOR", "1")
            .env("CINCH_IDENTITY", &user.0)
            .env_remove("CINCH_REPO");
        crate::harness::run(cmd)
    };
    for args in [
        &["apply", "n1"][..],
        &["apply", "n1", "--force"],
        &["lock", "show", "n1"],
        &["verify", "n1"],
        &["lock", "add", "n1"],
        &["lock", "remove", "n1", "AB12"],
    ] {
        let out = as_user(args);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert_eq!(out.code, 1, "{args:?}: {all}");
        assert!(
            all.contains(&format!("cannot be read or written by {}", user.0))
                && all.contains("lock_dir")
                && all.contains("become"),
            "{args:?}: {all}"
        );
        assert!(
            !all.contains("1970")
                && !all.contains("no soft locks")
                && !all.contains("Permission denied"),
            "{args:?}: {all}"
        );
    }
    assert!(
        locks.join("hard-n1").exists(),
        "--force removed nothing it could not read"
    );
}

#[test]
fn hard_lock_is_released_when_the_link_is_lost_during_the_first_command() {
    let sshd = crate::sshd::Sshd::start(1);
    let dir = sshd.node_dir("node1");
    // cinch makes its control dir itself (private, ours); a name unique to this test.
    let control = std::path::PathBuf::from(format!("/tmp/cinchl-t{}-lost", std::process::id()));
    // A real `become` program that, the first time, runs the command and then holds the
    // channel open, so the test can cut the link after the lock was taken but before the
    // answer arrived. Later commands (the release) run normally.
    let wrapper = dir.join("hold-once");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n[ \"$1\" = -n ] && shift\nif [ ! -e {d}/ran ]; then \"$@\"; : > {d}/ran; exec sleep 10; fi\nexec \"$@\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = TestRepo::new()
        .file("cinch.toml", &sshd.cinch_toml())
        .env("CINCH_SSH_CONTROL_DIR", &control.display().to_string());
    r.write(
        "nodes.toml",
        &format!(
            "[nodes.node1]\nlock_dir = \"{}/locks\"\nbecome = \"{}\"\n",
            dir.display(),
            wrapper.display()
        ),
    );
    let mut cmd = crate::harness::cinch_command();
    cmd.arg("-r").arg(r.path()).args(["apply", "node1"]);
    cmd.env("CINCH_IDENTITY", "tester")
        .env("CINCH_SSH_CONTROL_DIR", &control)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let hard = dir.join("locks/hard-node1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !dir.join("ran").exists() {
        if std::time::Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the first command never ran: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(hard.exists(), "the first command took the lock");
    // Cut the link: kill this apply's ssh processes (found by its private control dir).
    let pids = crate::harness::pgrep(&control.display().to_string());
    assert!(!pids.is_empty(), "no ssh master found");
    for line in pids {
        if let Some(Ok(pid)) = line.split_whitespace().next().map(str::parse::<i32>) {
            // SAFETY: kill(2) on ssh processes this test's own cinch started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("connection lost"), "{stderr}");
    assert!(
        !hard.exists(),
        "the lock taken by the cut-off command was released: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&control);
}

/// Seen in the 40-node fleet benchmark: an acquire cut between its `mkdir` and writing `info`
/// left a nameless hard lock that refused every later apply for 8 hours.
#[test]
fn nameless_hard_lock_left_by_an_interrupted_acquire_is_taken_over() {
    let r = repo();
    let hard = r.path().join("locks/hard-n1");
    std::fs::create_dir_all(&hard).unwrap();

    // Fresh: a holder may be between its mkdir and its info, so it is still respected.
    let out = r.cinch(&["apply", "n1"]).expect_code(1);
    assert!(
        out.stderr.contains("locked") || out.stdout.contains("locked"),
        "{out:?}"
    );
    assert!(hard.exists());

    backdate(&hard, 2 * 60);
    let out = r.cinch(&["apply", "n1"]).expect_code(0);
    assert!(out.stderr.contains("nameless"), "{}", out.stderr);
    assert!(!hard.exists(), "the lock is released after the apply");
}

/// A lock result is an event on the bus: with `--json` the one JSON subscriber prints it
/// after the `lock_add` hook heard it (hooks come first), and that hook's `log()` line is an
/// event too; `lock`'s JSON lines are its reports, never the hook points themselves.
#[test]
fn lock_results_and_hook_log_lines_are_json_lines_in_bus_order() {
    let r = repo();
    r.write(
        "hooks/audit.rhai",
        "fn lock_add(repo, node, lock_id) { log(`locked ${node.name} ${lock_id}`); }\n\
         fn lock_remove(repo, node, lock_id) { log(`unlocked ${node.name} ${lock_id}`); }\n",
    );
    let out = r.cinch(&["--json", "lock", "add", "n1"]).expect_code(0);
    let lines = out.json_lines();
    let events: Vec<&str> = lines
        .iter()
        .map(|v| v["event"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        events,
        ["hook_log", "lock_added", "summary"],
        "{}",
        out.stdout
    );
    let id = lines[1]["lock"]["id"]
        .as_str()
        .expect("lock id")
        .to_string();
    assert_eq!(lines[0]["file"], "audit.rhai");
    assert_eq!(lines[0]["message"], format!("locked n1 {id}"));
    assert_eq!(lines[2]["command"], "lock add");

    // On the terminal the hook's line comes before the lock's own line.
    let human = r.cinch(&["lock", "remove", "n1", &id]).expect_code(0);
    let log_at = human
        .stdout
        .find(&format!("hook audit.rhai: unlocked n1 {id}\n"))
        .unwrap_or_else(|| panic!("no hook log line: {}", human.stdout));
    let removed_at = human
        .stdout
        .find(&format!("n1  removed soft lock {id}\n"))
        .unwrap_or_else(|| panic!("no removed line: {}", human.stdout));
    assert!(log_at < removed_at, "{}", human.stdout);
}

/// A failing lock hook is a `hook_error` event: one JSON line with `--json` (and nothing on
/// stderr), an `error:` line naming the file and line without it; either way the command
/// exits 1 while the lock result stands.
#[test]
fn failing_lock_hook_is_an_error_event_for_json_and_terminal() {
    let r = repo();
    r.write(
        "hooks/deny.rhai",
        "fn lock_show(repo, node, lock_info) {\n  throw \"not allowed\";\n}\n",
    );
    r.cinch(&["-q", "lock", "add", "n1"]).expect_code(0);
    let json = r.cinch(&["--json", "lock", "show", "n1"]).expect_code(1);
    let lines = json.json_lines();
    let errors: Vec<_> = lines
        .iter()
        .filter(|v| v["event"] == "hook_error")
        .collect();
    assert_eq!(errors.len(), 1, "{}", json.stdout);
    assert_eq!(errors[0]["hook"], "lock_show");
    assert_eq!(errors[0]["line"], 2);
    assert_eq!(errors[0]["message"], "not allowed");
    assert!(
        lines.iter().any(|v| v["event"] == "lock"),
        "{}",
        json.stdout
    );
    assert!(!json.stderr.contains("not allowed"), "{}", json.stderr);

    let human = r.cinch(&["lock", "show", "n1"]).expect_code(1);
    assert!(
        human
            .stderr
            .contains("deny.rhai:2:3: hook lock_show failed: not allowed"),
        "{}",
        human.stderr
    );
    assert!(human.stdout.contains("tester"), "{}", human.stdout);
}

/// Under heavy load (-p 200 on 2 cores) the closing command that releases the hard lock was
/// cut off by its 60 s limit; its status was never looked at, so the apply exited 0 with the
/// lock left behind and the next apply refused the node. A release that does not finish well
/// is now the node's error. Here `rm` refuses to remove the lock (a real `rm` on PATH that
/// fails for it), the way a killed or failed release leaves it.
#[test]
fn hard_lock_left_by_a_release_that_failed_was_reported_as_a_clean_apply() {
    let s = crate::apply::Scene::new("[files.\"@/f\"]\ncontent = \"x\\n\"\n");
    let path = rm_refusing_the_lock(
        &s,
        "echo \"rm: cannot remove '$a': Operation not permitted\" >&2; exit 1",
    );
    let r = s.repo.cinch_env(&[("PATH", &path)], &["apply", "n1"]);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert_eq!(r.code, 1, "a lock left behind is not a clean apply:\n{all}");
    assert!(
        all.contains("releasing the node's lock: the closing command exited 1")
            && all.contains("Operation not permitted"),
        "{all}"
    );
    assert!(
        s.repo.path().join("locks/hard-n1").exists(),
        "the scene really kept the lock"
    );
    assert_eq!(
        std::fs::read_to_string(s.path("f")).ok().as_deref(),
        Some("x\n"),
        "the work itself was done"
    );
}

/// The lock release may wait minutes on a swamped node, and cleanup commands outlive a second
/// Ctrl-C; a third one stops that wait too. Here the release hangs (an `rm` on PATH that
/// sleeps when asked to remove the lock); three SIGINTs end cinch within seconds, with the
/// node reported as failed and its lock said to be possibly held.
#[test]
fn third_interrupt_stops_waiting_for_a_hung_lock_release() {
    use std::time::{Duration, Instant};
    let s = crate::apply::Scene::new("[files.\"@/f\"]\ncontent = \"x\\n\"\n");
    let started = s.path("release-started");
    let path = rm_refusing_the_lock(&s, &format!("touch {}; exec sleep 600", started.display()));
    let mut cmd = crate::harness::cinch_command();
    cmd.arg("-r")
        .arg(s.repo.path())
        .args(["apply", "n1"])
        .env("PATH", &path)
        .env("CINCH_IDENTITY", "tester")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawning cinch");
    let until = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        assert!(Instant::now() < until, "the release never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..3 {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(300));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("waiting").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cinch kept waiting for the hung release after three interrupts");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("reaping cinch");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("its hard lock may still be held"), "{all}");
}

/// A directory to put first on PATH whose `rm` runs `when_lock` (shell, `$a` is the path)
/// when asked to remove the scene's hard lock `hard-n1`, and is the real rm otherwise.
/// Returns the PATH value.
fn rm_refusing_the_lock(s: &crate::apply::Scene, when_lock: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let bin = s.path("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let rm = bin.join("rm");
    std::fs::write(
        &rm,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in */hard-n1) {when_lock};; esac; done\n\
             exec /bin/rm \"$@\"\n"
        ),
    )
    .expect("write rm");
    std::fs::set_permissions(&rm, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}
