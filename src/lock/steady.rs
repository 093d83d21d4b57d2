//! The steady marker: how an unchanged node costs ONE remote command.
//!
//! When an apply found nothing to do, its release (the second command) also writes
//! `LOCK_DIR/steady-NODE` (private): one line `E D`. E is a digest of everything that decides
//! the controller's judgment and what its release would write (cinch version, probe script,
//! plan, options, expected states, lock settings, the applier's identity), D the node-side
//! SHA-256 of that apply's lock and probe output (soft locks included). The next apply sends E
//! in its first command; the node digests its lock and probe output again and, only when the
//! marker is exactly `E D`, does what the release would do before answering: it gives the
//! lock back. Drift records need no rewrite: an unchanged item's record (same state, same
//! expected hash, same applier, which E covers) is never rewritten by any release, and a
//! release with no changed record leaves the record file as it is. The full
//! probe output still comes back, so the controller judges it as always (events, hooks and
//! output are those of any apply) and refuses to change anything if it ever disagrees.
//!
//! The marker is only a cache of a judgment that is a pure function of (E, D): a stale one is
//! still true, a wrong or tampered one simply does not match, and no marker is written when
//! anything time-dependent was seen (soft locks, warnings, a taken-over lock).

use sha2::{Digest, Sha256};

use super::*;

/// Marker format; part of E, so a new format never trusts an old marker.
const FORMAT: &str = "cinch-steady-1";

fn marker(node: &Node) -> String {
    format!(
        "{}/steady-{}",
        node.lock_dir.trim_end_matches('/'),
        node.name
    )
}

/// E: the digest of the executor's part (`judged`) and the guard's (lock settings, the
/// applier `by` its drift records would name, every item's expected-state hash).
pub(super) fn expected_digest(
    node: &Node,
    judged: &str,
    force: bool,
    by: &str,
    expected: &[(String, String)],
) -> String {
    let mut h = Sha256::new();
    for part in [FORMAT, judged, &node.name, &node.lock_dir, by] {
        h.update(part.len().to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update([u8::from(force)]);
    for (id, hash) in expected {
        h.update(id.len().to_le_bytes());
        h.update(id.as_bytes());
        h.update(hash.len().to_le_bytes());
        h.update(hash.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Shell for the end of the first command, run with `$zd` set to the node's digest: when the
/// marker says exactly `E $zd`, the hard lock is still ours and no drift records of an earlier
/// build wait to be merged (`applied-NODE/`: the release merges them, so a node upgraded while
/// steady gets its record file on its next apply), releases the lock and sets `zs=1`. Writes
/// nothing else and prints nothing.
pub(super) fn check_script(node: &Node, e: &str, token: &str) -> String {
    let mk = quote(&marker(node));
    let h = quote(&hard_dir(node));
    let old = quote(&applied::old_dir(node));
    format!(
        r#"if [ -f {mk} ] && [ ! -L {mk} ] && {{ [ ! -d {old} ] || [ -L {old} ]; }} && IFS= read -r zl < {mk} && [ "$zl" = {e}" $zd" ] && grep -qF {token} {h}/info 2>/dev/null; then
  rm -rf {h}; zs=1
fi
"#,
        e = quote(e),
        token = quote(token),
    )
}

/// Shell (for the release, while the lock is held) that writes the marker `E D`; silent, and
/// a failure only costs the next apply a second command.
pub(super) fn write_script(node: &Node, e: &str, d: &str) -> String {
    let mk = marker(node);
    let t = quote(&format!("{mk}.tmp"));
    // A fresh file (noclobber): never written through whatever is planted at that name.
    format!(
        "rm -f {t} 2>/dev/null; (umask 077; set -C; printf '%s\\n' {l} > {t}) 2>/dev/null && mv -f {t} {m} 2>/dev/null\n",
        l = quote(&format!("{e} {d}")),
        m = quote(&mk)
    )
}

/// Shell that removes the marker (the controller found it wrong).
pub(super) fn remove_script(node: &Node) -> String {
    format!("rm -f {} 2>/dev/null\n", quote(&marker(node)))
}
