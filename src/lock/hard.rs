//! The hard lock an apply holds: taken atomically with `mkdir` on the first command, beaten
//! by a heartbeat, judged dead (and taken over) when its holder is gone, released at the end.

use super::*;

/// Exit code of the acquire script when someone else holds the lock.
pub(super) const HELD_EXIT: i32 = 75;

/// How often a running apply touches its hard lock, so others can tell it is alive.
pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// A hard lock whose holder ran on this machine and whose process is gone is taken over once
/// its heartbeat is this old (a few missed beats: never a lock that is merely busy).
pub const DEAD_HOLDER_SECS: i64 = 3 * 60;

/// A hard lock held from another machine is taken over once its heartbeat is this old: its pid
/// cannot be checked from here, so only a long silence (30 missed beats) says it is gone.
pub const SILENT_HOLDER_SECS: i64 = 30 * 60;

/// A hard lock with no `info` at all is taken over once this old: the holder writes its info
/// in the same command right after the `mkdir`, so a lock still nameless after a minute was
/// left by an acquire that was cut in between (its holder never got "acquired" and went on).
pub const NAMELESS_LOCK_SECS: i64 = 60;

/// Shell that takes the node's hard lock and lists its soft locks, in one round trip. When
/// someone holds it, prints `held AGE MTIME` (AGE = seconds since the holder's last heartbeat
/// by the node's clock) and the holder's info line, and exits [`HELD_EXIT`]: the caller decides
/// whether the holder is gone (see [`Takeover`]). With `takeover`, a lock still exactly as the
/// caller saw it (same heartbeat, same info) is first moved aside and removed.
pub(super) fn acquire_script(
    node: &Node,
    info_json: &str,
    force: bool,
    takeover: Option<&Takeover>,
) -> String {
    let hd = hard_dir(node);
    let h = quote(&hd);
    let info = quote(info_json);
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
    // The info is written right after the mkdir: a lock whose info cannot be written (a full
    // disk) is removed again instead of being left behind nameless, and a concurrent applier
    // that finds the directory before its info gives the holder a moment to write it.
    script.push_str(&format!(
        r#"if mkdir {h} 2>/dev/null; then
  if printf '%s\n' {info} > {h}/info; then echo acquired
  else rm -rf {h}; echo "cannot write the hard lock's info in" {h} >&2; exit 1
  fi
else
  [ -s {h}/info ] || sleep 1
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
pub(super) struct Takeover {
    /// The directory's mtime (the heartbeat) as the node reported it.
    pub(super) mtime: i64,
    /// The first line of its `info`, as read.
    pub(super) info_line: String,
    /// Ours, to name the directory moved aside.
    pub(super) token: String,
}

/// Whether a process with this pid exists on this machine.
pub(super) fn pid_alive(pid: u32) -> bool {
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
pub(super) fn holder_gone(
    info: Option<&HardLockInfo>,
    age: i64,
    now: i64,
    my_host: &str,
) -> Option<String> {
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
pub(super) enum Acquired {
    Got(HardLock),
    /// Held by a holder judged gone: send the prologue again with this takeover.
    Dead {
        takeover: Takeover,
        warning: String,
    },
}

/// Reads what [`acquire_script`] printed.
pub(super) fn parse_acquire(
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
        let nameless = (info_line.trim().is_empty() && age >= NAMELESS_LOCK_SECS).then(|| {
            format!(
                "nameless (no holder info for {}: an interrupted acquire)",
                format_remaining(age)
            )
        });
        let who = info.as_ref().map_or_else(
            || "someone (its lock info is missing or unreadable)".to_string(),
            HardLockInfo::holder,
        );
        if let Some(why) = nameless.or_else(|| holder_gone(info.as_ref(), age, now(), my_host)) {
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

pub(super) fn new_info(user: &str, comment: &str) -> (String, String) {
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
