//! Hooks through the real binary: a recording hook (every hook function, one line per call with
//! its arguments) pins the exact sequence and arguments of apply, test and lock; the flow
//! controls (abort, skip_node, fail closed), error reporting and the sandbox are checked at the
//! command's exit code and output; some hooks-examples/ files run as users would install them.

use std::path::{Path, PathBuf};

use crate::harness::{Run, TestRepo};

/// `hooks/record.rhai`: every hook point, each appending one line `hook | arg | arg ...` to
/// `LOG` (a file in the repo). `R` stands for the repo argument when it is the right repo,
/// durations become `dur` when they are non-negative floats, states keep type/mode/size (owner
/// and group depend on who runs the tests).
const RECORD: &str = r#"
const LOG = "@LOG@";
const REPO = "@REPO@";

fn rec(parts) {
    let line = "";
    for p in parts {
        let text = if type_of(p) == "()" { "()" } else { `${p}` };
        line += if line == "" { text } else { ` | ${text}` };
    }
    let r = run_local("printf '%s\n' " + quote(line) + " >> " + quote(global::LOG));
    if r.rc != 0 { throw `cannot record: ${r.stderr}`; }
}
fn r(repo) { if repo.path == global::REPO { "R" } else { `BAD REPO ${repo}` } }
fn dur(d) { if type_of(d) == "f64" && d >= 0.0 { "dur" } else { `BAD DURATION ${type_of(d)} ${d}` } }
fn names(nodes) {
    let out = [];
    for n in nodes { out.push(n.name); }
    out.to_json()
}
fn full(node) {
    `${node.name} host=${node.hostname} groups=${node.groups.to_json()} bundles=${node.bundles.to_json()} md=${node.metadata.to_json()}`
}
fn st(s) {
    if s == () { "()" } else { #{type: s.type, mode: s.mode, size: s.size}.to_json() }
}

fn apply_start(repo, target, nodes, interactive) { rec(["apply_start", r(repo), target, names(nodes), interactive]); }
fn apply_end(repo, target, nodes, duration) { rec(["apply_end", r(repo), target, names(nodes), dur(duration)]); }
fn node_apply_start(repo, node, interactive) { rec(["node_apply_start", r(repo), full(node), interactive]); }
fn node_apply_end(repo, node, duration, interactive, result) {
    rec(["node_apply_end", r(repo), node.name, dur(duration), interactive, result.to_json()]);
}
fn item_apply_start(repo, node, item) {
    rec(["item_apply_start", r(repo), node.name, item.id, item.type, item.name, item.bundle]);
}
fn item_apply_end(repo, node, item, duration, status_code, status_before, status_after, reason) {
    rec(["item_apply_end", r(repo), node.name, item.id, dur(duration), status_code, st(status_before), st(status_after), reason]);
}
fn action_run_start(repo, node, item) {
    rec(["action_run_start", r(repo), node.name, item.id, item.attributes.command]);
}
fn action_run_end(repo, node, item, duration, status) {
    rec(["action_run_end", r(repo), node.name, item.id, dur(duration), status]);
}
fn run_start(repo, target, nodes, command) { rec(["run_start", r(repo), target, names(nodes), command]); }
fn run_end(repo, target, nodes, command, duration) { rec(["run_end", r(repo), target, names(nodes), command, dur(duration)]); }
fn node_run_start(repo, node, command) { rec(["node_run_start", r(repo), node.name, command]); }
fn node_run_end(repo, node, command, duration, return_code, stdout, stderr) {
    rec(["node_run_end", r(repo), node.name, command, dur(duration), return_code, stdout.to_json(), stderr.to_json()]);
}
fn lock_add(repo, node, lock_id, items, expiry, comment) {
    let left = expiry - now().to_int();
    let horizon = if left > 7100 && left <= 7200 { "in 2h" } else { `BAD EXPIRY ${expiry}` };
    rec(["lock_add", r(repo), node.name, lock_id, items.to_json(), horizon, comment]);
}
fn lock_show(repo, node, lock_info) {
    rec(["lock_show", r(repo), node.name, lock_info.id, lock_info.user, lock_info.items.to_json(), lock_info.comment]);
}
fn lock_remove(repo, node, lock_id) { rec(["lock_remove", r(repo), node.name, lock_id]); }
fn node_ssh_connect(repo, node) { rec(["node_ssh_connect", r(repo), node.name]); }
fn test_node(repo, node) { rec(["test_node", r(repo), full(node)]); }
fn test(repo) { rec(["test", r(repo)]); }
"#;

/// A repo with two local nodes `n1`, `n2` (bundles `b1`, `b2`, hard locks inside the repo) and
/// a scratch directory standing in for each node's filesystem.
struct Hooked {
    repo: TestRepo,
    scratch: tempfile::TempDir,
}

impl Hooked {
    fn new() -> Hooked {
        let repo = TestRepo::new();
        let scratch = tempfile::tempdir().expect("tempdir");
        let locks = repo.path().join("locks");
        let mut nodes = String::new();
        for (n, b, md) in [
            ("n1", "b1", "role = \"web\""),
            ("n2", "b2", "role = \"db\""),
        ] {
            nodes.push_str(&format!(
                "[nodes.{n}]\ntransport = \"local\"\nbundles = [\"{b}\"]\nlock_dir = \"{}\"\n[nodes.{n}.metadata]\n{md}\n",
                locks.display()
            ));
            std::fs::create_dir_all(scratch.path().join(n)).expect("node dir");
        }
        repo.write("nodes.toml", &nodes);
        Hooked { repo, scratch }
    }

    /// Installs the recording hook as `hooks/NAME`.
    fn record_as(self, name: &str) -> Self {
        let text = RECORD
            .replace("@LOG@", &self.log().display().to_string())
            .replace("@REPO@", &self.repo.path().display().to_string());
        self.repo.write(&format!("hooks/{name}"), &text);
        self
    }

    /// The four items of the sequence test for node `n` (bundle `b`): fixed, ok, failed, action.
    fn four_items(self) -> Self {
        for (n, b) in [("n1", "b1"), ("n2", "b2")] {
            let d = self.node_dir(n);
            write_0644(&d.join("ok.txt"), "same\n");
            self.repo.write(
                &format!("bundles/{b}/items.toml"),
                &format!(
                    r#"
[files."{d}/new.txt"]
content = "new\n"
mode = "0640"

[files."{d}/ok.txt"]
content = "same\n"

[files."{d}/missing/bad.txt"]
content = "never\n"

[actions.hello]
command = "echo hi > {d}/hello"
"#,
                    d = d.display()
                ),
            );
        }
        self
    }

    /// One file item per node (`DIR/f.txt` = "f\n"), nothing else.
    fn one_file_each(self) -> Self {
        for (n, b) in [("n1", "b1"), ("n2", "b2")] {
            self.repo.write(
                &format!("bundles/{b}/items.toml"),
                &format!(
                    "[files.\"{}\"]\ncontent = \"f\\n\"\n",
                    self.node_dir(n).join("f.txt").display()
                ),
            );
        }
        self
    }

    fn hook(self, name: &str, text: &str) -> Self {
        self.repo.write(&format!("hooks/{name}"), text);
        self
    }

    fn node_dir(&self, n: &str) -> PathBuf {
        self.scratch.path().join(n)
    }

    fn log(&self) -> PathBuf {
        self.repo.path().join("record.log")
    }

    /// Recorded lines so far (empty when the hook never ran), and the log is emptied.
    fn take(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let _ = std::fs::remove_file(self.log());
        text.lines().map(|l| self.shorten(l)).collect()
    }

    /// Scratch paths as `@` so expectations stay readable.
    fn shorten(&self, s: &str) -> String {
        s.replace(&self.scratch.path().display().to_string(), "@")
    }

    fn cinch(&self, args: &[&str]) -> Run {
        self.repo.cinch(args)
    }
}

/// A file with mode 0644 whatever the umask, so recorded states are the same everywhere.
fn write_0644(path: &Path, content: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
}

fn lines(expected: &str) -> Vec<String> {
    expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

#[track_caller]
fn assert_lines(got: &[String], expected: &str) {
    let expected = lines(expected);
    assert_eq!(
        got,
        expected.as_slice(),
        "\n--- got\n{}\n--- expected\n{}",
        got.join("\n"),
        expected.join("\n")
    );
}

/// The calls one node makes in the four-item apply, in order.
fn node_sequence(n: &str, b: &str, role: &str) -> String {
    let file = r#"{"mode":"0640","size":4,"type":"file"}"#;
    let same = r#"{"mode":"0644","size":5,"type":"file"}"#;
    format!(
        r#"
node_apply_start | R | {n} host={n} groups=[] bundles=["{b}"] md={{"role":"{role}"}} | false
item_apply_start | R | {n} | action:hello | action | hello | {b}
item_apply_start | R | {n} | file:@/{n}/missing/bad.txt | file | @/{n}/missing/bad.txt | {b}
item_apply_start | R | {n} | file:@/{n}/new.txt | file | @/{n}/new.txt | {b}
item_apply_start | R | {n} | file:@/{n}/ok.txt | file | @/{n}/ok.txt | {b}
item_apply_end | R | {n} | file:@/{n}/ok.txt | dur | ok | {same} | {same} | ()
item_apply_end | R | {n} | file:@/{n}/missing/bad.txt | dur | failed | () | () | parent directory @/{n}/missing does not exist (manage it with a directory item, or create it)
item_apply_end | R | {n} | file:@/{n}/new.txt | dur | fixed | () | {file} | ()
action_run_start | R | {n} | action:hello | echo hi > @/{n}/hello
action_run_end | R | {n} | action:hello | dur | fixed
item_apply_end | R | {n} | action:hello | dur | fixed | () | () | ()
node_apply_end | R | {n} | dur | false | {{"error":null,"failed":1,"fixed":2,"ok":1,"skipped":0,"total":4}}
"#
    )
}

#[test]
fn apply_of_two_nodes_calls_every_hook_in_order_with_its_arguments() {
    let h = Hooked::new().record_as("record.rhai").four_items();
    let run = h.cinch(&["apply", "all", "-p", "1"]).expect_code(1);
    assert!(
        run.stderr.contains("missing/bad.txt  failed"),
        "{}",
        run.stderr
    );
    let expected = format!(
        "apply_start | R | all | [\"n1\",\"n2\"] | false\n{}{}apply_end | R | all | [\"n1\",\"n2\"] | dur\n",
        node_sequence("n1", "b1", "web"),
        node_sequence("n2", "b2", "db")
    );
    assert_lines(&h.take(), &expected);
    // The apply really happened (and local nodes never fire node_ssh_connect: see above).
    assert_eq!(
        std::fs::read_to_string(h.node_dir("n2").join("hello")).unwrap(),
        "hi\n"
    );

    // Second apply: everything that can be is ok now, the action runs again.
    h.cinch(&["apply", "n1"]).expect_code(1);
    let got = h.take();
    assert!(
        got.contains(&format!(
            "item_apply_end | R | n1 | file:@/n1/new.txt | dur | ok | {0} | {0} | ()",
            r#"{"mode":"0640","size":4,"type":"file"}"#
        )),
        "{got:#?}"
    );
    assert_eq!(
        got.first().map(String::as_str),
        Some("apply_start | R | n1 | [\"n1\"] | false")
    );

    // verify applies nothing, so it calls no hook at all for local nodes.
    h.cinch(&["verify", "all"]).expect_code(1);
    assert_eq!(h.take(), Vec::<String>::new());
}

#[test]
fn cinch_test_calls_test_node_for_each_node_then_test_once() {
    let h = Hooked::new().record_as("record.rhai").one_file_each();
    h.cinch(&["test"]).expect_code(0).stdout_has("2 nodes OK");
    let mut got = h.take();
    // Nodes are tested in parallel; `test` is strictly last.
    assert_eq!(got.pop().as_deref(), Some("test | R"));
    got.sort();
    assert_lines(
        &got,
        r#"
test_node | R | n1 host=n1 groups=[] bundles=["b1"] md={"role":"web"}
test_node | R | n2 host=n2 groups=[] bundles=["b2"] md={"role":"db"}
"#,
    );

    // A partial test calls test_node for its nodes only, and not `test`.
    h.cinch(&["test", "n2"]).expect_code(0);
    assert_lines(
        &h.take(),
        r#"test_node | R | n2 host=n2 groups=[] bundles=["b2"] md={"role":"db"}"#,
    );
}

#[test]
fn failing_test_hooks_make_cinch_test_exit_1_with_file_and_line() {
    let h = Hooked::new().one_file_each().hook(
        "policy.rhai",
        "fn test_node(repo, node) {\n    if node.metadata.role == \"db\" {\n        throw `${node.name}: databases need an owner`;\n    }\n}\n",
    );
    let run = h.cinch(&["test"]).expect_code(1);
    assert!(
        run.stderr
            .contains("hooks/policy.rhai:3:9: hook test_node failed: n2: databases need an owner"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("1 problem found on 1 of 2 nodes"),
        "{}",
        run.stderr
    );
    h.cinch(&["test", "n1"]).expect_code(0);

    let h = Hooked::new().one_file_each().hook(
        "end.rhai",
        "fn test(repo) {\n    throw \"repo policy\";\n}\n",
    );
    let run = h.cinch(&["test"]).expect_code(1);
    assert!(
        run.stderr
            .contains("hooks/end.rhai:2:5: hook test failed: repo policy"),
        "{}",
        run.stderr
    );
    // Not a full test: `test` is not called, nothing fails.
    h.cinch(&["test", "n1,n2"]).expect_code(0);
}

#[test]
fn cinch_test_warns_about_misspelt_hooks_and_extra_parameters() {
    let h = Hooked::new().one_file_each().hook(
        "typo.rhai",
        "fn helper() { 1 }\n\nfn node_aply_start(repo, node) { }\nfn test(repo, extra) { }\n",
    );
    let run = h.cinch(&["test"]).expect_code(0);
    assert!(
        run.stderr.contains("warning: ")
            && run
                .stderr
                .contains("hooks/typo.rhai:3:1: function `node_aply_start` is not a hook point")
            && run.stderr.contains("did you mean `node_apply_start`?"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("hooks/typo.rhai:4:1: hook `test` declares 2 parameters but test provides 1"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("helper"), "{}", run.stderr);
    let json = h.cinch(&["--json", "test"]).expect_code(0);
    let warnings: Vec<_> = json
        .json_lines()
        .into_iter()
        .filter(|l| l["event"] == "test_warning")
        .collect();
    assert_eq!(warnings.len(), 2, "{}", json.stdout);
    assert_eq!(warnings[0]["line"], 3);
}

#[test]
fn hook_syntax_error_is_reported_with_file_line_column_and_nothing_runs() {
    let h = Hooked::new()
        .record_as("50-record.rhai")
        .one_file_each()
        .hook("10-bad.rhai", "fn apply_start(repo) {\n    let x = ;\n}\n");
    for args in [&["apply", "all"][..], &["test"], &["lock", "add", "n1"]] {
        let run = h.cinch(args).expect_code(2);
        assert!(
            run.stderr
                .contains("hooks/10-bad.rhai:2:13: syntax error in hook"),
            "{args:?}: {}",
            run.stderr
        );
    }
    h.cinch(&["test"])
        .expect_code(2)
        .stderr_has("1 problem found: hooks do not load");
    assert!(!h.node_dir("n1").join("f.txt").exists());
    assert_eq!(h.take(), Vec::<String>::new(), "no hook ran");
    assert!(!h.repo.path().join("locks").exists(), "no node was touched");
}

#[test]
fn abort_in_apply_start_stops_everything() {
    let h = Hooked::new()
        .record_as("50-record.rhai")
        .one_file_each()
        .hook(
            "10-freeze.rhai",
            "fn apply_start(repo, target) {\n    if target == \"all\" { abort(\"change freeze until Monday\"); }\n}\n",
        );
    let run = h.cinch(&["apply", "all"]).expect_code(1);
    assert!(
        run.stderr
            .contains("apply aborted by hook: change freeze until Monday"),
        "{}",
        run.stderr
    );
    assert!(!h.node_dir("n1").join("f.txt").exists());
    assert!(!h.node_dir("n2").join("f.txt").exists());
    // The aborting file stops the point: later files are not called, nor any other hook.
    assert_eq!(h.take(), Vec::<String>::new());
    assert!(!h.repo.path().join("locks").exists(), "no node was touched");
    // The hook chose by target: a single node goes ahead.
    h.cinch(&["apply", "n1"]).expect_code(0);
    assert!(h.node_dir("n1").join("f.txt").exists());
}

#[test]
fn skip_node_skips_only_that_node_and_is_no_failure() {
    let h = Hooked::new().record_as("50-record.rhai").one_file_each().hook(
        "10-skip.rhai",
        "fn node_apply_start(repo, node) {\n    if node.name == \"n1\" { skip_node(\"disk swap in progress\"); }\n}\n",
    );
    let run = h.cinch(&["apply", "all", "-p", "1"]).expect_code(0);
    assert!(
        run.stdout
            .contains("n1  skipped by hook (disk swap in progress)"),
        "{}",
        run.stdout
    );
    assert!(!h.node_dir("n1").join("f.txt").exists());
    assert_eq!(
        std::fs::read_to_string(h.node_dir("n2").join("f.txt")).unwrap(),
        "f\n"
    );
    let got = h.take();
    assert!(!got.iter().any(|l| l.contains("| n1")), "{got:#?}");
    assert!(
        got.iter().any(|l| l.starts_with("node_apply_end | R | n2")),
        "{got:#?}"
    );

    // JSON says so too.
    std::fs::remove_file(h.node_dir("n2").join("f.txt")).unwrap();
    let run = h.cinch(&["--json", "apply", "all"]).expect_code(0);
    let skipped: Vec<_> = run
        .json_lines()
        .into_iter()
        .filter(|l| l["event"] == "node_skipped")
        .collect();
    assert_eq!(skipped.len(), 1, "{}", run.stdout);
    assert_eq!(skipped[0]["node"], "n1");
    assert_eq!(skipped[0]["reason"], "disk swap in progress");
}

#[test]
fn runtime_error_in_node_apply_end_exits_1_but_the_apply_happened() {
    let h = Hooked::new().one_file_each().hook(
        "notify.rhai",
        "fn node_apply_end(repo, node, duration, interactive, result) {\n    let m = #{};\n    m.nope.call();\n}\n",
    );
    let run = h.cinch(&["apply", "all"]).expect_code(1);
    assert!(
        run.stderr.contains("hooks/notify.rhai:3:")
            && run.stderr.contains("hook node_apply_end failed"),
        "{}",
        run.stderr
    );
    for n in ["n1", "n2"] {
        assert_eq!(
            std::fs::read_to_string(h.node_dir(n).join("f.txt")).unwrap(),
            "f\n"
        );
    }
    // The items were fine: the summary shows them fixed.
    assert!(run.stdout.contains("total (2 nodes)"), "{}", run.stdout);
}

#[test]
fn failing_item_and_action_start_hooks_fail_only_their_item() {
    let h = Hooked::new().record_as("50-record.rhai");
    h.repo.write("bundles/b2/items.toml", "");
    let d = h.node_dir("n1");
    h.repo.write(
        "bundles/b1/items.toml",
        &format!(
            "[files.\"{d}/guarded.txt\"]\ncontent = \"g\\n\"\n[files.\"{d}/free.txt\"]\ncontent = \"f\\n\"\n\
             [actions.deploy]\ncommand = \"touch {d}/deployed\"\n[actions.other]\ncommand = \"touch {d}/other\"\n",
            d = d.display()
        ),
    );
    let h = h.hook(
        "10-guard.rhai",
        r#"
fn item_apply_start(repo, node, item) {
    if item.name.ends_with("guarded.txt") { throw "guarded files need a ticket"; }
}
fn action_run_start(repo, node, item) {
    if item.name == "deploy" { abort("not during business hours"); }
}
"#,
    );
    let run = h.cinch(&["apply", "n1"]).expect_code(1);
    assert!(
        !d.join("guarded.txt").exists(),
        "item refused by hook was not applied"
    );
    assert!(
        !d.join("deployed").exists(),
        "action refused by hook did not run"
    );
    assert!(
        d.join("free.txt").exists() && d.join("other").exists(),
        "the rest went on"
    );
    assert!(
        run.stderr.contains(
            "hooks/10-guard.rhai:3:45: hook item_apply_start failed: guarded files need a ticket"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("abort() only works in apply_start and run_start, not in action_run_start"),
        "{}",
        run.stderr
    );
    let got = h.take();
    // The refused item ends failed with the hook's reason; its start was the only other call.
    let guarded: Vec<&String> = got.iter().filter(|l| l.contains("guarded.txt")).collect();
    assert_eq!(guarded.len(), 1, "{got:#?}");
    assert!(
        guarded[0].starts_with("item_apply_end | R | n1 | file:@/n1/guarded.txt | dur | failed | () | () | hook failed at ")
            && guarded[0].ends_with("guarded files need a ticket"),
        "{guarded:?}"
    );
    // The refused action: its end follows with status failed, and the item fails.
    let deploy: Vec<&String> = got.iter().filter(|l| l.contains("action:deploy")).collect();
    assert_eq!(deploy.len(), 3, "{got:#?}");
    assert!(
        deploy[0].starts_with("item_apply_start | R | n1 | action:deploy"),
        "{deploy:?}"
    );
    assert_eq!(
        deploy[1],
        "action_run_end | R | n1 | action:deploy | dur | failed"
    );
    assert!(
        deploy[2].starts_with("item_apply_end | R | n1 | action:deploy | dur | failed"),
        "{deploy:?}"
    );
}

#[test]
fn endless_loop_in_a_hook_is_stopped_and_fails_closed() {
    let h = Hooked::new()
        .one_file_each()
        .hook("spin.rhai", "fn apply_start(repo) {\n    loop { }\n}\n");
    let run = h.cinch(&["apply", "all"]).expect_code(1);
    assert!(
        run.stderr.contains("hooks/spin.rhai:")
            && run
                .stderr
                .contains("stopped after 5000000 operations (an endless loop?)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("apply aborted by hook"),
        "{}",
        run.stderr
    );
    assert!(!h.node_dir("n1").join("f.txt").exists());
}

#[test]
fn imports_come_from_libs_only() {
    let secret = tempfile::tempdir().unwrap();
    std::fs::write(secret.path().join("secret.rhai"), "fn key() { \"s3cret\" }").unwrap();
    let h = Hooked::new().one_file_each().hook(
        "leak.rhai",
        &format!(
            "import {:?} as s;\nfn apply_start(repo) {{ log(s::key()); }}\n",
            secret.path().join("secret").display().to_string()
        ),
    );
    let run = h.cinch(&["apply", "all"]).expect_code(2);
    assert!(run.stderr.contains("hooks/leak.rhai:1:"), "{}", run.stderr);
    assert!(run.stderr.contains("libs/"), "{}", run.stderr);
    assert!(!run.stdout.contains("s3cret"), "{}", run.stdout);
    assert!(!h.node_dir("n1").join("f.txt").exists());

    // `..` out of libs/ is refused too; a real lib works.
    let h = h.hook("leak.rhai", "import \"../nodes\" as s;\n");
    h.cinch(&["apply", "all"]).expect_code(2);
    h.repo
        .write("libs/fmt.rhai", "fn hi() { \"hello from libs\" }\n");
    let h = h.hook(
        "leak.rhai",
        "import \"fmt\" as f;\nfn apply_start(repo) { log(f::hi()); }\n",
    );
    h.cinch(&["apply", "all"])
        .expect_code(0)
        .stdout_has("hook leak.rhai: hello from libs");
}

#[test]
fn lock_add_show_remove_call_their_hooks_in_order() {
    let h = Hooked::new().record_as("record.rhai").one_file_each();
    let id = h
        .cinch(&[
            "-q",
            "lock",
            "add",
            "n1",
            "-c",
            "swap disk",
            "-e",
            "2h",
            "-i",
            "file:,bundle:b1",
        ])
        .expect_code(0)
        .stdout
        .trim()
        .to_string();
    h.cinch(&["lock", "show", "n1"]).expect_code(0);
    h.cinch(&["lock", "remove", "n1", &id]).expect_code(0);
    assert_lines(
        &h.take(),
        &format!(
            r#"
lock_add | R | n1 | {id} | ["file:","bundle:b1"] | in 2h | swap disk
lock_show | R | n1 | {id} | tester | ["file:","bundle:b1"] | swap disk
lock_remove | R | n1 | {id}
"#
        ),
    );
    // A failing lock hook is reported and makes the exit code 1 (the lock is still added).
    let h = h.hook(
        "boom.rhai",
        "fn lock_add(repo) {\n    throw \"chat is down\";\n}\n",
    );
    let run = h.cinch(&["lock", "add", "n2"]).expect_code(1);
    assert!(
        run.stderr
            .contains("hooks/boom.rhai:2:5: hook lock_add failed: chat is down"),
        "{}",
        run.stderr
    );
    h.cinch(&["lock", "show", "n2"])
        .expect_code(0)
        .stdout_has("tester");
}

#[test]
fn node_ssh_connect_fires_before_the_first_connection_also_for_verify() {
    let sshd = crate::sshd::Sshd::start(1);
    let repo = TestRepo::new().file("cinch.toml", &sshd.cinch_toml());
    let d = sshd.node_dir("node1");
    repo.write(
        "nodes.toml",
        &format!(
            "[nodes.node1]\nbundles = [\"b\"]\nlock_dir = \"{}\"\n",
            repo.path().join("locks").display()
        ),
    );
    repo.write(
        "bundles/b/items.toml",
        &format!("[files.\"{}/f\"]\ncontent = \"x\\n\"\n", d.display()),
    );
    let log = repo.path().join("record.log");
    repo.write(
        "hooks/record.rhai",
        &RECORD
            .replace("@LOG@", &log.display().to_string())
            .replace("@REPO@", &repo.path().display().to_string()),
    );
    repo.cinch(&["apply", "node1"]).expect_code(0);
    let got = std::fs::read_to_string(&log).unwrap();
    let hooks: Vec<&str> = got
        .lines()
        .map(|l| l.split(" | ").next().unwrap_or(""))
        .collect();
    assert_eq!(
        hooks,
        [
            "apply_start",
            "node_apply_start",
            "node_ssh_connect",
            "item_apply_start",
            "item_apply_end",
            "node_apply_end",
            "apply_end"
        ],
        "{got}"
    );
    assert!(got.contains("node_ssh_connect | R | node1\n"), "{got}");
    std::fs::remove_file(&log).unwrap();
    repo.cinch(&["verify", "node1"]).expect_code(0);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "node_ssh_connect | R | node1\n",
        "verify connects, but applies nothing"
    );
}

/// Copies `hooks-examples/NAME` into the repo's hooks/ as users are told to.
fn install_example(repo: &TestRepo, name: &str, as_name: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("hooks-examples")
        .join(name);
    std::fs::create_dir_all(repo.path().join("hooks")).unwrap();
    std::fs::copy(&src, repo.path().join("hooks").join(as_name)).unwrap();
}

#[test]
fn example_maintenance_window_guards_apply_through_the_binary() {
    let h = Hooked::new().one_file_each();
    install_example(
        &h.repo,
        "maintenance-window.rhai",
        "10-maintenance-window.rhai",
    );
    // 2023-11-14 22:13:20 UTC is inside the default 22-6 window; 12:13:20 is not.
    let inside = "1700000000";
    let outside = "1699964000";
    let run = h
        .repo
        .cinch_env(&[("CINCH_HOOK_NOW", outside)], &["apply", "all"])
        .expect_code(1);
    assert!(
        run.stderr.contains(
            "apply aborted by hook: outside the maintenance window 22-6 UTC (now 12:13 UTC)"
        ),
        "{}",
        run.stderr
    );
    assert!(!h.node_dir("n1").join("f.txt").exists());
    h.cinch(&["verify", "all"]).expect_code(1);
    h.repo
        .cinch_env(&[("CINCH_HOOK_NOW", inside)], &["apply", "all"])
        .expect_code(0);
    assert!(h.node_dir("n1").join("f.txt").exists());
}

#[test]
fn example_skip_maintenance_nodes_and_audit_log_through_the_binary() {
    let h = Hooked::new().one_file_each();
    let nodes = std::fs::read_to_string(h.repo.path().join("nodes.toml")).unwrap();
    h.repo.write(
        "nodes.toml",
        &nodes.replace(
            "role = \"db\"",
            "role = \"db\"\nmaintenance = true\nmaintenance_reason = \"disk replacement, OPS-123\"",
        ),
    );
    install_example(
        &h.repo,
        "skip-maintenance-nodes.rhai",
        "20-skip-maintenance-nodes.rhai",
    );
    install_example(&h.repo, "audit-log.rhai", "50-audit-log.rhai");
    let run = h.cinch(&["apply", "all"]).expect_code(0);
    assert!(
        run.stdout
            .contains("n2  skipped by hook (node is in maintenance: disk replacement, OPS-123)"),
        "{}",
        run.stdout
    );
    assert!(h.node_dir("n1").join("f.txt").exists());
    assert!(!h.node_dir("n2").join("f.txt").exists());
    let audit = std::fs::read_to_string(h.repo.path().join("audit.jsonl")).unwrap();
    let entries: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["node"], "n1");
    assert_eq!(entries[0]["user"], "tester");
    assert_eq!(entries[0]["status"], "fixed");
    assert_eq!(
        entries[0]["item"],
        format!("file:{}", h.node_dir("n1").join("f.txt").display())
    );
}

#[test]
fn example_require_metadata_fails_cinch_test_through_the_binary() {
    let h = Hooked::new().one_file_each();
    install_example(&h.repo, "require-metadata.rhai", "00-require-metadata.rhai");
    let run = h
        .repo
        .cinch_env(&[("CINCH_REQUIRED_METADATA", "role,owner")], &["test"])
        .expect_code(1);
    assert!(
        run.stderr
            .contains("node n1 lacks required metadata: owner")
            && run
                .stderr
                .contains("node n2 lacks required metadata: owner"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("hooks/00-require-metadata.rhai:"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("2 problems found on 2 of 2 nodes"),
        "{}",
        run.stderr
    );
    h.repo
        .cinch_env(&[("CINCH_REQUIRED_METADATA", "role")], &["test"])
        .expect_code(0)
        .stdout_has("metadata policy enforced: [\"role\"]");
}

#[test]
fn failed_fix_tells_item_apply_end_the_states_before_and_after() {
    let h = Hooked::new().record_as("record.rhai");
    h.repo.write("bundles/b2/items.toml", "");
    let f = h.node_dir("n1").join("f.txt");
    write_0644(&f, "old\n");
    h.repo.write(
        "bundles/b1/items.toml",
        &format!(
            "[files.\"{}\"]\ncontent = \"new content\\n\"\nowner = \"nosuchuser-cinch\"\n",
            f.display()
        ),
    );
    h.cinch(&["apply", "n1"]).expect_code(1);
    let got = h.take();
    let end = got
        .iter()
        .find(|l| l.starts_with("item_apply_end"))
        .unwrap_or_else(|| panic!("{got:#?}"));
    let before = r#"{"mode":"0644","size":4,"type":"file"}"#;
    assert!(
        end.starts_with(&format!(
            "item_apply_end | R | n1 | file:@/n1/f.txt | dur | failed | {before} | {before} | "
        )) && end.contains("nosuchuser-cinch"),
        "{end}"
    );
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        "old\n",
        "a failed fix changes nothing"
    );
}

#[test]
fn libs_import_cycle_in_a_hook_is_reported_with_file_and_line_not_a_stack_overflow() {
    let r = TestRepo::new()
        .file("nodes.toml", "[nodes.n1]\ntransport = \"local\"\n")
        .file("libs/u.rhai", "// u needs itself\nimport \"u\" as u;\n")
        .file("hooks/h.rhai", "import \"u\" as u;\nfn test(repo) {}\n");
    r.cinch(&["test"])
        .expect_code(2)
        .stderr_has("libs/u.rhai:2")
        .stderr_has("import cycle: libs/u.rhai line 2 imports \"u\"");
}

#[test]
fn hook_scanning_big_strings_stops_on_the_first_ctrl_c_with_exit_130() {
    let r = TestRepo::new()
        .file("nodes.toml", "[nodes.n1]\ntransport = \"local\"\n")
        .file(
            "hooks/slow.rhai",
            "fn test_node(repo, node) {\n    let s = \"x\";\n    for i in 0..23 { s += s; }\n    loop { if s.contains(\"y\") { break; } }\n}\n",
        );
    let started = std::time::Instant::now();
    crate::harness::signalled(
        &r,
        &["test"],
        libc::SIGINT,
        std::time::Duration::from_millis(1500),
    )
    .expect_code(130)
    .stderr_has("interrupted");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}
