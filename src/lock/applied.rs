//! Drift records: after an apply the node keeps, per item, the hash of its state as applied,
//! the repo's expected-state hash then, who applied and when (`LOCK_DIR/applied-NODE/`, one
//! line of JSON per item), so verify can tell a hand edit on the node from a repo change.
//! Written by the apply's last command and read by verify's first: no extra round trip.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::*;

/// Starts the drift-record section of verify's first command output.
const APPLIED_SECTION: &str = "\u{1e}applied";
/// Records are small; a bigger file is cut (and then fails to parse, so it is ignored).
const RECORD_LIMIT: usize = 8192;

/// One item's drift record, as stored on the node (node-controlled when read back).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Applied {
    /// `TYPE:NAME`.
    pub item: String,
    /// The hash of the item's actual state right after the apply (`executor::actual_hash`).
    pub hash: String,
    /// The item's expected-state hash at that apply (`cinch hash --items`).
    pub expected: String,
    /// Who applied (the lock identity).
    pub by: String,
    /// When (Unix seconds).
    pub at: i64,
}

/// The drift records read from a node, by item id.
pub type Records = HashMap<String, Applied>;

/// Where a node's drift records live.
pub(super) fn dir(node: &Node) -> String {
    format!(
        "{}/applied-{}",
        node.lock_dir.trim_end_matches('/'),
        node.name
    )
}

/// The record file of an item: a hash of its id, so any id makes a safe file name.
pub(super) fn record_name(item: &str) -> String {
    hex::encode(&Sha256::digest(item.as_bytes())[..16])
}

/// Shell that writes `records` (each replacing the item's previous record); failures are
/// silent, so a full disk never keeps the hard lock from being released after it.
pub(super) fn write_script(node: &Node, records: &[Applied]) -> String {
    if records.is_empty() {
        return String::new();
    }
    let dir = dir(node);
    let mut s = format!(
        "if (umask 077; mkdir -p {d}) 2>/dev/null; then\n",
        d = quote(&dir)
    );
    for r in records {
        let Ok(line) = serde_json::to_string(r) else {
            continue;
        };
        let file = format!("{dir}/{}", record_name(&r.item));
        let tmp = format!("{file}.tmp");
        // A fresh file (noclobber, after removing whatever is there): never written through a
        // symlink planted at that name in a lock directory other users can write to.
        s.push_str(&format!(
            "rm -f {t} 2>/dev/null; (set -C; printf '%s\\n' {l} >{t}) 2>/dev/null && mv -f {t} {f} 2>/dev/null\n",
            l = quote(&line),
            t = quote(&tmp),
            f = quote(&file)
        ));
    }
    s.push_str("fi\n");
    s
}

/// Shell that prints the drift records (read by verify with the soft locks).
pub(super) fn read_script(node: &Node) -> String {
    format!(
        "printf '%s\\n' {sec}\nfor f in {d}/*; do [ -f \"$f\" ] || continue; printf '\\037\\n'; head -c {RECORD_LIMIT} \"$f\"; echo; done\n",
        sec = quote(APPLIED_SECTION),
        d = quote(&dir(node)),
    )
}

/// Parses the drift-record section (up to the soft-lock section); unreadable records are
/// ignored, as a node without records (nothing to attribute) rather than an error.
pub(super) fn parse(text: &str) -> Records {
    let mut out = Records::new();
    let Some(start) = text.find(APPLIED_SECTION) else {
        return out;
    };
    let body = &text[start + APPLIED_SECTION.len()..];
    let body = body.split(soft::SOFT_SECTION).next().unwrap_or("");
    for chunk in body.split('\u{1f}').skip(1) {
        if let Ok(r) = serde_json::from_str::<Applied>(chunk.trim()) {
            out.insert(r.item.clone(), r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_records_round_trip_and_garbage_is_ignored() {
        let r = Applied {
            item: "file:/etc/x y'\n".into(),
            hash: "h".into(),
            expected: "e".into(),
            by: "alice@ctl".into(),
            at: 5,
        };
        let line = serde_json::to_string(&r).unwrap();
        let text = format!(
            "{APPLIED_SECTION}\n\u{1f}\n{line}\n\n\u{1f}\nnot json\n\n{}\n\u{1f}AB12\n{{}}\n",
            soft::SOFT_SECTION
        );
        let got = parse(&text);
        assert_eq!(got.len(), 1);
        assert_eq!(got.get(&r.item), Some(&r));
        assert_eq!(record_name("a").len(), 32);
    }
}
