//! Reading one item's attributes as written: the raw item (table, name, attributes with their
//! locations) and the typed getters every item type's parser uses, which report wrong types,
//! unknown attributes and bad values as diagnostics. Depends on no item type or registry, so
//! the type files and the registry can both build on it.

use foldhash::HashMap;

use serde_json::Value;

use crate::diag::{Diagnostic, Location};
use crate::items::COMMON_ATTRS;

/// One attribute of an item type, defined once: its name (parsing, validation, the
/// hook/JSON view) and a one-line meaning (hints; docs/items.md documents each, tested).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attr {
    /// The key in items.toml / items.rhai.
    pub name: &'static str,
    /// What it means, in a few words, for "did you mean" hints.
    pub doc: &'static str,
}

/// One attribute as written, before its type is checked.
#[derive(Debug, Clone)]
pub(crate) struct RawAttr {
    pub name: String,
    /// Where the attribute name is (for unknown attributes).
    pub key_loc: Location,
    /// Where the value is (for wrong types and bad values).
    pub value_loc: Location,
    pub value: Value,
}

/// One item as written: its table (plural type), name and attributes.
#[derive(Debug, Clone)]
pub(crate) struct RawItem {
    /// The singular type (`file`), already checked against the registry.
    pub type_name: &'static str,
    pub name: String,
    pub loc: Location,
    pub attrs: Vec<RawAttr>,
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a float",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

/// Typed access to one item's attributes; every mismatch becomes a diagnostic.
pub(crate) struct Reader<'a> {
    /// The type's attribute definitions: the only type-specific keys a parser may read.
    declared: &'static [Attr],
    pub(crate) id: String,
    attrs: HashMap<&'a str, &'a RawAttr>,
    diags: &'a mut Vec<Diagnostic>,
}

impl<'a> Reader<'a> {
    /// A reader over one item's resolved attributes, reporting into `diags`.
    pub(crate) fn new(
        declared: &'static [Attr],
        id: String,
        attrs: &'a [RawAttr],
        diags: &'a mut Vec<Diagnostic>,
    ) -> Self {
        let attrs = attrs.iter().map(|a| (a.name.as_str(), a)).collect();
        Reader {
            declared,
            id,
            attrs,
            diags,
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&'a RawAttr> {
        // A parser reading a key its type does not declare would never see a value (the key
        // is rejected as unknown first): a programming error, caught by every parse test.
        debug_assert!(
            COMMON_ATTRS.contains(&name) || self.declared.iter().any(|a| a.name == name),
            "{}: the parser reads undeclared attribute `{name}`",
            self.id
        );
        self.attrs.get(name).copied().filter(|a| !a.value.is_null())
    }

    pub(crate) fn error(&mut self, loc: &Location, msg: String) {
        self.diags.push(Diagnostic::at(loc.clone(), msg));
    }

    pub(crate) fn hinted(&mut self, loc: &Location, msg: String, hint: impl Into<String>) {
        self.diags
            .push(Diagnostic::at(loc.clone(), msg).with_hint(hint));
    }

    pub(crate) fn wrong(&mut self, a: &RawAttr, expected: &str) {
        let msg = format!(
            "`{}` of {} must be {expected}, not {}",
            a.name,
            self.id,
            describe(&a.value)
        );
        self.error(&a.value_loc, msg);
    }

    pub(crate) fn string(&mut self, name: &str) -> Option<String> {
        let a = self.get(name)?;
        match &a.value {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.wrong(a, "a string");
                None
            }
        }
    }

    pub(crate) fn bool(&mut self, name: &str) -> Option<bool> {
        let a = self.get(name)?;
        match a.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.wrong(a, "true or false");
                None
            }
        }
    }

    pub(crate) fn u32(&mut self, name: &str) -> Option<u32> {
        let a = self.get(name)?;
        match a.value.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                self.wrong(a, "a non-negative integer");
                None
            }
        }
    }

    pub(crate) fn strings(&mut self, name: &str) -> Option<Vec<String>> {
        let a = self.get(name)?;
        let list = match &a.value {
            Value::Array(xs) => xs
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>(),
            _ => None,
        };
        if list.is_none() {
            self.wrong(a, "a list of strings");
        }
        list
    }

    /// A user or group as chown, useradd and groupadd take it: a name, or a numeric id in one
    /// normal form (`+32001` and `32001` both become `32001`, which is what the probe reports,
    /// so a fixed owner is not seen as still differing). A leading `-` would be read as an
    /// option on the node, and `:` splits chown's owner from its group, so both are refused.
    pub(crate) fn account(&mut self, name: &str, kind: &str) -> Option<String> {
        let a = self.get(name)?;
        let Value::String(s) = &a.value else {
            // A user's `gid` has always taken a bare number; `owner`/`group` take strings.
            if name == "gid" {
                if let Some(n) = a.value.as_u64().filter(|n| u32::try_from(*n).is_ok()) {
                    return Some(n.to_string());
                }
                self.wrong(a, "a group name or number");
            } else {
                self.wrong(a, "a string");
            }
            return None;
        };
        match account_name(s) {
            Ok(v) => Some(v),
            Err(why) => {
                let msg = format!("`{}` of {} is {s:?}, which {why}", a.name, self.id);
                self.hinted(
                    &a.value_loc,
                    msg,
                    format!("write a {kind} name like \"www-data\" or a numeric id like \"1000\""),
                );
                None
            }
        }
    }

    /// Like [`Reader::account`] for a list (a user's supplementary `groups`).
    pub(crate) fn accounts(&mut self, name: &str, kind: &str) -> Option<Vec<String>> {
        let list = self.strings(name)?;
        let a = self.get(name)?;
        let mut out = Vec::with_capacity(list.len());
        for s in list {
            match account_name(&s) {
                Ok(v) => out.push(v),
                Err(why) => {
                    let msg = format!("`{}` of {} lists {s:?}, which {why}", a.name, self.id);
                    self.hinted(
                        &a.value_loc,
                        msg,
                        format!("write {kind} names like \"audio\" or numeric ids like \"1000\""),
                    );
                }
            }
        }
        Some(out)
    }

    pub(crate) fn mode(&mut self, name: &str) -> Option<u32> {
        let a = self.get(name)?;
        let Value::String(s) = &a.value else {
            let msg = format!(
                "`mode` of {} must be a string of octal digits, not {}",
                self.id,
                describe(&a.value)
            );
            self.hinted(&a.value_loc, msg, "write mode = \"0644\" (quoted, octal)");
            return None;
        };
        let valid = (3..=4).contains(&s.len()) && s.bytes().all(|b| (b'0'..=b'7').contains(&b));
        match u32::from_str_radix(s, 8) {
            Ok(m) if valid && m <= 0o7777 => Some(m),
            _ => {
                let msg = format!("`mode` of {} is {s:?}, not an octal mode", self.id);
                self.hinted(
                    &a.value_loc,
                    msg,
                    "use 3 or 4 octal digits, like \"0644\" or \"755\"",
                );
                None
            }
        }
    }
}

/// Checks a user or group as written and returns its normal form: numeric ids with or without
/// a leading `+` become plain digits; names must not look like options or chown specs.
fn account_name(s: &str) -> Result<String, &'static str> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return digits
            .parse::<u32>()
            .map(|n| n.to_string())
            .map_err(|_| "is too large for a numeric id");
    }
    if s.is_empty() {
        return Err("is empty");
    }
    if s.starts_with('-') || s.starts_with('+') {
        return Err("starts with '-' or '+' (it would be read as an option or an id)");
    }
    if s.contains(':') {
        return Err("contains ':' (chown reads it as owner:group)");
    }
    if s.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/' || c == ',') {
        return Err("contains whitespace, a control character, '/' or ','");
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn numeric_owner_ids_have_one_normal_form_and_dash_names_are_refused() {
        for (written, normal) in [
            ("+32001", "32001"),
            ("32001", "32001"),
            ("+0", "0"),
            ("007", "7"),
            ("www-data", "www-data"),
            ("user.name", "user.name"),
        ] {
            assert_eq!(
                super::account_name(written).as_deref(),
                Ok(normal),
                "{written}"
            );
        }
        for bad in [
            "-R",
            "--reference=/",
            "+x",
            "",
            "root:root",
            "a b",
            "a,b",
            "99999999999",
        ] {
            assert!(super::account_name(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
