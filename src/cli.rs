//! The command line: one clap definition serves parsing, `--help` and the man pages.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::console::{ColorChoice, Console, ConsoleOptions};
use crate::error::{Error, Result};

/// cinch: agentless configuration management over SSH.
#[derive(Debug, Parser)]
#[command(name = "cinch", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Repository directory (default: $CINCH_REPO, else the current directory or a parent).
    #[arg(
        short = 'r',
        long = "repo",
        global = true,
        env = "CINCH_REPO",
        value_name = "DIR"
    )]
    pub repo: Option<PathBuf>,
    /// Print JSON lines of events instead of human output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors and final results.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print more detail (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// When to colour output.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring nodes to the state the repo describes.
    Apply(ApplyArgs),
    /// Show what apply would change, without changing anything (exit 1 if anything would).
    Verify(VerifyArgs),
    /// Run a shell command on every selected node, in parallel.
    Run(RunArgs),
    /// Manage soft locks on nodes.
    Lock(LockArgs),
    /// Validate the repo without connecting to any node.
    ///
    /// Runs exactly the local checks apply runs, for every selected node (dummy nodes too),
    /// and reports every problem with its file and line. Exit 0: no problems; 1: problems in
    /// some node's items, templates, dependencies or metadata, or a configured ssh file that
    /// does not exist; 2: the repo does not load.
    Test(TestArgs),
    /// List nodes.
    Nodes(NodesArgs),
    /// List groups.
    Groups(GroupsArgs),
    /// List a node's items.
    Items(ItemsArgs),
    /// Show a node's merged metadata.
    Metadata(MetadataArgs),
    /// Create repos.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

impl Command {
    /// `--add-host-keys` as given to a command that connects; false for the others.
    pub fn add_host_keys(&self) -> bool {
        match self {
            Command::Apply(a) => a.select.connect.add_host_keys,
            Command::Verify(a) => a.select.connect.add_host_keys,
            Command::Run(a) => a.connect.add_host_keys,
            Command::Lock(a) => a.add_host_keys,
            _ => false,
        }
    }
}

/// How to treat ssh host keys; only on commands that connect to nodes.
#[derive(Debug, Args, Clone, Copy)]
pub struct ConnectArgs {
    /// Accept unknown ssh host keys (changed keys are still refused).
    #[arg(long)]
    pub add_host_keys: bool,
}

/// Options shared by apply and verify.
#[derive(Debug, Args, Clone)]
pub struct SelectArgs {
    /// Nodes to work on: names, groups, globs, bundle:NAME, group:NAME, !negations, all (comma-separated).
    pub target: String,
    /// How many nodes to work on at once.
    #[arg(short = 'p', long = "node-workers", value_name = "N")]
    pub node_workers: Option<usize>,
    /// How many items per node to work on at once.
    #[arg(short = 'P', long = "item-workers", value_name = "N")]
    pub item_workers: Option<usize>,
    /// Only these items (and what they need); repeatable or comma-separated.
    #[arg(short = 'o', long = "only", value_name = "SEL", value_delimiter = ',')]
    pub only: Vec<String>,
    /// Skip these items; repeatable or comma-separated.
    #[arg(short = 's', long = "skip", value_name = "SEL", value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Do not show diffs of changed files.
    #[arg(long)]
    pub no_diff: bool,
    /// Report remote commands and bytes per node.
    #[arg(long)]
    pub stats: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `cinch apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Ask before changing each item.
    #[arg(short, long)]
    pub interactive: bool,
    /// Apply even if another apply holds the node's hard lock (a dead holder's lock is taken over without it).
    #[arg(long)]
    pub force: bool,
}

/// `cinch verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub select: SelectArgs,
}

/// `cinch run`.
#[derive(Debug, Args)]
#[command(after_help = RUN_AFTER_HELP)]
pub struct RunArgs {
    /// Nodes to run on (same syntax as apply).
    pub target: String,
    /// The shell command: one quoted argument, or several words joined with spaces; a command
    /// with words starting with '-' goes after '--'.
    #[arg(required = true, value_name = "CMD")]
    pub command: Vec<String>,
    /// How many nodes to run on at once.
    #[arg(short = 'p', long = "node-workers", value_name = "N")]
    pub node_workers: Option<usize>,
    /// Stop a node's command after this many seconds.
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub timeout: Option<f64>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Why options may follow the command, and how to pass a command that starts with '-'.
const RUN_AFTER_HELP: &str = "Options may come before or after the command: \
`cinch run web1 'uptime' --timeout 5` runs `uptime` with a 5 s timeout. An argument starting \
with '-' is always an option of cinch, never part of the command: quote the whole command \
(`cinch run web1 'ls -l /srv'`) or put it after `--` (`cinch run web1 -- ls -l /srv`).";

/// `cinch lock`: the subcommand, and the connection options every lock subcommand shares.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// Accept unknown ssh host keys (changed keys are still refused).
    #[arg(long, global = true)]
    pub add_host_keys: bool,
    #[command(subcommand)]
    pub command: LockCommand,
}

/// `cinch lock ...`.
#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Put a soft lock on nodes; prints its id, one id for all the nodes.
    Add {
        /// Nodes to lock.
        target: String,
        /// Why you lock.
        #[arg(short, long, default_value = "")]
        comment: String,
        /// How long the lock lasts: 30s, 10m, 8h, 2d, 1w, 1d12h.
        #[arg(
            short,
            long = "expires-in",
            default_value = "8h",
            value_name = "DURATION"
        )]
        expires_in: String,
        /// Items to lock (default: all); repeatable or comma-separated.
        #[arg(short, long, value_name = "SEL", value_delimiter = ',')]
        items: Vec<String>,
    },
    /// Show soft locks.
    Show {
        /// Nodes to look at.
        target: String,
        /// Only this lock (case-insensitive), e.g. one added to several nodes at once.
        lock_id: Option<String>,
    },
    /// Remove a soft lock.
    Remove {
        /// Nodes to unlock.
        target: String,
        /// The lock id (case-insensitive).
        lock_id: String,
    },
}

/// `cinch test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Nodes to test (default: all).
    pub target: Option<String>,
}

/// `cinch nodes`.
#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Nodes to list (default: all).
    pub target: Option<String>,
    /// Attributes to show as columns (hostname, groups, bundles, transport, ...).
    #[arg(short = 'a', long = "attrs", value_name = "ATTR", value_delimiter = ',', num_args = 1..)]
    pub attrs: Vec<String>,
}

/// `cinch groups`.
#[derive(Debug, Args)]
pub struct GroupsArgs {
    /// Groups to list, or nodes whose groups to list (default: all).
    pub target: Option<String>,
}

/// `cinch items`.
#[derive(Debug, Args)]
pub struct ItemsArgs {
    /// The node.
    pub node: String,
    /// Show which bundle and file defined each item.
    #[arg(long)]
    pub blame: bool,
}

/// `cinch metadata`.
#[derive(Debug, Args)]
pub struct MetadataArgs {
    /// The node.
    pub node: String,
    /// Only these keys (dotted paths like nginx.workers).
    pub keys: Vec<String>,
}

/// `cinch repo ...`.
#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Write a working example repo into DIR.
    Create {
        /// Where to create it (must be empty or missing).
        dir: PathBuf,
    },
}

/// What every command gets: how to print, where the repo is, connection choices.
pub struct Context {
    pub console: Arc<Console>,
    pub repo_path: Option<PathBuf>,
    pub add_host_keys: bool,
}

impl Context {
    /// Loads the repo the user pointed at.
    pub fn load_repo(&self) -> Result<crate::repo::Repo> {
        crate::repo::Repo::discover(self.repo_path.as_deref())
    }
}

/// Parses the command line, runs the command and turns the result into an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    crate::interrupt::install();
    let console = Arc::new(Console::new(ConsoleOptions {
        json: cli.json,
        quiet: cli.quiet,
        verbose: cli.verbose,
        color: cli.color,
    }));
    // Large -p needs descriptors; the hard limit is ours to use.
    crate::limits::raise_open_files();
    let ctx = Context {
        console: console.clone(),
        repo_path: cli.repo.clone(),
        add_host_keys: cli.command.add_host_keys(),
    };
    let outcome = match dispatch(&ctx, cli.command) {
        // Work stopped by Ctrl-C/SIGTERM fails with errors that all say "interrupted"; the
        // user asked for it, so it is one line and exit 130, whatever the command was doing.
        Err(_) if crate::interrupt::requested() => Err(Error::Interrupted),
        Ok(_) if crate::interrupt::requested() => Ok(130),
        other => other,
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if console.json() {
                console.json_line(&serde_json::json!({"event": "error", "message": e.to_string(), "exit_code": e.exit_code()}));
            } else {
                console.err(&format!("error: {e}"));
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Prints a command-line error (or `--help`/`--version`); for `cinch run` an unknown option
/// also says how to pass a command that has words starting with '-'.
fn usage_error(e: &clap::Error) -> ExitCode {
    let rendered = e.render().to_string();
    if e.kind() == clap::error::ErrorKind::UnknownArgument && rendered.contains("Usage: cinch run ")
    {
        let console = Console::new(ConsoleOptions::default());
        console.err(&format!("{}\n{RUN_UNKNOWN_OPTION}", rendered.trim_end()));
        return ExitCode::from(2);
    }
    let _ = e.print();
    ExitCode::from(if e.use_stderr() { 2 } else { 0 })
}

/// Added to an unknown-option error of `cinch run`, where the option may be meant for the node.
const RUN_UNKNOWN_OPTION: &str = "note: an argument of `cinch run` starting with '-' is an \
option of cinch, never part of the command; quote the whole command (cinch run web1 'ls -l') \
or put it after -- (cinch run web1 -- ls -l)";

fn dispatch(ctx: &Context, command: Command) -> Result<u8> {
    match command {
        Command::Apply(a) => {
            crate::interrupt::announce(ctx.console.clone(), "items");
            crate::apply::cmd_apply(ctx, &a)
        }
        Command::Verify(a) => {
            crate::interrupt::announce(ctx.console.clone(), "items");
            crate::apply::cmd_verify(ctx, &a)
        }
        Command::Run(a) => {
            crate::interrupt::announce(ctx.console.clone(), "commands");
            crate::run::cmd_run(ctx, &a)
        }
        Command::Lock(l) => crate::lock::cmd_lock(ctx, &l.command),
        Command::Test(a) => crate::check::cmd_test(ctx, &a),
        Command::Nodes(a) => crate::inspect::cmd_nodes(ctx, &a),
        Command::Groups(a) => crate::inspect::cmd_groups(ctx, &a),
        Command::Items(a) => crate::inspect::cmd_items(ctx, &a),
        Command::Metadata(a) => crate::inspect::cmd_metadata(ctx, &a),
        Command::Repo(RepoCommand::Create { dir }) => crate::inspect::cmd_repo_create(ctx, &dir),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "cinch", &mut out);
            ctx.console.out_raw(&out);
            Ok(0)
        }
    }
}

/// Writes one man page per (sub)command into `dir`, with the EXIT STATUS, ENVIRONMENT and
/// EXAMPLES sections of [`crate::man`]; `man/` is generated with this and a test checks it is
/// current.
pub fn write_man_pages(dir: &Path) -> Result<()> {
    crate::man::write_pages(Cli::command(), dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(argv: &[&str]) -> std::result::Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from(argv)?;
        match cli.command {
            Command::Run(a) => Ok(a),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn run_options_after_the_command_are_parsed_as_options() {
        let a = run_args(&["cinch", "run", "n9", "echo hi", "--timeout", "2", "-p", "1"])
            .expect("parses");
        assert_eq!(a.command, ["echo hi"]);
        assert_eq!(a.timeout, Some(2.0));
        assert_eq!(a.node_workers, Some(1));
    }

    #[test]
    fn run_words_starting_with_a_dash_need_double_dash() {
        let e = run_args(&["cinch", "run", "n9", "ls", "-l"]).expect_err("-l is no option");
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        let a =
            run_args(&["cinch", "run", "n9", "--timeout", "3", "--", "ls", "-l"]).expect("parses");
        assert_eq!(a.command, ["ls", "-l"]);
        assert_eq!(a.timeout, Some(3.0));
    }
}
