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

impl Subscriber for JsonSubscriber {
    fn on_event(&self, event: &Event<'_>) -> Flow {
        if !self.hook_points && event.hook_point().is_some() {
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
