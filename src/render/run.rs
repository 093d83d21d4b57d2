//! The terminal renderer of `cinch run`: each node's output as prefixed lines (one write per
//! chunk, so lines of different nodes never mix), dummy-node and error lines, and the
//! summary table.

use std::sync::Arc;

use crate::console::Console;
use crate::events::{Event, Flow, Note, Report, Subscriber};
use crate::output::run::{prefixed_lines, run_table};

/// run's terminal output; node names are padded to the longest selected name.
pub struct RunRenderer {
    console: Arc<Console>,
    /// The width node names are padded to.
    width: usize,
}

impl RunRenderer {
    /// A renderer for a run over nodes whose longest name is `width` characters.
    pub fn new(console: Arc<Console>, width: usize) -> Self {
        RunRenderer { console, width }
    }
}

impl Subscriber for RunRenderer {
    fn on_event(&self, event: &Event<'_>) -> Flow {
        if self.console.json() {
            return Flow::Continue;
        }
        match event {
            Event::Note(Note::RunOutput { node, stream, text }) => {
                let lines = text.strip_suffix('\n').unwrap_or(text).split('\n');
                let stderr = *stream == "stderr";
                let buf = prefixed_lines(node, self.width, stderr, self.console.color(), lines);
                self.console.out_raw(buf.as_bytes());
            }
            Event::Note(Note::DummySkipped { node }) if !self.console.quiet() => {
                self.console
                    .err(&format!("{node} is a dummy node: skipped"));
            }
            Event::Note(Note::ErrorLine { text }) => self.console.err(text),
            Event::Report(Report::RunSummary {
                rows, interrupted, ..
            }) => {
                self.console.out(&run_table(rows));
                if *interrupted {
                    self.console
                        .err("interrupted: nodes not yet started were left alone");
                }
            }
            _ => {}
        }
        Flow::Continue
    }
}
