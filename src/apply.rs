//! `cinch apply` and `cinch verify`: orchestration of the item engine over nodes.
//!
//! Everything that can be checked locally (items parse, dependencies resolve, templates
//! render) is checked for every selected node before any node is touched, so a repo mistake
//! never leaves a partial apply. Then nodes run in parallel; each node's work is one
//! [`executor::run`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use console::style;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde_json::json;

use crate::cli::{ApplyArgs, Context, SelectArgs, VerifyArgs};
use crate::console::{Console, Reply};
use crate::diag::Diagnostic;
use crate::error::{Error, Result};
use crate::events::{Bus, Event, Flow, ItemStatus, NodeResult};
use crate::executor::{
    self, Answer, Graph, ItemReport, Job, Mode, NodeRun, Options, Outcome, Sink,
};
use crate::items::Item;
use crate::items::state::Local;
use crate::output::{Lines, untrusted};
use crate::plan::Plan;
use crate::repo::{Node, Repo};

/// Diffs of text files larger than this are shown as sizes and hashes.
const DIFF_LIMIT: u64 = 1 << 20;

/// Runs `cinch apply`.
pub fn cmd_apply(ctx: &Context, args: &ApplyArgs) -> Result<u8> {
    run(ctx, &args.select, Mode::Apply, args.interactive, args.force)
}

/// Runs `cinch verify`.
pub fn cmd_verify(ctx: &Context, args: &VerifyArgs) -> Result<u8> {
    run(ctx, &args.select, Mode::Verify, false, false)
}

/// Who we are in locks, and whether `--force` overrides a held hard lock.
struct Locking {
    me: String,
    force: bool,
}

/// One node's locally prepared work.
struct Prepared<'r> {
    node: &'r Node,
    graph: Graph,
    locals: Vec<Local>,
    options: Options,
    /// Why this node cannot run at all (its own metadata is broken): a failed row in the
    /// table, while the other selected nodes run.
    broken: Option<String>,
}

impl<'r> Prepared<'r> {
    /// A node whose own problems keep it from running; nothing is prepared for it.
    fn broken(node: &'r Node, mode: Mode, item_workers: usize) -> Self {
        let reason = node.problem_summary().unwrap_or_default();
        Prepared {
            node,
            graph: Graph::new(Vec::new()),
            locals: Vec::new(),
            options: Options {
                mode,
                interactive: false,
                item_workers,
                only: None,
                skip: Vec::new(),
                diffs: false,
            },
            broken: Some(reason),
        }
    }
}

fn prepare<'r>(
    repo: &'r Repo,
    node: &'r Node,
    select: &SelectArgs,
    mode: Mode,
    interactive: bool,
    item_workers: usize,
) -> std::result::Result<Prepared<'r>, Vec<Diagnostic>> {
    let crate::check::Checked { plan, contents } = crate::check::local_checks(repo, node)?;
    let mask = |sels: &[String]| -> Vec<bool> {
        plan.items
            .iter()
            .map(|i| sels.iter().any(|s| crate::items::selector::matches(s, i)))
            .collect()
    };
    let diffs = !select.no_diff;
    let options = Options {
        mode,
        interactive,
        item_workers,
        only: (!select.only.is_empty()).then(|| mask(&select.only)),
        skip: mask(&select.skip),
        diffs,
    };
    let mut locals = executor::locals(
        &plan.items,
        contents,
        if diffs || interactive { DIFF_LIMIT } else { 0 },
    );
    for l in &mut locals {
        l.clean_staging = mode == Mode::Apply;
    }
    Ok(Prepared {
        node,
        graph: graph_of(plan),
        locals,
        options,
        broken: None,
    })
}

/// The executor's view of a plan.
fn graph_of(plan: Plan) -> Graph {
    Graph {
        items: plan.items,
        needs: plan.needs,
        order: plan.order,
        triggers: plan.triggers,
        precedes: plan.precedes,
        cascade_skip: plan.cascade_skip,
    }
}

fn run(
    ctx: &Context,
    select: &SelectArgs,
    mode: Mode,
    interactive: bool,
    force: bool,
) -> Result<u8> {
    let started = Instant::now();
    let repo = ctx.load_repo()?;
    let nodes = repo.select(&select.target)?;
    for sel in select.only.iter().chain(&select.skip) {
        crate::items::selector::validate(sel)
            .map_err(|e| Error::Usage(format!("bad item selector '{sel}': {e}")))?;
    }
    let node_workers = crate::limits::cap_node_workers(
        select
            .node_workers
            .unwrap_or(repo.settings.node_workers)
            .max(1),
        nodes.len(),
        &ctx.console,
    );
    let item_workers = select
        .item_workers
        .unwrap_or(repo.settings.item_workers)
        .max(1);
    // Hooks load (and their top level runs) once, before anything else, so a broken hook is
    // reported together with every other repo problem. verify fires only node_ssh_connect
    // (it connects, but applies nothing).
    let mut diags = Vec::new();
    let mut bus = match crate::events::command_bus(ctx, &repo) {
        Ok(bus) => bus,
        Err(Error::Repo(d)) => {
            diags.extend(d);
            Bus::new()
        }
        Err(e) => return Err(e),
    };
    let prepared: Vec<std::result::Result<Prepared<'_>, Vec<Diagnostic>>> = nodes
        .par_iter()
        .map(|n| {
            if n.problems.is_empty() {
                prepare(&repo, n, select, mode, interactive, item_workers)
            } else {
                Ok(Prepared::broken(n, mode, item_workers))
            }
        })
        .collect();
    let mut jobs = Vec::new();
    for p in prepared {
        match p {
            Ok(p) => jobs.push(p),
            Err(d) => diags.extend(d),
        }
    }
    if !diags.is_empty() {
        return Err(Error::Repo(crate::check::dedup_sorted(diags)));
    }
    // As in BundleWrap 5: a -o/-s selector that matches nothing on any selected node is a
    // typo, and silently applying everything (or nothing) would be worse than stopping.
    let all_items: Vec<&crate::items::Item> =
        jobs.iter().flat_map(|j| j.graph.items.iter()).collect();
    let selectors: Vec<String> = select.only.iter().chain(&select.skip).cloned().collect();
    let unmatched = crate::items::selector::unmatched(&selectors, &all_items);
    if !unmatched.is_empty() {
        return Err(Error::Usage(format!(
            "{} on the selected nodes",
            unmatched.join("\n")
        )));
    }

    let connect = crate::transport::ConnectOptions::from_settings(
        &repo.path,
        &repo.settings.ssh,
        ctx.add_host_keys,
    );
    let console = &*ctx.console;
    let locking = Locking {
        me: crate::lock::identity(),
        force,
    };
    if console.json() {
        bus.subscribe(Box::new(JsonLines(ctx.console.clone())));
    }
    let out = Reporter::new(
        console,
        mode,
        select.stats,
        interactive,
        jobs.iter().map(|j| j.graph.items.len()).sum(),
    );

    if mode == Mode::Apply {
        let flow = bus.emit(&Event::ApplyStart {
            target: &select.target,
            nodes: &nodes,
            interactive,
        });
        if let Flow::Abort(reason) = flow {
            out.finish();
            out.line_err(&format!(
                "{} apply aborted by hook: {reason}",
                style("!!!").red()
            ));
            return Ok(1);
        }
    }

    // run_node itself reports a node it was too late to start (Ctrl-C), so no stop signal.
    let results: Vec<NodeRun> = crate::fanout::map_bounded(
        &jobs,
        node_workers,
        || false,
        |job| run_node(job, &bus, &out, &connect, mode, interactive, &locking),
    )
    .into_iter()
    .map(Option::unwrap_or_default)
    .collect();

    if mode == Mode::Apply {
        bus.emit(&Event::ApplyEnd {
            target: &select.target,
            nodes: &nodes,
            duration: started.elapsed(),
        });
    }
    out.finish();
    let rows: Vec<Row<'_>> = jobs
        .iter()
        .zip(results.iter())
        .map(|(j, run)| Row {
            node: j.node,
            items: j.graph.items.len(),
            run,
        })
        .collect();
    out.summary(&rows);
    if out.input_ended.load(Ordering::SeqCst) {
        return Err(Error::Usage(
            "apply -i: the input ended before every question was answered, so nothing more was \
             changed; answer each question with y, n or q (on a terminal, or one answer per \
             line on stdin)"
                .into(),
        ));
    }

    let failed = results
        .iter()
        .any(|r| r.error.is_some() || r.count(Outcome::Failed) > 0);
    let drift = results.iter().any(|r| r.count(Outcome::WouldChange) > 0);
    Ok(if crate::interrupt::requested() {
        130
    } else if failed || bus.had_errors() || (mode == Mode::Verify && drift) {
        1
    } else {
        // An interactive "quit" is the user's choice, not a failure.
        0
    })
}

fn run_node(
    job: &Prepared<'_>,
    bus: &Bus,
    out: &Reporter<'_>,
    connect: &crate::transport::ConnectOptions,
    mode: Mode,
    interactive: bool,
    locking: &Locking,
) -> NodeRun {
    let node = job.node;
    let started = Instant::now();
    if let Some(reason) = &job.broken {
        out.node_line(node, &format!("not run: {reason}"), true);
        return NodeRun {
            error: Some(reason.clone()),
            ..Default::default()
        };
    }
    if crate::interrupt::requested() {
        return NodeRun {
            error: Some("not started: interrupted".into()),
            interrupted: true,
            ..Default::default()
        };
    }
    // `q` quits the whole apply: nodes not started yet are left alone, without questions.
    if let Some(why) = out.quit_reason() {
        out.node_line(node, &format!("not started: {why}"), false);
        return NodeRun {
            reports: (0..job.graph.items.len())
                .map(|idx| skipped_report(idx, why))
                .collect(),
            interrupted: true,
            ..Default::default()
        };
    }
    if mode == Mode::Apply
        && let Flow::SkipNode(reason) = bus.emit(&Event::NodeApplyStart { node, interactive })
    {
        if out.console.json() {
            out.console
                .json_line(&json!({"event": "node_skipped", "node": node.name, "reason": reason}));
        }
        out.node_line(node, &format!("skipped by hook ({reason})"), false);
        return NodeRun {
            reports: job
                .graph
                .items
                .iter()
                .enumerate()
                .map(|(idx, _)| skipped_report(idx, &format!("node skipped by hook: {reason}")))
                .collect(),
            duration: started.elapsed(),
            ..Default::default()
        };
    }
    let bar = out.node_started(node, job.graph.items.len());
    let sink = NodeSink {
        bus,
        out,
        mode,
        bar: &bar,
    };
    let run = if node.dummy {
        let reports: Vec<ItemReport> = (0..job.graph.items.len())
            .map(|idx| skipped_report(idx, "dummy node"))
            .collect();
        NodeRun {
            reports,
            ..Default::default()
        }
    } else {
        if node.transport == crate::repo::TransportKind::Ssh {
            bus.emit(&Event::NodeSshConnect { node });
        }
        let transport = crate::transport::open(node, connect);
        let exec_job = Job {
            node,
            graph: &job.graph,
            locals: &job.locals,
            options: &job.options,
            sink: &sink,
        };
        let mut guard = crate::lock::ApplyGuard::new(
            node,
            &locking.me,
            mode == Mode::Apply,
            locking.force,
            out.console,
        );
        let mut r = executor::run(&exec_job, transport.as_ref(), Some(&mut guard));
        if let Err(e) = transport.close() {
            r.error.get_or_insert(e.reason());
        }
        r
    };
    if let Some(e) = &run.error {
        // Often carries the node's stderr.
        out.node_line(node, &untrusted(e, Lines::Keep), true);
    }
    out.node_finished(bar);
    if mode == Mode::Apply {
        let result = NodeResult {
            ok: run.count(Outcome::Ok),
            fixed: run.count(Outcome::Fixed),
            skipped: run.count(Outcome::Skipped),
            failed: run.count(Outcome::Failed),
            total: job.graph.items.len(),
            error: run.error.clone(),
        };
        bus.emit(&Event::NodeApplyEnd {
            node,
            duration: started.elapsed(),
            interactive,
            result: &result,
        });
    }
    let mut run = run;
    run.duration = started.elapsed();
    run
}

fn skipped_report(idx: usize, reason: &str) -> ItemReport {
    ItemReport {
        idx,
        outcome: Outcome::Skipped,
        reason: Some(reason.into()),
        verb: None,
        diff: None,
        before: None,
        after: None,
        duration: Duration::ZERO,
        quiet: true,
    }
}

fn status_of(o: Outcome) -> ItemStatus {
    match o {
        Outcome::Ok => ItemStatus::Ok,
        Outcome::Fixed => ItemStatus::Fixed,
        Outcome::Skipped => ItemStatus::Skipped,
        Outcome::Failed | Outcome::WouldChange => ItemStatus::Failed,
    }
}

/// Turns executor reports into bus events (hooks, JSON) and terminal lines.
struct NodeSink<'a> {
    bus: &'a Bus,
    out: &'a Reporter<'a>,
    mode: Mode,
    bar: &'a ProgressBar,
}

/// A refusal from a `*_start` hook, as the failure reason of the item it stops.
fn refused(flow: Flow) -> std::result::Result<(), String> {
    match flow {
        Flow::Continue => Ok(()),
        Flow::Abort(reason) | Flow::SkipNode(reason) => Err(reason),
    }
}

impl Sink for NodeSink<'_> {
    fn item_start(&self, node: &Node, item: &Item) -> std::result::Result<(), String> {
        if self.mode != Mode::Apply {
            return Ok(());
        }
        refused(self.bus.emit(&Event::ItemApplyStart { node, item }))
    }

    fn item_end(&self, node: &Node, item: &Item, r: &ItemReport) {
        if self.mode == Mode::Apply {
            self.bus.emit(&Event::ItemApplyEnd {
                node,
                item,
                duration: r.duration,
                status: status_of(r.outcome),
                status_before: r.before.as_ref(),
                status_after: r.after.as_ref(),
                reason: r.reason.as_deref(),
            });
        } else if self.out.console.json() {
            self.out.console.json_line(&json!({
                "event": "item_verify", "node": node.name, "item": item.id, "bundle": item.bundle,
                "status": if r.outcome == Outcome::WouldChange { "would_change" } else { "ok" },
                "change": r.verb, "reason": r.reason, "status_before": r.before, "status_expected": r.after,
            }));
        }
        self.bar.inc(1);
        self.out.item_line(node, item, r);
    }

    fn action_start(&self, node: &Node, item: &Item) -> std::result::Result<(), String> {
        if self.mode != Mode::Apply {
            return Ok(());
        }
        refused(self.bus.emit(&Event::ActionRunStart { node, item }))
    }

    fn action_end(&self, node: &Node, item: &Item, duration: Duration, outcome: Outcome) {
        if self.mode != Mode::Apply {
            return;
        }
        self.bus.emit(&Event::ActionRunEnd {
            node,
            item,
            duration,
            status: status_of(outcome),
        });
    }

    fn ask(&self, node: &Node, item: &Item, verb: &str, diff: &str) -> Answer {
        // One question at a time across nodes, and the answer recorded before the next node
        // may ask: once anyone quit, no node asks again.
        let _asking = self.out.asking.lock().unwrap_or_else(|p| p.into_inner());
        if self.out.quit.load(Ordering::SeqCst) {
            return Answer::Quit;
        }
        let mut q = format!("{} {}  {}\n", style("?").cyan(), node.name, item.id);
        for line in diff.lines() {
            q.push_str(&format!("│ {line}\n"));
        }
        q.push_str(&format!("{} {}? [Y/n/q] ", capitalise(verb), item.id));
        let reply = self.out.console.ask(&q, &['\n', 'y', 'n', 'q']);
        let answer = match reply {
            Reply::Key('\n' | 'y') => Answer::Yes,
            Reply::Key('n') => Answer::No,
            Reply::Key(_) => Answer::Quit,
            Reply::EndOfInput => {
                self.out.input_ended.store(true, Ordering::SeqCst);
                Answer::EndOfInput
            }
            Reply::Interrupt => {
                // Raw mode swallowed the Ctrl-C: deliver it, so it acts like one.
                let _ = signal_hook::low_level::raise(signal_hook::consts::SIGINT);
                Answer::Quit
            }
        };
        if matches!(answer, Answer::Quit | Answer::EndOfInput) {
            self.out.quit.store(true, Ordering::SeqCst);
        }
        answer
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `--json`: every event as one line.
struct JsonLines(std::sync::Arc<Console>);

impl crate::events::Subscriber for JsonLines {
    fn on_event(&self, event: &Event<'_>) -> Flow {
        self.0.json_line(&event.to_json());
        Flow::Continue
    }
}

/// One node's line in the summary.
struct Row<'a> {
    node: &'a Node,
    /// The node's items, also when it never reported them (unreachable, locked).
    items: usize,
    run: &'a NodeRun,
}

/// Human output: progress bars, item lines, diffs, the summary table (and the JSON summary).
struct Reporter<'c> {
    console: &'c Console,
    mode: Mode,
    stats: bool,
    /// `-i`: diffs were shown in the questions, so item lines do not repeat them.
    interactive: bool,
    /// `-i`: someone answered `q` (or the input ended); shared by all nodes.
    quit: AtomicBool,
    /// `-i`: the input ended before an answer; the command fails.
    input_ended: AtomicBool,
    /// `-i`: held from a question until its answer is recorded.
    asking: std::sync::Mutex<()>,
    overall: Option<ProgressBar>,
}

impl<'c> Reporter<'c> {
    fn new(
        console: &'c Console,
        mode: Mode,
        stats: bool,
        interactive: bool,
        total_items: usize,
    ) -> Self {
        let overall = (console.is_tty() && !console.json() && !console.quiet()).then(|| {
            let pb = console.progress().add(ProgressBar::new(total_items as u64));
            pb.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30}] {pos}/{len} items  {elapsed}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            pb.set_prefix("total");
            pb
        });
        Reporter {
            console,
            mode,
            stats,
            interactive,
            quit: AtomicBool::new(false),
            input_ended: AtomicBool::new(false),
            asking: std::sync::Mutex::new(()),
            overall,
        }
    }

    /// Why nodes not started yet are left alone after an interactive quit, if one happened.
    fn quit_reason(&self) -> Option<&'static str> {
        if self.input_ended.load(Ordering::SeqCst) {
            Some("no answer: input ended")
        } else if self.quit.load(Ordering::SeqCst) {
            Some("quit interactively")
        } else {
            None
        }
    }

    fn human(&self) -> bool {
        !self.console.json()
    }

    fn line_err(&self, s: &str) {
        if self.console.json() {
            self.console
                .json_line(&json!({"event": "error", "message": console::strip_ansi_codes(s)}));
        } else {
            self.console.err(s);
        }
    }

    fn node_line(&self, node: &Node, msg: &str, error: bool) {
        if !self.human() {
            return;
        }
        if error {
            self.console
                .err(&format!("{} {}  {msg}", style("!").red().bold(), node.name));
        } else if !self.console.quiet() {
            self.console
                .out(&format!("{} {}  {msg}", style("»").yellow(), node.name));
        }
    }

    fn node_started(&self, node: &Node, items: usize) -> ProgressBar {
        if self.overall.is_none() {
            return ProgressBar::hidden();
        }
        let pb = self.console.progress().add(ProgressBar::new(items as u64));
        pb.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len}  {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_prefix(node.name.clone());
        pb
    }

    fn node_finished(&self, bar: ProgressBar) {
        bar.finish_and_clear();
        self.console.progress().remove(&bar);
    }

    fn item_line(&self, node: &Node, item: &Item, r: &ItemReport) {
        if let Some(o) = &self.overall {
            o.inc(1);
        }
        if !self.human() {
            return;
        }
        let quiet = self.console.quiet();
        let (mark, word, to_err) = match r.outcome {
            Outcome::Ok => {
                if self.console.verbose() == 0 {
                    return;
                }
                (style("✓").green(), "ok".to_string(), false)
            }
            Outcome::Fixed => (
                style("✓").green().bold(),
                match r.verb {
                    Some("create") => "created".into(),
                    Some("delete") => "deleted".into(),
                    Some("run") => "succeeded".into(),
                    _ => "fixed".into(),
                },
                false,
            ),
            Outcome::Skipped => {
                if r.quiet && self.console.verbose() == 0
                    || r.reason.as_deref() == Some("cmdline") && self.console.verbose() == 0
                {
                    return;
                }
                (
                    style("»").yellow(),
                    format!("skipped ({})", r.reason.as_deref().unwrap_or("")),
                    false,
                )
            }
            Outcome::Failed => (style("✘").red().bold(), "failed".into(), true),
            Outcome::WouldChange => (
                style("✘").yellow().bold(),
                match &r.reason {
                    // Drift under someone else's soft lock: apply would skip it, verify says so.
                    Some(why) => format!("would {} ({why})", r.verb.unwrap_or("fix")),
                    None => format!("would {}", r.verb.unwrap_or("fix")),
                },
                false,
            ),
        };
        if quiet && !to_err {
            return;
        }
        let mut text = format!("{mark} {}  {}  {}  {word}", node.name, item.bundle, item.id);
        if r.outcome == Outcome::Failed {
            if let Some(reason) = &r.reason {
                // Failure reasons carry the node's stderr.
                for l in untrusted(reason, Lines::Keep).lines() {
                    text.push_str(&format!("\n│ {l}"));
                }
                text.push_str("\n╵");
            }
        } else if let Some(diff) = r.diff.as_deref().filter(|d| !d.is_empty())
            // In -i the question showed the diff already.
            && !(self.interactive && r.outcome == Outcome::Fixed)
        {
            for l in diff.lines() {
                text.push_str(&format!("\n│ {l}"));
            }
            text.push_str("\n╵");
        }
        if to_err {
            self.console.err(&text);
        } else {
            self.console.out(&text);
        }
    }

    fn finish(&self) {
        if let Some(o) = &self.overall {
            o.finish_and_clear();
            self.console.progress().remove(o);
        }
    }

    fn summary(&self, rows: &[Row<'_>]) {
        let mut total = NodeRun::default();
        let mut total_items = 0;
        let mut json_nodes = Vec::new();
        let mut table_rows = Vec::new();
        let verify = self.mode == Mode::Verify;
        for Row {
            node,
            items,
            run: r,
        } in rows
        {
            total_items += items;
            let fixed = if verify {
                r.count(Outcome::WouldChange)
            } else {
                r.count(Outcome::Fixed)
            };
            let mut row = vec![
                node.name.clone(),
                items.to_string(),
                r.count(Outcome::Ok).to_string(),
                fixed.to_string(),
                r.count(Outcome::Skipped).to_string(),
                r.count(Outcome::Failed).to_string(),
                fmt_duration(r.duration),
            ];
            if r.error.is_some() {
                row[5] = format!("{} (node failed)", r.count(Outcome::Failed));
            }
            if self.stats {
                row.extend([
                    r.stats.commands.to_string(),
                    r.stats.bytes_sent.to_string(),
                    r.stats.bytes_received.to_string(),
                ]);
            }
            table_rows.push(row);
            json_nodes.push(json!({
                "node": node.name, "items": items, "ok": r.count(Outcome::Ok),
                if verify { "would_change" } else { "fixed" }: fixed,
                "skipped": r.count(Outcome::Skipped), "failed": r.count(Outcome::Failed),
                "duration": r.duration.as_secs_f64(), "error": r.error,
                "commands": r.stats.commands, "bytes_sent": r.stats.bytes_sent,
                "bytes_received": r.stats.bytes_received,
            }));
            total.reports.extend(r.reports.iter().cloned());
            total.duration = total.duration.max(r.duration);
            total.stats.commands += r.stats.commands;
            total.stats.bytes_sent += r.stats.bytes_sent;
            total.stats.bytes_received += r.stats.bytes_received;
        }
        let total_fixed = if verify {
            total.count(Outcome::WouldChange)
        } else {
            total.count(Outcome::Fixed)
        };
        if self.console.json() {
            self.console.json_line(&json!({
                "event": "summary",
                "command": if verify { "verify" } else { "apply" },
                "nodes": json_nodes,
                "total": {
                    "nodes": rows.len(), "items": total_items, "ok": total.count(Outcome::Ok),
                    if verify { "would_change" } else { "fixed" }: total_fixed,
                    "skipped": total.count(Outcome::Skipped), "failed": total.count(Outcome::Failed),
                    "commands": total.stats.commands, "bytes_sent": total.stats.bytes_sent,
                    "bytes_received": total.stats.bytes_received,
                },
                "interrupted": crate::interrupt::requested(),
            }));
            return;
        }
        if rows.len() > 1 {
            let mut row = vec![
                format!("total ({} nodes)", rows.len()),
                total_items.to_string(),
                total.count(Outcome::Ok).to_string(),
                total_fixed.to_string(),
                total.count(Outcome::Skipped).to_string(),
                total.count(Outcome::Failed).to_string(),
                fmt_duration(total.duration),
            ];
            if self.stats {
                row.extend([
                    total.stats.commands.to_string(),
                    total.stats.bytes_sent.to_string(),
                    total.stats.bytes_received.to_string(),
                ]);
            }
            table_rows.push(row);
        }
        let mut header = vec![
            "node",
            "items",
            "ok",
            if verify { "would change" } else { "fixed" },
            "skipped",
            "failed",
            "duration",
        ];
        if self.stats {
            header.extend(["commands", "bytes sent", "bytes received"]);
        }
        if crate::interrupt::requested() {
            self.console
                .err("interrupted: no new work was started after Ctrl-C");
        }
        self.console
            .out(&crate::output::table(&header, &table_rows));
    }
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        let s = s as u64;
        format!("{}m {}s", s / 60, s % 60)
    }
}
