//! `cinch diff REV[..REV2] [TARGET]`: what a change of the repo changes on every selected node,
//! computed from both revisions without connecting: items added, removed and changed (with
//! the rendered content diff of files), and metadata keys changed.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::output::{Lines, untrusted};
use crate::repo::{Node, Repo};
use crate::review::expected::{ItemState, NodeState, node_states};
use crate::settings::{DiffSettings as DiffArgs, Settings as Context};

/// How an item or node differs between the two sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Only in the new revision.
    Added,
    /// Only in the old revision.
    Removed,
    /// In both, different.
    Changed,
}

impl Status {
    /// The word in output and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Added => "added",
            Status::Removed => "removed",
            Status::Changed => "changed",
        }
    }

    fn sign(self) -> char {
        match self {
            Status::Added => '+',
            Status::Removed => '-',
            Status::Changed => '~',
        }
    }
}

/// One item that differs.
#[derive(Debug)]
pub struct ItemDiff<'a> {
    /// `TYPE:NAME`.
    pub id: &'a str,
    /// Added, removed or changed.
    pub status: Status,
    /// The item in the old revision, if there.
    pub old: Option<&'a ItemState>,
    /// The item in the new revision (or work tree), if there.
    pub new: Option<&'a ItemState>,
    /// Keys of the canonical state whose value differs (changed items only), sorted.
    pub keys: Vec<String>,
}

/// One metadata leaf (dotted path) that differs; `None` = absent on that side.
#[derive(Debug)]
pub struct MetadataDiff {
    /// Dotted path, `nginx.workers`.
    pub key: String,
    /// The old value.
    pub old: Option<Value>,
    /// The new value.
    pub new: Option<Value>,
}

/// One node that differs.
#[derive(Debug)]
pub struct NodeDiff<'a> {
    /// The node's name.
    pub name: &'a str,
    /// Added or removed as a whole, or changed.
    pub status: Status,
    /// Its items that differ, by id.
    pub items: Vec<ItemDiff<'a>>,
    /// Its metadata leaves that differ (nodes on both sides only).
    pub metadata: Vec<MetadataDiff>,
}

impl NodeDiff<'_> {
    fn count(&self, s: Status) -> usize {
        self.items.iter().filter(|i| i.status == s).count()
    }
}

/// Runs `cinch diff`.
pub fn cmd_diff(ctx: &Context, args: &DiffArgs) -> Result<u8> {
    let (old_rev, new_rev) = parse_range(&args.revisions)?;
    let root = Repo::discover_root(ctx.repo_path.as_deref())?;
    let old = crate::review::git::load_at(&root, old_rev)?;
    let new_at = new_rev
        .map(|r| crate::review::git::load_at(&root, r))
        .transpose()?;
    let work_tree;
    let new_repo = match &new_at {
        Some(rev) => &rev.repo,
        None => {
            work_tree = Repo::load(&root)?;
            &work_tree
        }
    };
    let target = args.target.as_deref().unwrap_or("all");
    let (old_nodes, new_nodes) = select_both(&old.repo, new_repo, target)?;
    let old_states = node_states(&old.repo, &old_nodes)
        .map_err(|e| crate::review::git::relabel(e, &old.repo.path, &old.name))?;
    let new_states = node_states(new_repo, &new_nodes).map_err(|e| match &new_at {
        Some(rev) => crate::review::git::relabel(e, &rev.repo.path, &rev.name),
        None => e,
    })?;
    let diffs = compare(&old_states, &new_states);
    let new_label = new_at
        .as_ref()
        .map_or("the work tree".to_string(), |r| r.name.clone());
    let sides = Sides {
        old: &old.name,
        old_commit: &old.commit,
        new: &new_label,
        new_commit: new_at.as_ref().map(|r| r.commit.as_str()),
        compared: old_states
            .iter()
            .map(|s| &s.name)
            .chain(new_states.iter().map(|s| &s.name))
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
    };
    if ctx.console.json() {
        print_json(ctx, &diffs, &sides);
    } else {
        print_human(ctx, &diffs, &sides);
    }
    Ok(if diffs.is_empty() { 0 } else { 1 })
}

/// `A..B` → (A, Some(B)); `A` → (A, None): A against the work tree.
fn parse_range(spec: &str) -> Result<(&str, Option<&str>)> {
    let bad = || {
        Error::Usage(format!(
            "'{spec}' is not a revision or range; write REV (against the work tree) or \
             REV..REV2, for example HEAD~1 or main..HEAD"
        ))
    };
    if spec.contains("...") {
        return Err(bad());
    }
    match spec.split_once("..") {
        None if !spec.is_empty() => Ok((spec, None)),
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a, Some(b))),
        _ => Err(bad()),
    }
}

/// The nodes `target` selects on each side. A node added or removed exists on one side only,
/// so the target may match nothing on one side; matching nothing on both is the usual error.
fn select_both<'a>(
    old: &'a Repo,
    new: &'a Repo,
    target: &str,
) -> Result<(Vec<&'a Node>, Vec<&'a Node>)> {
    match (old.select(target), new.select(target)) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Ok(a), Err(_)) => Ok((a, Vec::new())),
        (Err(_), Ok(b)) => Ok((Vec::new(), b)),
        (Err(_), Err(e)) => Err(e),
    }
}

/// Every node that differs, by name.
pub fn compare<'a>(old: &'a [NodeState], new: &'a [NodeState]) -> Vec<NodeDiff<'a>> {
    let mut names: BTreeMap<&str, (Option<&NodeState>, Option<&NodeState>)> = BTreeMap::new();
    for s in old {
        names.entry(&s.name).or_default().0 = Some(s);
    }
    for s in new {
        names.entry(&s.name).or_default().1 = Some(s);
    }
    names
        .into_iter()
        .filter_map(|(name, (o, n))| {
            let status = match (o, n) {
                (None, Some(_)) => Status::Added,
                (Some(_), None) => Status::Removed,
                _ => Status::Changed,
            };
            let items = compare_items(
                o.map_or(&[][..], |s| &s.items),
                n.map_or(&[][..], |s| &s.items),
            );
            let metadata = match (o, n) {
                (Some(o), Some(n)) => compare_metadata(&o.metadata, &n.metadata),
                _ => Vec::new(),
            };
            (status != Status::Changed || !items.is_empty() || !metadata.is_empty()).then_some(
                NodeDiff {
                    name,
                    status,
                    items,
                    metadata,
                },
            )
        })
        .collect()
}

fn compare_items<'a>(old: &'a [ItemState], new: &'a [ItemState]) -> Vec<ItemDiff<'a>> {
    let mut ids: BTreeMap<&str, (Option<&ItemState>, Option<&ItemState>)> = BTreeMap::new();
    for i in old {
        ids.entry(&i.id).or_default().0 = Some(i);
    }
    for i in new {
        ids.entry(&i.id).or_default().1 = Some(i);
    }
    ids.into_iter()
        .filter_map(|(id, (o, n))| {
            let (status, keys) = match (o, n) {
                (None, Some(_)) => (Status::Added, Vec::new()),
                (Some(_), None) => (Status::Removed, Vec::new()),
                (Some(o), Some(n)) if o.hash != n.hash => {
                    (Status::Changed, changed_keys(&o.state, &n.state))
                }
                _ => return None,
            };
            Some(ItemDiff {
                id,
                status,
                old: o,
                new: n,
                keys,
            })
        })
        .collect()
}

fn changed_keys(old: &Value, new: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let o = old.as_object().unwrap_or(&empty);
    let n = new.as_object().unwrap_or(&empty);
    let mut keys: Vec<String> = o
        .keys()
        .chain(n.keys())
        .filter(|k| o.get(*k) != n.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Metadata leaves that differ, as dotted paths (`nginx.workers`).
fn compare_metadata(old: &Value, new: &Value) -> Vec<MetadataDiff> {
    let (mut o, mut n) = (BTreeMap::new(), BTreeMap::new());
    flatten("", old, &mut o);
    flatten("", new, &mut n);
    let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| o.get(*k) != n.get(*k))
        .map(|k| MetadataDiff {
            key: k.clone(),
            old: o.get(k).cloned(),
            new: n.get(k).cloned(),
        })
        .collect()
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, v, out);
            }
        }
        other if !prefix.is_empty() => {
            out.insert(prefix.to_string(), other.clone());
        }
        _ => {}
    }
}

/// Which revisions were compared.
struct Sides<'a> {
    old: &'a str,
    old_commit: &'a str,
    new: &'a str,
    new_commit: Option<&'a str>,
    /// Nodes selected on either side.
    compared: usize,
}

/// Totals for the summary line and JSON.
#[derive(Default)]
struct Totals {
    nodes: [usize; 3],
    items: [usize; 3],
    metadata: usize,
}

fn totals(diffs: &[NodeDiff<'_>]) -> Totals {
    let mut t = Totals::default();
    let slot = |s: Status| s as usize;
    for d in diffs {
        t.nodes[slot(d.status)] += 1;
        for i in &d.items {
            t.items[slot(i.status)] += 1;
        }
        t.metadata += d.metadata.len();
    }
    t
}

/// A value as a user reads it: strings bare, everything else as JSON.
fn shown(v: Option<&Value>) -> String {
    match v {
        None => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// What the content of a file item changed to, for a reader: a unified diff of text, sizes
/// and hashes of binary content, a notice for sensitive content. `None` when the content did
/// not change (or is not managed). `plain`: no colour, nothing escaped (for JSON).
fn content_change(i: &ItemDiff<'_>, plain: bool) -> Option<String> {
    let (old, new) = (content_of(i.old), content_of(i.new));
    let changed = match i.status {
        Status::Added => new.is_some(),
        Status::Removed => false,
        Status::Changed => i.keys.iter().any(|k| k == "content_hash") && (old, new) != (None, None),
    };
    if !changed {
        return None;
    }
    if i.old.is_some_and(|s| s.sensitive) || i.new.is_some_and(|s| s.sensitive) {
        return Some("content: (sensitive, not shown)\n".to_string());
    }
    if i.status == Status::Changed && new.is_none() {
        // `content_type = "any"` now: whatever is on the node stays.
        return Some("content: no longer managed\n".to_string());
    }
    let path = i.id.split_once(':').map_or(i.id, |(_, p)| p);
    match (as_text(old), as_text(new)) {
        (Some(o), Some(n)) if plain => Some(
            similar::TextDiff::from_lines(o, n)
                .unified_diff()
                .context_radius(3)
                .header(path, path)
                .to_string(),
        ),
        (Some(o), Some(n)) => Some(crate::diff::unified(o, n, path)),
        _ => {
            let side = |b: Option<&[u8]>| b.map(|b| (b.len() as u64, crate::diff::sha256_hex(b)));
            let (o, n) = (side(old), side(new));
            Some(crate::diff::sizes_and_hashes(
                o.as_ref().map(|(s, h)| (*s, h.as_str())),
                n.as_ref().map(|(s, h)| (*s, h.as_str())),
            ))
        }
    }
}

fn content_of(s: Option<&ItemState>) -> Option<&[u8]> {
    s.and_then(|s| s.content.as_deref().map(Vec::as_slice))
}

/// Content as text for a line diff (absent = empty); `None` for binary content.
fn as_text(b: Option<&[u8]>) -> Option<&str> {
    match b {
        None => Some(""),
        Some(b) if crate::diff::is_text(b) => std::str::from_utf8(b).ok(),
        Some(_) => None,
    }
}

/// The masked value of `key` on one side of an item.
fn side_value(s: Option<&ItemState>, key: &str) -> Option<Value> {
    s.and_then(|s| s.shown().get(key).cloned())
}

/// Key lines of an item that differs: every key of an added item, the changed keys of a
/// changed one; the content hash is left to the content diff.
fn key_lines(i: &ItemDiff<'_>) -> Vec<(String, Option<Value>, Option<Value>)> {
    let keys: Vec<String> = match (i.status, i.new) {
        (Status::Added, Some(n)) => n
            .state
            .as_object()
            .map(|m| m.keys().filter(|k| *k != "type").cloned().collect())
            .unwrap_or_default(),
        (Status::Changed, _) => i.keys.clone(),
        _ => Vec::new(),
    };
    let has_content =
        i.new.is_some_and(|s| s.content.is_some()) || i.old.is_some_and(|s| s.content.is_some());
    keys.into_iter()
        .filter(|k| !(k == "content_hash" && has_content))
        .map(|k| {
            let (o, n) = (side_value(i.old, &k), side_value(i.new, &k));
            (k, o, n)
        })
        .collect()
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}

fn print_human(ctx: &Context, diffs: &[NodeDiff<'_>], sides: &Sides<'_>) {
    let c = &ctx.console;
    let esc = |s: &str| untrusted(s, Lines::Escape).into_owned();
    let short = |commit: &str| commit.chars().take(12).collect::<String>();
    let header = format!(
        "comparing {} ({}) with {}{}",
        esc(sides.old),
        short(sides.old_commit),
        esc(sides.new),
        sides
            .new_commit
            .map_or(String::new(), |c| format!(" ({})", short(c)))
    );
    if !c.quiet() {
        c.out(&header);
        for d in diffs {
            let mut out = String::new();
            let what = match d.status {
                Status::Changed => {
                    let mut parts = Vec::new();
                    for s in [Status::Added, Status::Removed, Status::Changed] {
                        let n = d.count(s);
                        if n > 0 {
                            parts.push(format!("{} {}", plural(n, "item"), s.as_str()));
                        }
                    }
                    if !d.metadata.is_empty() {
                        parts.push(format!(
                            "{} changed",
                            plural(d.metadata.len(), "metadata key")
                        ));
                    }
                    parts.join(", ")
                }
                s => format!("{} ({})", s.as_str(), plural(d.items.len(), "item")),
            };
            out.push_str(&format!("\nnode {}: {what}\n", esc(d.name)));
            for i in &d.items {
                out.push_str(&format!("  {} {}\n", i.status.sign(), esc(i.id)));
                // Items of a node added or removed as a whole are listed, not detailed.
                if d.status != Status::Changed {
                    continue;
                }
                for (k, o, n) in key_lines(i) {
                    out.push_str(&indent(
                        &crate::diff::key_line(&k, &shown(o.as_ref()), &shown(n.as_ref())),
                        "      ",
                    ));
                }
                if let Some(content) = content_change(i, false) {
                    out.push_str(&indent(&content, "      "));
                }
            }
            for m in &d.metadata {
                out.push_str(&format!("  ~ metadata {}\n", esc(&m.key)));
                out.push_str(&indent(
                    &crate::diff::key_line("value", &shown(m.old.as_ref()), &shown(m.new.as_ref())),
                    "      ",
                ));
            }
            c.out(out.trim_end());
        }
        c.out("");
    }
    c.out(&summary_line(diffs, sides));
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

fn summary_line(diffs: &[NodeDiff<'_>], sides: &Sides<'_>) -> String {
    if diffs.is_empty() {
        return format!(
            "no differences ({} compared)",
            plural(sides.compared, "node")
        );
    }
    let t = totals(diffs);
    let [na, nr, nc] = t.nodes;
    let [ia, ir, ic] = t.items;
    let mut line = format!(
        "{} of {} touched ({na} added, {nr} removed, {nc} changed); items: {ia} added, {ir} \
         removed, {ic} changed",
        plural(diffs.len(), "node"),
        sides.compared
    );
    if t.metadata > 0 {
        line.push_str(&format!("; {} changed", plural(t.metadata, "metadata key")));
    }
    line
}

fn print_json(ctx: &Context, diffs: &[NodeDiff<'_>], sides: &Sides<'_>) {
    let c = &ctx.console;
    for d in diffs {
        let items: Vec<Value> = d
            .items
            .iter()
            .map(|i| {
                json!({
                    "id": i.id,
                    "status": i.status.as_str(),
                    "old": i.old.map(|s| json!({"hash": s.hash, "state": s.shown()})),
                    "new": i.new.map(|s| json!({"hash": s.hash, "state": s.shown()})),
                    "keys": i.keys,
                    "content_diff": content_change(i, true),
                })
            })
            .collect();
        let metadata: Vec<Value> = d
            .metadata
            .iter()
            .map(|m| json!({"key": m.key, "old": m.old, "new": m.new}))
            .collect();
        c.json_line(&json!({
            "event": "diff_node",
            "node": d.name,
            "status": d.status.as_str(),
            "items": items,
            "metadata": metadata,
        }));
    }
    let t = totals(diffs);
    c.json_line(&json!({
        "event": "diff_summary",
        "old": {"revision": sides.old, "commit": sides.old_commit},
        "new": {"revision": sides.new, "commit": sides.new_commit},
        "nodes_compared": sides.compared,
        "nodes_added": t.nodes[0],
        "nodes_removed": t.nodes[1],
        "nodes_changed": t.nodes[2],
        "items_added": t.items[0],
        "items_removed": t.items[1],
        "items_changed": t.items[2],
        "metadata_keys_changed": t.metadata,
        "differs": !diffs.is_empty(),
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_bad_ones_are_usage_errors() {
        assert_eq!(parse_range("HEAD~1").ok(), Some(("HEAD~1", None)));
        assert_eq!(parse_range("main..HEAD").ok(), Some(("main", Some("HEAD"))));
        for bad in ["", "..HEAD", "main..", "a...b"] {
            assert!(matches!(parse_range(bad), Err(Error::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn metadata_differences_are_dotted_leaves() {
        let d = compare_metadata(
            &json!({"nginx": {"workers": 2, "ports": [80]}, "gone": 1}),
            &json!({"nginx": {"workers": 4, "ports": [80]}, "new": {"a": true}}),
        );
        let keys: Vec<&str> = d.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, ["gone", "new.a", "nginx.workers"]);
        assert_eq!(d[2].old, Some(json!(2)));
        assert_eq!(d[2].new, Some(json!(4)));
        assert_eq!(d[0].new, None);
    }
}
