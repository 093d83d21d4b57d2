//! Snapshots of the human output of apply, verify, run, lock and test (insta), so any change
//! to what a user reads shows up as a reviewable diff (`cargo insta review`). Temp paths,
//! durations, dates, lock ids and colours are filtered out, and table padding collapsed (its
//! width follows them); everything else is compared.

use crate::harness::{Run, TestRepo};

/// A local node `n1` with a file, a directory and a triggered action, in a scratch dir.
struct Scene {
    repo: TestRepo,
    _dir: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::Builder::new()
            .prefix("cinch-snap")
            .tempdir()
            .expect("tempdir");
        let repo = TestRepo::new();
        let root = dir.path().to_str().expect("utf-8 temp path").to_string();
        repo.write(
            "nodes.toml",
            &format!(
                "[nodes.n1]\ntransport = \"local\"\nbundles = [\"b\"]\nlock_dir = \"{root}/locks\"\n\
                 [nodes.ghost]\ndummy = true\nbundles = [\"b\"]\n"
            ),
        );
        repo.write(
            "bundles/b/items.toml",
            &format!(
                "[directories.\"{root}/etc\"]\nmode = \"0755\"\n\n\
                 [files.\"{root}/etc/motd\"]\ncontent = \"hello\\nworld\\n\"\nmode = \"0644\"\n\
                 triggers = [\"action:reload\"]\n\n\
                 [actions.reload]\ncommand = \"true\"\ntriggered = true\n"
            ),
        );
        Scene { repo, _dir: dir }
    }

    fn cinch(&self, args: &[&str]) -> Run {
        self.repo.cinch(args)
    }
}

/// One invocation as a user reads it: exit code, stdout and stderr.
fn shown(run: &Run) -> String {
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        run.code, run.stdout, run.stderr
    )
}

/// Runs `check` with the filters every snapshot here needs.
fn with_filters(check: impl FnOnce()) {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\x1b\[[0-9;]*m", "");
    settings.add_filter(r"/[^\s'\x22:]*cinch-(test|snap)[^\s/'\x22:]*", "[TMP]");
    settings.add_filter(r"\b\d+(\.\d+)?(ms|s)\b", "[DUR]");
    settings.add_filter(
        r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?( ?UTC|Z)?",
        "[DATE]",
    );
    settings.add_filter(r"\b(\d+d)?\d+h(\d+m)?\b|\b\d+m\b", "[LEFT]");
    // Column widths follow the longest duration or date: collapse padding and rules.
    settings.add_filter(r" {2,}", "  ");
    settings.add_filter(r"─+", "─");
    settings.add_filter(r"═+", "═");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(check);
}

#[test]
fn apply_and_verify_human_output() {
    let s = Scene::new();
    with_filters(|| {
        insta::assert_snapshot!("verify_before_apply", shown(&s.cinch(&["verify", "all"])));
        insta::assert_snapshot!("apply", shown(&s.cinch(&["apply", "all"])));
        insta::assert_snapshot!("verify_after_apply", shown(&s.cinch(&["verify", "all"])));
        insta::assert_snapshot!("apply_again", shown(&s.cinch(&["apply", "n1"])));
    });
}

#[test]
fn run_human_output() {
    let s = Scene::new();
    with_filters(|| {
        insta::assert_snapshot!(
            "run",
            shown(&s.cinch(&["run", "all", "echo out; sleep 0.3; echo err >&2; exit 3"]))
        );
    });
}

#[test]
fn lock_human_output() {
    let s = Scene::new();
    let added = s.cinch(&["-q", "lock", "add", "n1", "-c", "maintenance", "-e", "2h"]);
    let id = added.stdout.trim().to_string();
    assert_eq!(id.len(), 4, "lock id on stdout: {}", shown(&added));
    with_filters(|| {
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(&regex_escape(&id), "[ID]");
        settings.bind(|| {
            insta::assert_snapshot!("lock_show", shown(&s.cinch(&["lock", "show", "all"])));
            insta::assert_snapshot!(
                "lock_remove",
                shown(&s.cinch(&["lock", "remove", "n1", &id]))
            );
        });
    });
}

#[test]
fn test_human_output() {
    let s = Scene::new();
    with_filters(|| {
        insta::assert_snapshot!("test_ok", shown(&s.cinch(&["test"])));
    });
    s.repo.write(
        "bundles/b/items.toml",
        "[files.\"/x\"]\ncontent = \"a\"\nsource = \"b\"\n[actions.a]\nneeds = [\"file:/nope\"]\ncommand = \"true\"\n",
    );
    with_filters(|| {
        insta::assert_snapshot!("test_problems", shown(&s.cinch(&["test"])));
    });
}

/// `text` as a regex matching itself (lock ids are A-Z0-9, but stay safe).
fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}
