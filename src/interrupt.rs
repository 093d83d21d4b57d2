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

/// What the user is told the moment the first interrupt arrives, so a Ctrl-C never looks
/// ignored while running work finishes; `running` names that work ("items", "commands").
pub fn first_message(running: &str) -> String {
    format!("stopping after running {running} finish — Ctrl-C again to abort")
}

/// What the user is told when the second interrupt arrives.
pub const SECOND_MESSAGE: &str = "aborting: stopping running commands now";

/// Starts a thread that tells the user at once what the first and the second interrupt do
/// (the signal handler itself may not print). `running` names the work that is let finish.
pub fn announce(console: Arc<crate::console::Console>, running: &'static str) {
    let sigs = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM];
    let Ok(mut signals) = signal_hook::iterator::Signals::new(sigs) else {
        // Without the announcement interrupts still work; only the message is missing.
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("interrupt-announce".into())
        .spawn(move || {
            let mut seen = 0;
            let mut said = 0;
            for _ in signals.forever() {
                // Deliveries may coalesce, and the counting handler may not have run yet:
                // trust whichever count is higher.
                seen += 1;
                let level = level().max(seen);
                while said < level.min(2) {
                    said += 1;
                    let message = if said == 1 {
                        first_message(running)
                    } else {
                        SECOND_MESSAGE.to_string()
                    };
                    if console.json() {
                        console.json_line(&serde_json::json!({
                            "event": "interrupt", "level": said, "message": message
                        }));
                    } else {
                        console.err(&message);
                    }
                }
            }
        });
    // A thread that cannot start only costs the message, never the interrupt handling.
    drop(spawned);
}

/// Whether a running command must be stopped now: any command after a second signal, and
/// even a cleanup command (the lock release, which may wait up to minutes on a swamped
/// node) after a third, so no wait outlasts the user's insistence.
pub fn abandon(cleanup: bool) -> bool {
    level() >= if cleanup { 3 } else { 2 }
}
