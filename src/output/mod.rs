//! Human output: one module per command (`apply`, `run`, `lock`, `test`) rendering plain
//! values into the lines a person reads, and the shared pieces: tables, and making
//! node-controlled text safe to print. Foundation layer: it sees no command, event or
//! transport type, so every command and the bus subscribers in `render/` can hand it what to
//! show.

pub mod apply;
pub mod lock;
pub mod run;
pub mod test;

use std::borrow::Cow;
use std::fmt::Write as _;

use comfy_table::{ContentArrangement, Table, presets};

/// Whether [`untrusted`] keeps line breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// Multi-line text (stderr, file content in diffs): newlines and tabs stay.
    Keep,
    /// A single field (a lock's user or comment): newlines are escaped too, so it cannot
    /// forge a line of cinch's output.
    Escape,
}

/// The one sanitiser for text a node controls (lock files, stderr, item state) before it is
/// shown to a person: control characters (escape sequences, carriage returns, backspaces) and
/// bidirectional overrides are printed escaped (`\e`, `\r`, `\u{202e}`), so a node can never
/// clear the screen, recolour or forge lines on the operator's terminal. JSON output needs
/// none of this (serde escapes it).
pub fn untrusted(text: &str, lines: Lines) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        let kept = lines == Lines::Keep && (c == '\n' || c == '\t');
        !kept && (c.is_control() || is_bidi_control(c))
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !unsafe_char(c) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{1b}' => out.push_str("\\e"),
            c if (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

/// Unicode formatting characters that reorder what follows them on screen.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Renders rows as an aligned table with a header (no borders, like `bw`'s summaries).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    for r in rows {
        t.add_row(r.iter().map(String::as_str));
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_cannot_clear_the_screen_or_forge_lines() {
        let evil = "bob\u{1b}[2J\u{1b}[H\rok\nfixed: all\u{202e}\u{7f}\u{9b}";
        let one = untrusted(evil, Lines::Escape);
        assert!(!one.chars().any(|c| c.is_control()), "{one:?}");
        assert_eq!(one, "bob\\e[2J\\e[H\\rok\\nfixed: all\\u{202e}\\x7f\\x9b");
        let multi = untrusted("a\tb\nc\u{1b}[31m", Lines::Keep);
        assert_eq!(multi, "a\tb\nc\\e[31m");
        assert!(matches!(
            untrusted("plain text", Lines::Escape),
            Cow::Borrowed(_)
        ));
    }
}
