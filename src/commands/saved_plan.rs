//! Saved plans (`cinch verify --plan-out`, `cinch apply --plan`): the reviewed changes as plain
//! JSON, so an apply changes exactly what was reviewed. Only hashes are stored, never a value
//! (see docs/review.md for the format).

use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Version of the plan file format; a file of another version is refused.
pub const FORMAT: u32 = 1;

/// A saved plan file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedPlan {
    /// [`FORMAT`].
    pub cinch_plan: u32,
    /// When verify wrote it (RFC 3339, UTC).
    pub created: String,
    /// The selector verify ran with; `apply --plan` uses it when no TARGET is given.
    pub target: String,
    /// The git revision of the repo, or `null` outside git.
    pub revision: Option<Revision>,
    /// Every node verify reached, with the items that would change (possibly none).
    pub nodes: Vec<PlanNode>,
}

/// Which commit the repo was at, and whether the work tree had uncommitted changes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Revision {
    /// The full commit id of HEAD.
    pub commit: String,
    /// The work tree differed from HEAD (the plan was made from uncommitted files).
    pub dirty: bool,
}

/// One node of a plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanNode {
    /// The node's name.
    pub node: String,
    /// The items that would change.
    pub items: Vec<PlanItem>,
}

/// One change of a plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanItem {
    /// `TYPE:NAME`.
    pub item: String,
    /// create / fix / delete / run.
    pub change: String,
    /// The item's expected-state hash (as `cinch hash --items` prints it).
    pub expected: String,
    /// The hash of the actual state verify read on the node (`null` for actions).
    pub actual: Option<String>,
}

impl SavedPlan {
    /// Reads and checks a plan file; errors name the file and what to do.
    pub fn read(path: &Path) -> Result<SavedPlan> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Usage(format!(
                "cannot read plan file {}: {e}; write one with cinch verify TARGET --plan-out FILE",
                path.display()
            ))
        })?;
        let plan: SavedPlan = serde_json::from_str(&text).map_err(|e| {
            Error::Usage(format!(
                "{}:{}:{}: not a cinch plan file: {e}; write one with cinch verify TARGET \
                 --plan-out FILE",
                path.display(),
                e.line(),
                e.column()
            ))
        })?;
        if plan.cinch_plan != FORMAT {
            return Err(Error::Usage(format!(
                "{}: plan format {} is not supported by this cinch (it reads format {FORMAT}); \
                 make the plan again with this cinch",
                path.display(),
                plan.cinch_plan
            )));
        }
        Ok(plan)
    }

    /// Writes the plan (pretty JSON) through a temporary file, so a reader never sees half.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Usage(format!("cannot encode the plan: {e}")))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let fail = |e: std::io::Error| {
            Error::Usage(format!("cannot write plan file {}: {e}", path.display()))
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
        std::io::Write::write_all(&mut tmp, format!("{text}\n").as_bytes()).map_err(fail)?;
        tmp.persist(path).map_err(|e| fail(e.error))?;
        Ok(())
    }

    /// The plan's entry for `node`.
    pub fn node(&self, node: &str) -> Option<&PlanNode> {
        self.nodes.iter().find(|n| n.node == node)
    }
}

/// The git revision of the repo in `dir`: HEAD and whether the work tree is dirty; `None`
/// when `dir` is not in a git work tree (or git is not installed).
pub fn revision(dir: &Path) -> Option<Revision> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--verify", "HEAD"])?;
    let status = git(&["status", "--porcelain", "--", "."])?;
    Some(Revision {
        commit,
        dirty: !status.is_empty(),
    })
}
