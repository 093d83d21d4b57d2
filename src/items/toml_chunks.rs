//! Where a big items.toml may be cut into pieces that parse on their own: before table
//! headers at the top level. A 6.8 MB file of 20,000 files took a third of a steady apply's
//! controller time to parse in one go, most of it the kernel handing out fresh pages for the
//! 68 MB its document took; pieces parse on all cores and each piece's memory is reused by the
//! next one.
//!
//! The cuts only have to be good, not exact: the caller parses every piece and falls back to
//! the whole file when any piece fails, and a cut inside a string or an array always leaves
//! its piece unterminated (the opener before the cut, the closer after it), so a wrong cut
//! costs time, never a different result.

/// Byte offsets where pieces of about `target` bytes start (the first is always 0): each
/// other one is the start of a line that opens a table header (`[` as the line's first
/// character after blanks) outside every string, comment, array and inline table.
pub(crate) fn cut_points(text: &str, target: usize) -> Vec<usize> {
    let b = text.as_bytes();
    let mut cuts = vec![0usize];
    let mut depth = 0usize;
    let mut i = 0;
    let mut line_start = Some(0);
    while i < b.len() {
        let c = b[i];
        if let Some(start) = line_start {
            match c {
                b' ' | b'\t' => {
                    i += 1;
                    continue;
                }
                b'[' if depth == 0 && start >= cuts[cuts.len() - 1].saturating_add(target) => {
                    cuts.push(start);
                }
                _ => {}
            }
            line_start = None;
        }
        match c {
            b'\n' => line_start = Some(i + 1),
            b'#' => i = line_end(b, i),
            b'"' if b[i..].starts_with(b"\"\"\"") => i = multi_line_end(b, i + 3, b'"'),
            b'\'' if b[i..].starts_with(b"'''") => i = multi_line_end(b, i + 3, b'\''),
            b'"' | b'\'' => i = string_end(b, i + 1, c),
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    cuts
}

/// The index of the newline ending the line at `i` (the last byte when there is none).
fn line_end(b: &[u8], i: usize) -> usize {
    b[i..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |p| i + p)
        - 1
}

/// The index of the closing quote of a one-line string whose text starts at `i` (or the byte
/// before the newline that leaves it unterminated).
fn string_end(b: &[u8], mut i: usize, quote: u8) -> usize {
    while i < b.len() {
        match b[i] {
            b'\\' if quote == b'"' => i += 1,
            b'\n' => return i - 1,
            c if c == quote => return i,
            _ => {}
        }
        i += 1;
    }
    b.len()
}

/// The index of the last quote closing a multi-line string whose text starts at `i` (a
/// closing run may be up to five quotes: the text may end with two).
fn multi_line_end(b: &[u8], mut i: usize, quote: u8) -> usize {
    while i < b.len() {
        match b[i] {
            b'\\' if quote == b'"' => i += 1,
            c if c == quote && b[i..].starts_with(&[quote; 3]) => {
                let run = b[i..].iter().take_while(|&&c| c == quote).count().min(5);
                return i + run - 1;
            }
            _ => {}
        }
        i += 1;
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &str) -> Vec<&str> {
        let cuts = cut_points(text, 1);
        cuts.iter()
            .zip(cuts.iter().skip(1).chain([&text.len()]))
            .map(|(&a, &b)| &text[a..b])
            .collect()
    }

    #[test]
    fn cuts_before_every_top_level_header_line() {
        let text = "# top\n[files.\"/a\"]\nmode = \"0644\"\n  [files.\"/b\"]\n[[x]]\n";
        assert_eq!(
            pieces(text),
            [
                "# top\n",
                "[files.\"/a\"]\nmode = \"0644\"\n",
                "  [files.\"/b\"]\n",
                "[[x]]\n"
            ]
        );
    }

    #[test]
    fn lines_starting_with_a_bracket_inside_strings_and_arrays_are_not_cuts() {
        let text = concat!(
            "[files.\"/a\"]\n",
            "content = \"\"\"\n[not a header]\n\\\"\"\"\n[still not]\n\"\"\"\n",
            "lit = '''\n[no]\n'''''\n",
            "list = [\n[1, 2],\n  [3],\n]\n",
            "t = { a = \"]\", b = '[' }\n",
            "s = \"\\\" [\" # ] [ \"\n",
            "[files.\"/b\"]\n",
        );
        let p = pieces(text);
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(p[1].starts_with("[files.\"/b\"]"), "{p:#?}");
    }

    #[test]
    fn pieces_are_at_least_the_target_size() {
        let text = "[a.\"1\"]\nx = 1\n[a.\"2\"]\nx = 2\n[a.\"3\"]\nx = 3\n";
        assert_eq!(cut_points(text, 1), [0, 14, 28]);
        assert_eq!(cut_points(text, 15), [0, 28]);
        assert_eq!(cut_points(text, 1000), [0]);
    }

    #[test]
    fn unterminated_strings_end_the_scan_without_panicking() {
        for text in ["a = \"", "a = '''", "a = \"\"\"x\\", "# c", "[", "'"] {
            assert_eq!(cut_points(text, 1), [0], "{text}");
        }
    }
}
