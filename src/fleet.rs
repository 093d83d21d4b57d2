//! The per-node scaffold every command that talks to nodes shares, with one policy:
//!
//! - nodes run on at most `workers` threads ([`crate::fanout`]); after Ctrl-C no further node
//!   starts, and the ones never started are answered `None`;
//! - a hook's `skip_node`/`abort` at a node's start point keeps that node from running;
//! - a dummy node is never contacted;
//! - `node_ssh_connect` fires just before an ssh node's transport opens, and a hook that
//!   refuses there keeps the node from being contacted;
//! - connect options come from `cinch.toml` and the command line once, for every node.
//!
//! apply/verify, run and lock use it; what each prints stays with the command.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};
use crate::events::{Bus, Event, Flow};
use crate::repo::{Node, TransportKind};
use crate::transport::{ConnectOptions, Transport};

/// The nodes' shared scaffold for one command.
pub struct Fleet<'a> {
    /// Where node events go (hooks, JSON).
    pub bus: &'a Bus,
    /// How to reach nodes.
    pub connect: ConnectOptions,
    /// How many nodes at once (at least 1).
    pub workers: usize,
}

/// Why a node was not contacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotContacted {
    /// The node is a dummy: it has no host to talk to.
    Dummy,
    /// A hook at `node_ssh_connect` refused the connection, with its reason.
    Refused(String),
}

impl<'a> Fleet<'a> {
    /// A scaffold over `bus` with these connect options and worker count.
    pub fn new(bus: &'a Bus, connect: ConnectOptions, workers: usize) -> Self {
        Fleet {
            bus,
            connect,
            workers: workers.max(1),
        }
    }

    /// Calls `work` for every element, at most `workers` at once, results in input order;
    /// elements not started because of Ctrl-C get `None`.
    pub fn map<T, R, F>(&self, items: &[T], work: F) -> Vec<Option<R>>
    where
        T: Sync,
        R: Send,
        F: Fn(&T) -> R + Sync,
    {
        crate::fanout::map_bounded(items, self.workers, crate::interrupt::requested, work)
    }

    /// Emits a node's start event (`node_apply_start`, `node_run_start`) and answers whether
    /// the node may run: `Err(reason)` when a hook skips or aborts it.
    pub fn start(&self, event: &Event<'_>) -> Result<(), String> {
        match self.bus.emit(event) {
            Flow::Continue => Ok(()),
            Flow::SkipNode(reason) | Flow::Abort(reason) => Err(reason),
        }
    }

    /// Opens the transport to `node`, firing `node_ssh_connect` first for an ssh node. The
    /// transport connects on first use (or on `connect()`); the caller closes it.
    pub fn open(&self, node: &Node) -> Result<Box<dyn Transport>, NotContacted> {
        if node.dummy {
            return Err(NotContacted::Dummy);
        }
        if node.transport == TransportKind::Ssh {
            match self.bus.emit(&Event::NodeSshConnect { node }) {
                Flow::Continue => {}
                Flow::SkipNode(reason) | Flow::Abort(reason) => {
                    return Err(NotContacted::Refused(reason));
                }
            }
        }
        Ok(crate::transport::open(node, &self.connect))
    }
}

/// `N` or `N%` of the nodes a command works on (`--batch`, `--max-fail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    /// This many nodes.
    Count(usize),
    /// This percentage (0..=100) of the nodes.
    Percent(u32),
}

impl Amount {
    /// Parses `N` or `N%`; `flag` names the option in the error.
    pub fn parse(flag: &str, text: &str) -> Result<Self> {
        let bad = || {
            Error::Usage(format!(
                "{flag} {text:?}: expected a number of nodes (e.g. 10) or a percentage of the \
                 selected nodes (e.g. 25%)"
            ))
        };
        let t = text.trim();
        if let Some(p) = t.strip_suffix('%') {
            let p: u32 = p.trim().parse().map_err(|_| bad())?;
            if p > 100 {
                return Err(bad());
            }
            return Ok(Amount::Percent(p));
        }
        t.parse().map(Amount::Count).map_err(|_| bad())
    }

    /// How many nodes this is out of `total`; a percentage rounds down.
    pub fn of(self, total: usize) -> usize {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => total * p as usize / 100,
        }
    }
}

/// Rolling work for apply and run: batches, a failure budget, a resume file.
#[derive(Debug, Clone, Default)]
pub struct Rollout {
    /// `--batch`: nodes in waves of this size (a percentage rounds up, at least 1).
    pub batch: Option<Amount>,
    /// `--max-fail`: once more nodes than this have failed, nothing new starts.
    pub max_fail: Option<Amount>,
    /// `--resume-file`: names of the nodes done, one a line, appended as each finishes.
    pub resume_file: Option<PathBuf>,
}

/// What became of one node under [`Fleet::roll`].
#[derive(Debug)]
pub enum Slot<R> {
    /// The node ran.
    Done(R),
    /// Ctrl-C came before it started.
    Interrupted,
    /// The failure budget was spent before it started.
    BudgetSpent,
    /// The resume file lists it as done already.
    AlreadyDone,
}

/// The outcome of [`Fleet::roll`].
#[derive(Debug)]
pub struct Rolled<R> {
    /// One slot per input, in input order.
    pub slots: Vec<Slot<R>>,
    /// Why the resume file could not be appended to, if it could not (the work stands).
    pub resume_error: Option<String>,
}

/// The note a node left alone by the rollout gets in the summary.
pub const NOTE_BUDGET_SPENT: &str = "not started (failure budget spent)";
/// The note a node listed in the resume file gets in the summary.
pub const NOTE_ALREADY_DONE: &str = "skipped: already done (resume file)";

/// The names a resume file lists (a missing file lists none).
pub fn read_resume_file(path: &Path) -> Result<std::collections::HashSet<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(Error::Usage(format!(
            "--resume-file {}: cannot read it: {e}",
            path.display()
        ))),
    }
}

impl<'a> Fleet<'a> {
    /// Like [`Fleet::map`], under a [`Rollout`]: nodes the resume file lists are not run,
    /// the rest run batch after batch, nothing new starts once more than the budget have
    /// failed (`ok` says whether a result counts as success), and each successful node is
    /// appended to the resume file (and flushed) as soon as it finishes.
    pub fn roll<T, R, F, N, O>(
        &self,
        items: &[T],
        rollout: &Rollout,
        name: N,
        ok: O,
        work: F,
    ) -> Result<Rolled<R>>
    where
        T: Sync,
        R: Send,
        F: Fn(&T) -> R + Sync,
        N: Fn(&T) -> &str + Sync,
        O: Fn(&R) -> bool + Sync,
    {
        let done = match &rollout.resume_file {
            Some(p) => read_resume_file(p)?,
            None => Default::default(),
        };
        let resume = match &rollout.resume_file {
            Some(p) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| {
                        Error::Usage(format!(
                            "--resume-file {}: cannot open it for appending: {e}",
                            p.display()
                        ))
                    })?,
            )),
            None => None,
        };
        let mut slots: Vec<Option<Slot<R>>> = items
            .iter()
            .map(|t| done.contains(name(t)).then_some(Slot::AlreadyDone))
            .collect();
        let todo: Vec<usize> = (0..items.len()).filter(|&i| slots[i].is_none()).collect();
        let budget = rollout.max_fail.map(|a| a.of(todo.len()));
        let batch = match rollout.batch {
            None => todo.len().max(1),
            Some(Amount::Count(n)) => n.max(1),
            Some(Amount::Percent(p)) => (todo.len() * p as usize).div_ceil(100).max(1),
        };
        let failed = AtomicUsize::new(0);
        let spent = || budget.is_some_and(|b| failed.load(Ordering::SeqCst) > b);
        let resume_error: Mutex<Option<String>> = Mutex::new(None);
        for wave in todo.chunks(batch) {
            if crate::interrupt::requested() || spent() {
                break;
            }
            let results = crate::fanout::map_bounded(
                wave,
                self.workers,
                || crate::interrupt::requested() || spent(),
                |&i| {
                    let item = &items[i];
                    let r = work(item);
                    if !ok(&r) {
                        failed.fetch_add(1, Ordering::SeqCst);
                    } else if let Some(file) = &resume {
                        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
                        // One write per line: an interrupted or killed run keeps every
                        // node that finished.
                        let line = format!("{}\n", name(item).replace(['\n', '\r'], " "));
                        if let Err(e) = f.write_all(line.as_bytes()).and_then(|_| f.flush()) {
                            resume_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e.to_string());
                        }
                    }
                    r
                },
            );
            for (&i, r) in wave.iter().zip(results) {
                slots[i] = r.map(Slot::Done);
            }
        }
        let interrupted = crate::interrupt::requested();
        let slots = slots
            .into_iter()
            .map(|s| match s {
                Some(s) => s,
                None if interrupted => Slot::Interrupted,
                None => Slot::BudgetSpent,
            })
            .collect();
        let resume_error = resume_error
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .zip(rollout.resume_file.as_ref())
            .map(|(e, p)| format!("--resume-file {}: cannot append to it: {e}", p.display()));
        Ok(Rolled {
            slots,
            resume_error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Subscriber;

    /// Answers every event with one flow, and counts the ssh-connect events it saw.
    struct Answer(Flow, std::sync::atomic::AtomicUsize);

    impl Subscriber for Answer {
        fn on_event(&self, event: &Event<'_>) -> Flow {
            if matches!(event, Event::NodeSshConnect { .. }) {
                self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            self.0.clone()
        }
    }

    fn node(transport: TransportKind, dummy: bool) -> Node {
        Node {
            name: "n1".into(),
            hostname: "n1.invalid".into(),
            username: None,
            port: None,
            transport,
            groups: vec![],
            bundles: vec![],
            dummy,
            become_: None,
            lock_dir: "/tmp/x".into(),
            ..Node::bare("n1", serde_json::json!({}))
        }
    }

    fn bus(flow: Flow) -> Bus {
        let mut bus = Bus::new();
        bus.subscribe(Box::new(Answer(flow, Default::default())));
        bus
    }

    fn connect() -> ConnectOptions {
        ConnectOptions::from_settings(std::path::Path::new("/"), &Default::default(), false)
    }

    #[test]
    fn a_hook_refusing_node_ssh_connect_keeps_every_command_off_the_node() {
        for flow in [Flow::SkipNode("maint".into()), Flow::Abort("maint".into())] {
            let bus = bus(flow);
            let fleet = Fleet::new(&bus, connect(), 1);
            let refused = fleet.open(&node(TransportKind::Ssh, false)).err();
            assert_eq!(refused, Some(NotContacted::Refused("maint".into())));
        }
    }

    #[test]
    fn a_dummy_node_is_never_contacted_and_fires_no_connect_event() {
        let mut bus = Bus::new();
        let seen = std::sync::Arc::new(Answer(Flow::Continue, Default::default()));
        struct Shared(std::sync::Arc<Answer>);
        impl Subscriber for Shared {
            fn on_event(&self, event: &Event<'_>) -> Flow {
                self.0.on_event(event)
            }
        }
        bus.subscribe(Box::new(Shared(seen.clone())));
        let fleet = Fleet::new(&bus, connect(), 1);
        assert_eq!(
            fleet.open(&node(TransportKind::Ssh, true)).err(),
            Some(NotContacted::Dummy)
        );
        assert_eq!(seen.1.load(std::sync::atomic::Ordering::SeqCst), 0);
        let local = fleet.open(&node(TransportKind::Local, false));
        assert!(local.is_ok(), "a local node opens without ssh");
        assert_eq!(seen.1.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn a_hook_skip_or_abort_at_a_node_start_point_stops_the_node() {
        let n = node(TransportKind::Local, false);
        let start = Event::NodeRunStart {
            node: &n,
            command: "true",
        };
        assert_eq!(
            Fleet::new(&bus(Flow::Continue), connect(), 1).start(&start),
            Ok(())
        );
        for flow in [Flow::SkipNode("why".into()), Flow::Abort("why".into())] {
            let b = bus(flow);
            assert_eq!(
                Fleet::new(&b, connect(), 1).start(&start),
                Err("why".into())
            );
        }
    }

    #[test]
    fn workers_are_at_least_one() {
        let b = Bus::new();
        assert_eq!(Fleet::new(&b, connect(), 0).workers, 1);
    }

    fn rollout(batch: Option<Amount>, max_fail: Option<Amount>) -> Rollout {
        Rollout {
            batch,
            max_fail,
            resume_file: None,
        }
    }

    #[test]
    fn a_batch_finishes_before_the_next_starts() {
        let b = Bus::new();
        let fleet = Fleet::new(&b, connect(), 10);
        let finished = AtomicUsize::new(0);
        let items: Vec<usize> = (0..9).collect();
        // Each node records how many nodes had finished when it started: with batches of 3,
        // nodes 3..6 see exactly 3 and nodes 6..9 see exactly 6.
        let rolled = fleet
            .roll(
                &items,
                &rollout(Some(Amount::Count(3)), None),
                |_| "n",
                |_| true,
                |&i| {
                    let seen = finished.load(Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    finished.fetch_add(1, Ordering::SeqCst);
                    (i, seen)
                },
            )
            .unwrap();
        for slot in rolled.slots {
            let Slot::Done((i, seen)) = slot else {
                panic!("every node runs")
            };
            assert_eq!(seen, i / 3 * 3, "node {i}");
        }
    }

    #[test]
    fn max_fail_stops_new_nodes_once_the_budget_is_spent() {
        let b = Bus::new();
        let fleet = Fleet::new(&b, connect(), 1);
        let items: Vec<usize> = (0..10).collect();
        // Nodes 0, 1 and 2 fail; a budget of 2 is spent by the third failure.
        let rolled = fleet
            .roll(
                &items,
                &rollout(None, Some(Amount::Count(2))),
                |_| "n",
                |ok: &bool| *ok,
                |&i| i >= 3,
            )
            .unwrap();
        let spent = rolled
            .slots
            .iter()
            .filter(|s| matches!(s, Slot::BudgetSpent))
            .count();
        assert_eq!(spent, 7);
        assert!(matches!(rolled.slots[2], Slot::Done(false)));
    }

    #[test]
    fn amounts_parse_counts_and_percentages() {
        assert_eq!(Amount::parse("--batch", "10").unwrap(), Amount::Count(10));
        assert_eq!(
            Amount::parse("--batch", "25%").unwrap(),
            Amount::Percent(25)
        );
        assert_eq!(Amount::Percent(25).of(10), 2);
        for bad in ["", "x", "101%", "-1", "5%%"] {
            let e = Amount::parse("--max-fail", bad).unwrap_err().to_string();
            assert!(e.contains("--max-fail"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_resume_file_skips_nodes_done_and_records_each_success_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("done");
        std::fs::write(&path, "a\n").unwrap();
        let b = Bus::new();
        let fleet = Fleet::new(&b, connect(), 1);
        let names = ["a", "b", "c"];
        let r = Rollout {
            resume_file: Some(path.clone()),
            ..Default::default()
        };
        let rolled = fleet
            .roll(
                &names,
                &r,
                |n| n,
                |ok: &bool| *ok,
                |n| {
                    // Written before the next node starts, not at the end of the run.
                    let text = std::fs::read_to_string(&path).unwrap();
                    assert_eq!(text, if *n == "b" { "a\n" } else { "a\nb\n" });
                    *n == "b"
                },
            )
            .unwrap();
        assert!(matches!(rolled.slots[0], Slot::AlreadyDone));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nb\n");
    }
}
