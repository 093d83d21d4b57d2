//! The terminal renderer of the hooks' own lines: `log()` lines (`hook FILE: TEXT`, hidden by
//! `-q`) and hook failures (`error: FILE:LINE:COL: hook POINT failed: …`, on stderr).

use std::sync::Arc;

use crate::console::Console;
use crate::diag::{Diagnostic, Location};
use crate::events::{Event, Flow, Report, Subscriber};

/// Shows hook `log()` and error lines on the terminal (JSON lines are the JSON subscriber's).
pub struct HookLines {
    console: Arc<Console>,
}

impl HookLines {
    /// A renderer printing on `console`.
    pub fn new(console: Arc<Console>) -> Self {
        HookLines { console }
    }
}

impl Subscriber for HookLines {
    fn on_event(&self, event: &Event<'_>) -> Flow {
        if self.console.json() {
            return Flow::Continue;
        }
        match event {
            Event::Report(Report::HookLog { file, message }) if !self.console.quiet() => match file
            {
                Some(f) => self.console.out(&format!("hook {f}: {message}")),
                None => self.console.out(&format!("hook: {message}")),
            },
            Event::Report(Report::HookError {
                hook,
                file,
                line,
                column,
                message,
            }) => {
                let diag = Diagnostic::at(
                    Location {
                        file: file.to_path_buf(),
                        line: *line,
                        column: *column,
                    },
                    format!("hook {hook} failed: {message}"),
                );
                self.console.err(&format!("error: {diag}"));
            }
            _ => {}
        }
        Flow::Continue
    }

    /// Only the hooks' own lines.
    fn reads_item_states(&self) -> bool {
        false
    }
}
