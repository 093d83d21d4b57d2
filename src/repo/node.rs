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
    /// What is wrong with this node alone (a metadata conflict): the node fails wherever it
    /// is used, while the rest of the fleet works.
    #[serde(skip)]
    pub problems: Vec<crate::diag::Diagnostic>,
}

impl Node {
    /// Default directory for hard and soft locks on a node.
    pub const DEFAULT_LOCK_DIR: &'static str = "/var/lib/cinch";

    /// The node's own problems on one line (for a failed row in a table), `None` when it has
    /// none.
    pub fn problem_summary(&self) -> Option<String> {
        if self.problems.is_empty() {
            return None;
        }
        Some(
            self.problems
                .iter()
                .map(|d| match &d.location {
                    Some(loc) => format!("{loc}: {}", d.message),
                    None => d.message.clone(),
                })
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    /// The node's own problems as an error, for commands that need its metadata.
    pub fn usable(&self) -> crate::error::Result<&Node> {
        if self.problems.is_empty() {
            Ok(self)
        } else {
            Err(crate::error::Error::Repo(
                self.problems
                    .iter()
                    .map(|d| {
                        let mut d = d.clone();
                        d.message = format!("node '{}': {}", self.name, d.message);
                        d
                    })
                    .collect(),
            ))
        }
    }
}
