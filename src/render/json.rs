//! `--json`: every event as one JSON line, serialised (serde) from its payload.

use std::sync::Arc;

use crate::console::Console;
use crate::events::{Event, Flow, Subscriber};

/// The JSON subscriber of apply, verify and run: hook points and [`crate::events::Report`]
/// lines are printed, terminal-only notes are not.
pub struct JsonSubscriber {
    console: Arc<Console>,
}

impl JsonSubscriber {
    /// A subscriber printing on `console` (which masks every secret value).
    pub fn new(console: Arc<Console>) -> Self {
        JsonSubscriber { console }
    }
}

impl Subscriber for JsonSubscriber {
    fn on_event(&self, event: &Event<'_>) -> Flow {
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
