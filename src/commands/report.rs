//! `cinch report FILE…`: the summary of several `--json` runs (shards of one fleet) as one.
//!
//! The summary tables of apply, verify and run are rendered here from plain rows, both by
//! the commands themselves and by `report` from the rows their JSON summaries carry, so a
//! run split over N shards and reported together prints the table (and gives the exit code)
//! the unsplit run would have.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::settings::Settings;

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

/// One node's line of the run summary.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunRow {
    /// The node's name.
    pub node: String,
    /// The command's exit status, when it finished.
    pub return_code: Option<i32>,
    /// Seconds the node took.
    pub duration: f64,
    /// What happened besides an exit status (unreachable, skipped, not started).
    pub note: String,
    /// Whether the node counts as a success.
    pub ok: bool,
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
    crate::output::table(&header, &table)
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

/// The run summary table.
pub fn run_table(rows: &[RunRow]) -> String {
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.node.clone(),
                r.return_code.map_or("-".into(), |c| c.to_string()),
                format!("{:.2}s", r.duration),
                // Unreachable/failed notes may quote the node's or ssh's stderr.
                crate::output::untrusted(&r.note, crate::output::Lines::Escape).into_owned(),
            ]
        })
        .collect();
    crate::output::table(&["node", "return code", "duration", "note"], &table)
}

/// `cinch report`: the files to read.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    /// `--json` outputs of apply, verify or run (one per shard).
    pub files: Vec<PathBuf>,
}

/// One file's summary line, as the commands write it with `--json`.
#[derive(Debug, Deserialize)]
struct Summary {
    command: String,
    #[serde(default)]
    rows: Vec<serde_json::Value>,
    #[serde(default)]
    stats: bool,
    #[serde(default)]
    interrupted: bool,
    exit_code: Option<u8>,
}

/// Runs `cinch report`.
pub fn cmd_report(ctx: &Settings, args: &ReportSettings) -> Result<u8> {
    let mut command: Option<String> = None;
    let mut stats = false;
    let mut code = 0u8;
    let mut interrupted = false;
    let mut apply_rows = Vec::new();
    let mut run_rows = Vec::new();
    for file in &args.files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Error::Usage(format!("{}: cannot read it: {e}", file.display())))?;
        let mut found = None;
        for (n, line) in text.lines().enumerate() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v.get("event").and_then(|e| e.as_str()) != Some("summary") {
                continue;
            }
            let s: Summary = serde_json::from_value(v).map_err(|e| {
                Error::Usage(format!(
                    "{}:{}: a summary line cinch report cannot read ({e}); was it written by \
                     `cinch --json apply|verify|run` of this version?",
                    file.display(),
                    n + 1
                ))
            })?;
            found = Some((n + 1, s));
        }
        let Some((line, s)) = found else {
            return Err(Error::Usage(format!(
                "{}: no summary line; give the complete output of `cinch --json apply`, \
                 `verify` or `run` (a run that was killed writes none)",
                file.display()
            )));
        };
        match &command {
            None => command = Some(s.command.clone()),
            Some(c) if *c != s.command => {
                return Err(Error::Usage(format!(
                    "{}:{line}: a `{}` summary, but earlier files are `{c}`; report the \
                     shards of one command together",
                    file.display(),
                    s.command
                )));
            }
            Some(_) => {}
        }
        stats |= s.stats;
        interrupted |= s.interrupted;
        code = merge_code(code, s.exit_code.unwrap_or(1));
        for row in s.rows {
            let bad = |e: serde_json::Error| {
                Error::Usage(format!(
                    "{}:{line}: a node row cinch report cannot read: {e}",
                    file.display()
                ))
            };
            if s.command == "run" {
                run_rows.push(serde_json::from_value::<RunRow>(row).map_err(bad)?);
            } else {
                apply_rows.push(serde_json::from_value::<ApplyRow>(row).map_err(bad)?);
            }
        }
    }
    // A single run lists its nodes in name order; so does the report.
    apply_rows.sort_by(|a, b| a.node.cmp(&b.node));
    run_rows.sort_by(|a, b| a.node.cmp(&b.node));
    for pair in apply_rows.windows(2) {
        if pair[0].node == pair[1].node {
            return Err(duplicate(&pair[0].node));
        }
    }
    for pair in run_rows.windows(2) {
        if pair[0].node == pair[1].node {
            return Err(duplicate(&pair[0].node));
        }
    }
    let command = command.unwrap_or_default();
    if ctx.console.json() {
        let rows = if command == "run" {
            serde_json::to_value(&run_rows)
        } else {
            serde_json::to_value(&apply_rows)
        }
        .unwrap_or_default();
        ctx.console.json_line(&serde_json::json!({
            "event": "report", "command": command, "rows": rows,
            "interrupted": interrupted, "exit_code": code,
        }));
        return Ok(code);
    }
    if command == "run" {
        ctx.console.out(&run_table(&run_rows));
    } else {
        ctx.console
            .out(&apply_table(&apply_rows, command == "verify", stats));
    }
    if interrupted {
        ctx.console
            .err("interrupted: at least one shard was stopped before all its nodes were done");
    }
    Ok(code)
}

fn duplicate(node: &str) -> Error {
    Error::Usage(format!(
        "node {node} is in more than one file: report each shard's output once (of the same \
         run, with the same --shard N)"
    ))
}

/// The exit code of the whole from two parts': interrupted (130) wins over failed (1) over 0.
fn merge_code(a: u8, b: u8) -> u8 {
    let rank = |c: u8| match c {
        0 => 0,
        130 => 3,
        1 => 1,
        _ => 2,
    };
    if rank(b) > rank(a) { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_merge_like_one_run() {
        assert_eq!(merge_code(0, 0), 0);
        assert_eq!(merge_code(0, 1), 1);
        assert_eq!(merge_code(1, 0), 1);
        assert_eq!(merge_code(1, 130), 130);
        assert_eq!(merge_code(2, 1), 2);
    }
}
