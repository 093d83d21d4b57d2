//! The terminal renderer of `cinch test`: hook lint warnings, problems (with the nodes they
//! were found on), `-v`'s line per checked node, and the closing summary.

use std::sync::Arc;

use crate::console::Console;
use crate::diag::{Diagnostic, Location};
use crate::events::{Event, Flow, Note, Report, Subscriber};
use crate::output::test::{problem, summary, warning};

/// test's terminal output.
pub struct TestRenderer {
    console: Arc<Console>,
}

impl TestRenderer {
    /// A renderer printing on `console`.
    pub fn new(console: Arc<Console>) -> Self {
        TestRenderer { console }
    }
}

/// The finding a `test_warning` or `test_problem` payload describes, to be shown as text.
fn diagnostic(
    file: &Option<String>,
    line: Option<usize>,
    column: Option<usize>,
    message: &str,
    hint: Option<&str>,
) -> Diagnostic {
    let mut diag = match file {
        Some(file) => Diagnostic::at(
            Location {
                file: file.into(),
                line: line.unwrap_or(0),
                column: column.unwrap_or(0),
            },
            message,
        ),
        None => Diagnostic::new(message),
    };
    diag.hint = hint.map(str::to_string);
    diag
}

impl Subscriber for TestRenderer {
    fn on_event(&self, event: &Event<'_>) -> Flow {
        if self.console.json() {
            return Flow::Continue;
        }
        match event {
            Event::Report(Report::TestWarning {
                file,
                line,
                column,
                message,
                hint,
            }) => {
                let diag = diagnostic(file, *line, *column, message, *hint);
                self.console.err(&warning(&diag));
            }
            Event::Report(Report::TestProblem {
                file,
                line,
                column,
                message,
                hint,
                nodes,
            }) => {
                let diag = diagnostic(file, *line, *column, message, *hint);
                self.console.err(&problem(&diag, nodes));
            }
            Event::Note(Note::NodeChecked { node, items }) if self.console.verbose() > 0 => {
                self.console.out(&format!("ok  {node}  {items} items"));
            }
            Event::Note(Note::TestSummary {
                nodes,
                bad_nodes,
                items,
                problems,
                why,
            }) => {
                let line = summary(*nodes, *bad_nodes, *items, *problems, why);
                if *problems == 0 {
                    self.console.out(&line);
                } else {
                    self.console.err(&line);
                }
            }
            _ => {}
        }
        Flow::Continue
    }
}
