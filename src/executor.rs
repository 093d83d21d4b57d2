//! The per-node item engine: reads the actual state of every item in one remote command, then
//! walks the dependency graph in waves; each wave with changes costs one command that applies
//! all its fixes and re-reads exactly those items. Actions cost one command each, only when
//! they run. Steady state is therefore one command per node, whatever the number of items.
//!
//! The executor knows nothing about output: it reports every step to a [`Sink`], which turns
//! them into events (hooks, terminal, JSON). Locks plug in through [`Guard`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::items::action::ActionOutcome;
use crate::items::state::{Change, Fixing, Local, State, path_of, stateful};
use crate::items::{Item, ItemKind};
use crate::node_shell::{Fields, Record, Script};
use crate::plan::Plan;
use crate::repo::Node;
use crate::transport::{Stats, Transport, TransportError};

/// Builds the local knowledge of every item: expected content, its hash, and for purging
/// directories the names inside them that other items manage.
pub fn locals(items: &[Item], contents: Vec<Option<Vec<u8>>>, diff_limit: u64) -> Vec<Local> {
    let paths: Vec<Option<String>> = items
        .iter()
        .map(|i| i.is_path().then(|| path_of(i)))
        .collect();
    let links: BTreeSet<String> = items
        .iter()
        .filter(|i| matches!(&i.kind, ItemKind::Symlink(s) if !s.delete))
        .map(path_of)
        .collect();
    let mut scanned = BTreeSet::new();
    contents
        .into_iter()
        .enumerate()
        .map(|(idx, content)| {
            let item = &items[idx];
            let mut managed_children = BTreeSet::new();
            if let ItemKind::Directory(d) = &item.kind
                && d.purge
            {
                let me = path_of(item);
                let prefix = if me == "/" {
                    "/".to_string()
                } else {
                    format!("{me}/")
                };
                for p in paths.iter().flatten() {
                    if let Some(rest) = p.strip_prefix(&prefix)
                        && let Some(first) = rest.split('/').next().filter(|f| !f.is_empty())
                    {
                        managed_children.insert(first.to_string());
                    }
                }
            }
            let mut link_parents = Vec::new();
            let mut staging_scan = false;
            if item.is_path() {
                let me = path_of(item);
                let mut at = 0;
                while let Some(slash) = me.get(at + 1..).and_then(|rest| rest.find('/')) {
                    at += 1 + slash;
                    if links.contains(&me[..at]) {
                        link_parents.push(me[..at].to_string());
                    }
                }
                if let ItemKind::File(_) = &item.kind {
                    staging_scan = scanned.insert(crate::items::file::parent_dir(&me));
                }
            }
            Local {
                idx,
                content_hash: content.as_deref().map(crate::diff::sha256_hex),
                content: content.map(Arc::new),
                managed_children: managed_children.into_iter().collect(),
                diff_limit,
                link_parents,
                staging_scan,
                clean_staging: false,
            }
        })
        .collect()
}

/// Apply changes things; verify only reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Apply,
    Verify,
}

/// How the executor should behave for one node.
#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    pub interactive: bool,
    /// Actions run in parallel up to this many per wave.
    pub item_workers: usize,
    /// Items selected by `--only` (before pulling in what they need); `None` = all.
    pub only: Option<Vec<bool>>,
    /// Items selected by `--skip`.
    pub skip: Vec<bool>,
    /// Compute diffs for changed items.
    pub diffs: bool,
}

/// The result of one item, as reported to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Fixed,
    Skipped,
    Failed,
    /// Verify only: the item is not as the repo describes.
    WouldChange,
}

/// What happened to one item.
#[derive(Debug, Clone)]
pub struct ItemReport {
    pub idx: usize,
    pub outcome: Outcome,
    /// Skip reason or failure message.
    pub reason: Option<String>,
    /// create / fix / delete / run, for changed items.
    pub verb: Option<&'static str>,
    /// The change in words (never contains sensitive content).
    pub diff: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub duration: Duration,
    /// Skips users do not need to see ("not triggered", "unless").
    pub quiet: bool,
}

/// The user's answer to an interactive question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Yes,
    No,
    /// Stop the whole apply: nothing more is changed or asked.
    Quit,
    /// The input ended before an answer: like `Quit`, and the command fails.
    EndOfInput,
}

/// Why the rest of a node is left alone after an interactive quit.
const QUIT: &str = "quit interactively";
/// Why the rest of a node is left alone when the answers ran out.
const NO_ANSWER: &str = "no answer: input ended";

/// Where the executor reports; implemented by the apply command (events, terminal, JSON).
pub trait Sink: Sync {
    /// An item is about to be considered; `Err(reason)` (a failed `item_apply_start` hook)
    /// fails the item without touching it.
    fn item_start(&self, node: &Node, item: &Item) -> Result<(), String>;
    /// An item is done.
    fn item_end(&self, node: &Node, item: &Item, report: &ItemReport);
    /// An action's command is about to run; `Err(reason)` (a failed `action_run_start` hook)
    /// fails the action without running it (`action_end` still follows).
    fn action_start(&self, node: &Node, item: &Item) -> Result<(), String>;
    /// An action's command ended.
    fn action_end(&self, node: &Node, item: &Item, duration: Duration, outcome: Outcome);
    /// Interactive mode: should this change be made?
    fn ask(&self, node: &Node, item: &Item, verb: &str, diff: &str) -> Answer;
}

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
    /// After `accept` refused: whether the first command should be sent once more (its
    /// prologue now takes over a lock whose holder is gone).
    fn retry(&self) -> bool {
        false
    }
    /// Silent shell put in front of every later command and sent on its own at the interval
    /// given with it, so others can tell the lock holder is alive.
    fn heartbeat(&self) -> Option<(String, Duration)> {
        None
    }
}

/// Everything a node run produced.
#[derive(Debug, Default)]
pub struct NodeRun {
    pub reports: Vec<ItemReport>,
    /// Why the node as a whole failed (unreachable, locked, unreadable answer).
    pub error: Option<String>,
    pub stats: Stats,
    pub duration: Duration,
    /// Stopped early by Ctrl-C or an interactive "quit".
    pub interrupted: bool,
}

impl NodeRun {
    /// Items with this outcome.
    pub fn count(&self, o: Outcome) -> usize {
        self.reports.iter().filter(|r| r.outcome == o).count()
    }
}

/// Everything one node's run needs.
pub struct Job<'a> {
    pub node: &'a Node,
    pub plan: &'a Plan,
    pub locals: &'a [Local],
    pub options: &'a Options,
    pub sink: &'a dyn Sink,
}

/// Runs a node: returns every item's outcome (a node-level failure leaves items unreported).
pub fn run(job: &Job<'_>, transport: &dyn Transport, guard: Option<&mut dyn Guard>) -> NodeRun {
    let start = Instant::now();
    let mut ex = Exec::new(job, transport);
    let mut guard = guard;
    let mut started = ex.start(&mut guard);
    if started.is_err() && guard.as_ref().is_some_and(|g| g.retry()) {
        started = ex.start(&mut guard);
    }
    match started {
        Err(e) => ex.run.error = Some(e),
        Ok(()) => {
            let beat = guard.as_ref().and_then(|g| g.heartbeat());
            ex.heartbeat = beat.as_ref().map(|(shell, _)| shell.clone());
            // The ticker beats while long commands (a slow action) run; dropping `stop` ends it.
            let (stop, stopped) = std::sync::mpsc::channel::<()>();
            std::thread::scope(|s| {
                if let Some((beat, every)) = beat {
                    s.spawn(move || {
                        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                            stopped.recv_timeout(every)
                        {
                            let cmd = crate::transport::Command {
                                timeout: Some(Duration::from_secs(30)),
                                ..crate::transport::Command::new(beat.clone())
                            };
                            let _ = transport.run(&cmd);
                        }
                    });
                }
                ex.walk(guard.as_deref());
                drop(stop);
            });
        }
    }
    // Once the node answered, the epilogue (lock release) always runs, also after failures and
    // Ctrl-C: the release only removes a lock carrying our own token, so it is harmless when
    // the lock was never ours.
    if ex.reached.get()
        && let Some(epi) = guard.as_ref().and_then(|g| g.epilogue())
    {
        let cmd = crate::transport::Command {
            cleanup: true,
            timeout: Some(Duration::from_secs(60)),
            ..crate::transport::Command::new(epi)
        };
        if let Err(e) = transport.run(&cmd) {
            ex.run.error.get_or_insert(e.reason());
        }
    }
    ex.run.stats = transport.stats();
    ex.run.duration = start.elapsed();
    ex.run
}

struct Exec<'a, 'j> {
    job: &'j Job<'a>,
    t: &'j dyn Transport,
    g: &'a Plan,
    /// Latest probe record per item.
    actual: Vec<Option<Fields>>,
    done: Vec<Option<Outcome>>,
    /// The change each item was fixed by in this run (canned actions ask whether it left
    /// them anything to do).
    fixed_by: Vec<Option<Change>>,
    fired: Vec<bool>,
    /// The first item that fired each triggered item, for "would run (triggered by …)".
    fired_by: Vec<Option<usize>>,
    kept: Vec<bool>,
    /// Something happened (actions, deletes) that may have changed items not yet re-read.
    stale: bool,
    /// Set once the user quit (or the answers ran out): why nothing more is changed.
    quit: Option<&'static str>,
    /// A command reached the node, answered or cut off (so a lock may have been taken).
    reached: std::cell::Cell<bool>,
    /// The guard's heartbeat, put in front of every command once the lock is held.
    heartbeat: Option<String>,
    /// verify: why an item would have been skipped by apply (someone else's soft lock).
    locked_by: Vec<Option<String>>,
    run: NodeRun,
}

type ExecResult<T> = Result<T, String>;

impl<'a, 'j> Exec<'a, 'j> {
    fn new(job: &'j Job<'a>, t: &'j dyn Transport) -> Self {
        let g = job.plan;
        let n = g.items.len();
        let kept = match &job.options.only {
            None => vec![true; n],
            Some(sel) => {
                let mut kept = vec![false; n];
                let mut stack: Vec<usize> = (0..n).filter(|&i| sel.get(i) == Some(&true)).collect();
                while let Some(i) = stack.pop() {
                    if !kept[i] {
                        kept[i] = true;
                        stack.extend(g.needs[i].iter().copied().filter(|&d| d < n));
                    }
                }
                kept
            }
        };
        Exec {
            job,
            t,
            g,
            actual: vec![None; n],
            done: vec![None; n],
            fixed_by: vec![None; n],
            fired: vec![false; n],
            fired_by: vec![None; n],
            kept,
            stale: false,
            quit: None,
            reached: std::cell::Cell::new(false),
            heartbeat: None,
            locked_by: vec![None; n],
            run: NodeRun::default(),
        }
    }

    /// Asks the user about item `i` (interactive mode); a "no" or "quit" skips the item (and
    /// "quit" everything after it). True when the item may go ahead.
    fn confirm(&mut self, i: usize, verb: &str, text: &str) -> bool {
        let item = &self.g.items[i];
        let answer = self.job.sink.ask(self.node(), item, verb, text);
        match answer {
            Answer::Yes => true,
            Answer::No => {
                self.skip(i, "declined interactively", false);
                false
            }
            Answer::Quit | Answer::EndOfInput => {
                let why = if answer == Answer::Quit {
                    QUIT
                } else {
                    NO_ANSWER
                };
                self.quit = Some(why);
                self.skip(i, why, false);
                false
            }
        }
    }

    /// Marks everything `i` triggers as fired: `i` was fixed or its action succeeded (or, in
    /// verify, would be).
    fn fire_triggers(&mut self, i: usize) {
        for &t in &self.g.triggers[i] {
            if let Some(f) = self.fired.get_mut(t) {
                *f = true;
            }
            if let Some(by) = self.fired_by.get_mut(t) {
                by.get_or_insert(i);
            }
        }
    }

    fn node(&self) -> &'a Node {
        self.job.node
    }

    fn static_skip(&self, i: usize) -> Option<&'static str> {
        let item = &self.g.items[i];
        if item.deps.skip {
            Some("attribute")
        } else if !self.kept[i] || self.job.options.skip.get(i) == Some(&true) {
            Some("cmdline")
        } else {
            None
        }
    }

    fn send(&self, mut script: Script) -> ExecResult<Vec<Record>> {
        if let Some(beat) = &self.heartbeat {
            script.raw(beat);
        }
        let cmd = script.into_command();
        let out = self.t.run(&cmd).map_err(|e: TransportError| {
            // The link broke while the command ran: it may have taken the hard lock, so the
            // (token-guarded, hence harmless) release must still be tried on a new connection.
            if matches!(e, TransportError::Disconnected { .. }) {
                self.reached.set(true);
            }
            e.reason()
        })?;
        self.reached.set(true);
        let records = crate::node_shell::parse(&out.stdout).map_err(|e| e.to_string())?;
        if out.status != Some(0) && records.is_empty() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "the node's shell failed (exit {}): {}",
                out.status.map_or("signal".into(), |c| c.to_string()),
                err.trim()
            ));
        }
        Ok(records)
    }

    fn probe_into(&self, script: &mut Script, items: &[usize]) {
        for &i in items {
            let item = &self.g.items[i];
            if let Some(b) = stateful(&item.kind) {
                b.probe(item, &self.job.locals[i], script);
            }
        }
    }

    fn absorb(&mut self, records: &[Record]) {
        for r in records {
            if let Record::Probe { idx, fields } = r
                && let Some(slot) = self.actual.get_mut(*idx)
            {
                *slot = Some(fields.clone());
            }
        }
    }

    /// The first command: the guard's prologue, then the actual state of every item that may run.
    fn start(&mut self, guard: &mut Option<&mut dyn Guard>) -> ExecResult<()> {
        let wanted: Vec<usize> = (0..self.g.items.len())
            .filter(|&i| self.static_skip(i).is_none())
            .filter(|&i| stateful(&self.g.items[i].kind).is_some())
            .collect();
        let prologue = guard.as_ref().and_then(|g| g.prologue());
        if wanted.is_empty() && prologue.is_none() {
            return Ok(());
        }
        let mut script = Script::probe();
        if let Some(p) = &prologue {
            script.prologue(p);
        }
        self.probe_into(&mut script, &wanted);
        let records = self.send(script)?;
        if let Some(g) = guard.as_mut() {
            let (rc, out) = records
                .iter()
                .find_map(|r| match r {
                    Record::Prologue { rc, output } => Some((*rc, output.as_slice())),
                    _ => None,
                })
                .ok_or("the node did not answer the lock check")?;
            g.accept(rc, out)?;
        }
        self.absorb(&records);
        Ok(())
    }

    fn change_of(&self, i: usize) -> Option<Change> {
        let item = &self.g.items[i];
        let b = stateful(&item.kind)?;
        let local = &self.job.locals[i];
        let expected = b.expected(item, local);
        let actual = self.actual[i]
            .as_ref()
            .and_then(|f| b.actual(item, local, f));
        Change::between(expected, actual)
    }

    fn report(&mut self, i: usize, mut r: ItemReport) {
        r.idx = i;
        self.done[i] = Some(r.outcome);
        self.job.sink.item_end(self.node(), &self.g.items[i], &r);
        self.run.reports.push(r);
    }

    fn skip(&mut self, i: usize, reason: &str, quiet: bool) {
        self.report(
            i,
            ItemReport {
                idx: i,
                outcome: Outcome::Skipped,
                reason: Some(reason.to_string()),
                verb: None,
                diff: None,
                before: None,
                after: None,
                duration: Duration::ZERO,
                quiet,
            },
        );
    }

    fn fail(&mut self, i: usize, reason: String, duration: Duration) {
        self.fail_between(i, reason, duration, None, None);
    }

    /// A failure with the states read before and after the attempt.
    fn fail_between(
        &mut self,
        i: usize,
        reason: String,
        duration: Duration,
        before: Option<Value>,
        after: Option<Value>,
    ) {
        self.report(
            i,
            ItemReport {
                idx: i,
                outcome: Outcome::Failed,
                reason: Some(reason),
                verb: None,
                diff: None,
                before,
                after,
                duration,
                quiet: false,
            },
        );
    }

    /// The state as shown in events: sensitive content hashes and hidden keys withheld.
    fn public(&self, i: usize, state: Option<&State>) -> Option<Value> {
        let mut s = state?.clone();
        let item = &self.g.items[i];
        if let ItemKind::File(f) = &item.kind
            && f.sensitive
            && s.contains_key("content_hash")
        {
            s.insert("content_hash".into(), Value::String("(hidden)".into()));
        }
        if item.is_path() {
            // Numeric owners of paths are internal (kept to preserve them across rewrites).
            s.remove("uid");
            s.remove("gid");
        }
        // Staging leftovers are news only when there are some.
        if s.get(crate::items::file::LEFTOVERS)
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
        {
            s.remove(crate::items::file::LEFTOVERS);
        }
        for k in stateful(&item.kind).map_or(&[][..], |b| b.hidden_keys()) {
            if let Some(v) = s.get_mut(*k) {
                *v = Value::String("(hidden)".into());
            }
        }
        Some(Value::Object(s))
    }

    /// Why item `i` cannot be managed on this node at all, from its latest probe record.
    fn probe_error(&self, i: usize) -> Option<String> {
        let item = &self.g.items[i];
        let b = stateful(&item.kind)?;
        b.probe_error(item, self.actual[i].as_ref()?)
    }

    /// Why the generated action `i` (`ITEM_ID:NAME`) has nothing left to do, because the
    /// item it belongs to was fixed in a way that already did it (a start before a restart).
    fn redundant(&self, i: usize) -> Option<String> {
        let (owner_id, action) = self.g.items[i].id.rsplit_once(':')?;
        let owner = self.g.items.iter().position(|it| it.id == owner_id)?;
        let change = self.fixed_by[owner].as_ref()?;
        stateful(&self.g.items[owner].kind)?.makes_redundant(change, action)
    }

    fn diff_of(&self, i: usize, change: &Change) -> String {
        let item = &self.g.items[i];
        match stateful(&item.kind) {
            Some(b) => b.show(item, &self.job.locals[i], change, self.actual[i].as_ref()),
            None => String::new(),
        }
    }

    /// Runs the `unless` of `items` in one command; returns those whose `unless` succeeded.
    fn unless_ok(&self, items: &[usize]) -> ExecResult<BTreeSet<usize>> {
        let mut script = Script::probe();
        let mut any = false;
        for &i in items {
            if let Some(u) = &self.g.items[i].deps.unless {
                script.unless(i, u);
                any = true;
            }
        }
        if !any {
            return Ok(BTreeSet::new());
        }
        Ok(self
            .send(script)?
            .into_iter()
            .filter_map(|r| match r {
                Record::Unless { idx, rc: 0 } => Some(idx),
                _ => None,
            })
            .collect())
    }

    /// Whether item `x` (preceded by a triggered item) will change in this run.
    fn will_change(&self, x: usize, unless_ok: &BTreeSet<usize>) -> bool {
        if self.static_skip(x).is_some() || unless_ok.contains(&x) {
            return false;
        }
        match self.g.items[x].kind {
            ItemKind::Action(_) => !self.g.items[x].deps.triggered || self.fired[x],
            _ => self.change_of(x).is_some(),
        }
    }

    fn cascade_reason(&self, i: usize) -> Option<String> {
        for &d in &self.g.needs[i] {
            if !self.g.cascade_skip.get(d).copied().unwrap_or(true) {
                continue;
            }
            match self.done.get(d).copied().flatten() {
                Some(Outcome::Failed) => {
                    return Some(format!("dependency failed: {}", self.g.items[d].id));
                }
                Some(Outcome::Skipped) => {
                    return Some(format!("dependency skipped: {}", self.g.items[d].id));
                }
                _ => {}
            }
        }
        None
    }

    fn walk(&mut self, guard: Option<&dyn Guard>) {
        let (waves, stuck) = self.g.waves();
        for wave in waves {
            // After an interactive quit the walk goes on without changing anything, so items
            // that are already correct are reported ok rather than skipped.
            if crate::interrupt::requested() {
                self.run.interrupted = true;
                for i in wave {
                    if self.begin(i) {
                        self.skip(i, "interrupted", false);
                    }
                }
                continue;
            }
            if self.quit.is_some() {
                self.run.interrupted = true;
            }
            if let Err(e) = self.wave(&wave, guard) {
                for i in wave {
                    if self.done[i].is_none() {
                        self.fail(i, e.clone(), Duration::ZERO);
                    }
                }
            }
        }
        for i in stuck {
            if self.begin(i) {
                self.fail(i, "part of a dependency loop".into(), Duration::ZERO);
            }
        }
    }

    /// Announces item `i`; if the sink refuses it (a failed start hook, fail closed), the item
    /// is reported failed and `false` says not to go on with it.
    fn begin(&mut self, i: usize) -> bool {
        match self.job.sink.item_start(self.node(), &self.g.items[i]) {
            Ok(()) => true,
            Err(reason) => {
                self.fail(i, reason, Duration::ZERO);
                false
            }
        }
    }

    fn wave(&mut self, wave: &[usize], guard: Option<&dyn Guard>) -> ExecResult<()> {
        let verify = self.job.options.mode == Mode::Verify;
        let mut stateful_items = Vec::new();
        let mut actions = Vec::new();
        for &i in wave {
            let item = &self.g.items[i];
            if !self.begin(i) {
                continue;
            }
            // After a quit nothing is changed, so a dependency's outcome no longer matters: the
            // item is reported as it is (ok, or skipped because it would need a change).
            if self.quit.is_none()
                && let Some(reason) = self.cascade_reason(i)
            {
                self.skip(i, &reason, false);
                continue;
            }
            if let Some(reason) = self.static_skip(i) {
                self.skip(i, reason, false);
                continue;
            }
            if let Some(reason) = guard.and_then(|g| g.soft_locked(item)) {
                // apply leaves it alone; verify still reports drift under the lock.
                if !verify {
                    self.skip(i, &reason, false);
                    continue;
                }
                self.locked_by[i] = Some(reason);
            }
            if item.deps.triggered
                && !self.fired[i]
                && self.quit.is_none()
                && !self.g.precedes[i].is_empty()
            {
                let xs = self.g.precedes[i].clone();
                let unless = if verify {
                    BTreeSet::new()
                } else {
                    self.unless_ok(&xs)?
                };
                if xs.iter().any(|&x| self.will_change(x, &unless)) {
                    self.fired[i] = true;
                }
            }
            if item.deps.triggered && !self.fired[i] {
                self.skip(i, "not triggered", true);
                continue;
            }
            match &item.kind {
                ItemKind::Action(_) if verify && item.deps.triggered => self.would_run(i),
                ItemKind::Action(_) if verify => self.skip(i, "verify runs no actions", true),
                ItemKind::Action(_) => actions.push(i),
                k if stateful(k).is_some() => stateful_items.push(i),
                _ => self.skip(i, "this item type is not supported yet", false),
            }
        }
        if !stateful_items.is_empty() {
            self.stateful_wave(&stateful_items)?;
        }
        if !actions.is_empty() {
            self.actions(&actions);
        }
        Ok(())
    }

    fn stateful_wave(&mut self, items: &[usize]) -> ExecResult<()> {
        let started = Instant::now();
        let verify = self.job.options.mode == Mode::Verify;
        if self.stale {
            let mut script = Script::probe();
            self.probe_into(&mut script, items);
            let records = self.send(script)?;
            self.absorb(&records);
            self.stale = false;
        }
        let mut changes = Vec::new();
        for &i in items {
            if let Some(why) = self.probe_error(i) {
                self.fail(i, why, started.elapsed());
                continue;
            }
            match self.change_of(i) {
                None => {
                    let before = self.public(i, self.actual_state(i).as_ref());
                    self.report(
                        i,
                        ItemReport {
                            idx: i,
                            outcome: Outcome::Ok,
                            reason: None,
                            verb: None,
                            diff: None,
                            before: before.clone(),
                            after: before,
                            duration: started.elapsed(),
                            quiet: false,
                        },
                    );
                }
                Some(c) => changes.push((i, c)),
            }
        }
        let with_unless: Vec<usize> = changes
            .iter()
            .map(|(i, _)| *i)
            .filter(|&i| self.g.items[i].deps.unless.is_some())
            .collect();
        if !with_unless.is_empty() && !verify && self.quit.is_none() {
            let ok = self.unless_ok(&with_unless)?;
            changes.retain(|(i, _)| {
                if ok.contains(i) {
                    self.skip(*i, "unless", true);
                    false
                } else {
                    true
                }
            });
        }
        let mut to_fix = Vec::new();
        for (i, change) in changes {
            let diff = if self.job.options.diffs || self.job.options.interactive || verify {
                Some(self.diff_of(i, &change))
            } else {
                None
            };
            if verify {
                let before = self.public(i, change.actual.as_ref());
                let after = self.public(i, change.expected.as_ref());
                // What this would fix would trigger, verify reports as "would run".
                self.fire_triggers(i);
                self.report(
                    i,
                    ItemReport {
                        idx: i,
                        outcome: Outcome::WouldChange,
                        reason: self.locked_by[i].clone(),
                        verb: Some(change.verb()),
                        diff,
                        before,
                        after,
                        duration: started.elapsed(),
                        quiet: false,
                    },
                );
                continue;
            }
            if self.job.options.interactive {
                if let Some(why) = self.quit {
                    self.skip(i, why, false);
                    continue;
                }
                let diff = diff.as_deref().unwrap_or("");
                if !self.confirm(i, change.verb(), diff) {
                    continue;
                }
            }
            to_fix.push((i, change, diff));
        }
        if to_fix.is_empty() {
            return Ok(());
        }
        let mut script = Script::fix();
        // Each type fixes all its items of the wave together (one apt transaction), in the
        // order types first appear.
        let mut types: Vec<&str> = Vec::new();
        for (i, _, _) in &to_fix {
            let t = self.g.items[*i].type_name();
            if !types.contains(&t) {
                types.push(t);
            }
        }
        for t in types {
            let group: Vec<Fixing<'_>> = to_fix
                .iter()
                .filter(|(i, _, _)| self.g.items[*i].type_name() == t)
                .map(|(i, change, _)| Fixing {
                    item: &self.g.items[*i],
                    local: &self.job.locals[*i],
                    change,
                })
                .collect();
            let Some(b) = group.first().and_then(|f| stateful(&f.item.kind)) else {
                continue;
            };
            b.fix_wave(&group, &mut script);
            if group
                .iter()
                .any(|f| stateful(&f.item.kind).is_some_and(|b| b.disturbs_others(f.change)))
            {
                self.stale = true;
            }
        }
        let fixed: Vec<usize> = to_fix.iter().map(|(i, _, _)| *i).collect();
        self.probe_into(&mut script, &fixed);
        let records = self.send(script)?;
        let mut results = std::collections::BTreeMap::new();
        for r in &records {
            if let Record::Fix { idx, rc, message } = r {
                results.insert(*idx, (*rc, message.clone()));
            }
        }
        // Only the re-read state counts: clear the first probe for items that were fixed.
        for &i in &fixed {
            self.actual[i] = None;
        }
        self.absorb(&records);
        for (i, change, diff) in to_fix {
            let elapsed = started.elapsed();
            let before = self.public(i, change.actual.as_ref());
            // A failed fix still tells hooks and JSON what the item was and what it is now.
            let after = self.public(i, self.actual_state(i).as_ref());
            match results.get(&i) {
                None => self.fail_between(
                    i,
                    "the node did not report this fix".into(),
                    elapsed,
                    before,
                    after,
                ),
                Some((rc, msg)) if *rc != 0 => {
                    let msg = if msg.trim().is_empty() {
                        format!("fix failed (exit {rc})")
                    } else {
                        msg.trim().to_string()
                    };
                    self.fail_between(i, msg, elapsed, before, after);
                }
                Some(_) => match self.change_of(i) {
                    Some(still) => {
                        let keys = if still.keys.is_empty() {
                            still.verb().to_string()
                        } else {
                            still.keys.join(", ")
                        };
                        self.fail_between(
                            i,
                            format!("still differs after the fix: {keys}"),
                            elapsed,
                            before,
                            after,
                        );
                    }
                    None => {
                        let after = self.public(i, self.actual_state(i).as_ref());
                        self.fixed_by[i] = Some(change.clone());
                        self.fire_triggers(i);
                        self.report(
                            i,
                            ItemReport {
                                idx: i,
                                outcome: Outcome::Fixed,
                                reason: None,
                                verb: Some(change.verb()),
                                diff,
                                before,
                                after,
                                duration: elapsed,
                                quiet: false,
                            },
                        );
                    }
                },
            }
        }
        Ok(())
    }

    /// Verify: a triggered action whose trigger would be fixed would run; say so, with what
    /// triggers it, and pass the trigger on to what the action triggers.
    fn would_run(&mut self, i: usize) {
        let reason = self.fired_by[i].map(|by| format!("triggered by {}", self.g.items[by].id));
        self.fire_triggers(i);
        self.report(
            i,
            ItemReport {
                idx: i,
                outcome: Outcome::WouldChange,
                reason,
                verb: Some("run"),
                diff: None,
                before: None,
                after: None,
                duration: Duration::ZERO,
                quiet: false,
            },
        );
    }

    fn actual_state(&self, i: usize) -> Option<State> {
        let item = &self.g.items[i];
        let b = stateful(&item.kind)?;
        self.actual[i]
            .as_ref()
            .and_then(|f| b.actual(item, &self.job.locals[i], f))
    }

    fn actions(&mut self, actions: &[usize]) {
        let node = self.node();
        let mut to_run = Vec::new();
        for &i in actions {
            let item = &self.g.items[i];
            let ItemKind::Action(a) = &item.kind else {
                continue;
            };
            if let Some(why) = self.redundant(i) {
                self.skip(i, &why, false);
                continue;
            }
            // Also actions that never ask stop once the user quit in this wave.
            if let Some(why) = self.quit {
                self.skip(i, why, false);
                continue;
            }
            let interactive_only = a.interactive == Some(true);
            if interactive_only && !self.job.options.interactive {
                self.skip(i, "interactive only", false);
                continue;
            }
            if self.job.options.interactive && a.interactive != Some(false) {
                let mut text = format!("$ {}\n", a.command);
                if let Some(c) = &item.deps.comment {
                    text.push_str(&format!("# {c}\n"));
                }
                if !self.confirm(i, "run", &text) {
                    continue;
                }
            }
            to_run.push(i);
        }
        if to_run.is_empty() {
            return;
        }
        self.stale = true;
        let workers = self.job.options.item_workers.max(1);
        let g = self.g;
        let sink = self.job.sink;
        let t = self.t;
        let heartbeat = self.heartbeat.as_deref();
        let mut results: Vec<(usize, ActionOutcome, Duration)> = Vec::new();
        // Actions of one wave are independent; run up to `item_workers` at once on scoped
        // threads (each blocks on its remote command, so threads are the simplest fit).
        for chunk in to_run.chunks(workers) {
            let chunk_results: Vec<(usize, ActionOutcome, Duration)> = std::thread::scope(|s| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|&i| {
                        s.spawn(move || {
                            let item = &g.items[i];
                            let ItemKind::Action(a) = &item.kind else {
                                return (
                                    i,
                                    ActionOutcome::Failed("not an action".into()),
                                    Duration::ZERO,
                                );
                            };
                            let started = Instant::now();
                            let outcome = match sink.action_start(node, item) {
                                Err(reason) => ActionOutcome::Failed(reason),
                                Ok(()) => match t.run(&with_heartbeat(
                                    a.command(item.deps.unless.as_deref()),
                                    heartbeat,
                                )) {
                                    Ok(out) => a.judge(&out),
                                    Err(e) => ActionOutcome::Failed(e.reason()),
                                },
                            };
                            let d = started.elapsed();
                            let o = match outcome {
                                ActionOutcome::Succeeded => Outcome::Fixed,
                                ActionOutcome::Unless => Outcome::Skipped,
                                ActionOutcome::Failed(_) => Outcome::Failed,
                            };
                            sink.action_end(node, item, d, o);
                            (i, outcome, d)
                        })
                    })
                    .collect();
                handles.into_iter().filter_map(|h| h.join().ok()).collect()
            });
            results.extend(chunk_results);
        }
        for (i, outcome, d) in results {
            match outcome {
                ActionOutcome::Unless => self.skip(i, "unless", true),
                ActionOutcome::Failed(msg) => self.fail(i, msg, d),
                ActionOutcome::Succeeded => {
                    self.fire_triggers(i);
                    self.report(
                        i,
                        ItemReport {
                            idx: i,
                            outcome: Outcome::Fixed,
                            reason: None,
                            verb: Some("run"),
                            diff: None,
                            before: None,
                            after: None,
                            duration: d,
                            quiet: false,
                        },
                    );
                }
            }
        }
    }
}

/// `cmd` with the lock heartbeat in front (it prints nothing, so the action's output and exit
/// code are its own).
fn with_heartbeat(
    mut cmd: crate::transport::Command,
    beat: Option<&str>,
) -> crate::transport::Command {
    if let Some(beat) = beat {
        cmd.script = format!("{beat}{}", cmd.script);
    }
    cmd
}

#[cfg(test)]
#[path = "executor_tests.rs"]
mod tests;
