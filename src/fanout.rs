//! Bounded parallelism over nodes. Node work is mostly waiting on the network, so plain
//! threads (at most `workers`) are used rather than rayon, whose pool is sized for CPU work.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Calls `f` on every element with at most `workers` running at once and returns the results
/// in input order. Stops handing out new elements once `stop()` returns true (Ctrl-C); those
/// elements get `None`.
pub fn map_bounded<T, R, F, S>(items: &[T], workers: usize, stop: S, f: F) -> Vec<Option<R>>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
    S: Fn() -> bool + Sync,
{
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let workers = workers.clamp(1, items.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    if stop() {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_input_order_and_bounds_concurrency() {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let out = map_bounded(
            &(0..20).collect::<Vec<_>>(),
            3,
            || false,
            |&i| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(5));
                running.fetch_sub(1, Ordering::SeqCst);
                i * 2
            },
        );
        assert_eq!(out, (0..20).map(|i| Some(i * 2)).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 3);
    }

    #[test]
    fn stop_leaves_the_rest_undone() {
        let out = map_bounded(&[1, 2, 3], 1, || true, |&i| i);
        assert_eq!(out, vec![None, None, None]);
    }
}
