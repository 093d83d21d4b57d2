//! Drift records: after an apply the node keeps, per item, the hash of its state as applied,
//! the repo's expected-state hash then, who applied and when, so verify can tell a hand edit on
//! the node from a repo change. All of a node's records are one file,
//! `LOCK_DIR/applied-NODE.jsonl`, one line of JSON per item: a record file per item doubled the
//! inodes a first apply of many files creates. Written by the apply's last command and read by
//! verify's first: no extra round trip. Nodes last applied by an older cinch keep their records
//! in the directory `LOCK_DIR/applied-NODE/` (a file per item); both are read, and the next
//! apply merges the directory into the file and removes it.

use std::collections::HashMap;

use super::*;

/// Starts the drift-record section of verify's first command output.
const APPLIED_SECTION: &str = "\u{1e}applied";
/// Records are small; a longer line is ignored (and cut when read from the old directory).
const RECORD_LIMIT: usize = 8192;
/// What verify reads of the record file at most: the node controls it. Records take ~300
/// bytes, so this holds ~200,000 items; the items past it get no attribution.
const RECORDS_LIMIT: usize = 64 << 20;

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

/// The file name of a node's drift records (in its lock directory).
fn file_name(node: &Node) -> String {
    format!("applied-{}.jsonl", node.name)
}

/// Where a node's drift records live.
pub(super) fn file(node: &Node) -> String {
    format!(
        "{}/{}",
        node.lock_dir.trim_end_matches('/'),
        file_name(node)
    )
}

/// Where cinch kept a node's drift records before they were one file (a file per item).
pub(super) fn old_dir(node: &Node) -> String {
    format!(
        "{}/applied-{}",
        node.lock_dir.trim_end_matches('/'),
        node.name
    )
}

/// The prefix of the release's private staging directories: `=` is in no node name, so no
/// other node's prefix starts with this one.
fn stage_prefix(node: &Node) -> String {
    format!(
        "{}/.applied-{}=",
        node.lock_dir.trim_end_matches('/'),
        node.name
    )
}

/// Merges the node's records with the new ones (stdin) into `$aS/$aB`; exit 1 when nothing
/// would change. A record line is keyed by its item (the JSON up to `","hash":"`, which an
/// escaped id never contains); old lines without that shape or longer than [`RECORD_LIMIT`]
/// are dropped. Sources, later winning: the old directory's records (`$aS/o` lists them, when
/// `aM=1`), the file (`aR=1`: a regular file, no symlink, at most [`RECORDS_LIMIT`] bytes: a
/// bigger one is replaced by the new records alone), then the new records, each keeping the
/// line already there when only its `at` differs.
const MERGE_AWK: &str = r#"function key(l,  i) {
  if (substr(l, 1, 9) != "{\"item\":\"") return ""
  i = index(l, "\",\"hash\":\""); return i ? substr(l, 1, i) : ""
}
function bare(l) { sub(/,"at":-?[0-9]+}$/, "", l); return l }
function keep(l,  k) {
  k = key(l); if (k == "" || length(l) > LIM) return
  if (!(k in r)) o[++n] = k
  r[k] = l
}
BEGIN {
  S = ENVIRON["aS"]
  if (ENVIRON["aM"] == 1) { L = S "/o"; while ((getline f < L) > 0) { l = ""; if ((getline l < f) > 0) keep(l); close(f) } }
  if (ENVIRON["aR"] == 1) { F = ENVIRON["aF"]; while ((getline l < F) > 0) keep(l); close(F) }
}
{
  k = key($0); if (k == "") next
  if (!(k in r)) { o[++n] = k; r[k] = $0; c = 1 } else if (bare(r[k]) != bare($0)) { r[k] = $0; c = 1 }
}
END {
  if (!c && ENVIRON["aM"] != 1) exit 1
  T = S "/" ENVIRON["aB"]
  for (i = 1; i <= n; i++) print r[o[i]] > T
  if (close(T) != 0) exit 2
}"#;

/// The records as [`write_script`] reads them on stdin: a JSON line each.
pub(super) fn records_data(records: &[Applied]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.len() * 256);
    for r in records {
        if serde_json::to_writer(&mut out, r).is_ok() {
            out.push(b'\n');
        }
    }
    out
}

/// Shell that merges the records on its stdin ([`records_data`]) into the node's record file;
/// failures are silent, so a full disk never keeps the hard lock from being released after it.
/// The records travel as data, not in the script: 20,000 of them made a 4.7 MB script that
/// the shell had to read and parse.
///
/// A record whose item, state hash, expected hash and applier are those already on the node is
/// left as it is (it says when the item last reached that state), and when no record changes
/// the file is not written at all: a steady apply rewrites nothing (the steady marker relies on
/// that, `steady.rs`). Otherwise one `awk` writes the merged records into a private staging
/// directory beside the file (umask 077, `mktemp -d`) and `mv` renames it into place, atomic
/// and never through whatever is planted at the file's name (a directory there fails the
/// rename); with no file and no old directory (a first apply) the records are the file as
/// they came. Without awk, the file's lines of other items (`grep -v -F`) and the new records
/// are written, every apply.
pub(super) fn write_script(node: &Node) -> String {
    let lock_dir = format!("{}/", node.lock_dir.trim_end_matches('/'));
    let prefix = quote(&stage_prefix(node));
    format!(
        "aF={f} aO={o} aB={b}\n\
         rm -rf -- {prefix}* 2>/dev/null\n\
         if aS=$(umask 077; mktemp -d {prefix}XXXXXXXX 2>/dev/null) && [ -d \"$aS\" ]; then\n\
         aR=0 aM=0 aW=1\n\
         if [ -f \"$aF\" ] && [ ! -L \"$aF\" ] && aZ=$(wc -c < \"$aF\" 2>/dev/null) && [ $aZ -le {RECORDS_LIMIT} ] 2>/dev/null; then aR=1; fi\n\
         if [ -d \"$aO\" ] && [ ! -L \"$aO\" ]; then aM=1; \
         for f in \"$aO\"/*; do [ -f \"$f\" ] && [ ! -L \"$f\" ] && printf '%s\\n' \"$f\"; done > \"$aS/o\"; fi\n\
         if [ $aR$aM = 00 ]; then (umask 077; cat > \"$aS/$aB\") 2>/dev/null\n\
         elif ! (umask 077; cat > \"$aS/n\") 2>/dev/null; then false\n\
         elif command -v awk >/dev/null 2>&1; then \
         (umask 077; aF=\"$aF\" aS=\"$aS\" aB=\"$aB\" aR=$aR aM=$aM awk -v LIM={RECORD_LIMIT} {awk} < \"$aS/n\") 2>/dev/null\n\
         else aW=0; (umask 077; sed 's/\",\"hash\":\".*/\",\"hash\":\"/' \"$aS/n\" > \"$aS/k\" && \
         {{ if [ $aR = 1 ]; then grep -v -F -f \"$aS/k\" \"$aF\"; fi; cat \"$aS/n\"; }} > \"$aS/$aB\") 2>/dev/null\n\
         fi && mv -f -- \"$aS/$aB\" {d} 2>/dev/null && if [ $aW$aM = 11 ]; then rm -rf -- \"$aO\" 2>/dev/null; fi\n\
         rm -rf -- \"$aS\" 2>/dev/null\nfi\n",
        f = quote(&file(node)),
        o = quote(&old_dir(node)),
        b = quote(&file_name(node)),
        awk = quote(MERGE_AWK),
        d = quote(&lock_dir),
    )
}

/// Shell that prints the drift records (read by verify with the soft locks): the old
/// directory's (one `awk` reads the first line of each: a `head` per record made verify of a
/// 20,000-item node take 20 s), then the file's, at most [`RECORDS_LIMIT`] bytes of it; a
/// symlink, directory or pipe at either name is not read. NUL and `\x1e` (which starts a
/// section) are dropped from what the node wrote.
pub(super) fn read_script(node: &Node) -> String {
    format!(
        "printf '%s\\n' {sec}\n\
         aO={d} aF={f}\n\
         if [ -d \"$aO\" ] && [ ! -L \"$aO\" ]; then\n\
         if command -v awk >/dev/null 2>&1; then\n\
         for f in \"$aO\"/*; do [ -f \"$f\" ] && printf '%s\\n' \"$f\"; done | \
         awk '{{ l = \"\"; if ((getline l < $0) < 0) next; close($0); gsub(/\\036/, \"\", l); printf \"\\037\\n%s\\n\", substr(l, 1, {RECORD_LIMIT}) }}'\n\
         else for f in \"$aO\"/*; do [ -f \"$f\" ] || continue; printf '\\037\\n'; head -c {RECORD_LIMIT} \"$f\" | tr -d '\\000\\036'; echo; done; fi\n\
         fi\n\
         if [ -f \"$aF\" ] && [ ! -L \"$aF\" ]; then printf '\\037\\n'; head -c {RECORDS_LIMIT} \"$aF\" | tr -d '\\000\\036'; echo; fi\n",
        sec = quote(APPLIED_SECTION),
        d = quote(&old_dir(node)),
        f = quote(&file(node)),
    )
}

/// Parses the drift-record section (up to the soft-lock section), a record a line, later lines
/// winning (the file's come after the old directory's); unreadable records are ignored, as a
/// node without records (nothing to attribute) rather than an error.
pub(super) fn parse(text: &str) -> Records {
    let mut out = Records::new();
    let Some(start) = text.find(APPLIED_SECTION) else {
        return out;
    };
    let body = &text[start + APPLIED_SECTION.len()..];
    let body = body.split(soft::SOFT_SECTION).next().unwrap_or("");
    for line in body.lines().filter(|l| l.len() <= RECORD_LIMIT) {
        if let Ok(r) = serde_json::from_str::<Applied>(line.trim()) {
            out.insert(r.item.clone(), r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};

    use super::*;

    fn rec(item: &str, hash: &str, at: i64) -> Applied {
        Applied {
            item: item.into(),
            hash: hash.into(),
            expected: "e".into(),
            by: "alice@ctl".into(),
            at,
        }
    }

    /// A node whose lock directory is `dir`.
    fn node_in(dir: &Path) -> Node {
        Node {
            lock_dir: dir.to_str().expect("utf-8").into(),
            ..Node::bare("n1", serde_json::json!({}))
        }
    }

    /// Runs `script` in `shell` (with `path` as PATH when given): its stdout.
    fn run(shell: &str, script: &str, path: Option<&str>) -> String {
        let mut cmd = std::process::Command::new(shell);
        if let Some(path) = path {
            cmd.env("PATH", path);
        }
        let out = cmd.args(["-c", script]).output().expect("shell runs");
        assert!(out.status.success(), "{shell}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the release's record writing for `records` in `shell`, as the epilogue does.
    fn write(shell: &str, node: &Node, records: &[Applied], path: Option<&str>) {
        use std::io::Write;
        let mut cmd = std::process::Command::new(shell);
        if let Some(path) = path {
            cmd.env("PATH", path);
        }
        let mut child = cmd
            .args(["-c", &write_script(node)])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("shell runs");
        let data = records_data(records);
        let _ = child.stdin.take().expect("stdin").write_all(&data);
        let out = child.wait_with_output().expect("shell runs");
        assert!(out.status.success(), "{shell}: {out:?}");
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{shell}: {out:?}"
        );
    }

    /// What verify reads from the node.
    fn read_back(shell: &str, node: &Node) -> Records {
        parse(&run(shell, &read_script(node), None))
    }

    /// Writes records as cinch before the record file did: a file per item in `applied-NODE/`.
    fn write_old(node: &Node, records: &[Applied]) {
        use sha2::{Digest, Sha256};
        let dir = PathBuf::from(old_dir(node));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for r in records {
            let name = hex::encode(&Sha256::digest(r.item.as_bytes())[..16]);
            let line = serde_json::to_string(r).expect("json");
            std::fs::write(dir.join(name), format!("{line}\n")).expect("record");
        }
    }

    /// The `(item, hash, at)` of every line of the record file, in file order.
    fn lines(node: &Node) -> Vec<(String, String, i64)> {
        std::fs::read_to_string(file(node))
            .expect("record file")
            .lines()
            .map(|l| {
                let r: Applied = serde_json::from_str(l).expect("a record a line");
                (r.item, r.hash, r.at)
            })
            .collect()
    }

    /// Leftover staging directories of the release.
    fn staged(node: &Node) -> usize {
        std::fs::read_dir(&node.lock_dir)
            .expect("ls")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".applied-"))
            .count()
    }

    /// A directory of symlinks to `tools` only, for a PATH without the others.
    fn only_tools(dir: &Path, tools: &[&str]) -> String {
        let bin = dir.join("only");
        std::fs::create_dir_all(&bin).expect("mkdir");
        for tool in tools {
            let found = std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .expect("sh");
            assert!(found.status.success(), "this test needs `{tool}`");
            let at = String::from_utf8(found.stdout).expect("utf-8");
            std::os::unix::fs::symlink(at.trim(), bin.join(tool)).expect("symlink");
        }
        bin.to_str().expect("utf-8").to_string()
    }

    #[test]
    fn drift_records_round_trip_and_garbage_is_ignored() {
        let r = rec("file:/etc/x y'\n", "h", 5);
        let line = serde_json::to_string(&r).unwrap();
        let long = serde_json::to_string(&rec("file:/long", &"h".repeat(RECORD_LIMIT), 1)).unwrap();
        let text = format!(
            "{APPLIED_SECTION}\n\u{1f}\n{line}\n\n\u{1f}\nnot json\n{long}\n{}\n\u{1f}AB12\n{{}}\n",
            soft::SOFT_SECTION
        );
        let got = parse(&text);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got.get(&r.item), Some(&r));
    }

    /// A 20,000-item apply left its hard lock behind: the epilogue ran `mv` once per drift
    /// record and outlived its time limit before the release. Now 600 records cost one `mv`,
    /// and every record is still written and read back.
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
        let locks = dir.path().join("locks");
        std::fs::create_dir(&locks).expect("mkdir");
        let node = node_in(&locks);
        let records: Vec<Applied> = (0..600)
            .map(|i| rec(&format!("file:/etc/f{i} it's"), &format!("h{i}"), i))
            .collect();
        for shell in ["dash", "bash"] {
            let _ = std::fs::remove_file(&counter);
            let _ = std::fs::remove_file(file(&node));
            write(shell, &node, &records, Some(&path));
            let got = parse(&run(shell, &read_script(&node), Some(&path)));
            assert_eq!(got.len(), records.len(), "{shell}");
            for r in &records {
                assert_eq!(got.get(&r.item), Some(r), "{shell}");
            }
            let calls = std::fs::read_to_string(&counter)
                .unwrap_or_default()
                .lines()
                .count();
            assert_eq!(calls, 1, "{shell}: mv ran {calls} times for 600 records");
            assert_eq!(staged(&node), 0, "{shell}: staging left behind");
            assert_eq!(lines(&node).len(), 600, "{shell}: one line per record");
        }
    }

    /// Verify of a node with 20,000 drift records took 20 s: it read each with a `head` of
    /// its own. One awk reads the old directory's records; the file is one `head`.
    #[test]
    fn verify_reads_drift_records_without_a_process_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let counter = dir.path().join("calls");
        let real = run("sh", "command -v head", None);
        std::fs::write(
            bin.join("head"),
            format!(
                "#!/bin/sh\necho x >> {}\nexec {} \"$@\"\n",
                quote(counter.to_str().expect("utf-8")),
                quote(real.trim())
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
        let node = node_in(dir.path());
        let old: Vec<Applied> = (0..300)
            .map(|i| rec(&format!("file:/etc/old{i}"), &format!("h{i}"), i))
            .collect();
        let new: Vec<Applied> = (0..300)
            .map(|i| rec(&format!("file:/etc/new{i}"), &format!("h{i}"), i))
            .collect();
        write_old(&node, &old);
        write("sh", &node, &new, None);
        write_old(&node, &old);
        for shell in ["dash", "bash"] {
            let _ = std::fs::remove_file(&counter);
            let got = parse(&run(shell, &read_script(&node), Some(&path)));
            assert_eq!(got.len(), 600, "{shell}");
            let calls = std::fs::read_to_string(&counter)
                .unwrap_or_default()
                .lines()
                .count();
            assert_eq!(calls, 1, "{shell}: head ran {calls} times");
        }
    }

    /// A steady apply of 20,000 items rewrote all 20,000 drift records (each rename flushing
    /// to disk) although only their time had changed. When no record's state hash, expected
    /// hash or applier changed, the record file is not written at all (same inode, same
    /// mtime); when one did, the file is replaced and the others keep their time.
    #[test]
    fn steady_apply_does_not_rewrite_unchanged_drift_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = node_in(dir.path());
        for shell in ["dash", "bash"] {
            let put = |records: &[Applied]| write(shell, &node, records, None);
            put(&[rec("file:/a", "h1", 1), rec("file:/b", "h1", 1)]);
            let meta = || std::fs::metadata(file(&node)).expect("record file");
            let (ino, mtime) = (meta().ino(), meta().mtime_nsec());
            std::thread::sleep(std::time::Duration::from_millis(20));
            put(&[rec("file:/a", "h1", 2), rec("file:/b", "h1", 2)]);
            assert_eq!(meta().ino(), ino, "{shell}: unchanged records rewritten");
            assert_eq!(
                meta().mtime_nsec(),
                mtime,
                "{shell}: unchanged records touched"
            );
            put(&[rec("file:/a", "h1", 3), rec("file:/b", "h2", 3)]);
            assert_ne!(
                meta().ino(),
                ino,
                "{shell}: a changed record was not written"
            );
            assert_eq!(
                lines(&node),
                [
                    ("file:/a".into(), "h1".into(), 1),
                    ("file:/b".into(), "h2".into(), 3)
                ],
                "{shell}"
            );
            assert_eq!(meta().mode() & 0o777, 0o600, "{shell}: records are private");
            assert_eq!(staged(&node), 0, "{shell}");
            std::fs::remove_file(file(&node)).expect("rm");
        }
    }

    /// Operators upgrading cinch keep drift attribution: records in the directory an older
    /// cinch wrote (a file per item) are read beside the file (the file winning), and the next
    /// apply merges them into the file (records of items it did not apply included) and
    /// removes the directory.
    #[test]
    fn drift_records_in_the_old_directory_are_read_and_moved_into_the_file() {
        for shell in ["dash", "bash"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let node = node_in(dir.path());
            write_old(&node, &[rec("file:/a", "old", 1), rec("file:/b", "old", 1)]);
            let got = read_back(shell, &node);
            assert_eq!(got.len(), 2, "{shell}: the old records are read");
            assert_eq!(got["file:/a"].hash, "old", "{shell}");

            // A newer record in the file wins over the directory's.
            std::fs::write(
                file(&node),
                format!(
                    "{}\n",
                    serde_json::to_string(&rec("file:/b", "new", 2)).unwrap()
                ),
            )
            .expect("file");
            let got = read_back(shell, &node);
            assert_eq!(got.len(), 2, "{shell}");
            assert_eq!(got["file:/b"].hash, "new", "{shell}: the file wins");

            // The next apply (of c, and of a unchanged) writes the file and drops the directory.
            write(
                shell,
                &node,
                &[rec("file:/a", "old", 9), rec("file:/c", "h", 9)],
                None,
            );
            assert!(
                !Path::new(&old_dir(&node)).exists(),
                "{shell}: old directory kept"
            );
            let mut got = lines(&node);
            got.sort();
            assert_eq!(
                got,
                [
                    ("file:/a".into(), "old".into(), 1),
                    ("file:/b".into(), "new".into(), 2),
                    ("file:/c".into(), "h".into(), 9)
                ],
                "{shell}"
            );
            assert_eq!(read_back(shell, &node).len(), 3, "{shell}");
        }
    }

    /// Records are node-controlled: a record file that is a symlink, a directory, a pipe,
    /// garbage or huge is never followed, never blocks, never fills the controller, and the
    /// release's script still ends well (so the hard lock is released after it).
    #[test]
    fn hostile_record_file_is_neither_followed_nor_trusted() {
        let good = rec("file:/a", "h", 1);
        let good_line = serde_json::to_string(&good).unwrap();
        for shell in ["dash", "bash"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let node = node_in(dir.path());
            let victim = dir.path().join("victim");
            let secret = format!("{good_line}\nprecious\n");

            // A symlink: not read, and replaced rather than written through.
            std::fs::write(&victim, &secret).expect("victim");
            std::os::unix::fs::symlink(&victim, file(&node)).expect("plant");
            assert!(
                read_back(shell, &node).is_empty(),
                "{shell}: read a symlink"
            );
            write(shell, &node, &[rec("file:/b", "h", 2)], None);
            assert_eq!(std::fs::read_to_string(&victim).unwrap(), secret, "{shell}");
            assert!(!Path::new(&file(&node)).is_symlink(), "{shell}");
            assert_eq!(lines(&node), [("file:/b".into(), "h".into(), 2)], "{shell}");
            std::fs::remove_file(file(&node)).expect("rm");

            // A directory: nothing read, nothing written into it, no staging left.
            std::fs::create_dir(file(&node)).expect("mkdir");
            assert!(read_back(shell, &node).is_empty(), "{shell}");
            write(shell, &node, &[rec("file:/b", "h", 2)], None);
            assert_eq!(
                std::fs::read_dir(file(&node)).unwrap().count(),
                0,
                "{shell}"
            );
            assert_eq!(staged(&node), 0, "{shell}");
            std::fs::remove_dir(file(&node)).expect("rmdir");

            // A pipe nobody writes to: neither the read nor the write waits on it.
            let made = std::process::Command::new("mkfifo")
                .arg(file(&node))
                .status()
                .expect("mkfifo");
            assert!(made.success());
            assert!(read_back(shell, &node).is_empty(), "{shell}");
            write(shell, &node, &[rec("file:/b", "h", 2)], None);
            assert_eq!(lines(&node), [("file:/b".into(), "h".into(), 2)], "{shell}");

            // Garbage around a record, section marks and NULs inside: the record is read,
            // the rest ignored, and the next write keeps the record and drops the garbage.
            std::fs::write(
                file(&node),
                format!(
                    "garbage\n\u{1e}soft-locks\n\0\n{good_line}\n{{\"item\":\"x\"\n{}\n",
                    "y".repeat(RECORD_LIMIT * 2)
                ),
            )
            .expect("garbage");
            let got = read_back(shell, &node);
            assert_eq!(got.len(), 1, "{shell}: {got:?}");
            assert_eq!(got["file:/a"], good, "{shell}");
            write(shell, &node, &[rec("file:/b", "h", 2)], None);
            assert_eq!(
                lines(&node),
                [
                    ("file:/a".into(), "h".into(), 1),
                    ("file:/b".into(), "h".into(), 2)
                ],
                "{shell}"
            );

            // Huge: verify reads at most RECORDS_LIMIT bytes of it, and the next write
            // replaces it with the new records instead of reading it.
            let mut big = format!("{good_line}\n").into_bytes();
            big.resize(RECORDS_LIMIT + (1 << 20), b'z');
            std::fs::write(file(&node), &big).expect("huge");
            let out = run(shell, &read_script(&node), None);
            assert!(
                out.len() < RECORDS_LIMIT + 4096,
                "{shell}: {} bytes read",
                out.len()
            );
            assert_eq!(parse(&out).len(), 1, "{shell}");
            write(shell, &node, &[rec("file:/b", "h", 2)], None);
            assert_eq!(lines(&node), [("file:/b".into(), "h".into(), 2)], "{shell}");
        }
    }

    /// A node without awk still gets one record file: the other items' lines (`grep -v -F`)
    /// and the new records, every apply, and never merges (nor drops) the old directory.
    #[test]
    fn drift_records_without_awk_are_still_one_merged_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = only_tools(
            dir.path(),
            &[
                "mktemp", "rm", "mv", "cat", "sed", "grep", "wc", "head", "tr",
            ],
        );
        let node = node_in(dir.path());
        for shell in ["dash", "bash"] {
            let shell_at = run("sh", &format!("command -v {shell}"), None);
            let shell_at = shell_at.trim();
            write(
                shell_at,
                &node,
                &[rec("file:/a", "h1", 1), rec("file:/b\"x", "h1", 1)],
                Some(&path),
            );
            write(shell_at, &node, &[rec("file:/b\"x", "h2", 2)], Some(&path));
            assert_eq!(
                lines(&node),
                [
                    ("file:/a".into(), "h1".into(), 1),
                    ("file:/b\"x".into(), "h2".into(), 2)
                ],
                "{shell}"
            );
            write_old(&node, &[rec("file:/c", "h", 1)]);
            write(shell_at, &node, &[rec("file:/a", "h1", 3)], Some(&path));
            assert!(
                Path::new(&old_dir(&node)).is_dir(),
                "{shell}: old records dropped"
            );
            let got = parse(&run(shell_at, &read_script(&node), Some(&path)));
            assert_eq!(got.len(), 3, "{shell}: {got:?}");
            assert_eq!(staged(&node), 0, "{shell}");
            std::fs::remove_dir_all(old_dir(&node)).expect("rm");
            std::fs::remove_file(file(&node)).expect("rm");
        }
    }
}
