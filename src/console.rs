//! The one console layer: every line the user sees goes through here, so progress bars and
//! output from many node workers never tear each other.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{MultiProgress, ProgressDrawTarget};

/// When to use colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

/// The answer to [`Console::ask`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// One of the keys asked for (lowercase; `'\n'` for Enter).
    Key(char),
    /// Stdin ended (or the terminal went away) before an answer.
    EndOfInput,
    /// Ctrl-C pressed at the question (raw mode turns it into a key, not a signal).
    Interrupt,
}

/// Reads single key presses in raw mode until one of `keys`; echoes the answer.
fn ask_key(e: &mut impl Write, term: &console::Term, keys: &[char]) -> Reply {
    loop {
        let key = match term.read_key_raw() {
            Ok(console::Key::Enter) => '\n',
            Ok(console::Key::Char('\u{4}')) => return Reply::EndOfInput,
            Ok(console::Key::Char(c)) => c.to_ascii_lowercase(),
            Ok(console::Key::CtrlC) => {
                let _ = writeln!(e, "^C");
                return Reply::Interrupt;
            }
            Ok(_) => continue,
            Err(_) => return Reply::EndOfInput,
        };
        if keys.contains(&key) {
            let shown = if key == '\n' {
                String::new()
            } else {
                key.to_string()
            };
            let _ = writeln!(e, "{shown}");
            return Reply::Key(key);
        }
    }
}

/// Reads lines from stdin until one answers with one of `keys` (a letter or a word starting
/// with it; an empty line is Enter).
fn ask_line(e: &mut impl Write, keys: &[char]) -> Reply {
    loop {
        let mut line = String::new();
        match std::io::stdin().read_line(&mut line) {
            Ok(0) | Err(_) => return Reply::EndOfInput,
            Ok(_) => {}
        }
        let word = line.trim().to_ascii_lowercase();
        let key = word.chars().next().unwrap_or('\n');
        let known = ["yes", "no", "quit"].iter().any(|w| w.starts_with(&word));
        if keys.contains(&key) && (word.is_empty() || known) {
            return Reply::Key(key);
        }
        let list: Vec<String> = keys
            .iter()
            .filter(|k| **k != '\n')
            .map(char::to_string)
            .collect();
        let _ = write!(e, "answer {}: ", list.join(", ")).and_then(|()| e.flush());
    }
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

    /// Prints one line of normal output to stdout (secrets masked, as everywhere).
    pub fn out(&self, line: &str) {
        self.write(false, &crate::mask::mask(line));
    }

    /// Prints one line of diagnostics to stderr (secrets masked).
    pub fn err(&self, line: &str) {
        self.write(true, &crate::mask::mask(line));
    }

    /// Prints one JSON value as a line on stdout (secrets masked in every string).
    pub fn json_line(&self, value: &serde_json::Value) {
        self.write(false, &crate::mask::mask_json(value).to_string());
    }

    /// Prints a line with secrets shown: only for what the user explicitly asked to see
    /// (`cinch metadata --reveal`, `cinch secret decrypt`).
    pub fn out_revealed(&self, line: &str) {
        self.write(false, line);
    }

    /// Writes raw bytes to stdout (e.g. `cinch run` output), secrets masked; a trailing
    /// newline is not added.
    pub fn out_raw(&self, bytes: &[u8]) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let bytes = crate::mask::mask_bytes(bytes);
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.multi.suspend(|| {
            let mut out = std::io::stdout().lock();
            if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
                self.closed.store(true, Ordering::Relaxed);
            }
        });
    }

    /// Shows `question` on stderr and waits for one of `keys` (lowercase; `'\n'` stands for
    /// Enter). On a terminal a single key press answers (raw mode, no Enter needed); otherwise
    /// one line of stdin does. Holds the output lock meanwhile, so questions from parallel
    /// nodes never interleave.
    pub fn ask(&self, question: &str, keys: &[char]) -> Reply {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.multi.suspend(|| {
            let term = console::Term::stderr();
            let mut e = std::io::stderr().lock();
            let question = crate::mask::mask(question);
            let _ = write!(e, "{question}").and_then(|()| e.flush());
            if std::io::stdin().is_terminal() && term.is_term() {
                ask_key(&mut e, &term, keys)
            } else {
                ask_line(&mut e, keys)
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
