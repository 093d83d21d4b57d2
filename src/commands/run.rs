//! `cinch run`: one shell command on many nodes, output prefixed by node.
//!
//! Nodes run on a bounded set of plain threads (`-p`, [`crate::fanout`]): each blocks on its
//! node's transport, and the ssh transport multiplexes them over its own small tokio runtime. Output arrives
//! in chunks; each node keeps a line buffer per stream so only whole lines are emitted: each
//! line as an `output` event (JSON), each chunk of whole lines as one
//! [`Note::RunOutput`], which the terminal renderer ([`crate::render::run`]) prints in one
//! write under the console lock, so lines of different nodes never mix. This module prints
//! nothing itself.

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::events::{Bus, Event, Flow, Note, Report};
use crate::fleet::{Fleet, NotContacted, Slot};
use crate::output::run::RunRow;
use crate::repo::Node;
use crate::settings::{RunSettings, Settings};
use crate::transport::{Command, Stream, TransportError};

/// A partial line longer than this is printed anyway, so a newline-free stream still shows.
const MAX_PENDING_LINE: usize = 64 * 1024;

/// Runs `cinch run`.
pub fn cmd_run(ctx: &Settings, args: &RunSettings) -> Result<u8> {
    let repo = ctx.load_repo()?;
    let nodes = crate::shard::filter(repo.select(&args.target)?, args.shard, |n| &n.name);
    let mut bus = crate::hooks::command_bus(&ctx.console, &repo, true)?;
    let width = nodes
        .iter()
        .map(|n| n.name.chars().count())
        .max()
        .unwrap_or(0);
    bus.subscribe(Box::new(crate::render::run::RunRenderer::new(
        ctx.console.clone(),
        width,
    )));
    let plan = RunPlan {
        target: &args.target,
        command: &args.command,
        timeout: args.timeout,
        rollout: &args.rollout,
    };
    let workers = crate::limits::cap_node_workers(
        args.node_workers.resolve(repo.settings.node_workers),
        nodes.len(),
        &ctx.console,
    );
    let fleet = Fleet::new(&bus, ctx.connect_options(&repo), workers);
    Ok(run_on(&fleet, &nodes, &plan))
}

/// Everything `run` needs besides the nodes, validated up front.
pub struct RunPlan<'a> {
    pub target: &'a str,
    pub command: &'a str,
    pub timeout: Option<Duration>,
    pub rollout: &'a crate::fleet::Rollout,
}

/// How one node's run ended.
#[derive(Debug, Clone)]
pub enum NodeOutcome {
    /// The command ran; `None` when it was stopped (timeout, second Ctrl-C).
    Finished { code: Option<i32>, timed_out: bool },
    /// The node could not be reached; what ssh said.
    Unreachable(String),
    /// A hook or an error stopped the node before the command ran.
    Failed(String),
    /// Not run, and not a failure: dummy node or `skip_node()`.
    Skipped(String),
    /// Ctrl-C came before this node started.
    NotStarted,
    /// `--max-fail`: too many nodes had failed when this one's turn came.
    BudgetSpent,
    /// `--resume-file` lists this node as done.
    AlreadyDone,
}

impl NodeOutcome {
    fn ok(&self) -> bool {
        matches!(
            self,
            NodeOutcome::Finished { code: Some(0), .. }
                | NodeOutcome::Skipped(_)
                | NodeOutcome::AlreadyDone
        )
    }

    fn note(&self) -> String {
        match self {
            NodeOutcome::Finished {
                timed_out: true, ..
            } => "timed out, stopped".into(),
            NodeOutcome::Finished { code: None, .. } => "stopped".into(),
            NodeOutcome::Finished { .. } => String::new(),
            NodeOutcome::Unreachable(r) => format!("unreachable: {r}"),
            NodeOutcome::Failed(r) => format!("failed: {r}"),
            NodeOutcome::Skipped(r) => format!("skipped: {r}"),
            NodeOutcome::NotStarted => "not started (interrupted)".into(),
            NodeOutcome::BudgetSpent => crate::fleet::NOTE_BUDGET_SPENT.into(),
            NodeOutcome::AlreadyDone => crate::fleet::NOTE_ALREADY_DONE.into(),
        }
    }
}

/// Runs the plan on `nodes`, emitting what happens on the fleet's bus as it goes; returns the
/// exit code.
pub fn run_on(fleet: &Fleet<'_>, nodes: &[&Node], plan: &RunPlan<'_>) -> u8 {
    let bus = fleet.bus;
    let started = Instant::now();
    if let Flow::Abort(reason) = bus.emit(&Event::RunStart {
        target: plan.target,
        nodes,
        command: plan.command,
    }) {
        report_error(bus, &format!("run aborted by a hook: {reason}"));
        return 1;
    }
    // First Ctrl-C: start nothing new, let running nodes finish.
    let rolled = fleet.roll(
        nodes,
        plan.rollout,
        |n| &n.name,
        |(outcome, _): &(NodeOutcome, Duration)| outcome.ok(),
        |node| {
            let t0 = Instant::now();
            let outcome = run_node(fleet, node, plan);
            (outcome, t0.elapsed())
        },
    );
    let rolled = match rolled {
        Ok(r) => r,
        Err(e) => {
            report_error(bus, &e.to_string());
            return 2;
        }
    };
    if let Some(e) = &rolled.resume_error {
        report_error(bus, e);
    }
    let results: Vec<(NodeOutcome, Duration)> = rolled
        .slots
        .into_iter()
        .map(|slot| match slot {
            Slot::Done(r) => r,
            Slot::Interrupted => (NodeOutcome::NotStarted, Duration::ZERO),
            Slot::BudgetSpent => (NodeOutcome::BudgetSpent, Duration::ZERO),
            Slot::AlreadyDone => (NodeOutcome::AlreadyDone, Duration::ZERO),
        })
        .collect();
    bus.emit(&Event::RunEnd {
        target: plan.target,
        nodes,
        command: plan.command,
        duration: started.elapsed(),
    });

    let mut rows = Vec::new();
    let mut failed = 0;
    for (node, res) in nodes.iter().zip(&results) {
        let (outcome, dur) = res.clone();
        if matches!(outcome, NodeOutcome::BudgetSpent | NodeOutcome::AlreadyDone) {
            bus.emit(&Event::Report(Report::NodeResult {
                node: &node.name,
                return_code: None,
                timed_out: false,
                ok: outcome.ok(),
                note: &outcome.note(),
                duration: 0.0,
            }));
        }
        if !outcome.ok() {
            failed += 1;
        }
        rows.push(RunRow {
            node: node.name.clone(),
            return_code: match outcome {
                NodeOutcome::Finished { code, .. } => code,
                _ => None,
            },
            duration: dur.as_secs_f64(),
            note: outcome.note(),
            ok: outcome.ok(),
        });
    }
    let interrupted = crate::interrupt::requested();
    let code = if interrupted {
        130
    } else if failed > 0 || bus.had_errors() || rolled.resume_error.is_some() {
        1
    } else {
        0
    };
    bus.emit(&Event::Report(Report::RunSummary {
        command: "run",
        nodes: nodes.len(),
        failed,
        interrupted,
        duration: started.elapsed().as_secs_f64(),
        exit_code: code,
        rows: &rows,
    }));
    code
}

/// An error line: an `error` line for JSON, and the same as a terminal line.
fn report_error(bus: &Bus, msg: &str) {
    bus.emit(&Event::Report(Report::Error {
        message: msg,
        exit_code: None,
    }));
    bus.emit(&Event::Note(Note::ErrorLine {
        text: &format!("error: {msg}"),
    }));
}

fn run_node(fleet: &Fleet<'_>, node: &Node, plan: &RunPlan<'_>) -> NodeOutcome {
    if node.dummy {
        fleet
            .bus
            .emit(&Event::Note(Note::DummySkipped { node: &node.name }));
        return NodeOutcome::Skipped("dummy node".into());
    }
    // Hooks see the node's metadata, which is not what the repo means while it conflicts.
    if let Some(reason) = node.problem_summary() {
        report_error(fleet.bus, &format!("{}: {reason}", node.name));
        return NodeOutcome::Failed(reason);
    }
    if let Err(reason) = fleet.start(&Event::NodeRunStart {
        node,
        command: plan.command,
    }) {
        return NodeOutcome::Skipped(reason);
    }
    let t0 = Instant::now();
    let mut printer = NodeOutput::new(fleet.bus, &node.name);
    let outcome = execute(fleet, node, plan, &mut printer);
    printer.finish();
    if let NodeOutcome::Unreachable(_) | NodeOutcome::Failed(_) = &outcome {
        report_error(fleet.bus, &format!("{}: {}", node.name, outcome.note()));
    }
    let code = match &outcome {
        NodeOutcome::Finished { code, .. } => *code,
        _ => None,
    };
    fleet.bus.emit(&Event::NodeRunEnd {
        node,
        command: plan.command,
        duration: t0.elapsed(),
        return_code: code,
        stdout: &printer.stdout,
        stderr: &printer.stderr,
    });
    fleet.bus.emit(&Event::Report(Report::NodeResult {
        node: &node.name,
        return_code: code,
        timed_out: matches!(
            outcome,
            NodeOutcome::Finished {
                timed_out: true,
                ..
            }
        ),
        ok: outcome.ok(),
        note: &outcome.note(),
        duration: t0.elapsed().as_secs_f64(),
    }));
    outcome
}

fn execute(
    fleet: &Fleet<'_>,
    node: &Node,
    plan: &RunPlan<'_>,
    printer: &mut NodeOutput<'_>,
) -> NodeOutcome {
    let t = match fleet.open(node) {
        Ok(t) => t,
        Err(NotContacted::Dummy) => return NodeOutcome::Skipped("dummy node".into()),
        Err(NotContacted::Refused(reason)) => return NodeOutcome::Failed(reason),
    };
    // Only ssh's own refusal means the node is unreachable; running out of descriptors or
    // processes here is this machine's problem and says so.
    match t.connect() {
        Err(TransportError::Connect { reason, .. }) => return NodeOutcome::Unreachable(reason),
        Err(e) => return NodeOutcome::Failed(e.reason()),
        Ok(()) => {}
    }
    let cmd = Command {
        script: plan.command.to_string(),
        stdin: None,
        timeout: plan.timeout,
        cleanup: false,
    };
    let res = t.run_streaming(&cmd, &mut |s, b| printer.feed(s, b));
    // Closing can only fail to tidy up; the command's result stands.
    let _ = t.close();
    match res {
        Ok(out) => NodeOutcome::Finished {
            code: out.status,
            timed_out: out.timed_out,
        },
        Err(TransportError::Connect { reason, .. }) => NodeOutcome::Unreachable(reason),
        Err(e) => NodeOutcome::Failed(e.reason()),
    }
}

/// Emits one node's output as whole lines, and keeps it for `node_run_end`.
struct NodeOutput<'a> {
    /// Where the lines go, as events.
    bus: &'a Bus,
    name: &'a str,
    pending_out: Vec<u8>,
    pending_err: Vec<u8>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl<'a> NodeOutput<'a> {
    fn new(bus: &'a Bus, name: &'a str) -> Self {
        NodeOutput {
            bus,
            name,
            pending_out: Vec::new(),
            pending_err: Vec::new(),
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }

    fn feed(&mut self, stream: Stream, bytes: &[u8]) {
        let (pending, all) = match stream {
            Stream::Stdout => (&mut self.pending_out, &mut self.stdout),
            Stream::Stderr => (&mut self.pending_err, &mut self.stderr),
        };
        all.extend_from_slice(bytes);
        pending.extend_from_slice(bytes);
        let cut = match pending.iter().rposition(|&b| b == b'\n') {
            Some(nl) => nl + 1,
            None if pending.len() > MAX_PENDING_LINE => pending.len(),
            None => return,
        };
        let complete: Vec<u8> = pending.drain(..cut).collect();
        self.emit(stream, &complete);
    }

    fn finish(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = match stream {
                Stream::Stdout => std::mem::take(&mut self.pending_out),
                Stream::Stderr => std::mem::take(&mut self.pending_err),
            };
            if !rest.is_empty() {
                self.emit(stream, &rest);
            }
        }
    }

    /// Emits `bytes` (whole lines, or a last partial one): each line for JSON, the chunk for
    /// the terminal (one write).
    fn emit(&self, stream: Stream, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let lines = text.strip_suffix('\n').unwrap_or(&text).split('\n');
        let name = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        for line in lines {
            self.bus.emit(&Event::Report(Report::Output {
                node: self.name,
                stream: name,
                line,
            }));
        }
        self.bus.emit(&Event::Note(Note::RunOutput {
            node: self.name,
            stream: name,
            text: &text,
        }));
    }
}
