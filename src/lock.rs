//! Hard locks (held during apply, so two operators never apply to one node at once) and soft
//! locks (`cinch lock add/show/remove`: "hands off these items until tonight").
//!
//! Storage on the node (README.md "Locks"), under the node's `lock_dir`, keyed by node name so
//! several nodes may share one machine:
//! - `hard-NODE/` created atomically with `mkdir`, holding `info` (JSON: user, date, comment,
//!   token, and the holder's control host and pid); its mtime is the heartbeat, touched by every
//!   command of the apply, so a lock whose holder died can be told from a busy one;
//! - `soft-NODE/ID`, one line of JSON per soft lock.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cli::{Context, LockCommand};
use crate::error::{Error, Result};
use crate::events::{Bus, Event};
use crate::items::Item;
use crate::output::{Lines, untrusted};
use crate::repo::{Node, Repo};
use crate::shell::quote;
use crate::transport::{Command, Transport, TransportError};

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

/// The current time in UNIX seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Who we are in lock files, so ownership follows the person and not the checkout:
/// `$CINCH_IDENTITY`, else `user@hostname` (the user from `$USER`/`$LOGNAME`, else the password
/// database, as under cron or in containers). The git branch never takes part.
pub fn identity() -> String {
    if let Ok(id) = std::env::var("CINCH_IDENTITY")
        && !id.trim().is_empty()
    {
        return id;
    }
    format!("{}@{}", login_user(), hostname())
}

/// The user running cinch: `$USER`, else `$LOGNAME`, else the password database entry of our uid.
fn login_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|u| !u.trim().is_empty())
        .or_else(passwd_user)
        // SAFETY: getuid cannot fail.
        .unwrap_or_else(|| format!("uid{}", unsafe { libc::getuid() }))
}

/// The password-database name of this process's uid.
fn passwd_user() -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: passwd is plain old data; getpwuid_r writes strings only into `buf` (valid for its
    // length) and sets `result` to `&pw` or null.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::getuid(),
            &mut pw,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || pw.pw_name.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(pw.pw_name).to_string_lossy();
        (!name.is_empty()).then(|| name.into_owned())
    }
}

/// This machine's host name, part of the default identity and of a hard lock's holder.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length and gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
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

/// Marks the start of the soft-lock listing in a command's output.
const SOFT_SECTION: &str = "\u{1e}soft-locks";
/// Precedes each soft-lock file name.
const SOFT_FILE: char = '\u{1f}';

/// Shell that lists every soft lock file as `\x1f NAME \n CONTENT \n`.
fn list_soft_script(node: &Node) -> String {
    format!(
        "{}{}printf '%s\\n' {sec}\nfor f in {s}/* {s}/.[!.]*; do [ -f \"$f\" ] || continue; printf '\\037%s\\n' \"${{f##*/}}\"; head -c 65536 \"$f\"; echo; done\n",
        check_access(&node.lock_dir, Access::Read),
        check_access(&soft_dir(node), Access::Read),
        sec = quote(SOFT_SECTION),
        s = quote(&soft_dir(node)),
    )
}

/// Parses the soft-lock section, dropping expired, corrupt and foreign files with a warning.
/// Returns (live locks, expired ids, warnings).
fn parse_soft_section(
    node: &Node,
    text: &str,
    now: i64,
) -> (Vec<SoftLock>, Vec<String>, Vec<String>) {
    let mut locks = Vec::new();
    let mut expired = Vec::new();
    let mut warnings = Vec::new();
    let Some(start) = text.find(SOFT_SECTION) else {
        return (locks, expired, warnings);
    };
    let body = &text[start + SOFT_SECTION.len()..];
    for chunk in body.split(SOFT_FILE).skip(1) {
        let (name, content) = chunk.split_once('\n').unwrap_or((chunk, ""));
        let content = content.trim();
        let path = format!("{}/{}", soft_dir(node), name);
        let Some(id) = normalize_id(name).filter(|id| id == name) else {
            warnings.push(format!(
                "{}: ignoring {path}: not a soft lock (names are 4 characters A-Z0-9)",
                node.name
            ));
            continue;
        };
        match serde_json::from_str::<SoftLock>(content) {
            Ok(lock) if lock.id.eq_ignore_ascii_case(&id) => {
                if lock.expiry <= now {
                    expired.push(id);
                } else {
                    locks.push(lock);
                }
            }
            Ok(_) => warnings.push(format!(
                "{}: ignoring {path}: its id does not match its file name",
                node.name
            )),
            Err(e) => warnings.push(format!(
                "{}: ignoring corrupt soft lock {path}: {e}",
                node.name
            )),
        }
    }
    locks.sort_by(|a, b| a.date.cmp(&b.date).then_with(|| a.id.cmp(&b.id)));
    (locks, expired, warnings)
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

/// Removes expired soft locks (best effort: they are ignored anyway).
fn remove_ids(transport: &dyn Transport, node: &Node, ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    let files: Vec<String> = ids
        .iter()
        .map(|id| quote(&format!("{}/{id}", soft_dir(node))))
        .collect();
    let _ = transport.run(&Command::new(format!("rm -f {}", files.join(" "))));
}

/// Reads the live soft locks of a node, cleaning up expired ones.
pub fn read_soft(
    transport: &dyn Transport,
    node: &Node,
) -> Result<(Vec<SoftLock>, Vec<String>), LockError> {
    let out = transport.run(&Command::new(list_soft_script(node)))?;
    if out.status != Some(0) {
        return Err(remote_failure(node, "reading soft locks", &out));
    }
    let (locks, expired, warnings) =
        parse_soft_section(node, &String::from_utf8_lossy(&out.stdout), now());
    remove_ids(transport, node, &expired);
    Ok((locks, warnings))
}

/// Exit code of the acquire script when someone else holds the lock.
const HELD_EXIT: i32 = 75;

/// How often a running apply touches its hard lock, so others can tell it is alive.
pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// A hard lock whose holder ran on this machine and whose process is gone is taken over once
/// its heartbeat is this old (a few missed beats: never a lock that is merely busy).
pub const DEAD_HOLDER_SECS: i64 = 3 * 60;

/// A hard lock held from another machine is taken over once its heartbeat is this old: its pid
/// cannot be checked from here, so only a long silence (30 missed beats) says it is gone.
pub const SILENT_HOLDER_SECS: i64 = 30 * 60;

/// Shell that takes the node's hard lock and lists its soft locks, in one round trip. When
/// someone holds it, prints `held AGE MTIME` (AGE = seconds since the holder's last heartbeat
/// by the node's clock) and the holder's info line, and exits [`HELD_EXIT`]: the caller decides
/// whether the holder is gone (see [`Takeover`]). With `takeover`, a lock still exactly as the
/// caller saw it (same heartbeat, same info) is first moved aside and removed.
fn acquire_script(
    node: &Node,
    info_json: &str,
    force: bool,
    takeover: Option<&Takeover>,
) -> String {
    let hd = hard_dir(node);
    let h = quote(&hd);
    let take = format!(
        "mkdir {h} 2>/dev/null && printf '%s\\n' {} > {h}/info",
        quote(info_json)
    );
    let mut script = ensure_lock_dir(node);
    script.push_str(&check_access(&hd, Access::Write));
    if force {
        script.push_str(&format!("rm -rf {h}\n"));
    }
    if let Some(t) = takeover {
        let aside = quote(&format!("{hd}.takeover.{}", t.token));
        // Moving aside is atomic; the lock is only deleted if what was moved is the lock judged
        // dead (same heartbeat, same info), so two appliers taking over at once never delete
        // each other's fresh lock. Anything else is put back (and then reported as held).
        script.push_str(&format!(
            r#"if mv {h} {aside} 2>/dev/null; then
  if [ "$(stat -c %Y {aside} 2>/dev/null)" = {mtime} ] && [ "$(head -n 1 {aside}/info 2>/dev/null)" = {info} ]; then
    rm -rf {aside}
  else
    [ -e {h} ] || mv {aside} {h}
  fi
fi
"#,
            mtime = quote(&t.mtime.to_string()),
            info = quote(&t.info_line),
        ));
    }
    script.push_str(&format!(
        r#"if {take}; then echo acquired
else
  n=$(date +%s); m=$(stat -c %Y {h} 2>/dev/null) || m=$n
  echo "held $((n - m)) $m"; head -n 1 {h}/info 2>/dev/null | head -c 4096; echo
  exit {HELD_EXIT}
fi
"#,
    ));
    script.push_str(&list_soft_script(node));
    script
}

/// A lock judged dead, to be taken over if it is still exactly as it was seen.
#[derive(Debug, Clone, PartialEq)]
struct Takeover {
    /// The directory's mtime (the heartbeat) as the node reported it.
    mtime: i64,
    /// The first line of its `info`, as read.
    info_line: String,
    /// Ours, to name the directory moved aside.
    token: String,
}

/// Whether a process with this pid exists on this machine.
fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission; nothing is delivered.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether a held lock's holder is gone, and why (for the warning): same control host and its
/// process no longer exists with no heartbeat for [`DEAD_HOLDER_SECS`]; another host silent for
/// [`SILENT_HOLDER_SECS`]; or anything silent for [`HARD_LOCK_STALE_SECS`]. A lock from an
/// older cinch (no host, no heartbeat) is judged by its date.
fn holder_gone(info: Option<&HardLockInfo>, age: i64, now: i64, my_host: &str) -> Option<String> {
    let Some(info) = info else {
        return (age >= HARD_LOCK_STALE_SECS).then(|| "stale".to_string());
    };
    if info.host.is_empty() {
        return (now - info.date >= HARD_LOCK_STALE_SECS).then(|| "stale".to_string());
    }
    if age >= HARD_LOCK_STALE_SECS {
        return Some("stale".into());
    }
    if info.host == my_host {
        if info.pid != 0 && !pid_alive(info.pid) && age >= DEAD_HOLDER_SECS {
            return Some(format!(
                "dead (process {} on this host is gone, no heartbeat for {})",
                info.pid,
                format_remaining(age)
            ));
        }
        return None;
    }
    (age >= SILENT_HOLDER_SECS).then(|| {
        format!(
            "dead (no heartbeat from {} for {})",
            info.host,
            format_remaining(age)
        )
    })
}

/// What [`acquire_script`] printed, read.
enum Acquired {
    Got(HardLock),
    /// Held by a holder judged gone: send the prologue again with this takeover.
    Dead {
        takeover: Takeover,
        warning: String,
    },
}

/// Reads what [`acquire_script`] printed.
fn parse_acquire(
    node: &Node,
    rc: i32,
    text: &str,
    token: &str,
    my_host: &str,
) -> Result<Acquired, LockError> {
    if let Some(msg) = unusable_message(node, text) {
        return Err(LockError::Remote(msg));
    }
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    if let Some(rest) = first.strip_prefix("held ") {
        let mut nums = rest.split_whitespace().map(|n| n.parse::<i64>().ok());
        let age = nums.next().flatten().unwrap_or(0);
        let mtime = nums.next().flatten().unwrap_or(0);
        let info_line = lines.next().unwrap_or_default().to_string();
        let info = serde_json::from_str::<HardLockInfo>(&info_line).ok();
        let who = info.as_ref().map_or_else(
            || "someone (its lock info is missing or unreadable)".to_string(),
            HardLockInfo::holder,
        );
        if let Some(why) = holder_gone(info.as_ref(), age, now(), my_host) {
            let since = info
                .as_ref()
                .map_or_else(|| format_time(mtime), |i| format_time(i.date));
            return Ok(Acquired::Dead {
                takeover: Takeover {
                    mtime,
                    info_line,
                    token: token.to_string(),
                },
                warning: format!(
                    "{}: took over a {why} hard lock held by {who} since {since}",
                    node.name
                ),
            });
        }
        let since = info.as_ref().map_or_else(
            || format!("{} (heartbeat)", format_time(mtime)),
            |i| format_time(i.date),
        );
        let comment = info
            .as_ref()
            .filter(|i| !i.comment.is_empty())
            .map(|i| {
                format!(
                    " ({})",
                    crate::output::untrusted(&i.comment, crate::output::Lines::Escape)
                )
            })
            .unwrap_or_default();
        return Err(LockError::Held {
            user: who,
            since,
            comment,
            heartbeat: format_remaining(age.max(1)),
        });
    }
    if first != "acquired" || rc != 0 {
        return Err(LockError::Remote(format!(
            "taking the hard lock failed (exit code {rc}{}): {}",
            if rc == 71 {
                ", cannot create the lock directory: check lock_dir and permissions"
            } else {
                ""
            },
            text.trim()
        )));
    }
    let (soft_locks, expired, warnings) = parse_soft_section(node, text, now());
    Ok(Acquired::Got(HardLock {
        token: token.to_string(),
        soft_locks,
        expired,
        warnings,
    }))
}

fn new_info(user: &str, comment: &str) -> (String, String) {
    let token = format!("{:016x}", fastrand::u64(..));
    let info = HardLockInfo {
        user: user.to_string(),
        date: now(),
        comment: comment.to_string(),
        token: token.clone(),
        host: hostname(),
        pid: std::process::id(),
    };
    (serde_json::to_string(&info).unwrap_or_default(), token)
}

/// The apply engine's view of locks: the hard lock rides on the first command, soft locks decide
/// item skips, every command beats the heartbeat, and the release rides on the last command.
pub struct ApplyGuard<'a> {
    node: &'a Node,
    me: String,
    /// `verify` only reads soft locks; `apply` also takes the hard lock.
    take_hard: bool,
    force: bool,
    info: String,
    token: String,
    host: String,
    acquired: Option<HardLock>,
    /// A dead holder's lock to take over on the retried first command.
    takeover: Option<Takeover>,
    /// Its warning, printed once the takeover worked.
    takeover_warning: Option<String>,
    console: &'a crate::console::Console,
}

impl<'a> ApplyGuard<'a> {
    /// A guard for one node's apply (`take_hard`) or verify.
    pub fn new(
        node: &'a Node,
        me: &str,
        take_hard: bool,
        force: bool,
        console: &'a crate::console::Console,
    ) -> Self {
        let (info, token) = new_info(me, "cinch apply");
        ApplyGuard {
            node,
            me: me.to_string(),
            take_hard,
            force,
            info,
            token,
            host: hostname(),
            acquired: None,
            takeover: None,
            takeover_warning: None,
            console,
        }
    }

    /// One note per node when the identity's own soft locks were ignored.
    fn own_locks_note(&self, locks: &[SoftLock]) -> Option<String> {
        let own: Vec<&str> = locks
            .iter()
            .filter(|l| l.user == self.me)
            .map(|l| l.id.as_str())
            .collect();
        (!own.is_empty()).then(|| {
            format!(
                "{}: ignored soft lock{} {} because {} yours ({})",
                self.node.name,
                if own.len() == 1 { "" } else { "s" },
                own.join(", "),
                if own.len() == 1 { "it is" } else { "they are" },
                crate::output::untrusted(&self.me, crate::output::Lines::Escape),
            )
        })
    }
}

impl crate::executor::Guard for ApplyGuard<'_> {
    fn prologue(&self) -> Option<String> {
        Some(if self.take_hard {
            acquire_script(self.node, &self.info, self.force, self.takeover.as_ref())
        } else {
            list_soft_script(self.node)
        })
    }

    fn accept(&mut self, rc: i32, output: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(output);
        let lock = if self.take_hard {
            let parsed = parse_acquire(self.node, rc, &text, &self.token, &self.host);
            match parsed.map_err(|e| e.to_string())? {
                Acquired::Got(lock) => lock,
                Acquired::Dead { takeover, warning } => {
                    // Only one takeover attempt: if the lock changed meanwhile, it is alive.
                    if self.takeover.is_some() {
                        return Err(format!(
                            "{}: the hard lock changed while taking it over; try again",
                            self.node.name
                        ));
                    }
                    self.takeover = Some(takeover);
                    self.takeover_warning = Some(warning);
                    return Err(RETRY.into());
                }
            }
        } else {
            if let Some(msg) = unusable_message(self.node, &text) {
                return Err(msg);
            }
            let (soft_locks, expired, warnings) = parse_soft_section(self.node, &text, now());
            HardLock {
                token: String::new(),
                soft_locks,
                expired,
                warnings,
            }
        };
        let mut warnings = lock.warnings.clone();
        if let Some(w) = self.takeover_warning.take() {
            warnings.insert(0, w);
        }
        for w in &warnings {
            self.console.err(&format!(
                "warning: {}",
                crate::output::untrusted(w, crate::output::Lines::Escape)
            ));
        }
        if let Some(note) = self.own_locks_note(&lock.soft_locks) {
            self.console.err(&format!("note: {note}"));
        }
        self.acquired = Some(lock);
        Ok(())
    }

    fn retry(&self) -> bool {
        self.takeover.is_some() && self.acquired.is_none()
    }

    fn heartbeat(&self) -> Option<String> {
        self.take_hard
            .then(|| heartbeat_script(self.node, &self.token))
    }

    fn soft_locked(&self, item: &Item) -> Option<String> {
        soft_lock_reason(item, &self.acquired.as_ref()?.soft_locks, &self.me)
    }

    fn epilogue(&self) -> Option<String> {
        let mut script = String::new();
        if self.take_hard {
            script.push_str(&release_hard_script(self.node, &self.token));
        }
        if let Some(lock) = &self.acquired {
            for id in &lock.expired {
                script.push_str(&format!(
                    "rm -f {}\n",
                    quote(&format!("{}/{id}", soft_dir(self.node)))
                ));
            }
        }
        (!script.is_empty()).then_some(script)
    }
}

/// The reason [`ApplyGuard::accept`] gives when it wants the first command sent again.
const RETRY: &str = "retry: taking over a dead hard lock";

/// Shell that touches the hard lock directory (its mtime is the heartbeat), only while the lock
/// is still ours. Silent and harmless in front of any command.
pub fn heartbeat_script(node: &Node, token: &str) -> String {
    let h = quote(&hard_dir(node));
    format!(
        "grep -qF {} {h}/info 2>/dev/null && touch -c {h} 2>/dev/null\n",
        quote(token)
    )
}

/// Shell that gives the hard lock back, but only if it is still ours (someone may have used
/// `--force` meanwhile). Usable as the tail of another command.
pub fn release_hard_script(node: &Node, token: &str) -> String {
    let h = quote(&hard_dir(node));
    format!(
        "if grep -qF {} {h}/info 2>/dev/null; then rm -rf {h}; fi\n",
        quote(token)
    )
}

/// Writes `lock` (one id shared by every node it is added to) atomically on the node.
pub fn add_soft(transport: &dyn Transport, node: &Node, lock: &SoftLock) -> Result<(), LockError> {
    let s = soft_dir(node);
    let id = &lock.id;
    let json = serde_json::to_string(lock).map_err(|e| LockError::Remote(e.to_string()))?;
    let (dir, file, tmp) = (
        quote(&s),
        quote(&format!("{s}/{id}")),
        quote(&format!("{s}/.{id}.tmp")),
    );
    let script = format!(
        "{}[ -d {dir} ] || (umask 077; mkdir -p {dir}) || exit 71\n{}[ -e {file} ] && exit 73\nprintf '%s\\n' {} > {tmp} && mv -f {tmp} {file}\n",
        ensure_lock_dir(node),
        check_access(&s, Access::Write),
        quote(&json),
    );
    let out = transport.run(&Command::new(script))?;
    match out.status {
        Some(0) => Ok(()),
        Some(73) => Err(LockError::Remote(format!(
            "a soft lock {id} already exists on this node: run `cinch lock add` again for a new id"
        ))),
        _ => Err(remote_failure(node, "writing the soft lock", &out)),
    }
}

/// A new soft lock owned by `user`, the same value for every node of one `cinch lock add`.
pub fn new_soft_lock(user: &str, items: &[String], expires_in: i64, comment: &str) -> SoftLock {
    let created = now();
    SoftLock {
        id: new_lock_id(),
        user: user.to_string(),
        date: created,
        expiry: created + expires_in,
        items: if items.is_empty() {
            vec!["*".into()]
        } else {
            items.to_vec()
        },
        comment: comment.to_string(),
    }
}

/// Removes a soft lock by id; `Ok(false)` when the node has no such lock.
pub fn remove_soft(transport: &dyn Transport, node: &Node, id: &str) -> Result<bool, LockError> {
    let file = quote(&format!("{}/{id}", soft_dir(node)));
    // Without the access checks an unreadable lock_dir would look like "no such lock".
    let out = transport.run(&Command::new(format!(
        "{}{}if [ -f {file} ]; then rm -f {file} && echo removed; else echo missing; fi",
        check_access(&node.lock_dir, Access::Write),
        check_access(&soft_dir(node), Access::Write),
    )))?;
    if out.status != Some(0) {
        return Err(remote_failure(node, "removing the soft lock", &out));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "removed")
}

/// Why `item` must be skipped because of someone else's soft lock, if it must: a lock of
/// another identity covers it and none of `me`'s own locks does.
pub fn soft_lock_reason(item: &Item, locks: &[SoftLock], me: &str) -> Option<String> {
    if locks.iter().any(|l| l.user == me && l.covers(item)) {
        return None;
    }
    locks
        .iter()
        .find(|l| l.user != me && l.covers(item))
        .map(|l| {
            format!(
                "soft locked by {} ({})",
                untrusted(&l.user, Lines::Escape),
                l.id
            )
        })
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

// ---------------------------------------------------------------------------------------------
// `cinch lock add/show/remove`

/// What one node answered to a lock command.
enum NodeOutcome {
    Added(SoftLock),
    Shown(Vec<SoftLock>),
    Removed(String),
    Skipped(String),
    Failed(String),
}

/// Runs `cinch lock ...`: every node in parallel; an unreachable node is reported and the
/// others proceed (exit 1).
pub fn cmd_lock(ctx: &Context, cmd: &LockCommand) -> Result<u8> {
    let repo = ctx.load_repo()?;
    let target = match cmd {
        LockCommand::Add { target, .. }
        | LockCommand::Show { target, .. }
        | LockCommand::Remove { target, .. } => target,
    };
    let nodes = repo.select(target)?;
    let me = identity();
    let connect = crate::transport::ConnectOptions::from_settings(
        &repo.path,
        &repo.settings.ssh,
        ctx.add_host_keys,
    );
    let bus = crate::events::command_bus(ctx, &repo)?;

    // Validate everything the user typed before touching any node.
    let expires_in = match cmd {
        LockCommand::Add { expires_in, .. } => parse_duration(expires_in).map_err(Error::Usage)?,
        _ => 0,
    };
    let parse_id = |lock_id: &str| {
        normalize_id(lock_id).ok_or_else(|| {
            Error::Usage(format!("invalid lock id {lock_id:?}: lock ids are 4 characters A-Z0-9 (see `cinch lock show`)"))
        })
    };
    let lock_id = match cmd {
        LockCommand::Remove { lock_id, .. } => Some(parse_id(lock_id)?),
        LockCommand::Show {
            lock_id: Some(id), ..
        } => Some(parse_id(id)?),
        _ => None,
    };
    // One lock, one id: every node of one `lock add` gets the same lock (as in BundleWrap), so
    // `lock remove n3,n4 ID` and `lock show all ID` work on all of them.
    let new_lock = match cmd {
        LockCommand::Add { items, comment, .. } => {
            check_item_selectors(&repo, &nodes, items)?;
            Some(new_soft_lock(&me, items, expires_in, comment))
        }
        _ => None,
    };

    let workers =
        crate::limits::cap_node_workers(repo.settings.node_workers, nodes.len(), &ctx.console);
    let outcomes =
        crate::fanout::map_bounded(&nodes, workers, crate::interrupt::requested, |node| {
            if node.dummy {
                return NodeOutcome::Skipped("dummy node".into());
            }
            if node.transport == crate::repo::TransportKind::Ssh {
                bus.emit(&Event::NodeSshConnect { node });
            }
            let transport = crate::transport::open(node, &connect);
            let outcome = node_lock_op(
                transport.as_ref(),
                node,
                cmd,
                new_lock.as_ref(),
                lock_id.as_deref(),
                &bus,
                ctx,
            );
            let _ = transport.close();
            outcome
        });

    let mut failed = false;
    let mut answered = 0usize;
    let mut rows = Vec::new();
    for (node, outcome) in nodes.iter().zip(outcomes) {
        let Some(outcome) = outcome else {
            failed = true;
            report(ctx, node, "interrupted", None);
            continue;
        };
        match outcome {
            NodeOutcome::Added(lock) => {
                if ctx.console.json() {
                    ctx.console.json_line(&serde_json::json!({
                        "event": "lock_added", "node": node.name, "lock": lock,
                        "created": rfc3339(lock.date), "expires": rfc3339(lock.expiry),
                    }));
                } else if ctx.console.quiet() {
                    ctx.console.out(&lock.id);
                } else {
                    ctx.console.out(&format!(
                        "{}  added soft lock {} (expires {})",
                        node.name,
                        lock.id,
                        format_time(lock.expiry)
                    ));
                }
            }
            NodeOutcome::Shown(locks) => {
                answered += 1;
                for l in locks {
                    if ctx.console.json() {
                        ctx.console.json_line(&serde_json::json!({
                            "event": "lock", "node": node.name, "lock": l,
                            "created": rfc3339(l.date), "expires": rfc3339(l.expiry),
                        }));
                    }
                    rows.push(vec![
                        node.name.clone(),
                        l.id.clone(),
                        untrusted(&l.user, Lines::Escape).into_owned(),
                        format_time(l.date),
                        format_remaining(l.expiry - now()),
                        untrusted(&l.items.join(", "), Lines::Escape).into_owned(),
                        untrusted(&l.comment, Lines::Escape).into_owned(),
                    ]);
                }
            }
            NodeOutcome::Removed(id) => {
                if ctx.console.json() {
                    ctx.console.json_line(&serde_json::json!({"event": "lock_removed", "node": node.name, "lock_id": id}));
                } else {
                    ctx.console
                        .out(&format!("{}  removed soft lock {id}", node.name));
                }
            }
            NodeOutcome::Skipped(why) => report(ctx, node, "skipped", Some(&why)),
            NodeOutcome::Failed(why) => {
                failed = true;
                report(ctx, node, "failed", Some(&why));
            }
        }
    }
    if matches!(cmd, LockCommand::Show { .. }) && !ctx.console.json() {
        if rows.is_empty() {
            // Never "no soft locks" for nodes that could not be read.
            let what = match &lock_id {
                Some(id) => format!("no soft lock {id}"),
                None => "no soft locks".to_string(),
            };
            if !failed {
                ctx.console.out(&what);
            } else if answered > 0 {
                ctx.console
                    .out(&format!("{what} on the nodes that answered"));
            }
        } else {
            ctx.console.out(&crate::output::table(
                &[
                    "node",
                    "id",
                    "owner",
                    "created",
                    "expires in",
                    "items",
                    "comment",
                ],
                &rows,
            ));
        }
    }
    let interrupted = crate::interrupt::requested();
    // A failed lock hook was reported where it happened; it still makes the exit code 1.
    let code = if interrupted {
        130
    } else {
        u8::from(failed || bus.had_errors())
    };
    if ctx.console.json() {
        let command = match cmd {
            LockCommand::Add { .. } => "lock add",
            LockCommand::Show { .. } => "lock show",
            LockCommand::Remove { .. } => "lock remove",
        };
        ctx.console.json_line(&serde_json::json!({
            "event": "summary", "command": command, "nodes": nodes.len(), "failed": failed,
            "interrupted": interrupted, "exit_code": code,
        }));
    }
    Ok(code)
}

fn report(ctx: &Context, node: &Node, status: &str, why: Option<&str>) {
    if ctx.console.json() {
        ctx.console.json_line(&serde_json::json!({"event": "lock_node", "node": node.name, "status": status, "reason": why}));
    } else {
        ctx.console.err(&format!(
            "{}  {status}{}",
            node.name,
            why.map(|w| format!(": {}", untrusted(w, Lines::Keep)))
                .unwrap_or_default()
        ));
    }
}

fn node_lock_op(
    transport: &dyn Transport,
    node: &Node,
    cmd: &LockCommand,
    new_lock: Option<&SoftLock>,
    lock_id: Option<&str>,
    bus: &Bus,
    ctx: &Context,
) -> NodeOutcome {
    let warn = |ws: &[String]| {
        ws.iter().for_each(|w| {
            ctx.console
                .err(&format!("warning: {}", untrusted(w, Lines::Escape)))
        })
    };
    match cmd {
        LockCommand::Add { .. } => {
            let Some(lock) = new_lock else {
                return NodeOutcome::Failed("no lock to add".into());
            };
            match add_soft(transport, node, lock) {
                Ok(()) => {
                    let lock = lock.clone();
                    bus.emit(&Event::LockAdd {
                        node,
                        lock_id: &lock.id,
                        items: &lock.items,
                        expiry: lock.expiry,
                        comment: &lock.comment,
                    });
                    NodeOutcome::Added(lock)
                }
                Err(e) => NodeOutcome::Failed(e.to_string()),
            }
        }
        LockCommand::Show { .. } => match read_soft(transport, node) {
            Ok((mut locks, warnings)) => {
                warn(&warnings);
                if let Some(id) = lock_id {
                    locks.retain(|l| l.id.eq_ignore_ascii_case(id));
                }
                for l in &locks {
                    let info = serde_json::to_value(l).unwrap_or_default();
                    bus.emit(&Event::LockShow {
                        node,
                        lock_info: &info,
                    });
                }
                NodeOutcome::Shown(locks)
            }
            Err(e) => NodeOutcome::Failed(e.to_string()),
        },
        LockCommand::Remove { .. } => {
            let id = lock_id.unwrap_or_default();
            match remove_soft(transport, node, id) {
                Ok(true) => {
                    bus.emit(&Event::LockRemove { node, lock_id: id });
                    NodeOutcome::Removed(id.to_string())
                }
                Ok(false) => NodeOutcome::Failed(format!(
                    "no soft lock {id} on this node (see `cinch lock show {}`)",
                    node.name
                )),
                Err(e) => NodeOutcome::Failed(e.to_string()),
            }
        }
    }
}

/// Every `-i` selector must match at least one item on every selected node: a typo must not
/// silently lock nothing.
fn check_item_selectors(repo: &Repo, nodes: &[&Node], selectors: &[String]) -> Result<()> {
    for sel in selectors {
        crate::items::selector::validate(sel)
            .map_err(|e| Error::Usage(format!("invalid item selector {sel:?}: {e}")))?;
    }
    let mut problems = Vec::new();
    for node in nodes.iter().filter(|n| !n.dummy) {
        let items = crate::items::load_node_items(repo, node).map_err(Error::Repo)?;
        let refs: Vec<&Item> = items.iter().collect();
        for p in crate::items::selector::unmatched(selectors, &refs) {
            problems.push(format!("{p} on node {}", node.name));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Usage(problems.join("\n")))
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
            metadata: serde_json::json!({}),
            location: Default::default(),
            problems: Vec::new(),
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

    #[test]
    fn remaining_time_is_short_and_readable() {
        assert_eq!(format_remaining(45), "45s");
        assert_eq!(format_remaining(600), "10m");
        assert_eq!(format_remaining(8 * 3600 - 60), "7h59m");
        assert_eq!(format_remaining(2 * 86_400 + 3 * 3600), "2d3h");
        assert_eq!(format_remaining(0), "expired");
    }
}
