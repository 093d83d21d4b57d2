//! The registry of secret values produced during this run, and the one masking function
//! every output channel applies: a registered value is shown as `[secret:ID]`.

use std::borrow::Cow;
use std::sync::RwLock;

use aho_corasick::{AhoCorasick, MatchKind};
use serde_json::Value;

/// Values shorter than this are not masked: a one- or two-letter "secret" would blank out
/// ordinary words everywhere (docs/secrets.md says so).
pub const MIN_MASKED_LEN: usize = 4;
/// Lines of a multi-line secret (a decrypted key file) are masked on their own from this
/// length, since terminal output is line by line.
const MIN_MASKED_LINE: usize = 8;

/// Every registered secret, and one automaton finding them all in a single pass.
#[derive(Default)]
struct Registry {
    /// (value, shown as).
    entries: Vec<(String, String)>,
    finder: Option<AhoCorasick>,
}

static REGISTRY: RwLock<Registry> = RwLock::new(Registry {
    entries: Vec::new(),
    finder: None,
});

/// Remembers `value` as a secret called `id`, so every later output masks it.
pub fn register(value: &str, id: &str) {
    let mut entries = vec![value.to_string()];
    if value.contains('\n') {
        entries.extend(
            value
                .lines()
                .map(str::trim)
                .filter(|l| l.len() >= MIN_MASKED_LINE)
                .map(str::to_string),
        );
    }
    // The id comes from the repo: escaped, so it cannot forge output where it is shown.
    let id = crate::output::untrusted(id, crate::output::Lines::Escape);
    let shown = format!("[secret:{id}]");
    let mut reg = REGISTRY.write().unwrap_or_else(|p| p.into_inner());
    let before = reg.entries.len();
    for v in entries {
        if v.len() < MIN_MASKED_LEN || reg.entries.iter().any(|(known, _)| *known == v) {
            continue;
        }
        reg.entries.push((v, shown.clone()));
    }
    if reg.entries.len() != before {
        // Leftmost-longest: a value containing another is masked whole.
        reg.finder = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(reg.entries.iter().map(|(v, _)| v))
            .ok();
    }
}

/// `text` with every registered secret replaced by `[secret:ID]`.
pub fn mask(text: &str) -> Cow<'_, str> {
    let reg = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
    let Some(finder) = &reg.finder else {
        return Cow::Borrowed(text);
    };
    if !finder.is_match(text) {
        return Cow::Borrowed(text);
    }
    let shown: Vec<&str> = reg.entries.iter().map(|(_, s)| s.as_str()).collect();
    Cow::Owned(finder.replace_all(text, &shown))
}

/// Like [`mask`] for raw bytes (command output that may not be UTF-8).
pub fn mask_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    let reg = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
    let Some(finder) = &reg.finder else {
        return Cow::Borrowed(bytes);
    };
    if !finder.is_match(bytes) {
        return Cow::Borrowed(bytes);
    }
    let shown: Vec<&[u8]> = reg.entries.iter().map(|(_, s)| s.as_bytes()).collect();
    Cow::Owned(finder.replace_all_bytes(bytes, &shown))
}

/// Every string (and object key) in `value` masked.
pub fn mask_json(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(mask(s).into_owned()),
        Value::Array(xs) => Value::Array(xs.iter().map(mask_json).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (mask(k).into_owned(), mask_json(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Whether `bytes` contain a registered secret (makes an item sensitive).
pub fn contains_secret(bytes: &[u8]) -> bool {
    let reg = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
    reg.finder.as_ref().is_some_and(|f| f.is_match(bytes))
}

/// Whether any string in `value` contains a registered secret.
pub fn json_contains_secret(value: &Value) -> bool {
    match value {
        Value::String(s) => contains_secret(s.as_bytes()),
        Value::Array(xs) => xs.iter().any(json_contains_secret),
        Value::Object(m) => m.values().any(json_contains_secret),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_values_are_masked_in_text_bytes_and_json() {
        register("Zq8sMaskTestValue1", "db_root");
        register("abc", "too-short");
        let line = "password=Zq8sMaskTestValue1 and abc";
        assert_eq!(mask(line), "password=[secret:db_root] and abc");
        assert_eq!(
            mask_bytes(b"\xffZq8sMaskTestValue1\n").as_ref(),
            b"\xff[secret:db_root]\n"
        );
        let v = serde_json::json!({"a": ["x Zq8sMaskTestValue1"], "n": 1});
        assert_eq!(
            mask_json(&v),
            serde_json::json!({"a": ["x [secret:db_root]"], "n": 1})
        );
        assert!(contains_secret(b"..Zq8sMaskTestValue1.."));
        assert!(!contains_secret(b"nothing here"));
    }

    #[test]
    fn a_secret_id_cannot_forge_output_where_it_replaces_the_value() {
        register("MaskIdTestValue77", "x\n\u{1b}[2Jfixed");
        assert_eq!(mask("MaskIdTestValue77"), "[secret:x\\n\\e[2Jfixed]");
    }

    #[test]
    fn lines_of_a_multi_line_secret_are_masked_one_by_one() {
        register(
            "-----BEGIN MASKTEST-----\nMIIEmasktestline2\n-----END-----\n",
            "tls",
        );
        assert_eq!(mask("> MIIEmasktestline2"), "> [secret:tls]");
    }
}
