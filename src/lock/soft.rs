//! Soft locks (`cinch lock add/show/remove`): one JSON file per lock under `soft-NODE/`,
//! listed, added and removed through the transport; expired ones are cleaned up on read.

use super::*;

/// Marks the start of the soft-lock listing in a command's output.
pub(super) const SOFT_SECTION: &str = "\u{1e}soft-locks";
/// Precedes each soft-lock file name.
pub(super) const SOFT_FILE: char = '\u{1f}';

/// Shell that lists every soft lock file as `\x1f NAME \n CONTENT \n`.
pub(super) fn list_soft_script(node: &Node) -> String {
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
pub(super) fn parse_soft_section(
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

/// Removes expired soft locks (best effort: they are ignored anyway).
pub(super) fn remove_ids(transport: &dyn Transport, node: &Node, ids: &[String]) {
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
