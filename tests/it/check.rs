//! `cinch test`: all problems, each with file and line; exit 0 / 1 (node problems) / 2 (the
//! repo does not load).

use crate::harness::{TestRepo, cinch_command, run};

fn two_nodes(items: &str) -> TestRepo {
    TestRepo::new()
        .file(
            "nodes.toml",
            "[nodes.web1]\nbundles = [\"app\"]\n[nodes.web2]\nbundles = [\"app\"]\n[nodes.db1]\n",
        )
        .file("bundles/app/items.toml", items)
}

#[test]
fn template_repo_passes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("r");
    let mut cmd = cinch_command();
    cmd.args(["repo", "create"]).arg(&repo);
    run(cmd).expect_code(0);
    let mut cmd = cinch_command();
    cmd.arg("-r").arg(&repo).arg("test");
    let r = run(cmd).expect_code(0).stdout_has("1 node OK (");
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}

#[test]
fn good_repo_counts_nodes_and_items() {
    two_nodes("[files.\"/tmp/a\"]\ncontent = \"x\"\n[directories.\"/tmp/d\"]\n")
        .cinch(&["test"])
        .expect_code(0)
        .stdout_has("3 nodes OK (4 items)");
}

#[test]
fn load_problems_are_all_reported_with_exit_2() {
    let r = TestRepo::new()
        .file(
            "nodes.toml",
            "[nodes.web1]\nport = \"x\"\ngroups = [\"nope\"]\n",
        )
        .cinch(&["--json", "test"])
        .expect_code(2);
    let lines = r.json_lines();
    let problems: Vec<_> = lines
        .iter()
        .filter(|l| l["event"] == "test_problem")
        .collect();
    assert_eq!(problems.len(), 2, "{}", r.stdout);
    assert!(
        problems
            .iter()
            .all(|p| p["file"].as_str().unwrap().ends_with("nodes.toml"))
    );
    assert_eq!(problems[0]["line"], 2);
    assert_eq!(problems[1]["line"], 3);
    assert_eq!(lines.last().unwrap()["problems"], 2);
}

#[test]
fn item_problem_is_reported_once_for_all_its_nodes_with_exit_1() {
    let r = two_nodes("[files.\"/tmp/a\"]\ncontent = \"x\"\nmdoe = \"0644\"\n")
        .cinch(&["test"])
        .expect_code(1)
        .stderr_has("items.toml:3:1")
        .stderr_has("(nodes web1 and 1 more)")
        .stderr_has("1 problem found on 2 of 3 nodes");
    assert_eq!(r.stderr.matches("error:").count(), 1, "{}", r.stderr);
}

#[test]
fn template_that_does_not_render_is_a_problem() {
    two_nodes("[files.\"/tmp/t\"]\nsource = \"t.j2\"\ncontent_type = \"jinja2\"\n")
        .file(
            "bundles/app/files/t.j2",
            "workers = {{ metadata.nginx.workers }}\n",
        )
        .file(
            "nodes/extra.toml",
            "[nodes.web3]\nbundles = [\"app\"]\nmetadata = { nginx = { workers = 3 } }\n",
        )
        .cinch(&["test"])
        .expect_code(1)
        .stderr_has("(nodes web1 and 1 more)")
        .stderr_has("1 problem found on 2 of 4 nodes")
        .stderr_has("t.j2");
}

#[test]
fn dependency_loop_is_a_problem() {
    two_nodes(
        "[actions.a]\ncommand = \"true\"\nneeds = [\"action:b\"]\n[actions.b]\ncommand = \"true\"\nneeds = [\"action:a\"]\n",
    )
    .cinch(&["test", "web1"])
    .expect_code(1)
    .stderr_has("action:a")
    .stderr_has("(node web1)")
    .stderr_has("1 problem found on 1 of 1 node");
}

#[test]
fn target_limits_what_is_tested() {
    let r = two_nodes("[files.\"/tmp/a\"]\nbogus = 1\n");
    r.cinch(&["test", "db1"])
        .expect_code(0)
        .stdout_has("1 node OK (0 items)");
    r.cinch(&["test", "nope"])
        .expect_code(2)
        .stderr_has("no node or group named 'nope'");
}

// ---------------------------------------------------------------------------------------------
// Issue 11: `cinch test` and `apply` agree.

/// A repo with a local node `n1` and a dummy node `d`, both with bundle `b`.
fn with_dummy(items: &str) -> crate::apply::Scene {
    let s = crate::apply::Scene::new(items);
    let locks = s.repo.path().join("locks");
    s.repo.write(
        "nodes.toml",
        &format!(
            "[nodes.n1]\ntransport = \"local\"\nbundles = [\"b\"]\nlock_dir = \"{0}\"\n\
             [nodes.d]\ndummy = true\nbundles = [\"b\"]\n",
            locks.display()
        ),
    );
    s
}

#[test]
fn test_checks_the_items_of_dummy_nodes_as_apply_does() {
    let s = with_dummy("[files.\"@/f\"]\ncontent = \"x\"\nmode = \"0644\"\n");
    // The bad item is only on the dummy node: apply rejects it, so test must too.
    s.repo.write(
        "nodes.toml",
        &format!(
            "[nodes.n1]\ntransport = \"local\"\nlock_dir = \"{}\"\n\
             [nodes.d]\ndummy = true\nbundles = [\"b\"]\n",
            s.repo.path().join("locks").display()
        ),
    );
    s.items("[files.\"@/f\"]\ncontent = \"x\"\nmode = \"999\"\n");
    s.cinch(&["test"])
        .expect_code(1)
        .stderr_has("`mode` of file:")
        .stderr_has("(node d)");
    s.cinch(&["apply", "d"])
        .expect_code(2)
        .stderr_has("`mode` of file:");
}

#[test]
fn needs_on_a_bundle_that_does_not_exist_fails_test_and_apply_at_the_needs_line() {
    let s = with_dummy("[files.\"@/f\"]\ncontent = \"x\"\nneeds = [\"bundle:nope\"]\n");
    let needle = "items.toml:3:9: file:";
    s.cinch(&["test"])
        .expect_code(1)
        .stderr_has(needle)
        .stderr_has("has a dependency (needs) on 'bundle:nope', but the repo has no bundle 'nope'");
    s.cinch(&["apply", "n1"])
        .expect_code(2)
        .stderr_has("but the repo has no bundle 'nope'");
    assert!(!s.path("f").exists(), "nothing may be applied");
    // A bundle that exists but is not on the node is a legitimate (empty) dependency.
    s.repo.write("bundles/other/items.toml", "");
    s.items("[files.\"@/f\"]\ncontent = \"x\"\nneeds = [\"bundle:other\"]\n");
    s.cinch(&["test"]).expect_code(0);
}

#[test]
fn owner_group_or_user_name_starting_with_dash_is_refused_by_test_and_apply() {
    let s = with_dummy(
        "[files.\"@/f\"]\ncontent = \"x\"\nowner = \"-R\"\n\
         [directories.\"@/d\"]\ngroup = \"--reference=/etc\"\n\
         [symlinks.\"@/l\"]\ntarget = \"/\"\nowner = \"root:root\"\n\
         [users.\"-o\"]\n\
         [users.app]\ngroups = [\"-G\"]\ngid = \"-g\"\n\
         [groups.\"-r\"]\n\
         [pkg_apt.\"-y\"]\n",
    );
    let r = s.cinch(&["test"]).expect_code(1);
    for needle in [
        "`owner` of file:",
        "is \"-R\", which starts with '-' or '+'",
        "`group` of directory:",
        "is \"--reference=/etc\"",
        "is \"root:root\", which contains ':'",
        "user item name \"-o\" must not start with '-'",
        "group item name \"-r\" must not start with '-'",
        "pkg_apt item name \"-y\" must not start with '-'",
        "`groups` of user:app lists \"-G\"",
        "`gid` of user:app is \"-g\"",
    ] {
        assert!(
            r.stderr.contains(needle),
            "missing {needle:?}:\n{}",
            r.stderr
        );
    }
    s.cinch(&["apply", "n1"]).expect_code(2);
    assert!(!s.path("f").exists(), "nothing may be applied");
}

#[test]
fn numeric_owner_with_plus_is_not_still_differing_after_the_fix() {
    let uid = String::from_utf8(
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .expect("id -u (coreutils)")
            .stdout,
    )
    .expect("utf-8")
    .trim()
    .to_string();
    let gid = String::from_utf8(
        std::process::Command::new("id")
            .arg("-g")
            .output()
            .expect("id -g (coreutils)")
            .stdout,
    )
    .expect("utf-8")
    .trim()
    .to_string();
    let s = crate::apply::Scene::new(&format!(
        "[files.\"@/f\"]\ncontent = \"x\"\nowner = \"+{uid}\"\ngroup = \"{gid}\"\n\
         [directories.\"@/d\"]\nowner = \"{uid}\"\ngroup = \"+{gid}\"\n"
    ));
    s.cinch(&["test"]).expect_code(0);
    let r = s.cinch(&["apply", "n1"]).expect_code(0);
    assert!(!r.stdout.contains("still differs"), "{}", r.stdout);
    assert!(!r.stderr.contains("still differs"), "{}", r.stderr);
    // The normal form is what the node reports: nothing left to change.
    s.cinch(&["verify", "n1"]).expect_code(0);
}

#[test]
fn a_problem_per_node_is_exit_1_and_a_repo_that_does_not_load_is_exit_2() {
    two_nodes("[files.\"/tmp/a\"]\ncontent = \"x\"\nowner = \"-R\"\n")
        .cinch(&["test"])
        .expect_code(1);
    two_nodes("[files.\"/tmp/a\"]\ncontent = \"x\"\n")
        .file("nodes/more.toml", "[nodes.x\n")
        .cinch(&["test"])
        .expect_code(2)
        .stderr_has("the repo does not load");
}

// ---------------------------------------------------------------------------------------------
// Issue 13: errors in the order they are fixed.

#[test]
fn errors_within_a_file_are_in_line_order_not_text_order() {
    let items: String = (1..=12)
        .map(|i| format!("[files.\"/tmp/f{i}\"]\ncontent = \"x\"\nmode = \"999\"\n\n"))
        .collect();
    let r = two_nodes(&items).cinch(&["test"]).expect_code(1);
    let lines: Vec<usize> = r
        .stderr
        .lines()
        .filter_map(|l| l.split("items.toml:").nth(1))
        .filter_map(|rest| rest.split(':').next()?.parse().ok())
        .collect();
    assert_eq!(lines.len(), 12, "{}", r.stderr);
    let mut sorted = lines.clone();
    sorted.sort_unstable();
    assert_eq!(lines, sorted, "{}", r.stderr);
}

#[test]
fn toml_syntax_error_is_not_preceded_by_its_knock_on_errors() {
    let r = TestRepo::new()
        .file(
            "nodes.toml",
            "[nodes.web1]\ngroups = [\"web\"]\nbundles = [\"app\"]\n",
        )
        .file("groups.toml", "[groups.web\nbundles = [\"app\"]\n")
        .file("bundles/app/items.toml", "")
        .cinch(&["test"])
        .expect_code(2);
    let first = r.stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains("groups.toml:1:") && first.contains("invalid TOML"),
        "the syntax error must come first:\n{}",
        r.stderr
    );
    assert!(!r.stderr.contains("unknown group"), "{}", r.stderr);
}

#[test]
fn test_reports_a_configured_ssh_file_that_does_not_exist_with_tilde_expanded() {
    let home = tempfile::tempdir().expect("tempdir");
    let home_str = home.path().to_str().expect("utf-8");
    let r = two_nodes("")
        .file(
            "cinch.toml",
            "[ssh]\nconfig_file = \"~/.ssh/cinch-config\"\nknown_hosts_file = \"~/kh\"\n",
        )
        .env("HOME", home_str);
    r.cinch(&["test"])
        .expect_code(1)
        .stderr_has(&format!(
            "cinch.toml:2:15: [ssh] config_file {home_str}/.ssh/cinch-config does not exist"
        ))
        .stderr_has(&format!(
            "[ssh] known_hosts_file {home_str}/kh does not exist"
        ));
    std::fs::create_dir_all(home.path().join(".ssh")).expect("mkdir");
    std::fs::write(home.path().join(".ssh/cinch-config"), "").expect("write");
    std::fs::write(home.path().join("kh"), "").expect("write");
    r.cinch(&["test"]).expect_code(0);
}

#[test]
fn test_reports_a_metadata_conflict_and_the_same_nodes_item_problems_together() {
    TestRepo::new()
        .file(
            "nodes.toml",
            "[nodes.n2]\ngroups = [\"a\", \"z\"]\nbundles = [\"only2\"]\n",
        )
        .file(
            "groups.toml",
            "[groups.a.metadata]\nport = 1\n[groups.z.metadata]\nport = 2\n",
        )
        .file(
            "bundles/only2/items.toml",
            "[files.\"/tmp/x\"]\ncontent = \"x\"\nmode = \"999\"\n",
        )
        .cinch(&["test"])
        .expect_code(1)
        .stderr_has("metadata conflict at `port`")
        .stderr_has("`mode` of file:/tmp/x is \"999\"");
}

/// `cinch test`'s problems, its summary and the hooks' `log()` lines are events: with
/// `--json` they are its JSON lines (and the `test_node`/`test` hook points are not, as
/// before); on the terminal the test renderer shows problems and `-v`'s node lines.
#[test]
fn test_problems_summary_and_hook_log_lines_are_events_for_json_and_terminal() {
    let r = two_nodes("[files.\"/tmp/a\"]\ncontent = \"x\"\nmdoe = \"0644\"\n").file(
        "hooks/a.rhai",
        "fn test_node(repo, node) { if node.name == \"db1\" { log(\"db1 checked\"); } }\n\
         fn test(repo) { log(\"all checked\"); }\n",
    );
    let json = r.cinch(&["--json", "test"]).expect_code(1);
    let lines = json.json_lines();
    let events: Vec<&str> = lines
        .iter()
        .map(|v| v["event"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        events,
        ["hook_log", "hook_log", "test_problem", "test_summary"],
        "{}",
        json.stdout
    );
    assert_eq!(lines[0]["message"], "db1 checked");
    assert_eq!(lines[1]["message"], "all checked");
    assert_eq!(lines[2]["nodes"], serde_json::json!(["web1", "web2"]));
    assert_eq!(lines[3]["problems"], 1);
    assert_eq!(lines[3]["nodes_with_problems"], 2);
    assert!(json.stderr.is_empty(), "{}", json.stderr);

    let human = r.cinch(&["-v", "test"]).expect_code(1);
    assert!(
        human.stdout.contains("hook a.rhai: all checked\n"),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("ok  db1  0 items\n"),
        "{}",
        human.stdout
    );
    assert!(
        human.stderr.contains("1 problem found on 2 of 3 nodes"),
        "{}",
        human.stderr
    );
    assert!(!human.stdout.contains("\"event\""), "{}", human.stdout);
}
