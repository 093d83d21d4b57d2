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
