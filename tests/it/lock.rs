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
    let out = r.cinch(&["-q", "lock", "add", "n1", "-c", "db migration", "-e", "1h"]).expect_code(0);
    let id = out.stdout.trim().to_string();
    assert_eq!(id.len(), 4, "{id:?}");
    let file = soft_dir(&r, "n1").join(&id);
    let stored: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(stored["id"], id.as_str());
    assert_eq!(stored["user"], "tester");
    assert_eq!(stored["items"], serde_json::json!(["*"]));
    assert_eq!(stored["comment"], "db migration");
    let expiry = stored["expiry"].as_i64().unwrap() - stored["date"].as_i64().unwrap();
    assert_eq!(expiry, 3600);
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 1, "one line of JSON");

    r.cinch(&["lock", "show", "all"])
        .expect_code(0)
        .stdout_has(&id)
        .stdout_has("db migration")
        .stdout_has("tester");
    let shown = r.cinch(&["--json", "lock", "show", "n1"]).expect_code(0);
    let locks: Vec<_> = shown.json_lines().into_iter().filter(|v| v["event"] == "lock").collect();
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0]["lock"]["id"], id.as_str());

    // Ids match case-insensitively.
    r.cinch(&["lock", "remove", "n1", &id.to_lowercase()]).expect_code(0).stdout_has("removed");
    assert!(!file.exists());
    r.cinch(&["lock", "show", "n1"]).expect_code(0).stdout_has("no soft locks");
}

#[test]
fn removing_an_unknown_id_fails_for_that_node_only() {
    let r = repo();
    let id = r.cinch(&["-q", "lock", "add", "n1"]).expect_code(0).stdout.trim().to_string();
    let out = r.cinch(&["lock", "remove", "n1,n2", &id]).expect_code(1);
    assert!(out.stdout.contains("n1  removed"), "{}", out.stdout);
    assert!(out.stderr.contains("n2") && out.stderr.contains("no soft lock"), "{}", out.stderr);
}

#[test]
fn bad_lock_input_is_a_usage_error() {
    let r = repo();
    r.cinch(&["lock", "add", "n1", "-e", "8x"]).expect_code(2).stderr_has("s, m, h, d, w");
    r.cinch(&["lock", "remove", "n1", "AB-1"]).expect_code(2).stderr_has("4 characters");
    r.cinch(&["lock", "add", "n1", "-i", "file:/nope/motd"]).expect_code(2).stderr_has("matches no item");
    assert!(!soft_dir(&r, "n1").exists(), "nothing was locked");
}

#[test]
fn item_selector_typo_suggests_the_close_item() {
    let r = repo();
    let path = format!("file:{}/out1/mtod", r.path().display());
    r.cinch(&["lock", "add", "n1", "-i", &path]).expect_code(2).stderr_has("did you mean");
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
    let out = r.cinch(&["lock", "show", "n1"]).expect_code(0).stdout_has("no soft locks");
    assert!(out.stderr.contains("BAD1") && out.stderr.contains("corrupt"), "{}", out.stderr);
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
    let text = std::fs::read_to_string(&file).unwrap().replace("\"tester\"", "\"alice\"");
    std::fs::write(&file, text).unwrap();

    let out = r.cinch(&["apply", "n1"]).expect_code(0);
    assert!(out.stdout.contains("soft locked by alice"), "{}", out.stdout);
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
    assert!(!hard.exists(), "hard lock released after a successful apply");

    std::fs::create_dir_all(&hard).unwrap();
    let now = chrono::Utc::now().timestamp();
    std::fs::write(hard.join("info"), format!(r#"{{"user":"bob","date":{now},"comment":"upgrading"}}"#)).unwrap();
    std::fs::write(r.path().join("out2/motd"), "drift\n").unwrap();
    let out = r.cinch(&["apply", "n1,n2"]).expect_code(1);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("bob") && all.contains("upgrading"), "{all}");
    assert_eq!(std::fs::read_to_string(r.path().join("out2/motd")).unwrap(), "hello\n", "other nodes proceed");
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
    std::fs::write(hard.join("info"), format!(r#"{{"user":"bob","date":{old},"comment":""}}"#)).unwrap();
    let out = r.cinch(&["apply", "n1"]).expect_code(0);
    assert!(out.stderr.contains("stale"), "{}", out.stderr);
    assert!(!hard.exists());
}
