//! Reading repo TOML with every key and value's position kept, so each problem can point at
//! the exact file, line and column, and so one file can report all of its problems at once.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml_edit::{ImDocument, Item, TableLike, Value};

use crate::diag::{Diagnostic, Location, did_you_mean};

/// A parsed TOML file that can turn byte spans into locations cheaply.
pub(crate) struct TomlFile {
    pub path: PathBuf,
    doc: ImDocument<String>,
    /// Byte offset where each line starts, for binary-searching line numbers: a 1000-node
    /// file asks for thousands of locations.
    line_starts: Vec<usize>,
}

impl TomlFile {
    /// Reads and parses `path`; a syntax error points at where the parser stopped.
    pub fn read(path: &Path) -> Result<TomlFile, Diagnostic> {
        let text = crate::repo::read_text(path).map_err(|e| {
            Diagnostic::at(Location::file(path), format!("cannot read file: {e}")).as_root_cause()
        })?;
        Self::parse(path, text)
    }

    /// Parses TOML text that came from `path`.
    pub fn parse(path: &Path, text: String) -> Result<TomlFile, Diagnostic> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        match ImDocument::parse(text.clone()) {
            Ok(doc) => Ok(TomlFile {
                path: path.to_path_buf(),
                doc,
                line_starts,
            }),
            Err(e) => {
                let location = match e.span() {
                    Some(span) => Location::from_offset(path, &text, span.start),
                    None => Location::file(path),
                };
                let message = e.message().trim_end().replace('\n', "; ");
                Err(Diagnostic::at(location, format!("invalid TOML: {message}"))
                    .with_hint("fix the syntax; see https://toml.io for the format")
                    .as_root_cause())
            }
        }
    }

    /// The top-level table.
    pub fn root(&self) -> &toml_edit::Table {
        self.doc.as_table()
    }

    /// Where a span starts; the file itself when the span is unknown.
    pub fn loc(&self, span: Option<Range<usize>>) -> Location {
        let Some(span) = span else {
            return Location::file(&self.path);
        };
        let offset = span.start.min(self.doc.raw().len());
        let line_idx = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let line_start = self.line_starts[line_idx];
        let column = self
            .doc
            .raw()
            .get(line_start..offset)
            .map_or(offset - line_start, |s| s.chars().count());
        Location {
            file: self.path.clone(),
            line: line_idx + 1,
            column: column + 1,
        }
    }

    /// Where `key` of `table` is written (falling back to its value, then the table).
    pub fn key_loc(&self, table: &dyn TableLike, key: &str) -> Location {
        let span = table
            .key(key)
            .and_then(|k| k.span())
            .or_else(|| table.get(key).and_then(Item::span));
        self.loc(span)
    }

    /// Where an item's value is written.
    pub fn item_loc(&self, item: &Item) -> Location {
        self.loc(item.span())
    }
}

/// A string with the place it was written, for references checked after all files are read.
#[derive(Debug, Clone)]
pub(crate) struct Located<T> {
    pub value: T,
    pub location: Location,
}

/// Reads the attributes of one table (a node, a group, a settings section), collecting every
/// problem instead of stopping at the first.
pub(crate) struct Fields<'a> {
    pub file: &'a TomlFile,
    pub table: &'a dyn TableLike,
    /// How problems name the table, e.g. "node 'web1'".
    pub what: String,
}

impl<'a> Fields<'a> {
    /// Reports keys outside `allowed`, with a "did you mean" when one is close.
    pub fn check_keys(&self, allowed: &[&str], diags: &mut Vec<Diagnostic>) {
        for (key, _) in self.table.iter() {
            if allowed.contains(&key) {
                continue;
            }
            let hint = match did_you_mean(key, allowed.iter().copied()) {
                Some(close) => format!("did you mean `{close}`?"),
                None => format!("known keys: {}", allowed.join(", ")),
            };
            diags.push(
                Diagnostic::at(
                    self.file.key_loc(self.table, key),
                    format!("{}: unknown key `{key}`", self.what),
                )
                .with_hint(hint),
            );
        }
    }

    fn value(&self, key: &str) -> Option<&'a Item> {
        self.table.get(key)
    }

    fn wrong_type(&self, key: &str, item: &Item, expected: &str) -> Diagnostic {
        Diagnostic::at(
            self.file.item_loc(item),
            format!(
                "{}: `{key}` must be {expected}, found {}",
                self.what,
                describe(item)
            ),
        )
    }

    /// A string attribute.
    pub fn string(&self, key: &str, diags: &mut Vec<Diagnostic>) -> Option<Located<String>> {
        let item = self.value(key)?;
        match item.as_str() {
            Some(s) => Some(Located {
                value: s.to_string(),
                location: self.file.item_loc(item),
            }),
            None => {
                diags.push(self.wrong_type(key, item, "a string"));
                None
            }
        }
    }

    /// A boolean attribute.
    pub fn boolean(&self, key: &str, diags: &mut Vec<Diagnostic>) -> Option<bool> {
        let item = self.value(key)?;
        match item.as_bool() {
            Some(b) => Some(b),
            None => {
                diags.push(self.wrong_type(key, item, "true or false"));
                None
            }
        }
    }

    /// An integer attribute within `range`.
    pub fn integer(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<i64> {
        let item = self.value(key)?;
        match item.as_integer() {
            Some(i) if range.contains(&i) => Some(i),
            Some(i) => {
                diags.push(Diagnostic::at(
                    self.file.item_loc(item),
                    format!(
                        "{}: `{key}` must be between {} and {}, found {i}",
                        self.what,
                        range.start(),
                        range.end()
                    ),
                ));
                None
            }
            None => {
                diags.push(self.wrong_type(key, item, "an integer"));
                None
            }
        }
    }

    /// A list of strings, each with its own location (for reference checks).
    pub fn string_list(&self, key: &str, diags: &mut Vec<Diagnostic>) -> Vec<Located<String>> {
        let Some(item) = self.value(key) else {
            return Vec::new();
        };
        let Some(array) = item.as_array() else {
            diags.push(self.wrong_type(key, item, "a list of strings"));
            return Vec::new();
        };
        let mut out = Vec::with_capacity(array.len());
        for v in array.iter() {
            match v.as_str() {
                Some(s) => out.push(Located {
                    value: s.to_string(),
                    location: self.file.loc(v.span()),
                }),
                None => diags.push(Diagnostic::at(
                    self.file.loc(v.span()),
                    format!(
                        "{}: `{key}` must be a list of strings, found {} in it",
                        self.what,
                        v.type_name()
                    ),
                )),
            }
        }
        out
    }

    /// A table attribute (`metadata`), converted to JSON with the location of every path.
    pub fn table(
        &self,
        key: &str,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<(serde_json::Value, SpanMap)> {
        let item = self.value(key)?;
        if item.as_table_like().is_none() {
            diags.push(self.wrong_type(key, item, "a table"));
            return None;
        }
        let mut spans = SpanMap::default();
        let value = to_json(self.file, item, &mut Vec::new(), &mut spans, diags);
        Some((value, spans))
    }
}

/// Where each metadata path (keys joined by '.') was written, to point both sides of a conflict.
#[derive(Debug, Default, Clone)]
pub(crate) struct SpanMap(pub std::collections::HashMap<Vec<String>, Location>);

impl SpanMap {
    /// The location of `path` or of its closest written ancestor.
    pub fn find(&self, path: &[String]) -> Option<&Location> {
        (0..=path.len()).rev().find_map(|n| self.0.get(&path[..n]))
    }
}

/// What a TOML item is, in words for error messages.
pub(crate) fn describe(item: &Item) -> &'static str {
    match item {
        Item::Value(Value::String(_)) => "a string",
        Item::Value(Value::Integer(_)) => "an integer",
        Item::Value(Value::Float(_)) => "a float",
        Item::Value(Value::Boolean(_)) => "a boolean",
        Item::Value(Value::Datetime(_)) => "a date-time",
        Item::Value(Value::Array(_)) => "a list",
        Item::Value(Value::InlineTable(_)) | Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::None => "nothing",
    }
}

/// Converts a TOML item to JSON, recording where each path was written.
pub(crate) fn to_json(
    file: &TomlFile,
    item: &Item,
    path: &mut Vec<String>,
    spans: &mut SpanMap,
    diags: &mut Vec<Diagnostic>,
) -> serde_json::Value {
    use serde_json::Value as J;
    if let Some(span) = item.span() {
        spans.0.insert(path.clone(), file.loc(Some(span)));
    }
    match item {
        Item::None => J::Null,
        Item::Table(_) | Item::Value(Value::InlineTable(_)) => {
            let mut map = serde_json::Map::new();
            if let Some(table) = item.as_table_like() {
                for (k, v) in table.iter() {
                    path.push(k.to_string());
                    let key_span = table.key(k).and_then(|k| k.span());
                    if let (false, Some(key_span)) =
                        (spans.0.contains_key(path.as_slice()), key_span)
                    {
                        spans.0.insert(path.clone(), file.loc(Some(key_span)));
                    }
                    let value = to_json(file, v, path, spans, diags);
                    path.pop();
                    map.insert(k.to_string(), value);
                }
            }
            J::Object(map)
        }
        Item::ArrayOfTables(tables) => J::Array(
            tables
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    path.push(i.to_string());
                    let v = to_json(file, &Item::Table(t.clone()), path, spans, diags);
                    path.pop();
                    v
                })
                .collect(),
        ),
        Item::Value(v) => value_to_json(file, v, path, spans, diags),
    }
}

fn value_to_json(
    file: &TomlFile,
    v: &Value,
    path: &mut Vec<String>,
    spans: &mut SpanMap,
    diags: &mut Vec<Diagnostic>,
) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::String(s) => J::String(s.value().clone()),
        Value::Integer(i) => J::from(*i.value()),
        Value::Float(f) => match serde_json::Number::from_f64(*f.value()) {
            Some(n) => J::Number(n),
            None => {
                diags.push(Diagnostic::at(
                    file.loc(v.span()),
                    format!(
                        "metadata `{}` is {}, which cinch cannot store",
                        path.join("."),
                        f.value()
                    ),
                ));
                J::Null
            }
        },
        Value::Boolean(b) => J::Bool(*b.value()),
        Value::Datetime(d) => J::String(d.value().to_string()),
        Value::Array(a) => J::Array(
            a.iter()
                .enumerate()
                .map(|(i, e)| {
                    path.push(i.to_string());
                    if let Some(span) = e.span() {
                        spans.0.insert(path.clone(), file.loc(Some(span)));
                    }
                    let j = value_to_json(file, e, path, spans, diags);
                    path.pop();
                    j
                })
                .collect(),
        ),
        Value::InlineTable(t) => {
            let mut map = serde_json::Map::new();
            for (k, e) in t.iter() {
                path.push(k.to_string());
                let span = e.span().or_else(|| t.key(k).and_then(|k| k.span()));
                if let Some(span) = span {
                    spans.0.insert(path.clone(), file.loc(Some(span)));
                }
                let j = value_to_json(file, e, path, spans, diags);
                path.pop();
                map.insert(k.to_string(), j);
            }
            J::Object(map)
        }
    }
}

/// Checks a node, group or bundle name: it ends up in lock paths and command lines, so only
/// a safe character set is allowed (as in BundleWrap).
pub(crate) fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a name must not be empty".into());
    }
    if name.starts_with('.') {
        return Err(format!("'{name}' must not start with '.'"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+')))
    {
        return Err(format!(
            "'{name}' contains '{bad}'; names may use letters, digits, '-', '_', '.' and '+'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> TomlFile {
        TomlFile::parse(Path::new("t.toml"), text.to_string()).unwrap()
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let err = TomlFile::parse(Path::new("t.toml"), "a = 1\nb = \n".into())
            .err()
            .unwrap();
        let loc = err.location.unwrap();
        assert_eq!(loc.line, 2);
        assert!(loc.column > 1);
    }

    #[test]
    fn locations_use_line_index() {
        let f = parse("[x]\na = 1\n  bb = 'q'\n");
        let t = f.root().get("x").unwrap().as_table_like().unwrap();
        let loc = f.key_loc(t, "bb");
        assert_eq!((loc.line, loc.column), (3, 3));
    }

    #[test]
    fn unknown_key_suggests_close_one() {
        let f = parse("[x]\nhostnme = 'a'\n");
        let t = f.root().get("x").unwrap().as_table_like().unwrap();
        let fields = Fields {
            file: &f,
            table: t,
            what: "node 'x'".into(),
        };
        let mut d = Vec::new();
        fields.check_keys(&["hostname", "port"], &mut d);
        assert_eq!(d.len(), 1);
        assert!(d[0].message.contains("unknown key `hostnme`"));
        assert_eq!(d[0].hint.as_deref(), Some("did you mean `hostname`?"));
        assert_eq!(d[0].location.as_ref().unwrap().line, 2);
    }

    #[test]
    fn metadata_converts_with_spans() {
        let f = parse("[m]\na = { b = [1, 'x'] }\n[m.c]\nd = 1.5\n");
        let t = f.root().get("m").unwrap().as_table_like().unwrap();
        let fields = Fields {
            file: &f,
            table: f.root(),
            what: "x".into(),
        };
        let _ = t;
        let mut d = Vec::new();
        let (v, spans) = fields.table("m", &mut d).unwrap();
        assert!(d.is_empty());
        assert_eq!(
            v,
            serde_json::json!({"a": {"b": [1, "x"]}, "c": {"d": 1.5}})
        );
        let p = |s: &str| s.split('.').map(String::from).collect::<Vec<_>>();
        assert_eq!(spans.find(&p("c.d")).unwrap().line, 4);
        assert_eq!(spans.find(&p("a.b.1")).unwrap().line, 2);
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("web-1.example_2+x").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(".hidden").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name("a/b").is_err());
    }
}
