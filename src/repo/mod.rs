//! The repository as cinch sees it: nodes, groups, bundles and settings, loaded once and
//! then only read, so node workers can share it without locks.

pub mod node;
pub mod settings;

pub use node::{Node, TransportKind};
pub use settings::Settings;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::diag::Location;
use crate::error::Result;

/// A group as written in the repo, plus where it was defined.
#[derive(Debug, Clone, Default)]
pub struct Group {
    pub name: String,
    pub bundles: Vec<String>,
    pub members: Vec<String>,
    pub member_patterns: Vec<String>,
    pub subgroups: Vec<String>,
    pub metadata: serde_json::Value,
    pub location: Location,
}

/// A bundle directory: its files are read by the item loader.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub name: String,
    pub dir: PathBuf,
    /// `metadata.toml` contents (an object), `{}` when absent.
    pub metadata_defaults: serde_json::Value,
    /// Parsed items.toml, compiled items.rhai and templates, filled on first use and shared
    /// by every node that has this bundle.
    pub items_cache: crate::items::parse::BundleCache,
}

impl Bundle {
    /// A bundle whose item files have not been read yet.
    pub fn new(
        name: impl Into<String>,
        dir: PathBuf,
        metadata_defaults: serde_json::Value,
    ) -> Self {
        Bundle {
            name: name.into(),
            dir,
            metadata_defaults,
            items_cache: Default::default(),
        }
    }
}

/// The loaded repository.
#[derive(Debug)]
pub struct Repo {
    pub path: PathBuf,
    pub settings: Settings,
    pub nodes: BTreeMap<String, Node>,
    pub groups: BTreeMap<String, Group>,
    pub bundles: BTreeMap<String, Bundle>,
}

impl Repo {
    /// Finds the repo (`-r`, `$CINCH_REPO`, or the current directory and its parents) and loads it.
    pub fn discover(explicit: Option<&std::path::Path>) -> Result<Repo> {
        let _ = explicit;
        Err(crate::error::Error::Usage(
            "repo loading is not built yet".into(),
        ))
    }
}
