//! Ctrl-C / SIGTERM handling: the first signal stops new work, the second kills running work.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

static COUNT: OnceLock<Arc<AtomicUsize>> = OnceLock::new();

fn counter() -> &'static Arc<AtomicUsize> {
    COUNT.get_or_init(|| Arc::new(AtomicUsize::new(0)))
}

/// Installs SIGINT/SIGTERM handlers that count signals instead of killing the process,
/// so locks can be released and a summary printed.
pub fn install() {
    let c = counter().clone();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registration only fails for forbidden signals; these two are allowed.
        let c = c.clone();
        let _ = unsafe {
            signal_hook::low_level::register(sig, move || {
                c.fetch_add(1, Ordering::SeqCst);
            })
        };
    }
}

/// How many interrupts arrived so far (0 = none).
pub fn level() -> usize {
    counter().load(Ordering::SeqCst)
}

/// True once the user asked us to stop starting new work.
pub fn requested() -> bool {
    level() >= 1
}

/// True once the user asked us to kill running work too.
pub fn forced() -> bool {
    level() >= 2
}
