//! Human output of `cinch test`: problem lines and the closing summary.

use crate::diag::Diagnostic;

/// A hook lint finding: shown, never fatal.
pub fn warning(diag: &Diagnostic) -> String {
    format!("warning: {diag}")
}

/// A problem as `error: FILE:LINE:COL: MESSAGE (node N | nodes N and K more)` plus its hint,
/// naming the nodes it was found on without listing a whole fleet.
pub fn problem(diag: &Diagnostic, nodes: &[String]) -> String {
    let mut line = String::from("error: ");
    if let Some(loc) = &diag.location {
        line.push_str(&format!("{loc}: "));
    }
    line.push_str(&diag.message);
    match nodes {
        [] => {}
        [one] => line.push_str(&format!(" (node {one})")),
        [first, rest @ ..] => line.push_str(&format!(" (nodes {first} and {} more)", rest.len())),
    }
    if let Some(hint) = &diag.hint {
        line.push_str(&format!("\n  hint: {hint}"));
    }
    line
}

/// The closing line: `N nodes OK (M items)` when nothing was found (shown on stdout), else
/// how many problems and where (shown on stderr).
pub fn summary(nodes: usize, bad_nodes: usize, items: usize, problems: usize, why: &str) -> String {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    if problems == 0 {
        format!("{} OK ({})", plural(nodes, "node"), plural(items, "item"))
    } else if !why.is_empty() {
        format!("{} found: {why}", plural(problems, "problem"))
    } else if bad_nodes == 0 {
        format!(
            "{} found (none on a node; {} checked)",
            plural(problems, "problem"),
            plural(nodes, "node")
        )
    } else {
        format!(
            "{} found on {} of {}",
            plural(problems, "problem"),
            bad_nodes,
            plural(nodes, "node")
        )
    }
}
