//! `cinch hash` and `cinch diff` (issue 16): hashes that are stable across runs, machines and
//! refactors but see every real change; diffs between commits of a real temporary git repo.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::harness::TestRepo;

/// Every item type, a template fed by metadata, a source file, groups and two nodes: the
/// fixed repo of the golden hash. Nothing in it may be changed without updating the golden.
fn fixed_repo() -> TestRepo {
    TestRepo::new()
        .file(
            "nodes.toml",
            r#"
[nodes.web1]
transport = "local"
groups = ["web"]
[nodes.web1.metadata.app]
port = 8080

[nodes.db1]
transport = "local"
bundles = ["base"]
"#,
        )
        .file(
            "groups.toml",
            r#"
[groups.web]
bundles = ["base", "app"]
[groups.web.metadata.app]
name = "shop"
"#,
        )
        .file(
            "bundles/base/items.toml",
            r#"
[files."/etc/motd"]
content = "managed\n"
mode = "0644"
owner = "root"
group = "root"

[directories."/srv"]
mode = "0755"

[symlinks."/srv/current"]
target = "/srv/releases/1"

[users.deploy]
home = "/home/deploy"
shell = "/bin/bash"
groups = ["www-data", "adm"]

[groups.deploy]
gid = 2000

[pkg_apt.nginx]
installed = true

[svc_systemd.nginx]
running = true
enabled = true
"#,
        )
        .file(
            "bundles/app/items.toml",
            r#"
[files."/srv/app.conf"]
source = "app.conf.j2"
content_type = "jinja2"
triggers = ["action:reload"]

[files."/srv/static.txt"]
source = "static.txt"

[actions.reload]
command = "systemctl reload app"
triggered = true
"#,
        )
        .file(
            "bundles/app/files/app.conf.j2",
            "name = {{ metadata.app.name }}\nport = {{ metadata.app.port }}\n",
        )
        .file("bundles/app/files/static.txt", "static\n")
}

/// `{node: hash}` and the selection hash from `cinch --json hash ARGS`.
fn hashes(repo: &TestRepo, args: &[&str]) -> (Vec<(String, String)>, String) {
    let mut full = vec!["--json", "hash"];
    full.extend_from_slice(args);
    let run = repo.cinch(&full).expect_code(0);
    let mut lines = run.json_lines();
    let total = lines.pop().expect("a summary line");
    assert_eq!(total["event"], "hash", "{total}");
    let nodes = lines
        .iter()
        .map(|l| {
            assert_eq!(l["event"], "node_hash", "{l}");
            (
                l["node"].as_str().expect("node").to_string(),
                l["hash"].as_str().expect("hash").to_string(),
            )
        })
        .collect();
    (nodes, total["hash"].as_str().expect("hash").to_string())
}

/// `{item id: hash}` of one node.
fn item_hashes(repo: &TestRepo, node: &str) -> serde_json::Map<String, Value> {
    let run = repo
        .cinch(&["--json", "hash", node, "--items"])
        .expect_code(0);
    run.json_lines()[0]["items"]
        .as_object()
        .expect("items object")
        .clone()
}

#[test]
fn hash_of_a_fixed_repo_is_golden() {
    // These values pin the canonical form: if they change, hashes users recorded (in PR
    // comments, saved plans) stop matching. Change them only with expected::FORMAT.
    let repo = fixed_repo();
    let (nodes, total) = hashes(&repo, &[]);
    assert_eq!(
        nodes,
        [
            (
                "db1".to_string(),
                "0eaf4fabd65c097355f33bcc6be91c6933de4bd45427a581627f26446f31b3d0".to_string()
            ),
            (
                "web1".to_string(),
                "0f4d7b55aecc1f4a6881bd00d406b7a4623c9b63f3dc3dba450002ac375d6af6".to_string()
            ),
        ]
    );
    assert_eq!(
        total,
        "608fc4644d605c77842c583a7e19205fe9d5239a6d64002a42619e1d2f8a5b6b"
    );
    // An item hash is the sha256 of its compact canonical JSON, as docs/review.md says.
    use sha2::Digest as _;
    let group = hex::encode(sha2::Sha256::digest(br#"{"gid":2000,"type":"group"}"#));
    let pkg = hex::encode(sha2::Sha256::digest(
        br#"{"installed":true,"type":"pkg_apt"}"#,
    ));
    let items = item_hashes(&repo, "db1");
    assert_eq!(items["group:deploy"], Value::String(group));
    assert_eq!(items["pkg_apt:nginx"], Value::String(pkg));
    let (_, with_metadata) = hashes(&repo, &["--metadata"]);
    assert_eq!(
        with_metadata,
        "201fd91c1e61dc510db4c6613919c43edc84902424b76428d5a7b5b44ea134b7"
    );
}

#[test]
fn hash_is_the_same_across_runs_directories_and_environments() {
    let a = fixed_repo();
    let first = hashes(&a, &["--metadata"]);
    assert_eq!(hashes(&a, &["--metadata"]), first, "a second run differs");
    // Another machine: another absolute path, user, identity, working directory and TMPDIR.
    let b = fixed_repo();
    assert_ne!(a.path(), b.path());
    let mut cmd = crate::harness::cinch_command();
    cmd.current_dir(b.path().join("bundles"))
        .env("CINCH_IDENTITY", "someone-else")
        .env("USER", "other")
        .env("TMPDIR", b.path())
        .args(["--json", "hash", "--metadata"]);
    let run = crate::harness::run(cmd).expect_code(0);
    let total = run.json_lines().pop().expect("summary")["hash"].clone();
    assert_eq!(total, Value::String(first.1), "{}", run.stdout);
    // Human output carries the same hashes.
    let human = a.cinch(&["hash"]).expect_code(0);
    for (node, hash) in &hashes(&a, &[]).0 {
        assert!(
            human.stdout.contains(&format!("{hash}  {node}\n")),
            "{}",
            human.stdout
        );
    }
    let quiet = a.cinch(&["-q", "hash"]).expect_code(0);
    assert_eq!(quiet.stdout.trim(), hashes(&a, &[]).1);
}

#[test]
fn hash_survives_a_refactor_that_changes_nothing_on_the_nodes() {
    let repo = fixed_repo();
    let before = hashes(&repo, &["--metadata"]);
    // Items moved to another bundle, keys reordered, comments added, a template source
    // renamed, metadata moved from the group to the node: the nodes end up the same.
    repo.write(
        "bundles/base/items.toml",
        r#"
# the motd moved to bundle "extra"
[directories."/srv"]
mode = "0755"

[symlinks."/srv/current"]
target = "/srv/releases/1"

[users.deploy]
groups = ["adm", "www-data"]
shell = "/bin/bash"
home = "/home/deploy"

[groups.deploy]
gid = 2000

[pkg_apt.nginx]
installed = true

[svc_systemd.nginx]
enabled = true
running = true
"#,
    );
    repo.write(
        "bundles/extra/items.toml",
        r#"
[files."/etc/motd"]
group = "root"
owner = "root"
mode = "0644"
content = "managed\n"
comment = "moved here"
"#,
    );
    repo.write(
        "nodes.toml",
        r#"
[nodes.db1]
transport = "local"
bundles = ["base", "extra"]

[nodes.web1]
transport = "local"
groups = ["web"]
bundles = ["extra"]
[nodes.web1.metadata.app]
port = 8080
name = "shop"
"#,
    );
    repo.write(
        "groups.toml",
        "[groups.web]\nbundles = [\"base\", \"app\"]\n",
    );
    std::fs::rename(
        repo.path().join("bundles/app/files/app.conf.j2"),
        repo.path().join("bundles/app/files/renamed.j2"),
    )
    .expect("rename");
    let items = std::fs::read_to_string(repo.path().join("bundles/app/items.toml")).expect("read");
    repo.write(
        "bundles/app/items.toml",
        &items.replace("app.conf.j2", "renamed.j2"),
    );
    assert_eq!(hashes(&repo, &["--metadata"]), before);
}

#[test]
fn hash_changes_with_each_kind_of_change_and_only_the_changed_item_hash_moves() {
    let base_items = fixed_repo_file("bundles/base/items.toml");
    let app_items = fixed_repo_file("bundles/app/items.toml");
    // (what, file, new content, the item whose hash must change; None = an item added or removed)
    let cases: Vec<(&str, &str, String, Option<&str>)> = vec![
        ("mode", "bundles/base/items.toml", base_items.replacen("0644", "0600", 1), Some("file:/etc/motd")),
        ("owner", "bundles/base/items.toml", base_items.replacen("owner = \"root\"", "owner = \"www-data\"", 1), Some("file:/etc/motd")),
        ("inline content", "bundles/base/items.toml", base_items.replace("managed\\n", "managed!\\n"), Some("file:/etc/motd")),
        ("directory mode", "bundles/base/items.toml", base_items.replace("0755", "0750"), Some("directory:/srv")),
        ("symlink target", "bundles/base/items.toml", base_items.replace("releases/1", "releases/2"), Some("symlink:/srv/current")),
        ("user shell", "bundles/base/items.toml", base_items.replace("/bin/bash", "/bin/sh"), Some("user:deploy")),
        ("group gid", "bundles/base/items.toml", base_items.replace("2000", "2001"), Some("group:deploy")),
        ("package removed", "bundles/base/items.toml", base_items.replace("installed = true", "installed = false"), Some("pkg_apt:nginx")),
        ("service stopped", "bundles/base/items.toml", base_items.replace("running = true", "running = false"), Some("svc_systemd:nginx")),
        ("file deleted", "bundles/base/items.toml", base_items.replace("[directories.\"/srv\"]", "[files.\"/etc/motd.old\"]\ndelete = true\n\n[directories.\"/srv\"]"), None),
        ("item removed", "bundles/base/items.toml", base_items.replace("[groups.deploy]\ngid = 2000\n", ""), None),
        ("skip set", "bundles/base/items.toml", base_items.replace("gid = 2000", "gid = 2000\nskip = true"), Some("group:deploy")),
        ("action command", "bundles/app/items.toml", app_items.replace("reload app", "restart app"), Some("action:reload")),
        ("template", "bundles/app/files/app.conf.j2", "name = {{ metadata.app.name }}!\nport = {{ metadata.app.port }}\n".to_string(), Some("file:/srv/app.conf")),
        ("source file", "bundles/app/files/static.txt", "static v2\n".to_string(), Some("file:/srv/static.txt")),
        ("metadata used by a template", "groups.toml", "[groups.web]\nbundles = [\"base\", \"app\"]\n[groups.web.metadata.app]\nname = \"store\"\n".to_string(), Some("file:/srv/app.conf")),
    ];
    let base = fixed_repo();
    let (base_nodes, base_total) = hashes(&base, &[]);
    let base_items = item_hashes(&base, "web1");
    let mut seen = std::collections::HashSet::from([base_total.clone()]);
    for (what, file, content, item) in cases {
        let repo = fixed_repo();
        repo.write(file, &content);
        let (nodes, total) = hashes(&repo, &[]);
        assert_ne!(
            total, base_total,
            "{what}: the selection hash did not change"
        );
        assert_ne!(
            nodes[1], base_nodes[1],
            "{what}: web1's hash did not change"
        );
        assert!(seen.insert(total), "{what}: same hash as another change");
        let items = item_hashes(&repo, "web1");
        let moved: Vec<&String> = base_items
            .iter()
            .filter(|(id, h)| items.get(*id) != Some(h))
            .map(|(id, _)| id)
            .collect();
        match item {
            Some(id) => assert_eq!(moved, [id], "{what}: other item hashes moved"),
            None => assert_ne!(
                items.len(),
                base_items.len(),
                "{what}: no item added or removed"
            ),
        }
    }
    // Metadata no item uses changes the hash only with --metadata.
    let repo = fixed_repo();
    let (_, plain_before) = hashes(&repo, &[]);
    let (_, meta_before) = hashes(&repo, &["--metadata"]);
    repo.write(
        "nodes.toml",
        &fixed_repo_file("nodes.toml").replace("port = 8080", "port = 8080\nunused = 1"),
    );
    assert_eq!(hashes(&repo, &[]).1, plain_before);
    assert_ne!(hashes(&repo, &["--metadata"]).1, meta_before);
}

/// The text of one file of [`fixed_repo`].
fn fixed_repo_file(rel: &str) -> String {
    std::fs::read_to_string(fixed_repo().path().join(rel)).expect("read")
}

#[test]
fn hash_of_a_broken_repo_names_the_file_and_exits_2() {
    let repo = fixed_repo().file(
        "bundles/app/files/app.conf.j2",
        "{{ metadata.app.nosuch.key }}\n",
    );
    repo.cinch(&["hash"])
        .expect_code(2)
        .stderr_has("app.conf.j2:1");
}

/// Runs git in `dir`, failing the test with what to install when git is missing.
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run git ({e}): install git (apt-get install git)"));
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// [`fixed_repo`] as the first commit of a fresh git repository.
fn git_repo() -> TestRepo {
    let repo = fixed_repo();
    git(repo.path(), &["init", "-q"]);
    commit(&repo, "first");
    repo
}

fn commit(repo: &TestRepo, message: &str) {
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", message]);
}

#[test]
fn diff_between_two_commits_shows_added_and_removed_nodes_and_a_changed_template() {
    let repo = git_repo();
    repo.write(
        "bundles/app/files/app.conf.j2",
        "name = {{ metadata.app.name }}\nport = {{ metadata.app.port }}\nworkers = 4\n",
    );
    repo.write(
        "nodes.toml",
        r#"
[nodes.web1]
transport = "local"
groups = ["web"]
[nodes.web1.metadata.app]
port = 9090

[nodes.web2]
transport = "local"
groups = ["web"]
[nodes.web2.metadata.app]
port = 8080
"#,
    );
    let base_items = fixed_repo_file("bundles/base/items.toml");
    repo.write(
        "bundles/base/items.toml",
        &base_items.replace("/bin/bash", "/bin/zsh").replace(
            "[pkg_apt.nginx]\ninstalled = true\n",
            "[pkg_apt.nginx]\ninstalled = true\n\n[pkg_apt.htop]\ninstalled = true\n",
        ),
    );
    commit(&repo, "second");
    let before = git(repo.path(), &["status", "--porcelain"]);

    let run = repo.cinch(&["diff", "HEAD~1..HEAD"]).expect_code(1);
    let out = &run.stdout;
    assert!(out.contains("node db1: removed"), "{out}");
    assert!(out.contains("node web2: added"), "{out}");
    assert!(
        out.contains("node web1: 1 item added, 2 items changed, 1 metadata key changed"),
        "{out}"
    );
    // The rendered template's unified diff, with the metadata change in it.
    for line in [
        "  ~ file:/srv/app.conf",
        "      --- /srv/app.conf",
        "      -port = 8080",
        "      +port = 9090",
        "      +workers = 4",
        "  + pkg_apt:htop",
        "  ~ user:deploy",
        "      shell: /bin/bash → /bin/zsh",
        "  ~ metadata app.port",
        "      value: 8080 → 9090",
    ] {
        assert!(
            out.contains(&format!("{line}\n")),
            "missing {line:?} in\n{out}"
        );
    }
    assert!(
        out.trim_end().ends_with(
            "3 nodes of 3 touched (1 added, 1 removed, 1 changed); items: 15 added, 10 removed, 2 changed; 1 metadata key changed"
        ),
        "{out}"
    );

    let run = repo
        .cinch(&["--json", "diff", "HEAD~1..HEAD", "web*"])
        .expect_code(1);
    let lines = run.json_lines();
    let summary = lines.last().expect("summary");
    assert_eq!(summary["event"], "diff_summary");
    assert_eq!(summary["nodes_added"], 1, "{summary}");
    assert_eq!(
        summary["nodes_removed"], 0,
        "db1 is not selected: {summary}"
    );
    assert_eq!(summary["items_changed"], 2, "{summary}");
    let web1 = lines.iter().find(|l| l["node"] == "web1").expect("web1");
    let conf = web1["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["id"] == "file:/srv/app.conf")
        .expect("app.conf");
    assert_eq!(conf["status"], "changed");
    assert_eq!(conf["keys"], serde_json::json!(["content_hash"]));
    let content_diff = conf["content_diff"].as_str().expect("content diff");
    assert!(content_diff.contains("+port = 9090\n"), "{content_diff}");
    assert_ne!(conf["old"]["hash"], conf["new"]["hash"]);

    // Nothing of the user's checkout moved.
    assert_eq!(git(repo.path(), &["status", "--porcelain"]), before);
    assert_eq!(
        git(repo.path(), &["log", "--format=%s"])
            .lines()
            .collect::<Vec<_>>(),
        ["second", "first"]
    );
}

#[test]
fn diff_against_the_work_tree_sees_uncommitted_changes_and_touches_nothing() {
    let repo = git_repo();
    repo.cinch(&["diff", "HEAD"])
        .expect_code(0)
        .stdout_has("no differences (2 nodes compared)");
    repo.write("bundles/app/files/static.txt", "edited\n");
    let app_items = fixed_repo_file("bundles/app/items.toml");
    repo.write(
        "bundles/app/items.toml",
        &app_items.replace(
            "source = \"app.conf.j2\"\ncontent_type = \"jinja2\"",
            "content_type = \"any\"",
        ),
    );
    let status = git(repo.path(), &["status", "--porcelain"]);
    let run = repo.cinch(&["diff", "HEAD", "web1"]).expect_code(1);
    assert!(
        run.stdout.contains("-static\n") && run.stdout.contains("+edited\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("  ~ file:/srv/app.conf\n      content: no longer managed\n"),
        "{}",
        run.stdout
    );
    assert_eq!(git(repo.path(), &["status", "--porcelain"]), status);
    assert_eq!(
        std::fs::read_to_string(repo.path().join("bundles/app/files/static.txt")).expect("read"),
        "edited\n"
    );
}

#[test]
fn diff_never_prints_sensitive_content_or_password_hashes() {
    let repo = git_repo();
    let secret_items = |content: &str, hash: &str| {
        format!(
            "[files.\"/etc/app.key\"]\ncontent = \"{content}\\n\"\nsensitive = true\n\n\
             [users.svc]\npassword_hash = \"{hash}\"\n"
        )
    };
    repo.write(
        "bundles/secret/items.toml",
        &secret_items("topsecret-old", "$6$salt$oldhashvalue"),
    );
    repo.write(
        "nodes.toml",
        &fixed_repo_file("nodes.toml")
            .replace("bundles = [\"base\"]", "bundles = [\"base\", \"secret\"]"),
    );
    commit(&repo, "secrets");
    repo.write(
        "bundles/secret/items.toml",
        &secret_items("topsecret-new", "$6$salt$newhashvalue"),
    );
    for args in [
        &["diff", "HEAD"][..],
        &["--json", "diff", "HEAD"],
        &["diff", "HEAD~1"],
        &["--json", "diff", "HEAD~1"],
    ] {
        let run = repo.cinch(args).expect_code(1);
        for needle in ["topsecret", "hashvalue"] {
            assert!(
                !run.stdout.contains(needle) && !run.stderr.contains(needle),
                "{args:?} printed {needle}:\n{}\n{}",
                run.stdout,
                run.stderr
            );
        }
    }
    let run = repo.cinch(&["diff", "HEAD"]).expect_code(1);
    assert!(
        run.stdout
            .contains("  ~ file:/etc/app.key\n      content: (sensitive, not shown)\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("password_hash: [sensitive] → [sensitive]"),
        "{}",
        run.stdout
    );
    let json = repo.cinch(&["--json", "diff", "HEAD"]).expect_code(1);
    let node = &json.json_lines()[0];
    let key = node["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["id"] == "file:/etc/app.key")
        .expect("key file");
    assert_eq!(key["new"]["state"]["content_hash"], "[sensitive]", "{key}");
}

#[test]
fn diff_of_a_repo_in_a_subdirectory_of_the_git_repository_sees_its_files() {
    // git archive run inside a subdirectory keeps only that subdirectory's paths of the tree
    // it is given, so the revision came out empty ("defines no nodes").
    let outer = TestRepo::new();
    let inner = outer.path().join("infra/cinch");
    std::fs::create_dir_all(&inner).expect("mkdir");
    let fixed = fixed_repo();
    copy_tree(fixed.path(), &inner);
    git(outer.path(), &["init", "-q"]);
    git(outer.path(), &["add", "-A"]);
    git(outer.path(), &["commit", "-q", "-m", "first"]);
    std::fs::write(inner.join("bundles/app/files/static.txt"), "v2\n").expect("write");
    let mut cmd = crate::harness::cinch_command();
    cmd.current_dir(&inner).args(["diff", "HEAD"]);
    let run = crate::harness::run(cmd).expect_code(1);
    assert!(
        run.stdout.contains("  ~ file:/srv/static.txt\n"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&dest).expect("mkdir");
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy");
        }
    }
}

#[test]
fn diff_of_a_broken_revision_names_the_revision_and_file() {
    let repo = git_repo();
    repo.write("nodes.toml", "[nodes.web1\n");
    commit(&repo, "broken");
    repo.write("nodes.toml", &fixed_repo_file("nodes.toml"));
    let run = repo.cinch(&["diff", "HEAD"]).expect_code(2);
    assert!(run.stderr.contains("HEAD:nodes.toml:1"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("cinch-diff-"),
        "temporary path leaked: {}",
        run.stderr
    );
}

#[test]
fn diff_of_an_unknown_revision_or_outside_git_is_a_usage_error() {
    let repo = git_repo();
    repo.cinch(&["diff", "nosuchbranch"])
        .expect_code(2)
        .stderr_has("'nosuchbranch' is not a commit");
    repo.cinch(&["diff", "--", "--output=/tmp/x"])
        .expect_code(2)
        .stderr_has("is not a git revision");
    repo.cinch(&["diff", "HEAD.."])
        .expect_code(2)
        .stderr_has("REV..REV2");
    fixed_repo()
        .cinch(&["diff", "HEAD"])
        .expect_code(2)
        .stderr_has("not in a git repository");
}
