//! Loading repos: every kind of bad input names its file and line; good repos resolve
//! membership and metadata the way docs/repo.md says.

use crate::harness::{TestRepo, cinch_command, run};

/// A repo with `web1` and a bundle `base`, to which each test adds its mistake.
fn base() -> TestRepo {
    TestRepo::new().file("bundles/base/items.toml", "")
}

#[test]
fn malformed_toml_names_file_line_and_column() {
    let r = base()
        .file("nodes.toml", "[nodes.web1]\nhostname = \n")
        .cinch(&["nodes"])
        .expect_code(2)
        .stderr_has("nodes.toml:2:");
    assert!(r.stderr.contains("invalid TOML"), "{}", r.stderr);
}

#[test]
fn wrong_value_type_names_the_value() {
    base()
        .file(
            "nodes.toml",
            "[nodes.web1]\nhostname = \"a\"\nport = \"22\"\n",
        )
        .cinch(&["nodes"])
        .expect_code(2)
        .stderr_has("nodes.toml:3:8: node 'web1': `port` must be an integer, found a string");
}

#[test]
fn unknown_key_suggests_the_close_one() {
    base()
        .file("nodes.toml", "[nodes.web1]\nhostnme = \"a\"\n")
        .cinch(&["nodes"])
        .expect_code(2)
        .stderr_has("nodes.toml:2:1: node 'web1': unknown key `hostnme`")
        .stderr_has("did you mean `hostname`?");
}

#[test]
fn kex_algorithms_or_persist_that_ssh_would_misread_are_errors_with_file_and_line() {
    base()
        .file("nodes.toml", "[nodes.web1]\n")
        .file(
            "cinch.toml",
            "[ssh]\nkex_algorithms = \"curve25519-sha256 -oProxyCommand=x\"\npersist = \"10 minutes\"\n",
        )
        .cinch(&["nodes"])
        .expect_code(2)
        .stderr_has("cinch.toml:2:18: [ssh] kex_algorithms `curve25519-sha256 -oProxyCommand=x` is not a list")
        .stderr_has("cinch.toml:3:11: [ssh] persist `10 minutes` is not a time");
    base()
        .file("nodes.toml", "[nodes.web1]\n")
        .file(
            "cinch.toml",
            "[ssh]\nkex_algorithms = \"+curve25519-sha256,curve25519-sha256@libssh.org\"\npersist = \"10m\"\n",
        )
        .cinch(&["nodes"])
        .expect_code(0);
}

#[test]
fn unknown_key_in_group_and_settings() {
    base()
        .file("nodes.toml", "[nodes.web1]\n")
        .file("groups.toml", "[groups.g]\nmember = [\"web1\"]\n")
        .file("cinch.toml", "[defaults]\nnode_worker = 3\n")
        .cinch(&["nodes"])
        .expect_code(2)
        .stderr_has("groups.toml:2:1: group 'g': unknown key `member`")
        .stderr_has("did you mean `members`?")
        .stderr_has("cinch.toml:2:1: [defaults]: unknown key `node_worker`");
}

#[test]
fn misspelt_top_level_table() {
    base()
        .file("nodes.toml", "[nodes.web1]\n")
        .file("nodes/x.toml", "[node.web2]\n")
        .cinch(&["nodes"])
        .expect_code(2)
        .stderr_has("x.toml:1:2: nodes/x.toml: unknown key `node`")
        .stderr_has("did you mean `nodes`?");
}

#[test]
fn duplicate_node_across_files_names_both_places() {
    base()
        .file("nodes.toml", "[nodes.web1]\n")
        .file(
            "nodes/more.toml",
            "[nodes.db1]\n\n[nodes.web1]\nhostname = \"x\"\n",
        )
        .cinch(&["nodes"])
        .expect_code(2)
        .stderr_has("more.toml:3:1: node 'web1' is defined twice: here and at ")
        .stderr_has("nodes.toml:1:1");
}

#[test]
fn node_in_unknown_group() {
    base()
        .file("nodes.toml", "[nodes.web1]\ngroups = [\"webservrs\"]\n")
        .file("groups.toml", "[groups.webservers]\n")
        .cinch(&["nodes"])
        .expect_code(2)
        .stderr_has("nodes.toml:2:11: node 'web1' names unknown group 'webservrs'")
        .stderr_has("did you mean 'webservers'?");
}

#[test]
fn unknown_bundle_in_node_and_group() {
    base()
        .file(
            "nodes.toml",
            "[nodes.web1]\nbundles = [\"base\", \"nginx\"]\n",
        )
        .file(
            "groups.toml",
            "[groups.g]\nmembers = [\"web1\"]\nbundles = [\"bsae\"]\n",
        )
        .cinch(&["nodes"])
        .expect_code(2)
        .stderr_has("nodes.toml:2:20: node 'web1' names unknown bundle 'nginx'")
        .stderr_has("create bundles/nginx/")
        .stderr_has("groups.toml:3:12: group 'g' names unknown bundle 'bsae'")
        .stderr_has("did you mean 'base'?");
}

#[test]
fn unknown_member_node() {
    base()
        .file("nodes.toml", "[nodes.web1]\n")
        .file("groups.toml", "[groups.g]\nmembers = [\"wbe1\"]\n")
        .cinch(&["nodes"])
        .expect_code(2)
        .stderr_has("groups.toml:2:12: group 'g' names unknown node 'wbe1'");
}

#[test]
fn subgroup_loop_prints_the_loop() {
    base()
        .file("nodes.toml", "[nodes.web1]\ngroups = [\"a\"]\n")
        .file(
            "groups.toml",
            "[groups.a]\nsubgroups = [\"b\"]\n[groups.b]\nsubgroups = [\"c\"]\n[groups.c]\nsubgroups = [\"a\"]\n",
        )
        .cinch(&["nodes"])
        .expect_code(2)
        .stderr_has("groups.toml:6:14: subgroup loop: a -> b -> c -> a");
}

#[test]
fn metadata_conflict_between_unrelated_groups() {
    let r = base()
        .file("nodes.toml", "[nodes.web1]\ngroups = [\"a\", \"b\"]\n[nodes.web2]\ngroups = [\"a\", \"b\"]\n")
        .file(
            "groups.toml",
            "[groups.a.metadata]\nnginx = { workers = 2 }\n\n[groups.b.metadata.nginx]\nworkers = 3\n",
        )
        .cinch(&["test"])
        .expect_code(1)
        .stderr_has("groups.toml:5:11: metadata conflict at `nginx.workers`")
        .stderr_has("group 'a' sets 2 at ")
        .stderr_has("groups.toml:2:21")
        .stderr_has("group 'b' sets 3 (nodes web1 and 1 more)");
    // One conflict is reported once, not once per node.
    assert_eq!(
        r.stderr.matches("metadata conflict").count(),
        1,
        "{}",
        r.stderr
    );
}

#[test]
fn metadata_conflict_between_bundle_defaults() {
    TestRepo::new()
        .file("nodes.toml", "[nodes.web1]\nbundles = [\"x\", \"y\"]\n")
        .file("bundles/x/metadata.toml", "[port]\nhttp = 80\n")
        .file("bundles/y/metadata.toml", "port = { http = 8080 }\n")
        .cinch(&["test"])
        .expect_code(1)
        .stderr_has("bundles/y/metadata.toml:1:17: metadata conflict at `port.http`")
        .stderr_has("bundle 'x' (metadata.toml) sets 80")
        .stderr_has("(node web1)");
}

#[test]
fn related_groups_do_not_conflict_and_subgroup_wins() {
    let r = base()
        .file("nodes.toml", "[nodes.web1]\ngroups = [\"eu\"]\n")
        .file(
            "groups.toml",
            "[groups.web]\nsubgroups = [\"eu\"]\nmetadata = { workers = 2 }\n[groups.eu]\nmetadata = { workers = 3 }\n",
        )
        .cinch(&["metadata", "web1", "workers"])
        .expect_code(0);
    assert!(r.stdout.contains("\"workers\": 3"), "{}", r.stdout);
}

#[test]
fn node_and_group_may_not_share_a_name() {
    base()
        .file("nodes.toml", "[nodes.web]\n")
        .file("groups.toml", "\n[groups.web]\n")
        .cinch(&["nodes"])
        .expect_code(2)
        .stderr_has("groups.toml:2:1: 'web' is both a node (")
        .stderr_has("nodes.toml:1:1) and a group");
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let r = base()
        .file(
            "nodes.toml",
            "[nodes.web1]\nport = 0\ndummy = \"yes\"\ntransport = \"telnet\"\nlock_dir = \"var/lib\"\n[nodes.\"bad name\"]\n",
        )
        .file("groups.toml", "[groups.g]\nmember_patterns = [\"(unclosed\"]\n")
        .file("nodes/broken.toml", "[nodes.x\n")
        .cinch(&["nodes"])
        .expect_code(2)
        .stderr_has("nodes.toml:2:8: node 'web1': `port` must be between 1 and 65535, found 0")
        .stderr_has("nodes.toml:3:9: node 'web1': `dummy` must be true or false, found a string")
        .stderr_has("nodes.toml:4:13: node 'web1': unknown transport 'telnet'")
        .stderr_has("nodes.toml:5:12: node 'web1': lock_dir 'var/lib' is not an absolute path")
        .stderr_has("invalid node name: 'bad name' contains ' '")
        .stderr_has("groups.toml:2:20: group 'g': invalid member pattern '(unclosed': unclosed group")
        .stderr_has("broken.toml:1:");
    assert_eq!(r.stderr.matches("nodes.toml:").count(), 5, "{}", r.stderr);
}

#[test]
fn not_a_repo_says_what_a_repo_needs() {
    let r = TestRepo::new();
    r.cinch(&["nodes"]).expect_code(2).stderr_has(
        "is not a cinch repo: a repo has a nodes.toml file, a nodes/ directory or a \
             cinch.toml file",
    );
    let missing = r.path().join("nope");
    let mut cmd = cinch_command();
    cmd.arg("-r").arg(&missing).arg("nodes");
    run(cmd).expect_code(2).stderr_has("(it does not exist)");
}

#[test]
fn discovered_from_a_subdirectory_and_from_env() {
    let r = base().file("nodes.toml", "[nodes.web1]\n");
    let mut cmd = cinch_command();
    cmd.current_dir(r.path().join("bundles/base")).arg("nodes");
    run(cmd).expect_code(0).stdout_has("web1");

    let elsewhere = tempfile::tempdir().unwrap();
    let mut cmd = cinch_command();
    cmd.current_dir(elsewhere.path())
        .env("CINCH_REPO", r.path())
        .arg("nodes");
    run(cmd).expect_code(0).stdout_has("web1");

    let mut cmd = cinch_command();
    cmd.current_dir(elsewhere.path()).arg("nodes");
    run(cmd)
        .expect_code(2)
        .stderr_has("(or any parent directory) is not a cinch repo");
}

#[test]
fn membership_via_members_patterns_and_subgroups() {
    let r = TestRepo::new()
        .file("bundles/nginx/items.toml", "")
        .file("bundles/base/items.toml", "")
        .file("bundles/eu/items.toml", "")
        .file(
            "nodes.toml",
            "[nodes.web1]\n[nodes.web2]\n[nodes.edge1]\n[nodes.db1]\ngroups = [\"eu\"]\n",
        )
        .file(
            "groups.toml",
            r#"
[groups.webservers]
bundles = ["nginx"]
member_patterns = ["^web\\d+$"]
members = ["edge1"]
subgroups = ["eu-webservers"]

[groups.eu-webservers]
members = ["web2"]
bundles = ["eu"]

[groups.eu]
subgroups = ["eu-webservers"]

[groups.all]
member_patterns = ["."]
bundles = ["base"]
"#,
        )
        .cinch(&["--json", "nodes", "-a", "groups,bundles"])
        .expect_code(0);
    let lines = r.json_lines();
    let get = |node: &str| {
        lines
            .iter()
            .find(|l| l["node"] == node)
            .unwrap_or_else(|| panic!("{node} missing: {}", r.stdout))
            .clone()
    };
    assert_eq!(
        get("web1")["groups"],
        serde_json::json!(["all", "webservers"])
    );
    assert_eq!(get("web1")["bundles"], serde_json::json!(["base", "nginx"]));
    assert_eq!(
        get("web2")["groups"],
        serde_json::json!(["all", "eu", "eu-webservers", "webservers"])
    );
    assert_eq!(
        get("web2")["bundles"],
        serde_json::json!(["base", "eu", "nginx"])
    );
    assert_eq!(
        get("edge1")["groups"],
        serde_json::json!(["all", "webservers"])
    );
    assert_eq!(get("db1")["groups"], serde_json::json!(["all", "eu"]));
    assert_eq!(get("db1")["bundles"], serde_json::json!(["base"]));
}

#[test]
fn metadata_precedence_bundle_groups_node() {
    let r = TestRepo::new()
        .file(
            "bundles/nginx/metadata.toml",
            "[nginx]\nworkers = 1\nuser = \"www-data\"\nmodules = [\"core\"]\n",
        )
        .file(
            "nodes.toml",
            "[nodes.web1]\ngroups = [\"eu\"]\n[nodes.web1.metadata.nginx]\nmodules = [\"geo\"]\nuser = \"nginx\"\n",
        )
        .file(
            "groups.toml",
            r#"
[groups.web]
bundles = ["nginx"]
subgroups = ["eu"]
metadata.nginx = { workers = 2, modules = ["ssl", "core"], tls = true }

[groups.eu.metadata.nginx]
workers = 4
"#,
        )
        .cinch(&["--json", "metadata", "web1"])
        .expect_code(0);
    let v = &r.json_lines()[0];
    assert_eq!(
        v,
        &serde_json::json!({"nginx": {
            "workers": 4,
            "user": "nginx",
            "modules": ["core", "ssl", "geo"],
            "tls": true,
        }})
    );
}

// ---------------------------------------------------------------------------------------------
// Issue 11: an apply that would do nothing because there are no nodes is an error.

/// Runs cinch with a deadline, so a loader that blocks (on a FIFO) fails the test instead of
/// hanging it.
fn run_with_deadline(r: &TestRepo, args: &[&str]) -> crate::harness::Run {
    let mut cmd = cinch_command();
    cmd.arg("-r")
        .arg(r.path())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn cinch");
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if start.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cinch {args:?} hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    crate::harness::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn missing_empty_directory_or_fifo_nodes_toml_is_an_error_not_an_empty_apply() {
    let no_nodes = "defines no nodes";
    // Missing: cinch.toml makes it a repo, but there is nothing to apply to.
    let r = base().file("cinch.toml", "");
    run_with_deadline(&r, &["apply", "all"])
        .expect_code(2)
        .stderr_has("target 'all' matches nothing: the repo at ")
        .stderr_has(no_nodes)
        .stderr_has("hint: add [nodes.NAME] tables");
    run_with_deadline(&r, &["test"])
        .expect_code(2)
        .stderr_has(no_nodes);
    run_with_deadline(&r, &["verify", "!web1"])
        .expect_code(2)
        .stderr_has(no_nodes);
    // Empty.
    r.write("nodes.toml", "");
    run_with_deadline(&r, &["apply", "all"])
        .expect_code(2)
        .stderr_has(no_nodes);
    // A directory.
    std::fs::remove_file(r.path().join("nodes.toml")).expect("rm");
    std::fs::create_dir(r.path().join("nodes.toml")).expect("mkdir");
    run_with_deadline(&r, &["apply", "all"])
        .expect_code(2)
        .stderr_has("nodes.toml: cannot read file: it is a directory, not a regular file");
    std::fs::remove_dir(r.path().join("nodes.toml")).expect("rmdir");
    // A FIFO, at nodes.toml and in nodes/: never a hang.
    for fifo in ["nodes.toml", "nodes/more.toml"] {
        let path = r.path().join(fifo);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("mkfifo (coreutils) must be installed");
        assert!(made.success());
        run_with_deadline(&r, &["apply", "all"])
            .expect_code(2)
            .stderr_has(&format!("{fifo}: cannot read file: it is a FIFO"));
        run_with_deadline(&r, &["test"])
            .expect_code(2)
            .stderr_has("it is a FIFO");
        std::fs::remove_file(&path).expect("rm");
    }
}

#[test]
fn not_a_repo_error_names_the_nodes_directory_and_repo_create() {
    let r = TestRepo::new();
    r.cinch(&["nodes"])
        .expect_code(2)
        .stderr_has("a nodes/ directory")
        .stderr_has("`cinch repo create DIR`");
    // What the message promises is what the loader accepts: a nodes/ directory alone.
    r.write("nodes/web.toml", "[nodes.web1]\n");
    r.cinch(&["nodes"]).expect_code(0).stdout_has("web1");
}

// ---------------------------------------------------------------------------------------------
// Issue 13: one node's broken metadata must not stop the fleet.

#[test]
fn one_nodes_metadata_conflict_does_not_stop_the_fleet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let locks = dir.path().join("locks");
    let out = dir.path();
    let r = TestRepo::new()
        .file(
            "nodes.toml",
            &format!(
                "[nodes.n1]\ntransport = \"local\"\nbundles = [\"b\"]\nlock_dir = \"{0}\"\n\
                 [nodes.n2]\ntransport = \"local\"\nbundles = [\"b\"]\nlock_dir = \"{0}\"\n\
                 groups = [\"a\", \"z\"]\n",
                locks.display()
            ),
        )
        .file(
            "groups.toml",
            "[groups.a.metadata]\nport = 1\n[groups.z.metadata]\nport = 2\n",
        )
        .file(
            "bundles/b/items.toml",
            &format!("[files.\"{}/f\"]\ncontent = \"x\"\n", out.display()),
        );
    // Every command works for n1.
    r.cinch(&["run", "n1", "true"]).expect_code(0);
    r.cinch(&["lock", "show", "n1"]).expect_code(0);
    r.cinch(&["nodes"]).expect_code(0).stdout_has("n2");
    r.cinch(&["metadata", "n1"]).expect_code(0);
    r.cinch(&["verify", "n1"]).expect_code(1);
    r.cinch(&["apply", "n1"]).expect_code(0);
    assert!(out.join("f").exists());
    // n2 itself fails, with the reason, in the table; n1 in the same apply is fine.
    let a = r.cinch(&["apply", "all"]).expect_code(1);
    assert!(
        a.stderr.contains("n2  not run: ") && a.stderr.contains("metadata conflict at `port`"),
        "{}",
        a.stderr
    );
    assert!(a.stdout.contains("(node failed)"), "{}", a.stdout);
    let (_, summary) = {
        let j = r.cinch(&["--json", "verify", "all"]).expect_code(1);
        let s = j
            .json_lines()
            .into_iter()
            .find(|l| l["event"] == "summary")
            .expect("summary");
        (j, s)
    };
    let nodes = summary["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2, "{summary}");
    assert!(nodes[0]["error"].is_null(), "{summary}");
    assert!(
        nodes[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("metadata conflict")),
        "{summary}"
    );
    r.cinch(&["run", "all", "true"])
        .expect_code(1)
        .stdout_has("failed: ");
    r.cinch(&["metadata", "n2"])
        .expect_code(2)
        .stderr_has("node 'n2': metadata conflict at `port`");
    // `cinch test` still reports it, once, with the node.
    r.cinch(&["test"])
        .expect_code(1)
        .stderr_has("groups.toml:4:8: metadata conflict at `port`")
        .stderr_has("(node n2)");
}

#[test]
fn hostname_or_username_starting_with_dash_is_refused() {
    base()
        .file(
            "nodes.toml",
            "[nodes.web1]\nhostname = \"-oProxyCommand=touch /tmp/x\"\nusername = \"-lroot\"\n",
        )
        .cinch(&["test"])
        .expect_code(2)
        .stderr_has("nodes.toml:2:12: node 'web1': hostname '-oProxyCommand=touch /tmp/x' must not start with '-'")
        .stderr_has("nodes.toml:3:12: node 'web1': username '-lroot' must not be empty or start with '-'");
}

/// A repo with node `n1` (local transport) and bundle `b`, whose files/ the symlink tests fill.
fn symlink_repo(items: &str) -> TestRepo {
    let r = TestRepo::new();
    let nodes = format!(
        "[nodes.n1]\ntransport = \"local\"\nbundles = [\"b\"]\nlock_dir = \"{}\"\n",
        r.path().join("locks").display()
    );
    r.file("nodes.toml", &nodes)
        .file("bundles/b/items.toml", items)
}

#[test]
fn file_source_symlink_to_etc_shadow_is_refused_naming_the_link() {
    let r =
        symlink_repo("[files.\"/tmp/never-shadow\"]\nsource = \"x\"\ncontent_type = \"binary\"\n");
    std::fs::create_dir_all(r.path().join("bundles/b/files")).expect("mkdir");
    std::os::unix::fs::symlink("/etc/shadow", r.path().join("bundles/b/files/x")).expect("symlink");
    // `test` reports it as a problem (1), `apply` refuses to start (2).
    for (args, code) in [(&["test"][..], 1), (&["apply", "n1"][..], 2)] {
        r.cinch(args)
            .expect_code(code)
            .stderr_has("items.toml:1:1: source of file:/tmp/never-shadow refused: bundles/b/files/x is a symlink to /etc/shadow, which is outside the repo")
            .stderr_has("allow_external_symlinks");
    }
    assert!(!std::path::Path::new("/tmp/never-shadow").exists());
}

#[test]
fn template_include_through_a_symlink_out_of_the_repo_is_refused() {
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("secret"), "root:x:0\n").expect("write");
    let r =
        symlink_repo("[files.\"/tmp/never-inc\"]\ncontent_type = \"jinja2\"\nsource = \"t.j2\"\n")
            .file("bundles/b/files/t.j2", "head\n{% include \"inc\" %}\n");
    std::os::unix::fs::symlink(outside.path(), r.path().join("bundles/b/files/inc-dir"))
        .expect("symlink");
    std::os::unix::fs::symlink(
        outside.path().join("secret"),
        r.path().join("bundles/b/files/inc"),
    )
    .expect("symlink");
    let run = r
        .cinch(&["test"])
        .expect_code(1)
        .stderr_has("t.j2:2: template of file:/tmp/never-inc failed")
        .stderr_has("bundles/b/files/inc is a symlink to");
    assert!(!run.stderr.contains("root:x:0"), "{}", run.stderr);
    // A template under a symlinked directory is refused naming the directory.
    r.write("bundles/b/files/t.j2", "{% include \"inc-dir/secret\" %}\n");
    r.cinch(&["test"])
        .expect_code(1)
        .stderr_has("bundles/b/files/inc-dir is a symlink to");
}

#[test]
fn symlinked_bundle_directory_outside_the_repo_is_refused() {
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("items.toml"), "").expect("write");
    let r = symlink_repo("");
    std::os::unix::fs::symlink(outside.path(), r.path().join("bundles/ext")).expect("symlink");
    r.write(
        "nodes.toml",
        "[nodes.n1]\ntransport = \"local\"\nbundles = [\"b\", \"ext\"]\n",
    );
    r.cinch(&["test"])
        .expect_code(2)
        .stderr_has("bundle 'ext': bundles/ext is a symlink to");
}

#[test]
fn allow_external_symlinks_opts_in_and_links_inside_the_repo_keep_working() {
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("motd"), "from outside\n").expect("write");
    let r = symlink_repo("");
    let ext = r.path().join("out/ext");
    let inside = r.path().join("out/inside");
    r.write(
        "bundles/b/items.toml",
        &format!(
            "[files.\"{}\"]\nsource = \"ext\"\n[files.\"{}\"]\nsource = \"inside\"\n",
            ext.display(),
            inside.display()
        ),
    );
    r.write("shared/motd", "shared in the repo\n");
    std::fs::create_dir_all(r.path().join("bundles/b/files")).expect("mkdir");
    std::fs::create_dir_all(r.path().join("out")).expect("mkdir");
    std::os::unix::fs::symlink(
        outside.path().join("motd"),
        r.path().join("bundles/b/files/ext"),
    )
    .expect("symlink");
    std::os::unix::fs::symlink(
        "../../../shared/motd",
        r.path().join("bundles/b/files/inside"),
    )
    .expect("symlink");
    r.cinch(&["test"])
        .expect_code(1)
        .stderr_has("bundles/b/files/ext is a symlink to");
    r.write("cinch.toml", "[repo]\nallow_external_symlinks = true\n");
    r.cinch(&["apply", "n1"]).expect_code(0);
    assert_eq!(
        std::fs::read_to_string(&ext).expect("ext"),
        "from outside\n"
    );
    assert_eq!(
        std::fs::read_to_string(&inside).expect("inside"),
        "shared in the repo\n"
    );
    r.write("cinch.toml", "[repo]\nallow_external_symlinks = \"yes\"\n");
    r.cinch(&["test"])
        .expect_code(2)
        .stderr_has("allow_external_symlinks");
}

#[test]
fn repo_files_symlinked_out_of_the_repo_are_refused_without_showing_their_text() {
    let outside = tempfile::tempdir().expect("tempdir");
    // Not TOML: a parse error would quote the line, leaking the file.
    std::fs::write(outside.path().join("secret"), "root:$6$secrethash:0\n").expect("write");
    let secret = outside.path().join("secret");
    for link in [
        "nodes/more.toml",
        "groups.toml",
        "bundles/b/items.toml",
        "bundles/b/metadata.toml",
        "hooks/h.rhai",
    ] {
        let r = symlink_repo("");
        let path = r.path().join(link);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(&secret, &path).expect("symlink");
        let run = r.cinch(&["test"]).expect_code(2).stderr_has(&format!(
            "{link} is a symlink to {}, which is outside the repo",
            secret.display()
        ));
        assert!(!run.stderr.contains("secrethash"), "{link}: {}", run.stderr);
    }
}
