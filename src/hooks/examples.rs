//! Every file in hooks-examples/ exercised the way a user would install it: copied into a
//! repo's hooks/, driven by real events, talking to a real local HTTP listener.

use super::tests::{Repo, console, file_item, item, node};
use super::*;
use crate::events::ItemStatus;
use crate::items::{Item, ItemKind, PkgAptAttrs};
use crate::repo::Node;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("hooks-examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A repo with one example installed, and hooks loaded with `env` as the environment.
fn install(name: &str, env: &[(&str, &str)], now: Option<f64>) -> (Repo, Hooks) {
    let repo = Repo::new();
    repo.file(&format!("hooks/{name}"), &example(name));
    let mut vars: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.entry("CINCH_IDENTITY".into())
        .or_insert_with(|| "tester".into());
    let hooks = Hooks::load_with(
        repo.path(),
        console(),
        HookOptions {
            now,
            env: vars,
            ..Default::default()
        },
    )
    .unwrap_or_else(|d| panic!("{name} did not load: {d:?}"));
    assert!(hooks.lint().is_empty(), "{name}: {:?}", hooks.lint());
    (repo, hooks)
}

/// A one-shot-per-request HTTP server on 127.0.0.1; every request body arrives on the channel.
fn http_listener() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut len = 0usize;
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            let text = format!("{} {}", request_line.trim(), String::from_utf8_lossy(&body));
            if tx.send(text).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

fn received(rx: &mpsc::Receiver<String>) -> (String, Value) {
    let text = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the hook posted nothing");
    let (line, body) = text.split_once(" HTTP/1.1 ").expect("request line");
    (
        line.to_string(),
        serde_json::from_str(body).unwrap_or_else(|e| panic!("body not JSON: {body}: {e}")),
    )
}

#[test]
fn audit_log_appends_one_json_line_per_changed_item() {
    let (repo, hooks) = install("audit-log.rhai", &[], Some(1_700_000_000.0));
    let web1 = node("web1", json!({}));
    let motd = file_item("/etc/motd", "x");
    let pkg = item(
        "pkg_apt:nginx",
        ItemKind::PkgApt(PkgAptAttrs { installed: true }),
    );
    let end = |it: &Item, status, reason: Option<&str>| {
        hooks.on_event(&Event::ItemApplyEnd {
            node: &web1,
            item: it,
            duration: Duration::from_millis(250),
            status,
            status_before: None,
            status_after: None,
            reason,
        })
    };
    end(&motd, ItemStatus::Fixed, None);
    end(&motd, ItemStatus::Ok, None);
    end(&pkg, ItemStatus::Failed, Some("no such package"));
    assert!(!hooks.had_errors(), "{:?}", hooks.errors());
    assert_eq!(
        repo.json_lines("audit.jsonl"),
        vec![
            json!({"time": "2023-11-14T22:13:20Z", "user": "tester", "node": "web1", "item": "file:/etc/motd",
                   "bundle": "base", "status": "fixed", "duration": 0.25, "reason": null}),
            json!({"time": "2023-11-14T22:13:20Z", "user": "tester", "node": "web1", "item": "pkg_apt:nginx",
                   "bundle": "base", "status": "failed", "duration": 0.25, "reason": "no such package"}),
        ]
    );
}

#[test]
fn audit_log_lines_stay_whole_under_parallel_node_workers() {
    let (repo, hooks) = install(
        "audit-log.rhai",
        &[
            ("CINCH_AUDIT_ALL", "1"),
            ("CINCH_AUDIT_LOG", "log/audit.jsonl"),
        ],
        None,
    );
    std::fs::create_dir_all(repo.path().join("log")).expect("mkdir");
    let nodes: Vec<Node> = (0..6).map(|i| node(&format!("n{i}"), json!({}))).collect();
    let items: Vec<Item> = (0..10)
        .map(|i| file_item(&format!("/etc/f{i}"), "x"))
        .collect();
    std::thread::scope(|s| {
        for n in &nodes {
            let (hooks, items) = (&hooks, &items);
            s.spawn(move || {
                for it in items {
                    hooks.on_event(&Event::ItemApplyEnd {
                        node: n,
                        item: it,
                        duration: Duration::from_millis(1),
                        status: ItemStatus::Ok,
                        status_before: None,
                        status_after: None,
                        reason: None,
                    });
                }
            });
        }
    });
    assert!(!hooks.had_errors(), "{:?}", hooks.errors());
    let lines = repo.json_lines("log/audit.jsonl");
    assert_eq!(lines.len(), 60);
    assert!(lines.iter().all(|l| l["status"] == "ok"));
}

#[test]
fn webhook_posts_apply_summary_to_a_local_listener() {
    let (url, rx) = http_listener();
    let (_repo, hooks) = install("webhook-notify.rhai", &[("CINCH_WEBHOOK_URL", &url)], None);
    let web1 = node("web1", json!({}));
    let web2 = node("web2", json!({}));
    let flow = hooks.on_event(&Event::ApplyEnd {
        target: "web*",
        nodes: &[&web1, &web2],
        duration: Duration::from_secs_f64(12.4),
    });
    assert_eq!(flow, Flow::Continue);
    let (line, body) = received(&rx);
    assert_eq!(line, "POST /hook");
    assert_eq!(
        body,
        json!({"text": "tester applied web* to 2 node(s) (web1, web2) in 12s"})
    );
    assert!(!hooks.had_errors(), "{:?}", hooks.errors());
}

#[test]
fn webhook_failure_is_logged_not_fatal_and_no_url_means_no_post() {
    // A port nothing listens on.
    let dead = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", dead.local_addr().expect("addr"));
    drop(dead);
    let (_repo, hooks) = install("webhook-notify.rhai", &[("CINCH_WEBHOOK_URL", &url)], None);
    let ev = Event::ApplyEnd {
        target: "all",
        nodes: &[],
        duration: Duration::from_secs(1),
    };
    assert_eq!(hooks.on_event(&ev), Flow::Continue);
    assert!(!hooks.had_errors());
    let (_repo, hooks) = install("webhook-notify.rhai", &[("CINCH_WEBHOOK_URL", "")], None);
    assert_eq!(hooks.on_event(&ev), Flow::Continue);
    assert!(!hooks.had_errors());
}

#[test]
fn maintenance_window_aborts_apply_outside_allowed_hours() {
    // 2023-11-14 is day 19675 since the epoch.
    let at = |h: f64, m: f64| Some(19675.0 * 86400.0 + h * 3600.0 + m * 60.0);
    let start = |hooks: &Hooks| {
        hooks.on_event(&Event::ApplyStart {
            target: "prod",
            nodes: &[],
            interactive: false,
        })
    };
    let (_r, hooks) = install("maintenance-window.rhai", &[], at(14.0, 5.0));
    assert_eq!(
        start(&hooks),
        Flow::Abort(
            "outside the maintenance window 22-6 UTC (now 14:05 UTC); set CINCH_IGNORE_WINDOW=1 to override"
                .into()
        )
    );
    for (h, m) in [(22.0, 0.0), (23.0, 59.0), (0.0, 30.0), (5.0, 59.0)] {
        let (_r, hooks) = install("maintenance-window.rhai", &[], at(h, m));
        assert_eq!(start(&hooks), Flow::Continue, "{h}:{m}");
    }
    let (_r, hooks) = install("maintenance-window.rhai", &[], at(6.0, 0.0));
    assert!(matches!(start(&hooks), Flow::Abort(_)));
    let (_r, hooks) = install(
        "maintenance-window.rhai",
        &[("CINCH_MAINTENANCE_WINDOW", "9-17")],
        at(14.0, 5.0),
    );
    assert_eq!(start(&hooks), Flow::Continue);
    let (_r, hooks) = install(
        "maintenance-window.rhai",
        &[("CINCH_IGNORE_WINDOW", "1")],
        at(14.0, 5.0),
    );
    assert_eq!(start(&hooks), Flow::Continue);
    // A broken setting fails closed, with the hook's file and line.
    let (_r, hooks) = install(
        "maintenance-window.rhai",
        &[("CINCH_MAINTENANCE_WINDOW", "always")],
        at(14.0, 5.0),
    );
    let flow = start(&hooks);
    assert!(
        matches!(&flow, Flow::Abort(r) if r.contains("maintenance-window.rhai:") && r.contains("must look like")),
        "{flow:?}"
    );
    assert!(hooks.had_errors());
}

#[test]
fn nodes_in_maintenance_are_skipped() {
    let (_r, hooks) = install("skip-maintenance-nodes.rhai", &[], None);
    let plain = node("web1", json!({"maintenance": false}));
    let bare = node("web2", json!({}));
    let down = node("db1", json!({"maintenance": true}));
    let why = node(
        "db2",
        json!({"maintenance": true, "maintenance_reason": "disk swap OPS-1"}),
    );
    let apply = |n| {
        hooks.on_event(&Event::NodeApplyStart {
            node: n,
            interactive: false,
        })
    };
    assert_eq!(apply(&plain), Flow::Continue);
    assert_eq!(apply(&bare), Flow::Continue);
    assert_eq!(
        apply(&down),
        Flow::SkipNode("node is in maintenance (metadata maintenance = true)".into())
    );
    assert_eq!(
        apply(&why),
        Flow::SkipNode("node is in maintenance: disk swap OPS-1".into())
    );
    assert_eq!(
        hooks.on_event(&Event::NodeRunStart {
            node: &down,
            command: "id"
        }),
        Flow::SkipNode("node is in maintenance (metadata maintenance = true)".into())
    );
    assert!(!hooks.had_errors(), "{:?}", hooks.errors());
}

#[test]
fn lock_add_and_remove_are_announced() {
    let (url, rx) = http_listener();
    let (_r, hooks) = install("lock-notify.rhai", &[("CINCH_WEBHOOK_URL", &url)], None);
    let web1 = node("web1", json!({}));
    hooks.on_event(&Event::LockAdd {
        node: &web1,
        lock_id: "AB12",
        items: &["file:/etc/motd".into(), "bundle:nginx".into()],
        expiry: 1_700_000_000,
        comment: "deploying",
    });
    assert_eq!(
        received(&rx).1,
        json!({"text": "tester locked web1 (lock AB12) until 2023-11-14T22:13:20Z for file:/etc/motd, bundle:nginx: deploying"})
    );
    hooks.on_event(&Event::LockAdd {
        node: &web1,
        lock_id: "CD34",
        items: &["*".into()],
        expiry: 951_782_400, // 2000-02-29 00:00 UTC
        comment: "",
    });
    assert_eq!(
        received(&rx).1,
        json!({"text": "tester locked web1 (lock CD34) until 2000-02-29T00:00:00Z for everything"})
    );
    hooks.on_event(&Event::LockRemove {
        node: &web1,
        lock_id: "AB12",
    });
    assert_eq!(
        received(&rx).1,
        json!({"text": "tester removed lock AB12 from web1"})
    );
    assert!(!hooks.had_errors(), "{:?}", hooks.errors());
}

#[test]
fn test_policy_fails_nodes_missing_required_metadata() {
    let (_r, hooks) = install("require-metadata.rhai", &[], None);
    let good = node("web1", json!({"owner": "ops", "environment": "prod"}));
    let bad = node("web2", json!({"owner": "ops", "environment": ""}));
    let worse = node("web3", json!({}));
    assert_eq!(
        hooks.on_event(&Event::TestNode { node: &good }),
        Flow::Continue
    );
    for n in [&bad, &worse] {
        assert!(matches!(
            hooks.on_event(&Event::TestNode { node: n }),
            Flow::Abort(_)
        ));
    }
    hooks.on_event(&Event::Test);
    let errors = hooks.errors();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0]
            .message
            .contains("node web2 lacks required metadata: environment (set it"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1]
            .message
            .contains("node web3 lacks required metadata: owner, environment"),
        "{}",
        errors[1]
    );
    let loc = errors[0].location.as_ref().expect("location");
    assert!(
        loc.file.ends_with("hooks/require-metadata.rhai") && loc.line > 0,
        "{loc}"
    );

    let (_r, hooks) = install(
        "require-metadata.rhai",
        &[("CINCH_REQUIRED_METADATA", "backup.schedule, owner")],
        None,
    );
    let nested = node(
        "db1",
        json!({"owner": "dba", "backup": {"schedule": "daily"}}),
    );
    let flat = node("db2", json!({"owner": "dba", "backup": "yes"}));
    hooks.on_event(&Event::TestNode { node: &nested });
    hooks.on_event(&Event::TestNode { node: &flat });
    let errors = hooks.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .message
            .contains("node db2 lacks required metadata: backup.schedule"),
        "{}",
        errors[0]
    );
}

#[test]
fn every_example_is_documented_and_tested() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks-examples");
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("README");
    let this = include_str!("examples.rs");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if !name.ends_with(".rhai") {
            continue;
        }
        count += 1;
        let text = example(&name);
        assert!(
            text.starts_with(&format!("// {name} — ")),
            "{name}: header comment"
        );
        assert!(text.contains("// Install:"), "{name}: install note");
        assert!(
            readme.contains(&format!("({name})")),
            "{name} missing from README"
        );
        assert!(this.contains(&format!("\"{name}\"")), "{name} has no test");
    }
    assert!(count >= 6, "only {count} examples");
}
