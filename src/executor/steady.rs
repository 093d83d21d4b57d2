//! The executor's part of the one-round-trip steady state (see `lock::steady`): what its
//! judgment of a node depends on, digested for the steady marker, and whether a run left the
//! node unchanged with nothing but its first command.

use std::fmt::Write as _;
use std::hash::Hash as _;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::digest::HashWriter;

use super::*;
use crate::items::state::stateful;

/// Why nothing is changed after the node's first command already released its lock.
pub(super) const STEADY_CONTRADICTED: &str = "not changed: the node's steady marker said it was \
     unchanged and released its lock in the first command, but its state differs (the marker \
     was removed: apply again)";

/// Items per chunk of the judged digest.
const DIGEST_CHUNK: usize = 512;

impl Exec<'_, '_> {
    /// Digest of what decides this run's judgment besides the node's answer and the expected
    /// states the guard adds: cinch's version, the options, every item (attributes and
    /// dependencies), the dependency plan and the probe script itself.
    pub(super) fn judged_digest(&self, probe: &str) -> String {
        let o = self.job.options;
        let g = self.g;
        let mut w = HashWriter(Sha256::new());
        // Writing into a hash cannot fail.
        let _ = write!(
            w,
            "{}\n{:?}\n{:?}\n{:?}\n{:?}\n",
            env!("CARGO_PKG_VERSION"),
            o.mode,
            o.interactive,
            o.only,
            o.skip
        );
        // Every field of every item (derived `Hash`, each string closed by a 0xff byte and
        // each list led by its length, so no two items write the same bytes), in chunks on all
        // cores (digests of the chunks, in order): 20,000 items' worth of `{:?}` text took a
        // third of a steady apply's controller time before its one command.
        let chunks: Vec<[u8; 32]> = g
            .items
            .par_chunks(DIGEST_CHUNK)
            .map(|items| {
                let mut c = HashWriter(Sha256::new());
                items.hash(&mut c);
                c.0.finalize().into()
            })
            .collect();
        for d in chunks {
            w.0.update(d);
        }
        (
            &g.needs,
            &g.order,
            &g.triggers,
            &g.precedes,
            &g.cascade_skip,
        )
            .hash(&mut w);
        w.0.update(probe.as_bytes());
        hex::encode(w.0.finalize())
    }

    /// Whether the first command's answer shows anything to do (before any event): an item
    /// that differs or cannot be read, an untriggered action (it always runs), a soft lock.
    pub(super) fn contradicted(&self, guard: Option<&dyn Guard>) -> bool {
        (0..self.g.items.len())
            .filter(|&i| self.static_skip(i).is_none())
            .any(|i| {
                let item = &self.g.items[i];
                if guard.is_some_and(|g| g.soft_locked(item).is_some()) {
                    return true;
                }
                if stateful(&item.kind).is_some() {
                    self.probe_error(i).is_some() || self.change_of(i).is_some()
                } else {
                    !item.deps.triggered
                }
            })
    }

    /// Whether the run found the node as the repo describes it and sent nothing besides the
    /// first command (`sent`: the commands counted right after it): every item ok, or
    /// skipped for a reason that depends only on the repo and the options.
    pub(super) fn unchanged(&self, sent: u64) -> bool {
        self.run.error.is_none()
            && !self.run.interrupted
            && self.t.stats().commands == sent
            && self.run.reports.len() == self.g.items.len()
            && self.run.reports.iter().all(|r| match r.outcome {
                Outcome::Ok => true,
                Outcome::Skipped => r.quiet || self.static_skip(r.idx).is_some(),
                _ => false,
            })
    }
}
