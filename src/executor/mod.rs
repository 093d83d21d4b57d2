//! The per-node item engine: reads the actual state of every item in one remote command, then
//! walks the dependency graph in waves; each wave with changes costs one command that applies
//! all its fixes and re-reads exactly those items. Actions cost one command each, only when
//! they run. Steady state is therefore one command per node, whatever the number of items.
//!
//! The executor knows nothing about output: it emits every item's result on the [`Bus`] (in
//! apply the item and action hook points, in verify the `item_verify` verdict, in both a
//! [`Note::ItemResult`] for the terminal), and subscribers render it; its `-i` questions go
//! to an [`Asker`]. Locks plug in through [`Guard`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::events::{Bus, Event, Flow, Note};
use crate::items::Item;
use crate::items::state::{Change, Local, State, runnable, stateful};
use crate::node_shell::{Fields, Record, Script};
use crate::plan::Plan;
use crate::repo::Node;
use crate::transport::{Stats, Transport, TransportError};

mod locals;
mod report;
mod steady;
mod walk;

pub use locals::locals;

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
    /// `apply --plan`: what the saved plan allows per item (by plan index); `None` = no plan.
    pub plan: Option<Vec<PlanCheck>>,
}

/// What a saved plan allows for one item (`cinch apply --plan`), so only reviewed changes run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanCheck {
    /// Not in the plan: left alone if it would change.
    NotPlanned,
    /// In the plan, but the repo's expected state changed since: never changed, reported
    /// failed with this reason.
    Changed(String),
    /// In the plan: changed only while its actual state still hashes to this (`None`: an
    /// action, which has no actual state).
    Actual(Option<String>),
}

/// An item's expected state (`None`: it must not exist, or it has no state).
fn expected_state(item: &Item, local: &Local) -> Option<State> {
    stateful(&item.kind)?.expected(item, local)
}

/// An item's actual state as its probe record says (`None`: absent, or not read).
fn actual_state(item: &Item, local: &Local, fields: Option<&Fields>) -> Option<State> {
    stateful(&item.kind)?.actual(item, local, fields?)
}

/// Nodes with fewer items build their states one by one, as needed (no thread hand-off).
const PRIME_AT_LEAST: usize = 256;

/// Why an item is not touched under `--plan` when it changed since the plan was made.
pub const CHANGED_SINCE_PLAN: &str = "changed since the plan";

/// The hash of an actual state as a saved plan records it: sorted keys, staging leftovers
/// (a probe detail apply cleans up) left out.
pub fn actual_hash(state: &State) -> String {
    crate::digest::entries_hash(
        state
            .iter()
            .filter(|(k, _)| k.as_str() != crate::items::file::LEFTOVERS),
    )
}

/// What happened to one item (defined with the events that carry it).
pub use crate::events::ItemReport;
/// The result of one item: the one status word of output, JSON and hooks.
pub use crate::events::ItemStatus as Outcome;

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

/// The `-i` question: a direct callback, not an event, because the walk waits for its answer.
pub trait Asker: Sync {
    /// Interactive mode: should this change be made?
    fn ask(&self, node: &Node, item: &Item, verb: &str, diff: &str) -> Answer;
}

/// A refusal from a `*_start` hook, as the failure reason of the item it stops.
fn refused(flow: Flow) -> Result<(), String> {
    match flow {
        Flow::Continue => Ok(()),
        Flow::Abort(reason) | Flow::SkipNode(reason) => Err(reason),
    }
}

/// The seam for locks, defined beside its implementation in `lock` (which must not import
/// the executor: `events` already imports `lock`, and the executor emits `events`).
pub use crate::lock::Guard;

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
    /// Where every item's result goes (apply's item and action hook points, verify's
    /// verdicts, and each item's terminal line as a [`Note::ItemResult`]).
    pub bus: &'a Bus,
    pub asker: &'a dyn Asker,
    /// verify: what drift is attributed against (`None`: no attribution).
    pub drift: Option<DriftBase<'a>>,
}

/// verify's drift attribution inputs: every item's `(id, expected-state hash)` by plan index,
/// and the node's records of its last apply, filled by the guard once the node answered.
#[derive(Clone, Copy)]
pub struct DriftBase<'a> {
    pub expected: &'a [(String, String)],
    pub seen: &'a std::sync::OnceLock<crate::lock::Records>,
}

/// How long the closing command (records, steady marker, lock release) may take: it is
/// small, but on a node (or a control machine) under heavy load a short limit cut it off and
/// left the hard lock behind.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(300);

/// The node's error when the closing command did not finish well: the hard lock may still be
/// held, so the run must not look clean.
fn release_failed(out: &crate::transport::Output) -> String {
    let how = match out.status {
        _ if out.timed_out => format!("timed out after {}s", RELEASE_TIMEOUT.as_secs()),
        Some(code) => format!("exited {code}"),
        None => "was killed".into(),
    };
    let said = String::from_utf8_lossy(&out.stderr);
    let said = said
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let said = crate::output::untrusted(said, crate::output::Lines::Escape);
    format!(
        "releasing the node's lock: the closing command {how}{}{said}; its hard lock may still \
         be held (a later apply takes it over once this cinch has exited, or use --force)",
        if said.is_empty() { "" } else { ": " }
    )
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
    // A node that gave its lock back on its steady marker while its answer shows work to do
    // (a wrong marker): nothing was judged yet, so take the lock again the usual way.
    if started.is_ok() && ex.released && ex.contradicted(guard.as_deref()) {
        ex.released = false;
        ex.steady_off = true;
        for i in 0..ex.g.items.len() {
            ex.set_actual(i, None);
        }
        if let Some(g) = guard.as_deref_mut() {
            g.distrust();
        }
        started = ex.start(&mut guard);
    }
    let sent = transport.stats().commands;
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
    if job.options.mode == Mode::Apply
        && let Some(g) = guard.as_deref_mut()
    {
        // A node released on its steady marker keeps its records: no hash is needed.
        if g.records() {
            let applied = (0..ex.g.items.len())
                .filter(|&i| matches!(ex.done[i], Some(Outcome::Ok | Outcome::Fixed)))
                .filter_map(|i| ex.actual_of(i).map(|s| (i, actual_hash(s))))
                .collect();
            g.applied(applied);
        }
        g.settled(ex.unchanged(sent));
    }
    if ex.reached.get()
        && let Some(epi) = guard.as_ref().and_then(|g| g.epilogue())
    {
        let cmd = crate::transport::Command {
            cleanup: true,
            timeout: Some(RELEASE_TIMEOUT),
            stdin: guard.as_ref().and_then(|g| g.epilogue_stdin()),
            ..crate::transport::Command::new(epi)
        };
        match transport.run(&cmd) {
            Err(e) => {
                ex.run.error.get_or_insert(e.reason());
            }
            Ok(out) if out.status != Some(0) => {
                ex.run.error.get_or_insert(release_failed(&out));
            }
            Ok(_) => {}
        }
    }
    ex.run.stats = transport.stats();
    ex.run.duration = start.elapsed();
    let run = std::mem::take(&mut ex.run);
    ex.free();
    run
}

struct Exec<'a, 'j> {
    job: &'j Job<'a>,
    t: &'j dyn Transport,
    g: &'a Plan,
    /// Latest probe record per item; change it only through `set_actual`, which keeps the
    /// memo below in step.
    actual: Vec<Option<Fields>>,
    /// Each item's expected state, computed once: it cannot change during a run.
    expected_memo: Vec<std::cell::OnceCell<Option<State>>>,
    /// Each item's actual state as read from `actual`, computed once per probe record: an
    /// unchanged item is judged, reported and recorded from the same state (20,000 files
    /// built each state four times).
    actual_memo: Vec<std::cell::OnceCell<Option<State>>>,
    /// Whether item `i`'s memos above are the same state, judged with them on all cores
    /// (`None`: not judged yet); cleared with the probe record.
    same: Vec<std::cell::Cell<Option<bool>>>,
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
    /// The first command's steady check gave the lock back: nothing more may be sent.
    released: bool,
    /// The steady marker was found wrong: the first command is sent without its check.
    steady_off: bool,
    /// The guard's heartbeat, put in front of every command once the lock is held.
    heartbeat: Option<String>,
    /// verify: why an item would have been skipped by apply (someone else's soft lock).
    locked_by: Vec<Option<String>>,
    /// Some subscriber reads the states of item results (hooks, JSON lines).
    states_read: bool,
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
            expected_memo: vec![std::cell::OnceCell::new(); n],
            actual_memo: vec![std::cell::OnceCell::new(); n],
            same: vec![std::cell::Cell::new(None); n],
            done: vec![None; n],
            fixed_by: vec![None; n],
            fired: vec![false; n],
            fired_by: vec![None; n],
            kept,
            stale: false,
            quit: None,
            reached: std::cell::Cell::new(false),
            released: false,
            steady_off: false,
            heartbeat: None,
            locked_by: vec![None; n],
            states_read: job.bus.reads_item_states(),
            run: NodeRun::default(),
        }
    }

    /// Asks the user about item `i` (interactive mode); a "no" or "quit" skips the item (and
    /// "quit" everything after it). True when the item may go ahead.
    fn confirm(&mut self, i: usize, verb: &str, text: &str) -> bool {
        let item = &self.g.items[i];
        let answer = self.job.asker.ask(self.node(), item, verb, text);
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
        if self.released {
            return Err(steady::STEADY_CONTRADICTED.into());
        }
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

    /// [`Exec::send`]; a big node's expected states (which do not depend on the answer) are
    /// built on other cores while the node works.
    fn send_priming(&mut self, script: Script) -> ExecResult<Vec<Record>> {
        let (items, locals) = (&self.g.items, self.job.locals);
        let prime = items.len() >= PRIME_AT_LEAST && self.expected_memo[0].get().is_none();
        let (records, expected) = std::thread::scope(|s| {
            let primer = prime.then(|| {
                s.spawn(|| {
                    use rayon::prelude::*;
                    (0..items.len())
                        .into_par_iter()
                        .map(|i| expected_state(&items[i], &locals[i]))
                        .collect::<Vec<_>>()
                })
            });
            let records = self.send(script);
            (records, primer.and_then(|p| p.join().ok()))
        });
        for (memo, state) in self
            .expected_memo
            .iter()
            .zip(expected.into_iter().flatten())
        {
            // A memo already set holds the same state (it is a function of the same inputs).
            let _ = memo.set(state);
        }
        records
    }

    fn probe_into(&self, script: &mut Script, items: &[usize]) {
        for &i in items {
            let item = &self.g.items[i];
            if let Some(b) = stateful(&item.kind) {
                b.probe(item, &self.job.locals[i], script);
            }
        }
    }

    /// Takes the probe records' fields as the items' latest (moved, not copied: 20,000 files
    /// copied 60,000 strings) and gives back the other records.
    fn absorb(&mut self, records: Vec<Record>) -> Vec<Record> {
        let mut rest = Vec::new();
        for r in records {
            match r {
                Record::Probe { idx, fields } if idx < self.actual.len() => {
                    self.set_actual(idx, Some(fields));
                }
                other => rest.push(other),
            }
        }
        rest
    }

    /// Builds every item's actual state (and any expected state not built yet) at once, on all
    /// cores, and judges whether the two are the same: judging 20,000 unchanged files was
    /// mostly building their states one after the other.
    fn prime_states(&mut self) {
        use rayon::prelude::*;
        let (items, locals, actual) = (&self.g.items, &self.job.locals, &self.actual);
        if items.len() < PRIME_AT_LEAST {
            return;
        }
        let built: Vec<Option<&Option<State>>> =
            self.expected_memo.iter().map(|m| m.get()).collect();
        type Primed = (Option<Option<State>>, Option<State>, bool);
        let states: Vec<Primed> = (0..items.len())
            .into_par_iter()
            .map(|i| {
                let new = built[i]
                    .is_none()
                    .then(|| expected_state(&items[i], &locals[i]));
                let actual = actual_state(&items[i], &locals[i], actual[i].as_ref());
                let expected = match (built[i], &new) {
                    (Some(e), _) | (None, Some(e)) => e.as_ref(),
                    (None, None) => None,
                };
                let same = !Change::differs(expected, actual.as_ref());
                (new, actual, same)
            })
            .collect();
        drop(built);
        for (i, (expected, actual, same)) in states.into_iter().enumerate() {
            // A memo already set holds the same state (it is a function of the same inputs).
            if let Some(expected) = expected {
                let _ = self.expected_memo[i].set(expected);
            }
            let _ = self.actual_memo[i].set(actual);
            self.same[i].set(Some(same));
        }
    }

    /// Frees the probe records and states of a big node on another thread: 20,000 files' worth
    /// took 20 ms of a steady apply after the node had answered.
    fn free(&mut self) {
        if self.g.items.len() >= PRIME_AT_LEAST {
            let records = std::mem::take(&mut self.actual);
            let expected = std::mem::take(&mut self.expected_memo);
            let actual = std::mem::take(&mut self.actual_memo);
            rayon::spawn(move || drop((records, expected, actual)));
        }
    }

    /// Replaces item `i`'s probe record (and forgets the state built from the old one).
    pub(super) fn set_actual(&mut self, i: usize, fields: Option<Fields>) {
        self.actual[i] = fields;
        self.actual_memo[i].take();
        self.same[i].set(None);
    }

    /// Item `i`'s expected state (`None`: it must not exist, or it has no state).
    fn expected_of(&self, i: usize) -> Option<&State> {
        self.expected_memo[i]
            .get_or_init(|| expected_state(&self.g.items[i], &self.job.locals[i]))
            .as_ref()
    }

    /// Item `i`'s actual state from its latest probe record (`None`: absent or not read).
    pub(super) fn actual_of(&self, i: usize) -> Option<&State> {
        self.actual_memo[i]
            .get_or_init(|| {
                actual_state(
                    &self.g.items[i],
                    &self.job.locals[i],
                    self.actual[i].as_ref(),
                )
            })
            .as_ref()
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
        if let Some((path, write)) = guard.as_ref().and_then(|g| g.hash_cache()) {
            script.hash_cache(&path, write);
        }
        // apply (without a saved plan) may settle an unchanged node in this one command.
        let steady = prologue.is_some()
            && !self.steady_off
            && self.job.options.mode == Mode::Apply
            && self.job.options.plan.is_none();
        if steady {
            script.steady_begin();
        }
        let from = script.text().len();
        self.probe_into(&mut script, &wanted);
        if steady {
            script.finish();
            let judged = self.judged_digest(&script.text()[from..]);
            let check = guard.as_mut().and_then(|g| g.steady(&judged));
            script.steady_end(check.as_deref().unwrap_or(":"));
        }
        let records = self.send_priming(script)?;
        if let Some(g) = guard.as_mut() {
            let (rc, out) = records
                .iter()
                .find_map(|r| match r {
                    Record::Prologue { rc, output } => Some((*rc, output.as_slice())),
                    _ => None,
                })
                .ok_or("the node did not answer the lock check")?;
            g.accept(rc, out)?;
            if let Some((digest, released)) = records.iter().find_map(|r| match r {
                Record::Steady { digest, released } => Some((digest.clone(), *released)),
                _ => None,
            }) {
                g.probed(digest, released);
                self.released = released;
            }
        }
        self.absorb(records);
        self.prime_states();
        Ok(())
    }

    fn change_of(&self, i: usize) -> Option<Change> {
        stateful(&self.g.items[i].kind)?;
        // Already judged the same from these very memos (the contradiction check and the walk
        // each asked again for all 20,000 items of an unchanged node).
        if self.same[i].get() == Some(true) {
            return None;
        }
        let (expected, actual) = (self.expected_of(i), self.actual_of(i));
        if !Change::differs(expected, actual) {
            return None;
        }
        Change::between(expected.cloned(), actual.cloned())
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
        if runnable(&self.g.items[x].kind).is_some() {
            !self.g.items[x].deps.triggered || self.fired[x]
        } else {
            self.change_of(x).is_some()
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
mod tests;
