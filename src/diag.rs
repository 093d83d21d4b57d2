//! Diagnostics: user-facing problems that point at a file, line and column with a hint.

use std::fmt;
use std::path::{Path, PathBuf};

/// A place in a repo file, so every error can say where the user must look.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based; 0 when unknown.
    pub line: usize,
    /// 1-based; 0 when unknown.
    pub column: usize,
}

impl Location {
    /// A location at the start of a file, for problems about the file as a whole.
    pub fn file(path: &Path) -> Self {
        Location {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
        }
    }

    /// Turns a byte offset into `text` into a 1-based line and column.
    pub fn from_offset(path: &Path, text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
        Location {
            file: path.to_path_buf(),
            line,
            column,
        }
    }
}

/// Where each line of one text starts, so a file with 100,000 items maps every key to its
/// line and column in O(log n) instead of rescanning the text from the start each time.
#[derive(Debug, Clone)]
pub struct LineIndex {
    starts: Vec<usize>,
    len: usize,
}

impl LineIndex {
    /// Indexes the line starts of `text` once.
    pub fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex {
            starts,
            len: text.len(),
        }
    }

    /// The same 1-based line and column as [`Location::from_offset`] gives for this text.
    pub fn location(&self, path: &Path, offset: usize) -> Location {
        let offset = offset.min(self.len);
        // Lines starting at or before the offset; the first always does.
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let column = offset - self.starts[line - 1] + 1;
        Location {
            file: path.to_path_buf(),
            line,
            column,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Shown relative to the current directory when inside it, as compilers do, so
        // `cinch -r myrepo test` points at `myrepo/bundles/...`.
        let cwd = std::env::current_dir().ok();
        let shown = cwd
            .as_deref()
            .and_then(|d| self.file.strip_prefix(d).ok())
            .filter(|rel| !rel.as_os_str().is_empty())
            .unwrap_or(&self.file);
        write!(f, "{}", shown.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
            if self.column > 0 {
                write!(f, ":{}", self.column)?;
            }
        }
        Ok(())
    }
}

/// One problem found in a repo, with where it is and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub location: Option<Location>,
    pub message: String,
    pub hint: Option<String>,
    /// A file that could not be read or parsed: shown before everything else, since the
    /// problems found elsewhere may only be its knock-on effects.
    #[serde(skip)]
    pub root_cause: bool,
}

impl Diagnostic {
    /// A problem with no particular place in a file.
    pub fn new(message: impl Into<String>) -> Self {
        Diagnostic {
            location: None,
            message: message.into(),
            hint: None,
            root_cause: false,
        }
    }

    /// A problem at a known place.
    pub fn at(location: Location, message: impl Into<String>) -> Self {
        Diagnostic {
            location: Some(location),
            message: message.into(),
            hint: None,
            root_cause: false,
        }
    }

    /// Marks a file that cannot be read or parsed, so it is reported first.
    pub fn as_root_cause(mut self) -> Self {
        self.root_cause = true;
        self
    }

    /// Adds what the user should do.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.location {
            write!(f, "{loc}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Puts problems in the order users fix them: files that do not read or parse first (the rest
/// may be their knock-on effects), then by file, and within a file by line and column. Problems
/// without a place come last; the sort is stable, so equal places keep their order.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by_cached_key(order_key);
}

/// The key [`sort`] orders by, for lists that wrap diagnostics.
pub fn order_key(d: &Diagnostic) -> (bool, bool, Option<(PathBuf, usize, usize)>) {
    (
        !d.root_cause,
        d.location.is_none(),
        d.location
            .as_ref()
            .map(|l| (l.file.clone(), l.line, l.column)),
    )
}

/// The candidate closest to `word`, for "did you mean" hints.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Removes repeats of the same problem (one bundle's mistake found on each of its nodes) and
/// orders the rest as [`sort`] does, for commands that stop on repo problems.
pub fn dedup_sorted(diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<Diagnostic> = diags
        .into_iter()
        .filter(|d| seen.insert((d.location.clone(), d.message.clone())))
        .collect();
    sort(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_agrees_with_from_offset_at_every_offset() {
        let text = "a = 1\n\n[files.\"/x\"]\nmode = \"0644\"\nno newline at end";
        let index = LineIndex::new(text);
        let path = Path::new("items.toml");
        for offset in 0..=text.len() + 3 {
            assert_eq!(
                index.location(path, offset),
                Location::from_offset(path, text, offset),
                "offset {offset}"
            );
        }
    }

    #[test]
    fn locations_inside_the_current_directory_are_shown_relative() {
        let cwd = std::env::current_dir().expect("cwd");
        let inside = Location {
            file: cwd.join("bundles/b/items.toml"),
            line: 3,
            column: 7,
        };
        assert_eq!(inside.to_string(), "bundles/b/items.toml:3:7");
        let outside = Location {
            file: "/elsewhere/nodes.toml".into(),
            line: 2,
            column: 0,
        };
        assert_eq!(outside.to_string(), "/elsewhere/nodes.toml:2");
    }
}
