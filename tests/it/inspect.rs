//! The inspection commands (`nodes`, `groups`, `metadata`, `repo create`) and the man pages.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::harness::{TestRepo, cinch_command, run};

fn small_repo() -> TestRepo {
    TestRepo::new()
        .file("bundles/nginx/items.toml", "")
        .file(
            "nodes.toml",
            r#"
[nodes.web1]
hostname = "web1.example.com"
port = 2222
groups = ["webservers"]
[nodes.web1.metadata.nginx]
workers = 4

[nodes.db1]
username = "admin"
dummy = true
"#,
        )
        .file(
            "groups.toml",
            r#"
[groups.webservers]
bundles = ["nginx"]
subgroups = ["eu"]
[groups.eu]
members = ["db1"]
"#,
        )
}

#[test]
fn nodes_lists_names_one_per_line() {
    let r = small_repo().cinch(&["nodes"]).expect_code(0);
    assert_eq!(r.stdout, "db1\nweb1\n");
    let r = small_repo()
        .cinch(&["nodes", "webservers,!web1"])
        .expect_code(0);
    assert_eq!(r.stdout, "db1\n");
}

#[test]
fn nodes_with_attributes_is_a_table() {
    let r = small_repo()
        .cinch(&[
            "nodes",
            "-a",
            "hostname,port,username,groups,bundles,dummy,metadata.nginx.workers",
        ])
        .expect_code(0);
    let web1 = r
        .stdout
        .lines()
        .find(|l| l.contains("web1"))
        .expect("web1 row");
    for cell in [
        "web1.example.com",
        "2222",
        "webservers",
        "nginx",
        "false",
        "4",
    ] {
        assert!(web1.contains(cell), "{cell} missing in {web1}");
    }
    let db1 = r
        .stdout
        .lines()
        .find(|l| l.contains("db1"))
        .expect("db1 row");
    assert!(
        db1.contains("admin") && db1.contains("true") && db1.contains("eu, webservers"),
        "{db1}"
    );
    assert!(r.stdout.contains("metadata.nginx.workers"), "{}", r.stdout);
}

#[test]
fn nodes_json_has_the_same_data() {
    let r = small_repo()
        .cinch(&[
            "--json",
            "nodes",
            "-a",
            "hostname",
            "-a",
            "port,transport,metadata.nginx",
        ])
        .expect_code(0);
    assert_eq!(
        r.json_lines(),
        vec![
            serde_json::json!({"node": "db1", "hostname": "db1", "port": null, "transport": "ssh", "metadata.nginx": null}),
            serde_json::json!({"node": "web1", "hostname": "web1.example.com", "port": 2222, "transport": "ssh", "metadata.nginx": {"workers": 4}}),
        ]
    );
}

#[test]
fn nodes_unknown_attribute_is_a_usage_error() {
    small_repo()
        .cinch(&["nodes", "-a", "hostnme"])
        .expect_code(2)
        .stderr_has("unknown node attribute 'hostnme' (did you mean 'hostname'?)");
}

#[test]
fn nodes_unknown_target_is_a_usage_error() {
    small_repo()
        .cinch(&["nodes", "wbe1"])
        .expect_code(2)
        .stderr_has("no node or group named 'wbe1' (did you mean 'web1'?)");
}

#[test]
fn groups_table_and_json() {
    let r = small_repo().cinch(&["groups"]).expect_code(0);
    let web = r
        .stdout
        .lines()
        .find(|l| l.contains("webservers"))
        .expect("row");
    assert!(
        web.contains("db1, web1") && web.contains("nginx") && web.contains("eu"),
        "{web}"
    );
    let r = small_repo()
        .cinch(&["--json", "groups", "db1"])
        .expect_code(0);
    let lines = r.json_lines();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert_eq!(lines[0]["group"], "eu");
    assert_eq!(lines[0]["members"], serde_json::json!(["db1"]));
    assert_eq!(lines[0]["supergroups"], serde_json::json!(["webservers"]));
    let r = small_repo()
        .cinch(&["--json", "groups", "eu"])
        .expect_code(0);
    assert_eq!(r.json_lines().len(), 1);
}

#[test]
fn metadata_keys_and_unknown_key() {
    let r = small_repo()
        .cinch(&["metadata", "web1", "nginx.workers"])
        .expect_code(0);
    assert_eq!(r.stdout, "{\n  \"nginx\": {\n    \"workers\": 4\n  }\n}\n");
    small_repo()
        .cinch(&["metadata", "web1", "nginx.wrokers"])
        .expect_code(2)
        .stderr_has(
            "node 'web1' has no metadata key 'nginx.wrokers' (did you mean 'nginx.workers'?)",
        );
    small_repo()
        .cinch(&["metadata", "web9"])
        .expect_code(2)
        .stderr_has("no node named 'web9'");
    let r = small_repo()
        .cinch(&["--json", "metadata", "db1"])
        .expect_code(0);
    assert_eq!(r.json_lines(), vec![serde_json::json!({})]);
}

#[test]
fn repo_create_writes_a_loadable_repo_and_refuses_non_empty_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("new");
    let mut cmd = cinch_command();
    cmd.args(["repo", "create"]).arg(&target);
    run(cmd).expect_code(0).stdout_has("created a cinch repo");
    assert!(target.join("bundles/demo/files/motd.j2").is_file());

    let mut cmd = cinch_command();
    cmd.arg("-r")
        .arg(&target)
        .args(["nodes", "-a", "transport,groups,metadata.demo.color"]);
    let r = run(cmd).expect_code(0);
    let demo = r
        .stdout
        .lines()
        .find(|l| l.contains("demo "))
        .expect("demo row");
    assert!(
        demo.contains("local")
            && demo.contains("demo-machines, everything")
            && demo.contains("blue"),
        "{demo}"
    );

    let mut cmd = cinch_command();
    cmd.args(["repo", "create"]).arg(&target);
    run(cmd).expect_code(2).stderr_has("is not empty");
}

#[test]
fn closed_pipe_is_not_an_error() {
    // Enough output that it cannot all sit in the pipe buffer when the reader goes away.
    let mut nodes = String::new();
    for i in 0..6000 {
        nodes.push_str(&format!(
            "[nodes.a-node-with-a-long-name-to-fill-the-pipe-{i:05}]\n"
        ));
    }
    let repo = TestRepo::new().file("nodes.toml", &nodes);
    let mut child = cinch_command()
        .arg("-r")
        .arg(repo.path())
        .arg("nodes")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cinch");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read");
    assert!(first.starts_with("a-node-with-a-long-name"), "{first}");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn man_pages_are_current() {
    let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    if std::env::var_os("CINCH_UPDATE_MAN").is_some() {
        let _ = std::fs::remove_dir_all(&committed);
        cinch::cli::write_man_pages(&committed).expect("writing man/");
    }
    let fresh = tempfile::tempdir().unwrap();
    cinch::cli::write_man_pages(fresh.path()).expect("generating man pages");
    let list = |dir: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let hint = "man/ is out of date: run `CINCH_UPDATE_MAN=1 cargo test --test it inspect::man_pages_are_current` and commit man/";
    assert_eq!(list(fresh.path()), list(&committed), "{hint}");
    for name in list(fresh.path()) {
        let want = std::fs::read_to_string(fresh.path().join(&name)).unwrap();
        let have = std::fs::read_to_string(committed.join(&name)).unwrap_or_default();
        assert!(want == have, "{name} differs. {hint}");
    }
}

/// Every visible (sub)command's path (`[]` is cinch itself), as the man pages are generated.
fn command_paths() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(path.clone());
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() == "help" {
                continue;
            }
            path.push(sub.get_name().to_string());
            walk(sub, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(
        &<cinch::cli::Cli as clap::CommandFactory>::command(),
        &mut Vec::new(),
        &mut out,
    );
    out
}

#[test]
fn every_man_page_has_exit_status_environment_and_examples() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let mut pages = 0;
    for entry in std::fs::read_dir(&dir).expect("man/ exists") {
        let path = entry.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).expect("man page is text");
        let name = path.display();
        for section in [".SH \"EXIT STATUS\"", ".SH ENVIRONMENT", ".SH EXAMPLES"] {
            let at = text
                .find(&format!("{section}\n"))
                .unwrap_or_else(|| panic!("{name} has no {section} section"));
            let body = &text[at + section.len() + 1..];
            let body = &body[..body.find("\n.SH ").unwrap_or(body.len())];
            assert!(
                body.starts_with(".TP\n") && body.lines().count() >= 3,
                "{name}: {section} is empty:\n{body}"
            );
        }
        for var in ["CINCH_REPO", "CINCH_IDENTITY", "CINCH_SSH_CONTROL_DIR"] {
            assert!(text.contains(var), "{name} does not mention {var}");
        }
        let exit = &text[text.find(".SH \"EXIT STATUS\"").unwrap_or(0)..];
        assert!(exit.contains("\\fB2\\fR"), "{name}: exit status 2 missing");
        pages += 1;
    }
    assert_eq!(pages, command_paths().len(), "one page per command");
}

#[test]
fn man_page_examples_are_valid_command_lines_of_their_own_command() {
    use clap::CommandFactory;
    for path in command_paths() {
        let words: Vec<&str> = path.iter().map(String::as_str).collect();
        let examples = cinch::cli::man::examples(&words);
        assert!(
            !examples.is_empty(),
            "cinch {} has no examples",
            path.join(" ")
        );
        for ex in examples {
            let line = cinch::cli::man::command_line(ex.args);
            let matches = cinch::cli::Cli::command()
                .try_get_matches_from(std::iter::once("cinch").chain(ex.args.iter().copied()))
                .unwrap_or_else(|e| panic!("example `{line}` does not parse:\n{e}"));
            let mut ran = Vec::new();
            let mut m = &matches;
            while let Some((name, sub)) = m.subcommand() {
                ran.push(name.to_string());
                m = sub;
            }
            assert!(
                ran.starts_with(&path),
                "example `{line}` on the page of `cinch {}` runs `cinch {}`",
                path.join(" "),
                ran.join(" ")
            );
        }
    }
}

#[test]
fn man_page_examples_on_the_template_repo_succeed() {
    let mut ran = 0;
    for path in command_paths() {
        let words: Vec<&str> = path.iter().map(String::as_str).collect();
        for ex in cinch::cli::man::examples(&words) {
            // Only the read-only commands: apply would write /tmp/cinch-demo.
            let read_only = ["test", "nodes", "groups", "items", "metadata", "hash"];
            if !(ex.args.starts_with(&["-r", "repo-template"])
                && ex.args.get(2).is_some_and(|c| read_only.contains(c)))
            {
                continue;
            }
            let mut cmd = cinch_command();
            cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args(ex.args);
            let r = run(cmd);
            let line = cinch::cli::man::command_line(ex.args);
            assert_eq!(r.code, 0, "`{line}` failed: {}", r.stderr);
            assert!(!r.stdout.trim().is_empty(), "`{line}` printed nothing");
            ran += 1;
        }
    }
    assert!(ran >= 5, "only {ran} template examples ran");
}
