//! What changed, in words a user reads: unified coloured diffs for text, sizes and hashes for
//! binary content, key-by-key old → new for everything else.

use console::style;

use crate::output::{Lines, untrusted};
use sha2::{Digest, Sha256};
use similar::{ChangeTag, TextDiff};

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Content considered text: valid UTF-8 without NUL bytes.
pub fn is_text(bytes: &[u8]) -> bool {
    !bytes.contains(&0) && std::str::from_utf8(bytes).is_ok()
}

/// A unified diff of `old` → `new` (both text), lines prefixed and coloured when the console
/// allows colour (`console::style` honours the global colour switch).
pub fn unified(old: &str, new: &str, path: &str) -> String {
    let diff = TextDiff::from_lines(old, new);
    let mut out = String::new();
    out.push_str(&format!("{}\n", style(format!("--- {path}")).red()));
    out.push_str(&format!("{}\n", style(format!("+++ {path}")).green()));
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        out.push_str(&format!("{}\n", style(hunk.header()).cyan()));
        for change in hunk.iter_changes() {
            let mut line = change.value().to_string();
            let missing_newline = !line.ends_with('\n');
            if !missing_newline {
                line.pop();
            }
            // The old side is the node's file: it must not drive the operator's terminal.
            let line = untrusted(&line, Lines::Keep);
            let text = match change.tag() {
                ChangeTag::Delete => style(format!("-{line}")).red().to_string(),
                ChangeTag::Insert => style(format!("+{line}")).green().to_string(),
                ChangeTag::Equal => format!(" {line}"),
            };
            out.push_str(&text);
            out.push('\n');
            if missing_newline {
                out.push_str("\\ No newline at end of file\n");
            }
        }
    }
    out
}

/// Describes a content change when a line diff is impossible or unwanted.
pub fn sizes_and_hashes(old: Option<(u64, &str)>, new: Option<(u64, &str)>) -> String {
    let side = |s: Option<(u64, &str)>| match s {
        Some((size, hash)) => format!(
            "{size} bytes, sha256 {}",
            untrusted(&hash.chars().take(16).collect::<String>(), Lines::Escape)
        ),
        None => "absent".to_string(),
    };
    format!(
        "content: {} → {}\n",
        style(side(old)).red(),
        style(side(new)).green()
    )
}

/// One `key: old → new` line (values may come from the node, so they are sanitised).
pub fn key_line(key: &str, old: &str, new: &str) -> String {
    format!(
        "{key}: {} → {}\n",
        style(untrusted(old, Lines::Escape)).red(),
        style(untrusted(new, Lines::Escape)).green()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_marks_removed_and_added_lines() {
        let d = unified("a\nb\nc\n", "a\nB\nc\n", "/x");
        assert!(d.contains("--- /x"), "{d}");
        assert!(d.contains("-b\n"), "{d}");
        assert!(d.contains("+B\n"), "{d}");
        assert!(d.contains(" a\n"), "{d}");
    }

    #[test]
    fn node_file_content_with_escape_sequences_is_escaped_in_diffs() {
        let d = unified("ok\n\u{1b}[2J\u{1b}[Hforged\r\n", "ok\n", "/x");
        assert!(!d.contains('\u{1b}') && !d.contains('\r'), "{d:?}");
        assert!(d.contains("-\\e[2J\\e[Hforged\\r"), "{d:?}");
        let k = key_line("owner", "root\u{1b}]0;pwned\u{7}\nmode: x", "root");
        assert!(!k.trim_end().contains(['\u{1b}', '\u{7}', '\n']), "{k:?}");
    }

    #[test]
    fn text_detection() {
        assert!(is_text(b"hello\n"));
        assert!(!is_text(b"\x00\x01"));
        assert!(!is_text(b"\xff\xfe"));
    }
}
