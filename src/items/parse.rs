//! Turns items.toml (and the map items.rhai returns) into validated [`Item`]s. Both sources
//! become [`RawItem`]s first, so they share one validation path and the same messages; every
//! problem is collected with its file, line and column instead of stopping at the first.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use crate::diag::{Diagnostic, LineIndex, Location, did_you_mean};
use crate::items::reader::{RawAttr, RawItem, Reader};
use crate::items::selector;
use crate::items::{COMMON_ATTRS, Deps, Item, item_types};
use crate::repo::Bundle;

/// The singular type for a table name, or a diagnostic with the closest valid table.
pub(crate) fn item_type(table: &str, loc: &Location) -> Result<&'static str, Diagnostic> {
    if let Some(ty) = super::registry::by_table(table) {
        return Ok(ty.name());
    }
    let plurals = item_types().map(|(p, _)| p);
    // `[file."/x"]` is a common slip: map the singular to its table before guessing.
    let guess = super::registry::by_name(table)
        .map(|t| t.table())
        .or_else(|| did_you_mean(table, plurals.clone()));
    let mut d = Diagnostic::at(loc.clone(), format!("unknown item type `{table}`"));
    d = match guess {
        Some(g) => d.with_hint(format!("did you mean `{g}`?")),
        None => d.with_hint(format!(
            "item tables are: {}",
            plurals.collect::<Vec<_>>().join(", ")
        )),
    };
    Err(d)
}

/// Bytes per piece a big items.toml is parsed in (see [`super::toml_chunks`]).
const PIECE: usize = 256 * 1024;

/// Parses the text of an items.toml into raw items, keeping every key's and value's place.
pub(crate) fn parse_toml(path: &Path, text: &str) -> (Vec<RawItem>, Vec<Diagnostic>) {
    parse_toml_in(path, text, PIECE)
}

/// [`parse_toml`] with pieces of about `piece` bytes: a big file in pieces on all cores when
/// each piece is plain and they add up to exactly what the whole file says, else (and for
/// every problem, so errors are the whole file's own) the whole file in one go.
fn parse_toml_in(path: &Path, text: &str, piece: usize) -> (Vec<RawItem>, Vec<Diagnostic>) {
    if text.len() > piece
        && let Some(raws) = parse_pieces(path, text, piece)
    {
        return (raws, Vec::new());
    }
    parse_whole(path, text)
}

/// The raw items of `text` parsed in pieces, in the order the whole file gives them; `None`
/// when the file has one piece, a piece does not parse or has a problem, or the pieces might
/// not mean what the whole file means: only pieces made of `[TYPE."NAME"…]` headers, none
/// defining the same item as another, are combined (a type table written as `[TYPE]`, by
/// dotted keys or inline could be defined twice across pieces, which the whole file rejects).
fn parse_pieces(path: &Path, text: &str, piece: usize) -> Option<Vec<RawItem>> {
    use rayon::prelude::*;
    let cuts = super::toml_chunks::cut_points(text, piece);
    if cuts.len() < 2 {
        return None;
    }
    let spans: Vec<(usize, usize)> = cuts
        .iter()
        .copied()
        .zip(cuts[1..].iter().copied().chain([text.len()]))
        .collect();
    let lines = LineIndex::new(text);
    let parts = spans
        .par_iter()
        .with_max_len(1)
        .map(|&(from, to)| {
            let doc = toml_edit::ImDocument::parse(&text[from..to]).ok()?;
            let root = doc.as_table();
            let plain = root.iter().all(|(_, t)| {
                matches!(t, toml_edit::Item::Table(t) if t.is_implicit() && !t.is_dotted())
            });
            if !plain {
                return None;
            }
            let mut diags = Vec::new();
            let at = |span: Option<std::ops::Range<usize>>| match span {
                Some(s) => lines.location(path, from + s.start),
                None => Location::file(path),
            };
            let raws = raw_items(root, at, &mut diags);
            diags.is_empty().then_some(raws)
        })
        .collect::<Option<Vec<Vec<RawItem>>>>()?;
    let mut seen = foldhash::HashSet::with_capacity_and_hasher(
        parts.iter().map(Vec::len).sum(),
        Default::default(),
    );
    let mut types: Vec<&'static str> = Vec::new();
    for raw in parts.iter().flatten() {
        if !seen.insert((raw.type_name, raw.name.as_str())) {
            return None;
        }
        if !types.contains(&raw.type_name) {
            types.push(raw.type_name);
        }
    }
    // The whole file lists each type's items together, types in the order they first appear.
    let mut by_type: Vec<Vec<RawItem>> = types.iter().map(|_| Vec::new()).collect();
    for raw in parts.into_iter().flatten() {
        let t = types.iter().position(|&t| t == raw.type_name)?;
        by_type[t].push(raw);
    }
    Some(by_type.into_iter().flatten().collect())
}

/// Parses the whole text of an items.toml at once.
fn parse_whole(path: &Path, text: &str) -> (Vec<RawItem>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let doc = match toml_edit::ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let loc = e.span().map_or_else(
                || Location::file(path),
                |s| Location::from_offset(path, text, s.start),
            );
            let msg = e.message().trim_end().to_string();
            let mut d = Diagnostic::at(loc, format!("invalid TOML: {msg}"));
            if msg.contains("leading zero") || msg.contains("invalid integer") {
                d = d.with_hint("write modes as strings: mode = \"0644\"");
            }
            return (Vec::new(), vec![d.as_root_cause()]);
        }
    };
    let lines = LineIndex::new(text);
    let at = |span: Option<std::ops::Range<usize>>| match span {
        Some(s) => lines.location(path, s.start),
        None => Location::file(path),
    };
    let raws = raw_items(doc.as_table(), at, &mut diags);
    (raws, diags)
}

/// The raw items of a parsed items.toml (or a piece of one); `at` turns a span into a place.
fn raw_items(
    root: &toml_edit::Table,
    at: impl Fn(Option<std::ops::Range<usize>>) -> Location,
    diags: &mut Vec<Diagnostic>,
) -> Vec<RawItem> {
    let mut raws = Vec::new();
    for (table, tval) in root.iter() {
        let tkey_loc = at(root.key(table).and_then(|k| k.span()));
        let type_name = match item_type(table, &tkey_loc) {
            Ok(t) => t,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        let Some(items) = tval.as_table_like() else {
            diags.push(
                Diagnostic::at(tkey_loc, format!("`{table}` must be a table of items"))
                    .with_hint(format!("write [{table}.\"NAME\"] tables")),
            );
            continue;
        };
        for (name, ival) in items.iter() {
            let key_loc = at(items.key(name).and_then(|k| k.span()));
            let Some(attrs) = ival.as_table_like() else {
                diags.push(Diagnostic::at(
                    key_loc,
                    format!(
                        "{type_name}:{name} must be a table of attributes, not {}",
                        ival.type_name()
                    ),
                ));
                continue;
            };
            // A header table's own span points at `[files."/x"]`; a dotted or inline item
            // has none, so fall back to its key.
            let loc = if ival.span().is_some() {
                at(ival.span())
            } else {
                key_loc
            };
            let mut raw = RawItem {
                type_name,
                name: name.to_string(),
                loc,
                attrs: Vec::new(),
            };
            for (attr, aval) in attrs.iter() {
                let akey_loc = at(attrs.key(attr).and_then(|k| k.span()));
                let value_loc = match aval.span() {
                    Some(s) => at(Some(s)),
                    None => akey_loc.clone(),
                };
                match toml_item_to_json(aval) {
                    Ok(value) => raw.attrs.push(RawAttr {
                        name: attr.to_string(),
                        key_loc: akey_loc,
                        value_loc,
                        value,
                    }),
                    Err(what) => diags.push(Diagnostic::at(
                        value_loc,
                        format!("`{attr}` of {type_name}:{name} cannot be {what}"),
                    )),
                }
            }
            raws.push(raw);
        }
    }
    raws
}

fn toml_item_to_json(item: &toml_edit::Item) -> Result<Value, &'static str> {
    match item {
        toml_edit::Item::None => Ok(Value::Null),
        toml_edit::Item::Value(v) => toml_value_to_json(v),
        toml_edit::Item::Table(t) => t
            .iter()
            .map(|(k, v)| Ok::<_, &'static str>((k.to_string(), toml_item_to_json(v)?)))
            .collect::<Result<serde_json::Map<_, _>, _>>()
            .map(Value::Object),
        toml_edit::Item::ArrayOfTables(a) => a
            .iter()
            .map(|t| {
                t.iter()
                    .map(|(k, v)| Ok::<_, &'static str>((k.to_string(), toml_item_to_json(v)?)))
                    .collect::<Result<serde_json::Map<_, _>, _>>()
                    .map(Value::Object)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
    }
}

fn toml_value_to_json(v: &toml_edit::Value) -> Result<Value, &'static str> {
    use toml_edit::Value as T;
    Ok(match v {
        T::String(s) => Value::String(s.value().clone()),
        T::Integer(i) => Value::from(*i.value()),
        T::Float(f) => serde_json::Number::from_f64(*f.value())
            .map(Value::Number)
            .ok_or("a non-finite float")?,
        T::Boolean(b) => Value::Bool(*b.value()),
        T::Datetime(_) => return Err("a date or time"),
        T::Array(a) => Value::Array(a.iter().map(toml_value_to_json).collect::<Result<_, _>>()?),
        T::InlineTable(t) => Value::Object(
            t.iter()
                .map(|(k, v)| Ok::<_, &'static str>((k.to_string(), toml_value_to_json(v)?)))
                .collect::<Result<_, _>>()?,
        ),
    })
}
/// Checks a path item's name: absolute and normalised, so parent lookups by string are exact.
fn check_path_name(name: &str) -> Result<(), String> {
    if !name.starts_with('/') {
        return Err("must be an absolute path (starting with /)".into());
    }
    if name.len() > 1 && name.ends_with('/') {
        return Err("must not end with /".into());
    }
    if name.contains("//") {
        return Err("must not contain //".into());
    }
    if Path::new(name)
        .components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
    {
        return Err("must not contain . or .. components".into());
    }
    Ok(())
}

fn check_name(type_name: &str, name: &str) -> Result<(), (String, Option<&'static str>)> {
    if name.is_empty() {
        return Err(("must not be empty".into(), None));
    }
    if name.trim() != name {
        return Err(("must not start or end with whitespace".into(), None));
    }
    if name.chars().any(char::is_control) {
        return Err(("must not contain control characters".into(), None));
    }
    if matches!(type_name, "file" | "directory" | "symlink") {
        return check_path_name(name).map_err(|e| (e, None));
    }
    // These names are arguments of useradd, groupadd, dpkg-query, apt-get and systemctl.
    if matches!(type_name, "user" | "group" | "pkg_apt" | "svc_systemd") && name.starts_with('-') {
        return Err((
            "must not start with '-'".into(),
            Some("the command on the node would read it as an option"),
        ));
    }
    if name.contains(':') {
        return Err((
            "must not contain ':'".into(),
            Some("':' is reserved for generated items such as svc_systemd:NAME:restart"),
        ));
    }
    Ok(())
}

/// Turns a raw item into a typed one; `None` (with diagnostics pushed) when anything is wrong.
pub(crate) fn build_item(
    bundle: &Bundle,
    mut raw: RawItem,
    diags: &mut Vec<Diagnostic>,
) -> Option<Item> {
    let type_name = raw.type_name;
    let id = format!("{type_name}:{}", raw.name);
    let before = diags.len();
    if let Err((why, hint)) = check_name(type_name, &raw.name) {
        let mut d = Diagnostic::at(
            raw.loc.clone(),
            format!("{type_name} item name {:?} {why}", raw.name),
        );
        if let Some(h) = hint {
            d = d.with_hint(h);
        }
        diags.push(d);
    }
    let ty = super::registry::by_name(type_name);
    let declared = ty.map_or(&[][..], |t| t.attrs());
    let allowed: Vec<&str> = declared.iter().map(|a| a.name).collect();
    for a in &raw.attrs {
        if COMMON_ATTRS.contains(&a.name.as_str()) || allowed.contains(&a.name.as_str()) {
            continue;
        }
        let mut d = Diagnostic::at(
            a.key_loc.clone(),
            format!("unknown attribute `{}` for {id}", a.name),
        );
        if let Some(g) = did_you_mean(&a.name, COMMON_ATTRS.iter().chain(&allowed).copied()) {
            let meaning = declared.iter().find(|d| d.name == g).map(|d| d.doc);
            d = d.with_hint(match meaning {
                Some(m) => format!("did you mean `{g}`? ({g}: {m})"),
                None => format!("did you mean `{g}`?"),
            });
        } else {
            d = d.with_hint(format!(
                "{type_name} items take: {}, plus the dependency attributes ({})",
                allowed.join(", "),
                COMMON_ATTRS.join(", ")
            ));
        }
        diags.push(d);
    }
    // Secret strings (`!password_for:` ...) become their values here, in place (the raw item
    // is this function's own); an item whose state holds a secret is sensitive without anyone
    // marking it.
    let mut has_secret = false;
    let files = files_dir(bundle);
    for a in &mut raw.attrs {
        let mut errors = Vec::new();
        has_secret |=
            crate::repo::secrets::resolve_json(&mut a.value, &files, &mut Vec::new(), &mut errors);
        has_secret |= crate::mask::json_contains_secret(&a.value);
        for (_, why) in errors {
            diags.push(Diagnostic::at(
                a.value_loc.clone(),
                format!("secret in `{}` of {id}: {why}", a.name),
            ));
        }
    }
    let resolved = &raw.attrs;
    let mut r = Reader::new(declared, id.clone(), resolved, diags);
    let deps = Deps {
        needs: selectors(&mut r, "needs"),
        needed_by: selectors(&mut r, "needed_by"),
        after: selectors(&mut r, "after"),
        before: selectors(&mut r, "before"),
        precedes: selectors(&mut r, "precedes"),
        preceded_by: selectors(&mut r, "preceded_by"),
        triggers: selectors(&mut r, "triggers"),
        triggered_by: selectors(&mut r, "triggered_by"),
        tags: r.strings("tags").unwrap_or_default(),
        triggered: r.bool("triggered").unwrap_or(false),
        unless: r.string("unless"),
        skip: r.bool("skip").unwrap_or(false),
        cascade_skip: r.bool("cascade_skip"),
        comment: r.string("comment"),
        locations: [
            "needs",
            "needed_by",
            "after",
            "before",
            "precedes",
            "preceded_by",
            "triggers",
            "triggered_by",
        ]
        .into_iter()
        .filter_map(|k| r.get(k).map(|a| (k, a.value_loc.clone())))
        .collect(),
    };
    if let Some(a) = r.get("tags")
        && deps
            .tags
            .iter()
            .any(|t| t.is_empty() || t.contains(char::is_whitespace))
    {
        let msg = format!("tags of {id} must be non-empty words without spaces");
        r.error(&a.value_loc, msg);
    }
    // `delete = true` says "make it absent": any other state attribute contradicts it.
    if allowed.contains(&"delete")
        && let Some(del) = r.get("delete").filter(|a| a.value == Value::Bool(true))
    {
        let others: Vec<&str> = allowed
            .iter()
            .copied()
            .filter(|n| *n != "delete" && r.get(n).is_some())
            .collect();
        if !others.is_empty() {
            let msg = format!(
                "{id} has delete = true, so it cannot also set {}",
                others.join(", ")
            );
            r.hinted(&del.key_loc, msg, "remove those attributes or the delete");
        }
    }
    // `type_name` was checked against the registry when the item was read.
    let mut kind = ty.and_then(|t| t.parse(bundle, &raw, &mut r));
    if has_secret {
        secret_item(&id, &mut kind, resolved, diags);
    }
    if diags.len() > before {
        return None;
    }
    Some(Item {
        id,
        name: raw.name,
        bundle: bundle.name.clone(),
        kind: kind?,
        deps,
        location: raw.loc,
    })
}

/// An item whose attributes hold a secret: a file is sensitive; a secret in a command (or
/// `unless`) is refused, since a command line is visible in `ps` on the node.
fn secret_item(
    id: &str,
    kind: &mut Option<crate::items::ItemKind>,
    attrs: &[RawAttr],
    diags: &mut Vec<Diagnostic>,
) {
    if let Some(crate::items::ItemKind::File(f)) = kind {
        f.sensitive = true;
    }
    for a in attrs {
        let on_command_line =
            a.name == "unless" || (a.name == "command" && id.starts_with("action:"));
        if on_command_line && crate::mask::json_contains_secret(&a.value) {
            diags.push(
                Diagnostic::at(
                    a.value_loc.clone(),
                    format!(
                        "`{}` of {id} contains a secret, which would be visible in `ps` on the node",
                        a.name
                    ),
                )
                .with_hint("pass it with data_stdin and read it from stdin in the command"),
            );
        }
    }
}
/// Builds items from raw ones, collecting every problem.
pub(crate) fn build_items(bundle: &Bundle, raws: Vec<RawItem>) -> (Vec<Item>, Vec<Diagnostic>) {
    use rayon::prelude::*;
    // On all cores, in order: a bundle of 20,000 files spent a fifth of its load here.
    let built: Vec<(Option<Item>, Vec<Diagnostic>)> = raws
        .into_par_iter()
        .with_min_len(BUILD_CHUNK)
        .map(|raw| {
            let mut diags = Vec::new();
            let item = build_item(bundle, raw, &mut diags);
            (item, diags)
        })
        .collect();
    let mut diags = Vec::new();
    let mut items = Vec::with_capacity(built.len());
    for (item, more) in built {
        items.extend(item);
        diags.extend(more);
    }
    (items, diags)
}

/// Items built per parallel task (smaller bundles are built on the calling thread).
const BUILD_CHUNK: usize = 256;

/// The directory a bundle's `source` files live in.
pub fn files_dir(bundle: &Bundle) -> PathBuf {
    bundle.dir.join("files")
}

/// A list of selectors, each checked so typos surface before resolution.
fn selectors(r: &mut Reader<'_>, name: &str) -> Vec<String> {
    let list = r.strings(name).unwrap_or_default();
    if let Some(a) = r.get(name) {
        for s in &list {
            if let Err(e) = selector::validate(s) {
                let msg = format!("`{}` of {}: {e}", a.name, r.id);
                r.error(&a.value_loc, msg);
            }
        }
    }
    list
}

#[cfg(test)]
mod tests {
    use crate::items::testutil::Fixture;
    use crate::items::{ContentType, FileSource, ItemKind};

    /// A 5,000-file steady state spent 10 of its 15 s finding line numbers: every key's
    /// location was computed by rescanning items.toml from the start (quadratic). Ten times
    /// the items must now cost about ten times as much, not a hundred.
    #[test]
    fn items_toml_locations_cost_linear_time_in_the_number_of_items() {
        let text = |n: usize| -> String {
            (0..n)
                .map(|i| format!("[files.\"/srv/f{i}\"]\ncontent = \"x{i}\"\nmode = \"0644\"\n\n"))
                .collect()
        };
        let path = std::path::Path::new("items.toml");
        let time = |t: &str| {
            (0..3)
                .map(|_| {
                    let start = std::time::Instant::now();
                    let (raws, diags) = super::parse_toml(path, t);
                    assert!(diags.is_empty() && !raws.is_empty());
                    start.elapsed()
                })
                .min()
                .unwrap_or_default()
        };
        let (small, large) = (text(1_000), text(10_000));
        let (ts, tl) = (time(&small), time(&large));
        let (raws, _) = super::parse_toml(path, &large);
        assert_eq!(raws[9_999].loc.line, 9_999 * 4 + 1);
        assert!(
            tl < ts * 30,
            "10x the items took {:.1}x the time ({ts:?} -> {tl:?})",
            tl.as_secs_f64() / ts.as_secs_f64().max(1e-9)
        );
    }

    /// Parses `text` whole and in pieces of (at least) one byte, the smallest possible.
    fn whole_and_in_pieces(text: &str) -> (String, String, usize) {
        let path = std::path::Path::new("/repo/bundles/b/items.toml");
        let whole = super::parse_whole(path, text);
        let problems = whole.1.len();
        (
            format!("{whole:?}"),
            format!("{:?}", super::parse_toml_in(path, text, 1)),
            problems,
        )
    }

    /// A big items.toml is parsed in pieces cut before its table headers; a line starting
    /// with `[` inside a multi-line string or array is not a header, and the items come out in
    /// the whole file's order (each type's items together) with the same places.
    #[test]
    fn items_toml_in_pieces_gives_what_the_whole_file_gives() {
        let text = concat!(
            "# a comment\n",
            "[files.\"/a\"]\ncontent = \"\"\"\n[not a header]\n  [nor this]\n\"\"\"\nmode = \"0644\"\n\n",
            "[directories.\"/d\"]\nmode = \"0755\"\n",
            "[actions.\"run\"]\ncommand = '''\n[x]\n'''\nneeds = [\n\"file:/a\",\n]\n",
            "[files.\"/b\"]\ncontent = \"b\"\ntriggers = [\n  \"action:run\",\n]\n",
            "[files.\"/c\".nested]\nx = [\n[1],\n]\n",
            "[directories.\"/e\"]\n",
        );
        let path = std::path::Path::new("/repo/bundles/b/items.toml");
        let pieces = super::parse_pieces(path, text, 1).expect("parsed in pieces");
        let whole = super::parse_whole(path, text);
        assert!(whole.1.is_empty(), "{:?}", whole.1);
        assert_eq!(format!("{pieces:?}"), format!("{:?}", whole.0));
        let (whole, in_pieces, _) = whole_and_in_pieces(text);
        assert_eq!(in_pieces, whole);
        let order: Vec<String> = pieces
            .iter()
            .map(|r| format!("{}:{}@{}:{}", r.type_name, r.name, r.loc.line, r.loc.column))
            .collect();
        assert_eq!(
            order,
            [
                "file:/a@2:1",
                "file:/b@18:1",
                "file:/c@23:8",
                "directory:/d@9:1",
                "directory:/e@27:1",
                "action:run@11:1"
            ]
        );
    }

    /// Pieces that each parse but together are not valid TOML (or not what the whole file
    /// says) are never combined: the whole file's own error comes out, at its line.
    #[test]
    fn items_toml_pieces_defining_one_item_or_table_twice_give_the_whole_files_error() {
        for text in [
            // The same item in two pieces.
            "[files.\"/a\"]\nmode = \"0644\"\n[files.\"/b\"]\n[files.\"/a\"]\nmode = \"0600\"\n",
            // An item's sub-table in another piece than the item, then the item twice.
            "[files.\"/a\".x]\n[files.\"/b\"]\n[files.\"/a\"]\n[files.\"/a\"]\n",
            // A type table written twice.
            "[files]\n[files.\"/a\"]\n[files]\n",
            // An inline type table extended by a header.
            "files = { \"/a\" = { mode = \"0644\" } }\n[files.\"/b\"]\n",
            // Dotted keys at the top, then headers.
            "files.\"/a\".mode = \"0644\"\n[files.\"/b\"]\n[files.\"/a\"]\n",
            // An array of tables in two pieces.
            "[[files]]\n[[files]]\n",
            // A syntax error in a later piece.
            "[files.\"/a\"]\n[files.\"/b\"]\nmode = 0644\n",
            // An item that is not a table.
            "[files.\"/a\"]\n[directories]\n\"/d\" = 1\n",
        ] {
            let (whole, in_pieces, problems) = whole_and_in_pieces(text);
            assert!(problems > 0, "the whole file has a problem:\n{text}");
            assert_eq!(in_pieces, whole, "{text}");
        }
        let path = std::path::Path::new("items.toml");
        let text =
            "[files.\"/a\"]\nmode = \"0644\"\n[files.\"/b\"]\n[files.\"/a\"]\nmode = \"0600\"\n";
        let (_, diags) = super::parse_toml_in(path, text, 1);
        let line = diags[0].location.as_ref().map(|l| l.line);
        assert_eq!(line, Some(4), "{diags:?}");
    }

    /// A type table written once as `[files]` next to its items is valid TOML: the file is
    /// read whole, with the same result.
    #[test]
    fn an_explicit_type_table_is_read_whole_with_the_same_items() {
        let text = "[files.\"/a\"]\nmode = \"0644\"\n[files]\n[files.\"/b\"]\nmode = \"0600\"\n";
        let path = std::path::Path::new("items.toml");
        assert!(super::parse_pieces(path, text, 1).is_none());
        let (whole, in_pieces, problems) = whole_and_in_pieces(text);
        assert_eq!(problems, 0, "{whole}");
        assert!(whole.contains("/b"), "{whole}");
        assert_eq!(in_pieces, whole);
    }

    fn line_of(errors: &str, needle: &str) -> String {
        errors
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{errors}"))
            .to_string()
    }

    #[test]
    fn parses_every_type_with_typed_attributes_and_locations() {
        let f = Fixture::new()
            .toml(
                "base",
                r#"
[files."/etc/motd"]
content = "hello\n"
mode = "644"
owner = "root"
tags = ["motd"]

[files."/etc/app.conf"]
content_type = "jinja2"
source = "app.conf.j2"
needs = ["directory:/etc"]

[files."/etc/hosts"]

[directories."/etc"]
mode = "0755"

[symlinks."/srv/current"]
target = "/srv/app"

[actions.reload]
command = "true"
triggered = true
expected_return_code = [0, 3]

[users.deploy]
uid = 1000
gid = "deploy"
groups = ["www"]

[groups.deploy]
gid = 2000

[pkg_apt.nginx]

[svc_systemd.nginx]
running = true
"#,
            )
            .source("base", "app.conf.j2", "x={{ node.name }}\n")
            .source("base", "hosts", "127.0.0.1 localhost\n");
        let items = f.ok_items();
        let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "action:reload",
                "directory:/etc",
                "file:/etc/app.conf",
                "file:/etc/hosts",
                "file:/etc/motd",
                "group:deploy",
                "pkg_apt:nginx",
                "svc_systemd:nginx",
                "symlink:/srv/current",
                "user:deploy"
            ]
        );
        let motd = items.iter().find(|i| i.id == "file:/etc/motd").unwrap();
        assert_eq!(motd.location.line, 2);
        assert_eq!(motd.location.column, 1);
        assert!(motd.location.file.ends_with("bundles/base/items.toml"));
        assert_eq!(motd.deps.tags, ["motd"]);
        let ItemKind::File(a) = &motd.kind else {
            panic!()
        };
        assert_eq!(a.mode, Some(0o644));
        assert_eq!(a.source, FileSource::Content("hello\n".into()));
        let hosts = items.iter().find(|i| i.id == "file:/etc/hosts").unwrap();
        let ItemKind::File(a) = &hosts.kind else {
            panic!()
        };
        // Default source: the basename under files/.
        assert_eq!(
            a.source,
            FileSource::Source(f.path().join("bundles/base/files/hosts"))
        );
        let conf = items.iter().find(|i| i.id == "file:/etc/app.conf").unwrap();
        let ItemKind::File(a) = &conf.kind else {
            panic!()
        };
        assert_eq!(a.content_type, ContentType::Jinja2);
        assert_eq!(conf.deps.needs, ["directory:/etc"]);
        let reload = items.iter().find(|i| i.id == "action:reload").unwrap();
        let ItemKind::Action(a) = &reload.kind else {
            panic!()
        };
        assert_eq!(a.expected_return_code, [0, 3]);
        assert!(reload.deps.triggered);
        assert!(!reload.cascade_skip());
        let user = items.iter().find(|i| i.id == "user:deploy").unwrap();
        let ItemKind::User(u) = &user.kind else {
            panic!()
        };
        assert_eq!((u.uid, u.gid.as_deref()), (Some(1000), Some("deploy")));
        let ItemKind::PkgApt(p) = &items.iter().find(|i| i.id == "pkg_apt:nginx").unwrap().kind
        else {
            panic!()
        };
        assert!(p.installed);
    }

    #[test]
    fn unknown_type_and_attribute_name_the_place_and_the_fix() {
        let f = Fixture::new().toml(
            "base",
            "[file.\"/etc/motd\"]\ncontent = \"x\"\n\n[actions.a]\ncommand = \"true\"\nneeed = [\"action:b\"]\n",
        );
        let errors = f.errors();
        let ty = line_of(&errors, "unknown item type `file`");
        assert!(ty.contains("items.toml:1:2"), "{ty}");
        assert!(errors.contains("did you mean `files`?"), "{errors}");
        let attr = line_of(&errors, "unknown attribute `neeed` for action:a");
        assert!(attr.contains("items.toml:6:1"), "{attr}");
        assert!(errors.contains("did you mean `needs`?"), "{errors}");
    }

    #[test]
    fn every_problem_is_reported_not_only_the_first() {
        let f = Fixture::new().toml(
            "base",
            r#"
[files."/a"]
content = "x"
mode = 644

[files."/b"]
content = "x"
source = "b"

[files."relative"]
content = "x"

[actions.noop]
expected_return_code = "zero"

[directories."/d"]
delete = true
mode = "0755"

[files."/e"]
content = "x"
content_type = "jinja"
owner = true

[users." bob"]
"#,
        );
        let errors = f.errors();
        for needle in [
            "`mode` of file:/a must be a string of octal digits, not an integer",
            "file:/b sets both `content` and `source`",
            "file item name \"relative\" must be an absolute path",
            "action:noop needs a `command`",
            "`expected_return_code` of action:noop must be an integer or a list",
            "directory:/d has delete = true, so it cannot also set mode",
            "unknown content_type \"jinja\" for file:/e",
            "did you mean \"jinja2\"?",
            "`owner` of file:/e must be a string, not a boolean",
            "user item name \" bob\" must not start or end with whitespace",
        ] {
            assert!(errors.contains(needle), "missing {needle:?} in:\n{errors}");
        }
        assert!(line_of(&errors, "`mode` of file:/a").contains("items.toml:4:8"));
    }

    /// The hash travels to `chpasswd -e` as one `NAME:HASH` line: a colon or newline in it
    /// would set a second account's password.
    #[test]
    fn password_hash_with_a_colon_or_newline_is_rejected_at_its_line() {
        let f = Fixture::new().toml(
            "base",
            "[users.bob]\npassword_hash = \"$6$x$y\\nroot:$6$evil\"\n\
             [users.eve]\npassword_hash = \"$6$x:y\"\n",
        );
        let errors = f.errors();
        let bob = line_of(
            &errors,
            "`password_hash` of user:bob must not contain '\\n'",
        );
        assert!(bob.contains("items.toml:2:17"), "{errors}");
        let eve = line_of(&errors, "`password_hash` of user:eve must not contain ':'");
        assert!(eve.contains("items.toml:4:17"), "{errors}");
    }

    #[test]
    fn modes_are_octal_strings_up_to_7777() {
        for (mode, ok) in [
            ("\"0644\"", Some(0o644)),
            ("\"755\"", Some(0o755)),
            ("\"4755\"", Some(0o4755)),
            ("\"0888\"", None),
            ("\"12345\"", None),
            ("\"rw\"", None),
            ("\"64\"", None),
        ] {
            let f = Fixture::new().toml("b", &format!("[directories.\"/d\"]\nmode = {mode}\n"));
            match ok {
                Some(m) => {
                    let items = f.ok_items();
                    let ItemKind::Directory(d) = &items[0].kind else {
                        panic!()
                    };
                    assert_eq!(d.mode, Some(m), "{mode}");
                }
                None => assert!(f.errors().contains("not an octal mode"), "{mode}"),
            }
        }
    }

    #[test]
    fn missing_source_names_the_expected_file() {
        let f = Fixture::new().toml(
            "web",
            "[files.\"/etc/nginx.conf\"]\nsource = \"nginx.conf\"\n\n[files.\"/etc/other\"]\n",
        );
        let errors = f.errors();
        assert!(
            errors.contains(
                "source file bundles/web/files/nginx.conf of file:/etc/nginx.conf does not exist"
            ),
            "{errors}"
        );
        assert!(
            line_of(&errors, "nginx.conf of").contains("items.toml:2:10"),
            "{errors}"
        );
        assert!(errors.contains("default source bundles/web/files/other does not exist"));
        let f = Fixture::new().toml("web", "[files.\"/x\"]\nsource = \"../../etc/passwd\"\n");
        assert!(f.errors().contains("must be a relative path inside files/"));
    }

    #[test]
    fn content_type_any_and_delete_need_no_source() {
        let f = Fixture::new().toml(
            "b",
            "[files.\"/a\"]\ncontent_type = \"any\"\nmode = \"0600\"\n[files.\"/b\"]\ndelete = true\n",
        );
        let items = f.ok_items();
        assert!(
            items
                .iter()
                .all(|i| matches!(&i.kind, ItemKind::File(a) if a.source == FileSource::None))
        );
        assert!(items[1].deletes());
    }

    #[test]
    fn wrong_toml_syntax_points_at_the_spot() {
        let f = Fixture::new().toml("b", "[files.\"/a\"]\nmode = 0644\n");
        let errors = f.errors();
        assert!(errors.contains("items.toml:2:"), "{errors}");
        assert!(errors.contains("invalid TOML"), "{errors}");
    }

    #[test]
    fn bad_selectors_in_dependencies_are_caught_at_parse_time() {
        let f = Fixture::new().toml(
            "b",
            "[actions.a]\ncommand = \"true\"\nneeds = [\"files:/etc/motd\"]\nafter = \"action:b\"\n",
        );
        let errors = f.errors();
        assert!(errors.contains("did you mean `file:`?"), "{errors}");
        assert!(
            errors.contains("`after` of action:a must be a list of strings, not a string"),
            "{errors}"
        );
    }

    #[test]
    fn duplicate_ids_across_bundles_name_both_places() {
        let f = Fixture::new()
            .toml("one", "[actions.dupl]\ncommand = \"true\"\n")
            .toml("two", "\n\n[actions.dupl]\ncommand = \"false\"\n");
        let errors = f.errors();
        assert!(
            errors.contains("duplicate definition of action:dupl"),
            "{errors}"
        );
        assert!(errors.contains("bundle 'one' ("), "{errors}");
        assert!(errors.contains("one/items.toml:1:1"), "{errors}");
        assert!(errors.contains("two/items.toml:3:1"), "{errors}");
    }

    /// A bundle that only one node of the repo has is loaded for that node alone: no copy of
    /// its items is kept for nodes that never come (a bundle shared by two nodes still is).
    #[test]
    fn a_bundle_of_one_node_is_not_cached_and_a_shared_one_is() {
        let mut f = Fixture::new()
            .toml("own", "[actions.a]\ncommand = \"true\"\n")
            .toml("shared", "[actions.s]\ncommand = \"true\"\n");
        let n1 = f.node("n1", &["own", "shared"], serde_json::json!({}));
        let n2 = f.node("n2", &["shared"], serde_json::json!({}));
        f.repo.nodes.insert("n1".into(), n1.clone());
        f.repo.nodes.insert("n2".into(), n2);
        let ids = |items: Vec<crate::items::Item>| -> Vec<String> {
            items.into_iter().map(|i| i.id).collect()
        };
        let load = |f: &Fixture| crate::items::load_node_items(&f.repo, &n1).map(ids);
        assert_eq!(load(&f), Ok(vec!["action:a".into(), "action:s".into()]));
        let cached = |name: &str| {
            crate::items::load::BundleCache::of(&f.repo.bundles[name])
                .toml
                .get()
                .is_some()
        };
        assert!(!cached("own"));
        assert!(cached("shared"));
        f.write(
            "bundles/own/items.toml",
            "[actions.b]\ncommand = \"true\"\n",
        );
        f.write(
            "bundles/shared/items.toml",
            "[actions.t]\ncommand = \"true\"\n",
        );
        assert_eq!(load(&f), Ok(vec!["action:b".into(), "action:s".into()]));
    }

    #[test]
    fn static_items_are_parsed_once_per_bundle() {
        let f = Fixture::new().toml("b", "[actions.a]\ncommand = \"true\"\n");
        assert_eq!(f.ok_items().len(), 1);
        // Editing the file after the first load changes nothing: the cache answers.
        f.write(
            "bundles/b/items.toml",
            "[actions.a]\ncommand = \"true\"\n[actions.b]\ncommand = \"true\"\n",
        );
        assert_eq!(f.ok_items().len(), 1);
    }

    #[test]
    fn a_repo_with_its_caches_can_be_shared_by_node_workers() {
        fn shareable<T: Send + Sync>() {}
        shareable::<crate::repo::Repo>();
    }

    #[test]
    fn a_missing_bundle_is_an_error_not_a_panic() {
        let f = Fixture::new().toml("base", "");
        let node = f.node("n1", &["base", "bsae2"], serde_json::json!({}));
        let errors = crate::items::testutil::render(
            &crate::items::load_node_items(&f.repo, &node).unwrap_err(),
        );
        assert!(
            errors.contains("node 'n1' has bundle 'bsae2', which does not exist"),
            "{errors}"
        );
    }
}
