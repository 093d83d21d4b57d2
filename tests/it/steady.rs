//! Steady state in one round trip: an unchanged node costs ONE remote command once an apply
//! has left its steady marker, and the marker is never trusted when anything differs.

use std::path::PathBuf;

use crate::apply::Scene;
use crate::harness::TestRepo;

/// One file with a trigger, a template, a symlink and a triggered action, as in apply's tests.
const ITEMS: &str = r#"
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
command = "echo hi > @/app/ran"
triggered = true
"#;

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

fn commands(summary: &serde_json::Value) -> i64 {
    summary["nodes"][0]["commands"]
        .as_i64()
        .unwrap_or_else(|| panic!("no command count: {summary}"))
}

fn locks(s: &Scene) -> PathBuf {
    s.repo.path().join("locks")
}

fn marker(s: &Scene) -> PathBuf {
    locks(s).join("steady-n1")
}

/// A scene applied until its marker is written: first apply (changes), second (unchanged,
/// two commands, writes the marker).
fn settled() -> Scene {
    let s = Scene::new(ITEMS);
    s.cinch(&["apply", "n1"]).expect_code(0);
    std::fs::remove_file(s.path("app/ran")).expect("the first apply ran the action");
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(summary["nodes"][0]["fixed"], 0, "{summary}");
    assert_eq!(
        commands(&summary),
        2,
        "the first unchanged apply writes the marker in its release: {summary}"
    );
    assert!(marker(&s).is_file(), "no steady marker written");
    s
}

/// The item events of a `--json` apply, durations left out.
fn item_events(run: &crate::harness::Run) -> Vec<serde_json::Value> {
    run.json_lines()
        .into_iter()
        .filter(|l| l["event"].as_str().is_some_and(|e| e.starts_with("item")))
        .map(|mut l| {
            if let Some(o) = l.as_object_mut() {
                o.remove("duration");
                o.remove("duration_ms");
            }
            l
        })
        .collect()
}

/// The node's drift record file.
fn record_file(s: &Scene) -> PathBuf {
    locks(s).join("applied-n1.jsonl")
}

/// The drift records on the node: `(item, by, at)`.
fn records(s: &Scene) -> Vec<(String, String, i64)> {
    let text = std::fs::read_to_string(record_file(s)).expect("drift records");
    let mut out: Vec<(String, String, i64)> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("record: {e}: {l:?}"));
            (
                v["item"].as_str().unwrap_or_default().to_string(),
                v["by"].as_str().unwrap_or_default().to_string(),
                v["at"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The record file's inode and modification time: what any rewrite changes.
fn record_stamp(s: &Scene) -> (u64, i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(record_file(s)).expect("record file");
    (m.ino(), m.mtime(), m.mtime_nsec())
}

#[test]
fn unchanged_node_costs_one_remote_command() {
    let s = Scene::new(ITEMS);
    s.cinch(&["apply", "n1"]).expect_code(0);
    std::fs::remove_file(s.path("app/ran")).expect("the first apply ran the action");
    let (second, summary) = s.apply_json(&[]);
    assert_eq!(commands(&summary), 2, "{summary}");
    let before = records(&s);
    assert_eq!(before.len(), 4, "{before:?}");
    // Records carry whole seconds: the steady apply's must be visibly newer.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let (third, summary) = s.apply_json(&["--stats"]);
    let n = &summary["nodes"][0];
    assert_eq!(n["fixed"], 0, "{summary}");
    assert_eq!(n["ok"], 4, "{summary}");
    assert_eq!(n["skipped"], 1, "the action is not triggered: {summary}");
    assert_eq!(
        commands(&summary),
        1,
        "an unchanged node with a steady marker costs one remote command: {summary}"
    );
    assert!(
        !s.path("app/ran").exists(),
        "the triggered action must not run"
    );
    // The lock was given back by that one command; the drift records stand as they were (an
    // unchanged item's record keeps the time it reached its state, as after any release).
    assert!(!locks(&s).join("hard-n1").exists(), "hard lock left behind");
    assert_eq!(records(&s), before);
    // Same item events (hooks, JSON) as an apply that took two commands.
    assert_eq!(item_events(&second), item_events(&third));
    // And it stays at one; verify is untouched by all this.
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(commands(&summary), 1, "{summary}");
    s.cinch(&["verify", "n1"]).expect_code(0);
}

#[test]
fn unchanged_node_costs_one_remote_command_over_ssh() {
    let sshd = crate::sshd::Sshd::start(1);
    let n = "node1";
    let d = sshd.node_dir(n);
    let repo = TestRepo::new().file("cinch.toml", &sshd.cinch_toml());
    repo.write(
        "nodes.toml",
        &format!(
            "[nodes.{n}]\nbundles = [\"b\"]\nlock_dir = \"{}\"\n",
            d.join("locks").display()
        ),
    );
    let mut items = format!("[directories.\"{}/etc\"]\npurge = true\n", d.display());
    for k in 0..20 {
        items.push_str(&format!(
            "[files.\"{}/etc/f{k} it's `odd`\"]\ncontent = \"{k}\\n\"\nmode = \"0600\"\n",
            d.display()
        ));
    }
    repo.write("bundles/b/items.toml", &items);
    repo.cinch(&["apply", n]).expect_code(0);
    let count = |repo: &TestRepo| {
        let run = repo
            .cinch(&["--json", "apply", n, "--stats"])
            .expect_code(0);
        let summary = run.json_lines().pop().expect("summary");
        assert_eq!(summary["nodes"][0]["fixed"], 0, "{summary}");
        assert_eq!(summary["nodes"][0]["ok"], 21, "{summary}");
        summary["nodes"][0]["commands"].as_i64().unwrap_or(-1)
    };
    assert_eq!(
        count(&repo),
        2,
        "the first unchanged apply writes the marker"
    );
    assert_eq!(
        count(&repo),
        1,
        "then one remote command per unchanged node"
    );
    assert!(
        !d.join("locks/hard-node1").exists(),
        "hard lock left behind"
    );
    // A hand edit over there is still found and fixed.
    let f = d.join("etc/f3 it's `odd`");
    std::fs::write(&f, "drift\n").expect("edit");
    repo.cinch(&["apply", n]).expect_code(0);
    assert_eq!(std::fs::read_to_string(&f).expect("read"), "3\n");
}

#[test]
fn steady_marker_is_ignored_when_a_file_changed_on_the_node() {
    let s = settled();
    std::fs::write(s.path("app/a.conf"), "a = 2\n").expect("edit");
    // verify still sees it, attributed to the node.
    s.cinch(&["verify", "n1"])
        .expect_code(1)
        .stdout_has("changed on the node");
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(
        summary["nodes"][0]["fixed"], 2,
        "file and action: {summary}"
    );
    assert!(commands(&summary) > 1, "{summary}");
    assert_eq!(
        std::fs::read_to_string(s.path("app/a.conf")).expect("read"),
        "a = 1\n"
    );
    assert!(s.path("app/ran").exists(), "the fix triggers the action");
    // A mode change alone (same content) is also a different answer.
    std::fs::set_permissions(
        s.path("app/a.conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(summary["nodes"][0]["fixed"], 2, "{summary}");
    assert_eq!(mode(&s.path("app/a.conf")), 0o640);
}

#[test]
fn steady_marker_is_ignored_when_the_repo_changed() {
    let s = settled();
    s.items(&ITEMS.replace("a = 1", "a = 3"));
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(
        summary["nodes"][0]["fixed"], 2,
        "file and action: {summary}"
    );
    assert_eq!(
        std::fs::read_to_string(s.path("app/a.conf")).expect("read"),
        "a = 3\n"
    );
    // A change that the probe does not see (the action is no longer triggered, so it runs).
    s.items(
        &ITEMS
            .replace("a = 1", "a = 3")
            .replace("triggered = true", "")
            .replace("triggers = [\"action:hello\"]", ""),
    );
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(
        summary["nodes"][0]["fixed"], 1,
        "the action runs: {summary}"
    );
    std::fs::remove_file(s.path("app/ran")).expect("the action ran");
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(
        summary["nodes"][0]["fixed"], 1,
        "and runs every time: {summary}"
    );
    assert!(s.path("app/ran").exists());
}

#[test]
fn steady_marker_is_ignored_when_the_options_changed() {
    let s = settled();
    std::fs::write(s.path("app/a.conf"), "a = 2\n").expect("edit");
    // Skipping the edited file: nothing to do, but not the marker's judgment.
    let id = format!("file:{}/app/a.conf", s.root());
    let (_, summary) = s.apply_json(&["--skip", &id]);
    assert_eq!(summary["nodes"][0]["fixed"], 0, "{summary}");
    assert_eq!(commands(&summary), 2, "{summary}");
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(
        summary["nodes"][0]["fixed"], 2,
        "file and action: {summary}"
    );
}

#[test]
fn tampered_steady_marker_is_not_trusted() {
    let s = settled();
    let good = std::fs::read_to_string(marker(&s)).expect("marker");
    let (first, rest) = good.split_once('\n').expect("marker lines");
    let (e, d) = first.split_once(' ').expect("E D");
    assert_eq!((e.len(), d.len()), (64, 64), "{first}");
    // A marker for another probe answer, a garbage one, and one behind a symlink.
    let other = format!("{e} {}\n{rest}", "0".repeat(64));
    for bad in [other.as_str(), "garbage\n", ""] {
        std::fs::write(marker(&s), bad).expect("tamper");
        let (_, summary) = s.apply_json(&[]);
        assert_eq!(summary["nodes"][0]["ok"], 4, "{summary}");
        assert_eq!(commands(&summary), 2, "tampered {bad:?}: {summary}");
    }
    let elsewhere = s.path("marker-copy");
    std::fs::write(&elsewhere, &good).expect("copy");
    std::fs::remove_file(marker(&s)).expect("rm");
    std::os::unix::fs::symlink(&elsewhere, marker(&s)).expect("symlink");
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(commands(&summary), 2, "a symlinked marker: {summary}");
    assert!(
        marker(&s).is_file() && !marker(&s).is_symlink(),
        "rewritten as a plain file"
    );
    // Record lines with hostile names are never written outside the records directory.
    let good = std::fs::read_to_string(marker(&s)).expect("marker");
    std::fs::write(
        marker(&s),
        format!("{good}../../evil {{\"item\":\"x\",\n/tmp/evil2 {{\n"),
    )
    .expect("tamper");
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(commands(&summary), 1, "{summary}");
    assert!(!locks(&s).join("evil").exists());
    assert!(!s.repo.path().join("evil").exists());
    assert_eq!(records(&s).len(), 4);
}

#[test]
fn soft_lock_added_after_the_steady_marker_is_honoured() {
    let s = settled();
    std::fs::write(s.path("app/a.conf"), "a = 2\n").expect("edit");
    let id = format!("file:{}/app/a.conf", s.root());
    s.repo
        .cinch_env(
            &[("CINCH_IDENTITY", "someone-else")],
            &["lock", "add", "n1", "--items", &id, "--expires-in", "1h"],
        )
        .expect_code(0);
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(summary["nodes"][0]["fixed"], 0, "{summary}");
    assert_eq!(summary["nodes"][0]["skipped"], 2, "{summary}");
    assert_eq!(
        std::fs::read_to_string(s.path("app/a.conf")).expect("read"),
        "a = 2\n",
        "a soft-locked file is left alone"
    );
}

#[test]
fn steady_marker_that_the_answer_contradicts_is_caught_and_the_node_fixed() {
    contradicted_marker_is_caught(ITEMS);
}

/// The same with 300 more files: a node big enough that its states are built and judged on
/// all cores, and that judgment is dropped with the distrusted answer.
#[test]
fn steady_marker_that_the_answer_contradicts_is_caught_on_a_big_node() {
    let mut items = String::from(ITEMS);
    for k in 0..300 {
        items.push_str(&format!(
            "[files.\"@/app/f{k:03}\"]\ncontent = \"{k}\\n\"\n"
        ));
    }
    contradicted_marker_is_caught(&items);
}

/// A node whose digest tool lies (the same digest whatever it reads) matches its marker even
/// after a hand edit; the controller still judges the full answer it gets back.
fn contradicted_marker_is_caught(items: &str) {
    let real = ["/usr/bin/sha256sum", "/bin/sha256sum"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("sha256sum is needed: install coreutils");
    let s = Scene::new(items);
    let bin = s.repo.path().join("lying-bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let tool = bin.join("sha256sum");
    std::fs::write(
        &tool,
        format!(
            "#!/bin/sh\nif [ $# = 0 ]; then cat >/dev/null; echo '{}  -'; else exec {real} \"$@\"; fi\n",
            "a".repeat(64)
        ),
    )
    .expect("write tool");
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let apply = || {
        let run = s
            .repo
            .cinch_env(&[("PATH", path.as_str())], &["--json", "apply", "n1"]);
        run.json_lines()
            .into_iter()
            .find(|l| l["event"] == "summary")
            .unwrap_or_else(|| panic!("no summary\n{}\n{}", run.stdout, run.stderr))
    };
    apply();
    std::fs::remove_file(s.path("app/ran")).expect("the first apply ran the action");
    assert_eq!(commands(&apply()), 2);
    assert_eq!(commands(&apply()), 1);
    std::fs::write(s.path("app/a.conf"), "a = 2\n").expect("edit");
    let summary = apply();
    let n = &summary["nodes"][0];
    assert_eq!(n["failed"], 0, "{summary}");
    assert_eq!(n["fixed"], 2, "file and action: {summary}");
    assert_eq!(
        commands(&summary),
        5,
        "the released first command, the lock again, the fix, the action, the release: {summary}"
    );
    assert_eq!(
        std::fs::read_to_string(s.path("app/a.conf")).expect("read"),
        "a = 1\n"
    );
    assert!(s.path("app/ran").exists(), "the fix triggered the action");
    assert!(!marker(&s).exists(), "the wrong marker is removed");
    assert!(!locks(&s).join("hard-n1").exists(), "hard lock left behind");
}

#[test]
fn staging_leftovers_are_removed_by_the_one_command_of_a_steady_apply() {
    let s = settled();
    assert_eq!(commands(&s.apply_json(&[]).1), 1);
    // What a SIGKILL mid-upload leaves beside a managed file, an hour old.
    let leftover = s.path("app/.cinch-tmp-0123456789abcdef");
    std::fs::create_dir(&leftover).expect("mkdir");
    std::fs::write(leftover.join("a.conf"), "a = 1\n").expect("write");
    let aged = std::process::Command::new("touch")
        .args(["-h", "-d", "2 hours ago"])
        .arg(&leftover)
        .status()
        .expect("touch (coreutils) is needed");
    assert!(aged.success());
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(summary["nodes"][0]["failed"], 0, "{summary}");
    // apply's probe removes old leftovers itself, under the lock, before anything is digested.
    assert_eq!(commands(&summary), 1, "{summary}");
    assert!(!leftover.exists(), "the leftover is cleaned up");
}

#[test]
fn planted_steady_marker_temp_file_is_never_written_through() {
    let s = Scene::new(ITEMS);
    s.cinch(&["apply", "n1"]).expect_code(0);
    let victim = s.path("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    std::os::unix::fs::symlink(&victim, locks(&s).join("steady-n1.tmp")).expect("plant");
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(commands(&summary), 2, "{summary}");
    assert_eq!(
        std::fs::read_to_string(&victim).expect("read"),
        "precious\n"
    );
    assert!(marker(&s).is_file() && !marker(&s).is_symlink());
    assert_eq!(commands(&s.apply_json(&[]).1), 1);
}

/// A steady apply writes no drift record, on either path: the file keeps its inode and
/// modification time through the unchanged apply that writes the marker (two commands) and
/// the ones that use it (one command).
#[test]
fn steady_apply_leaves_the_drift_record_file_untouched() {
    let s = Scene::new(ITEMS);
    s.cinch(&["apply", "n1"]).expect_code(0);
    let stamp = record_stamp(&s);
    let before = records(&s);
    // Records carry whole seconds: a rewrite would be visible.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(commands(&summary), 2, "{summary}");
    assert!(marker(&s).is_file(), "no steady marker written");
    assert_eq!(
        record_stamp(&s),
        stamp,
        "the two-command steady apply rewrote the records"
    );
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(commands(&summary), 1, "{summary}");
    assert_eq!(
        record_stamp(&s),
        stamp,
        "the one-command steady apply rewrote the records"
    );
    assert_eq!(records(&s), before);
}

/// Found while measuring the upgrade: a node that an earlier build (drift records as a file
/// per item in `applied-NODE/`) had left steady kept taking the one-command path, which writes
/// no record, so its records were never merged into the file. Now those records send the next
/// apply through the release, which merges them and removes the directory; then one command.
#[test]
fn steady_node_with_records_of_an_earlier_build_merges_them_on_its_next_apply() {
    let s = settled();
    assert_eq!(commands(&s.apply_json(&[]).1), 1);
    let before = records(&s);
    // What an earlier build left: the same records, a file each, beside a valid marker.
    let old = locks(&s).join("applied-n1");
    std::fs::create_dir(&old).expect("mkdir");
    let text = std::fs::read_to_string(record_file(&s)).expect("records");
    for (i, line) in text.lines().enumerate() {
        std::fs::write(old.join(format!("{i:032x}")), format!("{line}\n")).expect("record");
    }
    std::fs::remove_file(record_file(&s)).expect("rm");

    let (_, summary) = s.apply_json(&[]);
    assert_eq!(summary["nodes"][0]["fixed"], 0, "{summary}");
    assert_eq!(
        commands(&summary),
        2,
        "the release merges the records: {summary}"
    );
    assert!(!old.exists(), "the old records directory is left behind");
    assert_eq!(
        records(&s),
        before,
        "records (and their times) carried over"
    );
    assert_eq!(commands(&s.apply_json(&[]).1), 1);
}

#[test]
fn steady_records_are_never_written_through_a_shared_records_directory() {
    use std::os::unix::fs::PermissionsExt;
    let s = settled();
    let victim = s.path("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    // Someone else could plant the record file's name once the lock directory is
    // world-writable.
    std::fs::set_permissions(locks(&s), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::fs::remove_file(record_file(&s)).expect("rm");
    std::os::unix::fs::symlink(&victim, record_file(&s)).expect("plant");
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(commands(&summary), 1, "{summary}");
    assert_eq!(
        std::fs::read_to_string(&victim).expect("read"),
        "precious\n"
    );
    // An apply that changes something writes the records: beside the symlink, not through it.
    std::fs::remove_file(s.path("app/a.conf")).expect("drift");
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(summary["nodes"][0]["fixed"], 2, "{summary}");
    assert_eq!(
        std::fs::read_to_string(&victim).expect("read"),
        "precious\n"
    );
    assert!(!record_file(&s).is_symlink(), "the symlink stays in place");
    assert_eq!(records(&s).len(), 4);
}

/// Found while reviewing the steady path: the normal release wrote each drift record through
/// `RECORD.tmp` with a plain `>`, so a symlink planted at that name (in a lock directory other
/// users can write to) had the record written through it into the symlink's target. The
/// record file is now written in a private directory of its own and renamed into place.
#[test]
fn drift_record_is_never_written_through_a_planted_tmp_symlink() {
    let s = Scene::new(ITEMS);
    s.cinch(&["apply", "n1"]).expect_code(0);
    let victim = s.path("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    let names = [
        "applied-n1.jsonl.tmp",
        ".applied-n1.jsonl",
        "applied-n1.tmp",
    ];
    for name in names {
        std::os::unix::fs::symlink(&victim, locks(&s).join(name)).expect("plant");
    }
    std::fs::remove_file(s.path("app/a.conf")).expect("drift");
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(
        summary["nodes"][0]["fixed"], 2,
        "the file and its action: {summary}"
    );
    assert_eq!(
        std::fs::read_to_string(&victim).expect("read"),
        "precious\n",
        "a drift record was written through a planted symlink"
    );
    assert_eq!(records(&s).len(), 4, "records are still written");
}

/// The marker covers the applier: drift records name who last brought an item to its state,
/// so another applier's unchanged apply takes the two-command path and its release records it.
#[test]
fn steady_marker_is_ignored_when_another_applier_applies() {
    let s = settled();
    let before = records(&s);
    assert!(before.iter().all(|(_, by, _)| by == "tester"), "{before:?}");
    let run = s
        .repo
        .cinch_env(
            &[("CINCH_IDENTITY", "someone-else")],
            &["--json", "apply", "n1", "--stats"],
        )
        .expect_code(0);
    let summary = run.json_lines().pop().expect("summary");
    assert_eq!(summary["nodes"][0]["fixed"], 0, "{summary}");
    assert_eq!(commands(&summary), 2, "another applier: {summary}");
    let after = records(&s);
    assert_eq!(after.len(), before.len());
    assert!(
        after.iter().all(|(_, by, _)| by == "someone-else"),
        "{after:?}"
    );
    // The marker is now someone-else's, so the first applier pays two commands once more.
    assert_eq!(commands(&s.apply_json(&[]).1), 2);
    assert_eq!(commands(&s.apply_json(&[]).1), 1);
}

/// A node with thousands of files keeps a hash cache (`LOCK_DIR/hashes-NODE`): an unchanged
/// apply writes it, `verify` believes it (a poisoned entry shows as drift, which is how the
/// test sees it is used), `verify --rehash` trusts none of it, and the next apply heals the
/// file the poisoned entry named.
#[test]
fn big_node_hash_cache_is_used_and_rehash_trusts_none_of_it() {
    use std::fmt::Write as _;
    use std::os::unix::fs::MetadataExt;
    let n = 2000;
    let mut items = String::from("[directories.\"@/d\"]\n\n");
    for i in 0..n {
        let _ = write!(items, "[files.\"@/d/{i:0>80}\"]\ncontent = \"{i}\\n\"\n\n");
    }
    let s = Scene::new(&items);
    s.cinch(&["apply", "n1"]).expect_code(0);
    // Only files unchanged for two seconds before a probe are cached.
    std::thread::sleep(std::time::Duration::from_millis(2200));
    s.cinch(&["apply", "n1"]).expect_code(0);
    let cache = locks(&s).join("hashes-n1");
    let text = std::fs::read_to_string(&cache).expect("the unchanged apply wrote a hash cache");
    assert_eq!(text.lines().count(), n);

    let file = s.path(&format!("d/{:0>80}", 5));
    // The entry of file 5 (its inode is in the key; the key's format is pinned in node_shell).
    let inode = std::fs::metadata(&file).expect("file 5").ino().to_string();
    let entry = text
        .lines()
        .find(|l| l.split([' ', ':']).nth(2) == Some(inode.as_str()))
        .unwrap_or_else(|| panic!("no entry for inode {inode}"));
    use sha2::Digest as _;
    let hash = hex::encode(sha2::Sha256::digest(b"5\n"));
    assert_eq!(entry.split(' ').next(), Some(hash.as_str()), "{entry}");
    let poisoned = entry.replacen(&hash, &"0".repeat(64), 1);
    std::fs::write(&cache, text.replace(entry, &poisoned)).expect("poison");

    let believed = s.cinch(&["verify", "n1"]).expect_code(1);
    assert!(
        believed.stdout.contains(&format!("{:0>80}", 5)),
        "{}",
        believed.stdout
    );
    s.cinch(&["verify", "n1", "--rehash"]).expect_code(0);
    s.cinch(&["apply", "n1"]).expect_code(0);
    s.cinch(&["verify", "n1", "--rehash"]).expect_code(0);
    assert_eq!(std::fs::read(&file).expect("file 5"), b"5\n");
}

/// A node with more items than the executor builds one by one (its states are built on all
/// cores, its expected states while the node works, its memory freed on another thread) and
/// an items.toml big enough to be parsed in pieces: the same events on the two-command and
/// the one-command path, records kept by a steady apply, drift fixed and a changed item
/// recorded anew.
#[test]
fn a_big_node_is_judged_and_recorded_the_same_on_every_path() {
    let mut items = String::from("[directories.\"@/big\"]\nmode = \"0755\"\n");
    for k in 0..300 {
        items.push_str(&format!(
            "[files.\"@/big/f{k:03}\"]\ncontent = \"{}\\n\"\nmode = \"0644\"\n",
            format!("{k:04}").repeat(250)
        ));
    }
    assert!(items.len() > 300_000, "{}", items.len());
    let s = Scene::new(&items);
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(summary["nodes"][0]["fixed"], 301, "{summary}");
    let before = records(&s);
    assert_eq!(before.len(), 301);
    // Records carry whole seconds: a rewrite would be visible.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (second, summary) = s.apply_json(&[]);
    let n = &summary["nodes"][0];
    assert_eq!((n["ok"].as_i64(), commands(&summary)), (Some(301), 2));
    let (third, summary) = s.apply_json(&[]);
    let n = &summary["nodes"][0];
    assert_eq!((n["ok"].as_i64(), commands(&summary)), (Some(301), 1));
    assert_eq!(item_events(&second), item_events(&third));
    assert_eq!(records(&s), before, "a steady apply rewrote records");

    // Drift on the node is fixed; a changed item in the repo is fixed and recorded anew.
    std::fs::write(s.path("big/f007"), "drift\n").expect("write");
    s.items(&items.replace("01230123", "changed!"));
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(summary["nodes"][0]["fixed"], 2, "{summary}");
    assert_eq!(
        std::fs::read_to_string(s.path("big/f007")).expect("read"),
        format!("{}\n", "0007".repeat(250))
    );
    let after = records(&s);
    let newer: Vec<&str> = after
        .iter()
        .zip(&before)
        .filter(|(a, b)| a.2 > b.2)
        .map(|(a, _)| a.0.as_str())
        .collect();
    assert_eq!(newer, [format!("file:{}/big/f123", s.root())]);
    s.cinch(&["verify", "n1"]).expect_code(0);
}

/// The judged digest hashes every field of every item (no longer their `{:?}` text): a
/// change that no expected state shows (a tag, a dependency) still means the marker's
/// judgment is not this repo's, so the apply takes its release again and writes a new one.
#[test]
fn steady_marker_is_ignored_when_only_a_tag_or_a_dependency_changed() {
    let s = settled();
    assert_eq!(commands(&s.apply_json(&[]).1), 1);
    for items in [
        ITEMS.replace("mode = \"0640\"", "mode = \"0640\"\ntags = [\"web\"]"),
        ITEMS.replace(
            "content_type = \"jinja2\"",
            "content_type = \"jinja2\"\nafter = [\"symlink:@/app/current\"]",
        ),
    ] {
        s.items(&items);
        let (_, summary) = s.apply_json(&[]);
        assert_eq!(summary["nodes"][0]["fixed"], 0, "{summary}");
        assert_eq!(commands(&summary), 2, "{items}\n{summary}");
        assert_eq!(commands(&s.apply_json(&[]).1), 1);
    }
}
