//! The terminal renderer of `cinch lock add/show/remove`: a line per node added to or removed
//! from, a line per node skipped or failed, warnings about a node's lock file, and `show`'s
//! table of the locks found.

use std::sync::{Arc, Mutex};

use crate::console::Console;
use crate::events::{Event, Flow, Note, Report, Subscriber};
use crate::lock::{format_remaining, format_time, now};
use crate::output::lock::{LockRow, added, node_line, removed, table};
use crate::output::{Lines, untrusted};

/// lock's terminal output; `show`'s rows are kept until every node has answered.
pub struct LockRenderer {
    console: Arc<Console>,
    rows: Mutex<Vec<LockRow>>,
}

impl LockRenderer {
    /// A renderer printing on `console`.
    pub fn new(console: Arc<Console>) -> Self {
        LockRenderer {
            console,
            rows: Mutex::new(Vec::new()),
        }
    }

    fn rows(&self) -> std::sync::MutexGuard<'_, Vec<LockRow>> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn show_end(&self, lock_id: Option<&str>, answered: usize, failed: bool) {
        let rows = self.rows();
        if !rows.is_empty() {
            self.console.out(&table(&rows));
            return;
        }
        // Never "no soft locks" for nodes that could not be read.
        let what = match lock_id {
            Some(id) => format!("no soft lock {id}"),
            None => "no soft locks".to_string(),
        };
        if !failed {
            self.console.out(&what);
        } else if answered > 0 {
            self.console
                .out(&format!("{what} on the nodes that answered"));
        }
    }
}

impl Subscriber for LockRenderer {
    fn on_event(&self, event: &Event<'_>) -> Flow {
        // A node's lock file that is partly unreadable is worth a warning even with --json.
        if let Event::Note(Note::Warning { text }) = event {
            self.console
                .err(&format!("warning: {}", untrusted(text, Lines::Escape)));
            return Flow::Continue;
        }
        if self.console.json() {
            return Flow::Continue;
        }
        match event {
            Event::Report(Report::LockAdded { node, lock, .. }) => {
                if self.console.quiet() {
                    self.console.out(&lock.id);
                } else {
                    self.console
                        .out(&added(node, &lock.id, &format_time(lock.expiry)));
                }
            }
            Event::Report(Report::Lock { node, lock, .. }) => self.rows().push(LockRow {
                node: node.to_string(),
                id: lock.id.clone(),
                owner: lock.user.clone(),
                created: format_time(lock.date),
                expires_in: format_remaining(lock.expiry - now()),
                items: lock.items.join(", "),
                comment: lock.comment.clone(),
            }),
            Event::Report(Report::LockRemoved { node, lock_id }) => {
                self.console.out(&removed(node, lock_id));
            }
            Event::Report(Report::LockNode {
                node,
                status,
                reason,
            }) => self.console.err(&node_line(node, status, *reason)),
            Event::Note(Note::LockShowEnd {
                lock_id,
                answered,
                failed,
            }) => self.show_end(*lock_id, *answered, *failed),
            _ => {}
        }
        Flow::Continue
    }
}
