//! `cinch apply` and `cinch verify`: orchestration of the item engine over nodes.
//!
//! Everything that can be checked locally (items parse, dependencies resolve, templates
//! render) is checked for every selected node before any node is touched, so a repo mistake
//! never leaves a partial apply. Then nodes run in parallel; each node's work is one
//! [`executor::run`].

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use console::style;
use rayon::prelude::*;

use crate::diag::Diagnostic;
use crate::error::{Error, Result};
use crate::events::{ApplySummary, Bus, Event, Flow, NodeResult, Note, Report};
use crate::executor::{self, DriftBase, ItemReport, Job, Mode, NodeRun, Options, Outcome};
use crate::executor::{CHANGED_SINCE_PLAN, PlanCheck};
use crate::fleet::{Fleet, NotContacted, Slot};
use crate::items::state::Local;
use crate::output::apply::ApplyRow;
use crate::output::{Lines, untrusted};
use crate::plan::Plan;
use crate::render::human::Reporter;
use crate::repo::{Node, Repo};
use crate::settings::{ApplySettings, Select, Settings};

use super::saved_plan::{self, PlanItem, PlanNode, SavedPlan};

/// Diffs of text files larger than this are shown as sizes and hashes.
const DIFF_LIMIT: u64 = 1 << 20;

/// Runs `cinch apply` (with `--plan`, only the plan's changes).
pub fn cmd_apply(ctx: &Settings, args: &ApplySettings) -> Result<u8> {
    let saved = match &args.plan {
        Some(path) => Some((SavedPlan::read(path)?, path.as_path())),
        None => None,
    };
    let mut select = args.select.clone();
    if select.target.is_empty() {
        match &saved {
            Some((p, _)) => select.target = p.target.clone(),
            None => {
                return Err(Error::Usage(
                    "apply needs a TARGET (nodes, groups, all), or --plan FILE".into(),
                ));
            }
        }
    }
    let saved = saved.as_ref().map(|(p, path)| (p, *path));
    run(
        ctx,
        &select,
        Mode::Apply,
        args.interactive,
        args.force,
        Saved::In(saved),
        &args.rollout,
    )
}

/// Runs `cinch verify` (with `--plan-out`, also writes what would change).
pub fn cmd_verify(ctx: &Settings, args: &Select, plan_out: Option<&Path>) -> Result<u8> {
    run(
        ctx,
        args,
        Mode::Verify,
        false,
        false,
        Saved::Out(plan_out),
        &crate::fleet::Rollout::default(),
    )
}

/// The saved plan a run reads (apply) or writes (verify).
enum Saved<'p> {
    In(Option<(&'p SavedPlan, &'p Path)>),
    Out(Option<&'p Path>),
}

/// Who we are in locks, and whether `--force` overrides a held hard lock.
struct Locking {
    me: String,
    force: bool,
    /// `--rehash`: no node's hash cache is trusted.
    rehash: bool,
}

/// One node's locally prepared work.
struct Prepared<'r> {
    node: &'r Node,
    plan: Plan,
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
            plan: Plan::unlinked(&node.name, Vec::new()),
            locals: Vec::new(),
            options: Options {
                mode,
                interactive: false,
                item_workers,
                only: None,
                skip: Vec::new(),
                diffs: false,
                plan: None,
            },
            broken: Some(reason),
        }
    }
}

fn prepare<'r>(
    repo: &'r Repo,
    node: &'r Node,
    select: &Select,
    mode: Mode,
    interactive: bool,
    item_workers: usize,
) -> std::result::Result<Prepared<'r>, Vec<Diagnostic>> {
    let crate::prepare::Prepared { plan, contents } = crate::prepare::prepare(repo, node)?;
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
        plan: None,
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
        plan,
        locals,
        options,
        broken: None,
    })
}

fn run(
    ctx: &Settings,
    select: &Select,
    mode: Mode,
    interactive: bool,
    force: bool,
    saved: Saved<'_>,
    rollout: &crate::fleet::Rollout,
) -> Result<u8> {
    let started = Instant::now();
    let repo = ctx.load_repo()?;
    let nodes = select_nodes(&repo, select, &saved)?;
    let node_workers = crate::limits::cap_node_workers(
        select.node_workers.resolve(repo.settings.node_workers),
        nodes.len(),
        &ctx.console,
    );
    let item_workers = select.item_workers.resolve(repo.settings.item_workers);
    // Hooks load (and their top level runs) once, before anything else, so a broken hook is
    // reported together with every other repo problem. verify fires only node_ssh_connect
    // (it connects, but applies nothing).
    let mut diags = Vec::new();
    let mut bus = match crate::hooks::command_bus(&ctx.console, &repo, true) {
        Ok(bus) => bus,
        Err(Error::Repo(d)) => {
            diags.extend(d);
            Bus::new()
        }
        Err(e) => return Err(e),
    };
    let mut jobs = prepare_all(
        &repo,
        &nodes,
        select,
        mode,
        interactive,
        item_workers,
        diags,
    )?;
    // Plan items the repo no longer has (or nodes it no longer selects) are changes since
    // the plan too: reported, and the command fails, while the rest goes ahead.
    let mut plan_refusals = Vec::new();
    if let Saved::In(Some((plan, path))) = &saved {
        plan_refusals = restrict_to_plan(&mut jobs, plan, &repo, path);
    }
    check_item_selectors(&jobs, select)?;

    let console = &*ctx.console;
    let locking = Locking {
        me: crate::lock::identity(),
        force,
        rehash: select.rehash,
    };
    // The JSON subscriber is already on the bus (crate::hooks::command_bus).
    let out = Arc::new(Reporter::new(
        ctx.console.clone(),
        interactive,
        jobs.iter().map(|j| j.plan.items.len()).sum(),
    ));
    bus.subscribe(Box::new(out.clone()));

    if mode == Mode::Apply {
        let flow = bus.emit(&Event::ApplyStart {
            target: &select.target,
            nodes: &nodes,
            interactive,
        });
        if let Flow::Abort(reason) = flow {
            out.finish();
            error_line(
                &bus,
                &format!("{} apply aborted by hook: {reason}", style("!!!").red()),
            );
            return Ok(1);
        }
    }

    let fleet = Fleet::new(&bus, ctx.connect_options(&repo), node_workers);
    let rolled = fleet.roll(
        &jobs,
        rollout,
        |j| &j.node.name,
        |r: &NodeRun| r.error.is_none() && r.count(Outcome::Failed) == 0,
        |job| run_node(job, &fleet, &out, mode, interactive, &locking),
    )?;
    let resume_error = rolled.resume_error;
    let (results, notes): (Vec<NodeRun>, Vec<Option<&str>>) = rolled
        .slots
        .into_iter()
        .zip(&jobs)
        .map(|(slot, job)| node_result(slot, job.plan.items.len()))
        .unzip();

    if mode == Mode::Apply {
        bus.emit(&Event::ApplyEnd {
            target: &select.target,
            nodes: &nodes,
            duration: started.elapsed(),
        });
    }
    out.finish();
    let verify = mode == Mode::Verify;
    let rows: Vec<ApplyRow> = jobs
        .iter()
        .zip(results.iter().zip(&notes))
        .map(|(j, (r, note))| summary_row(j, r, *note, verify))
        .collect();
    let failed = results
        .iter()
        .any(|r| r.error.is_some() || r.count(Outcome::Failed) > 0);
    let drift = results.iter().any(|r| r.count(Outcome::WouldChange) > 0);
    for refusal in &plan_refusals {
        error_line(&bus, &format!("{} {refusal}", style("✘").red().bold()));
    }
    if let Saved::Out(Some(path)) = saved {
        write_plan(&repo, select, &jobs, &results, path)?;
        if !console.json() && !console.quiet() {
            console.err(&format!("plan written to {}", path.display()));
        }
    }
    let failed = failed || !plan_refusals.is_empty();
    let code = if crate::interrupt::requested() {
        130
    } else if failed
        || bus.had_errors()
        || resume_error.is_some()
        || (mode == Mode::Verify && drift)
    {
        1
    } else {
        // An interactive "quit" is the user's choice, not a failure.
        0
    };
    let summary = ApplySummary::new(
        rows,
        verify,
        select.stats,
        crate::interrupt::requested(),
        code,
    );
    bus.emit(&Event::Report(Report::ApplySummary(&summary)));
    if let Some(e) = &resume_error {
        error_line(&bus, &format!("error: {e}"));
    }
    if out.input_ended() {
        return Err(Error::Usage(
            "apply -i: the input ended before every question was answered, so nothing more was \
             changed; answer each question with y, n or q (on a terminal, or one answer per \
             line on stdin)"
                .into(),
        ));
    }
    // The process ends with the command: freeing every node's items, states and reports one
    // at a time is a last serial step (20,000 files: 3 % of a steady apply's time) that the
    // system does at exit for free.
    std::mem::forget(results);
    std::mem::forget(jobs);
    drop(nodes);
    std::mem::forget(repo);
    Ok(code)
}

/// The selected nodes of the shard; with a saved plan, only those the plan covers (a TARGET
/// only narrows the plan).
fn select_nodes<'r>(repo: &'r Repo, select: &Select, saved: &Saved<'_>) -> Result<Vec<&'r Node>> {
    let mut nodes = crate::shard::filter(repo.select(&select.target)?, select.shard, |n| &n.name);
    if let Saved::In(Some((plan, _))) = saved {
        nodes.retain(|n| plan.node(&n.name).is_some());
        if nodes.is_empty() {
            return Err(Error::Usage(format!(
                "'{}' selects no node of the plan (it has {}); give a TARGET among them or none",
                untrusted(&select.target, Lines::Escape),
                plan.nodes
                    .iter()
                    .map(|n| untrusted(&n.node, Lines::Escape))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(nodes)
}

/// Every node prepared locally (in parallel), or every problem of every node at once, with
/// `diags` already found (the hooks'), so nothing is touched when anything is wrong.
fn prepare_all<'r>(
    repo: &'r Repo,
    nodes: &[&'r Node],
    select: &Select,
    mode: Mode,
    interactive: bool,
    item_workers: usize,
    mut diags: Vec<Diagnostic>,
) -> Result<Vec<Prepared<'r>>> {
    let prepared: Vec<std::result::Result<Prepared<'_>, Vec<Diagnostic>>> = nodes
        .par_iter()
        .map(|n| {
            if n.all_problems().is_empty() {
                prepare(repo, n, select, mode, interactive, item_workers)
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
        return Err(Error::Repo(crate::diag::dedup_sorted(diags)));
    }
    Ok(jobs)
}

/// As in BundleWrap 5: a -o/-s selector that matches nothing on any selected node is a typo,
/// and silently applying everything (or nothing) would be worse than stopping.
fn check_item_selectors(jobs: &[Prepared<'_>], select: &Select) -> Result<()> {
    let all_items: Vec<&crate::items::Item> =
        jobs.iter().flat_map(|j| j.plan.items.iter()).collect();
    let selectors: Vec<String> = select.only.iter().chain(&select.skip).cloned().collect();
    let unmatched = crate::items::selector::unmatched(&selectors, &all_items);
    if !unmatched.is_empty() {
        return Err(Error::Usage(format!(
            "{} on the selected nodes",
            unmatched.join("\n")
        )));
    }
    Ok(())
}

/// What became of one node in the rollout, and the note its summary row gets.
fn node_result(slot: Slot<NodeRun>, items: usize) -> (NodeRun, Option<&'static str>) {
    match slot {
        Slot::Done(r) => (r, None),
        Slot::Interrupted => (not_started(), None),
        Slot::BudgetSpent => (
            NodeRun {
                error: Some(crate::fleet::NOTE_BUDGET_SPENT.into()),
                ..Default::default()
            },
            Some(crate::fleet::NOTE_BUDGET_SPENT),
        ),
        Slot::AlreadyDone => (
            NodeRun {
                reports: (0..items)
                    .map(|idx| skipped_report(idx, "already done (resume file)"))
                    .collect(),
                ..Default::default()
            },
            Some(crate::fleet::NOTE_ALREADY_DONE),
        ),
    }
}

/// One node's row of the summary table (verify counts would-change items as fixed).
fn summary_row(job: &Prepared<'_>, r: &NodeRun, note: Option<&str>, verify: bool) -> ApplyRow {
    ApplyRow {
        node: job.node.name.clone(),
        items: job.plan.items.len(),
        ok: r.count(Outcome::Ok),
        fixed: if verify {
            r.count(Outcome::WouldChange)
        } else {
            r.count(Outcome::Fixed)
        },
        skipped: r.count(Outcome::Skipped),
        failed: r.count(Outcome::Failed),
        duration: r.duration.as_secs_f64(),
        error: r.error.clone(),
        commands: r.stats.commands,
        bytes_sent: r.stats.bytes_sent,
        bytes_received: r.stats.bytes_received,
        note: note.map(String::from),
    }
}

/// An error outside any node: styled on the terminal, an `error` line in JSON.
fn error_line(bus: &Bus, text: &str) {
    bus.emit(&Event::Report(Report::Error {
        message: &console::strip_ansi_codes(text),
        exit_code: None,
    }));
    bus.emit(&Event::Note(Note::ErrorLine { text }));
}

/// A line about a whole node, for the terminal.
fn node_line(bus: &Bus, node: &crate::repo::Node, message: &str, error: bool) {
    bus.emit(&Event::Note(Note::NodeLine {
        node: &node.name,
        message,
        error,
    }));
}

/// A node Ctrl-C kept from starting.
fn not_started() -> NodeRun {
    NodeRun {
        error: Some("not started: interrupted".into()),
        interrupted: true,
        ..Default::default()
    }
}

fn run_node(
    job: &Prepared<'_>,
    fleet: &Fleet<'_>,
    out: &Reporter,
    mode: Mode,
    interactive: bool,
    locking: &Locking,
) -> NodeRun {
    let node = job.node;
    let bus = fleet.bus;
    let started = Instant::now();
    if let Some(reason) = &job.broken {
        node_line(bus, node, &format!("not run: {reason}"), true);
        return NodeRun {
            error: Some(reason.clone()),
            ..Default::default()
        };
    }
    if crate::interrupt::requested() {
        return not_started();
    }
    // `q` quits the whole apply: nodes not started yet are left alone, without questions.
    if let Some(why) = out.quit_reason() {
        node_line(bus, node, &format!("not started: {why}"), false);
        return NodeRun {
            reports: (0..job.plan.items.len())
                .map(|idx| skipped_report(idx, why))
                .collect(),
            interrupted: true,
            ..Default::default()
        };
    }
    if mode == Mode::Apply
        && let Err(reason) = fleet.start(&Event::NodeApplyStart { node, interactive })
    {
        bus.emit(&Event::Report(Report::NodeSkipped {
            node: &node.name,
            reason: &reason,
        }));
        return NodeRun {
            reports: job
                .plan
                .items
                .iter()
                .enumerate()
                .map(|(idx, _)| skipped_report(idx, &format!("node skipped by hook: {reason}")))
                .collect(),
            duration: started.elapsed(),
            ..Default::default()
        };
    }
    bus.emit(&Event::Note(Note::NodeStarted {
        node: &node.name,
        items: job.plan.items.len(),
    }));
    // Drift attribution: every item's expected-state hash (recorded by apply, compared by
    // verify) and the node's records, read by verify's first command.
    let expected: Vec<(String, String)> = job
        .plan
        .items
        .par_iter()
        .zip(&job.locals)
        .map(|(i, l)| (i.id.clone(), i.expected_hash(l)))
        .collect();
    let seen = std::sync::OnceLock::new();
    let run = match fleet.open(node) {
        Err(NotContacted::Dummy) => NodeRun {
            reports: (0..job.plan.items.len())
                .map(|idx| skipped_report(idx, "dummy node"))
                .collect(),
            ..Default::default()
        },
        Err(NotContacted::Refused(reason)) => NodeRun {
            error: Some(reason),
            ..Default::default()
        },
        Ok(transport) => {
            let exec_job = Job {
                node,
                plan: &job.plan,
                locals: &job.locals,
                options: &job.options,
                bus,
                asker: out,
                drift: (mode == Mode::Verify).then_some(DriftBase {
                    expected: &expected,
                    seen: &seen,
                }),
            };
            let mut guard = crate::lock::ApplyGuard::new(
                node,
                &locking.me,
                mode == Mode::Apply,
                locking.force,
                out.console(),
            )
            .with_drift(expected.clone(), &seen)
            .with_rehash(locking.rehash);
            let mut r = executor::run(&exec_job, transport.as_ref(), Some(&mut guard));
            if let Err(e) = transport.close() {
                r.error.get_or_insert(e.reason());
            }
            r
        }
    };
    if let Some(e) = &run.error {
        // Often carries the node's stderr.
        node_line(bus, node, &untrusted(e, Lines::Keep), true);
    }
    bus.emit(&Event::Note(Note::NodeFinished { node: &node.name }));
    if mode == Mode::Apply {
        let result = NodeResult {
            ok: run.count(Outcome::Ok),
            fixed: run.count(Outcome::Fixed),
            skipped: run.count(Outcome::Skipped),
            failed: run.count(Outcome::Failed),
            total: job.plan.items.len(),
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
        actual_hash: None,
    }
}

/// `apply --plan`: tells every job which items the plan allows and whether each is still as
/// planned in the repo; returns what the plan names but the repo no longer has.
fn restrict_to_plan(
    jobs: &mut [Prepared<'_>],
    plan: &SavedPlan,
    repo: &Repo,
    path: &Path,
) -> Vec<String> {
    let mut refusals = Vec::new();
    for pn in &plan.nodes {
        let in_repo = repo.nodes.contains_key(&pn.node);
        if !in_repo && !pn.items.is_empty() {
            refusals.push(format!(
                "{}  {CHANGED_SINCE_PLAN}: node no longer in the repo ({} planned changes not \
                 applied; plan {})",
                untrusted(&pn.node, Lines::Escape),
                pn.items.len(),
                path.display()
            ));
        }
    }
    for job in jobs.iter_mut() {
        if job.broken.is_some() {
            continue;
        }
        let Some(pn) = plan.node(&job.node.name) else {
            continue;
        };
        let mut checks = vec![PlanCheck::NotPlanned; job.plan.items.len()];
        for planned in &pn.items {
            let Some(idx) = job.plan.items.iter().position(|i| i.id == planned.item) else {
                refusals.push(format!(
                    "{}  {}  {CHANGED_SINCE_PLAN}: the item is no longer in the repo (repo \
                     changed)",
                    job.node.name,
                    untrusted(&planned.item, Lines::Escape)
                ));
                continue;
            };
            let item = &job.plan.items[idx];
            let now = item.expected_hash(&job.locals[idx]);
            checks[idx] = if now == planned.expected {
                PlanCheck::Actual(planned.actual.clone())
            } else {
                PlanCheck::Changed(format!(
                    "{CHANGED_SINCE_PLAN}: the repo's expected state is not the planned one \
                     (repo changed); run verify --plan-out again and review the new plan"
                ))
            };
        }
        job.options.plan = Some(checks);
    }
    refusals
}

/// `verify --plan-out`: every reached node's would-change items with their hashes.
fn write_plan(
    repo: &Repo,
    select: &Select,
    jobs: &[Prepared<'_>],
    results: &[NodeRun],
    path: &Path,
) -> Result<()> {
    let mut nodes = Vec::new();
    for (job, run) in jobs.iter().zip(results) {
        // A node verify could not read fully is left out: nothing unseen is ever planned.
        if job.broken.is_some() || run.error.is_some() || run.count(Outcome::Failed) > 0 {
            continue;
        }
        let items = run
            .reports
            .iter()
            .filter(|r| r.outcome == Outcome::WouldChange)
            .filter_map(|r| {
                let item = job.plan.items.get(r.idx)?;
                Some(PlanItem {
                    item: item.id.clone(),
                    change: r.verb.unwrap_or("fix").to_string(),
                    expected: item.expected_hash(job.locals.get(r.idx)?),
                    actual: match &item.kind {
                        crate::items::ItemKind::Action(_) => None,
                        _ => r.actual_hash.clone(),
                    },
                })
            })
            .collect();
        nodes.push(PlanNode {
            node: job.node.name.clone(),
            items,
        });
    }
    let plan = SavedPlan {
        cinch_plan: saved_plan::FORMAT,
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        target: select.target.clone(),
        revision: saved_plan::revision(&repo.path),
        nodes,
    };
    plan.write(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::ItemStatus;

    #[test]
    fn would_change_is_its_own_status_not_failed() {
        assert_ne!(Outcome::WouldChange, Outcome::Failed);
        assert_eq!(Outcome::WouldChange.as_str(), "would_change");
        // The serde payload and the word hooks see are the same.
        for s in [
            ItemStatus::Ok,
            ItemStatus::Fixed,
            ItemStatus::Skipped,
            ItemStatus::Failed,
            ItemStatus::WouldChange,
        ] {
            assert_eq!(serde_json::to_value(s).ok(), Some(s.as_str().into()));
        }
    }
}
