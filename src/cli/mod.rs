//! The command line: one clap definition serves parsing, `--help` and the man pages.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::console::{ColorChoice, Console, ConsoleOptions};
use crate::error::{Error, Result};
use crate::settings::{
    ApplySettings, DiffSettings, GroupsSettings, HashSettings, ItemsSettings, LockAction,
    MetadataSettings, NodesSettings, RunSettings, SecretAction, Select, Settings, TestSettings,
};

pub mod man;

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
    #[arg(long, global = true, value_enum, default_value_t = ColorArg::Auto)]
    pub color: ColorArg,
    #[command(subcommand)]
    pub command: Command,
}

/// `--color` as clap parses it; the console has its own [`ColorChoice`], free of clap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorArg {
    Auto,
    Always,
    Never,
}

impl From<ColorArg> for ColorChoice {
    fn from(c: ColorArg) -> Self {
        match c {
            ColorArg::Auto => ColorChoice::Auto,
            ColorArg::Always => ColorChoice::Always,
            ColorArg::Never => ColorChoice::Never,
        }
    }
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
    /// Hash each node's configuration (items' expected states), without connecting.
    ///
    /// The same repo gives the same hashes on any machine; a refactor that changes nothing on
    /// the nodes (moving items between bundles, renaming template sources) keeps every hash.
    Hash(HashArgs),
    /// Show what a change of the repo changes on each node, between git revisions, without
    /// connecting (exit 1 if anything differs).
    Diff(DiffArgs),
    /// List nodes.
    Nodes(NodesArgs),
    /// List groups.
    Groups(GroupsArgs),
    /// List a node's items.
    Items(ItemsArgs),
    /// Show a node's merged metadata.
    Metadata(MetadataArgs),
    /// Print the one summary table and exit code of several `--json` runs (shards).
    ///
    /// Reads the `--json` output of `cinch apply`, `verify` or `run` from each FILE (one per
    /// `--shard I/N` job of a CI matrix) and prints the summary table and gives the exit code
    /// that one run over all their nodes would have. No repo or node is needed.
    Report(ReportArgs),
    /// Create repos.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Keys, encrypted values and derived passwords (see docs/secrets.md).
    #[command(subcommand)]
    Secret(SecretCommand),
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
    /// Nodes to work on: names, groups, globs, bundle:NAME, group:NAME, !negations, all (comma-separated); apply --plan takes the plan's when omitted.
    pub target: Option<String>,
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
    /// Only shard I of N (1-based): a stable split of the selected nodes by name, for N
    /// control machines or CI jobs; every node is in exactly one shard.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<crate::shard::Shard>,
    /// Hash every file on the nodes, trusting none of the hashes they cached for files whose
    /// device, inode, size and change time are unchanged (the cache is rebuilt).
    #[arg(long)]
    pub rehash: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

impl SelectArgs {
    /// The validated selection (item selectors checked).
    fn into_settings(self) -> Result<Select> {
        let shard = self.shard;
        let mut select = Select::new(
            self.target.unwrap_or_default(),
            self.node_workers,
            self.item_workers,
            self.only,
            self.skip,
            self.no_diff,
            self.stats,
        )?;
        select.shard = shard;
        select.rehash = self.rehash;
        Ok(select)
    }
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
    /// Apply only the changes of this saved plan (from verify --plan-out); items changed since are left alone.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub rollout: RolloutArgs,
}

/// Rolling work, shared by apply and run.
#[derive(Debug, Args, Clone)]
pub struct RolloutArgs {
    /// Work in batches of N nodes (or N% of them); a batch finishes before the next starts.
    #[arg(long, value_name = "N|N%", value_parser = parse_batch)]
    pub batch: Option<crate::fleet::Amount>,
    /// Start no new node once more than N nodes (or N% of them) have failed; the rest are
    /// reported "not started (failure budget spent)" and the exit code is 1.
    #[arg(long, value_name = "N|N%", value_parser = parse_max_fail)]
    pub max_fail: Option<crate::fleet::Amount>,
    /// Append each node that finished successfully to FILE (flushed at once); nodes already
    /// in FILE are skipped, so a rerun continues where an interrupted run stopped.
    #[arg(long, value_name = "FILE")]
    pub resume_file: Option<PathBuf>,
}

impl RolloutArgs {
    fn into_settings(self) -> crate::fleet::Rollout {
        crate::fleet::Rollout {
            batch: self.batch,
            max_fail: self.max_fail,
            resume_file: self.resume_file,
        }
    }
}

/// clap's parser for `--shard`.
fn parse_shard(text: &str) -> std::result::Result<crate::shard::Shard, String> {
    crate::shard::Shard::parse(text).map_err(|e| e.to_string())
}

/// clap's parser for `--batch`.
fn parse_batch(text: &str) -> std::result::Result<crate::fleet::Amount, String> {
    crate::fleet::Amount::parse("--batch", text).map_err(|e| e.to_string())
}

/// clap's parser for `--max-fail`.
fn parse_max_fail(text: &str) -> std::result::Result<crate::fleet::Amount, String> {
    crate::fleet::Amount::parse("--max-fail", text).map_err(|e| e.to_string())
}

/// `cinch verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Also write what would change to FILE as a saved plan for apply --plan.
    #[arg(long, value_name = "FILE")]
    pub plan_out: Option<std::path::PathBuf>,
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
    /// Only shard I of N (1-based): a stable split of the selected nodes by name, for N
    /// control machines or CI jobs; every node is in exactly one shard.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<crate::shard::Shard>,
    #[command(flatten)]
    pub rollout: RolloutArgs,
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

impl LockCommand {
    /// The validated lock action: expiry parsed, lock ids normalised.
    fn into_settings(self) -> Result<LockAction> {
        Ok(match self {
            LockCommand::Add {
                target,
                comment,
                expires_in,
                items,
            } => LockAction::Add {
                target,
                comment,
                expires_in: LockAction::expiry(&expires_in)?,
                items,
            },
            LockCommand::Show { target, lock_id } => LockAction::Show {
                target,
                lock_id: lock_id.as_deref().map(LockAction::lock_id).transpose()?,
            },
            LockCommand::Remove { target, lock_id } => LockAction::Remove {
                target,
                lock_id: LockAction::lock_id(&lock_id)?,
            },
        })
    }
}

/// `cinch report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// `--json` outputs of apply, verify or run, one per shard.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// `cinch test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Nodes to test (default: all).
    pub target: Option<String>,
}

/// `cinch hash`.
#[derive(Debug, Args)]
pub struct HashArgs {
    /// Nodes to hash (default: all).
    pub target: Option<String>,
    /// Include each node's merged metadata in its hash.
    #[arg(long)]
    pub metadata: bool,
    /// Also print the hash of every item.
    #[arg(long)]
    pub items: bool,
    /// Only shard I of N (1-based): a stable split of the selected nodes by name, for N
    /// control machines or CI jobs; every node is in exactly one shard.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<crate::shard::Shard>,
}

/// `cinch diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// REV (compared with the work tree) or REV..REV2: git commits, branches or tags.
    #[arg(value_name = "REV[..REV2]")]
    pub revisions: String,
    /// Nodes to compare (default: all); a node added or removed exists on one side only.
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
    /// Show where each attribute value came from (the node, a group, a reactor, a default).
    #[arg(long)]
    pub blame: bool,
    /// Only shard I of N (1-based): a stable split of the selected nodes by name, for N
    /// control machines or CI jobs; every node is in exactly one shard.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<crate::shard::Shard>,
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
    /// Show secret values instead of [secret:ID] (needs the keys).
    #[arg(long)]
    pub reveal: bool,
    /// Show, for each value, the layer and file:line (or reactor) that set it.
    #[arg(long)]
    pub blame: bool,
}

/// `cinch secret ...`.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Add a new random key to the key file (created with mode 0600 if missing).
    Keygen {
        /// The key's name.
        #[arg(default_value = "default")]
        name: String,
    },
    /// Encrypt TEXT (or stdin) and print the ciphertext, for "!decrypt:..." or decrypt().
    Encrypt {
        /// The key to encrypt with.
        #[arg(short, long, default_value = "default")]
        key: String,
        /// The value; '-' or nothing reads stdin (keeps it out of your shell history).
        text: Option<String>,
    },
    /// Decrypt a ciphertext (or stdin) and print the value.
    Decrypt {
        /// The ciphertext; '-' or nothing reads stdin.
        ciphertext: Option<String>,
    },
    /// Encrypt a file into DEST, for decrypt_file() or "!decrypt_file:...".
    EncryptFile {
        /// The key to encrypt with.
        #[arg(short, long, default_value = "default")]
        key: String,
        /// The plain file.
        source: PathBuf,
        /// Where to write the encrypted file (usually in a bundle's files/).
        dest: PathBuf,
    },
    /// Print the password password_for(ID) derives (ID@KEY for another key than default).
    PasswordFor {
        /// The password's id.
        id: String,
        /// How many characters.
        #[arg(short, long, default_value_t = crate::repo::secrets::DEFAULT_PASSWORD_LEN)]
        length: usize,
        /// The human_password_for(ID) form instead.
        #[arg(long)]
        human: bool,
    },
    /// Re-encrypt every value and file of key OLD in the repo with key NEW, in place.
    Rotate {
        /// The key the values are encrypted with now.
        old: String,
        /// The key to encrypt them with.
        new: String,
    },
}

impl SecretCommand {
    /// The validated form the `secret` command consumes.
    fn into_settings(self) -> SecretAction {
        match self {
            SecretCommand::Keygen { name } => SecretAction::Keygen { name },
            SecretCommand::Encrypt { key, text } => SecretAction::Encrypt { key, text },
            SecretCommand::Decrypt { ciphertext } => SecretAction::Decrypt { ciphertext },
            SecretCommand::EncryptFile { key, source, dest } => {
                SecretAction::EncryptFile { key, source, dest }
            }
            SecretCommand::PasswordFor { id, length, human } => {
                SecretAction::PasswordFor { id, length, human }
            }
            SecretCommand::Rotate { old, new } => SecretAction::Rotate { old, new },
        }
    }
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
        color: cli.color.into(),
    }));
    // Large -p needs descriptors; the hard limit is ours to use.
    crate::limits::raise_open_files();
    let ctx = Settings {
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
                let line = crate::events::Report::Error {
                    message: &e.to_string(),
                    exit_code: Some(e.exit_code()),
                };
                console.json_line(&line.to_json());
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

fn dispatch(ctx: &Settings, command: Command) -> Result<u8> {
    // Commands that only show or check the repo work without secret keys (masked stand-ins);
    // those that use the values fail where a key is missing. `hash` and `diff` describe what
    // apply would write, so a stand-in would give a hash that depends on who has the keys.
    let need = match &command {
        Command::Apply(_)
        | Command::Verify(_)
        | Command::Secret(_)
        | Command::Hash(_)
        | Command::Diff(_) => crate::repo::secrets::Need::Values,
        Command::Metadata(m) if m.reveal => crate::repo::secrets::Need::Values,
        _ => crate::repo::secrets::Need::Placeholders,
    };
    crate::repo::secrets::set_need(need);
    match command {
        Command::Apply(a) => {
            let settings = ApplySettings {
                select: a.select.into_settings()?,
                interactive: a.interactive,
                force: a.force,
                plan: a.plan,
                rollout: a.rollout.into_settings(),
            };
            crate::interrupt::announce(ctx.console.clone(), "items");
            crate::commands::apply::cmd_apply(ctx, &settings)
        }
        Command::Verify(a) => {
            if a.select.target.is_none() {
                return Err(Error::Usage(
                    "verify needs a TARGET (nodes, groups, all)".into(),
                ));
            }
            let select = a.select.into_settings()?;
            crate::interrupt::announce(ctx.console.clone(), "items");
            crate::commands::apply::cmd_verify(ctx, &select, a.plan_out.as_deref())
        }
        Command::Run(a) => {
            let mut settings = RunSettings::new(a.target, &a.command, a.timeout, a.node_workers)?;
            settings.shard = a.shard;
            settings.rollout = a.rollout.into_settings();
            crate::interrupt::announce(ctx.console.clone(), "commands");
            crate::commands::run::cmd_run(ctx, &settings)
        }
        Command::Lock(l) => crate::commands::lock::cmd_lock(ctx, &l.command.into_settings()?),
        Command::Test(a) => {
            crate::commands::check::cmd_test(ctx, &TestSettings { target: a.target })
        }
        Command::Nodes(a) => crate::commands::inspect::cmd_nodes(
            ctx,
            &NodesSettings {
                target: a.target,
                attrs: a.attrs,
                blame: a.blame,
                shard: a.shard,
            },
        ),
        Command::Groups(a) => {
            crate::commands::inspect::cmd_groups(ctx, &GroupsSettings { target: a.target })
        }
        Command::Items(a) => crate::commands::inspect::cmd_items(
            ctx,
            &ItemsSettings {
                node: a.node,
                blame: a.blame,
            },
        ),
        Command::Metadata(a) => crate::commands::inspect::cmd_metadata(
            ctx,
            &MetadataSettings {
                node: a.node,
                keys: a.keys,
                reveal: a.reveal,
                blame: a.blame,
            },
        ),
        Command::Repo(RepoCommand::Create { dir }) => {
            crate::commands::inspect::cmd_repo_create(ctx, &dir)
        }
        Command::Hash(a) => crate::commands::hash::cmd_hash(
            ctx,
            &HashSettings {
                target: a.target,
                metadata: a.metadata,
                items: a.items,
                shard: a.shard,
            },
        ),
        Command::Diff(a) => crate::commands::diff::cmd_diff(
            ctx,
            &DiffSettings {
                revisions: a.revisions,
                target: a.target,
            },
        ),
        Command::Secret(s) => crate::commands::secret::cmd_secret(ctx, &s.into_settings()),
        Command::Report(a) => crate::commands::report::cmd_report(
            ctx,
            &crate::commands::report::ReportSettings { files: a.files },
        ),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "cinch", &mut out);
            ctx.console.out_raw(&out);
            Ok(0)
        }
    }
}

/// Writes one man page per (sub)command into `dir`, with the EXIT STATUS, ENVIRONMENT and
/// EXAMPLES sections of [`man`]; `man/` is generated with this and a test checks it is
/// current.
pub fn write_man_pages(dir: &Path) -> Result<()> {
    man::write_pages(Cli::command(), dir)
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
