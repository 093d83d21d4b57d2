//! `--json`: every event as one JSON line, serialised (serde) from its payload.

use std::sync::Arc;

use crate::console::Console;
use crate::events::{Event, Flow, Subscriber};

/// The one JSON subscriber of every command: [`crate::events::Report`] lines are printed,
/// hook points too where the command's JSON output has them (apply, verify, run), and
/// terminal-only notes never.
pub struct JsonSubscriber {
    console: Arc<Console>,
    /// Whether hook points are JSON lines (not for `lock` and `test`, whose lines are their
    /// reports only).
    hook_points: bool,
}

impl JsonSubscriber {
    /// A subscriber printing every hook point and report on `console` (which masks every
    /// secret value).
    pub fn new(console: Arc<Console>) -> Self {
        JsonSubscriber {
            console,
            hook_points: true,
        }
    }

    /// A subscriber printing only [`crate::events::Report`] lines (`lock`, `test`).
    pub fn reports_only(console: Arc<Console>) -> Self {
        JsonSubscriber {
            console,
            hook_points: false,
        }
    }
}

impl JsonSubscriber {
    /// Whether `event` becomes a JSON line here.
    fn prints(&self, event: &Event<'_>) -> bool {
        let hook_point = event.hook_point().is_some();
        !matches!(event, Event::Note(_)) && (self.hook_points || !hook_point)
    }
}

impl Subscriber for JsonSubscriber {
    fn on_event(&self, event: &Event<'_>) -> Flow {
        if !self.prints(event) {
            return Flow::Continue;
        }
        let Some(mut line) = event.to_json() else {
            return Flow::Continue;
        };
        // run streams its output as `output` lines, so `node_run_end` leaves out the (possibly
        // large) captured stdout and stderr that hooks get.
        if let (Event::NodeRunEnd { .. }, Some(o)) = (event, line.as_object_mut()) {
            o.remove("stdout");
            o.remove("stderr");
        }
        self.console.json_line(&line);
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lock` and `test` print their reports only: their hook points (`test`, `lock_add`, …)
    /// were never JSON lines and a reports-only subscriber keeps it so; apply's and run's
    /// subscriber prints both.
    #[test]
    fn reports_only_json_subscriber_prints_no_hook_point() {
        let console = Arc::new(Console::new(crate::console::ConsoleOptions {
            json: true,
            ..Default::default()
        }));
        let reports_only = JsonSubscriber::reports_only(console.clone());
        let everything = JsonSubscriber::new(console);
        assert!(!reports_only.prints(&Event::Test));
        assert!(everything.prints(&Event::Test));
        let log = Event::Report(crate::events::Report::HookLog {
            file: Some("a.rhai"),
            message: "hello",
        });
        assert!(reports_only.prints(&log));
        assert!(everything.prints(&log));
        let note = Event::Note(crate::events::Note::DummySkipped { node: "web1" });
        assert!(!reports_only.prints(&note));
        assert!(!everything.prints(&note));
    }
}
