//! Hard locks (held during apply, so two operators never apply to one node at once) and soft
//! locks (`cinch lock add/show/remove`: "hands off these items until tonight").
//!
//! Storage on the node (README.md "Locks"), under the node's `lock_dir`, keyed by node name so
//! several nodes may share one machine:
//! - `hard-NODE/` created atomically with `mkdir`, holding `info` (JSON: user, date, comment,
//!   token, and the holder's control host and pid); its mtime is the heartbeat, touched by every
//!   command of the apply, so a lock whose holder died can be told from a busy one;
//! - `soft-NODE/ID`, one line of JSON per soft lock;
//! - `applied-NODE.jsonl`, the drift records of the last apply per item, a JSON line each
//!   (`applied`; an older cinch kept them in `applied-NODE/`, a file per item);
//! - `steady-NODE`, the steady marker that lets an unchanged node's first command also release
//!   the lock (`steady`).
//!
//! Here: the stored types, errors, ids, durations and lock-dir shell shared by the parts:
//! `soft` (the soft-lock protocol), `hard` (taking, beating and releasing the hard
//! lock), `guard` (the executor's view during an apply), `identity` (who holds a lock) and
//! `steady` (the one-round-trip steady state).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::items::Item;
use crate::output::{Lines, untrusted};
use crate::repo::Node;
use crate::shell::quote;
use crate::transport::{Command, Transport, TransportError};

mod applied;
mod guard;
mod hard;
mod identity;
mod soft;
mod steady;

pub use applied::{Applied, Records};
pub use guard::*;
pub use hard::*;
pub use identity::*;
pub use soft::*;

/// A hard lock older than this is stale: reported and taken over.
pub const HARD_LOCK_STALE_SECS: i64 = 8 * 3600;

/// Characters of a soft-lock id.
const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// One soft lock as stored on the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoftLock {
    pub id: String,
    pub user: String,
    /// When it was created (UNIX seconds).
    pub date: i64,
    /// When it stops counting (UNIX seconds).
    pub expiry: i64,
    /// Item selectors; `["*"]` is everything.
    pub items: Vec<String>,
    #[serde(default)]
    pub comment: String,
}

impl SoftLock {
    /// Whether this lock covers `item` (selectors as in `--only`).
    pub fn covers(&self, item: &Item) -> bool {
        self.items
            .iter()
            .any(|sel| crate::items::selector::matches(sel, item))
    }
}

/// What is written into `hard-NODE/info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HardLockInfo {
    pub user: String,
    /// UNIX seconds.
    pub date: i64,
    #[serde(default)]
    pub comment: String,
    /// Random per apply, so a run only ever releases the lock it took.
    #[serde(default)]
    pub token: String,
    /// The control host the holder runs on (empty: written by an older cinch).
    #[serde(default)]
    pub host: String,
    /// The holder's process id on `host`, so a crashed holder can be recognised.
    #[serde(default)]
    pub pid: u32,
}

impl HardLockInfo {
    /// Who holds the lock, for messages: user, and the process when known (sanitised).
    fn holder(&self) -> String {
        let user = crate::output::untrusted(&self.user, crate::output::Lines::Escape);
        if self.host.is_empty() {
            user.into_owned()
        } else {
            format!(
                "{user} (pid {} on {})",
                self.pid,
                crate::output::untrusted(&self.host, crate::output::Lines::Escape)
            )
        }
    }
}

/// Why a lock operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else is applying to this node.
    #[error(
        "locked by {user} since {since}{comment}, last heartbeat {heartbeat} ago (use --force to override)"
    )]
    Held {
        user: String,
        since: String,
        comment: String,
        heartbeat: String,
    },
    /// The node could not be reached.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The node answered something we cannot use (permissions, full disk, ...).
    #[error("{0}")]
    Remote(String),
}

/// A hard lock this process holds; [`ApplyGuard`] gives it back with [`release_hard_script`].
#[derive(Debug, Clone)]
pub struct HardLock {
    pub token: String,
    /// Soft locks found while taking the hard lock (expired ones already dropped).
    pub soft_locks: Vec<SoftLock>,
    /// Expired soft locks seen, to be cleaned up.
    pub expired: Vec<String>,
    /// Things the user should know (stale lock taken over, corrupt lock files ignored).
    pub warnings: Vec<String>,
}

/// Parses an expiry like `30s`, `10m`, `8h`, `2d`, `1w` or `1d12h` into seconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "invalid duration {text:?}: use a number and a unit (s, m, h, d, w), e.g. 30m, 8h, 1d12h"
        )
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: i64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        let n: i64 = num.parse().map_err(|_| bad())?;
        num.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !num.is_empty() || total <= 0 {
        return Err(bad());
    }
    Ok(total)
}

/// A new random soft-lock id.
pub fn new_lock_id() -> String {
    (0..4)
        .map(|_| ID_ALPHABET[fastrand::usize(..ID_ALPHABET.len())] as char)
        .collect()
}

/// Normalises a user-typed id (ids match case-insensitively).
pub fn normalize_id(id: &str) -> Option<String> {
    let up = id.trim().to_ascii_uppercase();
    (up.len() == 4 && up.bytes().all(|b| ID_ALPHABET.contains(&b))).then_some(up)
}

fn hard_dir(node: &Node) -> String {
    format!("{}/hard-{}", node.lock_dir.trim_end_matches('/'), node.name)
}

/// The node's file-hash cache (see [`crate::node_shell::Script::hash_cache`]).
fn hashes_file(node: &Node) -> String {
    format!(
        "{}/hashes-{}",
        node.lock_dir.trim_end_matches('/'),
        node.name
    )
}

fn soft_dir(node: &Node) -> String {
    format!("{}/soft-{}", node.lock_dir.trim_end_matches('/'), node.name)
}

/// Shell that creates the lock dir with safe permissions if it is missing, then checks that the
/// login user can use it.
fn ensure_lock_dir(node: &Node) -> String {
    format!(
        "[ -d {d} ] || (umask 077; mkdir -p {d}) || exit 71\n{}",
        check_access(&node.lock_dir, Access::Write),
        d = quote(&node.lock_dir)
    )
}

/// Exit code of lock shell when a lock directory exists but the login user cannot use it.
const UNUSABLE_EXIT: i32 = 72;
/// Marks the line naming an unusable lock directory and the login user.
const UNUSABLE_MARK: &str = "\u{1e}unusable";

/// What a lock operation needs of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// List and read files (`lock show`, verify).
    Read,
    /// Also create and remove entries (apply, `lock add/remove`).
    Write,
}

/// Shell that stops with [`UNUSABLE_EXIT`] and a line naming `dir` and the login user when `dir`
/// exists but cannot be read (or written), instead of letting a glob or `cat` fail silently.
fn check_access(dir: &str, access: Access) -> String {
    let d = quote(dir);
    let w = if access == Access::Write {
        format!(" && [ -w {d} ]")
    } else {
        String::new()
    };
    format!(
        "if [ -e {d} ] && ! {{ [ -r {d} ] && [ -x {d} ]{w}; }}; then printf '%s\\037%s\\037%s\\n' {mark} {d} \"$(id -un 2>/dev/null || id -u)\"; exit {UNUSABLE_EXIT}; fi\n",
        mark = quote(UNUSABLE_MARK),
    )
}

/// The "cannot use the lock directory" report in `text`, as a message saying what to do.
fn unusable_message(node: &Node, text: &str) -> Option<String> {
    let line = text.lines().find_map(|l| l.strip_prefix(UNUSABLE_MARK))?;
    let mut parts = line.split('\u{1f}').skip(1);
    let dir = parts.next().unwrap_or(&node.lock_dir);
    let user = parts.next().unwrap_or("the login user");
    Some(format!(
        "the lock directory {dir} cannot be read or written by {user} on this node: set lock_dir \
         for node {} (nodes.toml) to a directory {user} owns, or set become = \"sudo\" so cinch \
         works as root",
        node.name
    ))
}

fn remote_failure(node: &Node, what: &str, out: &crate::transport::Output) -> LockError {
    let stdout = String::from_utf8_lossy(&out.stdout);
    if let Some(msg) = unusable_message(node, &stdout) {
        return LockError::Remote(msg);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out
        .status
        .map_or_else(|| "a signal".to_string(), |c| format!("exit code {c}"));
    let hint = if out.status == Some(71) {
        " (cannot create the lock directory: check lock_dir and permissions)"
    } else {
        ""
    };
    LockError::Remote(format!(
        "{what} failed with {code}{hint}: {}",
        stderr.trim()
    ))
}

/// A UNIX time as local `YYYY-MM-DD HH:MM:SS +HH:MM`: the zone is always shown, so times
/// read by people in different zones (or from logs) are never ambiguous.
pub fn format_time(secs: i64) -> String {
    use chrono::TimeZone;
    chrono::Local.timestamp_opt(secs, 0).single().map_or_else(
        || secs.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S %:z").to_string(),
    )
}

/// A UNIX time as UTC RFC 3339, for JSON output.
pub fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).map_or_else(
        || secs.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// A duration in seconds as a short human string (`7h59m`, `2d3h`, `45s`).
pub fn format_remaining(secs: i64) -> String {
    if secs <= 0 {
        return "expired".into();
    }
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        Node {
            name: "web1".into(),
            hostname: "web1".into(),
            username: None,
            port: None,
            transport: crate::repo::TransportKind::Local,
            groups: vec![],
            bundles: vec![],
            dummy: false,
            become_: None,
            lock_dir: "/tmp/x".into(),
            ..Node::bare("n1", serde_json::json!({}))
        }
    }

    #[test]
    fn durations_parse_units_and_combinations() {
        assert_eq!(parse_duration("30s"), Ok(30));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("8h"), Ok(8 * 3600));
        assert_eq!(parse_duration("2d"), Ok(2 * 86_400));
        assert_eq!(parse_duration("1w"), Ok(7 * 86_400));
        assert_eq!(parse_duration("1d12h"), Ok(86_400 + 12 * 3600));
        assert_eq!(parse_duration("1H30M"), Ok(5400));
    }

    #[test]
    fn bad_durations_are_errors_that_say_what_is_allowed() {
        for bad in [
            "",
            "8",
            "h",
            "8x",
            "-1h",
            "0s",
            "1.5h",
            "99999999999999999999w",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("s, m, h, d, w"), "{err}");
        }
    }

    #[test]
    fn lock_ids_are_four_uppercase_alphanumerics_and_match_case_insensitively() {
        for _ in 0..100 {
            let id = new_lock_id();
            assert_eq!(normalize_id(&id.to_lowercase()), Some(id));
        }
        assert_eq!(normalize_id("ab1"), None);
        assert_eq!(normalize_id("ab-1"), None);
    }

    #[test]
    fn soft_section_keeps_live_locks_and_reports_expired_corrupt_and_foreign_files() {
        let live = r#"{"id":"AB12","user":"u","date":10,"expiry":200,"items":["*"],"comment":"c"}"#;
        let old = r#"{"id":"OLD1","user":"u","date":10,"expiry":50,"items":["*"],"comment":""}"#;
        let text = format!(
            "acquired\n{SOFT_SECTION}\n\u{1f}AB12\n{live}\n\n\u{1f}OLD1\n{old}\n\n\u{1f}ZZZZ\nnot json\n\n\u{1f}notes.txt\nhello\n"
        );
        let (locks, expired, warnings) = parse_soft_section(&node(), &text, 100);
        assert_eq!(locks.len(), 1);
        assert_eq!(locks[0].id, "AB12");
        assert_eq!(expired, vec!["OLD1".to_string()]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("corrupt") && w.contains("ZZZZ"))
        );
        assert!(warnings.iter().any(|w| w.contains("notes.txt")));
    }

    fn info(host: &str, pid: u32, date: i64) -> HardLockInfo {
        HardLockInfo {
            user: "bob".into(),
            date,
            comment: String::new(),
            token: "t".into(),
            host: host.into(),
            pid,
        }
    }

    #[test]
    fn a_dead_holder_is_recognised_only_when_that_is_safe() {
        let now = 1_000_000;
        let alive = std::process::id();
        let dead = {
            let mut c = std::process::Command::new("true").spawn().expect("true");
            let pid = c.id();
            c.wait().expect("wait");
            pid
        };
        let gone = |i: Option<&HardLockInfo>, age| holder_gone(i, age, now, "here");
        // Same control host: a gone process after a few quiet minutes, never a live one.
        assert!(gone(Some(&info("here", dead, now)), DEAD_HOLDER_SECS).is_some());
        assert!(gone(Some(&info("here", dead, now)), DEAD_HOLDER_SECS - 1).is_none());
        assert!(gone(Some(&info("here", alive, now)), SILENT_HOLDER_SECS * 2).is_none());
        assert!(gone(Some(&info("here", 0, now)), DEAD_HOLDER_SECS * 2).is_none());
        // Another host: only a long silence counts.
        assert!(gone(Some(&info("there", dead, now)), DEAD_HOLDER_SECS * 2).is_none());
        assert!(gone(Some(&info("there", dead, now)), SILENT_HOLDER_SECS).is_some());
        // Anything silent for 8 h is stale; an older cinch's lock is judged by its date.
        assert!(gone(Some(&info("here", alive, now)), HARD_LOCK_STALE_SECS).is_some());
        assert!(gone(Some(&info("", 0, now - HARD_LOCK_STALE_SECS)), 0).is_some());
        assert!(gone(Some(&info("", 0, now - 60)), HARD_LOCK_STALE_SECS).is_none());
        assert!(gone(None, HARD_LOCK_STALE_SECS - 1).is_none());
        assert!(gone(None, HARD_LOCK_STALE_SECS).is_some());
    }

    #[test]
    fn takeover_never_removes_a_lock_that_changed_since_it_was_judged_dead() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut n = node();
        n.lock_dir = dir.path().display().to_string();
        let hard = dir.path().join("hard-web1");
        std::fs::create_dir(&hard).expect("mkdir");
        let theirs = r#"{"user":"bob","date":1,"host":"h","pid":1}"#;
        std::fs::write(hard.join("info"), format!("{theirs}\n")).expect("info");
        let mtime = std::fs::metadata(&hard)
            .and_then(|m| m.modified())
            .expect("mtime")
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs() as i64;
        let (mine, token) = new_info("me", "cinch apply");
        let run = |t: &Takeover| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(acquire_script(&n, &mine, false, Some(t)))
                .output()
                .expect("sh");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        // A heartbeat since it was judged dead: the lock is alive and stays.
        let seen_earlier = Takeover {
            mtime: mtime - 100,
            info_line: theirs.into(),
            token: token.clone(),
        };
        let (rc, out) = run(&seen_earlier);
        assert_eq!(rc, Some(HELD_EXIT), "{out}");
        assert!(out.starts_with("held "), "{out}");
        let info = std::fs::read_to_string(hard.join("info")).expect("info");
        assert_eq!(info.trim(), theirs);
        // Exactly as judged: taken over.
        let as_seen = Takeover {
            mtime,
            info_line: theirs.into(),
            token,
        };
        let (rc, out) = run(&as_seen);
        assert_eq!(rc, Some(0), "{out}");
        assert!(out.starts_with("acquired"), "{out}");
        let info = std::fs::read_to_string(hard.join("info")).expect("info");
        assert_eq!(info.trim(), mine);
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(left.len(), 1, "nothing moved aside is left behind");
    }

    /// A full disk let the hard lock's mkdir succeed and its info write fail: the nameless
    /// lock stayed behind and refused every later apply as "locked by someone".
    #[test]
    fn hard_lock_whose_info_cannot_be_written_is_not_left_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut n = node();
        n.lock_dir = dir.path().display().to_string();
        let (mine, _) = new_info("me", "cinch apply");
        for shell in ["dash", "bash"] {
            // A file size limit of 0 makes the info write fail as a full disk would.
            let out = std::process::Command::new(shell)
                .arg("-c")
                .arg(format!(
                    "trap '' XFSZ; ulimit -f 0\n{}",
                    acquire_script(&n, &mine, false, None)
                ))
                .output()
                .expect("dash and bash (apt-get install dash bash)");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{shell}: {stderr}");
            assert!(
                stderr.contains("cannot write the hard lock's info"),
                "{shell}: {stderr}"
            );
            assert!(!String::from_utf8_lossy(&out.stdout).contains("acquired"));
            assert!(!dir.path().join("hard-web1").exists(), "{shell}");
        }
    }

    #[test]
    fn remaining_time_is_short_and_readable() {
        assert_eq!(format_remaining(45), "45s");
        assert_eq!(format_remaining(600), "10m");
        assert_eq!(format_remaining(8 * 3600 - 60), "7h59m");
        assert_eq!(format_remaining(2 * 86_400 + 3 * 3600), "2d3h");
        assert_eq!(format_remaining(0), "expired");
    }
}
