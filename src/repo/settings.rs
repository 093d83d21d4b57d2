//! `cinch.toml`: repo-wide settings.

use std::path::{Path, PathBuf};

use crate::diag::Diagnostic;
use crate::repo::toml_file::{Fields, TomlFile};

/// Repo-wide settings with their defaults filled in.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_workers: usize,
    pub item_workers: usize,
    pub ssh: SshSettings,
    /// `[repo] allow_external_symlinks`: may symlinks in the repo lead out of it?
    pub allow_external_symlinks: bool,
}

/// `[ssh]` in cinch.toml.
#[derive(Debug, Clone, Default)]
pub struct SshSettings {
    /// Passed to ssh as `-F`.
    pub config_file: Option<PathBuf>,
    /// Passed to ssh as `UserKnownHostsFile`.
    pub known_hosts_file: Option<PathBuf>,
    /// Seconds before a connection attempt gives up.
    pub connect_timeout: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            node_workers: 8,
            item_workers: 4,
            ssh: SshSettings::default(),
            allow_external_symlinks: false,
        }
    }
}

impl Settings {
    /// Reads `cinch.toml` (if present); relative paths are taken from the repo root so the
    /// repo works from any current directory.
    pub(crate) fn load(repo: &Path, diags: &mut Vec<Diagnostic>) -> Settings {
        let mut settings = Settings::default();
        let path = repo.join("cinch.toml");
        if !path.is_file() {
            return settings;
        }
        let file = match TomlFile::read(&path) {
            Ok(f) => f,
            Err(d) => {
                diags.push(d);
                return settings;
            }
        };
        let root = Fields {
            file: &file,
            table: file.root(),
            what: "cinch.toml".into(),
        };
        root.check_keys(&["defaults", "ssh", "repo"], diags);
        if let Some(section) = section(&file, "defaults", diags) {
            let f = Fields {
                file: &file,
                table: section,
                what: "[defaults]".into(),
            };
            f.check_keys(&["node_workers", "item_workers"], diags);
            if let Some(n) = f.integer("node_workers", 1..=1024, diags) {
                settings.node_workers = n as usize;
            }
            // More than 8 commands in flight on one ssh connection hits sshd's MaxSessions.
            if let Some(n) = f.integer("item_workers", 1..=8, diags) {
                settings.item_workers = n as usize;
            }
        }
        if let Some(section) = section(&file, "ssh", diags) {
            let f = Fields {
                file: &file,
                table: section,
                what: "[ssh]".into(),
            };
            f.check_keys(
                &["config_file", "known_hosts_file", "connect_timeout"],
                diags,
            );
            settings.ssh.config_file = f.string("config_file", diags).map(|s| repo.join(s.value));
            settings.ssh.known_hosts_file = f
                .string("known_hosts_file", diags)
                .map(|s| repo.join(s.value));
            settings.ssh.connect_timeout = f
                .integer("connect_timeout", 1..=3600, diags)
                .map(|n| n as u64);
        }
        if let Some(section) = section(&file, "repo", diags) {
            let f = Fields {
                file: &file,
                table: section,
                what: "[repo]".into(),
            };
            f.check_keys(&["allow_external_symlinks"], diags);
            if let Some(allow) = f.boolean("allow_external_symlinks", diags) {
                settings.allow_external_symlinks = allow;
            }
        }
        settings
    }
}

fn section<'a>(
    file: &'a TomlFile,
    key: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<&'a dyn toml_edit::TableLike> {
    let item = file.root().get(key)?;
    match item.as_table_like() {
        Some(t) => Some(t),
        None => {
            diags.push(Diagnostic::at(
                file.item_loc(item),
                format!(
                    "cinch.toml: `{key}` must be a table, found {}",
                    crate::repo::toml_file::describe(item)
                ),
            ));
            None
        }
    }
}
