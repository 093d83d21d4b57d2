//! `cinch verify`: read-only drift check with diffs; exit 1 when anything would change.

use crate::apply::Scene;

#[test]
fn verify_reports_drift_changes_nothing_and_exits_1() {
    let s = Scene::new(
        r#"
[files."@/f"]
content = "want\n"
[actions.never]
command = "touch @/action-ran"
"#,
    );
    std::fs::write(s.path("f"), "have\n").unwrap();
    let run = s.cinch(&["verify", "n1"]).expect_code(1);
    assert!(
        run.stdout.contains("file:") && run.stdout.contains("would fix"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("-have") && run.stdout.contains("+want"),
        "{}",
        run.stdout
    );
    assert_eq!(std::fs::read_to_string(s.path("f")).unwrap(), "have\n");
    assert!(!s.path("action-ran").exists(), "verify never runs actions");

    s.cinch(&["apply", "n1"]).expect_code(0);
    let run = s.cinch(&["--json", "verify", "n1"]).expect_code(0);
    let summary = run.json_lines().pop().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["total"]["would_change"], 0, "{summary}");
    assert_eq!(summary["nodes"][0]["commands"], 1, "{summary}");
}

#[test]
fn verify_of_a_missing_file_says_create() {
    let s = Scene::new("[files.\"@/new\"]\ncontent = \"x\\n\"\n");
    s.cinch(&["verify", "n1"])
        .expect_code(1)
        .stdout_has("would create");
    assert!(!s.path("new").exists());
}

#[test]
fn verify_with_a_bad_target_is_a_usage_error() {
    let s = Scene::new("");
    s.cinch(&["verify", "nosuchnode"]).expect_code(2);
}

#[test]
fn verify_shows_a_triggered_action_as_would_run_with_its_trigger() {
    let s = Scene::new(
        r#"
[files."@/conf"]
content = "new\n"
triggers = ["action:reload"]
[actions.reload]
command = "touch @/reloaded"
triggered = true
triggers = ["action:notify"]
[actions.notify]
command = "touch @/notified"
triggered = true
[files."@/steady"]
content = "same\n"
triggers = ["action:quiet"]
[actions.quiet]
command = "true"
triggered = true
"#,
    );
    std::fs::write(s.path("steady"), "same\n").unwrap();
    let run = s.cinch(&["verify", "n1"]).expect_code(1);
    let conf = format!("file:{}", s.path("conf").display());
    assert!(
        run.stdout
            .contains(&format!("action:reload  would run (triggered by {conf})")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("action:notify  would run (triggered by action:reload)"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("action:quiet"), "{}", run.stdout);
    assert!(!s.path("reloaded").exists() && !s.path("notified").exists());
}
