//! Fleet operations end to end (issue 17): `--batch`, `--max-fail`, `--resume-file`,
//! `--shard` and `cinch report`, with the real binary, local nodes, and ssh nodes whose port
//! is closed (really unreachable).

use std::path::Path;

use crate::harness::{Run, TestRepo, signalled};
use crate::sshd::closed_port;

/// `[nodes.NAME]` for each local name, then an unreachable ssh node for each dead name.
fn nodes_toml(local: &[&str], dead: &[&str]) -> String {
    let mut s = String::new();
    for n in local {
        s.push_str(&format!("[nodes.{n}]\ntransport = \"local\"\n"));
    }
    for n in dead {
        s.push_str(&format!(
            "[nodes.{n}]\nhostname = \"127.0.0.1\"\nport = {}\n",
            closed_port()
        ));
    }
    s
}

/// The summary-table row of `node`, split into cells.
fn row(r: &Run, node: &str) -> Vec<String> {
    let gap = regex::Regex::new(r"\s{2,}").expect("regex");
    r.stdout
        .lines()
        .filter_map(|l| l.strip_prefix('│')?.strip_suffix('│'))
        .map(|l| gap.split(l.trim()).map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.first().is_some_and(|c| c == node))
        .unwrap_or_else(|| panic!("no table row for {node}:\n{}\n{}", r.stdout, r.stderr))
}

/// The table with every duration replaced, so two runs can be compared.
fn without_durations(table: &str) -> String {
    let d = regex::Regex::new(r"\d+\.\d+s|\d+m \d+s").expect("regex");
    d.replace_all(table, "T").into_owned()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn run_max_fail_starts_no_node_once_the_budget_is_spent() {
    // Nodes run in name order: both dead ones first, one at a time.
    let repo = TestRepo::new().file(
        "nodes.toml",
        &nodes_toml(&["b1", "b2", "b3"], &["adead1", "adead2"]),
    );
    let out = tempfile::tempdir().expect("tempdir");
    let log = out.path().join("ran");
    let cmd = format!("echo x >> '{}'", log.display());
    let r = repo
        .cinch(&["run", "all", &cmd, "-p", "1", "--max-fail", "1"])
        .expect_code(1);
    for n in ["b1", "b2", "b3"] {
        assert_eq!(
            row(&r, n)[2..],
            ["0.00s", "not started (failure budget spent)"]
        );
    }
    assert!(lines(&log).is_empty(), "no node after the budget ran");
    // A budget the failures stay within lets every node run.
    let r = repo
        .cinch(&["run", "all", &cmd, "-p", "1", "--max-fail", "40%"])
        .expect_code(1);
    assert_eq!(row(&r, "b3")[1], "0");
    assert_eq!(lines(&log).len(), 3);
}

#[test]
fn run_max_fail_is_reported_in_json() {
    let repo = TestRepo::new().file("nodes.toml", &nodes_toml(&["b1"], &["adead"]));
    let r = repo
        .cinch(&["--json", "run", "all", "true", "-p", "1", "--max-fail", "0"])
        .expect_code(1);
    let summary = r
        .json_lines()
        .into_iter()
        .find(|l| l["event"] == "summary")
        .expect("summary");
    let b1 = summary["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|row| row["node"] == "b1")
        .expect("b1 row")
        .clone();
    assert_eq!(b1["note"], "not started (failure budget spent)");
    assert_eq!(b1["ok"], false);
    assert_eq!(summary["exit_code"], 1);
}

#[test]
fn run_batches_finish_before_the_next_starts() {
    let repo = TestRepo::new().file("nodes.toml", &nodes_toml(&["n1", "n2", "n3", "n4"], &[]));
    let out = tempfile::tempdir().expect("tempdir");
    let log = out.path().join("log");
    let cmd = format!(
        "echo start >> '{l}'; sleep 0.4; echo end >> '{l}'",
        l = log.display()
    );
    repo.cinch(&["run", "all", &cmd, "-p", "4", "--batch", "50%"])
        .expect_code(0);
    assert_eq!(
        lines(&log),
        [
            "start", "start", "end", "end", "start", "start", "end", "end"
        ]
    );
}

#[test]
fn run_resume_file_skips_nodes_done_and_continues_after_ctrl_c() {
    let repo = TestRepo::new().file("nodes.toml", &nodes_toml(&["n1", "n2", "n3"], &[]));
    let out = tempfile::tempdir().expect("tempdir");
    let done = out.path().join("done");
    let log = out.path().join("log");
    let cmd = format!("sleep 1; echo x >> '{}'", log.display());
    let done_arg = done.to_str().expect("utf-8");
    // Ctrl-C while n2 runs: n1 is recorded at once, n2 finishes and is recorded, n3 never starts.
    let args = ["run", "all", &cmd, "-p", "1", "--resume-file", done_arg];
    let r = signalled(
        &repo,
        &args,
        libc::SIGINT,
        std::time::Duration::from_millis(1500),
    );
    assert_eq!(r.code, 130, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(lines(&done), ["n1", "n2"]);
    let r = repo
        .cinch(&["run", "all", &cmd, "-p", "1", "--resume-file", done_arg])
        .expect_code(0);
    assert_eq!(row(&r, "n1")[3], "skipped: already done (resume file)");
    assert_eq!(row(&r, "n3")[1], "0");
    assert_eq!(lines(&log).len(), 3, "n1 and n2 ran once, n3 once");
    assert_eq!(lines(&done), ["n1", "n2", "n3"]);
}

#[test]
fn apply_resume_file_records_nodes_that_succeeded_and_skips_them_next_time() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let root = scratch.path().display().to_string();
    let repo = TestRepo::new()
        .file(
            "nodes.toml",
            &format!(
                "{}bundles = [\"a\"]\n{}bundles = [\"d\"]\n",
                nodes_toml(&["a"], &[]),
                nodes_toml(&[], &["dead"])
            ),
        )
        .file(
            "bundles/a/items.toml",
            &format!("[files.\"{root}/a.conf\"]\ncontent = \"a\\n\"\n"),
        )
        .file(
            "bundles/d/items.toml",
            &format!("[files.\"{root}/d.conf\"]\ncontent = \"d\\n\"\n"),
        );
    let done = scratch.path().join("done");
    let done_arg = done.to_str().expect("utf-8");
    repo.cinch(&["apply", "all", "--resume-file", done_arg])
        .expect_code(1);
    assert_eq!(lines(&done), ["a"], "only the node that succeeded");
    std::fs::remove_file(scratch.path().join("a.conf")).expect("rm");
    let r = repo
        .cinch(&["apply", "all", "--resume-file", done_arg])
        .expect_code(1);
    assert!(
        !scratch.path().join("a.conf").exists(),
        "a was skipped, not applied again"
    );
    let a = row(&r, "a");
    assert_eq!(
        a.last().map(String::as_str),
        Some("skipped: already done (resume file)")
    );
    assert_eq!(a[4], "1", "its item counts as skipped: {a:?}");
}

#[test]
fn shards_split_the_nodes_disjointly_and_completely() {
    let names: Vec<String> = (0..40).map(|i| format!("n{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let repo = TestRepo::new().file("nodes.toml", &nodes_toml(&refs, &[]));
    let mut seen: Vec<String> = Vec::new();
    for i in 1..=3 {
        let r = repo
            .cinch(&["nodes", "all", "--shard", &format!("{i}/3")])
            .expect_code(0);
        let part: Vec<String> = r.stdout.lines().map(String::from).collect();
        assert!(
            !part.is_empty(),
            "shard {i} of 3 over 40 nodes is not empty"
        );
        seen.extend(part);
    }
    seen.sort();
    assert_eq!(seen, names, "every node in exactly one shard");
    // The hash of a shard covers only its nodes.
    let whole = repo.cinch(&["-q", "hash", "all"]).expect_code(0);
    let one = repo
        .cinch(&["-q", "hash", "all", "--shard", "1/3"])
        .expect_code(0);
    assert_ne!(whole.stdout, one.stdout);
    repo.cinch(&["nodes", "all", "--shard", "4/3"])
        .expect_code(2)
        .stderr_has("I/N");
}

#[test]
fn a_two_shard_run_reported_equals_the_unsharded_run() {
    let repo = TestRepo::new().file(
        "nodes.toml",
        &nodes_toml(&["n1", "n2", "n3", "n4", "n5"], &["dead1", "dead2"]),
    );
    let out = tempfile::tempdir().expect("tempdir");
    let save = |name: &str, r: &Run| {
        let p = out.path().join(name);
        std::fs::write(&p, &r.stdout).expect("write json");
        p.to_str().expect("utf-8").to_string()
    };
    let whole_human = repo.cinch(&["run", "all", "echo hi"]).expect_code(1);
    let whole = save(
        "whole.json",
        &repo
            .cinch(&["--json", "run", "all", "echo hi"])
            .expect_code(1),
    );
    let s1 = save(
        "s1.json",
        &repo.cinch(&["--json", "run", "all", "echo hi", "--shard", "1/2"]),
    );
    let s2 = save(
        "s2.json",
        &repo.cinch(&["--json", "run", "all", "echo hi", "--shard", "2/2"]),
    );
    let sharded = repo.cinch(&["report", &s1, &s2]).expect_code(1);
    let single = repo.cinch(&["report", &whole]).expect_code(1);
    let table = |s: &str| {
        without_durations(
            &s.lines()
                .filter(|l| !l.contains(" | "))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    };
    assert_eq!(table(&sharded.stdout), table(&single.stdout));
    assert_eq!(table(&sharded.stdout), table(&whole_human.stdout));
    assert!(sharded.stdout.contains("dead2"), "{}", sharded.stdout);

    // An all-good fleet reports exit 0; a shard given twice is refused.
    let good = TestRepo::new().file("nodes.toml", &nodes_toml(&["n1", "n2", "n3"], &[]));
    let g1 = save(
        "g1.json",
        &good.cinch(&["--json", "run", "all", "true", "--shard", "1/2"]),
    );
    let g2 = save(
        "g2.json",
        &good.cinch(&["--json", "run", "all", "true", "--shard", "2/2"]),
    );
    good.cinch(&["report", &g1, &g2]).expect_code(0);
    good.cinch(&["report", &g1, &g1])
        .expect_code(2)
        .stderr_has("more than one file");
}

#[test]
fn a_two_shard_verify_reported_equals_the_unsharded_verify() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let root = scratch.path().display().to_string();
    let mut nodes = String::new();
    for n in ["n1", "n2", "n3", "n4"] {
        nodes.push_str(&format!(
            "[nodes.{n}]\ntransport = \"local\"\nbundles = [\"{n}\"]\n"
        ));
    }
    let repo = TestRepo::new().file("nodes.toml", &nodes);
    for n in ["n1", "n2", "n3", "n4"] {
        repo.write(
            &format!("bundles/{n}/items.toml"),
            &format!("[files.\"{root}/{n}\"]\ncontent = \"x\\n\"\n"),
        );
    }
    repo.cinch(&["apply", "n1,n3"]).expect_code(0);
    let out = tempfile::tempdir().expect("tempdir");
    let save = |name: &str, r: &Run| {
        let p = out.path().join(name);
        std::fs::write(&p, &r.stdout).expect("write json");
        p.to_str().expect("utf-8").to_string()
    };
    let whole = repo.cinch(&["verify", "all", "--no-diff"]).expect_code(1);
    let s1 = save(
        "s1.json",
        &repo.cinch(&["--json", "verify", "all", "--shard", "1/2"]),
    );
    let s2 = save(
        "s2.json",
        &repo.cinch(&["--json", "verify", "all", "--shard", "2/2"]),
    );
    let reported = repo.cinch(&["report", &s1, &s2]).expect_code(1);
    let table = |s: &str| {
        let start = s.find('┌').unwrap_or_else(|| panic!("no table in {s}"));
        without_durations(&s[start..])
    };
    assert_eq!(table(&reported.stdout), table(&whole.stdout));
}
