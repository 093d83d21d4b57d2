//! The steady marker: how an unchanged node costs ONE remote command.
//!
//! When an apply found nothing to do, its release (the second command) also writes
//! `LOCK_DIR/steady-NODE` (private): a first line `E D` and the drift-record prefixes of the
//! items it recorded. E is a digest of everything that decides the controller's judgment
//! (cinch version, probe script, plan, options, expected states, lock settings), D the
//! node-side SHA-256 of that apply's lock and probe output (soft locks included). The next
//! apply sends E in its first command; the node digests its lock and probe output again and,
//! only when the marker's first line is exactly `E D`, does what the release would do (drift
//! records with this apply's identity and time, lock given back) before answering. The full
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

/// E: the digest of the executor's part (`judged`) and the guard's (lock settings, every
/// item's expected-state hash).
pub(super) fn expected_digest(
    node: &Node,
    judged: &str,
    force: bool,
    expected: &[(String, String)],
) -> String {
    let mut h = Sha256::new();
    for part in [FORMAT, judged, &node.name, &node.lock_dir] {
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

/// A drift record split where this apply's identity and time go: the stored prefix (item and
/// hashes) and the suffix (`"by":…,"at":…}`), so the node can rewrite records in the steady
/// path without knowing JSON.
fn split_record(r: &applied::Applied) -> Option<(String, String)> {
    let blank = applied::Applied {
        by: String::new(),
        at: 0,
        ..r.clone()
    };
    let prefix = serde_json::to_string(&blank)
        .ok()?
        .strip_suffix(r#""by":"","at":0}"#)?
        .to_string();
    let full = serde_json::to_string(r).ok()?;
    let suffix = full.strip_prefix(&prefix)?.to_string();
    Some((prefix, suffix))
}

/// The suffix of every drift record this apply writes (`"by":ME,"at":NOW}`).
pub(super) fn record_suffix(by: &str, at: i64) -> Option<String> {
    let probe = applied::Applied {
        item: String::new(),
        hash: String::new(),
        expected: String::new(),
        by: by.to_string(),
        at,
    };
    split_record(&probe).map(|(_, suffix)| suffix)
}

/// Shell for the end of the first command, run with `$zd` set to the node's digest: when the
/// marker says exactly `E $zd` and the hard lock is still ours, rewrites the drift records
/// from the marker with `suffix` (only in a records directory that is ours and writable by no
/// one else, where nothing can be planted to write through), releases the lock and sets
/// `zs=1`. Prints nothing.
pub(super) fn check_script(node: &Node, e: &str, token: &str, suffix: &str) -> String {
    let mk = quote(&marker(node));
    let h = quote(&hard_dir(node));
    let ad = quote(&applied::dir(node));
    format!(
        r#"if [ -f {mk} ] && [ ! -L {mk} ] && IFS= read -r zl < {mk} && [ "$zl" = {e}" $zd" ] && grep -qF {token} {h}/info 2>/dev/null; then
  if (umask 077; mkdir -p {ad}) 2>/dev/null && [ ! -L {ad} ] && [ -O {ad} ] && zm=$(stat -c %a {ad} 2>/dev/null) && case $zm in *[2367]?|*[2367]) false;; esac; then
    zD={ad} zS={suffix} awk 'NR > 1 && $1 ~ /^[0-9a-f]+$/ {{ f = ENVIRON["zD"] "/" $1; print substr($0, length($1) + 2) ENVIRON["zS"] > f; close(f) }}' {mk} 2>/dev/null
  fi
  rm -rf {h}; zs=1
fi
"#,
        e = quote(e),
        token = quote(token),
        suffix = quote(suffix),
    )
}

/// Shell (for the release, while the lock is held) that writes the marker `E D` with the
/// prefixes of `records`; silent, and a failure only costs the next apply a second command.
pub(super) fn write_script(node: &Node, e: &str, d: &str, records: &[applied::Applied]) -> String {
    let mk = marker(node);
    let mut lines = vec![format!("{e} {d}")];
    for r in records {
        let Some((prefix, _)) = split_record(r) else {
            return remove_script(node);
        };
        lines.push(format!("{} {prefix}", applied::record_name(&r.item)));
    }
    let t = quote(&format!("{mk}.tmp"));
    // A fresh file (noclobber): never written through whatever is planted at that name.
    let mut s = format!("rm -f {t} 2>/dev/null; (umask 077; set -C; printf '%s\\n'");
    for l in &lines {
        s.push(' ');
        s.push_str(&quote(l));
    }
    s.push_str(&format!(
        " > {t}) 2>/dev/null && mv -f {t} {m} 2>/dev/null\n",
        m = quote(&mk)
    ));
    s
}

/// Shell that removes the marker (the controller found it wrong).
pub(super) fn remove_script(node: &Node) -> String {
    format!("rm -f {} 2>/dev/null\n", quote(&marker(node)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_prefix_and_suffix_make_the_record_whatever_its_text() {
        let r = applied::Applied {
            item: "file:/etc/a \"b\"\n\\c".into(),
            hash: "h".into(),
            expected: "e".into(),
            by: "al\"ice@ctl".into(),
            at: 42,
        };
        let (prefix, suffix) = split_record(&r).expect("split");
        assert_eq!(record_suffix(&r.by, r.at).as_deref(), Some(suffix.as_str()));
        let joined: applied::Applied =
            serde_json::from_str(&format!("{prefix}{suffix}")).expect("json");
        assert_eq!(joined, r);
        assert!(!prefix.contains('\n'));
    }
}
