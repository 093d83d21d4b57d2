//! Targets (docs/repo.md): comma-separated selectors, unioned, minus negations. A selector
//! that matches nothing is an error, because a typo must never silently shrink or widen what
//! an apply touches.

use std::collections::BTreeSet;

use crate::diag::did_you_mean;
use crate::error::{Error, Result};
use crate::repo::{Node, Repo};

impl Repo {
    /// The nodes a target names, sorted by name.
    pub fn select(&self, target: &str) -> Result<Vec<&Node>> {
        // Without this, `all` (or a negation alone) on an empty repo would "succeed" with no
        // nodes, and an apply would exit 0 having done nothing.
        if self.nodes.is_empty() {
            return Err(Error::Usage(format!(
                "target '{target}' matches nothing: the repo at {} defines no nodes\n  \
                 hint: add [nodes.NAME] tables to nodes.toml or to a file in nodes/ \
                 (`cinch repo create DIR` writes an example repo)",
                self.path.display()
            )));
        }
        let mut include: BTreeSet<&str> = BTreeSet::new();
        let mut exclude: BTreeSet<&str> = BTreeSet::new();
        let mut any_positive = false;
        let mut any_negative = false;
        for raw in target.split(',') {
            let selector = raw.trim();
            let (negated, selector) = match selector.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, selector),
            };
            if selector.is_empty() {
                return Err(Error::Usage(format!(
                    "target '{target}' has an empty selector; selectors are separated by commas"
                )));
            }
            let matched = self.match_selector(selector)?;
            if negated {
                any_negative = true;
                exclude.extend(matched);
            } else {
                any_positive = true;
                include.extend(matched);
            }
        }
        if !any_positive {
            include.extend(self.nodes.keys().map(String::as_str));
        }
        let selected: Vec<&Node> = include
            .difference(&exclude)
            .filter_map(|name| self.nodes.get(*name))
            .collect();
        if selected.is_empty() && any_negative {
            return Err(Error::Usage(format!(
                "target '{target}' leaves no nodes after its negations"
            )));
        }
        Ok(selected)
    }

    /// Node names one selector (without `!`) stands for; never empty.
    fn match_selector(&self, selector: &str) -> Result<Vec<&str>> {
        if selector == "all" {
            return Ok(self.nodes.keys().map(String::as_str).collect());
        }
        if let Some(bundle) = selector.strip_prefix("bundle:") {
            if !self.bundles.contains_key(bundle) {
                return Err(unknown("bundle", bundle, self.bundles.keys()));
            }
            let nodes: Vec<&str> = self
                .nodes
                .values()
                .filter(|n| n.bundles.iter().any(|b| b == bundle))
                .map(|n| n.name.as_str())
                .collect();
            if nodes.is_empty() {
                return Err(Error::Usage(format!("no node has bundle '{bundle}'")));
            }
            return Ok(nodes);
        }
        if let Some(group) = selector.strip_prefix("group:") {
            return match self.groups.get(group) {
                Some(_) => self.group_nodes(group),
                None => Err(unknown("group", group, self.groups.keys())),
            };
        }
        if selector.contains(['*', '?', '[', '{']) {
            let glob = globset::Glob::new(selector)
                .map_err(|e| Error::Usage(format!("invalid pattern '{selector}': {e}")))?
                .compile_matcher();
            let nodes: Vec<&str> = self
                .nodes
                .keys()
                .filter(|n| glob.is_match(n.as_str()))
                .map(String::as_str)
                .collect();
            if nodes.is_empty() {
                return Err(Error::Usage(format!("no node matches '{selector}'")));
            }
            return Ok(nodes);
        }
        if let Some((name, _)) = self.nodes.get_key_value(selector) {
            return Ok(vec![name.as_str()]);
        }
        if self.groups.contains_key(selector) {
            return self.group_nodes(selector);
        }
        let names = self.nodes.keys().chain(self.groups.keys());
        let mut msg = format!("no node or group named '{selector}'");
        if let Some(close) = did_you_mean(selector, names.map(String::as_str)) {
            msg.push_str(&format!(" (did you mean '{close}'?)"));
        }
        Err(Error::Usage(msg))
    }

    fn group_nodes(&self, group: &str) -> Result<Vec<&str>> {
        let nodes: Vec<&str> = self
            .groups
            .get(group)
            .map(|g| g.nodes.iter().map(String::as_str).collect())
            .unwrap_or_default();
        if nodes.is_empty() {
            return Err(Error::Usage(format!("group '{group}' has no nodes")));
        }
        Ok(nodes)
    }
}

fn unknown<'a>(kind: &str, name: &str, known: impl Iterator<Item = &'a String>) -> Error {
    let mut msg = format!("no {kind} named '{name}'");
    if let Some(close) = did_you_mean(name, known.map(String::as_str)) {
        msg.push_str(&format!(" (did you mean '{close}'?)"));
    }
    Error::Usage(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> (tempfile::TempDir, Repo) {
        let dir = tempfile::tempdir().unwrap();
        let w = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w(
            "nodes.toml",
            r#"
[nodes.web1]
bundles = ["nginx"]
[nodes.web2]
[nodes.web3]
[nodes.db1]
groups = ["db"]
[nodes.edge]
"#,
        );
        w(
            "groups.toml",
            r#"
[groups.webservers]
member_patterns = ["^web"]
bundles = ["base"]
[groups.db]
[groups.empty]
"#,
        );
        w("bundles/nginx/items.toml", "");
        w("bundles/base/items.toml", "");
        w("bundles/unused/items.toml", "");
        let repo = Repo::load(dir.path()).unwrap();
        (dir, repo)
    }

    fn names(repo: &Repo, target: &str) -> Vec<String> {
        repo.select(target)
            .unwrap_or_else(|e| panic!("{target}: {e}"))
            .into_iter()
            .map(|n| n.name.clone())
            .collect()
    }

    fn err(repo: &Repo, target: &str) -> String {
        match repo.select(target) {
            Err(Error::Usage(m)) => m,
            other => panic!("{target}: expected usage error, got {other:?}"),
        }
    }

    #[test]
    fn union_of_nodes_groups_and_bundles() {
        let (_d, r) = repo();
        assert_eq!(names(&r, "db1,web2"), ["db1", "web2"]);
        assert_eq!(names(&r, "webservers"), ["web1", "web2", "web3"]);
        assert_eq!(names(&r, "group:db, edge"), ["db1", "edge"]);
        assert_eq!(names(&r, "bundle:nginx"), ["web1"]);
        assert_eq!(
            names(&r, "bundle:base,db1"),
            ["db1", "web1", "web2", "web3"]
        );
        assert_eq!(names(&r, "all").len(), 5);
    }

    #[test]
    fn negations_subtract_and_alone_mean_all_minus() {
        let (_d, r) = repo();
        assert_eq!(names(&r, "webservers,!web3"), ["web1", "web2"]);
        assert_eq!(names(&r, "all,!bundle:base"), ["db1", "edge"]);
        assert_eq!(names(&r, "!group:webservers"), ["db1", "edge"]);
        assert_eq!(names(&r, "!db1,!edge"), ["web1", "web2", "web3"]);
        assert!(err(&r, "web1,!web1").contains("leaves no nodes"));
    }

    #[test]
    fn globs_match_node_names() {
        let (_d, r) = repo();
        assert_eq!(names(&r, "web*"), ["web1", "web2", "web3"]);
        assert_eq!(names(&r, "web[13]"), ["web1", "web3"]);
        assert_eq!(names(&r, "*,!web?"), ["db1", "edge"]);
        assert!(err(&r, "mail*").contains("no node matches 'mail*'"));
    }

    #[test]
    fn selectors_matching_nothing_are_errors() {
        let (_d, r) = repo();
        let m = err(&r, "web1,wbe2");
        assert!(m.contains("no node or group named 'wbe2'"), "{m}");
        assert!(m.contains("did you mean"), "{m}");
        assert!(err(&r, "!nope").contains("no node or group named 'nope'"));
        assert!(err(&r, "bundle:ngnix").contains("no bundle named 'ngnix'"));
        assert!(err(&r, "bundle:unused").contains("no node has bundle 'unused'"));
        assert!(err(&r, "group:webserver").contains("did you mean 'webservers'"));
        assert!(err(&r, "empty").contains("group 'empty' has no nodes"));
        assert!(err(&r, "web1,,web2").contains("empty selector"));
        assert!(err(&r, "").contains("empty selector"));
    }

    #[test]
    fn node_lookup_hints() {
        let (_d, r) = repo();
        assert_eq!(r.node("web1").unwrap().name, "web1");
        match r.node("wbe1") {
            Err(Error::Usage(m)) => assert!(m.contains("did you mean 'web1'"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
