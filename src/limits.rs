//! Open files: cinch needs a few descriptors per node in flight (the ssh master's socket,
//! each command's pipes), and the common soft limit of 1,024 runs out at `-p 1000`. The soft
//! limit is raised to the hard limit at start, and node workers are capped to what it allows.

use std::sync::atomic::{AtomicU64, Ordering};

/// Descriptors one node in flight may hold at once: the ssh master's control socket and
/// the pipes of up to two commands (stdin, stdout, stderr), with room to spare.
pub const FDS_PER_NODE: u64 = 8;
/// Descriptors kept for everything else (the console, the repo's files, the runtime).
pub const RESERVED_FDS: u64 = 64;

/// The soft open-files limit in force, once [`raise_open_files`] ran; 0 = unknown.
static LIMIT: AtomicU64 = AtomicU64::new(0);

/// Raises the soft RLIMIT_NOFILE to the hard limit, so large `-p` works without `ulimit -n`,
/// and remembers the limit in force for [`node_workers`].
pub fn raise_open_files() -> Option<u64> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).ok().or_else(|| {
        rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .map(|(soft, _)| soft)
    })?;
    LIMIT.store(limit, Ordering::Relaxed);
    Some(limit)
}

/// Most nodes that fit in `limit` open files at once (at least 1).
pub fn nodes_for_limit(limit: u64) -> usize {
    let n = limit.saturating_sub(RESERVED_FDS) / FDS_PER_NODE;
    usize::try_from(n.max(1)).unwrap_or(usize::MAX)
}

/// `wanted` node workers, lowered to what the open-files limit allows, with the note to show
/// the user when it was lowered.
pub fn node_workers(wanted: usize) -> (usize, Option<String>) {
    let limit = LIMIT.load(Ordering::Relaxed);
    if limit == 0 {
        return (wanted, None);
    }
    let cap = nodes_for_limit(limit);
    if wanted <= cap {
        return (wanted, None);
    }
    (
        cap,
        Some(format!(
            "note: working on {cap} nodes at once instead of {wanted}: the open-files limit is \
             {limit} and each node in flight needs up to {FDS_PER_NODE} (raise the hard limit, \
             e.g. `ulimit -Hn`, to go higher)"
        )),
    )
}

/// [`node_workers`] for `nodes` nodes, saying once on the console when it lowers `-p`.
pub fn cap_node_workers(wanted: usize, nodes: usize, console: &crate::console::Console) -> usize {
    let (workers, note) = node_workers(wanted.min(nodes.max(1)));
    if let Some(note) = note
        && !console.quiet()
    {
        console.err(&note);
    }
    workers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_workers_fit_the_open_files_limit() {
        assert_eq!(nodes_for_limit(1024), 120);
        assert_eq!(nodes_for_limit(10), 1);
        assert_eq!(nodes_for_limit(1_048_576), 131_064);
    }

    #[test]
    fn soft_open_files_limit_is_raised_to_the_hard_limit() {
        let before = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("getrlimit");
        let now = raise_open_files().expect("raise");
        let after = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("getrlimit");
        assert_eq!(after.0, after.1, "soft limit is the hard limit now");
        assert_eq!(now, after.0);
        assert!(after.0 >= before.0);
    }
}
