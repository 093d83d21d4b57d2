//! The item loader: a node's items from its bundles' items.toml (parsed once per bundle and
//! shared) and items.rhai (evaluated per node), with the checks that need all of them at once
//! (duplicate ids, dependencies on bundles that do not exist). Above `parse` and `rhai`, so
//! neither needs the other's loader.

use std::fmt;
use std::sync::OnceLock;

use crate::diag::{Diagnostic, Location, did_you_mean};
use crate::items::parse::{build_items, parse_toml};
use crate::items::{Item, selector};
use crate::repo::{Bundle, Node, Repo};

/// What a bundle's item files turn into, computed once and shared by every node with the bundle
/// (1000 nodes must not parse the same items.toml 1000 times).
#[derive(Default)]
pub struct BundleCache {
    pub(crate) toml: OnceLock<Result<Vec<Item>, Vec<Diagnostic>>>,
    pub(crate) rhai: OnceLock<Result<Option<super::rhai::Compiled>, Vec<Diagnostic>>>,
    pub(crate) templates: OnceLock<minijinja::Environment<'static>>,
    /// How many of the repo's nodes have the bundle.
    users: OnceLock<usize>,
}

impl fmt::Debug for BundleCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BundleCache")
            .field("toml_parsed", &self.toml.get().is_some())
            .field("rhai_compiled", &self.rhai.get().is_some())
            .finish()
    }
}

impl BundleCache {
    /// `bundle`'s cache, created on first use; it lives in the bundle's type-erased
    /// [`crate::repo::DerivedCache`], which nothing but the item loader fills.
    pub(crate) fn of(bundle: &Bundle) -> &BundleCache {
        bundle
            .items_cache
            .get_or_init(BundleCache::default)
            .expect("a bundle's derived cache holds only the item loader's BundleCache")
    }
}

/// Parses and validates a bundle's items.toml (no file: no items).
fn load_static(bundle: &Bundle) -> Result<Vec<Item>, Vec<Diagnostic>> {
    let path = bundle.dir.join("items.toml");
    let text = match crate::repo::read_text(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(vec![
                Diagnostic::at(
                    Location::file(&path),
                    format!("cannot read items.toml: {e}"),
                )
                .as_root_cause(),
            ]);
        }
    };
    let (raws, mut diags) = parse_toml(&path, &text);
    let (items, more) = build_items(bundle, raws);
    diags.extend(more);
    if diags.is_empty() {
        Ok(items)
    } else {
        crate::diag::sort(&mut diags);
        Err(diags)
    }
}

/// The static items of a bundle, parsed on first use and then shared.
pub fn static_items(bundle: &Bundle) -> &Result<Vec<Item>, Vec<Diagnostic>> {
    BundleCache::of(bundle)
        .toml
        .get_or_init(|| load_static(bundle))
}

/// The static items of `bundle` for one node: a copy of the shared ones, or, for a bundle
/// that only one node of the repo has, its own (copying 20,000 items took 20 ms and 40 MB of
/// fresh memory for a cache no other node would read).
fn node_static_items(repo: &Repo, bundle: &Bundle) -> Result<Vec<Item>, Vec<Diagnostic>> {
    let cache = BundleCache::of(bundle);
    if cache.toml.get().is_none() {
        let users = cache.users.get_or_init(|| {
            repo.nodes
                .values()
                .filter(|n| n.bundles.contains(&bundle.name))
                .count()
        });
        if *users == 1 {
            return load_static(bundle);
        }
    }
    static_items(bundle).clone()
}

/// Every item of every bundle of `node` (items.toml parsed once per bundle, items.rhai evaluated
/// for this node), sorted by id; duplicate ids are errors naming both definitions.
pub fn load_node_items(repo: &Repo, node: &Node) -> Result<Vec<Item>, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut items: Vec<Item> = Vec::new();
    for name in &node.bundles {
        let Some(bundle) = repo.bundles.get(name) else {
            let mut d = Diagnostic::at(
                node.location.clone(),
                format!(
                    "node '{}' has bundle '{name}', which does not exist",
                    node.name
                ),
            );
            if let Some(g) = did_you_mean(name, repo.bundles.keys().map(String::as_str)) {
                d = d.with_hint(format!("did you mean '{g}'?"));
            }
            diags.push(d);
            continue;
        };
        match node_static_items(repo, bundle) {
            Ok(its) => items.extend(its),
            Err(ds) => diags.extend(ds),
        }
        match super::rhai::node_items(repo, bundle, node, &BundleCache::of(bundle).rhai) {
            Ok(its) => items.extend(its),
            Err(ds) => diags.extend(ds),
        }
    }
    items.sort_by(|a, b| a.id.cmp(&b.id));
    diags.extend(duplicates(&items, &node.name));
    diags.extend(unknown_bundle_dependencies(repo, &items));
    if !diags.is_empty() {
        return Err(diags);
    }
    Ok(items)
}

/// A `bundle:NAME` dependency on a bundle the repo does not have is a typo: it would match
/// nothing and silently drop the ordering. (A bundle that exists but is not on this node is
/// fine: shared bundles may order themselves after optional ones.)
fn unknown_bundle_dependencies(repo: &Repo, items: &[Item]) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for item in items {
        let d = &item.deps;
        let lists: [(&str, &[String]); 8] = [
            ("needs", &d.needs),
            ("needed_by", &d.needed_by),
            ("after", &d.after),
            ("before", &d.before),
            ("precedes", &d.precedes),
            ("preceded_by", &d.preceded_by),
            ("triggers", &d.triggers),
            ("triggered_by", &d.triggered_by),
        ];
        for (attr, sels) in lists {
            for sel in sels {
                let Some(selector::Selector::Bundle(name)) = selector::Selector::parse(sel) else {
                    continue;
                };
                if repo.bundles.contains_key(name) {
                    continue;
                }
                let mut diag = Diagnostic::at(
                    d.location_of(attr, &item.location).clone(),
                    format!(
                        "{} in bundle '{}' has a dependency ({attr}) on '{sel}', but the repo \
                         has no bundle '{name}'",
                        item.id, item.bundle
                    ),
                );
                diag = match did_you_mean(name, repo.bundles.keys().map(String::as_str)) {
                    Some(g) => diag.with_hint(format!("did you mean 'bundle:{g}'?")),
                    None => diag.with_hint(format!("create bundles/{name}/ or fix the name")),
                };
                diags.push(diag);
            }
        }
    }
    diags
}

/// Items sharing an id (`items` sorted by id), as one diagnostic each naming both places.
pub(crate) fn duplicates(items: &[Item], node: &str) -> Vec<Diagnostic> {
    items
        .windows(2)
        .filter(|w| w[0].id == w[1].id)
        .map(|w| {
            Diagnostic::at(
                w[1].location.clone(),
                format!(
                    "duplicate definition of {} on node '{node}': in bundle '{}' ({}) and in \
                     bundle '{}' ({})",
                    w[0].id, w[0].bundle, w[0].location, w[1].bundle, w[1].location
                ),
            )
            .with_hint("an item id may be defined only once per node; rename or remove one")
        })
        .collect()
}
