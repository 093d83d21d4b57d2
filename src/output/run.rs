//! Human output of `cinch run`: prefixed output lines and the summary table.

use serde::{Deserialize, Serialize};

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
                super::untrusted(&r.note, super::Lines::Escape).into_owned(),
            ]
        })
        .collect();
    super::table(&["node", "return code", "duration", "note"], &table)
}

/// One node's output lines as `cinch run` shows them: `NODE | line` for stdout and
/// `NODE ! line` for stderr (the `!` red in colour), names padded to `width`, in one string
/// so they are printed in one write.
pub fn prefixed_lines<'t>(
    name: &str,
    width: usize,
    stderr: bool,
    color: bool,
    lines: impl Iterator<Item = &'t str>,
) -> String {
    let marker = match (stderr, color) {
        (false, _) => "|".to_string(),
        (true, false) => "!".to_string(),
        (true, true) => console::style("!").red().bold().to_string(),
    };
    // Deliberately not passed through `untrusted`: this is the output the user asked
    // `cinch run` for, shown raw like ssh would (progress or colours of the remote command
    // stay intact). Everything else a node says is sanitised before it is printed.
    let mut buf = String::new();
    for line in lines {
        buf.push_str(&format!("{name:<width$} {marker} {line}\n"));
    }
    buf
}
