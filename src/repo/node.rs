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

/// A node with its group membership, bundles and attributes resolved; its metadata is
/// computed on first use ([`Node::metadata`]), because reactors may be expensive.
#[derive(Debug, Clone)]
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
    pub become_: Option<String>,
    pub lock_dir: String,
    /// Operating system family (`debian`, `alpine`, `freebsd`, ...), "linux" when not set.
    pub os: String,
    /// Operating system version as written (`"12"`, `"24.04"`), if set.
    pub os_version: Option<String>,
    /// The static layers merged (bundle defaults < groups < node), without reactors: what the
    /// repo files say. [`Node::metadata`] is the full, computed metadata.
    pub static_metadata: serde_json::Value,
    pub location: Location,
    /// What is wrong with this node alone (a metadata or attribute conflict found at load):
    /// the node fails wherever it is used, while the rest of the fleet works. Reactor errors
    /// are found later; [`Node::all_problems`] includes them.
    pub problems: Vec<crate::diag::Diagnostic>,
    /// Where each attribute set on the node or a group came from, for `cinch nodes --blame`.
    pub attribute_sources: std::collections::BTreeMap<String, String>,
    /// Computes this node's metadata on demand (none for nodes built without a repo).
    pub(crate) fleet: Option<std::sync::Arc<crate::repo::computed::Fleet>>,
}

/// What hooks see of a node: its attributes and its computed metadata (the static layers when
/// that cannot be computed; the node fails before hooks run then).
impl serde::Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct View<'a> {
            name: &'a str,
            hostname: &'a str,
            username: &'a Option<String>,
            port: Option<u16>,
            transport: TransportKind,
            groups: &'a [String],
            bundles: &'a [String],
            dummy: bool,
            #[serde(rename = "become")]
            become_: &'a Option<String>,
            lock_dir: &'a str,
            os: &'a str,
            os_version: &'a Option<String>,
            metadata: &'a serde_json::Value,
        }
        let computed = self.metadata().ok();
        View {
            name: &self.name,
            hostname: &self.hostname,
            username: &self.username,
            port: self.port,
            transport: self.transport,
            groups: &self.groups,
            bundles: &self.bundles,
            dummy: self.dummy,
            become_: &self.become_,
            lock_dir: &self.lock_dir,
            os: &self.os,
            os_version: &self.os_version,
            metadata: computed.as_deref().unwrap_or(&self.static_metadata),
        }
        .serialize(s)
    }
}

impl Node {
    /// Default directory for hard and soft locks on a node.
    pub const DEFAULT_LOCK_DIR: &'static str = "/var/lib/cinch";

    /// Default operating system when neither the node nor a group sets `os`.
    pub const DEFAULT_OS: &'static str = "linux";

    /// A node with default attributes and this static metadata, not part of any repo (for
    /// tests and tools that build nodes directly).
    pub fn bare(name: &str, static_metadata: serde_json::Value) -> Node {
        Node {
            name: name.to_string(),
            hostname: name.to_string(),
            username: None,
            port: None,
            transport: TransportKind::Ssh,
            groups: Vec::new(),
            bundles: Vec::new(),
            dummy: false,
            become_: None,
            lock_dir: Node::DEFAULT_LOCK_DIR.to_string(),
            os: Node::DEFAULT_OS.to_string(),
            os_version: None,
            static_metadata,
            location: Location::default(),
            problems: Vec::new(),
            attribute_sources: Default::default(),
            fleet: None,
        }
    }

    /// The node's full metadata: static layers plus reactors, computed once (together with
    /// the nodes its reactors read) and shared. A conflict or reactor error is an error.
    pub fn metadata(
        &self,
    ) -> Result<std::sync::Arc<serde_json::Value>, Vec<crate::diag::Diagnostic>> {
        match &self.fleet {
            Some(fleet) => fleet.metadata(&self.name),
            None => Ok(std::sync::Arc::new(self.static_metadata.clone())),
        }
    }

    /// Every problem of this node: those found at load and those computing its metadata.
    pub fn all_problems(&self) -> Vec<crate::diag::Diagnostic> {
        if !self.problems.is_empty() {
            return self.problems.clone();
        }
        self.metadata().err().unwrap_or_default()
    }

    /// The node's own problems on one line (for a failed row in a table), `None` when it has
    /// none.
    pub fn problem_summary(&self) -> Option<String> {
        let problems = self.all_problems();
        if problems.is_empty() {
            return None;
        }
        Some(
            problems
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
        let problems = self.all_problems();
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(crate::error::Error::Repo(
                problems
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
