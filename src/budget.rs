//! Bounds on local computation that repo code controls (Rhai scripts, templates): the bytes
//! it may allocate, and whether a Ctrl-C/SIGTERM has asked it to stop. Operation counts alone
//! do not bound work: one Rhai operation can build a megabyte string.
//!
//! Allocation is measured by [`CountingAlloc`], cinch's global allocator, which adds every
//! allocation's size to a per-thread counter; a [`Guard`] remembers where the counter stood
//! when a computation began.

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;
use std::cell::Cell;

/// Most bytes one script call may allocate in total (freed or not); a script that builds
/// big strings in a loop is stopped here, long before it could run for hours.
pub const MAX_SCRIPT_ALLOCATION: u64 = 1 << 30;

thread_local! {
    /// Bytes allocated by this thread since it started. `const` and without a destructor,
    /// so the allocator can touch it at any time without allocating itself.
    static ALLOCATED: Cell<u64> = const { Cell::new(0) };
    /// The innermost running [`Guard`] of this thread: (counter at its start, interrupt level
    /// that stops it).
    static CURRENT: Cell<Option<(u64, usize)>> = const { Cell::new(None) };
}

/// mimalloc, counting bytes per thread for [`Guard`]. Computed metadata and templates make
/// millions of small, short-lived allocations across threads, where glibc's malloc spent a
/// third of `cinch test`'s time (bench/RESULTS-metadata.md).
pub struct CountingAlloc;

// SAFETY: every call is forwarded unchanged to `MiMalloc`; the counter is a plain thread-local
// cell that cannot allocate or unwind.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size.saturating_sub(layout.size()));
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
}

fn count(bytes: usize) {
    // try_with: during thread teardown the slot may be gone; losing a count there is harmless.
    let _ = ALLOCATED.try_with(|c| c.set(c.get().wrapping_add(bytes as u64)));
}

fn allocated() -> u64 {
    ALLOCATED.try_with(Cell::get).unwrap_or(0)
}

/// Which interrupts stop a computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Any Ctrl-C/SIGTERM, even one from before it began: work that prepares an apply must
    /// not start once the user asked to stop.
    OnAnyInterrupt,
    /// Only one arriving while it runs: hooks that report an interrupted run (apply_end,
    /// lock_remove, ...) still get to run, and a further Ctrl-C stops them.
    OnNewInterrupt,
}

/// Marks this thread as running bounded computation until dropped.
pub struct Guard {
    previous: Option<(u64, usize)>,
}

impl Guard {
    /// Starts measuring from now.
    pub fn new(stop: Stop) -> Guard {
        let level = match stop {
            Stop::OnAnyInterrupt => 1,
            Stop::OnNewInterrupt => crate::interrupt::level() + 1,
        };
        let previous = CURRENT.with(|c| c.replace(Some((allocated(), level))));
        Guard { previous }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

/// Why the computation running on this thread must stop now, if it must. Without a [`Guard`]
/// only interrupts count.
pub fn exceeded(max_allocation: u64) -> Option<String> {
    let (start, level) = CURRENT.with(Cell::get).unwrap_or((allocated(), 1));
    if crate::interrupt::level() >= level {
        return Some(INTERRUPTED.to_string());
    }
    let used = allocated().wrapping_sub(start);
    if used > max_allocation {
        return Some(format!(
            "memory limit exceeded: allocated more than {} MiB",
            max_allocation >> 20
        ));
    }
    None
}

/// The reason [`exceeded`] gives for a Ctrl-C/SIGTERM, so callers can tell it from a failure.
pub const INTERRUPTED: &str = "interrupted (Ctrl-C or SIGTERM)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_inside_a_guard_is_counted() {
        let _g = Guard::new(Stop::OnNewInterrupt);
        assert_eq!(exceeded(1 << 20), None);
        let big = vec![1u8; 2 << 20];
        assert!(
            exceeded(1 << 20).is_some_and(|r| r.contains("memory limit")),
            "{}",
            big.len()
        );
        drop(big);
        let _inner = Guard::new(Stop::OnNewInterrupt);
        assert_eq!(exceeded(1 << 20), None, "a new guard starts from zero");
    }
}
