//! Hook engine tests: real Rhai files in a temporary repo, events emitted on a real `Bus`, and
//! a recording hook that appends every call with its arguments to a file.

use super::args::item_value;
use super::*;
use crate::console::ConsoleOptions;
use crate::events::{ItemStatus, NodeResult};
use crate::items::{
    ActionAttrs, ContentType, Deps, FileAttrs, FileSource, Item, ItemKind, PkgAptAttrs,
};
use crate::repo::Node;
use serde_json::{Value, json};
use std::time::Duration;

pub(super) struct Repo {
    pub dir: tempfile::TempDir,
}

impl Repo {
    pub fn new() -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("hooks")).expect("mkdir hooks");
        Repo { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, rel: &str, text: &str) -> &Repo {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
        self
    }

    pub fn load(&self) -> Result<Hooks, Vec<Diagnostic>> {
        self.load_with(HookOptions::default())
    }

    pub fn load_with(&self, options: HookOptions) -> Result<Hooks, Vec<Diagnostic>> {
        Hooks::load_with(self.path(), console(), options)
    }

    pub fn hooks(&self) -> Hooks {
        match self.load() {
            Ok(h) => h,
            Err(d) => panic!("hooks did not load: {d:?}"),
        }
    }

    /// Lines of a file the hooks wrote, parsed as JSON.
    pub fn json_lines(&self, rel: &str) -> Vec<Value> {
        std::fs::read_to_string(self.path().join(rel))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .collect()
    }
}

pub(super) fn console() -> Arc<Console> {
    Arc::new(Console::new(ConsoleOptions {
        quiet: true,
        ..ConsoleOptions::default()
    }))
}

pub(super) fn node(name: &str, metadata: Value) -> Node {
    Node {
        name: name.into(),
        hostname: format!("{name}.example.org"),
        username: None,
        port: None,
        transport: crate::repo::TransportKind::Local,
        groups: vec!["web".into()],
        bundles: vec!["base".into()],
        dummy: false,
        become_: None,
        lock_dir: Node::DEFAULT_LOCK_DIR.into(),
        ..Node::bare(name, metadata)
    }
}

pub(super) fn item(id: &str, kind: ItemKind) -> Item {
    let name = id.split_once(':').map_or(id, |(_, n)| n).to_string();
    Item {
        id: id.into(),
        name,
        bundle: "base".into(),
        kind,
        deps: Deps::default(),
        location: Location::default(),
    }
}

pub(super) fn file_item(path: &str, content: &str) -> Item {
    item(
        &format!("file:{path}"),
        ItemKind::File(FileAttrs {
            source: FileSource::Content(content.into()),
            content_type: ContentType::Text,
            mode: Some(0o644),
            owner: Some("root".into()),
            group: None,
            delete: false,
            sensitive: false,
        }),
    )
}

fn action_item(name: &str, command: &str) -> Item {
    item(
        &format!("action:{name}"),
        ItemKind::Action(ActionAttrs {
            command: command.into(),
            expected_return_code: vec![0],
            expected_stdout: None,
            expected_stderr: None,
            data_stdin: None,
            interactive: None,
        }),
    )
}

/// A hook file defining every point with all its parameters, appending
/// `{"hook": NAME, "args": [...]}` to `calls.jsonl` in the repo.
fn recording_hook() -> String {
    let mut s = String::from(
        r#"fn rec(name, args) {
    let line = #{hook: name, args: args}.to_json();
    let r = run_local("printf '%s\n' " + quote(line) + " >> calls.jsonl");
    if r.rc != 0 { throw "recording failed: " + r.stderr; }
}
"#,
    );
    for (name, params) in HOOK_POINTS {
        let p = params.join(", ");
        s.push_str(&format!("fn {name}({p}) {{ rec(\"{name}\", [{p}]); }}\n"));
    }
    s
}

fn secs(d: f64) -> Duration {
    Duration::from_secs_f64(d)
}

#[test]
fn records_every_apply_point_in_order_with_arguments() {
    let repo = Repo::new();
    repo.file("hooks/record.rhai", &recording_hook());
    let mut bus = Bus::new();
    let hooks = Arc::new(repo.hooks());
    bus.subscribe(Box::new(hooks.clone()));

    let web1 = node("web1", json!({"role": "web", "nested": {"n": 1}}));
    let web2 = node("web2", json!({}));
    let nodes = [&web1, &web2];
    let motd = file_item("/etc/motd", "hello\n");
    let issue = file_item("/etc/issue", "x\n");
    let pkg = item(
        "pkg_apt:nginx",
        ItemKind::PkgApt(PkgAptAttrs { installed: true }),
    );
    let restart = action_item("restart", "systemctl restart nginx");
    let before = json!({"exists": false});
    let after = json!({"exists": true, "sha256": "abc"});

    let emit = |e: Event<'_>| assert_eq!(bus.emit(&e), Flow::Continue, "{}", e.name());
    emit(Event::ApplyStart {
        target: "web*",
        nodes: &nodes,
        interactive: false,
    });
    for n in nodes {
        emit(Event::NodeSshConnect { node: n });
        emit(Event::NodeApplyStart {
            node: n,
            interactive: false,
        });
        emit(Event::ItemApplyStart {
            node: n,
            item: &motd,
        });
        emit(Event::ItemApplyEnd {
            node: n,
            item: &motd,
            duration: secs(0.25),
            status: ItemStatus::Fixed,
            status_before: Some(&before),
            status_after: Some(&after),
            reason: None,
        });
        emit(Event::ItemApplyStart {
            node: n,
            item: &issue,
        });
        emit(Event::ItemApplyEnd {
            node: n,
            item: &issue,
            duration: secs(0.5),
            status: ItemStatus::Ok,
            status_before: Some(&after),
            status_after: None,
            reason: None,
        });
        emit(Event::ItemApplyStart {
            node: n,
            item: &pkg,
        });
        emit(Event::ItemApplyEnd {
            node: n,
            item: &pkg,
            duration: secs(1.0),
            status: ItemStatus::Failed,
            status_before: None,
            status_after: None,
            reason: Some("E: Unable to locate package nginx"),
        });
        emit(Event::ActionRunStart {
            node: n,
            item: &restart,
        });
        emit(Event::ActionRunEnd {
            node: n,
            item: &restart,
            duration: secs(0.125),
            status: ItemStatus::Ok,
        });
        emit(Event::NodeApplyEnd {
            node: n,
            duration: secs(2.0),
            interactive: false,
            result: &NodeResult {
                ok: 2,
                fixed: 1,
                skipped: 0,
                failed: 1,
                total: 4,
                error: None,
            },
        });
    }
    emit(Event::ApplyEnd {
        target: "web*",
        nodes: &nodes,
        duration: secs(3.5),
    });
    assert!(!hooks.had_errors(), "{:?}", hooks.errors());

    let calls = repo.json_lines("calls.jsonl");
    let names: Vec<&str> = calls
        .iter()
        .map(|c| c["hook"].as_str().unwrap_or(""))
        .collect();
    let per_node = [
        "node_ssh_connect",
        "node_apply_start",
        "item_apply_start",
        "item_apply_end",
        "item_apply_start",
        "item_apply_end",
        "item_apply_start",
        "item_apply_end",
        "action_run_start",
        "action_run_end",
        "node_apply_end",
    ];
    let mut expected = vec!["apply_start"];
    expected.extend(per_node);
    expected.extend(per_node);
    expected.push("apply_end");
    assert_eq!(names, expected);

    let repo_arg = json!({"path": repo.path().to_string_lossy()});
    let node1 = serde_json::to_value(&web1).expect("node json");
    let node2 = serde_json::to_value(&web2).expect("node json");
    let args = |i: usize| calls[i]["args"].clone();
    assert_eq!(
        args(0),
        json!([repo_arg, "web*", [node1, node2], false]),
        "apply_start"
    );
    // The node map carries what hooks-examples/README.md promises.
    assert_eq!(node1["name"], "web1");
    assert_eq!(node1["hostname"], "web1.example.org");
    assert_eq!(node1["groups"], json!(["web"]));
    assert_eq!(node1["bundles"], json!(["base"]));
    assert_eq!(node1["metadata"]["nested"]["n"], 1);
    assert_eq!(args(1), json!([repo_arg, node1]), "node_ssh_connect");
    assert_eq!(args(2), json!([repo_arg, node1, false]), "node_apply_start");
    let motd_arg = json!({
        "id": "file:/etc/motd", "type": "file", "name": "/etc/motd", "bundle": "base",
        "attributes": {"content": "hello\n", "content_type": "text", "mode": "0644",
                       "owner": "root", "group": null, "delete": false, "sensitive": false},
        "tags": [], "comment": null,
    });
    assert_eq!(
        args(3),
        json!([repo_arg, node1, motd_arg]),
        "item_apply_start"
    );
    assert_eq!(
        args(4),
        json!([
            repo_arg, node1, motd_arg, 0.25, "fixed", before, after, null
        ]),
        "item_apply_end fixed"
    );
    assert_eq!(args(6)[4], "ok");
    assert_eq!(args(6)[6], Value::Null);
    assert_eq!(
        args(8).as_array().map(|a| a[4..].to_vec()),
        Some(vec![
            json!("failed"),
            Value::Null,
            Value::Null,
            json!("E: Unable to locate package nginx")
        ]),
        "item_apply_end failed"
    );
    assert_eq!(args(7)[2]["attributes"], json!({"installed": true}));
    assert_eq!(args(9)[2]["type"], "action");
    assert_eq!(
        args(9)[2]["attributes"]["command"],
        "systemctl restart nginx"
    );
    assert_eq!(
        args(10),
        json!([repo_arg, node1, args(9)[2], 0.125, "ok"]),
        "action_run_end"
    );
    assert_eq!(
        args(11),
        json!([repo_arg, node1, 2.0, false,
               {"ok": 2, "fixed": 1, "skipped": 0, "failed": 1, "total": 4, "error": null}]),
        "node_apply_end"
    );
    assert_eq!(args(12), json!([repo_arg, node2]));
    assert_eq!(
        args(23),
        json!([repo_arg, "web*", [node1, node2], 3.5]),
        "apply_end"
    );
}

#[test]
fn records_run_lock_and_test_points_with_arguments() {
    let repo = Repo::new();
    repo.file("hooks/record.rhai", &recording_hook());
    let hooks = repo.hooks();
    let web1 = node("web1", json!({"k": "v"}));
    let nodes = [&web1];
    let n1 = serde_json::to_value(&web1).expect("node json");
    let repo_arg = json!({"path": repo.path().to_string_lossy()});
    let lock_info = json!([{"id": "AB12", "user": "alice", "items": ["*"], "expiry": 1700000000}]);
    let events = [
        Event::RunStart {
            target: "web1",
            nodes: &nodes,
            command: "uptime",
        },
        Event::NodeRunStart {
            node: &web1,
            command: "uptime",
        },
        Event::NodeRunEnd {
            node: &web1,
            command: "uptime",
            duration: secs(0.5),
            return_code: Some(3),
            stdout: b"up 3 days\n",
            stderr: b"warn\n",
        },
        Event::NodeRunEnd {
            node: &web1,
            command: "uptime",
            duration: secs(0.5),
            return_code: None,
            stdout: b"",
            stderr: b"",
        },
        Event::RunEnd {
            target: "web1",
            nodes: &nodes,
            command: "uptime",
            duration: secs(0.75),
        },
        Event::LockAdd {
            node: &web1,
            lock_id: "AB12",
            items: &["file:/etc/motd".to_string(), "bundle:nginx".to_string()],
            expiry: 1_700_000_000,
            comment: "deploying",
        },
        Event::LockShow {
            node: &web1,
            lock_info: &lock_info,
        },
        Event::LockRemove {
            node: &web1,
            lock_id: "AB12",
        },
        Event::TestNode { node: &web1 },
        Event::Test,
    ];
    for e in &events {
        assert_eq!(hooks.on_event(e), Flow::Continue, "{}", e.name());
    }
    let calls = repo.json_lines("calls.jsonl");
    let got: Vec<Value> = calls
        .iter()
        .map(|c| json!([c["hook"], c["args"]]))
        .collect();
    assert_eq!(
        got,
        vec![
            json!(["run_start", [repo_arg, "web1", [n1], "uptime"]]),
            json!(["node_run_start", [repo_arg, n1, "uptime"]]),
            json!([
                "node_run_end",
                [repo_arg, n1, "uptime", 0.5, 3, "up 3 days\n", "warn\n"]
            ]),
            json!(["node_run_end", [repo_arg, n1, "uptime", 0.5, null, "", ""]]),
            json!(["run_end", [repo_arg, "web1", [n1], "uptime", 0.75]]),
            json!([
                "lock_add",
                [
                    repo_arg,
                    n1,
                    "AB12",
                    ["file:/etc/motd", "bundle:nginx"],
                    1_700_000_000,
                    "deploying"
                ]
            ]),
            json!(["lock_show", [repo_arg, n1, lock_info]]),
            json!(["lock_remove", [repo_arg, n1, "AB12"]]),
            json!(["test_node", [repo_arg, n1]]),
            json!(["test", [repo_arg]]),
        ]
    );
    assert!(!hooks.had_errors());
}

#[test]
fn fewer_parameters_get_the_leading_arguments() {
    let repo = Repo::new();
    repo.file(
        "hooks/short.rhai",
        r#"
fn rec(x) { run_local("printf '%s\n' " + quote(x.to_json()) + " >> calls.jsonl"); }
fn apply_start() { rec(#{hook: "apply_start", n: 0}); }
fn node_apply_start(repo, node) { rec(#{hook: "node_apply_start", node: node.name, repo: type_of(repo)}); }
// Overloads: the widest one the point can satisfy is called.
fn test_node(repo) { rec(#{hook: "test_node/1"}); }
fn test_node(repo, node) { rec(#{hook: "test_node/2", node: node.name}); }
// Too many parameters: never called.
fn test(repo, extra) { rec(#{hook: "test/2"}); }
"#,
    );
    let hooks = repo.hooks();
    let web1 = node("web1", json!({}));
    let nodes = [&web1];
    hooks.on_event(&Event::ApplyStart {
        target: "all",
        nodes: &nodes,
        interactive: true,
    });
    hooks.on_event(&Event::NodeApplyStart {
        node: &web1,
        interactive: true,
    });
    hooks.on_event(&Event::TestNode { node: &web1 });
    hooks.on_event(&Event::Test);
    assert_eq!(
        repo.json_lines("calls.jsonl"),
        vec![
            json!({"hook": "apply_start", "n": 0}),
            json!({"hook": "node_apply_start", "node": "web1", "repo": "map"}),
            json!({"hook": "test_node/2", "node": "web1"}),
        ]
    );
    assert!(!hooks.had_errors());
}

#[test]
fn files_run_in_file_name_order_and_top_level_runs_once() {
    let repo = Repo::new();
    let body = |tag: &str| {
        format!(
            r#"
const TAG = "{tag}";
run_local("echo load-{tag} >> calls.txt");
fn test(repo) {{ run_local("echo " + global::TAG + " >> calls.txt"); }}
"#
        )
    };
    repo.file("hooks/20-b.rhai", &body("b"))
        .file("hooks/10-a.rhai", &body("a"))
        .file("hooks/30-c.rhai", &body("c"))
        .file("hooks/README.txt", "not a hook");
    let hooks = repo.hooks();
    assert_eq!(hooks.file_count(), 3);
    for _ in 0..2 {
        hooks.on_event(&Event::Test);
    }
    let text = std::fs::read_to_string(repo.path().join("calls.txt")).expect("calls");
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        vec!["load-a", "load-b", "load-c", "a", "b", "c", "a", "b", "c"]
    );
}

#[test]
fn top_level_imports_from_libs_are_visible_to_hook_functions() {
    let repo = Repo::new();
    repo.file("libs/fmt.rhai", r#"fn line(n) { `node ${n}` }"#)
        .file(
            "hooks/a.rhai",
            r#"
import "fmt" as fmt;
fn test_node(repo, node) { if fmt::line(node.name) != "node web1" { throw "wrong"; } }
fn test(repo) { import "fmt" as f2; if f2::line("x") != "node x" { throw "wrong"; } }
"#,
        );
    let hooks = repo.hooks();
    let web1 = node("web1", json!({}));
    hooks.on_event(&Event::TestNode { node: &web1 });
    hooks.on_event(&Event::Test);
    assert!(!hooks.had_errors(), "{:?}", hooks.errors());
}

#[test]
fn import_outside_libs_is_refused_with_file_and_line() {
    let repo = Repo::new();
    repo.file("secret.rhai", "fn s() { 1 }").file(
        "hooks/a.rhai",
        &format!(
            "fn test(repo) {{\n    import {:?} as s;\n}}\nfn test_node(repo, node) {{\n    import \"../secret\" as s;\n}}\n",
            repo.path().join("secret").to_string_lossy()
        ),
    );
    let hooks = repo.hooks();
    hooks.on_event(&Event::Test);
    let web1 = node("web1", json!({}));
    hooks.on_event(&Event::TestNode { node: &web1 });
    let errors = hooks.errors();
    assert_eq!(errors.len(), 2, "{errors:?}");
    for (e, line) in errors.iter().zip([2, 5]) {
        let loc = e.location.as_ref().expect("location");
        assert!(loc.file.ends_with("hooks/a.rhai"), "{e}");
        assert_eq!(loc.line, line, "{e}");
        assert!(e.message.contains("refused"), "{e}");
    }
}

#[test]
fn syntax_errors_name_file_line_and_column() {
    let repo = Repo::new();
    repo.file("hooks/good.rhai", "fn test(repo) {}\n")
        .file("hooks/bad.rhai", "fn test(repo) {\n    let x = ;\n}\n")
        .file("hooks/worse.rhai", "fn apply_start( {\n");
    let diags = repo.load().err().expect("must fail");
    assert_eq!(diags.len(), 2, "{diags:?}");
    let loc = diags[0].location.as_ref().expect("location");
    assert!(loc.file.ends_with("hooks/bad.rhai"));
    assert_eq!((loc.line, loc.column), (2, 13), "{}", diags[0]);
    assert!(
        diags[0].to_string().contains("syntax error"),
        "{}",
        diags[0]
    );
    assert!(
        diags[1]
            .location
            .as_ref()
            .expect("loc")
            .file
            .ends_with("hooks/worse.rhai")
    );
}

#[test]
fn top_level_runtime_error_fails_loading_with_line() {
    let repo = Repo::new();
    repo.file(
        "hooks/a.rhai",
        "let x = 1;\nlet y = x.nope;\nfn test(repo) {}\n",
    );
    let diags = repo.load().err().expect("must fail");
    assert_eq!(diags.len(), 1);
    assert_eq!(
        diags[0].location.as_ref().map(|l| l.line),
        Some(2),
        "{}",
        diags[0]
    );
    assert!(diags[0].message.contains("while loading"), "{}", diags[0]);
}

#[test]
fn no_hooks_directory_means_no_hooks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hooks = Hooks::load_with(dir.path(), console(), HookOptions::default()).expect("load");
    assert_eq!(hooks.file_count(), 0);
    assert_eq!(hooks.on_event(&Event::Test), Flow::Continue);
    assert!(hooks.lint().is_empty());
}

#[test]
fn skip_node_and_abort_change_the_flow() {
    let repo = Repo::new();
    repo.file(
        "hooks/a.rhai",
        r#"
fn apply_start(repo, target) { if target == "prod" { abort("frozen until Monday"); } }
fn run_start(repo, target) { abort("no ad-hoc commands"); }
fn node_apply_start(repo, node) { if node.metadata.skip == true { skip_node("maintenance on " + node.name); } }
fn node_run_start(repo, node) { skip_node("not today"); }
"#,
    );
    // A later file is not called once an earlier one decided.
    repo.file(
        "hooks/b.rhai",
        r#"fn node_run_start(repo, node) { run_local("touch b-called"); }"#,
    );
    let hooks = repo.hooks();
    let skip = node("db1", json!({"skip": true}));
    let keep = node("db2", json!({}));
    let nodes = [&skip];
    let start = |target| Event::ApplyStart {
        target,
        nodes: &nodes,
        interactive: false,
    };
    assert_eq!(
        hooks.on_event(&start("prod")),
        Flow::Abort("frozen until Monday".into())
    );
    assert_eq!(hooks.on_event(&start("test")), Flow::Continue);
    assert_eq!(
        hooks.on_event(&Event::RunStart {
            target: "x",
            nodes: &nodes,
            command: "id"
        }),
        Flow::Abort("no ad-hoc commands".into())
    );
    assert_eq!(
        hooks.on_event(&Event::NodeApplyStart {
            node: &skip,
            interactive: false
        }),
        Flow::SkipNode("maintenance on db1".into())
    );
    assert_eq!(
        hooks.on_event(&Event::NodeApplyStart {
            node: &keep,
            interactive: false
        }),
        Flow::Continue
    );
    assert_eq!(
        hooks.on_event(&Event::NodeRunStart {
            node: &keep,
            command: "id"
        }),
        Flow::SkipNode("not today".into())
    );
    assert!(!repo.path().join("b-called").exists());
    assert!(
        !hooks.had_errors(),
        "skip/abort are not errors: {:?}",
        hooks.errors()
    );
}

#[test]
fn skip_node_or_abort_at_the_wrong_point_is_an_error() {
    let repo = Repo::new();
    repo.file(
        "hooks/a.rhai",
        "fn apply_end(repo) {\n    skip_node(\"x\");\n}\nfn node_apply_start(repo) {\n    abort(\"y\");\n}\n",
    );
    let hooks = repo.hooks();
    let web1 = node("web1", json!({}));
    assert_eq!(
        hooks.on_event(&Event::ApplyEnd {
            target: "t",
            nodes: &[],
            duration: secs(1.0)
        }),
        Flow::Continue
    );
    let flow = hooks.on_event(&Event::NodeApplyStart {
        node: &web1,
        interactive: false,
    });
    assert!(
        matches!(&flow, Flow::SkipNode(r) if r.contains("abort() only works")),
        "{flow:?}"
    );
    let errors = hooks.errors();
    assert_eq!(errors.len(), 2);
    assert!(
        errors[0]
            .message
            .contains("skip_node() only works in node_apply_start"),
        "{}",
        errors[0]
    );
    assert_eq!(errors[0].location.as_ref().map(|l| l.line), Some(2));
    assert_eq!(errors[1].location.as_ref().map(|l| l.line), Some(5));
}

#[test]
fn runtime_errors_fail_closed_at_start_points_and_count_elsewhere() {
    let repo = Repo::new();
    let mut text = String::new();
    for (name, _) in HOOK_POINTS {
        text.push_str(&format!(
            "fn {name}(repo) {{\n    let m = #{{}};\n    m.missing.call_me();\n}}\n"
        ));
    }
    repo.file("hooks/broken.rhai", &text);
    let hooks = repo.hooks();
    let web1 = node("web1", json!({}));
    let pkg = item(
        "pkg_apt:x",
        ItemKind::PkgApt(PkgAptAttrs { installed: true }),
    );
    let nodes = [&web1];

    let abort = |e: Event<'_>| match hooks.on_event(&e) {
        Flow::Abort(r) => r,
        other => panic!("{}: expected abort, got {other:?}", e.name()),
    };
    let reason = abort(Event::ApplyStart {
        target: "t",
        nodes: &nodes,
        interactive: false,
    });
    assert!(reason.contains("broken.rhai:3:"), "{reason}");
    abort(Event::RunStart {
        target: "t",
        nodes: &nodes,
        command: "c",
    });
    abort(Event::ItemApplyStart {
        node: &web1,
        item: &pkg,
    });
    abort(Event::ActionRunStart {
        node: &web1,
        item: &pkg,
    });
    // A failing test_node hook marks that node as having a problem in `cinch test`.
    abort(Event::TestNode { node: &web1 });
    for e in [
        Event::NodeApplyStart {
            node: &web1,
            interactive: false,
        },
        Event::NodeRunStart {
            node: &web1,
            command: "c",
        },
    ] {
        assert!(
            matches!(hooks.on_event(&e), Flow::SkipNode(r) if r.contains("hook failed at")),
            "{}",
            e.name()
        );
    }
    for e in [
        Event::ApplyEnd {
            target: "t",
            nodes: &nodes,
            duration: secs(1.0),
        },
        Event::NodeSshConnect { node: &web1 },
        Event::Test,
        Event::LockRemove {
            node: &web1,
            lock_id: "AAAA",
        },
    ] {
        assert_eq!(hooks.on_event(&e), Flow::Continue, "{}", e.name());
    }
    let errors = hooks.errors();
    assert_eq!(errors.len(), 11);
    for e in &errors {
        let loc = e.location.as_ref().expect("location");
        assert!(loc.file.ends_with("hooks/broken.rhai"));
        assert!(loc.line % 4 == 3, "{e}");
        assert!(e.message.contains("failed:"), "{e}");
    }
    assert!(hooks.had_errors());
}

#[test]
fn endless_loop_in_a_hook_is_stopped_with_a_clear_error() {
    let repo = Repo::new();
    repo.file(
        "hooks/spin.rhai",
        "fn run_start(repo) {\n    loop { }\n}\nfn run_end(repo) {\n    let i = 0;\n    while true { i += 1; }\n}\n",
    );
    let hooks = repo.hooks();
    let start = std::time::Instant::now();
    let flow = hooks.on_event(&Event::RunStart {
        target: "t",
        nodes: &[],
        command: "c",
    });
    assert!(
        matches!(&flow, Flow::Abort(r) if r.contains("spin.rhai:1:1") && r.contains("operations")),
        "{flow:?}"
    );
    hooks.on_event(&Event::RunEnd {
        target: "t",
        nodes: &[],
        command: "c",
        duration: secs(1.0),
    });
    let errors = hooks.errors();
    assert_eq!(errors.len(), 2);
    assert!(errors[1].message.contains("endless loop"), "{}", errors[1]);
    assert!(start.elapsed() < Duration::from_secs(60));
}

#[test]
fn provided_functions_env_now_run_local() {
    let repo = Repo::new();
    repo.file(
        "hooks/a.rhai",
        r#"
fn test(repo) {
    let r = run_local("echo out; echo err >&2; printf %s \"$HOOK_VAR\" > seen.txt; exit 3");
    let result = #{
        rc: r.rc, stdout: r.stdout, stderr: r.stderr,
        hook_var: env("HOOK_VAR"), unset: env("CINCH_SURELY_UNSET_VAR"), now: now(),
        quoted: quote("it's"),
    };
    run_local("printf '%s\n' " + quote(result.to_json()) + " > result.json");
}
"#,
    );
    let hooks = repo
        .load_with(HookOptions {
            now: Some(1_700_000_000.5),
            env: HashMap::from([("HOOK_VAR".to_string(), "v a l".to_string())]),
            ..Default::default()
        })
        .expect("load");
    hooks.on_event(&Event::Test);
    assert!(!hooks.had_errors(), "{:?}", hooks.errors());
    assert_eq!(
        repo.json_lines("result.json"),
        vec![json!({
            "rc": 3, "stdout": "out\n", "stderr": "err\n", "hook_var": "v a l", "unset": "",
            "now": 1_700_000_000.5, "quoted": "'it'\\''s'",
        })]
    );
    // run_local runs in the repo directory and sees the same environment.
    assert_eq!(
        std::fs::read_to_string(repo.path().join("seen.txt")).expect("seen"),
        "v a l"
    );
}

#[test]
fn hooks_get_cinchs_identity_instead_of_guessing_it_from_env_user() {
    let repo = Repo::new();
    repo.file(
        "hooks/a.rhai",
        r#"
fn test(repo) {
    let result = #{ identity: identity(), user: env("USER"), at: format_utc(1700000000) };
    run_local("printf '%s\n' " + quote(result.to_json()) + " > result.json");
}
"#,
    );
    let hooks = repo
        .load_with(HookOptions {
            now: None,
            env: HashMap::from([
                ("CINCH_IDENTITY".to_string(), "alice@laptop".to_string()),
                ("USER".to_string(), "root".to_string()),
            ]),
            ..Default::default()
        })
        .expect("load");
    hooks.on_event(&Event::Test);
    assert!(!hooks.had_errors(), "{:?}", hooks.errors());
    assert_eq!(
        repo.json_lines("result.json"),
        vec![json!({"identity": "alice@laptop", "user": "root", "at": "2023-11-14T22:13:20Z"})]
    );
}

#[test]
fn real_clock_is_used_without_override() {
    let repo = Repo::new();
    repo.file(
        "hooks/a.rhai",
        "fn test(repo) { let t = now(); if type_of(t) != \"f64\" || t < 1600000000.0 { throw `bad now ${t}`; } }",
    );
    let hooks = repo.hooks();
    hooks.on_event(&Event::Test);
    assert!(!hooks.had_errors(), "{:?}", hooks.errors());
}

#[test]
fn hooks_called_from_many_threads_at_once() {
    let repo = Repo::new();
    repo.file(
        "hooks/a.rhai",
        r#"
fn item_apply_end(repo, node, item, duration, status) {
    let s = 0;
    for i in 0..200 { s += i; }
    log(`${node.name} ${item.id} ${status} ${s}`);
    if s != 19900 { throw "wrong sum"; }
}
"#,
    );
    let hooks = Arc::new(repo.hooks());
    let nodes: Vec<Node> = (0..8)
        .map(|i| node(&format!("n{i}"), json!({"i": i})))
        .collect();
    let it = file_item("/etc/x", "x");
    std::thread::scope(|scope| {
        for n in &nodes {
            let hooks = hooks.clone();
            let it = &it;
            scope.spawn(move || {
                for _ in 0..100 {
                    let flow = hooks.on_event(&Event::ItemApplyEnd {
                        node: n,
                        item: it,
                        duration: secs(0.1),
                        status: ItemStatus::Ok,
                        status_before: None,
                        status_after: None,
                        reason: None,
                    });
                    assert_eq!(flow, Flow::Continue);
                }
            });
        }
    });
    assert!(!hooks.had_errors(), "{:?}", hooks.errors());
}

#[test]
fn sensitive_file_content_is_not_given_to_hooks() {
    let mut secret = file_item("/etc/secret", "hunter2");
    if let ItemKind::File(f) = &mut secret.kind {
        f.sensitive = true;
    }
    let v = item_value(&secret);
    let text = rhai::format_map_as_json(&v.cast::<Map>());
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("\"sensitive\":true"), "{text}");
}

#[test]
fn lint_warns_about_misspelt_hooks_and_too_many_parameters() {
    let repo = Repo::new();
    repo.file(
        "hooks/a.rhai",
        "fn helper(x) { x }\n\nfn node_aply_start(repo, node) {}\nfn apply_end(repo, target, nodes, duration, extra) {}\nfn test(repo) {}\nfn test_node(repo, node, a, b) {}\nfn test_node(repo) {}\nprivate fn lock_add(repo) {}\n",
    );
    let hooks = repo.hooks();
    let lints = hooks.lint();
    let text: Vec<String> = lints.iter().map(|d| d.to_string()).collect();
    assert_eq!(lints.len(), 3, "{text:#?}");
    assert!(text[0].contains("a.rhai:3:1"), "{}", text[0]);
    assert!(
        text[0].contains("`node_aply_start` is not a hook"),
        "{}",
        text[0]
    );
    assert!(
        text[0].contains("did you mean `node_apply_start`"),
        "{}",
        text[0]
    );
    assert!(text[1].contains("a.rhai:4:1"), "{}", text[1]);
    assert!(
        text[1].contains(
            "declares 5 parameters but apply_end provides 4 (repo, target, nodes, duration)"
        ),
        "{}",
        text[1]
    );
    assert!(text[2].contains("private"), "{}", text[2]);
}

#[test]
fn bus_reports_hook_errors_through_subscribe() {
    let repo = Repo::new();
    repo.file(
        "hooks/a.rhai",
        "fn test(repo) { throw \"policy violated\"; }\n",
    );
    let mut bus = Bus::new();
    let hooks = subscribe(&mut bus, repo.path(), false, console()).expect("subscribe");
    assert!(!bus.had_errors());
    assert_eq!(bus.emit(&Event::Test), Flow::Continue);
    assert!(bus.had_errors());
    assert!(hooks.had_errors());
    let errors = hooks.errors();
    assert_eq!(errors[0].message, "hook test failed: policy violated");
    assert_eq!(
        errors[0].location.as_ref().map(|l| (l.line, l.column)),
        Some((1, 17))
    );
}

#[test]
fn subscribe_refuses_a_broken_hook_as_a_repo_error() {
    let repo = Repo::new();
    repo.file("hooks/a.rhai", "fn test(repo) {\n");
    let mut bus = Bus::new();
    let err = subscribe(&mut bus, repo.path(), false, console())
        .err()
        .expect("must fail");
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("hooks/a.rhai:"), "{err}");
}

#[test]
fn run_local_is_bounded_in_time() {
    let repo = Repo::new();
    repo.file(
        "hooks/a.rhai",
        r#"
fn test_node(repo, node) { run_local("sleep 30; echo late", 0.3); }
fn test(repo) {
    let r = run_local("(sleep 30 >/dev/null 2>&1 &); echo hi", 5);
    if r.stdout != "hi\n" || r.rc != 0 { throw `unexpected ${r}`; }
}
"#,
    );
    let hooks = repo.hooks();
    let started = std::time::Instant::now();
    hooks.on_event(&Event::TestNode {
        node: &node("web1", json!({})),
    });
    hooks.on_event(&Event::Test);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let errors = hooks.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .message
            .contains("run_local: timed out after 0.3s: sleep 30; echo late"),
        "{}",
        errors[0]
    );
    assert_eq!(errors[0].location.as_ref().map(|l| l.line), Some(2));
}

/// Records every event a renderer hears, as its JSON line.
struct Heard(Mutex<Vec<Value>>);

impl Subscriber for Heard {
    fn on_event(&self, event: &Event<'_>) -> Flow {
        if let Some(line) = event.to_json() {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
        Flow::Continue
    }
}

/// A hook's `log()` lines (at load and while a hook runs inside an emit) and its failures are
/// events on the renderers the hooks were loaded with, never hook points: they reach the
/// JSON and terminal renderers and never the hooks again.
#[test]
fn hook_log_and_error_lines_are_events_on_the_renderers() {
    let repo = Repo::new();
    repo.file(
        "hooks/a.rhai",
        "log(\"loaded\");\n\
         fn test_node(repo, node) { log(`checking ${node.name}`); }\n\
         fn test(repo) {\n  throw \"policy violated\";\n}\n",
    );
    let outlet = Outlet::new();
    let heard = Arc::new(Heard(Mutex::new(Vec::new())));
    outlet.add(heard.clone());
    let hooks = Arc::new(
        Hooks::load_into(repo.path(), outlet.clone(), HookOptions::default()).expect("load"),
    );
    let mut bus = Bus::with_outlet(outlet);
    bus.subscribe_hooks(Box::new(hooks.clone()));
    let web1 = node("web1", json!({}));
    assert_eq!(bus.emit(&Event::TestNode { node: &web1 }), Flow::Continue);
    assert_eq!(bus.emit(&Event::Test), Flow::Continue);
    let lines = heard.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let events: Vec<&str> = lines
        .iter()
        .map(|l| l["event"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        events,
        ["hook_log", "hook_log", "test_node", "hook_error", "test"],
        "{lines:?}"
    );
    assert_eq!(
        lines[0],
        json!({"event": "hook_log", "file": "a.rhai", "message": "loaded"})
    );
    assert_eq!(lines[1]["message"], "checking web1");
    assert_eq!(lines[3]["hook"], "test");
    assert_eq!(lines[3]["line"], 4);
    assert_eq!(lines[3]["message"], "policy violated");
    assert!(hooks.had_errors());
}
