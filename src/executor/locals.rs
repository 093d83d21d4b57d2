//! Local preparation: what the executor knows of each item before touching the node
//! (expected content and its hash, the names a purging directory must keep).

use std::collections::BTreeSet;

use crate::items::Item;
use crate::items::state::{Local, path_of, stateful};

use super::*;

/// Builds the local knowledge of every item: expected content, its hash, and for purging
/// directories the names inside them that other items manage.
pub fn locals(items: &[Item], contents: Vec<Option<Vec<u8>>>, diff_limit: u64) -> Vec<Local> {
    let paths: Vec<Option<String>> = items
        .iter()
        .map(|i| i.is_path().then(|| path_of(i)))
        .collect();
    let links: BTreeSet<String> = items
        .iter()
        .filter(|i| stateful(&i.kind).is_some_and(|b| b.is_link()))
        .map(path_of)
        .collect();
    let mut scanned = BTreeSet::new();
    contents
        .into_iter()
        .enumerate()
        .map(|(idx, content)| {
            let item = &items[idx];
            let mut managed_children = BTreeSet::new();
            let behaviour = stateful(&item.kind);
            if behaviour.is_some_and(|b| b.purges()) {
                let me = path_of(item);
                let prefix = if me == "/" {
                    "/".to_string()
                } else {
                    format!("{me}/")
                };
                for p in paths.iter().flatten() {
                    if let Some(rest) = p.strip_prefix(&prefix)
                        && let Some(first) = rest.split('/').next().filter(|f| !f.is_empty())
                    {
                        managed_children.insert(first.to_string());
                    }
                }
            }
            let mut link_parents = Vec::new();
            let mut staging_scan = false;
            if item.is_path() {
                let me = path_of(item);
                let mut at = 0;
                while let Some(slash) = me.get(at + 1..).and_then(|rest| rest.find('/')) {
                    at += 1 + slash;
                    if links.contains(&me[..at]) {
                        link_parents.push(me[..at].to_string());
                    }
                }
                if behaviour.is_some_and(|b| b.stages()) {
                    staging_scan = scanned.insert(crate::items::file::parent_dir(&me));
                }
            }
            // Content holding a secret is never diffed, so the node's copy is never fetched.
            let secret = content.as_deref().is_some_and(crate::mask::contains_secret);
            Local {
                idx,
                content_hash: content.as_deref().map(crate::diff::sha256_hex),
                content: content.map(Arc::new),
                managed_children: managed_children.into_iter().collect(),
                diff_limit: if secret { 0 } else { diff_limit },
                link_parents,
                staging_scan,
                clean_staging: false,
            }
        })
        .collect()
}
