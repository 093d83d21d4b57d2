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

/// One lifecycle point (hooks-examples/README.md). Borrowed, so emitting costs no copies.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    ApplyStart {
        target: &'a str,
        nodes: &'a [&'a Node],
        interactive: bool,
    },
    ApplyEnd {
        target: &'a str,
        nodes: &'a [&'a Node],
        duration: Duration,
    },
    NodeApplyStart {
        node: &'a Node,
        interactive: bool,
    },
    NodeApplyEnd {
        node: &'a Node,
        duration: Duration,
        interactive: bool,
        result: &'a NodeResult,
    },
    ItemApplyStart {
        node: &'a Node,
        item: &'a Item,
    },
    ItemApplyEnd {
        node: &'a Node,
        item: &'a Item,
        duration: Duration,
        status: ItemStatus,
        status_before: Option<&'a Value>,
        status_after: Option<&'a Value>,
        /// Skip reason or failure message.
        reason: Option<&'a str>,
    },
    ActionRunStart {
        node: &'a Node,
        item: &'a Item,
    },
    ActionRunEnd {
        node: &'a Node,
        item: &'a Item,
        duration: Duration,
        status: ItemStatus,
    },
    RunStart {
        target: &'a str,
        nodes: &'a [&'a Node],
        command: &'a str,
    },
    RunEnd {
        target: &'a str,
        nodes: &'a [&'a Node],
        command: &'a str,
        duration: Duration,
    },
    NodeRunStart {
        node: &'a Node,
        command: &'a str,
    },
    NodeRunEnd {
        node: &'a Node,
        command: &'a str,
        duration: Duration,
        return_code: Option<i32>,
        stdout: &'a [u8],
        stderr: &'a [u8],
    },
    LockAdd {
        node: &'a Node,
        lock_id: &'a str,
        items: &'a [String],
        expiry: i64,
        comment: &'a str,
    },
    LockRemove {
        node: &'a Node,
        lock_id: &'a str,
    },
    LockShow {
        node: &'a Node,
        lock_info: &'a Value,
    },
    NodeSshConnect {
        node: &'a Node,
    },
    TestNode {
        node: &'a Node,
    },
    Test,
}

/// Declares every hook point once — the `Event` variant, its hook function name and its
/// argument names — and generates [`Event::name`] and [`HOOK_POINTS`] from that one list.
macro_rules! hook_points {
    ($($variant:ident => $name:literal [$($arg:literal),* $(,)?],)*) => {
        impl Event<'_> {
            /// The hook function name for this point.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Event::$variant { .. } => $name,)*
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
    /// The event as one JSON object (`--json` output); hooks get the same fields.
    pub fn to_json(&self) -> Value {
        let names = |nodes: &[&Node]| nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
        let secs = |d: &Duration| d.as_secs_f64();
        let body = match self {
            Event::ApplyStart {
                target,
                nodes,
                interactive,
            } => {
                json!({"target": target, "nodes": names(nodes), "interactive": interactive})
            }
            Event::ApplyEnd {
                target,
                nodes,
                duration,
            } => {
                json!({"target": target, "nodes": names(nodes), "duration": secs(duration)})
            }
            Event::NodeApplyStart { node, interactive } => {
                json!({"node": node.name, "interactive": interactive})
            }
            Event::NodeApplyEnd {
                node,
                duration,
                interactive,
                result,
            } => json!({
                "node": node.name, "duration": secs(duration), "interactive": interactive, "result": result
            }),
            Event::ItemApplyStart { node, item } | Event::ActionRunStart { node, item } => {
                json!({"node": node.name, "item": item.id, "bundle": item.bundle})
            }
            Event::ItemApplyEnd {
                node,
                item,
                duration,
                status,
                status_before,
                status_after,
                reason,
            } => json!({
                "node": node.name, "item": item.id, "bundle": item.bundle, "duration": secs(duration),
                "status": status, "status_before": status_before, "status_after": status_after, "reason": reason,
            }),
            Event::ActionRunEnd {
                node,
                item,
                duration,
                status,
            } => json!({
                "node": node.name, "item": item.id, "bundle": item.bundle, "duration": secs(duration), "status": status
            }),
            Event::RunStart {
                target,
                nodes,
                command,
            } => {
                json!({"target": target, "nodes": names(nodes), "command": command})
            }
            Event::RunEnd {
                target,
                nodes,
                command,
                duration,
            } => json!({
                "target": target, "nodes": names(nodes), "command": command, "duration": secs(duration)
            }),
            Event::NodeRunStart { node, command } => json!({"node": node.name, "command": command}),
            Event::NodeRunEnd {
                node,
                command,
                duration,
                return_code,
                stdout,
                stderr,
            } => json!({
                "node": node.name, "command": command, "duration": secs(duration), "return_code": return_code,
                "stdout": String::from_utf8_lossy(stdout), "stderr": String::from_utf8_lossy(stderr),
            }),
            Event::LockAdd {
                node,
                lock_id,
                items,
                expiry,
                comment,
            } => json!({
                "node": node.name, "lock_id": lock_id, "items": items, "expiry": expiry, "comment": comment
            }),
            Event::LockRemove { node, lock_id } => json!({"node": node.name, "lock_id": lock_id}),
            Event::LockShow { node, lock_info } => {
                json!({"node": node.name, "lock_info": lock_info})
            }
            Event::NodeSshConnect { node } | Event::TestNode { node } => json!({"node": node.name}),
            Event::Test => json!({}),
        };
        let mut obj = json!({"event": self.name()});
        if let (Some(o), Value::Object(b)) = (obj.as_object_mut(), body) {
            o.extend(b);
        }
        obj
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
}

/// Fans events out to every subscriber, in the order they were added.
#[derive(Default)]
pub struct Bus {
    subscribers: Vec<Box<dyn Subscriber>>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Bus::default()
    }

    /// Adds a subscriber.
    pub fn subscribe(&mut self, s: Box<dyn Subscriber>) {
        self.subscribers.push(s);
    }

    /// Delivers `event` to every subscriber; the first non-`Continue` answer wins, but every
    /// subscriber still hears the event.
    pub fn emit(&self, event: &Event<'_>) -> Flow {
        let mut flow = Flow::Continue;
        for s in &self.subscribers {
            let f = s.on_event(event);
            if flow == Flow::Continue {
                flow = f;
            }
        }
        flow
    }

    /// Whether any subscriber failed (see [`Subscriber::had_errors`]): commands exit 1 if so.
    pub fn had_errors(&self) -> bool {
        self.subscribers.iter().any(|s| s.had_errors())
    }
}

/// The JSON-only lines commands print besides the hook events above, each described once
/// here (serde) instead of being built by hand at the call site: the `event` field names the
/// kind, the other fields follow in declaration order.
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

#[derive(Debug, serde::Serialize)]
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

impl Report<'_> {
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
}
