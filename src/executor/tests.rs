//! Executor tests against the real local transport in temporary directories.

use std::sync::Mutex;

use super::*;
use crate::diag::Location;
use crate::items::{
    ActionAttrs, ContentType, Deps, DirectoryAttrs, FileAttrs, FileSource, ItemKind, SymlinkAttrs,
};
use crate::repo::TransportKind;
use crate::transport::local::LocalTransport;

fn node() -> Node {
    Node {
        name: "n1".into(),
        hostname: "localhost".into(),
        username: None,
        port: None,
        transport: TransportKind::Local,
        groups: vec![],
        bundles: vec!["b".into()],
        dummy: false,
        become_: None,
        lock_dir: "/tmp".into(),
        location: Location::default(),
        ..Node::bare("n1", serde_json::json!({}))
    }
}

fn item(type_name: &str, name: &str, kind: ItemKind) -> Item {
    Item {
        id: format!("{type_name}:{name}"),
        name: name.into(),
        bundle: "b".into(),
        kind,
        deps: Deps::default(),
        location: Location::default(),
    }
}

fn file(path: &str, content: &str) -> (Item, Option<Vec<u8>>) {
    let attrs = FileAttrs {
        source: FileSource::Content(content.into()),
        content_type: ContentType::Text,
        mode: Some(0o640),
        owner: None,
        group: None,
        delete: false,
        sensitive: false,
    };
    (
        item("file", path, ItemKind::File(attrs)),
        Some(content.as_bytes().to_vec()),
    )
}

fn dir(path: &str, purge: bool) -> (Item, Option<Vec<u8>>) {
    let attrs = DirectoryAttrs {
        mode: Some(0o750),
        owner: None,
        group: None,
        purge,
        delete: false,
    };
    (item("directory", path, ItemKind::Directory(attrs)), None)
}

fn action(name: &str, command: &str) -> (Item, Option<Vec<u8>>) {
    let attrs = ActionAttrs {
        command: command.into(),
        expected_return_code: vec![0],
        expected_stdout: None,
        expected_stderr: None,
        data_stdin: None,
        interactive: None,
    };
    (item("action", name, ItemKind::Action(attrs)), None)
}

/// (item id, outcome, reason, diff) per reported item.
type End = (String, Outcome, Option<String>, Option<String>);

/// Records every item result the executor emits on the bus (its terminal note).
#[derive(Default, Clone)]
struct Rec {
    ends: std::sync::Arc<Mutex<Vec<End>>>,
}

impl crate::events::Subscriber for Rec {
    fn on_event(&self, event: &crate::events::Event<'_>) -> Flow {
        if let crate::events::Event::Note(crate::events::Note::ItemResult {
            item, report: r, ..
        }) = event
        {
            self.ends.lock().unwrap().push((
                item.id.clone(),
                r.outcome,
                r.reason.clone(),
                r.diff.clone(),
            ));
        }
        Flow::Continue
    }

    fn reads_item_states(&self) -> bool {
        false
    }
}

impl Asker for Rec {
    fn ask(&self, _: &Node, _: &Item, _: &str, _: &str) -> Answer {
        Answer::Yes
    }
}

struct Fixture {
    graph: Plan,
    locals: Vec<Local>,
    opts: Options,
}

impl Fixture {
    fn new(specs: Vec<(Item, Option<Vec<u8>>)>) -> Self {
        let (items, contents): (Vec<Item>, Vec<Option<Vec<u8>>>) = specs.into_iter().unzip();
        let locals = locals(&items, contents, 1 << 20);
        Fixture {
            graph: Plan::unlinked("n1", items),
            locals,
            opts: Options {
                mode: Mode::Apply,
                interactive: false,
                item_workers: 4,
                only: None,
                skip: vec![],
                diffs: true,
                plan: None,
            },
        }
    }

    fn idx(&self, id: &str) -> usize {
        self.graph.items.iter().position(|i| i.id == id).unwrap()
    }

    fn run(&self) -> (NodeRun, Vec<End>) {
        self.run_on(crate::events::Bus::new())
    }

    /// Runs with `bus` receiving the executor's events (and a recorder of item results).
    fn run_on(&self, mut bus: crate::events::Bus) -> (NodeRun, Vec<End>) {
        let n = node();
        let sink = Rec::default();
        bus.subscribe(Box::new(sink.clone()));
        let bus = &bus;
        let t = LocalTransport::new(&n);
        let job = Job {
            node: &n,
            plan: &self.graph,
            locals: &self.locals,
            options: &self.opts,
            bus,
            asker: &sink,
            drift: None,
        };
        let r = run(&job, &t, None);
        let ends = sink.ends.lock().unwrap().clone();
        (r, ends)
    }
}

fn outcome_of(ends: &[End], id: &str) -> Outcome {
    ends.iter()
        .find(|e| e.0 == id)
        .unwrap_or_else(|| panic!("{id} not reported: {ends:?}"))
        .1
}

#[test]
fn files_are_created_then_left_alone_in_one_command() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_str().unwrap();
    let mut specs = vec![dir(&format!("{root}/app"), false)];
    for k in 0..20 {
        specs.push(file(&format!("{root}/app/f {k}'`"), &format!("line {k}\n")));
    }
    let mut fx = Fixture::new(specs);
    let dir_idx = fx.idx(&format!("directory:{root}/app"));
    for i in 0..fx.graph.items.len() {
        if i != dir_idx {
            fx.graph.needs[i].push(dir_idx);
        }
    }
    let (r, ends) = fx.run();
    assert_eq!(r.error, None);
    assert_eq!(r.count(Outcome::Fixed), 21, "{ends:?}");
    // probe + directory wave + file wave
    assert_eq!(r.stats.commands, 3);
    let p = d.path().join("app/f 3'`");
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "line 3\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();

    let (r, ends) = fx.run();
    assert_eq!(r.count(Outcome::Ok), 21, "{ends:?}");
    assert_eq!(r.count(Outcome::Fixed), 0);
    assert_eq!(r.stats.commands, 1, "steady state is one command");
    assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), mtime);

    std::fs::write(&p, "changed\n").unwrap();
    let (r, ends) = fx.run();
    assert_eq!(r.count(Outcome::Fixed), 1);
    let diff = ends
        .iter()
        .find(|e| e.1 == Outcome::Fixed)
        .and_then(|e| e.3.clone())
        .unwrap();
    assert!(
        diff.contains("-changed") && diff.contains("+line 3"),
        "{diff}"
    );
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "line 3\n");
}

#[test]
fn missing_parent_directory_is_a_clear_failure() {
    let d = tempfile::tempdir().unwrap();
    let path = format!("{}/nope/f", d.path().display());
    let fx = Fixture::new(vec![
        file(&path, "x"),
        file(&format!("{}/ok", d.path().display()), "y"),
    ]);
    let (r, ends) = fx.run();
    let e = ends.iter().find(|e| e.0.ends_with("/nope/f")).unwrap();
    assert_eq!(e.1, Outcome::Failed);
    assert!(
        e.2.as_deref().unwrap().contains("parent directory"),
        "{e:?}"
    );
    assert_eq!(
        r.count(Outcome::Fixed),
        1,
        "the other file still gets written: {ends:?}"
    );
}

#[test]
fn failed_dependency_skips_dependents_and_triggers_fire_once() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("log");
    let logp = log.to_str().unwrap();
    let (mut trig, _) = action("reload", &format!("echo reload >> '{logp}'"));
    trig.deps.triggered = true;
    let mut fx = Fixture::new(vec![
        action("bad", "echo oops >&2; exit 3"),
        action("after-bad", "true"),
        file(&format!("{}/conf", d.path().display()), "c\n"),
        (trig, None),
    ]);
    fx.graph.cascade_skip = vec![true; 4];
    let (bad, after_bad) = (fx.idx("action:bad"), fx.idx("action:after-bad"));
    let conf = fx.idx(&format!("file:{}/conf", d.path().display()));
    let reload = fx.idx("action:reload");
    fx.graph.needs[after_bad].push(bad);
    fx.graph.triggers[conf].push(reload);
    fx.graph.order[reload].push(conf);
    let (_, ends) = fx.run();
    assert_eq!(outcome_of(&ends, "action:bad"), Outcome::Failed);
    let bad_reason = ends
        .iter()
        .find(|e| e.0 == "action:bad")
        .unwrap()
        .2
        .clone()
        .unwrap();
    assert!(
        bad_reason.contains("return code 3") && bad_reason.contains("oops"),
        "{bad_reason}"
    );
    let skipped = ends.iter().find(|e| e.0 == "action:after-bad").unwrap();
    assert_eq!(skipped.1, Outcome::Skipped);
    assert_eq!(skipped.2.as_deref(), Some("dependency failed: action:bad"));
    assert_eq!(outcome_of(&ends, "action:reload"), Outcome::Fixed);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "reload\n");

    let (_, ends) = fx.run();
    assert_eq!(
        outcome_of(&ends, "action:reload"),
        Outcome::Skipped,
        "not triggered the second time"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "reload\n");
}

#[test]
fn purge_removes_odd_names_but_keeps_managed_ones() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("p");
    std::fs::create_dir(&root).unwrap();
    for n in [
        "a b",
        "it's",
        "`tick`",
        "new\nline",
        "ünï",
        ".hidden",
        "..x",
    ] {
        std::fs::write(root.join(n), "junk").unwrap();
    }
    std::fs::create_dir(root.join("sub dir")).unwrap();
    std::fs::write(root.join("sub dir/inner"), "x").unwrap();
    std::fs::write(root.join("keep me"), "old").unwrap();
    let r = root.to_str().unwrap();
    let mut fx = Fixture::new(vec![dir(r, true), file(&format!("{r}/keep me"), "new\n")]);
    let (di, fi) = (
        fx.idx(&format!("directory:{r}")),
        fx.idx(&format!("file:{r}/keep me")),
    );
    fx.graph.needs[fi].push(di);
    let (run1, ends) = fx.run();
    assert_eq!(run1.count(Outcome::Failed), 0, "{ends:?}");
    let mut left: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["keep me".to_string()]);
    assert_eq!(
        std::fs::read_to_string(root.join("keep me")).unwrap(),
        "new\n"
    );
    let (run2, _) = fx.run();
    assert_eq!(run2.count(Outcome::Ok), 2);
}

#[test]
fn symlink_replaces_a_directory_and_delete_removes() {
    let d = tempfile::tempdir().unwrap();
    let link = d.path().join("l");
    std::fs::create_dir(&link).unwrap();
    std::fs::write(link.join("x"), "x").unwrap();
    let gone = d.path().join("gone");
    std::fs::write(&gone, "bye").unwrap();
    let attrs = SymlinkAttrs {
        target: "/etc/hostname".into(),
        owner: None,
        group: None,
        delete: false,
    };
    let del = FileAttrs {
        source: FileSource::None,
        content_type: ContentType::Any,
        mode: None,
        owner: None,
        group: None,
        delete: true,
        sensitive: false,
    };
    let fx = Fixture::new(vec![
        (
            item("symlink", link.to_str().unwrap(), ItemKind::Symlink(attrs)),
            None,
        ),
        (
            item("file", gone.to_str().unwrap(), ItemKind::File(del)),
            None,
        ),
    ]);
    let (r, ends) = fx.run();
    assert_eq!(r.count(Outcome::Fixed), 2, "{ends:?}");
    assert_eq!(
        std::fs::read_link(&link).unwrap().to_str(),
        Some("/etc/hostname")
    );
    assert!(!gone.exists());
    let (r, _) = fx.run();
    assert_eq!(r.count(Outcome::Ok), 2);
}

#[test]
fn sensitive_content_never_appears_in_diffs() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("secret");
    std::fs::write(&p, "old-hunter2\n").unwrap();
    let (mut it, content) = file(p.to_str().unwrap(), "new-hunter2\n");
    if let ItemKind::File(f) = &mut it.kind {
        f.sensitive = true;
    }
    let mut fx = Fixture::new(vec![(it, content)]);
    for mode in [Mode::Verify, Mode::Apply] {
        fx.opts.mode = mode;
        let (r, ends) = fx.run();
        let all = format!("{ends:?} {:?}", r.reports);
        assert!(!all.contains("hunter2"), "{all}");
        assert!(all.contains("content hidden"), "{all}");
    }
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "new-hunter2\n");
}

#[test]
fn verify_changes_nothing_and_runs_no_actions() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f");
    let mut fx = Fixture::new(vec![
        file(p.to_str().unwrap(), "x\n"),
        action(
            "touch",
            &format!("touch '{}'", d.path().join("ran").display()),
        ),
    ]);
    fx.opts.mode = Mode::Verify;
    let (r, ends) = fx.run();
    assert_eq!(r.count(Outcome::WouldChange), 1, "{ends:?}");
    assert!(!p.exists());
    assert!(!d.path().join("ran").exists());
    assert_eq!(r.stats.commands, 1);
}

#[test]
fn precedes_runs_the_triggered_item_only_before_a_change() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("log");
    let target = d.path().join("t");
    let (mut pre, _) = action("pre", &format!("echo pre >> '{}'", log.display()));
    pre.deps.triggered = true;
    let mut fx = Fixture::new(vec![(pre, None), file(target.to_str().unwrap(), "t\n")]);
    let (p, f) = (
        fx.idx("action:pre"),
        fx.idx(&format!("file:{}", target.display())),
    );
    fx.graph.precedes[p].push(f);
    fx.graph.order[f].push(p);
    let (_, ends) = fx.run();
    assert_eq!(outcome_of(&ends, "action:pre"), Outcome::Fixed);
    assert_eq!(
        outcome_of(&ends, &format!("file:{}", target.display())),
        Outcome::Fixed
    );
    let (_, ends) = fx.run();
    assert_eq!(outcome_of(&ends, "action:pre"), Outcome::Skipped);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "pre\n");
}

#[test]
fn unless_and_only_and_skip() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a");
    let b = d.path().join("b");
    let c = d.path().join("c");
    let (mut fa, ca) = file(a.to_str().unwrap(), "a");
    fa.deps.unless = Some("true".into());
    let mut fx = Fixture::new(vec![
        (fa, ca),
        file(b.to_str().unwrap(), "b"),
        file(c.to_str().unwrap(), "c"),
    ]);
    let (ia, ib, ic) = (
        fx.idx(&format!("file:{}", a.display())),
        fx.idx(&format!("file:{}", b.display())),
        fx.idx(&format!("file:{}", c.display())),
    );
    fx.opts.only = Some((0..3).map(|i| i == ia || i == ib).collect());
    fx.opts.skip = (0..3).map(|i| i == ib).collect();
    let (_, ends) = fx.run();
    let _ = ic;
    assert_eq!(
        outcome_of(&ends, &format!("file:{}", a.display())),
        Outcome::Skipped
    );
    assert_eq!(
        outcome_of(&ends, &format!("file:{}", b.display())),
        Outcome::Skipped
    );
    assert_eq!(
        outcome_of(&ends, &format!("file:{}", c.display())),
        Outcome::Skipped
    );
    assert!(!a.exists() && !b.exists() && !c.exists());
}

/// Records `(event name, item id)` of item and action events; refuses the start of `refuse`.
struct Heard {
    seen: std::sync::Arc<Mutex<Vec<(String, String)>>>,
    refuse: String,
}

impl crate::events::Subscriber for Heard {
    fn on_event(&self, event: &crate::events::Event<'_>) -> Flow {
        use crate::events::Event as E;
        let id = match event {
            E::ItemApplyStart { item, .. }
            | E::ItemApplyEnd { item, .. }
            | E::ActionRunStart { item, .. }
            | E::ActionRunEnd { item, .. } => item.id.clone(),
            _ => return Flow::Continue,
        };
        self.seen
            .lock()
            .unwrap()
            .push((event.name().to_string(), id.clone()));
        if matches!(event, E::ItemApplyStart { .. }) && id == self.refuse {
            return Flow::Abort("refused by hook".into());
        }
        Flow::Continue
    }
}

#[test]
fn executor_emits_item_and_action_events_on_the_bus_and_a_refused_start_fails_the_item() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_str().unwrap();
    let kept = format!("{root}/kept");
    let refused = format!("{root}/refused");
    let mut fx = Fixture::new(vec![
        file(&kept, "k\n"),
        file(&refused, "r\n"),
        action("act", "true"),
    ]);
    let (kept_i, act_i) = (fx.idx(&format!("file:{kept}")), fx.idx("action:act"));
    fx.graph.needs[act_i].push(kept_i);
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let mut bus = crate::events::Bus::new();
    bus.subscribe(Box::new(Heard {
        seen: seen.clone(),
        refuse: format!("file:{refused}"),
    }));
    let (r, ends) = fx.run_on(bus);
    assert_eq!(outcome_of(&ends, &format!("file:{kept}")), Outcome::Fixed);
    assert_eq!(
        outcome_of(&ends, &format!("file:{refused}")),
        Outcome::Failed
    );
    assert_eq!(outcome_of(&ends, "action:act"), Outcome::Fixed, "{r:?}");
    assert!(
        !d.path().join("refused").exists(),
        "a refused item is never touched"
    );
    let seen = seen.lock().unwrap().clone();
    let of = |id: &str| -> Vec<String> {
        seen.iter()
            .filter(|(_, i)| i == id)
            .map(|(n, _)| n.clone())
            .collect()
    };
    assert_eq!(
        of(&format!("file:{kept}")),
        ["item_apply_start", "item_apply_end"]
    );
    assert_eq!(
        of(&format!("file:{refused}")),
        ["item_apply_start", "item_apply_end"]
    );
    assert_eq!(
        of("action:act"),
        [
            "item_apply_start",
            "action_run_start",
            "action_run_end",
            "item_apply_end"
        ]
    );

    // verify emits no apply events.
    fx.opts.mode = Mode::Verify;
    let quiet = std::sync::Arc::new(Mutex::new(Vec::new()));
    let mut bus = crate::events::Bus::new();
    bus.subscribe(Box::new(Heard {
        seen: quiet.clone(),
        refuse: String::new(),
    }));
    let (r, _) = fx.run_on(bus);
    assert_eq!(r.error, None);
    assert!(
        quiet.lock().unwrap().is_empty(),
        "{:?}",
        quiet.lock().unwrap()
    );
}

/// One `item_verify` line: (item, status, change).
type Verdict = (String, String, Option<String>);

/// Records verify's `item_verify` lines.
#[derive(Clone, Default)]
struct Verdicts(std::sync::Arc<Mutex<Vec<Verdict>>>);

impl crate::events::Subscriber for Verdicts {
    fn on_event(&self, event: &crate::events::Event<'_>) -> Flow {
        if let crate::events::Event::Report(crate::events::Report::ItemVerify {
            item,
            status,
            change,
            ..
        }) = event
        {
            self.0.lock().unwrap().push((
                item.to_string(),
                status.to_string(),
                change.map(String::from),
            ));
        }
        Flow::Continue
    }
}

#[test]
fn verify_emits_each_verdict_and_its_item_result_on_the_bus() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_str().unwrap();
    let same = format!("{root}/same");
    let missing = format!("{root}/missing");
    std::fs::write(&same, "s\n").unwrap();
    let mut fx = Fixture::new(vec![file(&same, "s\n"), file(&missing, "m\n")]);
    fx.opts.mode = Mode::Verify;
    // The file's mode is part of its state: make `same` already right.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&same, std::fs::Permissions::from_mode(0o640)).unwrap();
    let verdicts = Verdicts::default();
    let mut bus = crate::events::Bus::new();
    bus.subscribe(Box::new(verdicts.clone()));
    let (r, ends) = fx.run_on(bus);
    assert_eq!(r.error, None);
    let verdicts = verdicts.0.lock().unwrap().clone();
    let of = |id: &str| verdicts.iter().find(|v| v.0 == id).cloned();
    let (_, status, change) = of(&format!("file:{missing}")).expect("missing file's verdict");
    assert_eq!(
        (status.as_str(), change.as_deref()),
        ("would_change", Some("create"))
    );
    assert_eq!(
        outcome_of(&ends, &format!("file:{missing}")),
        Outcome::WouldChange
    );
    let (_, status, _) = of(&format!("file:{same}")).expect("unchanged file's verdict");
    assert_eq!(status, "ok", "{verdicts:?} {ends:?}");
    assert_eq!(verdicts.len(), 2, "one verdict per item: {verdicts:?}");
    assert!(!d.path().join("missing").exists(), "verify changes nothing");
}

/// The streamed `actual_hash` must give the very bytes of the sorted copy it replaced: drift
/// records and saved plans written by earlier versions hold these hashes.
#[test]
fn actual_hash_is_the_hash_of_the_sorted_copy_it_replaced() {
    use serde_json::Value;
    use sha2::{Digest, Sha256};
    let Value::Object(state) = serde_json::json!({
        "type": "file",
        "mode": "0644",
        "content_hash": "ab\"c\\\n\u{1}é",
        "size": 12,
        "nested": {"z": [3, {"b": null, "a": true}], "a": -1.5},
        "Über": [],
        crate::items::file::LEFTOVERS: ["/x/.cinch-tmp-1"],
    }) else {
        unreachable!("an object literal")
    };
    let mut without = state.clone();
    without.remove(crate::items::file::LEFTOVERS);
    let reference = hex::encode(Sha256::digest(
        serde_json::to_vec(&crate::digest::canonical(Value::Object(without))).unwrap(),
    ));
    assert_eq!(actual_hash(&state), reference);
}

/// Records the `status_before` of every `item_apply_end`; reads states only when told to.
struct Before {
    reads: bool,
    seen: std::sync::Arc<Mutex<Vec<Option<serde_json::Value>>>>,
}

impl crate::events::Subscriber for Before {
    fn on_event(&self, event: &crate::events::Event<'_>) -> Flow {
        if let crate::events::Event::ItemApplyEnd { status_before, .. } = event {
            self.seen.lock().unwrap().push(status_before.cloned());
        }
        Flow::Continue
    }

    fn reads_item_states(&self) -> bool {
        self.reads
    }
}

/// An unchanged item's public state is built for the hooks and JSON lines that read it, and
/// not at all when no subscriber does (the terminal lines never show it).
#[test]
fn an_unchanged_items_state_is_built_only_when_a_subscriber_reads_it() {
    let d = tempfile::tempdir().unwrap();
    let path = format!("{}/f", d.path().to_str().unwrap());
    let fx = Fixture::new(vec![file(&path, "x\n")]);
    let (_, ends) = fx.run();
    assert_eq!(outcome_of(&ends, &format!("file:{path}")), Outcome::Fixed);
    for reads in [true, false] {
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut bus = crate::events::Bus::new();
        bus.subscribe(Box::new(Before {
            reads,
            seen: seen.clone(),
        }));
        assert!(bus.reads_item_states() == reads);
        let (_, ends) = fx.run_on(bus);
        assert_eq!(outcome_of(&ends, &format!("file:{path}")), Outcome::Ok);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        match &seen[0] {
            Some(state) if reads => assert_eq!(state["type"], "file", "{state}"),
            None if !reads => {}
            other => panic!("reads {reads}: {other:?}"),
        }
    }
}

/// A big node's items are judged on all cores right after the first answer; an item an
/// earlier action changed is judged again from its new record (that judgment is dropped with
/// the old record), so it is fixed, not reported ok.
#[test]
fn an_item_an_action_changed_is_judged_anew_on_a_big_node() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_str().unwrap();
    let target = format!("{root}/target");
    let mut specs: Vec<_> = (0..PRIME_AT_LEAST)
        .map(|k| file(&format!("{root}/f{k:03}"), "x\n"))
        .collect();
    specs.push(file(&target, "right\n"));
    specs.push(action("spoil", &format!("echo wrong > {target}")));
    let mut fx = Fixture::new(specs);
    let (t, a) = (fx.idx(&format!("file:{target}")), fx.idx("action:spoil"));
    fx.graph.needs[t].push(a);
    let (_, ends) = fx.run();
    assert_eq!(outcome_of(&ends, &format!("file:{target}")), Outcome::Fixed);
    // Right before this run; the action spoils it again before its wave.
    let (_, ends) = fx.run();
    assert_eq!(outcome_of(&ends, "action:spoil"), Outcome::Fixed);
    assert_eq!(outcome_of(&ends, &format!("file:{target}")), Outcome::Fixed);
    assert_eq!(outcome_of(&ends, &format!("file:{root}/f000")), Outcome::Ok);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "right\n");
}
