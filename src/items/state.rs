//! The shape every stateful item type shares (BundleWrap's model): an expected state computed
//! locally, an actual state read from the node, and a fix driven by the keys that differ.
//! An item type implements [`Stateful`] in its own file and hands it out from its
//! `item_type::ItemType::stateful`.

use serde_json::{Map, Value};

use super::{Item, ItemKind};
use crate::node_shell::{Fields, Script};

/// A state: small JSON values per key (`type`, `content_hash`, `mode`, `owner`, ...).
pub type State = Map<String, Value>;

/// Room for a path item's state (type, ownership, size, ids, content hash, leftovers) made
/// once: growing 20,000 small maps key by key was most of judging an unchanged node.
pub const STATE_KEYS: usize = 12;

/// What the executor knows locally about one item before talking to the node.
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// Position of the item in the node's plan; the record id in generated scripts.
    pub idx: usize,
    /// Expected file bytes (rendered templates, decoded base64, ...); `None` = not managed.
    pub content: Option<std::sync::Arc<Vec<u8>>>,
    /// sha256 of `content`, hex.
    pub content_hash: Option<String>,
    /// For directories with `purge`: names directly inside that other items manage.
    pub managed_children: Vec<String>,
    /// Fetch the actual content of a differing text file (for a diff) up to this size; 0 = never.
    pub diff_limit: u64,
    /// Ancestors of this path that the repo manages as symlinks: the only symlinked parents a
    /// write may go through (any other one may be a node user's trap, `dir/evil -> /etc`).
    pub link_parents: Vec<String>,
    /// This item looks for staging leftovers of interrupted applies (`.cinch-tmp-*`) in its
    /// directory: set on one file item per directory, so each directory is looked at once.
    pub staging_scan: bool,
    /// Staging leftovers found by the probe are removed there and then (apply), instead of
    /// only being reported (verify).
    pub clean_staging: bool,
}

/// How one stateful item type is read, compared and fixed.
pub trait Stateful: Sync {
    /// What the node must look like; `None` = nothing may exist there.
    fn expected(&self, item: &Item, local: &Local) -> Option<State>;
    /// Appends the shell printing this item's `P` record.
    fn probe(&self, item: &Item, local: &Local, script: &mut Script);
    /// The actual state from a `P` record; `None` = absent.
    fn actual(&self, item: &Item, local: &Local, fields: &Fields) -> Option<State>;
    /// Appends the shell (one `X` record) moving the node from `actual` to `expected`.
    fn fix(&self, item: &Item, local: &Local, change: &Change, script: &mut Script);
    /// The change in words for the user (the diff); `fields` is the probe record it came from.
    fn show(&self, item: &Item, local: &Local, change: &Change, fields: Option<&Fields>) -> String {
        let _ = (item, local, fields);
        show_keys(change, &[])
    }
    /// Whether fixing this item may change other items' state (deleting a tree, replacing a
    /// directory), so later waves must re-read before trusting the first probe.
    fn disturbs_others(&self, change: &Change) -> bool {
        change.expected.is_none()
            || change
                .actual
                .as_ref()
                .and_then(|a| a.get("type"))
                .is_some_and(|t| t == "directory")
    }
    /// Why the probe record shows this item cannot be managed on this node at all (no
    /// systemd, no dpkg), so it fails with that reason instead of a meaningless fix.
    fn probe_error(&self, item: &Item, fields: &Fields) -> Option<String> {
        let _ = (item, fields);
        None
    }
    /// Whether this item is a symlink the repo keeps, so paths below it may go through it.
    fn is_link(&self) -> bool {
        false
    }
    /// Whether entries inside this directory that no item manages are removed (`purge`).
    fn purges(&self) -> bool {
        false
    }
    /// Whether this item writes through staging files (`.cinch-tmp-*`), whose leftovers of
    /// interrupted applies are looked for in its directory.
    fn stages(&self) -> bool {
        false
    }
    /// Whether the item's content must never be shown (its hash is withheld too).
    fn hides_content(&self) -> bool {
        false
    }
    /// State keys whose values must never be shown (diffs, events, JSON).
    fn hidden_keys(&self) -> &'static [&'static str] {
        &[]
    }
    /// Appends the fixes of all changed items of this type in one wave. Types whose fixes are
    /// cheaper or safer together (one apt transaction) override it; the rest fix one by one.
    fn fix_wave(&self, fixes: &[Fixing<'_>], script: &mut Script) {
        for f in fixes {
            if let Some(b) = stateful(&f.item.kind) {
                b.fix(f.item, f.local, f.change, script);
            }
        }
    }
    /// Why the generated action `ITEM_ID:action` (see [`canned_actions`]) has nothing left to
    /// do after this item was just fixed by `change` (a restart right after a start).
    fn makes_redundant(&self, change: &Change, action: &str) -> Option<String> {
        let _ = (change, action);
        None
    }
}

/// Shell that stops a fix step (exit 1, with the reason) when a parent directory of the
/// item's path is a symlink the repo does not manage: `mkdir -p`, `ln -s` or `rm -rf` through
/// `dir/evil -> /etc` would act on whatever the node's users point it at.
pub fn parent_guard(item: &Item, local: &Local) -> String {
    let mut call = format!("wl {}", crate::shell::quote(&path_of(item)));
    for l in &local.link_parents {
        call.push(' ');
        call.push_str(&crate::shell::quote(l));
    }
    call.push_str(" || { printf '%s\n' \"$wlr\" >&2; exit 1; }\n");
    call
}

/// One changed item handed to [`Stateful::fix_wave`].
pub struct Fixing<'a> {
    pub item: &'a Item,
    pub local: &'a Local,
    pub change: &'a Change,
}

/// `fix` of an item type whose real work is in an overridden `fix_wave` (it batches a whole
/// wave): one item is a wave of one.
pub fn fix_as_wave<T: Stateful + ?Sized>(
    t: &T,
    item: &Item,
    local: &Local,
    change: &Change,
    script: &mut Script,
) {
    t.fix_wave(
        &[Fixing {
            item,
            local,
            change,
        }],
        script,
    );
}

/// The difference between expected and actual: the diff shown and the input of a fix.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub expected: Option<State>,
    pub actual: Option<State>,
    /// Keys of `expected` whose value differs (empty for create/delete).
    pub keys: Vec<String>,
}

impl Change {
    /// Whether `between` would find a change, without building one.
    pub fn differs(expected: Option<&State>, actual: Option<&State>) -> bool {
        match (expected, actual) {
            (None, None) => false,
            (Some(e), Some(a)) => e.iter().any(|(k, v)| a.get(k) != Some(v)),
            _ => true,
        }
    }

    /// Compares; `None` when the item is correct.
    pub fn between(expected: Option<State>, actual: Option<State>) -> Option<Change> {
        match (&expected, &actual) {
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => Some(Change {
                expected,
                actual,
                keys: Vec::new(),
            }),
            (Some(e), Some(a)) => {
                let keys: Vec<String> = e
                    .iter()
                    .filter(|(k, v)| a.get(*k) != Some(*v))
                    .map(|(k, _)| k.clone())
                    .collect();
                if keys.is_empty() {
                    None
                } else {
                    Some(Change {
                        expected,
                        actual,
                        keys,
                    })
                }
            }
        }
    }

    /// The item must be created.
    pub fn create(&self) -> bool {
        self.expected.is_some() && self.actual.is_none()
    }

    /// The item must be removed.
    pub fn delete(&self) -> bool {
        self.expected.is_none() && self.actual.is_some()
    }

    /// Whether `key` must change (always true when creating).
    pub fn needs(&self, key: &str) -> bool {
        self.create() || self.keys.iter().any(|k| k == key)
    }

    /// The word for the user: create, delete or fix.
    pub fn verb(&self) -> &'static str {
        if self.create() {
            "create"
        } else if self.delete() {
            "delete"
        } else {
            "fix"
        }
    }
}

/// The generic rendering of a change: the created/deleted state, or `key: old → new` lines
/// (`hidden` keys are named but their values withheld).
pub fn show_keys(change: &Change, hidden: &[&str]) -> String {
    let val = |k: &str, v: Option<&Value>| match v {
        _ if hidden.contains(&k) => "(hidden)".to_string(),
        None => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    let mut out = String::new();
    if let (Some(e), None) = (&change.expected, &change.actual) {
        for (k, v) in e.iter().filter(|(k, _)| *k != "type") {
            out.push_str(&crate::diff::key_line(k, "-", &val(k, Some(v))));
        }
    } else if let (None, Some(a)) = (&change.expected, &change.actual) {
        let t = val("type", a.get("type"));
        out.push_str(&crate::diff::key_line("type", &t, "-"));
    } else if let (Some(e), Some(a)) = (&change.expected, &change.actual) {
        for k in &change.keys {
            out.push_str(&crate::diff::key_line(
                k,
                &val(k, a.get(k)),
                &val(k, e.get(k)),
            ));
        }
    }
    out
}

/// The behaviour of `kind`, or `None` for actions (which have no state, only a run); handed
/// out by the kind's type unit (see [`super::registry`]).
pub fn stateful(kind: &ItemKind) -> Option<&dyn Stateful> {
    kind.item_type().stateful(kind)
}

/// What `kind` runs, for types that run instead of being probed and fixed (actions).
pub fn runnable(kind: &ItemKind) -> Option<&super::ActionAttrs> {
    kind.item_type().run(kind)
}

/// The items an item brings along, with ids `ITEM_ID:NAME` (BundleWrap's canned actions such
/// as `svc_systemd:nginx:restart`); [`crate::plan::Plan::build`] adds them before resolving
/// dependencies so other items can trigger them.
pub fn canned_actions(_node: &crate::repo::Node, item: &Item) -> Vec<Item> {
    item.kind.item_type().canned_actions(item)
}

/// The node path an item manages, without trailing slashes (kept `/` for the root).
pub fn path_of(item: &Item) -> String {
    let trimmed = item.name.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Parsed `stat -c '%a/%u/%g/%U/%G/%s'`.
pub struct Stat {
    pub mode: u32,
    pub uid: String,
    pub gid: String,
    pub user: String,
    pub group: String,
    pub size: u64,
}

impl Stat {
    /// Reads the `stat` field of a probe record.
    pub fn from_fields(fields: &Fields) -> Option<Stat> {
        let s = fields.text("stat")?;
        let mut it = s.trim().split('/');
        Some(Stat {
            mode: u32::from_str_radix(it.next()?, 8).ok()?,
            uid: it.next()?.to_string(),
            gid: it.next()?.to_string(),
            user: it.next()?.to_string(),
            group: it.next()?.to_string(),
            size: it.next()?.parse().ok()?,
        })
    }

    /// Owner in the form the repo used (numeric or name), so the comparison is like for like.
    pub fn owner_as(&self, wanted: &str) -> String {
        if is_numeric(wanted) {
            self.uid.clone()
        } else {
            self.user.clone()
        }
    }

    /// Group in the form the repo used.
    pub fn group_as(&self, wanted: &str) -> String {
        if is_numeric(wanted) {
            self.gid.clone()
        } else {
            self.group.clone()
        }
    }
}

fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `0644`-style text for a mode, as users write it.
pub fn mode_text(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// Fills `mode`, `owner`, `group` of an actual state from `stat`, for the keys `expected` has.
pub fn put_ownership(state: &mut State, expected: Option<&State>, stat: &Stat) {
    state.insert("mode".into(), Value::String(mode_text(stat.mode)));
    let want = |k: &str| {
        expected
            .and_then(|e| e.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    state.insert("owner".into(), Value::String(stat.owner_as(want("owner"))));
    state.insert("group".into(), Value::String(stat.group_as(want("group"))));
}

/// Adds `mode`, `owner`, `group` to an expected state when the repo sets them.
pub fn expect_ownership(
    state: &mut State,
    mode: Option<u32>,
    owner: Option<&str>,
    group: Option<&str>,
) {
    if let Some(m) = mode {
        state.insert("mode".into(), Value::String(mode_text(m)));
    }
    if let Some(o) = owner {
        state.insert("owner".into(), Value::String(o.to_string()));
    }
    if let Some(g) = group {
        state.insert("group".into(), Value::String(g.to_string()));
    }
}

/// The `chown` argument for the owner/group that must change ("" when none).
pub fn chown_spec(owner: Option<&str>, group: Option<&str>) -> String {
    match (owner, group) {
        (Some(o), Some(g)) => format!("{o}:{g}"),
        (Some(o), None) => o.to_string(),
        (None, Some(g)) => format!(":{g}"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(pairs: &[(&str, &str)]) -> State {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect()
    }

    #[test]
    fn change_lists_only_expected_keys_that_differ() {
        let e = st(&[("type", "file"), ("mode", "0644")]);
        let a = st(&[("type", "file"), ("mode", "0600"), ("owner", "x")]);
        let c = Change::between(Some(e.clone()), Some(a)).unwrap();
        assert_eq!(c.keys, vec!["mode".to_string()]);
        assert_eq!(c.verb(), "fix");
        assert!(Change::between(Some(e.clone()), Some(e.clone())).is_none());
        assert!(Change::between(Some(e.clone()), None).unwrap().create());
        assert!(Change::between(None, Some(e)).unwrap().delete());
        assert!(Change::between(None, None).is_none());
    }
}
