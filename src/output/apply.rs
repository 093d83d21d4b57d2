//! Human output of apply and verify: item lines with their diffs, node lines, the `-i`
//! question, drift attributions and the summary table (also rendered by `cinch report`).

use std::time::Duration;

use console::style;

use serde::{Deserialize, Serialize};

use super::{Lines, untrusted};

/// One node's line of the apply/verify summary.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ApplyRow {
    /// The node's name.
    pub node: String,
    /// Its items, also when it never reported them.
    pub items: usize,
    /// Items already right.
    pub ok: usize,
    /// Items fixed (apply) or that would change (verify).
    #[serde(alias = "would_change")]
    pub fixed: usize,
    /// Items skipped.
    pub skipped: usize,
    /// Items failed.
    pub failed: usize,
    /// Seconds the node took.
    pub duration: f64,
    /// Why the node as a whole failed.
    pub error: Option<String>,
    /// Remote commands.
    pub commands: u64,
    /// Bytes sent to the node.
    pub bytes_sent: u64,
    /// Bytes received from the node.
    pub bytes_received: u64,
    /// Why the rollout left the node alone.
    pub note: Option<String>,
}

/// The apply (or verify) summary table.
pub fn apply_table(rows: &[ApplyRow], verify: bool, stats: bool) -> String {
    // Only a rollout that left nodes alone adds the column, so other tables stay as they were.
    let notes = rows.iter().any(|r| r.note.is_some());
    let mut total = ApplyRow::default();
    let mut table = Vec::new();
    for r in rows {
        let mut row = cells(r, stats);
        if r.error.is_some() {
            row[5] = format!("{} (node failed)", r.failed);
        }
        if notes {
            row.push(r.note.clone().unwrap_or_default());
        }
        table.push(row);
        total.items += r.items;
        total.ok += r.ok;
        total.fixed += r.fixed;
        total.skipped += r.skipped;
        total.failed += r.failed;
        total.duration = total.duration.max(r.duration);
        total.commands += r.commands;
        total.bytes_sent += r.bytes_sent;
        total.bytes_received += r.bytes_received;
    }
    if rows.len() > 1 {
        total.node = format!("total ({} nodes)", rows.len());
        let mut row = cells(&total, stats);
        if notes {
            row.push(String::new());
        }
        table.push(row);
    }
    let mut header = vec![
        "node",
        "items",
        "ok",
        if verify { "would change" } else { "fixed" },
        "skipped",
        "failed",
        "duration",
    ];
    if stats {
        header.extend(["commands", "bytes sent", "bytes received"]);
    }
    if notes {
        header.push("note");
    }
    super::table(&header, &table)
}

fn cells(r: &ApplyRow, stats: bool) -> Vec<String> {
    let mut row = vec![
        r.node.clone(),
        r.items.to_string(),
        r.ok.to_string(),
        r.fixed.to_string(),
        r.skipped.to_string(),
        r.failed.to_string(),
        fmt_duration(Duration::from_secs_f64(r.duration.max(0.0))),
    ];
    if stats {
        row.extend([
            r.commands.to_string(),
            r.bytes_sent.to_string(),
            r.bytes_received.to_string(),
        ]);
    }
    row
}

/// A node's duration as the summary shows it.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        let s = s as u64;
        format!("{}m {}s", s / 60, s % 60)
    }
}

/// An item's verdict as the item line shows it (the executor's outcome, seen from here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Already right.
    Ok,
    /// Fixed (or created, deleted, run).
    Fixed,
    /// Skipped.
    Skipped,
    /// Failed.
    Failed,
    /// verify: would change.
    WouldChange,
}

/// What an item line shows of one item's result.
pub struct ItemResult<'a> {
    /// The node's name.
    pub node: &'a str,
    /// The item's bundle.
    pub bundle: &'a str,
    /// The item's id.
    pub id: &'a str,
    /// The verdict.
    pub verdict: Verdict,
    /// `create`, `delete`, `run` or `fix`, when known.
    pub verb: Option<&'a str>,
    /// Why it failed, was skipped or would change (may carry the node's stderr).
    pub reason: Option<&'a str>,
    /// The diff of what changed or would change.
    pub diff: Option<&'a str>,
    /// A skip only shown with `-v` (a cascade's quiet skips).
    pub quiet: bool,
}

/// How much the terminal wants to see.
#[derive(Debug, Clone, Copy)]
pub struct Verbosity {
    /// `-v` count.
    pub verbose: u8,
    /// `-q`: only errors.
    pub quiet: bool,
    /// `-i`: diffs were shown in the questions, so item lines do not repeat them.
    pub interactive: bool,
}

/// An item's line (with its diff or failure reason boxed below it), and whether it goes to
/// stderr; `None` when this verbosity does not show it.
pub fn item_line(r: &ItemResult<'_>, v: Verbosity) -> Option<(String, bool)> {
    let (mark, word, to_err) = match r.verdict {
        Verdict::Ok => {
            if v.verbose == 0 {
                return None;
            }
            (style("✓").green(), "ok".to_string(), false)
        }
        Verdict::Fixed => (
            style("✓").green().bold(),
            match r.verb {
                Some("create") => "created".into(),
                Some("delete") => "deleted".into(),
                Some("run") => "succeeded".into(),
                _ => "fixed".into(),
            },
            false,
        ),
        Verdict::Skipped => {
            if v.verbose == 0 && (r.quiet || r.reason == Some("cmdline")) {
                return None;
            }
            (
                style("»").yellow(),
                format!("skipped ({})", r.reason.unwrap_or("")),
                false,
            )
        }
        Verdict::Failed => (style("✘").red().bold(), "failed".into(), true),
        Verdict::WouldChange => (
            style("✘").yellow().bold(),
            match r.reason {
                // Drift under someone else's soft lock: apply would skip it, verify says so.
                Some(why) => format!("would {} ({why})", r.verb.unwrap_or("fix")),
                None => format!("would {}", r.verb.unwrap_or("fix")),
            },
            false,
        ),
    };
    if v.quiet && !to_err {
        return None;
    }
    let mut text = format!("{mark} {}  {}  {}  {word}", r.node, r.bundle, r.id);
    if r.verdict == Verdict::Failed {
        if let Some(reason) = r.reason {
            // Failure reasons carry the node's stderr.
            for l in untrusted(reason, Lines::Keep).lines() {
                text.push_str(&format!("\n│ {l}"));
            }
            text.push_str("\n╵");
        }
    } else if let Some(diff) = r.diff.filter(|d| !d.is_empty())
        // In -i the question showed the diff already.
        && !(v.interactive && r.verdict == Verdict::Fixed)
    {
        for l in diff.lines() {
            text.push_str(&format!("\n│ {l}"));
        }
        text.push_str("\n╵");
    }
    Some((text, to_err))
}

/// A line about a node as a whole: `! NODE  MSG` for errors, `» NODE  MSG` otherwise.
pub fn node_line(node: &str, msg: &str, error: bool) -> String {
    if error {
        format!("{} {node}  {msg}", style("!").red().bold())
    } else {
        format!("{} {node}  {msg}", style("»").yellow())
    }
}

/// The `-i` question for one item: its diff, then `Fix ID? [Y/n/q] `.
pub fn question(node: &str, id: &str, verb: &str, diff: &str) -> String {
    let mut q = format!("{} {node}  {id}\n", style("?").cyan());
    for line in diff.lines() {
        q.push_str(&format!("│ {line}\n"));
    }
    q.push_str(&format!("{} {id}? [Y/n/q] ", capitalise(verb)));
    q
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The drift attribution in words: "changed on the node since alice's apply at …", "repo
/// changed", or both; who and when come from the node's records, so they are sanitised.
pub fn drift_words(
    applied_by: &str,
    applied_at: &str,
    node_changed: bool,
    repo_changed: bool,
) -> String {
    let since = format!(
        "since {}'s apply at {}",
        untrusted(applied_by, Lines::Escape),
        untrusted(applied_at, Lines::Escape)
    );
    match (node_changed, repo_changed) {
        (true, true) => format!("changed on the node {since}; repo changed"),
        (true, false) => format!("changed on the node {since}"),
        _ => format!("repo changed {since}"),
    }
}
