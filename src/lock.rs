//! Hard locks (held during apply, so two operators never apply to one node at once) and soft
//! locks (`cinch lock add/show/remove`: "hands off these items until tonight").
//!
//! Storage on the node (SPEC section 5), under the node's `lock_dir`, keyed by node name so
//! several nodes may share one machine:
//! - `hard-NODE/` created atomically with `mkdir`, holding `info` (JSON: user, date, comment);
//! - `soft-NODE/ID`, one line of JSON per soft lock.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cli::{Context, LockCommand};
use crate::error::{Error, Result};
use crate::events::{Bus, Event};
use crate::items::Item;
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
}

/// Why a lock operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else is applying to this node.
    #[error("locked by {user} since {since}{comment} (use --force to override)")]
    Held {
        user: String,
        since: String,
        comment: String,
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

/// Who we are in lock files: `$CINCH_IDENTITY`, else `$USER@hostname` plus `:BRANCH` when the
/// repo is a git checkout.
pub fn identity(repo_path: &Path) -> String {
    if let Ok(id) = std::env::var("CINCH_IDENTITY")
        && !id.trim().is_empty()
    {
        return id;
    }
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let mut id = format!("{user}@{}", hostname());
    if let Some(branch) = git_branch(repo_path) {
        id.push(':');
        id.push_str(&branch);
    }
    id
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length and gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The checked-out branch of the git repo containing `dir`, read from `.git/HEAD` (no git needed).
fn git_branch(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    for d in dir.ancestors() {
        let dotgit = d.join(".git");
        let git_dir = if dotgit.is_dir() {
            dotgit
        } else if dotgit.is_file() {
            // A worktree or submodule: ".git" is a file saying "gitdir: PATH".
            let text = std::fs::read_to_string(&dotgit).ok()?;
            let p = text.strip_prefix("gitdir:")?.trim();
            d.join(p)
        } else {
            continue;
        };
        let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
        return head
            .trim()
            .strip_prefix("ref: refs/heads/")
            .map(str::to_string);
    }
    None
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

/// Shell that creates the lock dir with safe permissions if it is missing.
fn ensure_lock_dir(node: &Node) -> String {
    format!(
        "[ -d {d} ] || (umask 077; mkdir -p {d}) || exit 71\n",
        d = quote(&node.lock_dir)
    )
}

/// Marks the start of the soft-lock listing in a command's output.
const SOFT_SECTION: &str = "\u{1e}soft-locks";
/// Precedes each soft-lock file name.
const SOFT_FILE: char = '\u{1f}';

/// Shell that lists every soft lock file as `\x1f NAME \n CONTENT \n`.
fn list_soft_script(node: &Node) -> String {
    format!(
        "printf '%s\\n' {sec}\nfor f in {s}/* {s}/.[!.]*; do [ -f \"$f\" ] || continue; printf '\\037%s\\n' \"${{f##*/}}\"; head -c 65536 \"$f\"; echo; done\n",
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

fn remote_failure(what: &str, out: &crate::transport::Output) -> LockError {
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
        return Err(remote_failure("reading soft locks", &out));
    }
    let (locks, expired, warnings) =
        parse_soft_section(node, &String::from_utf8_lossy(&out.stdout), now());
    remove_ids(transport, node, &expired);
    Ok((locks, warnings))
}

/// Exit code of the acquire script when someone else holds the lock.
const HELD_EXIT: i32 = 75;

/// Shell that takes the node's hard lock and lists its soft locks, in one round trip. A lock
/// older than [`HARD_LOCK_STALE_SECS`] (by its recorded date, else the directory's mtime) is
/// taken over on the node itself. Exits [`HELD_EXIT`] when someone else holds it.
fn acquire_script(node: &Node, info_json: &str, force: bool) -> String {
    let h = quote(&hard_dir(node));
    let take = format!(
        "mkdir {h} 2>/dev/null && printf '%s\\n' {} > {h}/info",
        quote(info_json)
    );
    let mut script = ensure_lock_dir(node);
    if force {
        script.push_str(&format!("rm -rf {h}\n"));
    }
    script.push_str(&format!(
        r#"if {take}; then echo acquired
else
  d=$(sed -n 's/.*"date": *\([0-9][0-9]*\).*/\1/p' {h}/info 2>/dev/null | head -n 1)
  [ -n "$d" ] || d=$(stat -c %Y {h} 2>/dev/null) || d=
  n=$(date +%s)
  if [ -n "$d" ] && [ $((n - d)) -ge {stale} ]; then
    echo "stale $d"; head -c 4096 {h}/info 2>/dev/null; echo
    rm -rf {h}
    if {take}; then echo acquired; else echo lost; exit {held}; fi
  else
    echo "held ${{d:-0}}"; head -c 4096 {h}/info 2>/dev/null; echo
    exit {held}
  fi
fi
"#,
        stale = HARD_LOCK_STALE_SECS,
        held = HELD_EXIT,
    ));
    script.push_str(&list_soft_script(node));
    script
}

/// Reads what [`acquire_script`] printed.
fn parse_acquire(node: &Node, rc: i32, text: &str, token: String) -> Result<HardLock, LockError> {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let mut warnings = Vec::new();
    let describe = |info_line: Option<&str>, date: &str| {
        let info = info_line.and_then(|l| serde_json::from_str::<HardLockInfo>(l).ok());
        let since = info
            .as_ref()
            .map_or_else(|| date.trim().parse().unwrap_or(0), |i| i.date);
        let who = info.as_ref().map_or_else(
            || "someone (unreadable lock info)".to_string(),
            |i| i.user.clone(),
        );
        let comment = info
            .filter(|i| !i.comment.is_empty())
            .map(|i| format!(" ({})", i.comment))
            .unwrap_or_default();
        (who, format_time(since), comment)
    };
    if let Some(date) = first.strip_prefix("held ") {
        let (user, since, comment) = describe(lines.next(), date);
        return Err(LockError::Held {
            user,
            since,
            comment,
        });
    }
    if let Some(date) = first.strip_prefix("stale ") {
        let (who, since, _) = describe(lines.next(), date);
        if lines.next() != Some("acquired") {
            return Err(LockError::Remote(format!(
                "{}: could not take over the stale hard lock of {who}",
                node.name
            )));
        }
        warnings.push(format!(
            "{}: took over a stale hard lock held by {who} since {since}",
            node.name
        ));
    } else if first != "acquired" || rc != 0 {
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
    let (soft_locks, expired, soft_warnings) = parse_soft_section(node, text, now());
    warnings.extend(soft_warnings);
    Ok(HardLock {
        token,
        soft_locks,
        expired,
        warnings,
    })
}

fn new_info(user: &str, comment: &str) -> (String, String) {
    let token = format!("{:016x}", fastrand::u64(..));
    let info = HardLockInfo {
        user: user.to_string(),
        date: now(),
        comment: comment.to_string(),
        token: token.clone(),
    };
    (serde_json::to_string(&info).unwrap_or_default(), token)
}

/// The apply engine's view of locks: the hard lock rides on the first command, soft locks decide
/// item skips, and the release rides on the last command.
pub struct ApplyGuard<'a> {
    node: &'a Node,
    me: String,
    /// `verify` only reads soft locks; `apply` also takes the hard lock.
    take_hard: bool,
    force: bool,
    info: String,
    token: String,
    acquired: Option<HardLock>,
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
            acquired: None,
            console,
        }
    }
}

impl crate::executor::Guard for ApplyGuard<'_> {
    fn prologue(&self) -> Option<String> {
        Some(if self.take_hard {
            acquire_script(self.node, &self.info, self.force)
        } else {
            list_soft_script(self.node)
        })
    }

    fn accept(&mut self, rc: i32, output: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(output);
        let lock = if self.take_hard {
            parse_acquire(self.node, rc, &text, self.token.clone()).map_err(|e| e.to_string())?
        } else {
            let (soft_locks, expired, warnings) = parse_soft_section(self.node, &text, now());
            HardLock {
                token: String::new(),
                soft_locks,
                expired,
                warnings,
            }
        };
        for w in &lock.warnings {
            self.console.err(&format!("warning: {w}"));
        }
        self.acquired = Some(lock);
        Ok(())
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

/// Shell that gives the hard lock back, but only if it is still ours (someone may have used
/// `--force` meanwhile). Usable as the tail of another command.
pub fn release_hard_script(node: &Node, token: &str) -> String {
    let h = quote(&hard_dir(node));
    format!(
        "if grep -qF {} {h}/info 2>/dev/null; then rm -rf {h}; fi\n",
        quote(token)
    )
}

/// Writes a new soft lock atomically; returns it.
pub fn add_soft(
    transport: &dyn Transport,
    node: &Node,
    user: &str,
    items: &[String],
    expires_in: i64,
    comment: &str,
) -> Result<SoftLock, LockError> {
    let s = soft_dir(node);
    for _ in 0..5 {
        let id = new_lock_id();
        let created = now();
        let lock = SoftLock {
            id: id.clone(),
            user: user.to_string(),
            date: created,
            expiry: created + expires_in,
            items: if items.is_empty() {
                vec!["*".into()]
            } else {
                items.to_vec()
            },
            comment: comment.to_string(),
        };
        let json = serde_json::to_string(&lock).map_err(|e| LockError::Remote(e.to_string()))?;
        let (dir, file, tmp) = (
            quote(&s),
            quote(&format!("{s}/{id}")),
            quote(&format!("{s}/.{id}.tmp")),
        );
        let script = format!(
            "{}[ -d {dir} ] || (umask 077; mkdir -p {dir}) || exit 71\n[ -e {file} ] && exit 73\nprintf '%s\\n' {} > {tmp} && mv -f {tmp} {file}\n",
            ensure_lock_dir(node),
            quote(&json),
        );
        let out = transport.run(&Command::new(script))?;
        match out.status {
            Some(0) => return Ok(lock),
            Some(73) => continue,
            _ => return Err(remote_failure("writing the soft lock", &out)),
        }
    }
    Err(LockError::Remote("could not find a free lock id".into()))
}

/// Removes a soft lock by id; `Ok(false)` when the node has no such lock.
pub fn remove_soft(transport: &dyn Transport, node: &Node, id: &str) -> Result<bool, LockError> {
    let file = quote(&format!("{}/{id}", soft_dir(node)));
    let out = transport.run(&Command::new(format!(
        "if [ -f {file} ]; then rm -f {file} && echo removed; else echo missing; fi"
    )))?;
    if out.status != Some(0) {
        return Err(remote_failure("removing the soft lock", &out));
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
        .map(|l| format!("soft locked by {} ({})", l.user, l.id))
}

/// A UNIX time as local `YYYY-MM-DD HH:MM:SS`.
pub fn format_time(secs: i64) -> String {
    use chrono::TimeZone;
    chrono::Local.timestamp_opt(secs, 0).single().map_or_else(
        || secs.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
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
        | LockCommand::Show { target }
        | LockCommand::Remove { target, .. } => target,
    };
    let nodes = repo.select(target)?;
    let me = identity(&repo.path);
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
    let remove_id = match cmd {
        LockCommand::Remove { lock_id, .. } => Some(normalize_id(lock_id).ok_or_else(|| {
            Error::Usage(format!("invalid lock id {lock_id:?}: lock ids are 4 characters A-Z0-9 (see `cinch lock show`)"))
        })?),
        _ => None,
    };
    if let LockCommand::Add { items, .. } = cmd {
        check_item_selectors(&repo, &nodes, items)?;
    }

    let workers = repo.settings.node_workers;
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
                &me,
                expires_in,
                remove_id.as_deref(),
                &bus,
                ctx,
            );
            let _ = transport.close();
            outcome
        });

    let mut failed = false;
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
                    ctx.console.json_line(&serde_json::json!({"event": "lock_added", "node": node.name, "lock": lock}));
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
                for l in locks {
                    if ctx.console.json() {
                        ctx.console.json_line(
                            &serde_json::json!({"event": "lock", "node": node.name, "lock": l}),
                        );
                    }
                    rows.push(vec![
                        node.name.clone(),
                        l.id.clone(),
                        l.user.clone(),
                        format_time(l.date),
                        format_remaining(l.expiry - now()),
                        l.items.join(", "),
                        l.comment.clone(),
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
            ctx.console.out("no soft locks");
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
            why.map(|w| format!(": {w}")).unwrap_or_default()
        ));
    }
}

#[allow(clippy::too_many_arguments)]
fn node_lock_op(
    transport: &dyn Transport,
    node: &Node,
    cmd: &LockCommand,
    me: &str,
    expires_in: i64,
    remove_id: Option<&str>,
    bus: &Bus,
    ctx: &Context,
) -> NodeOutcome {
    let warn = |ws: &[String]| {
        ws.iter()
            .for_each(|w| ctx.console.err(&format!("warning: {w}")))
    };
    match cmd {
        LockCommand::Add { comment, items, .. } => {
            match add_soft(transport, node, me, items, expires_in, comment) {
                Ok(lock) => {
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
            Ok((locks, warnings)) => {
                warn(&warnings);
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
            let id = remove_id.unwrap_or_default();
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

    #[test]
    fn remaining_time_is_short_and_readable() {
        assert_eq!(format_remaining(45), "45s");
        assert_eq!(format_remaining(600), "10m");
        assert_eq!(format_remaining(8 * 3600 - 60), "7h59m");
        assert_eq!(format_remaining(2 * 86_400 + 3 * 3600), "2d3h");
        assert_eq!(format_remaining(0), "expired");
    }
}
