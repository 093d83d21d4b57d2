//! A node: one machine (or one directory on a machine) that cinch manages.

use crate::diag::Location;

/// How cinch reaches a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// OpenSSH, one multiplexed connection per node per invocation.
    #[default]
    Ssh,
    /// This machine, through `sh -c`: for demos, tests and managing the control host itself.
    Local,
}

/// A node with its group membership, bundles and metadata fully resolved.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Node {
    pub name: String,
    /// What ssh connects to; defaults to the node name (resolved through ~/.ssh/config).
    pub hostname: String,
    pub username: Option<String>,
    pub port: Option<u16>,
    pub transport: TransportKind,
    /// Every group the node is in (direct, by pattern, via subgroups), sorted.
    pub groups: Vec<String>,
    /// Its own bundles plus those of all its groups, sorted and deduplicated.
    pub bundles: Vec<String>,
    pub dummy: bool,
    /// Wrapper for remote commands, e.g. "sudo".
    #[serde(rename = "become")]
    pub become_: Option<String>,
    pub lock_dir: String,
    /// Merged metadata (bundle defaults < groups < node), always an object.
    pub metadata: serde_json::Value,
    #[serde(skip)]
    pub location: Location,
}

impl Node {
    /// Default directory for hard and soft locks on a node.
    pub const DEFAULT_LOCK_DIR: &'static str = "/var/lib/cinch";
}
