//! The one console layer: every line the user sees goes through here, so progress bars and
//! output from many node workers never tear each other.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{MultiProgress, ProgressDrawTarget};

/// When to use colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

/// How the user asked cinch to talk.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsoleOptions {
    pub json: bool,
    pub quiet: bool,
    pub verbose: u8,
    pub color: ColorChoice,
}

/// Shared by all workers; writes are serialised and never panic on a closed pipe.
pub struct Console {
    opts: ConsoleOptions,
    color: bool,
    tty: bool,
    multi: MultiProgress,
    write_lock: Mutex<()>,
    closed: AtomicBool,
}

impl Console {
    /// A console writing to this process's stdout and stderr.
    pub fn new(opts: ConsoleOptions) -> Self {
        let tty = std::io::stderr().is_terminal() && std::io::stdout().is_terminal();
        let color = match opts.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => tty && std::env::var_os("NO_COLOR").is_none(),
        };
        console::set_colors_enabled(color);
        console::set_colors_enabled_stderr(color);
        let target = if tty && !opts.json && !opts.quiet {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Console {
            opts,
            color,
            tty,
            multi: MultiProgress::with_draw_target(target),
            write_lock: Mutex::new(()),
            closed: AtomicBool::new(false),
        }
    }

    /// `--json`: events as JSON lines instead of human output.
    pub fn json(&self) -> bool {
        self.opts.json
    }

    /// `-q`: only errors and the final result.
    pub fn quiet(&self) -> bool {
        self.opts.quiet
    }

    /// `-v` count.
    pub fn verbose(&self) -> u8 {
        self.opts.verbose
    }

    /// Whether output may be coloured.
    pub fn color(&self) -> bool {
        self.color
    }

    /// Whether stdout and stderr are terminals (progress bars, prompts).
    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// The progress-bar container; bars added here are hidden when not on a TTY.
    pub fn progress(&self) -> &MultiProgress {
        &self.multi
    }

    /// Prints one line of normal output to stdout.
    pub fn out(&self, line: &str) {
        self.write(false, line);
    }

    /// Prints one line of diagnostics to stderr.
    pub fn err(&self, line: &str) {
        self.write(true, line);
    }

    /// Prints one JSON value as a line on stdout.
    pub fn json_line(&self, value: &serde_json::Value) {
        self.write(false, &value.to_string());
    }

    /// Writes raw bytes to stdout (e.g. `cinch run` output); a trailing newline is not added.
    pub fn out_raw(&self, bytes: &[u8]) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.multi.suspend(|| {
            let mut out = std::io::stdout().lock();
            if out.write_all(bytes).and_then(|()| out.flush()).is_err() {
                self.closed.store(true, Ordering::Relaxed);
            }
        });
    }

    /// Shows `question` on stderr and reads one line of answer from stdin (`None` at end of
    /// input). Holds the output lock meanwhile, so questions from parallel nodes never interleave.
    pub fn ask(&self, question: &str) -> Option<String> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.multi.suspend(|| {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "{question}").and_then(|()| e.flush());
            let mut answer = String::new();
            match std::io::stdin().read_line(&mut answer) {
                Ok(0) | Err(_) => None,
                Ok(_) => Some(answer),
            }
        })
    }

    fn write(&self, to_stderr: bool, line: &str) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.multi.suspend(|| {
            let res = if to_stderr {
                let mut e = std::io::stderr().lock();
                writeln!(e, "{line}")
            } else {
                let mut o = std::io::stdout().lock();
                writeln!(o, "{line}").and_then(|()| o.flush())
            };
            // A closed pipe (`cinch nodes | head -1`) is not an error: stop writing quietly.
            if res.is_err() {
                self.closed.store(true, Ordering::Relaxed);
            }
        });
    }
}
