//! The one definition of an item's expected state for review: `cinch hash`, `cinch diff` and
//! (later) saved plans and drift records all go item → canonical expected state → sha256, so
//! a hash printed by one is the hash compared by the others.
//!
//! The canonical state is what the node must look like, never how the repo says it: no file
//! paths of the control machine, no bundle names, no source locations, no dependency edges,
//! object keys sorted. Moving an item to another bundle, renaming a template source or
//! reordering items.toml keeps every hash; changing what ends up on the node changes it.

use std::sync::Arc;

use rayon::prelude::*;
use serde_json::{Map, Value, json};

use crate::diag::Diagnostic;
use crate::items::state::{Local, stateful};
use crate::items::{Item, ItemKind};
use crate::repo::{Node, Repo};

/// Version of the canonical form, hashed into every node hash: a change of what is hashed
/// bumps it, so a hash never silently means two different things.
pub const FORMAT: u32 = 1;

/// Shown instead of a value that must never be printed (sensitive content, password hashes).
pub const MASK: &str = "[sensitive]";

impl Item {
    /// The canonical expected state of this item (keys sorted), given what the executor knows
    /// locally (the rendered content's hash): the input of [`state_hash`].
    pub fn canonical_expected(&self, local: &Local) -> Value {
        canonical(Value::Object(self.expected_entries(local)))
    }

    /// [`state_hash`] of [`Item::canonical_expected`], without the sorted copy (the hash sorts
    /// keys as it goes): apply hashes every item's expected state before its first command.
    pub fn expected_hash(&self, local: &Local) -> String {
        entries_hash(self.expected_entries(local).iter())
    }

    /// The entries of the canonical expected state, in no particular order.
    fn expected_entries(&self, local: &Local) -> Map<String, Value> {
        let mut m = Map::new();
        match stateful(&self.kind) {
            Some(behaviour) => match behaviour.expected(self, local) {
                Some(state) => {
                    for (k, v) in state {
                        // A probe-time invariant ("no staging leftovers"), the same for every
                        // file: not something the repo says.
                        if k != crate::items::file::LEFTOVERS {
                            m.insert(k, v);
                        }
                    }
                }
                None => {
                    m.insert("type".into(), json!(self.type_name()));
                    m.insert("absent".into(), json!(true));
                }
            },
            None => {
                m.insert("type".into(), json!(self.type_name()));
                if let ItemKind::Action(a) = &self.kind {
                    m.insert("command".into(), json!(a.command));
                    if !a.expected_return_code.is_empty() {
                        m.insert("expected_return_code".into(), json!(a.expected_return_code));
                    }
                    let optional = [
                        ("expected_stdout", &a.expected_stdout),
                        ("expected_stderr", &a.expected_stderr),
                        ("data_stdin", &a.data_stdin),
                    ];
                    for (k, v) in optional {
                        if let Some(v) = v {
                            m.insert(k.into(), json!(v));
                        }
                    }
                    if let Some(i) = a.interactive {
                        m.insert("interactive".into(), json!(i));
                    }
                }
            }
        }
        // Types whose state has no `type` key (packages, services) get one, so a state says
        // what it is on its own.
        m.entry("type").or_insert_with(|| json!(self.type_name()));
        // Whether the item is applied at all is part of what the node ends up with; the
        // order (needs, after, ...) is not.
        if self.deps.skip {
            m.insert("skip".into(), json!(true));
        }
        if self.deps.triggered {
            m.insert("triggered".into(), json!(true));
        }
        if let Some(u) = &self.deps.unless {
            m.insert("unless".into(), json!(u));
        }
        m
    }

    /// Keys of the canonical state whose values are never shown (their changes are named).
    pub fn masked_keys(&self) -> Vec<&'static str> {
        let mut keys: Vec<&'static str> = stateful(&self.kind)
            .map(|b| b.hidden_keys().to_vec())
            .unwrap_or_default();
        if let ItemKind::File(f) = &self.kind
            && f.sensitive
        {
            keys.push("content_hash");
        }
        keys
    }

    /// Whether the content of this item must never be shown or diffed.
    pub fn sensitive_content(&self) -> bool {
        matches!(&self.kind, ItemKind::File(f) if f.sensitive)
    }
}

pub use crate::digest::{canonical, entries_hash, state_hash};

/// One item as review sees it.
#[derive(Debug, Clone)]
pub struct ItemState {
    /// `TYPE:NAME`.
    pub id: String,
    /// [`Item::canonical_expected`], unmasked: only hashed, shown through [`ItemState::shown`].
    pub state: Value,
    /// [`state_hash`] of `state`.
    pub hash: String,
    /// The expected file content, for content diffs.
    pub content: Option<Arc<Vec<u8>>>,
    /// Never show the content.
    pub sensitive: bool,
    /// Keys of `state` never shown.
    pub masked: Vec<&'static str>,
}

impl ItemState {
    /// The state with masked values replaced by [`MASK`], safe to print.
    pub fn shown(&self) -> Value {
        let mut v = self.state.clone();
        if let Value::Object(m) = &mut v {
            for k in &self.masked {
                if let Some(slot) = m.get_mut(*k) {
                    *slot = json!(MASK);
                }
            }
        }
        v
    }
}

/// One node as review sees it: its items (sorted by id) and merged metadata.
#[derive(Debug, Clone)]
pub struct NodeState {
    /// The node's name.
    pub name: String,
    /// Every item of its plan (canned actions included), sorted by id.
    pub items: Vec<ItemState>,
    /// Merged metadata, keys sorted.
    pub metadata: Value,
}

impl NodeState {
    /// The node hash: its item ids and item hashes, and with `metadata` its metadata too.
    pub fn hash(&self, metadata: bool) -> String {
        let items: Map<String, Value> = self
            .items
            .iter()
            .map(|i| (i.id.clone(), json!(i.hash)))
            .collect();
        let mut input = json!({"format": FORMAT, "items": items});
        if metadata {
            input["metadata"] = self.metadata.clone();
        }
        state_hash(&input)
    }
}

/// The hash of a selection of nodes: their names and node hashes.
pub fn selection_hash(nodes: &[(&str, String)]) -> String {
    let m: Map<String, Value> = nodes
        .iter()
        .map(|(name, h)| (name.to_string(), json!(h)))
        .collect();
    state_hash(&json!({"format": FORMAT, "nodes": m}))
}

/// Runs the local checks of one node (as apply does) and computes every item's state.
pub fn node_state(repo: &Repo, node: &Node) -> Result<NodeState, Vec<Diagnostic>> {
    let checked = crate::prepare::prepare(repo, node)?;
    let locals = crate::executor::locals(&checked.plan.items, checked.contents, 0);
    let items = checked
        .plan
        .items
        .iter()
        .zip(locals)
        .map(|(item, local)| {
            let state = item.canonical_expected(&local);
            ItemState {
                id: item.id.clone(),
                hash: state_hash(&state),
                state,
                content: local.content,
                sensitive: item.sensitive_content(),
                masked: item.masked_keys(),
            }
        })
        .collect();
    Ok(NodeState {
        name: node.name.clone(),
        items,
        metadata: canonical(node.metadata()?.as_ref().clone()),
    })
}

/// [`node_state`] of every node, in parallel, in the order given; all problems of all nodes
/// (once each, in fixing order) when any node does not build.
pub fn node_states(repo: &Repo, nodes: &[&Node]) -> crate::error::Result<Vec<NodeState>> {
    map_node_states(repo, nodes, |s| s)
}

/// [`node_states`] that keeps only `keep(state)` of each node as soon as it is built, so a
/// 10,000-node `hash` never holds every node's rendered contents at once.
pub fn map_node_states<T: Send>(
    repo: &Repo,
    nodes: &[&Node],
    keep: impl Fn(NodeState) -> T + Sync,
) -> crate::error::Result<Vec<T>> {
    let results: Vec<Result<T, Vec<Diagnostic>>> = nodes
        .par_iter()
        .map(|n| node_state(repo, n).map(&keep))
        .collect();
    if crate::interrupt::requested() {
        return Err(crate::error::Error::Interrupted);
    }
    let mut states = Vec::with_capacity(results.len());
    let mut problems = Vec::new();
    for r in results {
        match r {
            Ok(s) => states.push(s),
            Err(d) => problems.extend(d),
        }
    }
    if problems.is_empty() {
        Ok(states)
    } else {
        Err(crate::error::Error::Repo(crate::diag::dedup_sorted(
            problems,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::testutil::Fixture;

    /// The canonical states of the fixture's items, by id, with their rendered content.
    fn states(fx: &Fixture) -> std::collections::BTreeMap<String, ItemState> {
        let bundles: Vec<&str> = fx.repo.bundles.keys().map(String::as_str).collect();
        let node = fx.node("n1", &bundles, json!({"who": "world"}));
        node_state(&fx.repo, &node)
            .unwrap_or_else(|d| panic!("{d:?}"))
            .items
            .into_iter()
            .map(|i| (i.id.clone(), i))
            .collect()
    }

    #[test]
    fn canonical_states_name_their_type_and_leave_out_how_the_repo_says_it() {
        let fx = Fixture::new()
            .toml(
                "b",
                r#"
[files."/etc/hello"]
source = "hello.j2"
content_type = "jinja2"
mode = "0600"
needs = ["pkg_apt:nginx"]
tags = ["t"]
comment = "why"

[files."/etc/old"]
delete = true

[pkg_apt.nginx]
installed = false

[actions.go]
command = "true"
unless = "false"
"#,
            )
            .source("b", "hello.j2", "hello {{ metadata.who }}\n");
        let s = states(&fx);
        let content_hash = crate::diff::sha256_hex(b"hello world\n");
        assert_eq!(
            s["file:/etc/hello"].state,
            json!({"content_hash": content_hash, "mode": "0600", "type": "file"})
        );
        assert_eq!(
            s["file:/etc/hello"].content.as_deref().map(Vec::as_slice),
            Some(&b"hello world\n"[..])
        );
        assert_eq!(
            s["file:/etc/old"].state,
            json!({"absent": true, "type": "file"})
        );
        assert_eq!(
            s["pkg_apt:nginx"].state,
            json!({"installed": false, "type": "pkg_apt"})
        );
        assert_eq!(
            s["action:go"].state,
            json!({"command": "true", "expected_return_code": [0], "type": "action", "unless": "false"})
        );
    }

    /// apply hashes expected states without the sorted copy: the same hash as review's.
    #[test]
    fn expected_hash_is_the_hash_of_the_canonical_expected_state() {
        let fx = Fixture::new().toml(
            "b",
            r#"
[files."/etc/hello"]
content = "hi\n"
mode = "0600"
owner = "root"
triggered = true

[files."/etc/old"]
delete = true

[directories."/srv"]
purge = true
skip = true

[symlinks."/srv/l"]
target = "/etc/hello"

[users.u]
groups = ["b", "a"]
home = "/home/u"

[groups.g]
gid = 5

[pkg_apt.nginx]
installed = false

[svc_systemd.nginx]
running = true

[actions.go]
command = "true"
unless = "false"
expected_return_code = [3, 0]
"#,
        );
        let node = fx.node("n1", &["b"], json!({}));
        let checked = crate::prepare::prepare(&fx.repo, &node).unwrap_or_else(|d| panic!("{d:?}"));
        let locals = crate::executor::locals(&checked.plan.items, checked.contents, 0);
        assert!(checked.plan.items.len() >= 9);
        for (item, local) in checked.plan.items.iter().zip(&locals) {
            assert_eq!(
                item.expected_hash(local),
                state_hash(&item.canonical_expected(local)),
                "{}",
                item.id
            );
        }
    }

    #[test]
    fn sensitive_content_and_password_hashes_are_masked_when_shown() {
        let fx = Fixture::new().toml(
            "b",
            r#"
[files."/etc/key"]
content = "hunter2"
sensitive = true

[users.u]
password_hash = "$6$salt$hash"
"#,
        );
        let s = states(&fx);
        let key = &s["file:/etc/key"];
        assert!(key.sensitive);
        assert_eq!(key.shown()["content_hash"], json!(MASK));
        assert_ne!(key.state["content_hash"], json!(MASK), "hashed unmasked");
        assert_eq!(s["user:u"].shown()["password_hash"], json!(MASK));
        assert!(!s["user:u"].shown().to_string().contains("$6$"));
    }

    #[test]
    fn canonical_json_does_not_depend_on_insertion_order() {
        let a = json!({"b": 1, "a": {"y": [2, 1], "x": "s"}});
        let mut m = Map::new();
        m.insert("a".into(), json!({"x": "s", "y": [2, 1]}));
        m.insert("b".into(), json!(1));
        assert_eq!(state_hash(&a), state_hash(&Value::Object(m)));
        assert_ne!(
            state_hash(&a),
            state_hash(&json!({"b": 1, "a": {"y": [1, 2], "x": "s"}}))
        );
        assert_eq!(
            serde_json::to_string(&canonical(a)).expect("json"),
            r#"{"a":{"x":"s","y":[2,1]},"b":1}"#
        );
    }

    /// The streamed hash must stay the hash of the canonical copy it replaced: saved plans
    /// and drift records written by earlier versions hold these hashes.
    #[test]
    fn state_hash_is_the_hash_of_the_canonical_copy_it_replaced() {
        use sha2::{Digest, Sha256};
        let v = json!({
            "z": [3, {"b": null, "a": true, "é": "q\"\\\n\u{1}"}],
            "a": -1.5,
            "m": {"y": [], "x": {}},
            "big": 18446744073709551615u64,
        });
        let reference = hex::encode(Sha256::digest(
            serde_json::to_vec(&canonical(v.clone())).unwrap(),
        ));
        assert_eq!(state_hash(&v), reference);
        assert_eq!(
            state_hash(&json!([1, "x"])),
            hex::encode(Sha256::digest(b"[1,\"x\"]"))
        );
    }
}
