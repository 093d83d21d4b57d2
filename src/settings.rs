//! Validated settings: what the user asked for, checked once before any work starts.
//!
//! The command line ([`crate::cli`]) is parsed by clap and then turned into these values:
//! item selectors are checked, durations and timeouts parsed, worker counts range-checked,
//! lock ids normalised. Command modules ([`crate::commands`]) consume only these types, so
//! nothing below the commands knows about clap or the command line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::console::Console;
use crate::error::{Error, Result};
use crate::transport::ConnectOptions;

/// What every command gets: how to print, where the repo is, how to connect.
pub struct Settings {
    /// The one console every line of output goes through.
    pub console: Arc<Console>,
    /// `-r`/`$CINCH_REPO`; `None` searches the current directory and its parents.
    pub repo_path: Option<PathBuf>,
    /// `--add-host-keys` on a command that connects (false for the others).
    pub add_host_keys: bool,
}

impl Settings {
    /// Loads the repo the user pointed at.
    pub fn load_repo(&self) -> Result<crate::repo::Repo> {
        crate::repo::Repo::discover(self.repo_path.as_deref())
    }

    /// How to reach `repo`'s nodes: its `[ssh]` settings plus the command line's choices.
    pub fn connect_options(&self, repo: &crate::repo::Repo) -> ConnectOptions {
        ConnectOptions::from_settings(&repo.path, &repo.settings.ssh, self.add_host_keys)
    }
}

/// A worker count from the command line, resolved against `cinch.toml` once the repo is
/// loaded (the command line wins; at least 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Workers(pub Option<usize>);

impl Workers {
    /// The count to use, given the repo's default from `cinch.toml`.
    pub fn resolve(self, repo_default: usize) -> usize {
        self.0.unwrap_or(repo_default).max(1)
    }
}

/// The selection shared by apply and verify.
#[derive(Debug, Clone)]
pub struct Select {
    /// Node selector as typed (resolved against the repo by `Repo::select`).
    pub target: String,
    /// `-p`: how many nodes at once.
    pub node_workers: Workers,
    /// `-P`: how many items per node at once.
    pub item_workers: Workers,
    /// `-o`: only these items (syntax already checked).
    pub only: Vec<String>,
    /// `-s`: skip these items (syntax already checked).
    pub skip: Vec<String>,
    /// `--no-diff`.
    pub no_diff: bool,
    /// `--stats`.
    pub stats: bool,
    /// `--shard I/N`: only this shard of the selected nodes.
    pub shard: Option<crate::shard::Shard>,
    /// `--rehash`: the nodes hash every file (their hash caches are not trusted).
    pub rehash: bool,
}

impl Select {
    /// Checks every item selector's syntax, so a typo stops the command before any work.
    pub fn new(
        target: String,
        node_workers: Option<usize>,
        item_workers: Option<usize>,
        only: Vec<String>,
        skip: Vec<String>,
        no_diff: bool,
        stats: bool,
    ) -> Result<Self> {
        for sel in only.iter().chain(&skip) {
            crate::items::selector::validate(sel)
                .map_err(|e| Error::Usage(format!("bad item selector '{sel}': {e}")))?;
        }
        Ok(Select {
            target,
            node_workers: Workers(node_workers),
            item_workers: Workers(item_workers),
            only,
            skip,
            no_diff,
            stats,
            shard: None,
            rehash: false,
        })
    }
}

/// `cinch apply` (and, with `interactive` and `force` false, `cinch verify`).
#[derive(Debug, Clone)]
pub struct ApplySettings {
    /// Which nodes and items.
    pub select: Select,
    /// `-i`: ask before each change.
    pub interactive: bool,
    /// `--force`: override a live hard lock.
    pub force: bool,
    /// `--plan FILE`: apply only this saved plan's changes (an empty target = the plan's).
    pub plan: Option<std::path::PathBuf>,
    /// `--batch`, `--max-fail`, `--resume-file`.
    pub rollout: crate::fleet::Rollout,
}

/// `cinch run`.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Node selector as typed.
    pub target: String,
    /// The shell command, its words joined with spaces; never empty.
    pub command: String,
    /// `--timeout`, positive.
    pub timeout: Option<Duration>,
    /// `-p`.
    pub node_workers: Workers,
    /// `--shard I/N`.
    pub shard: Option<crate::shard::Shard>,
    /// `--batch`, `--max-fail`, `--resume-file`.
    pub rollout: crate::fleet::Rollout,
}

impl RunSettings {
    /// Checks the command, timeout and worker count.
    pub fn new(
        target: String,
        command: &[String],
        timeout: Option<f64>,
        node_workers: Option<usize>,
    ) -> Result<Self> {
        let command = command.join(" ");
        if command.trim().is_empty() {
            return Err(Error::Usage("cinch run needs a command to run".into()));
        }
        let timeout = match timeout {
            None => None,
            Some(secs) => match Duration::try_from_secs_f64(secs) {
                Ok(d) if !d.is_zero() => Some(d),
                _ => {
                    return Err(Error::Usage(format!(
                        "--timeout must be a positive number of seconds, not {secs}"
                    )));
                }
            },
        };
        if node_workers == Some(0) {
            return Err(Error::Usage("-p/--node-workers must be at least 1".into()));
        }
        Ok(RunSettings {
            target,
            command,
            timeout,
            node_workers: Workers(node_workers),
            shard: None,
            rollout: Default::default(),
        })
    }
}

/// `cinch lock ...`, with the expiry parsed and lock ids normalised.
#[derive(Debug, Clone)]
pub enum LockAction {
    /// `lock add`.
    Add {
        /// Nodes to lock.
        target: String,
        /// Why.
        comment: String,
        /// Seconds until the lock expires (positive).
        expires_in: i64,
        /// Item selectors (empty: all items).
        items: Vec<String>,
    },
    /// `lock show`.
    Show {
        /// Nodes to look at.
        target: String,
        /// Only this lock (normalised).
        lock_id: Option<String>,
    },
    /// `lock remove`.
    Remove {
        /// Nodes to unlock.
        target: String,
        /// The lock (normalised).
        lock_id: String,
    },
}

impl LockAction {
    /// Parses an expiry like `8h` into seconds.
    pub fn expiry(text: &str) -> Result<i64> {
        crate::lock::parse_duration(text).map_err(Error::Usage)
    }

    /// Normalises a lock id as typed (case-insensitive, 4 characters A-Z0-9).
    pub fn lock_id(text: &str) -> Result<String> {
        crate::lock::normalize_id(text).ok_or_else(|| {
            Error::Usage(format!(
                "invalid lock id {text:?}: lock ids are 4 characters A-Z0-9 (see `cinch lock show`)"
            ))
        })
    }

    /// The node selector every lock subcommand has.
    pub fn target(&self) -> &str {
        match self {
            LockAction::Add { target, .. }
            | LockAction::Show { target, .. }
            | LockAction::Remove { target, .. } => target,
        }
    }
}

/// `cinch test`.
#[derive(Debug, Clone)]
pub struct TestSettings {
    /// Nodes to test (`None`: all).
    pub target: Option<String>,
}

/// `cinch nodes`.
#[derive(Debug, Clone)]
pub struct NodesSettings {
    /// Nodes to list (`None`: all).
    pub target: Option<String>,
    /// Attribute columns.
    pub attrs: Vec<String>,
    /// Show where each attribute came from.
    pub blame: bool,
    /// `--shard I/N`.
    pub shard: Option<crate::shard::Shard>,
}

/// `cinch groups`.
#[derive(Debug, Clone)]
pub struct GroupsSettings {
    /// Groups or nodes (`None`: all).
    pub target: Option<String>,
}

/// `cinch items`.
#[derive(Debug, Clone)]
pub struct ItemsSettings {
    /// The node.
    pub node: String,
    /// `--blame`.
    pub blame: bool,
}

/// `cinch metadata`.
#[derive(Debug, Clone)]
pub struct MetadataSettings {
    /// The node.
    pub node: String,
    /// Dotted key paths to show (empty: all).
    pub keys: Vec<String>,
    /// Show secret values instead of `[secret:ID]`.
    pub reveal: bool,
    /// Show the layer and file:line (or reactor) behind each value.
    pub blame: bool,
}

/// `cinch hash`.
#[derive(Debug, Clone)]
pub struct HashSettings {
    /// Nodes to hash (default: all).
    pub target: Option<String>,
    /// Include each node's merged metadata in its hash.
    pub metadata: bool,
    /// Also print the hash of every item.
    pub items: bool,
    /// `--shard I/N`.
    pub shard: Option<crate::shard::Shard>,
}

/// `cinch diff`.
#[derive(Debug, Clone)]
pub struct DiffSettings {
    /// `REV` or `REV..REV2`.
    pub revisions: String,
    /// Nodes to compare (default: all).
    pub target: Option<String>,
}

/// `cinch secret …`: what to do with keys and secret values.
#[derive(Debug, Clone)]
pub enum SecretAction {
    /// Create a key in the key file.
    Keygen { name: String },
    /// Encrypt TEXT (or stdin) with a key.
    Encrypt { key: String, text: Option<String> },
    /// Decrypt a ciphertext (or stdin).
    Decrypt { ciphertext: Option<String> },
    /// Encrypt a file into the repo.
    EncryptFile {
        key: String,
        source: std::path::PathBuf,
        dest: std::path::PathBuf,
    },
    /// Print the password derived for an id.
    PasswordFor {
        id: String,
        length: usize,
        human: bool,
    },
    /// Re-encrypt every value of the repo from one key to another.
    Rotate { old: String, new: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_from_the_command_line_win_and_are_at_least_one() {
        assert_eq!(Workers(Some(3)).resolve(8), 3);
        assert_eq!(Workers(None).resolve(8), 8);
        assert_eq!(Workers(None).resolve(0), 1);
    }

    #[test]
    fn run_settings_reject_empty_commands_bad_timeouts_and_zero_workers() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(RunSettings::new("a".into(), &words(&[" "]), None, None).is_err());
        assert!(RunSettings::new("a".into(), &words(&["ls"]), Some(-1.0), None).is_err());
        assert!(RunSettings::new("a".into(), &words(&["ls"]), Some(0.0), None).is_err());
        assert!(RunSettings::new("a".into(), &words(&["ls"]), None, Some(0)).is_err());
        let ok =
            RunSettings::new("a".into(), &words(&["ls", "-l"]), Some(1.5), Some(2)).expect("valid");
        assert_eq!(ok.command, "ls -l");
        assert_eq!(ok.timeout, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn select_rejects_a_malformed_item_selector_before_any_work() {
        let e = Select::new(
            "all".into(),
            None,
            None,
            vec!["files:/x".into()],
            vec![],
            false,
            false,
        );
        let ok = Select::new(
            "all".into(),
            None,
            None,
            vec!["file:/x".into()],
            vec![],
            false,
            false,
        );
        assert!(ok.is_ok());
        assert!(e.is_err(), "the plural table name is no item type");
    }
}
