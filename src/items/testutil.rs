//! Builds repos and nodes directly (no repo loader) for unit tests of items and plans.

use std::path::Path;

use crate::diag::{Diagnostic, Location};
use crate::items::Item;
use crate::repo::{Bundle, Node, Repo, Settings, TransportKind};

/// A repo in a temporary directory whose bundles are registered as they are written.
pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub repo: Repo,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repo {
            path: dir.path().to_path_buf(),
            settings: Settings::default(),
            nodes: Default::default(),
            groups: Default::default(),
            bundles: Default::default(),
        };
        Fixture { dir, repo }
    }

    /// Writes a file relative to the repo root.
    pub fn write(&self, rel: &str, content: &str) {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    }

    /// Registers bundle `name` (its directory need not hold anything yet).
    pub fn bundle(mut self, name: &str) -> Self {
        let dir = self.dir.path().join("bundles").join(name);
        std::fs::create_dir_all(dir.join("files")).expect("mkdir");
        self.repo
            .bundles
            .insert(name.into(), Bundle::new(name, dir, serde_json::json!({})));
        self
    }

    /// Registers bundle `name` with this items.toml.
    pub fn toml(self, name: &str, items: &str) -> Self {
        let me = self.bundle(name);
        me.write(&format!("bundles/{name}/items.toml"), items);
        me
    }

    /// Writes `bundles/BUNDLE/files/NAME`.
    pub fn source(self, bundle: &str, name: &str, content: &str) -> Self {
        self.write(&format!("bundles/{bundle}/files/{name}"), content);
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A node with these bundles and metadata.
    pub fn node(&self, name: &str, bundles: &[&str], metadata: serde_json::Value) -> Node {
        Node {
            name: name.into(),
            hostname: format!("{name}.example.com"),
            username: None,
            port: None,
            transport: TransportKind::Local,
            groups: vec!["all".into()],
            bundles: bundles.iter().map(|b| b.to_string()).collect(),
            dummy: false,
            become_: None,
            lock_dir: Node::DEFAULT_LOCK_DIR.into(),
            location: Location::file(&self.dir.path().join("nodes.toml")),
            ..Node::bare(name, metadata)
        }
    }

    /// All items of a node with every registered bundle.
    pub fn items(&self) -> Result<Vec<Item>, Vec<Diagnostic>> {
        let bundles: Vec<&str> = self.repo.bundles.keys().map(String::as_str).collect();
        let node = self.node("n1", &bundles, serde_json::json!({}));
        crate::items::load_node_items(&self.repo, &node)
    }

    /// Items that must load; panics with every diagnostic otherwise.
    pub fn ok_items(&self) -> Vec<Item> {
        self.items().unwrap_or_else(|d| panic!("{}", render(&d)))
    }

    /// The diagnostics of a load that must fail, rendered one per line.
    pub fn errors(&self) -> String {
        match self.items() {
            Ok(items) => panic!("expected errors, got {} items", items.len()),
            Err(d) => render(&d),
        }
    }
}

pub(crate) fn render(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A bare item of `kind` named `name` with no dependencies (for unit tests of item types).
pub(crate) fn item(type_name: &str, name: &str, kind: crate::items::ItemKind) -> Item {
    Item {
        id: format!("{type_name}:{name}"),
        name: name.into(),
        bundle: "b".into(),
        kind,
        deps: Default::default(),
        location: Location::file(Path::new("bundles/b/items.toml")),
    }
}
