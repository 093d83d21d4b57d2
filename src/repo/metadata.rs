//! Merging a node's metadata from its layers (bundle defaults < reactors < groups < node),
//! finding conflicts between layers that have no precedence over each other, and remembering
//! which layer set each value (for `cinch metadata --blame`).

use std::collections::BTreeMap;

// Every merged entry records its path: SipHash on those paths was 3 % of `cinch test`.
use foldhash::HashMap;

use serde_json::{Map, Value};

use crate::repo::toml_file::SpanMap;

/// Who contributed one layer of a node's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source<'a> {
    /// `bundles/NAME/metadata.toml`.
    Bundle(&'a str),
    /// A group's `metadata`, with its index into the loader's group list.
    Group(&'a str, usize),
    /// The node's own `metadata`.
    Node(&'a str),
    /// A reactor: bundle and function name in `bundles/BUNDLE/metadata.rhai`.
    Reactor(&'a str, &'a str),
}

/// The key that marks a value as atomic: `{ __atomic__ = [80] }` in TOML, `atomic([80])` in
/// Rhai. An atomic value replaces what lower layers set instead of merging with it.
pub const ATOMIC_KEY: &str = "__atomic__";

/// The value inside an atomic marker, if `v` is one.
pub(crate) fn atomic_inner(v: &Value) -> Option<&Value> {
    match v {
        Value::Object(m) if m.len() == 1 => m.get(ATOMIC_KEY),
        _ => None,
    }
}

/// `v` with every atomic marker in it replaced by the value it wraps.
pub(crate) fn strip_atomic(v: &Value) -> Value {
    // Most values hold no marker: a plain clone copies a map without rebuilding its index.
    if !has_atomic(v) {
        return v.clone();
    }
    if let Some(inner) = atomic_inner(v) {
        return strip_atomic(inner);
    }
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), strip_atomic(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_atomic).collect()),
        other => other.clone(),
    }
}

/// Whether an atomic marker is anywhere in `v`.
fn has_atomic(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.contains_key(ATOMIC_KEY) || m.values().any(has_atomic),
        Value::Array(a) => a.iter().any(has_atomic),
        _ => false,
    }
}

impl std::fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Bundle(b) => write!(f, "bundle '{b}' (metadata.toml)"),
            Source::Group(g, _) => write!(f, "group '{g}'"),
            Source::Node(n) => write!(f, "node '{n}'"),
            Source::Reactor(b, r) => write!(f, "reactor '{r}' of bundle '{b}'"),
        }
    }
}

/// One layer, lowest precedence first in the list given to [`merge`].
pub(crate) struct Layer<'a> {
    pub source: Source<'a>,
    pub value: &'a Value,
    pub spans: &'a SpanMap,
}

/// Two layers setting the same path to different values with neither taking precedence.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Conflict {
    pub path: Vec<String>,
    /// Index of the layer that set the value first.
    pub first: usize,
    /// Index of the layer that disagrees.
    pub second: usize,
    pub first_value: Value,
    pub second_value: Value,
}

/// Merges layers: maps recursively, lists unioned in order, scalars from the later layer when
/// `overrides(earlier, later)` says it has precedence; otherwise the first value is kept and
/// a [`Conflict`] is reported.
pub(crate) fn merge(
    layers: &[Layer<'_>],
    overrides: impl Fn(&Source<'_>, &Source<'_>) -> bool,
) -> (Value, Vec<Conflict>) {
    // Who set what is only needed while merging: no need to hand it out sorted.
    let (value, state) = merge_state(layers, overrides);
    (value, state.conflicts)
}

/// Which layers set each path: the path where a value was inserted or replaced whole, or a
/// list that several layers added entries to.
pub(crate) type Owners = BTreeMap<Vec<String>, Vec<usize>>;

/// Like [`merge`], also returning which layers set each path.
pub(crate) fn merge_traced(
    layers: &[Layer<'_>],
    overrides: impl Fn(&Source<'_>, &Source<'_>) -> bool,
) -> (Value, Vec<Conflict>, Owners) {
    let (value, state) = merge_state(layers, overrides);
    let owners = state
        .owners
        .into_iter()
        .map(|(path, idx)| {
            let mut all = vec![idx];
            if let Some(more) = state.list_contributors.get(&path) {
                all.extend(more.iter().filter(|&&m| m != idx));
            }
            (path, all)
        })
        .collect();
    (value, state.conflicts, owners)
}

/// The merge itself, with the bookkeeping it needed (owners, list contributors, conflicts).
fn merge_state(
    layers: &[Layer<'_>],
    overrides: impl Fn(&Source<'_>, &Source<'_>) -> bool,
) -> (Value, MergeState) {
    let mut out = Map::new();
    let mut state = MergeState::default();
    for (idx, layer) in layers.iter().enumerate() {
        if let Value::Object(map) = layer.value {
            let mut path = Vec::new();
            merge_map(
                &mut out, map, &mut path, idx, layers, &overrides, &mut state,
            );
        }
    }
    (Value::Object(out), state)
}

#[derive(Default)]
struct MergeState {
    /// Which layer last wrote each path where a value was inserted or replaced whole.
    owners: HashMap<Vec<String>, usize>,
    /// Later layers that added entries to a list.
    list_contributors: HashMap<Vec<String>, Vec<usize>>,
    conflicts: Vec<Conflict>,
}

impl MergeState {
    fn owner(&self, path: &[String]) -> Option<usize> {
        (0..=path.len())
            .rev()
            .find_map(|n| self.owners.get(&path[..n]).copied())
    }
}

fn merge_map(
    dst: &mut Map<String, Value>,
    src: &Map<String, Value>,
    path: &mut Vec<String>,
    idx: usize,
    layers: &[Layer<'_>],
    overrides: &impl Fn(&Source<'_>, &Source<'_>) -> bool,
    state: &mut MergeState,
) {
    for (key, value) in src {
        merge_entry(dst, key, value, path, idx, layers, overrides, state);
    }
}

/// Merges one entry of layer `idx` into `dst`: everything it reads or writes in `dst` and
/// `state` lies under `path` + `key`, so top-level keys merge independently of each other.
#[allow(clippy::too_many_arguments)]
fn merge_entry(
    dst: &mut Map<String, Value>,
    key: &String,
    value: &Value,
    path: &mut Vec<String>,
    idx: usize,
    layers: &[Layer<'_>],
    overrides: &impl Fn(&Source<'_>, &Source<'_>) -> bool,
    state: &mut MergeState,
) {
    {
        path.push(key.clone());
        let atomic = atomic_inner(value).is_some();
        match dst.get_mut(key) {
            None => {
                dst.insert(key.clone(), strip_atomic(value));
                state.owners.insert(path.clone(), idx);
            }
            Some(Value::Object(d)) if value.is_object() && !atomic => {
                if let Value::Object(s) = value {
                    merge_map(d, s, path, idx, layers, overrides, state);
                }
            }
            Some(Value::Array(d)) if value.is_array() => {
                if let Value::Array(s) = value {
                    let mut added = false;
                    for v in s {
                        let v = strip_atomic(v);
                        if !d.contains(&v) {
                            d.push(v);
                            added = true;
                        }
                    }
                    if added {
                        state
                            .list_contributors
                            .entry(path.clone())
                            .or_default()
                            .push(idx);
                    }
                }
            }
            Some(existing) => {
                let value = strip_atomic(value);
                if *existing != value {
                    let first = state.owner(path).unwrap_or(idx);
                    if first == idx || overrides(&layers[first].source, &layers[idx].source) {
                        *existing = value;
                        // What lower layers set below this path is gone with it.
                        let len = path.len();
                        state
                            .owners
                            .retain(|k, _| k.len() <= len || !k.starts_with(path));
                        state
                            .list_contributors
                            .retain(|k, _| k.len() < len || !k.starts_with(path));
                        state.owners.insert(path.clone(), idx);
                    } else {
                        state.conflicts.push(Conflict {
                            path: path.clone(),
                            first,
                            second: idx,
                            first_value: existing.clone(),
                            second_value: value,
                        });
                    }
                }
            }
        }
        path.pop();
    }
}

/// What [`merge`] gives for the top-level keys `keys` alone (those that some layer has),
/// without merging the others.
pub(crate) fn merge_keys(
    layers: &[Layer<'_>],
    overrides: impl Fn(&Source<'_>, &Source<'_>) -> bool,
    keys: &[String],
) -> Map<String, Value> {
    let mut out = Map::new();
    let mut state = MergeState::default();
    for (idx, layer) in layers.iter().enumerate() {
        if let Value::Object(map) = layer.value {
            for key in keys {
                if let Some((key, value)) = map.get_key_value(key) {
                    let mut path = Vec::new();
                    merge_entry(
                        &mut out, key, value, &mut path, idx, layers, &overrides, &mut state,
                    );
                }
            }
        }
    }
    out
}

/// The top-level keys of [`merge`]'s result, in its order: first appearance, layer by layer.
pub(crate) fn key_order<'a>(layers: &[Layer<'a>]) -> Vec<&'a str> {
    let mut seen = foldhash::HashSet::default();
    let mut order = Vec::new();
    for layer in layers {
        if let Value::Object(map) = layer.value {
            for key in map.keys() {
                if seen.insert(key.as_str()) {
                    order.push(key.as_str());
                }
            }
        }
    }
    order
}

/// Follows a dotted path (`nginx.workers`, list indexes as numbers) into metadata.
pub fn lookup<'v>(metadata: &'v Value, dotted: &str) -> Option<&'v Value> {
    dotted.split('.').try_fold(metadata, |v, key| match v {
        Value::Object(m) => m.get(key),
        Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layer<'a>(source: Source<'a>, value: &'a Value, spans: &'a SpanMap) -> Layer<'a> {
        Layer {
            source,
            value,
            spans,
        }
    }

    /// Groups 0 and 1 are unrelated; group 2 is a subgroup of group 0.
    fn overrides(a: &Source<'_>, b: &Source<'_>) -> bool {
        match (a, b) {
            (Source::Group(_, x), Source::Group(_, y)) => *x == 0 && *y == 2,
            (Source::Bundle(_), Source::Bundle(_)) => false,
            _ => true,
        }
    }

    #[test]
    fn precedence_maps_and_lists() {
        let s = SpanMap::default();
        let b = json!({"nginx": {"workers": 1, "mods": ["a"]}, "only_bundle": true});
        let g0 = json!({"nginx": {"workers": 2, "mods": ["b", "a"]}});
        let g2 = json!({"nginx": {"workers": 3}});
        let n = json!({"nginx": {"mods": ["c"]}});
        let layers = [
            layer(Source::Bundle("nginx"), &b, &s),
            layer(Source::Group("web", 0), &g0, &s),
            layer(Source::Group("eu", 2), &g2, &s),
            layer(Source::Node("web1"), &n, &s),
        ];
        let (v, conflicts) = merge(&layers, overrides);
        assert!(conflicts.is_empty(), "{conflicts:?}");
        assert_eq!(
            v,
            json!({"nginx": {"workers": 3, "mods": ["a", "b", "c"]}, "only_bundle": true})
        );
    }

    #[test]
    fn unrelated_groups_conflict() {
        let s = SpanMap::default();
        let g0 = json!({"a": {"b": 1}, "same": 5});
        let g1 = json!({"a": {"b": 2}, "same": 5});
        let layers = [
            layer(Source::Group("x", 0), &g0, &s),
            layer(Source::Group("y", 1), &g1, &s),
        ];
        let (v, conflicts) = merge(&layers, overrides);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].path, vec!["a", "b"]);
        assert_eq!((conflicts[0].first, conflicts[0].second), (0, 1));
        assert_eq!(v["a"]["b"], json!(1));
    }

    #[test]
    fn node_beats_type_mismatch_but_bundles_clash() {
        let s = SpanMap::default();
        let b1 = json!({"x": {"y": 1}});
        let b2 = json!({"x": 7});
        let n = json!({"x": "node"});
        let layers = [
            layer(Source::Bundle("b1"), &b1, &s),
            layer(Source::Bundle("b2"), &b2, &s),
            layer(Source::Node("n"), &n, &s),
        ];
        let (v, conflicts) = merge(&layers, overrides);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].path, vec!["x"]);
        assert_eq!(v, json!({"x": "node"}));
    }

    #[test]
    fn atomic_value_replaces_lower_layers_and_leaves_no_marker() {
        let s = SpanMap::default();
        let b = json!({"ports": [80, 443], "opts": {"a": 1, "b": 2}});
        let n = json!({"ports": {ATOMIC_KEY: [8080]}, "opts": {ATOMIC_KEY: {"c": 3}}, "new": {ATOMIC_KEY: [1]}});
        let layers = [
            layer(Source::Bundle("b"), &b, &s),
            layer(Source::Node("n"), &n, &s),
        ];
        let (v, conflicts, owners) = merge_traced(&layers, overrides);
        assert!(conflicts.is_empty(), "{conflicts:?}");
        assert_eq!(v, json!({"ports": [8080], "opts": {"c": 3}, "new": [1]}));
        // The replaced subtree is owned by the node alone.
        assert_eq!(owners.get(&vec!["opts".to_string()]), Some(&vec![1]));
        assert!(!owners.contains_key(&vec!["opts".to_string(), "a".to_string()]));
    }

    #[test]
    fn reactors_conflict_with_each_other_but_not_with_defaults() {
        let s = SpanMap::default();
        let d = json!({"x": 1});
        let r1 = json!({"x": 2});
        let r2 = json!({"x": 3});
        let layers = [
            layer(Source::Bundle("b"), &d, &s),
            layer(Source::Reactor("b", "one"), &r1, &s),
            layer(Source::Reactor("b", "two"), &r2, &s),
        ];
        let (v, conflicts) = merge(&layers, |a, b| {
            !matches!((a, b), (Source::Reactor(..), Source::Reactor(..)))
        });
        assert_eq!(v, json!({"x": 2}));
        assert_eq!(conflicts.len(), 1);
        assert_eq!((conflicts[0].first, conflicts[0].second), (1, 2));
    }

    /// strip_atomic clones marker-free values as they are and still finds deep markers.
    #[test]
    fn strip_atomic_copies_plain_values_and_unwraps_nested_markers() {
        let plain = json!({"b": [1, {"c": "x"}], "a": {"z": null}});
        assert_eq!(strip_atomic(&plain), plain);
        let copy = strip_atomic(&plain);
        let keys: Vec<&String> = copy
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys, ["b", "a"], "key order must be kept");
        let nested = json!({"a": [{"b": {ATOMIC_KEY: [1]}}], "c": {ATOMIC_KEY: {"d": 2}}});
        assert_eq!(
            strip_atomic(&nested),
            json!({"a": [{"b": [1]}], "c": {"d": 2}})
        );
    }

    #[test]
    fn lookup_follows_dots_and_indexes() {
        let v = json!({"a": {"b": [10, {"c": true}]}});
        assert_eq!(lookup(&v, "a.b.1.c"), Some(&json!(true)));
        assert_eq!(lookup(&v, "a.b.0"), Some(&json!(10)));
        assert_eq!(lookup(&v, "a.x"), None);
    }
}
