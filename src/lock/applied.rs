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

/// Records per `printf`: bounds the size of one shell command.
const RECORDS_PER_PRINTF: usize = 256;

/// Shell that writes `records` (each replacing the item's previous record); failures are
/// silent, so a full disk never keeps the hard lock from being released after it.
///
/// A record whose item, state hash, expected hash and applier are those already on the node is
/// left as it is (it says when the item last reached that state): a steady apply of 20,000
/// items rewrote 20,000 files, each rename flushing its data to disk. The others are written
/// by one `awk` (which reads the old records; without awk, all of them by the shell's own
/// `printf`) into a private staging directory (`.stage-*`, which verify's `*` never lists)
/// and renamed into place by `mv` through `xargs`, each rename atomic: a process per record
/// made the epilogue of a 20,000-item apply outlive its time limit and leave the hard lock
/// behind.
pub(super) fn write_script(node: &Node, records: &[Applied]) -> String {
    if records.is_empty() {
        return String::new();
    }
    let dir = quote(&dir(node));
    let lines: Vec<(String, String)> = records
        .iter()
        .filter_map(|r| Some((record_name(&r.item), serde_json::to_string(r).ok()?)))
        .collect();
    let mut s = format!(
        "if (umask 077; mkdir -p {dir}) 2>/dev/null && rm -rf {dir}/.stage-* 2>/dev/null && \
         aT=$(umask 077; mktemp -d {dir}/.stage-XXXXXXXX 2>/dev/null); then\n(umask 077; {{\n"
    );
    for chunk in lines.chunks(RECORDS_PER_PRINTF) {
        s.push_str("printf '%s\\n'");
        for (name, line) in chunk {
            s.push(' ');
            s.push_str(&quote(&format!("{name} {line}")));
        }
        s.push('\n');
    }
    s.push_str(&format!(
        "}} | if command -v awk >/dev/null 2>&1; then aD={dir} aT=\"$aT\" awk '\n\
         {{ n = substr($0, 1, 32); j = substr($0, 34); o = \"\"; f = ENVIRON[\"aD\"] \"/\" n\n\
           if ((getline o < f) <= 0) o = \"\"; close(f)\n\
           a = o; b = j; sub(/,\"at\":-?[0-9]+}}$/, \"\", a); sub(/,\"at\":-?[0-9]+}}$/, \"\", b)\n\
           if (a != b) {{ t = ENVIRON[\"aT\"] \"/\" n; print j > t; close(t) }} }}'\n\
         else while IFS= read -r l; do printf '%s\\n' \"${{l#* }}\" > \"$aT/${{l%% *}}\"; done; fi) 2>/dev/null\n\
         (cd \"$aT\" && ls | xargs sh -c 'mv -f -- \"$@\" ..' sh) 2>/dev/null\n\
         rm -rf \"$aT\"\nfi\n"
    ));
    s
}

/// Shell that prints the drift records (read by verify with the soft locks).
///
/// One `awk` reads the first line of every record (a record is one line; cut at
/// [`RECORD_LIMIT`]): a `head` per record made verify of a 20,000-item node take 20 s.
/// Without awk, a `head -c` per record as before.
pub(super) fn read_script(node: &Node) -> String {
    format!(
        "printf '%s\\n' {sec}\n\
         if command -v awk >/dev/null 2>&1; then\n\
         for f in {d}/*; do [ -f \"$f\" ] && printf '%s\\n' \"$f\"; done | \
         awk '{{ l = \"\"; if ((getline l < $0) < 0) next; close($0); printf \"\\037\\n%s\\n\", substr(l, 1, {RECORD_LIMIT}) }}'\n\
         else for f in {d}/*; do [ -f \"$f\" ] || continue; printf '\\037\\n'; head -c {RECORD_LIMIT} \"$f\"; echo; done; fi\n",
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

    /// A 20,000-item apply left its hard lock behind: the epilogue ran `mv` once per drift
    /// record and outlived its time limit before the release. Now 600 records cost a few `mv`
    /// processes, and every record is still written and read back.
    #[test]
    fn drift_records_of_many_items_do_not_start_a_process_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let real = String::from_utf8(
            std::process::Command::new("sh")
                .args(["-c", "command -v mv"])
                .output()
                .expect("sh")
                .stdout,
        )
        .expect("utf-8");
        let counter = dir.path().join("calls");
        let shim = bin.join("mv");
        std::fs::write(
            &shim,
            format!(
                "#!/bin/sh\necho x >> {}\nexec {} \"$@\"\n",
                quote(counter.to_str().expect("utf-8")),
                quote(real.trim())
            ),
        )
        .expect("shim");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let node = Node {
            lock_dir: dir.path().join("locks").to_str().expect("utf-8").into(),
            ..Node::bare("n1", serde_json::json!({}))
        };
        let records: Vec<Applied> = (0..600)
            .map(|i| Applied {
                item: format!("file:/etc/f{i} it's"),
                hash: format!("h{i}"),
                expected: "e".into(),
                by: "alice@ctl".into(),
                at: i,
            })
            .collect();
        for shell in ["dash", "bash"] {
            let _ = std::fs::remove_file(&counter);
            let script = format!("{}{}", write_script(&node, &records), read_script(&node));
            let out = std::process::Command::new(shell)
                .env("PATH", &path)
                .args(["-c", &script])
                .output()
                .expect("shell runs");
            assert!(out.status.success(), "{shell}: {out:?}");
            let got = parse(&String::from_utf8_lossy(&out.stdout));
            assert_eq!(got.len(), records.len(), "{shell}");
            for r in &records {
                assert_eq!(got.get(&r.item), Some(r), "{shell}");
            }
            let calls = std::fs::read_to_string(&counter)
                .unwrap_or_default()
                .lines()
                .count();
            assert!(calls <= 3, "{shell}: mv ran {calls} times for 600 records");
            let staged = std::fs::read_dir(dir.path().join("locks/applied-n1"))
                .expect("ls")
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
                .count();
            assert_eq!(staged, 0, "{shell}: staging left behind");
        }
    }

    /// Verify of a node with 20,000 drift records took 20 s: it read each with a `head` of
    /// its own. One awk reads them all now.
    #[test]
    fn verify_reads_drift_records_without_a_process_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let counter = dir.path().join("calls");
        std::fs::write(
            bin.join("head"),
            format!(
                "#!/bin/sh\necho x >> {}\nexit 1\n",
                quote(counter.to_str().expect("utf-8"))
            ),
        )
        .expect("shim");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join("head"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let node = Node {
            lock_dir: dir.path().join("locks").to_str().expect("utf-8").into(),
            ..Node::bare("n1", serde_json::json!({}))
        };
        let records: Vec<Applied> = (0..300)
            .map(|i| Applied {
                item: format!("file:/etc/f{i}"),
                hash: format!("h{i}"),
                expected: "e".into(),
                by: "alice@ctl".into(),
                at: i,
            })
            .collect();
        let wrote = std::process::Command::new("sh")
            .args(["-c", &write_script(&node, &records)])
            .status()
            .expect("sh");
        assert!(wrote.success());
        for shell in ["dash", "bash"] {
            let out = std::process::Command::new(shell)
                .env("PATH", &path)
                .args(["-c", &read_script(&node)])
                .output()
                .expect("shell runs");
            let got = parse(&String::from_utf8_lossy(&out.stdout));
            assert_eq!(got.len(), records.len(), "{shell}");
            assert!(!counter.exists(), "{shell}: head ran");
        }
    }

    /// A steady apply of 20,000 items rewrote all 20,000 drift records (each rename flushing
    /// to disk) although only their time had changed. A record with the same state hash,
    /// expected hash and applier stays as it is; one that differs is replaced.
    #[test]
    fn steady_apply_does_not_rewrite_unchanged_drift_records() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let node = Node {
            lock_dir: dir.path().to_str().expect("utf-8").into(),
            ..Node::bare("n1", serde_json::json!({}))
        };
        let rec = |item: &str, hash: &str, at: i64| Applied {
            item: item.into(),
            hash: hash.into(),
            expected: "e".into(),
            by: "alice@ctl".into(),
            at,
        };
        let file = |item: &str| dir.path().join("applied-n1").join(record_name(item));
        for shell in ["dash", "bash"] {
            let run = |records: &[Applied]| {
                let out = std::process::Command::new(shell)
                    .args(["-c", &write_script(&node, records)])
                    .output()
                    .expect("shell runs");
                assert!(out.status.success(), "{shell}: {out:?}");
            };
            run(&[rec("file:/a", "h1", 1), rec("file:/b", "h1", 1)]);
            let inode = |item: &str| std::fs::metadata(file(item)).expect("record").ino();
            let (a, b) = (inode("file:/a"), inode("file:/b"));
            run(&[rec("file:/a", "h1", 2), rec("file:/b", "h2", 2)]);
            assert_eq!(inode("file:/a"), a, "{shell}: unchanged record rewritten");
            assert_ne!(inode("file:/b"), b, "{shell}: changed record kept");
            let read = |item: &str| std::fs::read_to_string(file(item)).expect("record");
            assert!(read("file:/a").contains("\"at\":1}"), "{shell}");
            assert!(read("file:/b").contains("\"hash\":\"h2\""), "{shell}");
            std::fs::remove_dir_all(dir.path().join("applied-n1")).expect("rm");
        }
    }
}
