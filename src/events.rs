//! Everything that happens is an [`Event`]; terminal output, JSON lines and hooks all subscribe
//! to the same stream, so they can never disagree about what happened.

use std::time::Duration;

use serde_json::{Value, json};

use crate::items::Item;
use crate::repo::Node;

/// The outcome of one item on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    Ok,
    Fixed,
    Skipped,
    Failed,
    /// Verify: the item differs (or a triggered action would run); not a failure.
    WouldChange,
}

impl ItemStatus {
    /// The word used in output, JSON and hooks.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Ok => "ok",
            ItemStatus::Fixed => "fixed",
            ItemStatus::Skipped => "skipped",
            ItemStatus::Failed => "failed",
            ItemStatus::WouldChange => "would_change",
        }
    }
}

/// Per-node counts, as shown in the summary table and given to `node_apply_end`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NodeResult {
    pub ok: usize,
    pub fixed: usize,
    pub skipped: usize,
    pub failed: usize,
    pub total: usize,
    /// Why the node as a whole did not run (unreachable, lock held, hook skip).
    pub error: Option<String>,
}

/// What a subscriber wants to happen next; only hooks at `*_start` points say anything but
/// `Continue`.
#[derive(Debug, Clone, PartialEq)]
pub enum Flow {
    Continue,
    /// `skip_node(reason)` from node_apply_start / node_run_start.
    SkipNode(String),
    /// `abort(reason)` from apply_start / run_start, or a failing `*_start` hook.
    Abort(String),
}

/// Everything observable a command does: the hook points (hooks-examples/README.md), the
/// JSON-only lines ([`Report`]) and the terminal-only moments ([`Note`]). Borrowed, so
/// emitting costs no copies. The hook points serialise (serde) to their payload: the JSON line
/// names nodes and items, the hook arguments ([`Event::hook_payload`]) get them whole.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    ApplyStart {
        target: &'a str,
        #[serde(serialize_with = "ser::nodes")]
        nodes: &'a [&'a Node],
        interactive: bool,
    },
    ApplyEnd {
        target: &'a str,
        #[serde(serialize_with = "ser::nodes")]
        nodes: &'a [&'a Node],
        #[serde(serialize_with = "ser::secs")]
        duration: Duration,
    },
    NodeApplyStart {
        #[serde(serialize_with = "ser::node")]
        node: &'a Node,
        interactive: bool,
    },
    NodeApplyEnd {
        #[serde(serialize_with = "ser::node")]
        node: &'a Node,
        #[serde(serialize_with = "ser::secs")]
        duration: Duration,
        interactive: bool,
        result: &'a NodeResult,
    },
    ItemApplyStart {
        #[serde(serialize_with = "ser::node")]
        node: &'a Node,
        #[serde(flatten, serialize_with = "ser::item")]
        item: &'a Item,
    },
    ItemApplyEnd {
        #[serde(serialize_with = "ser::node")]
        node: &'a Node,
        #[serde(flatten, serialize_with = "ser::item")]
        item: &'a Item,
        #[serde(serialize_with = "ser::secs")]
        duration: Duration,
        status: ItemStatus,
        status_before: Option<&'a Value>,
        status_after: Option<&'a Value>,
        /// Skip reason or failure message.
        reason: Option<&'a str>,
    },
    ActionRunStart {
        #[serde(serialize_with = "ser::node")]
        node: &'a Node,
        #[serde(flatten, serialize_with = "ser::item")]
        item: &'a Item,
    },
    ActionRunEnd {
        #[serde(serialize_with = "ser::node")]
        node: &'a Node,
        #[serde(flatten, serialize_with = "ser::item")]
        item: &'a Item,
        #[serde(serialize_with = "ser::secs")]
        duration: Duration,
        status: ItemStatus,
    },
    RunStart {
        target: &'a str,
        #[serde(serialize_with = "ser::nodes")]
        nodes: &'a [&'a Node],
        command: &'a str,
    },
    RunEnd {
        target: &'a str,
        #[serde(serialize_with = "ser::nodes")]
        nodes: &'a [&'a Node],
        command: &'a str,
        #[serde(serialize_with = "ser::secs")]
        duration: Duration,
    },
    NodeRunStart {
        #[serde(serialize_with = "ser::node")]
        node: &'a Node,
        command: &'a str,
    },
    NodeRunEnd {
        #[serde(serialize_with = "ser::node")]
        node: &'a Node,
        command: &'a str,
        #[serde(serialize_with = "ser::secs")]
        duration: Duration,
        return_code: Option<i32>,
        #[serde(serialize_with = "ser::lossy")]
        stdout: &'a [u8],
        #[serde(serialize_with = "ser::lossy")]
        stderr: &'a [u8],
    },
    LockAdd {
        #[serde(serialize_with = "ser::node")]
        node: &'a Node,
        lock_id: &'a str,
        items: &'a [String],
        expiry: i64,
        comment: &'a str,
    },
    LockRemove {
        #[serde(serialize_with = "ser::node")]
        node: &'a Node,
        lock_id: &'a str,
    },
    LockShow {
        #[serde(serialize_with = "ser::node")]
        node: &'a Node,
        lock_info: &'a Value,
    },
    NodeSshConnect {
        #[serde(serialize_with = "ser::node")]
        node: &'a Node,
    },
    TestNode {
        #[serde(serialize_with = "ser::node")]
        node: &'a Node,
    },
    Test,
    /// Not a hook point: a JSON-only line (a verify verdict, run output, a summary, …).
    #[serde(skip)]
    Report(Report<'a>),
    /// Not a hook point and no JSON line: a moment only the terminal shows.
    #[serde(skip)]
    Note(Note<'a>),
}

/// The terminal-only events: what the human renderer shows besides the hook points and the
/// JSON lines (item lines with their diffs and drift words, node lines, progress).
#[derive(Debug, Clone)]
pub enum Note<'a> {
    /// apply/verify: a node's items are about to be read (its progress bar starts).
    NodeStarted { node: &'a str, items: usize },
    /// apply/verify: a line about a whole node ("not run: …", "skipped by hook (…)", its
    /// error); `error` lines go to stderr.
    NodeLine {
        node: &'a str,
        message: &'a str,
        error: bool,
    },
    /// apply/verify: a node is done (its progress bar ends).
    NodeFinished { node: &'a str },
    /// apply/verify: one item's result, after its `item_apply_end` (apply) or `item_verify`
    /// (verify) line, with what only the terminal shows: verb, diff, quiet skips, and verify's
    /// drift attribution.
    ItemResult {
        node: &'a str,
        item: &'a Item,
        report: &'a ItemReport,
        drift: Option<&'a Drift>,
    },
    /// A styled error line for the terminal; the same error reaches JSON as a
    /// [`Report::Error`] emitted beside it.
    ErrorLine { text: &'a str },
    /// run: a chunk of whole lines one node's command printed on `stream` (`stdout` or
    /// `stderr`), shown prefixed in one write; JSON gets each line as a [`Report::Output`].
    RunOutput {
        node: &'a str,
        stream: &'a str,
        text: &'a str,
    },
    /// run: a dummy node is skipped (no command runs on it).
    DummySkipped { node: &'a str },
    /// A warning about something a node said (its text is sanitised when shown).
    Warning { text: &'a str },
    /// lock show: every node has answered or failed; the terminal shows the table of the
    /// locks found (the [`Report::Lock`] lines) or says there were none.
    LockShowEnd {
        /// The id asked for, if one was.
        lock_id: Option<&'a str>,
        /// How many nodes answered (even with no locks).
        answered: usize,
        failed: bool,
    },
    /// test: a node's checks passed (`-v` shows it).
    NodeChecked { node: &'a str, items: usize },
    /// test: the closing line for the terminal, with why the test stopped early if it did;
    /// JSON gets the counts as [`Report::TestSummary`].
    TestSummary {
        nodes: usize,
        bad_nodes: usize,
        items: usize,
        problems: usize,
        why: &'a str,
    },
}

/// What happened to one item on one node: the executor's result, emitted (as
/// [`Note::ItemResult`]) and kept for the summary and plans.
#[derive(Debug, Clone)]
pub struct ItemReport {
    /// The item's index in the node's plan.
    pub idx: usize,
    pub outcome: ItemStatus,
    /// Skip reason or failure message.
    pub reason: Option<String>,
    /// create / fix / delete / run, for changed items.
    pub verb: Option<&'static str>,
    /// The change in words (never contains sensitive content).
    pub diff: Option<String>,
    /// The state read before (public view), for the item's event; not kept after it.
    pub before: Option<Value>,
    /// The state after, likewise; `None` on an `ok` item stands for `before` (nothing
    /// changed, so 20,000 unchanged files need no second copy): see [`ItemReport::after`].
    pub after: Option<Value>,
    pub duration: Duration,
    /// Skips users do not need to see ("not triggered", "unless").
    pub quiet: bool,
    /// verify: the hash of the drifted state it read (drift attribution, plans).
    pub actual_hash: Option<String>,
}

impl ItemReport {
    /// The state after the item's run: an `ok` item's is its state before.
    pub fn after(&self) -> Option<&Value> {
        match (&self.after, self.outcome) {
            (None, ItemStatus::Ok) => self.before.as_ref(),
            (after, _) => after.as_ref(),
        }
    }
}

/// An item as hooks see it: id, type, name, bundle, attributes (each type's own view, which
/// leaves out sensitive content), tags and comment.
pub fn item_view(item: &Item) -> Value {
    json!({
        "id": item.id,
        "type": item.type_name(),
        "name": item.name,
        "bundle": item.bundle,
        "attributes": item.kind.item_type().view(&item.kind),
        "tags": item.deps.tags,
        "comment": item.deps.comment,
    })
}

/// How event fields serialise: nodes and items by name in JSON lines, whole (as hooks see
/// them) inside [`Event::hook_payload`].
mod ser {
    use std::cell::Cell;
    use std::time::Duration;

    use serde::Serialize;
    use serde::ser::{SerializeMap, SerializeSeq, Serializer};

    use crate::items::Item;
    use crate::repo::Node;

    thread_local! {
        /// Set while [`super::Event::hook_payload`] serialises on this thread.
        static WHOLE: Cell<bool> = const { Cell::new(false) };
    }

    fn whole() -> bool {
        WHOLE.with(Cell::get)
    }

    /// Runs `f` with nodes and items serialised whole on this thread; the flag is cleared
    /// again however `f` ends.
    pub(super) fn whole_while<R>(f: impl FnOnce() -> R) -> R {
        struct Reset(bool);
        impl Drop for Reset {
            fn drop(&mut self) {
                WHOLE.with(|w| w.set(self.0));
            }
        }
        let _reset = Reset(WHOLE.with(|w| w.replace(true)));
        f()
    }

    pub fn node<S: Serializer>(node: &&Node, s: S) -> Result<S::Ok, S::Error> {
        if whole() {
            node.serialize(s)
        } else {
            s.serialize_str(&node.name)
        }
    }

    pub fn nodes<S: Serializer>(nodes: &&[&Node], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(nodes.len()))?;
        for n in nodes.iter() {
            if whole() {
                seq.serialize_element(*n)?;
            } else {
                seq.serialize_element(&n.name)?;
            }
        }
        seq.end()
    }

    /// Flattened: `item` (its id) and `bundle` in JSON lines; `item` as hooks see it
    /// (id, type, name, bundle, attributes, tags, comment) in the hook payload.
    pub fn item<S: Serializer>(item: &&Item, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if whole() {
            m.serialize_entry("item", &super::item_view(item))?;
        } else {
            m.serialize_entry("item", &item.id)?;
            m.serialize_entry("bundle", &item.bundle)?;
        }
        m.end()
    }

    pub fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn lossy<S: Serializer>(bytes: &&[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(bytes))
    }
}

/// Declares every hook point once — the `Event` variant, its hook function name and its
/// argument names — and generates [`Event::hook_point`] and [`HOOK_POINTS`] from that one list.
macro_rules! hook_points {
    ($($variant:ident => $name:literal [$($arg:literal),* $(,)?],)*) => {
        impl Event<'_> {
            /// The hook function name for this point; `None` for the events that are not hook
            /// points ([`Report`] lines and [`Note`]s).
            pub fn hook_point(&self) -> Option<&'static str> {
                match self {
                    $(Event::$variant { .. } => Some($name),)*
                    Event::Report(_) | Event::Note(_) => None,
                }
            }
        }

        /// Every hook point with the arguments it provides, in order (the table in
        /// hooks-examples/README.md, which a test keeps equal to this list). New arguments are only
        /// ever appended, so hooks that declare fewer parameters keep working.
        pub const HOOK_POINTS: &[(&str, &[&str])] = &[$(($name, &[$($arg),*]),)*];
    };
}

hook_points! {
    ApplyStart => "apply_start" ["repo", "target", "nodes", "interactive"],
    ApplyEnd => "apply_end" ["repo", "target", "nodes", "duration"],
    NodeApplyStart => "node_apply_start" ["repo", "node", "interactive"],
    NodeApplyEnd => "node_apply_end" ["repo", "node", "duration", "interactive", "result"],
    ItemApplyStart => "item_apply_start" ["repo", "node", "item"],
    ItemApplyEnd => "item_apply_end" ["repo", "node", "item", "duration", "status_code", "status_before", "status_after", "reason"],
    ActionRunStart => "action_run_start" ["repo", "node", "item"],
    ActionRunEnd => "action_run_end" ["repo", "node", "item", "duration", "status"],
    RunStart => "run_start" ["repo", "target", "nodes", "command"],
    RunEnd => "run_end" ["repo", "target", "nodes", "command", "duration"],
    NodeRunStart => "node_run_start" ["repo", "node", "command"],
    NodeRunEnd => "node_run_end" ["repo", "node", "command", "duration", "return_code", "stdout", "stderr"],
    LockAdd => "lock_add" ["repo", "node", "lock_id", "items", "expiry", "comment"],
    LockRemove => "lock_remove" ["repo", "node", "lock_id"],
    LockShow => "lock_show" ["repo", "node", "lock_info"],
    NodeSshConnect => "node_ssh_connect" ["repo", "node"],
    TestNode => "test_node" ["repo", "node"],
    Test => "test" ["repo"],
}

impl Event<'_> {
    /// The event's name: its hook point, or the `event` field of its JSON line, or (for a
    /// terminal-only [`Note`]) `note`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Report(r) => r.name(),
            Event::Note(_) => "note",
            e => e.hook_point().unwrap_or("note"),
        }
    }

    /// The event as one JSON object (`--json` output), from its serde payload; `None` for a
    /// terminal-only [`Note`].
    pub fn to_json(&self) -> Option<Value> {
        match self {
            Event::Report(r) => Some(r.to_json()),
            Event::Note(_) => None,
            e => Some(
                serde_json::to_value(e)
                    .unwrap_or_else(|err| json!({"event": "error", "message": err.to_string()})),
            ),
        }
    }

    /// The payload hooks get their arguments from: the same serde payload as the JSON line,
    /// but with nodes and items whole (as hooks see them), keyed by field name.
    pub fn hook_payload(&self) -> serde_json::Map<String, Value> {
        let value = ser::whole_while(|| serde_json::to_value(self));
        match value {
            Ok(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        }
    }
}

/// The payload field a hook argument is read from: the names are the same except where the
/// hook argument's name predates the JSON field's (`status_code` is `status` in JSON).
pub fn payload_field(argument: &str) -> &str {
    match argument {
        "status_code" => "status",
        other => other,
    }
}

/// Something that wants to hear about events (output, JSON, hooks).
pub trait Subscriber: Send + Sync {
    /// Called for every event, from whichever worker thread produced it.
    fn on_event(&self, event: &Event<'_>) -> Flow;

    /// Whether this subscriber failed in a way that must make the command exit 1 (a hook error
    /// at a point that does not stop the command).
    fn had_errors(&self) -> bool {
        false
    }

    /// Whether this subscriber reads the states an item result carries (`status_before`,
    /// `status_after`, `status_expected`): when no subscriber does, the executor does not
    /// build the public copy of an unchanged item's state (20,000 of them in a steady apply).
    fn reads_item_states(&self) -> bool {
        true
    }
}

impl<T: Subscriber> Subscriber for std::sync::Arc<T> {
    fn on_event(&self, event: &Event<'_>) -> Flow {
        T::on_event(self, event)
    }

    fn had_errors(&self) -> bool {
        T::had_errors(self)
    }

    fn reads_item_states(&self) -> bool {
        T::reads_item_states(self)
    }
}

/// The renderers of a bus (every subscriber but the hooks), shared with the hooks so that a
/// hook's own `log()` and error lines reach them as events while the hook runs inside an
/// emit: they never reach the hooks again, so a hook cannot recurse into hooks, and no lock is
/// held while a subscriber runs, so emitting from inside an emit cannot deadlock.
#[derive(Clone, Default)]
pub struct Outlet {
    /// Replaced whole when a renderer is added, so an emit holds the lock only to clone it.
    subscribers: std::sync::Arc<std::sync::Mutex<Renderers>>,
}

/// The renderers of an [`Outlet`], in the order they were added.
type Renderers = std::sync::Arc<[std::sync::Arc<dyn Subscriber>]>;

impl Outlet {
    /// An outlet with no renderers yet.
    pub fn new() -> Self {
        Outlet::default()
    }

    /// Adds a renderer (after the ones already there).
    pub fn add(&self, s: std::sync::Arc<dyn Subscriber>) {
        let mut list = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        let mut grown: Vec<std::sync::Arc<dyn Subscriber>> = list.iter().cloned().collect();
        grown.push(s);
        *list = grown.into();
    }

    /// The renderers now attached; the lock is released before any of them runs.
    fn snapshot(&self) -> Renderers {
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Delivers `event` to every renderer, in the order they were added; renderers never
    /// change the flow.
    pub fn emit(&self, event: &Event<'_>) {
        for s in self.snapshot().iter() {
            s.on_event(event);
        }
    }

    fn had_errors(&self) -> bool {
        self.snapshot().iter().any(|s| s.had_errors())
    }
}

/// Fans events out to every subscriber: the hooks first, then the renderers (its
/// [`Outlet`]), each in the order they were added.
#[derive(Default)]
pub struct Bus {
    hooks: Vec<Box<dyn Subscriber>>,
    outlet: Outlet,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Bus::default()
    }

    /// A bus whose renderers are `outlet`'s (hooks loaded with the same outlet emit their
    /// log and error lines to them).
    pub fn with_outlet(outlet: Outlet) -> Self {
        Bus {
            hooks: Vec::new(),
            outlet,
        }
    }

    /// Adds the repo's hooks: they hear every event before any renderer, and only they may
    /// change the flow of a command.
    pub fn subscribe_hooks(&mut self, s: Box<dyn Subscriber>) {
        self.hooks.push(s);
    }

    /// Adds a renderer (JSON lines, terminal output), after the hooks and the renderers
    /// already there; what it answers still counts in [`Bus::emit`] (tests stand in for hooks
    /// this way), but not for lines hooks emit on the [`Outlet`] themselves.
    pub fn subscribe(&mut self, s: Box<dyn Subscriber>) {
        self.outlet.add(std::sync::Arc::from(s));
    }

    /// The renderers, shared (see [`Outlet`]).
    pub fn outlet(&self) -> &Outlet {
        &self.outlet
    }

    /// Delivers `event` to every subscriber; the first non-`Continue` answer wins, but every
    /// subscriber still hears the event.
    pub fn emit(&self, event: &Event<'_>) -> Flow {
        let mut flow = Flow::Continue;
        for s in &self.hooks {
            let f = s.on_event(event);
            if flow == Flow::Continue {
                flow = f;
            }
        }
        for s in self.outlet.snapshot().iter() {
            let f = s.on_event(event);
            if flow == Flow::Continue {
                flow = f;
            }
        }
        flow
    }

    /// Whether any subscriber reads item states (see [`Subscriber::reads_item_states`]).
    pub fn reads_item_states(&self) -> bool {
        self.hooks.iter().any(|s| s.reads_item_states())
            || self.outlet.snapshot().iter().any(|s| s.reads_item_states())
    }

    /// Whether any subscriber failed (see [`Subscriber::had_errors`]): commands exit 1 if so.
    pub fn had_errors(&self) -> bool {
        self.hooks.iter().any(|s| s.had_errors()) || self.outlet.had_errors()
    }
}

/// Drift attribution of one verify item: what changed since the last apply recorded on the
/// node, so a dashboard can tell hand edits from repo changes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Drift {
    /// The item's state on the node differs from its state right after that apply.
    pub node_changed: bool,
    /// The repo's expected state differs from what that apply applied.
    pub repo_changed: bool,
    /// Who applied (node-controlled text).
    pub applied_by: String,
    /// When, RFC 3339 UTC.
    pub applied_at: String,
}

/// The JSON-only lines commands emit besides the hook events above (as [`Event::Report`]),
/// each described once here (serde) instead of being built by hand at the call site: the
/// `event` field names the kind, the other fields follow in declaration order.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Report<'a> {
    /// apply: a hook's `skip_node` at `node_apply_start`.
    NodeSkipped { node: &'a str, reason: &'a str },
    /// verify: one item's verdict.
    ItemVerify {
        node: &'a str,
        item: &'a str,
        bundle: &'a str,
        /// `would_change` or `ok`.
        status: &'a str,
        change: Option<&'a str>,
        reason: Option<&'a str>,
        status_before: Option<&'a Value>,
        status_expected: Option<&'a Value>,
        /// Why it drifted, against the node's record of the last apply (`null`: no record).
        drift: Option<&'a Drift>,
    },
    /// test: a hook lint finding (never fatal).
    TestWarning {
        file: Option<String>,
        line: Option<usize>,
        column: Option<usize>,
        message: &'a str,
        hint: Option<&'a str>,
    },
    /// test: one problem, with every node it was found on.
    TestProblem {
        file: Option<String>,
        line: Option<usize>,
        column: Option<usize>,
        message: &'a str,
        hint: Option<&'a str>,
        nodes: &'a [String],
    },
    /// test: the closing counts.
    TestSummary {
        nodes: usize,
        nodes_with_problems: usize,
        items: usize,
        problems: usize,
    },
    /// run: the closing line (`cinch report` reads its rows back).
    #[serde(rename = "summary")]
    RunSummary {
        command: &'a str,
        nodes: usize,
        failed: usize,
        interrupted: bool,
        /// Seconds.
        duration: f64,
        exit_code: u8,
        rows: &'a [crate::output::run::RunRow],
    },
    /// apply and verify: the closing line (the terminal shows it as the summary table).
    #[serde(rename = "summary")]
    ApplySummary(&'a ApplySummary),
    /// lock add, show or remove: the closing line.
    #[serde(rename = "summary")]
    LockSummary {
        command: &'a str,
        nodes: usize,
        failed: bool,
        interrupted: bool,
        exit_code: u8,
    },
    /// run: how one node's command ended.
    NodeResult {
        node: &'a str,
        return_code: Option<i32>,
        timed_out: bool,
        ok: bool,
        note: &'a str,
        /// Seconds.
        duration: f64,
    },
    /// run: one line a node's command printed (`stream`: stdout or stderr).
    Output {
        node: &'a str,
        stream: &'a str,
        line: &'a str,
    },
    /// lock add: the lock written on a node.
    LockAdded {
        node: &'a str,
        lock: &'a crate::lock::SoftLock,
        created: String,
        expires: String,
    },
    /// lock show: one lock found on a node.
    Lock {
        node: &'a str,
        lock: &'a crate::lock::SoftLock,
        created: String,
        expires: String,
    },
    /// lock remove: the lock removed from a node.
    LockRemoved { node: &'a str, lock_id: &'a str },
    /// lock: a node skipped, failed or interrupted.
    LockNode {
        node: &'a str,
        status: &'a str,
        reason: Option<&'a str>,
    },
    /// A hook failed (file and position of the failure).
    HookError {
        hook: &'a str,
        file: &'a std::path::Path,
        line: usize,
        column: usize,
        message: &'a str,
    },
    /// A hook called `log(text)`.
    HookLog {
        file: Option<&'a str>,
        message: &'a str,
    },
    /// Something went wrong outside an item or node (`exit_code` when the command ends on it).
    Error {
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<u8>,
    },
}

/// apply's and verify's closing line: per-node and total counts, the table's rows, and how
/// the command ended. The changed count is keyed `fixed` for apply and `would_change` for
/// verify.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApplySummary {
    /// `apply` or `verify`.
    pub command: &'static str,
    pub nodes: Vec<ApplyNodeCounts>,
    pub total: ApplyTotal,
    /// The summary table's rows (`cinch report` reads them back).
    pub rows: Vec<crate::output::apply::ApplyRow>,
    /// `--stats`: the table shows commands and bytes.
    pub stats: bool,
    pub interrupted: bool,
    pub exit_code: u8,
}

/// The items changed (apply) or that would change (verify), under the command's own key.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub enum Changed {
    #[serde(rename = "fixed")]
    Fixed(usize),
    #[serde(rename = "would_change")]
    WouldChange(usize),
}

/// One node's counts in [`ApplySummary`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApplyNodeCounts {
    pub node: String,
    pub items: usize,
    pub ok: usize,
    #[serde(flatten)]
    pub changed: Changed,
    pub skipped: usize,
    pub failed: usize,
    /// Seconds.
    pub duration: f64,
    pub error: Option<String>,
    pub commands: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Why the rollout left the node alone (`--max-fail`, `--resume-file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The fleet's totals in [`ApplySummary`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApplyTotal {
    pub nodes: usize,
    pub items: usize,
    pub ok: usize,
    #[serde(flatten)]
    pub changed: Changed,
    pub skipped: usize,
    pub failed: usize,
    pub commands: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl ApplySummary {
    /// The summary of the table `rows` (`verify`: changed items are would-change).
    pub fn new(
        rows: Vec<crate::output::apply::ApplyRow>,
        verify: bool,
        stats: bool,
        interrupted: bool,
        exit_code: u8,
    ) -> Self {
        let changed = |n| {
            if verify {
                Changed::WouldChange(n)
            } else {
                Changed::Fixed(n)
            }
        };
        let nodes = rows
            .iter()
            .map(|r| ApplyNodeCounts {
                node: r.node.clone(),
                items: r.items,
                ok: r.ok,
                changed: changed(r.fixed),
                skipped: r.skipped,
                failed: r.failed,
                duration: r.duration,
                error: r.error.clone(),
                commands: r.commands,
                bytes_sent: r.bytes_sent,
                bytes_received: r.bytes_received,
                note: r.note.clone(),
            })
            .collect();
        let sum = |f: fn(&crate::output::apply::ApplyRow) -> u64| rows.iter().map(f).sum::<u64>();
        let total = ApplyTotal {
            nodes: rows.len(),
            items: rows.iter().map(|r| r.items).sum(),
            ok: rows.iter().map(|r| r.ok).sum(),
            changed: changed(rows.iter().map(|r| r.fixed).sum()),
            skipped: rows.iter().map(|r| r.skipped).sum(),
            failed: rows.iter().map(|r| r.failed).sum(),
            commands: sum(|r| r.commands),
            bytes_sent: sum(|r| r.bytes_sent),
            bytes_received: sum(|r| r.bytes_received),
        };
        ApplySummary {
            command: if verify { "verify" } else { "apply" },
            nodes,
            total,
            rows,
            stats,
            interrupted,
            exit_code,
        }
    }

    /// Whether this is verify's summary.
    pub fn verify(&self) -> bool {
        self.command == "verify"
    }
}

impl Report<'_> {
    /// The line's `event` field.
    pub fn name(&self) -> &'static str {
        match self {
            Report::NodeSkipped { .. } => "node_skipped",
            Report::ItemVerify { .. } => "item_verify",
            Report::TestWarning { .. } => "test_warning",
            Report::TestProblem { .. } => "test_problem",
            Report::TestSummary { .. } => "test_summary",
            Report::RunSummary { .. } | Report::ApplySummary(_) | Report::LockSummary { .. } => {
                "summary"
            }
            Report::NodeResult { .. } => "node_result",
            Report::Output { .. } => "output",
            Report::LockAdded { .. } => "lock_added",
            Report::Lock { .. } => "lock",
            Report::LockRemoved { .. } => "lock_removed",
            Report::LockNode { .. } => "lock_node",
            Report::HookError { .. } => "hook_error",
            Report::HookLog { .. } => "hook_log",
            Report::Error { .. } => "error",
        }
    }

    /// The JSON line's value.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self)
            .unwrap_or_else(|e| json!({"event": "error", "message": e.to_string()}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_json_lines_keep_their_bytes_when_built_from_report() {
        let nodes = vec!["web1".to_string(), "web2".to_string()];
        let problem = Report::TestProblem {
            file: Some("nodes.toml".into()),
            line: Some(2),
            column: None,
            message: "bad \"port\"",
            hint: None,
            nodes: &nodes,
        };
        assert_eq!(
            problem.to_json().to_string(),
            r#"{"event":"test_problem","file":"nodes.toml","line":2,"column":null,"message":"bad \"port\"","hint":null,"nodes":["web1","web2"]}"#
        );
        let warning = Report::TestWarning {
            file: None,
            line: None,
            column: None,
            message: "m",
            hint: Some("h"),
        };
        assert_eq!(
            warning.to_json().to_string(),
            r#"{"event":"test_warning","file":null,"line":null,"column":null,"message":"m","hint":"h"}"#
        );
        let summary = Report::TestSummary {
            nodes: 3,
            nodes_with_problems: 1,
            items: 7,
            problems: 2,
        };
        assert_eq!(
            summary.to_json().to_string(),
            r#"{"event":"test_summary","nodes":3,"nodes_with_problems":1,"items":7,"problems":2}"#
        );
    }

    #[test]
    fn error_lines_keep_their_bytes_when_built_from_report() {
        let plain = Report::Error {
            message: "no \"x\"",
            exit_code: None,
        };
        assert_eq!(
            plain.to_json().to_string(),
            r#"{"event":"error","message":"no \"x\""}"#
        );
        let fatal = Report::Error {
            message: "m",
            exit_code: Some(2),
        };
        assert_eq!(
            fatal.to_json().to_string(),
            r#"{"event":"error","message":"m","exit_code":2}"#
        );
    }

    #[test]
    fn apply_and_verify_summaries_keep_their_bytes_when_built_from_serde() {
        let row = |node: &str, note: Option<&str>| crate::output::apply::ApplyRow {
            node: node.into(),
            items: 3,
            ok: 1,
            fixed: 2,
            skipped: 0,
            failed: 0,
            duration: 0.5,
            error: None,
            commands: 1,
            bytes_sent: 10,
            bytes_received: 20,
            note: note.map(String::from),
        };
        let rows = vec![row("web1", None), row("web2", Some("already done"))];
        let rows_json = serde_json::to_string(&rows).unwrap_or_default();
        let node = |name: &str, key: &str, note: &str| {
            format!(
                r#"{{"node":"{name}","items":3,"ok":1,"{key}":2,"skipped":0,"failed":0,"duration":0.5,"error":null,"commands":1,"bytes_sent":10,"bytes_received":20{note}}}"#
            )
        };
        for (verify, command, key, code) in [
            (false, "apply", "fixed", 0),
            (true, "verify", "would_change", 1),
        ] {
            let summary = ApplySummary::new(rows.clone(), verify, true, false, code);
            assert_eq!(summary.verify(), verify);
            let line = Event::Report(Report::ApplySummary(&summary)).to_json();
            let expected = format!(
                r#"{{"event":"summary","command":"{command}","nodes":[{},{}],"total":{{"nodes":2,"items":6,"ok":2,"{key}":4,"skipped":0,"failed":0,"commands":2,"bytes_sent":20,"bytes_received":40}},"rows":{rows_json},"stats":true,"interrupted":false,"exit_code":{code}}}"#,
                node("web1", key, ""),
                node("web2", key, r#","note":"already done""#),
            );
            assert_eq!(line.map(|l| l.to_string()), Some(expected));
        }
    }

    #[test]
    fn terminal_notes_are_no_json_line_and_no_hook_point() {
        let note = Event::Note(Note::NodeFinished { node: "web1" });
        assert_eq!(note.to_json(), None);
        assert_eq!(note.hook_point(), None);
        let output = Event::Report(Report::Output {
            node: "web1",
            stream: "stdout",
            line: "hi",
        });
        assert_eq!(output.hook_point(), None);
        assert_eq!(output.name(), "output");
        assert_eq!(
            output.to_json().map(|l| l.to_string()),
            Some(r#"{"event":"output","node":"web1","stream":"stdout","line":"hi"}"#.into())
        );
    }

    #[test]
    fn run_and_lock_summaries_keep_their_bytes_when_built_from_report() {
        let rows = vec![crate::output::run::RunRow {
            node: "web1".into(),
            return_code: Some(0),
            duration: 0.5,
            note: String::new(),
            ok: true,
        }];
        let run = Report::RunSummary {
            command: "run",
            nodes: 1,
            failed: 0,
            interrupted: false,
            duration: 1.5,
            exit_code: 0,
            rows: &rows,
        };
        assert_eq!(
            run.to_json().to_string(),
            r#"{"event":"summary","command":"run","nodes":1,"failed":0,"interrupted":false,"duration":1.5,"exit_code":0,"rows":[{"node":"web1","return_code":0,"duration":0.5,"note":"","ok":true}]}"#
        );
        let lock = Report::LockSummary {
            command: "lock show",
            nodes: 2,
            failed: true,
            interrupted: false,
            exit_code: 1,
        };
        assert_eq!(
            lock.to_json().to_string(),
            r#"{"event":"summary","command":"lock show","nodes":2,"failed":true,"interrupted":false,"exit_code":1}"#
        );
    }

    /// Records the names of the events it hears; as a hook, it logs (emits a `hook_log` on
    /// the outlet) while it is being dispatched, as a hook's `log()` does.
    struct Recorder {
        heard: std::sync::Mutex<Vec<String>>,
        log_to: Option<Outlet>,
    }

    impl Subscriber for Recorder {
        fn on_event(&self, event: &Event<'_>) -> Flow {
            self.heard
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(event.name().to_string());
            if let (Some(outlet), Some(point)) = (&self.log_to, event.hook_point()) {
                outlet.emit(&Event::Report(Report::HookLog {
                    file: Some("a.rhai"),
                    message: point,
                }));
            }
            Flow::Continue
        }
    }

    #[test]
    fn a_hook_logging_while_dispatched_reaches_the_renderers_without_deadlock_or_recursion() {
        let outlet = Outlet::new();
        let renderer = std::sync::Arc::new(Recorder {
            heard: Default::default(),
            log_to: None,
        });
        outlet.add(renderer.clone());
        let hook = std::sync::Arc::new(Recorder {
            heard: Default::default(),
            log_to: Some(outlet.clone()),
        });
        let mut bus = Bus::with_outlet(outlet);
        bus.subscribe_hooks(Box::new(hook.clone()));
        // From several threads at once, as node workers emit.
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| bus.emit(&Event::Test));
            }
        });
        let hook_heard = hook.heard.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(
            hook_heard, ["test"; 4],
            "the hook never hears its own log lines"
        );
        let heard = renderer
            .heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        assert_eq!(heard.len(), 8, "{heard:?}");
        assert_eq!(heard.iter().filter(|n| *n == "hook_log").count(), 4);
        // A renderer added later hears what comes after, and after the ones before it.
        let late = std::sync::Arc::new(Recorder {
            heard: Default::default(),
            log_to: None,
        });
        bus.subscribe(Box::new(late.clone()));
        bus.emit(&Event::Report(Report::Output {
            node: "web1",
            stream: "stdout",
            line: "hi",
        }));
        let late_heard = late.heard.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(late_heard, ["output"]);
    }
}
