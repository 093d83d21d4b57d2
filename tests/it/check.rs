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
