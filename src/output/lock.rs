//! Human output of `cinch lock`: one line per node, and the table of `lock show`.

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

/// `lock add` on one node: `NODE  added soft lock ID (expires WHEN)`.
pub fn added(node: &str, id: &str, expires: &str) -> String {
    format!("{node}  added soft lock {id} (expires {expires})")
}

/// `lock remove` on one node: `NODE  removed soft lock ID`.
pub fn removed(node: &str, id: &str) -> String {
    format!("{node}  removed soft lock {id}")
}

/// One soft lock as `lock show` lists it; the owner, items and comment come from the node's
/// lock file and are sanitised when rendered.
pub struct LockRow {
    /// The node holding the lock.
    pub node: String,
    /// The lock's id.
    pub id: String,
    /// Who took it.
    pub owner: String,
    /// When it was taken, as shown.
    pub created: String,
    /// How long it still holds, as shown.
    pub expires_in: String,
    /// The items it covers, comma-separated.
    pub items: String,
    /// Why it was taken.
    pub comment: String,
}

/// The `lock show` table.
pub fn table(rows: &[LockRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.node.clone(),
                r.id.clone(),
                untrusted(&r.owner, Lines::Escape).into_owned(),
                r.created.clone(),
                r.expires_in.clone(),
                untrusted(&r.items, Lines::Escape).into_owned(),
                untrusted(&r.comment, Lines::Escape).into_owned(),
            ]
        })
        .collect();
    super::table(
        &[
            "node",
            "id",
            "owner",
            "created",
            "expires in",
            "items",
            "comment",
        ],
        &cells,
    )
}
