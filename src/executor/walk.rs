//! Wave walking: the dependency plan in waves, each wave's fixes in one command, then the
//! actions, with cascades, triggers, `unless` and interactive questions.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::items::action::ActionOutcome;
use crate::items::state::{Fixing, stateful};
use crate::node_shell::{Record, Script};

use super::*;

impl Exec<'_, '_> {
    pub(super) fn walk(&mut self, guard: Option<&dyn Guard>) {
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

    /// Announces item `i`; if a subscriber refuses it (a failed start hook, fail closed), the item
    /// is reported failed and `false` says not to go on with it.
    pub(super) fn begin(&mut self, i: usize) -> bool {
        let started = if self.job.options.mode == Mode::Apply {
            refused(self.job.bus.emit(&Event::ItemApplyStart {
                node: self.node(),
                item: &self.g.items[i],
            }))
        } else {
            Ok(())
        };
        match started {
            Ok(()) => true,
            Err(reason) => {
                self.fail(i, reason, Duration::ZERO);
                false
            }
        }
    }

    pub(super) fn wave(&mut self, wave: &[usize], guard: Option<&dyn Guard>) -> ExecResult<()> {
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
            if runnable(&item.kind).is_some() {
                if verify && item.deps.triggered {
                    self.would_run(i);
                } else if verify {
                    self.skip(i, "verify runs no actions", true);
                } else {
                    match self.plan_check(i) {
                        Some(PlanCheck::NotPlanned) => self.skip(i, "not in the plan", false),
                        Some(PlanCheck::Changed(why)) => self.fail(i, why, Duration::ZERO),
                        _ => actions.push(i),
                    }
                }
            } else if stateful(&item.kind).is_some() {
                stateful_items.push(i);
            } else {
                self.skip(i, "this item type is not supported yet", false);
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

    /// One wave of stateful items: judge, choose, fix them all in one command with their
    /// re-read, settle.
    pub(super) fn stateful_wave(&mut self, items: &[usize]) -> ExecResult<()> {
        let started = Instant::now();
        let changes = self.judge(items, started)?;
        let to_fix = self.choose(changes, started);
        if to_fix.is_empty() {
            return Ok(());
        }
        let mut script = self.fix_script(&to_fix);
        let fixed: Vec<usize> = to_fix.iter().map(|(i, _, _)| *i).collect();
        self.probe_into(&mut script, &fixed);
        let records = self.send(script)?;
        // Only the re-read state counts: clear the first probe for items that were fixed.
        for &i in &fixed {
            self.set_actual(i, None);
        }
        let rest = self.absorb(records);
        self.settle(to_fix, &rest, started);
        Ok(())
    }

    /// The first half of a wave: re-read stale state, report items already right, drop
    /// changes whose `unless` succeeds; returns what differs.
    fn judge(&mut self, items: &[usize], started: Instant) -> ExecResult<Vec<(usize, Change)>> {
        let verify = self.job.options.mode == Mode::Verify;
        if self.stale {
            let mut script = Script::probe();
            self.probe_into(&mut script, items);
            let records = self.send(script)?;
            self.absorb(records);
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
                    let before = if self.states_read {
                        self.public(i, self.actual_of(i))
                    } else {
                        None
                    };
                    self.report(
                        i,
                        ItemReport {
                            idx: i,
                            outcome: Outcome::Ok,
                            reason: None,
                            verb: None,
                            diff: None,
                            before,
                            after: None,
                            duration: started.elapsed(),
                            quiet: false,
                            actual_hash: None,
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
        Ok(changes)
    }

    /// Verify reports what would change; interactive apply asks; returns what to fix, each
    /// with its diff.
    fn choose(
        &mut self,
        changes: Vec<(usize, Change)>,
        started: Instant,
    ) -> Vec<(usize, Change, Option<String>)> {
        let verify = self.job.options.mode == Mode::Verify;
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
                        actual_hash: change.actual.as_ref().map(actual_hash),
                    },
                );
                continue;
            }
            match self.plan_check(i) {
                Some(PlanCheck::NotPlanned) => {
                    self.skip(i, "not in the plan", false);
                    continue;
                }
                Some(PlanCheck::Changed(why)) => {
                    self.fail(i, why, started.elapsed());
                    continue;
                }
                Some(PlanCheck::Actual(Some(planned))) => {
                    let now = change.actual.as_ref().map(actual_hash);
                    if now.as_deref() != Some(planned.as_str()) {
                        self.fail(
                            i,
                            format!(
                                "{CHANGED_SINCE_PLAN}: its state on the node is not what the \
                                 plan saw; run verify --plan-out again and review the new plan"
                            ),
                            started.elapsed(),
                        );
                        continue;
                    }
                }
                Some(PlanCheck::Actual(None)) | None => {}
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
        to_fix
    }

    /// One command's fixes: each type fixes all its items of the wave together (one apt
    /// transaction), in the order types first appear; marks state stale when a fix disturbs
    /// other items.
    fn fix_script(&mut self, to_fix: &[(usize, Change, Option<String>)]) -> Script {
        let mut script = Script::fix();
        // Each type fixes all its items of the wave together (one apt transaction), in the
        // order types first appear.
        let mut types: Vec<&str> = Vec::new();
        for (i, _, _) in to_fix {
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
        script
    }

    /// The second half of a wave: each fix's result and re-read state decide fixed or failed.
    fn settle(
        &mut self,
        to_fix: Vec<(usize, Change, Option<String>)>,
        records: &[Record],
        started: Instant,
    ) {
        let mut results = std::collections::BTreeMap::new();
        for r in records {
            if let Record::Fix { idx, rc, message } = r {
                results.insert(*idx, (*rc, message.clone()));
            }
        }
        for (i, change, diff) in to_fix {
            let elapsed = started.elapsed();
            let before = self.public(i, change.actual.as_ref());
            // A failed fix still tells hooks and JSON what the item was and what it is now.
            let after = self.public(i, self.actual_of(i));
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
                        let after = self.public(i, self.actual_of(i));
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
                                actual_hash: None,
                            },
                        );
                    }
                },
            }
        }
    }

    /// Verify: a triggered action whose trigger would be fixed would run; say so, with what
    /// triggers it, and pass the trigger on to what the action triggers.
    pub(super) fn would_run(&mut self, i: usize) {
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
                actual_hash: None,
            },
        );
    }

    /// What `--plan` allows for item `i` (`None` without a plan).
    fn plan_check(&self, i: usize) -> Option<PlanCheck> {
        self.job
            .options
            .plan
            .as_ref()
            .map(|p| p.get(i).cloned().unwrap_or(PlanCheck::NotPlanned))
    }

    pub(super) fn actions(&mut self, actions: &[usize]) {
        let node = self.node();
        let mut to_run = Vec::new();
        for &i in actions {
            let item = &self.g.items[i];
            let Some(a) = runnable(&item.kind) else {
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
        if self.released {
            for i in to_run {
                self.fail(i, super::steady::STEADY_CONTRADICTED.into(), Duration::ZERO);
            }
            return;
        }
        self.stale = true;
        let workers = self.job.options.item_workers.max(1);
        let g = self.g;
        let bus = self.job.bus;
        let apply = self.job.options.mode == Mode::Apply;
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
                            let Some(a) = runnable(&item.kind) else {
                                return (
                                    i,
                                    ActionOutcome::Failed("not an action".into()),
                                    Duration::ZERO,
                                );
                            };
                            let started = Instant::now();
                            let start = if apply {
                                refused(bus.emit(&Event::ActionRunStart { node, item }))
                            } else {
                                Ok(())
                            };
                            let outcome = match start {
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
                            if apply {
                                bus.emit(&Event::ActionRunEnd {
                                    node,
                                    item,
                                    duration: d,
                                    status: o,
                                });
                            }
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
                            actual_hash: None,
                        },
                    );
                }
            }
        }
    }
}
