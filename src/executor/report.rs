//! Reporting: every item's outcome goes once to the bus — apply's `item_apply_end` or
//! verify's `item_verify` verdict, then the terminal's [`Note::ItemResult`] — with its diff,
//! its drift attribution and the public (hook/JSON) view of its state.

use std::time::Duration;

use serde_json::Value;

use crate::events::{Drift, Report};
use crate::items::state::{Change, State, stateful};

use super::*;

impl Exec<'_, '_> {
    pub(super) fn report(&mut self, i: usize, mut r: ItemReport) {
        r.idx = i;
        self.done[i] = Some(r.outcome);
        let (node, item) = (self.node(), &self.g.items[i]);
        let bus = self.job.bus;
        let mut drift = None;
        match self.job.options.mode {
            Mode::Apply => {
                bus.emit(&Event::ItemApplyEnd {
                    node,
                    item,
                    duration: r.duration,
                    status: r.outcome,
                    status_before: r.before.as_ref(),
                    status_after: r.after(),
                    reason: r.reason.as_deref(),
                });
            }
            Mode::Verify => {
                if r.outcome == Outcome::WouldChange {
                    drift = self.drift(item, &r);
                }
                // Verify reports every item as would_change or ok, whatever else it saw.
                let status = match r.outcome {
                    Outcome::WouldChange => Outcome::WouldChange,
                    _ => Outcome::Ok,
                };
                bus.emit(&Event::Report(Report::ItemVerify {
                    node: &node.name,
                    item: &item.id,
                    bundle: &item.bundle,
                    status: status.as_str(),
                    change: r.verb,
                    reason: r.reason.as_deref(),
                    status_before: r.before.as_ref(),
                    status_expected: r.after(),
                    drift: drift.as_ref(),
                }));
            }
        }
        bus.emit(&Event::Note(Note::ItemResult {
            node: &node.name,
            item,
            report: &r,
            drift: drift.as_ref(),
        }));
        // The states were for the events; the summary and saved plans need none of them.
        r.before = None;
        r.after = None;
        self.run.reports.push(r);
    }

    /// Why item `r` drifted, against the node's record of its last apply (verify).
    fn drift(&self, item: &crate::items::Item, r: &ItemReport) -> Option<Drift> {
        let base = self.job.drift?;
        let record = base.seen.get()?.get(&item.id)?;
        let (_, expected) = base.expected.get(r.idx)?;
        let node_changed = r.actual_hash.as_deref() != Some(record.hash.as_str());
        let repo_changed = *expected != record.expected;
        (node_changed || repo_changed).then(|| Drift {
            node_changed,
            repo_changed,
            applied_by: record.by.clone(),
            applied_at: crate::lock::rfc3339(record.at),
        })
    }

    pub(super) fn skip(&mut self, i: usize, reason: &str, quiet: bool) {
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
                actual_hash: None,
            },
        );
    }

    pub(super) fn fail(&mut self, i: usize, reason: String, duration: Duration) {
        self.fail_between(i, reason, duration, None, None);
    }

    /// A failure with the states read before and after the attempt.
    pub(super) fn fail_between(
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
                actual_hash: None,
            },
        );
    }

    /// The state as shown in events: sensitive content hashes and hidden keys withheld.
    pub(super) fn public(&self, i: usize, state: Option<&State>) -> Option<Value> {
        let mut s = state?.clone();
        let item = &self.g.items[i];
        let secret_content = self.job.locals[i]
            .content
            .as_deref()
            .is_some_and(|c| crate::mask::contains_secret(c));
        let hides_content = stateful(&item.kind).is_some_and(|b| b.hides_content());
        if (hides_content || secret_content) && s.contains_key("content_hash") {
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
    pub(super) fn probe_error(&self, i: usize) -> Option<String> {
        let item = &self.g.items[i];
        let b = stateful(&item.kind)?;
        b.probe_error(item, self.actual[i].as_ref()?)
    }

    /// Why the generated action `i` (`ITEM_ID:NAME`) has nothing left to do, because the
    /// item it belongs to was fixed in a way that already did it (a start before a restart).
    pub(super) fn redundant(&self, i: usize) -> Option<String> {
        let (owner_id, action) = self.g.items[i].id.rsplit_once(':')?;
        let owner = self.g.items.iter().position(|it| it.id == owner_id)?;
        let change = self.fixed_by[owner].as_ref()?;
        stateful(&self.g.items[owner].kind)?.makes_redundant(change, action)
    }

    pub(super) fn diff_of(&self, i: usize, change: &Change) -> String {
        let item = &self.g.items[i];
        match stateful(&item.kind) {
            Some(b) => b.show(item, &self.job.locals[i], change, self.actual[i].as_ref()),
            None => String::new(),
        }
    }
}
