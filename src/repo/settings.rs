//! `cinch.toml`: repo-wide settings.

use std::path::PathBuf;

/// Repo-wide settings with their defaults filled in.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_workers: usize,
    pub item_workers: usize,
    pub ssh: SshSettings,
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
        }
    }
}
