//! `cinch report FILE…`: the summary of several `--json` runs (shards of one fleet) as one.
//!
//! The summary tables of apply, verify and run are rendered by `output::apply` and
//! `output::run` from plain rows, both for the commands themselves and for `report` from the
//! rows their JSON summaries carry, so a
//! run split over N shards and reported together prints the table (and gives the exit code)
//! the unsplit run would have.

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::settings::Settings;

pub use crate::output::apply::{ApplyRow, apply_table, fmt_duration};
pub use crate::output::run::{RunRow, run_table};

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
