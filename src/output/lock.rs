//! Human output of `cinch lock`: one line per node.

use super::{Lines, untrusted};

/// A node's lock result as `NODE  STATUS[: WHY]`; the reason may quote the node's lock file,
/// so it is sanitised.
pub fn node_line(node: &str, status: &str, why: Option<&str>) -> String {
    format!(
        "{node}  {status}{}",
        why.map(|w| format!(": {}", untrusted(w, Lines::Keep)))
            .unwrap_or_default()
    )
}
