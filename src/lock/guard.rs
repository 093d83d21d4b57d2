//! The apply guard: the executor's [`Guard`] seam, and how [`ApplyGuard`] uses the hard and
//! soft lock protocols through it during one node's apply.

use std::time::Duration;

use super::*;

/// The seam for locks: shell riding on the node's first command (take the hard lock, read
/// soft locks), a verdict on its output, per-item soft-lock skips, and shell for the end.
pub trait Guard: Send {
    /// Shell run before the probe in the first command; non-zero exit stops the node.
    fn prologue(&self) -> Option<String>;
    /// Judges the prologue's exit code and output: `Err(reason)` stops the node.
    fn accept(&mut self, rc: i32, output: &[u8]) -> Result<(), String>;
    /// Why `item` must be skipped (soft locked by someone else), if it must.
    fn soft_locked(&self, item: &Item) -> Option<String>;
    /// Shell run at the very end (release the hard lock).
    fn epilogue(&self) -> Option<String>;
    /// What the epilogue reads on its stdin: data too big to be part of a script.
    fn epilogue_stdin(&self) -> Option<Vec<u8>> {
        None
    }
    /// After an apply's walk, before the epilogue: the items now as the repo says (ok or
    /// fixed) by plan index, each with the `executor::actual_hash` of its state, for drift records.
    fn applied(&mut self, _items: Vec<(usize, String)>) {}
    /// Whether what [`Guard::applied`] is given is recorded: when not, the executor does not
    /// hash every item's actual state for it.
    fn records(&self) -> bool {
        true
    }
    /// After `accept` refused: whether the first command should be sent once more (its
    /// prologue now takes over a lock whose holder is gone).
    fn retry(&self) -> bool {
        false
    }
    /// Shell for the end of the first command ([`crate::node_shell::Script::steady_end`]):
    /// given a digest of everything the executor's judgment depends on, checks the node's
    /// steady marker and, when it matches, gives the lock back in that same command (sets
    /// `zs=1`). `None`: this guard has no one-round-trip path.
    fn steady(&mut self, _judged: &str) -> Option<String> {
        None
    }
    /// What the first command's steady check answered: the node's digest of its lock and
    /// probe output (`None`: it could not make one) and whether it released the lock.
    fn probed(&mut self, _digest: Option<String>, _released: bool) {}
    /// The node released its lock on a steady marker that its own answer contradicts: forget
    /// that answer (the first command is sent again, without the check) and drop the marker.
    fn distrust(&mut self) {}
    /// After the walk, before the epilogue: whether the node was found unchanged without any
    /// command besides the first, so the release may write the steady marker.
    fn settled(&mut self, _unchanged: bool) {}
    /// The node's file-hash cache for the first command's probe, and whether that probe may
    /// rewrite it (it holds the hard lock). `None`: every file is hashed.
    fn hash_cache(&self) -> Option<(String, bool)> {
        None
    }
    /// Silent shell put in front of every later command and sent on its own at the interval
    /// given with it, so others can tell the lock holder is alive.
    fn heartbeat(&self) -> Option<(String, Duration)> {
        None
    }
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
    /// Every item's `(id, expected-state hash)` by plan index, for drift records.
    expected: Vec<(String, String)>,
    /// apply: the drift records the epilogue writes.
    to_record: Vec<applied::Applied>,
    /// verify: where the node's drift records go once read.
    seen: Option<&'a std::sync::OnceLock<applied::Records>>,
    /// apply: E of the steady marker, once the first command was built.
    steady_e: Option<String>,
    /// The node's digest of its lock and probe output (D of the steady marker).
    digest: Option<String>,
    /// The first command's steady check already released the lock and wrote the records.
    released: bool,
    /// The walk found nothing to do and sent nothing besides the first command.
    unchanged: bool,
    /// A dead holder's lock was taken over (time-dependent: no steady marker).
    took_over: bool,
    /// The node's steady marker was found wrong: the release removes it.
    distrusted: bool,
    /// `--rehash`: hash every file, trusting no cached hash.
    rehash: bool,
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
            expected: Vec::new(),
            to_record: Vec::new(),
            seen: None,
            steady_e: None,
            digest: None,
            released: false,
            unchanged: false,
            took_over: false,
            distrusted: false,
            rehash: false,
        }
    }

    /// `--rehash`: the probe hashes every file instead of trusting the node's hash cache.
    pub fn with_rehash(mut self, rehash: bool) -> Self {
        self.rehash = rehash;
        self
    }

    /// Drift attribution: apply records each item's state with `expected` (its `(id,
    /// expected-state hash)` by plan index); verify reads the node's records into `seen`.
    pub fn with_drift(
        mut self,
        expected: Vec<(String, String)>,
        seen: &'a std::sync::OnceLock<applied::Records>,
    ) -> Self {
        self.expected = expected;
        self.seen = Some(seen);
        self
    }

    /// Whether this apply may write the steady marker: nothing to do, and nothing seen whose
    /// meaning changes with time (soft locks, expired ones, warnings, a takeover).
    fn marker_ok(&self) -> bool {
        self.unchanged
            && !self.took_over
            && self.acquired.as_ref().is_some_and(|l| {
                l.soft_locks.is_empty() && l.expired.is_empty() && l.warnings.is_empty()
            })
    }

    /// Whether the epilogue writes drift records (read from its stdin).
    fn writes_records(&self) -> bool {
        self.take_hard && !self.released && !self.to_record.is_empty()
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

impl Guard for ApplyGuard<'_> {
    fn prologue(&self) -> Option<String> {
        Some(if self.take_hard {
            acquire_script(self.node, &self.info, self.force, self.takeover.as_ref())
        } else if self.seen.is_some() {
            format!(
                "{}{}",
                applied::read_script(self.node),
                list_soft_script(self.node)
            )
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
            if let Some(seen) = self.seen {
                let _ = seen.set(applied::parse(&text));
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
            self.took_over = true;
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

    fn heartbeat(&self) -> Option<(String, std::time::Duration)> {
        self.take_hard
            .then(|| (heartbeat_script(self.node, &self.token), HEARTBEAT_INTERVAL))
    }

    fn hash_cache(&self) -> Option<(String, bool)> {
        (!self.rehash).then(|| (hashes_file(self.node), self.take_hard))
    }

    fn soft_locked(&self, item: &Item) -> Option<String> {
        soft_lock_reason(item, &self.acquired.as_ref()?.soft_locks, &self.me)
    }

    fn records(&self) -> bool {
        // The same condition as `writes_records`, before any record is there.
        self.take_hard && !self.released
    }

    fn applied(&mut self, items: Vec<(usize, String)>) {
        let at = now();
        self.to_record = items
            .into_iter()
            .filter_map(|(i, hash)| {
                let (item, expected) = self.expected.get(i)?.clone();
                Some(applied::Applied {
                    item,
                    hash,
                    expected,
                    by: self.me.clone(),
                    at,
                })
            })
            .collect();
    }

    fn steady(&mut self, judged: &str) -> Option<String> {
        if !self.take_hard {
            return None;
        }
        let e = steady::expected_digest(self.node, judged, self.force, &self.me, &self.expected);
        let check = steady::check_script(self.node, &e, &self.token);
        self.steady_e = Some(e);
        Some(check)
    }

    fn probed(&mut self, digest: Option<String>, released: bool) {
        self.digest = digest;
        self.released = released && self.take_hard;
    }

    fn distrust(&mut self) {
        self.released = false;
        self.digest = None;
        self.steady_e = None;
        self.distrusted = true;
    }

    fn settled(&mut self, unchanged: bool) {
        self.unchanged = unchanged;
    }

    fn epilogue(&self) -> Option<String> {
        let mut script = String::new();
        if self.take_hard && self.released {
            // The first command already released the lock (the records stand); a walk
            // that disagreed with the marker changed nothing, and the marker goes.
            if !self.unchanged {
                script.push_str(&steady::remove_script(self.node));
            }
        } else if self.take_hard {
            // Before the release: the records belong to this apply.
            if self.writes_records() {
                script.push_str(&applied::write_script(self.node));
            }
            if let (Some(e), Some(d), true) = (&self.steady_e, &self.digest, self.marker_ok()) {
                script.push_str(&steady::write_script(self.node, e, d));
            } else if self.distrusted {
                script.push_str(&steady::remove_script(self.node));
            }
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

    fn epilogue_stdin(&self) -> Option<Vec<u8>> {
        self.writes_records()
            .then(|| applied::records_data(&self.to_record))
    }
}

/// The reason [`ApplyGuard::accept`] gives when it wants the first command sent again.
pub(super) const RETRY: &str = "retry: taking over a dead hard lock";
