//! Saved plans (issue 16): `verify --plan-out` records what would change with hashes, `apply
//! --plan` changes exactly that and refuses, per item, what changed since.

use crate::apply::Scene;

/// Two drifted files `a` and `c` and a correct file `ok`.
const ITEMS: &str = r#"
[files."@/a"]
content = "a-want\n"
[files."@/c"]
content = "c-want\n"
[files."@/ok"]
content = "ok\n"
"#;

fn scene() -> Scene {
    let s = Scene::new(ITEMS);
    std::fs::write(s.path("a"), "a-have\n").unwrap();
    std::fs::write(s.path("c"), "c-have\n").unwrap();
    std::fs::write(s.path("ok"), "ok\n").unwrap();
    s
}

fn read(s: &Scene, rel: &str) -> String {
    std::fs::read_to_string(s.path(rel)).unwrap()
}

/// `verify n1 --plan-out plan.json` (exit 1: drift) and the plan's JSON.
fn make_plan(s: &Scene) -> (std::path::PathBuf, serde_json::Value) {
    let plan = s.repo.path().join("plan.json");
    s.cinch(&["verify", "n1", "--plan-out", plan.to_str().unwrap()])
        .expect_code(1);
    let json = serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    (plan, json)
}

#[test]
fn plan_is_applied_as_planned_and_nothing_else() {
    let s = scene();
    let (plan, json) = make_plan(&s);
    assert_eq!(json["cinch_plan"], 1, "{json}");
    assert_eq!(json["target"], "n1", "{json}");
    let items = json["nodes"][0]["items"].as_array().unwrap();
    let ids: Vec<&str> = items.iter().map(|i| i["item"].as_str().unwrap()).collect();
    let a = format!("file:{}", s.path("a").display());
    let c = format!("file:{}", s.path("c").display());
    assert_eq!(ids, [a.as_str(), c.as_str()], "{json}");
    for i in items {
        assert_eq!(i["change"], "fix", "{json}");
        assert_eq!(i["expected"].as_str().unwrap().len(), 64, "{json}");
        assert_eq!(i["actual"].as_str().unwrap().len(), 64, "{json}");
    }
    // The expected hash is the one `cinch hash --items` prints.
    let hashes = s.cinch(&["--json", "hash", "n1", "--items"]).expect_code(0);
    let expected = items[0]["expected"].as_str().unwrap();
    assert!(hashes.stdout.contains(expected), "{}", hashes.stdout);

    // Drift after the plan on an item it does not name is left alone.
    std::fs::write(s.path("ok"), "hand edit\n").unwrap();
    let run = s
        .cinch(&["apply", "--plan", plan.to_str().unwrap()])
        .expect_code(0);
    assert_eq!(read(&s, "a"), "a-want\n");
    assert_eq!(read(&s, "c"), "c-want\n");
    assert_eq!(read(&s, "ok"), "hand edit\n", "{}", run.stdout);
    assert!(run.stdout.contains("not in the plan"), "{}", run.stdout);
}

#[test]
fn plan_refuses_an_item_hand_edited_on_the_node_since_the_plan() {
    let s = scene();
    let (plan, _) = make_plan(&s);
    std::fs::write(s.path("a"), "edited after review\n").unwrap();
    let run = s
        .cinch(&["apply", "n1", "--plan", plan.to_str().unwrap()])
        .expect_code(1);
    assert_eq!(read(&s, "a"), "edited after review\n", "not touched");
    assert_eq!(read(&s, "c"), "c-want\n", "the rest of the plan is applied");
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains("changed since the plan"), "{all}");
    assert!(all.contains("state on the node"), "{all}");
}

#[test]
fn plan_refuses_an_item_whose_repo_state_changed_since_the_plan() {
    let s = scene();
    let (plan, _) = make_plan(&s);
    s.items(&ITEMS.replace("a-want", "a-changed-in-repo"));
    let run = s
        .cinch(&["apply", "--plan", plan.to_str().unwrap()])
        .expect_code(1);
    assert_eq!(read(&s, "a"), "a-have\n", "not touched");
    assert_eq!(read(&s, "c"), "c-want\n", "the rest of the plan is applied");
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains("changed since the plan"), "{all}");
    assert!(all.contains("repo changed"), "{all}");

    // An item the repo no longer has at all is refused too.
    let (plan, _) = make_plan(&s);
    s.items(&ITEMS.replace("[files.\"@/a\"]\ncontent = \"a-want\\n\"\n", ""));
    let run = s
        .cinch(&["apply", "--plan", plan.to_str().unwrap()])
        .expect_code(1);
    assert!(
        run.stderr.contains("no longer in the repo"),
        "{}",
        run.stderr
    );
}

#[test]
fn plan_file_holds_no_secret_value() {
    let s = Scene::new(
        r#"
[files."@/key"]
content = "s3cr3t-plan-value\n"
sensitive = true
"#,
    );
    std::fs::write(s.path("key"), "old-s3cr3t-on-node\n").unwrap();
    let plan = s.repo.path().join("plan.json");
    let run = s
        .cinch(&["verify", "n1", "--plan-out", plan.to_str().unwrap()])
        .expect_code(1);
    let text = std::fs::read_to_string(&plan).unwrap();
    for secret in ["s3cr3t-plan-value", "old-s3cr3t-on-node"] {
        assert!(!text.contains(secret), "{text}");
        assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret));
    }
    assert!(
        text.contains("file:"),
        "the sensitive item is planned: {text}"
    );
    s.cinch(&["apply", "--plan", plan.to_str().unwrap()])
        .expect_code(0);
    assert_eq!(read(&s, "key"), "s3cr3t-plan-value\n");
}

#[test]
fn plan_records_the_git_revision_and_whether_the_tree_was_dirty() {
    let s = scene();
    let (_, json) = make_plan(&s);
    assert!(json["revision"].is_null(), "outside git: {json}");
    let dir = s.repo.path();
    crate::review::git(dir, &["init", "-q"]);
    std::fs::write(dir.join(".gitignore"), "plan.json\nlocks/\n").unwrap();
    crate::review::git(dir, &["add", "-A"]);
    crate::review::git(dir, &["commit", "-q", "-m", "repo"]);
    let head = crate::review::git(dir, &["rev-parse", "HEAD"]);
    let (_, json) = make_plan(&s);
    assert_eq!(json["revision"]["commit"], head.trim(), "{json}");
    assert_eq!(json["revision"]["dirty"], false, "{json}");
    s.items(&ITEMS.replace("ok\\n", "ok2\\n"));
    let (_, json) = make_plan(&s);
    assert_eq!(json["revision"]["dirty"], true, "{json}");
}

#[test]
fn a_broken_plan_file_is_refused_naming_the_file() {
    let s = scene();
    let plan = s.repo.path().join("plan.json");
    std::fs::write(&plan, "{\"cinch_plan\": 1,\n  \"nodes\": 3}").unwrap();
    let run = s
        .cinch(&["apply", "--plan", plan.to_str().unwrap()])
        .expect_code(2);
    assert!(run.stderr.contains("plan.json:"), "{}", run.stderr);
    assert_eq!(read(&s, "a"), "a-have\n");
    s.cinch(&["apply"]).expect_code(2).stderr_has("--plan");
}

/// `verify n1 --json` as `who`: (human run, item verdict of `a`, summary).
fn verify_a(s: &Scene) -> (crate::harness::Run, serde_json::Value, serde_json::Value) {
    let human = s.cinch(&["verify", "n1"]).expect_code(1);
    let json = s.cinch(&["--json", "verify", "n1"]).expect_code(1);
    let lines = json.json_lines();
    let a = format!("file:{}", s.path("a").display());
    let verdict = lines
        .iter()
        .find(|l| l["event"] == "item_verify" && l["item"] == a.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no verdict for a\n{}", json.stdout));
    let summary = lines.last().cloned().unwrap();
    (human, verdict, summary)
}

/// Edits `a` by hand and verifies: the drift is the node's, since alice's apply.
fn verify_after_a_hand_edit(
    s: &Scene,
) -> (crate::harness::Run, serde_json::Value, serde_json::Value) {
    std::fs::write(s.path("a"), "hand edit\n").unwrap();
    let (human, verdict, summary) = verify_a(s);
    assert!(
        human
            .stdout
            .contains("would fix (changed on the node since alice's apply at "),
        "{}",
        human.stdout
    );
    (human, verdict, summary)
}

fn apply_as_alice(s: &Scene) {
    s.repo
        .cinch_env(&[("CINCH_IDENTITY", "alice")], &["apply", "n1"])
        .expect_code(0);
}

#[test]
fn drift_is_attributed_to_a_hand_edit_on_the_node() {
    let s = scene();
    apply_as_alice(&s);
    let (human, verdict, summary) = verify_after_a_hand_edit(&s);
    assert!(!human.stdout.contains("repo changed"), "{}", human.stdout);
    let drift = &verdict["drift"];
    assert_eq!(drift["node_changed"], true, "{verdict}");
    assert_eq!(drift["repo_changed"], false, "{verdict}");
    assert_eq!(drift["applied_by"], "alice", "{verdict}");
    assert!(
        drift["applied_at"].as_str().unwrap().ends_with('Z'),
        "{verdict}"
    );
    // The records ride on verify's one command.
    assert_eq!(summary["nodes"][0]["commands"], 1, "{summary}");
}

#[test]
fn drift_is_attributed_to_a_repo_change_and_to_both() {
    let s = scene();
    apply_as_alice(&s);
    s.items(&ITEMS.replace("a-want", "a-new-in-repo"));
    let (human, verdict, _) = verify_a(&s);
    assert!(
        human
            .stdout
            .contains("would fix (repo changed since alice's apply at "),
        "{}",
        human.stdout
    );
    assert_eq!(verdict["drift"]["node_changed"], false, "{verdict}");
    assert_eq!(verdict["drift"]["repo_changed"], true, "{verdict}");

    std::fs::write(s.path("a"), "hand edit\n").unwrap();
    let (human, verdict, _) = verify_a(&s);
    assert!(
        human
            .stdout
            .contains("changed on the node since alice's apply at ")
            && human.stdout.contains("; repo changed"),
        "{}",
        human.stdout
    );
    assert_eq!(verdict["drift"]["node_changed"], true, "{verdict}");
    assert_eq!(verdict["drift"]["repo_changed"], true, "{verdict}");

    // A later apply by someone else owns the records from then on.
    s.repo
        .cinch_env(&[("CINCH_IDENTITY", "bob")], &["apply", "n1"])
        .expect_code(0);
    std::fs::write(s.path("a"), "again\n").unwrap();
    let (human, _, _) = verify_a(&s);
    assert!(
        human.stdout.contains("since bob's apply"),
        "{}",
        human.stdout
    );
}

/// Operators upgrading cinch keep drift attribution: the records an older cinch left (a file
/// per item in `LOCK_DIR/applied-NODE/`) are read by verify, and the next apply moves them
/// into the one record file `applied-NODE.jsonl` and removes the directory.
#[test]
fn drift_records_left_by_an_older_cinch_still_attribute_and_move_into_one_file() {
    let s = scene();
    apply_as_alice(&s);
    let locks = s.repo.path().join("locks");
    let file = locks.join("applied-n1.jsonl");
    let old = locks.join("applied-n1");
    // What an older cinch left instead: the same records, a file each.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::create_dir(&old).unwrap();
    for (i, line) in text.lines().enumerate() {
        std::fs::write(old.join(format!("{i:032x}")), format!("{line}\n")).unwrap();
    }
    assert_eq!(text.lines().count(), 3, "{text}");
    std::fs::remove_file(&file).unwrap();

    let (_, verdict, _) = verify_after_a_hand_edit(&s);
    assert_eq!(verdict["drift"]["applied_by"], "alice", "{verdict}");

    // Only `a` is applied; the records of the others come along into the file.
    s.repo
        .cinch_env(
            &[("CINCH_IDENTITY", "bob")],
            &[
                "apply",
                "n1",
                "-o",
                &format!("file:{}", s.path("a").display()),
            ],
        )
        .expect_code(0);
    assert!(!old.exists(), "the old records directory is left behind");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut by: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["by"].to_string())
        .collect();
    by.sort();
    assert_eq!(by, ["\"alice\"", "\"alice\"", "\"bob\""], "{text}");
    std::fs::write(s.path("c"), "hand edit\n").unwrap();
    let run = s.cinch(&["verify", "n1"]).expect_code(1);
    assert!(
        run.stdout
            .contains("changed on the node since alice's apply at "),
        "{}",
        run.stdout
    );
}

#[test]
fn apply_plan_with_a_target_outside_the_plan_is_a_usage_error() {
    let s = scene();
    let (plan, _) = make_plan(&s);
    let nodes = std::fs::read_to_string(s.repo.path().join("nodes.toml")).unwrap();
    s.repo.write(
        "nodes.toml",
        &format!("{nodes}[nodes.n2]\ntransport = \"local\"\nbundles = [\"b\"]\n"),
    );
    let run = s
        .cinch(&["apply", "n2", "--plan", plan.to_str().unwrap()])
        .expect_code(2);
    assert!(
        run.stderr
            .contains("selects no node of the plan (it has n1)"),
        "{}",
        run.stderr
    );
    assert_eq!(read(&s, "a"), "a-have\n", "nothing applied");
}

#[test]
fn plan_and_drift_records_work_over_ssh_with_odd_paths_and_no_extra_command() {
    let sshd = crate::sshd::Sshd::start(1);
    let repo = crate::harness::TestRepo::new().file("cinch.toml", &sshd.cinch_toml());
    let d = sshd.node_dir("node1");
    let lock_dir = d.join("locks it's $(x)");
    repo.write(
        "nodes.toml",
        &format!(
            "[nodes.node1]\nbundles = [\"b\"]\nlock_dir = {:?}\n",
            lock_dir.display().to_string()
        ),
    );
    let f = d.join("f it's `odd` $(touch pwned)");
    repo.write(
        "bundles/b/items.toml",
        &format!(
            "[files.{:?}]\ncontent = \"want\\n\"\n",
            f.display().to_string()
        ),
    );
    std::fs::write(&f, "have\n").unwrap();
    let plan = repo.path().join("plan.json");
    repo.cinch(&["verify", "node1", "--plan-out", plan.to_str().unwrap()])
        .expect_code(1);
    let run = repo
        .cinch_env(
            &[("CINCH_IDENTITY", "carol")],
            &["--json", "apply", "--plan", plan.to_str().unwrap()],
        )
        .expect_code(0);
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "want\n");
    let summary = run.json_lines().pop().unwrap();
    // probe + one fix wave + the last command (records and lock release): no extra trip.
    assert_eq!(summary["nodes"][0]["commands"], 3, "{summary}");
    assert!(!d.join("pwned").exists() && !repo.path().join("pwned").exists());

    std::fs::write(&f, "hand edit\n").unwrap();
    let run = repo.cinch(&["--json", "verify", "node1"]).expect_code(1);
    let lines = run.json_lines();
    let verdict = lines
        .iter()
        .find(|l| l["event"] == "item_verify")
        .unwrap_or_else(|| panic!("{}", run.stdout));
    assert_eq!(verdict["drift"]["node_changed"], true, "{verdict}");
    assert_eq!(verdict["drift"]["applied_by"], "carol", "{verdict}");
    assert_eq!(lines.last().unwrap()["nodes"][0]["commands"], 1);
}
