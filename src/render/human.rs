//! The terminal renderer of apply and verify, a bus subscriber: item lines (with diffs and
//! drift words), node lines, progress bars and the summary table; it also asks `-i`'s
//! questions (the executor's [`Asker`]), since it owns the terminal while nodes run.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};

use crate::console::{Console, Reply};
use crate::events::{Drift, Event, Flow, ItemReport, ItemStatus, Note, Report, Subscriber};
use crate::executor::{Answer, Asker};
use crate::items::Item;
use crate::output::apply::{self as output, apply_table};
use crate::repo::Node;

/// apply's and verify's terminal output and its state: the progress bars (the overall one
/// and one per node, keyed by node name) and the `-i` answers shared by all nodes.
pub struct Reporter {
    console: Arc<Console>,
    /// `-i`: diffs were shown in the questions, so item lines do not repeat them.
    interactive: bool,
    /// `-i`: someone answered `q` (or the input ended); shared by all nodes.
    quit: AtomicBool,
    /// `-i`: the input ended before an answer; the command fails.
    input_ended: AtomicBool,
    /// `-i`: held from a question until its answer is recorded.
    asking: std::sync::Mutex<()>,
    overall: Option<ProgressBar>,
    /// Each running node's bar.
    bars: std::sync::Mutex<HashMap<String, ProgressBar>>,
}

impl Reporter {
    /// The renderer for a run over `total_items` items (progress only on a terminal).
    pub fn new(console: Arc<Console>, interactive: bool, total_items: usize) -> Self {
        let overall = (console.is_tty() && !console.json() && !console.quiet()).then(|| {
            let pb = console.progress().add(ProgressBar::new(total_items as u64));
            pb.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30}] {pos}/{len} items  {elapsed}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            pb.set_prefix("total");
            pb
        });
        Reporter {
            console,
            interactive,
            quit: AtomicBool::new(false),
            input_ended: AtomicBool::new(false),
            asking: std::sync::Mutex::new(()),
            overall,
            bars: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Why nodes not started yet are left alone after an interactive quit, if one happened.
    pub fn quit_reason(&self) -> Option<&'static str> {
        if self.input_ended.load(Ordering::SeqCst) {
            Some("no answer: input ended")
        } else if self.quit.load(Ordering::SeqCst) {
            Some("quit interactively")
        } else {
            None
        }
    }

    /// Whether `-i`'s input ended before every question was answered (the command fails).
    pub fn input_ended(&self) -> bool {
        self.input_ended.load(Ordering::SeqCst)
    }

    /// Ends the overall progress bar (before the summary or an early stop).
    pub fn finish(&self) {
        if let Some(o) = &self.overall {
            o.finish_and_clear();
            self.console.progress().remove(o);
        }
    }

    /// The console it prints on (the apply guard warns on it too).
    pub fn console(&self) -> &Console {
        &self.console
    }

    fn human(&self) -> bool {
        !self.console.json()
    }

    fn bars(&self) -> std::sync::MutexGuard<'_, HashMap<String, ProgressBar>> {
        self.bars.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn node_line(&self, node: &str, msg: &str, error: bool) {
        if !self.human() {
            return;
        }
        let line = output::node_line(node, msg, error);
        if error {
            self.console.err(&line);
        } else if !self.console.quiet() {
            self.console.out(&line);
        }
    }

    fn node_started(&self, node: &str, items: usize) {
        if self.overall.is_none() {
            return;
        }
        let pb = self.console.progress().add(ProgressBar::new(items as u64));
        pb.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len}  {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_prefix(node.to_string());
        self.bars().insert(node.to_string(), pb);
    }

    fn node_finished(&self, node: &str) {
        if let Some(bar) = self.bars().remove(node) {
            bar.finish_and_clear();
            self.console.progress().remove(&bar);
        }
    }

    fn item_line(&self, node: &str, item: &Item, r: &ItemReport, drift: Option<&Drift>) {
        if let Some(bar) = self.bars().get(node) {
            bar.inc(1);
        }
        if let Some(o) = &self.overall {
            o.inc(1);
        }
        if !self.human() {
            return;
        }
        // verify: the drift attribution goes with the verdict, after a soft-lock reason if any.
        let attributed = drift.map(|d| {
            let words =
                output::drift_words(&d.applied_by, &d.applied_at, d.node_changed, d.repo_changed);
            match &r.reason {
                Some(why) => format!("{why}; {words}"),
                None => words,
            }
        });
        let result = output::ItemResult {
            node,
            bundle: &item.bundle,
            id: &item.id,
            verdict: verdict_of(r.outcome),
            verb: r.verb,
            reason: attributed.as_deref().or(r.reason.as_deref()),
            diff: r.diff.as_deref(),
            quiet: r.quiet,
        };
        let verbosity = output::Verbosity {
            verbose: self.console.verbose(),
            quiet: self.console.quiet(),
            interactive: self.interactive,
        };
        match output::item_line(&result, verbosity) {
            Some((text, true)) => self.console.err(&text),
            Some((text, false)) => self.console.out(&text),
            None => {}
        }
    }

    fn summary(&self, s: &crate::events::ApplySummary) {
        if !self.human() {
            return;
        }
        if s.interrupted {
            self.console
                .err("interrupted: no new work was started after Ctrl-C");
        }
        self.console.out(&apply_table(&s.rows, s.verify(), s.stats));
    }
}

impl Subscriber for Reporter {
    fn on_event(&self, event: &Event<'_>) -> Flow {
        match event {
            Event::Note(Note::NodeStarted { node, items }) => self.node_started(node, *items),
            Event::Note(Note::NodeLine {
                node,
                message,
                error,
            }) => self.node_line(node, message, *error),
            Event::Note(Note::NodeFinished { node }) => self.node_finished(node),
            Event::Note(Note::ItemResult {
                node,
                item,
                report,
                drift,
            }) => self.item_line(node, item, report, *drift),
            Event::Note(Note::ErrorLine { text }) if self.human() => self.console.err(text),
            Event::Report(Report::NodeSkipped { node, reason }) => {
                self.node_line(node, &format!("skipped by hook ({reason})"), false);
            }
            Event::Report(Report::ApplySummary(s)) => self.summary(s),
            _ => {}
        }
        Flow::Continue
    }

    /// Item lines show verbs, reasons and diffs, never the states.
    fn reads_item_states(&self) -> bool {
        false
    }
}

impl Asker for Reporter {
    fn ask(&self, node: &Node, item: &Item, verb: &str, diff: &str) -> Answer {
        // One question at a time across nodes, and the answer recorded before the next node
        // may ask: once anyone quit, no node asks again.
        let _asking = self.asking.lock().unwrap_or_else(|p| p.into_inner());
        if self.quit.load(Ordering::SeqCst) {
            return Answer::Quit;
        }
        let q = output::question(&node.name, &item.id, verb, diff);
        let reply = self.console.ask(&q, &['\n', 'y', 'n', 'q']);
        let answer = match reply {
            Reply::Key('\n' | 'y') => Answer::Yes,
            Reply::Key('n') => Answer::No,
            Reply::Key(_) => Answer::Quit,
            Reply::EndOfInput => {
                self.input_ended.store(true, Ordering::SeqCst);
                Answer::EndOfInput
            }
            Reply::Interrupt => {
                // Raw mode swallowed the Ctrl-C: deliver it, so it acts like one.
                let _ = signal_hook::low_level::raise(signal_hook::consts::SIGINT);
                Answer::Quit
            }
        };
        if matches!(answer, Answer::Quit | Answer::EndOfInput) {
            self.quit.store(true, Ordering::SeqCst);
        }
        answer
    }
}

/// The executor's outcome as the item line names it.
fn verdict_of(o: ItemStatus) -> output::Verdict {
    match o {
        ItemStatus::Ok => output::Verdict::Ok,
        ItemStatus::Fixed => output::Verdict::Fixed,
        ItemStatus::Skipped => output::Verdict::Skipped,
        ItemStatus::Failed => output::Verdict::Failed,
        ItemStatus::WouldChange => output::Verdict::WouldChange,
    }
}
