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
    /// Problems that do not stop the repo from loading but that `cinch test` reports, such
    /// as a configured ssh file that does not exist (ssh would fail on every node).
    pub problems: Vec<Diagnostic>,
    /// `[repo] allow_external_symlinks`: may symlinks in the repo lead out of it?
    pub allow_external_symlinks: bool,
    /// `[secrets] keys_file`: where the secret keys are (see [`crate::repo::secrets::keys`]).
    pub secrets_file: Option<PathBuf>,
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
    /// Passed to ssh as `-o KexAlgorithms=`: a cheaper key exchange for large fleets.
    pub kex_algorithms: Option<String>,
    /// Seconds an idle master stays up for the next invocation (`ControlPersist`); `None`
    /// closes it when cinch ends.
    pub persist: Option<u64>,
}

/// `KexAlgorithms` as ssh_config writes it: names, commas and the `+`/`-`/`^` prefixes only,
/// so the value can never smuggle another option into ssh's command line.
fn valid_kex(value: &str) -> bool {
    let names = value.strip_prefix(['+', '-', '^']).unwrap_or(value);
    !names.is_empty()
        && names.split(',').all(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '@'))
        })
}

/// ControlPersist time (`600`, `10m`, `1h`, `30s`) in seconds, within 1 s and one week.
pub fn parse_persist(value: &str) -> Option<u64> {
    let (digits, unit) = match value.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&value[..i], c),
        _ => (value, 's'),
    };
    let n: u64 = digits.parse().ok()?;
    let secs = n.checked_mul(match unit.to_ascii_lowercase() {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        'w' => 604_800,
        _ => return None,
    })?;
    (1..=604_800).contains(&secs).then_some(secs)
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            node_workers: 8,
            item_workers: 4,
            ssh: SshSettings::default(),
            problems: Vec::new(),
            allow_external_symlinks: false,
            secrets_file: None,
        }
    }
}

impl Settings {
    /// Reads `cinch.toml` (if present); relative paths are taken from the repo root so the
    /// repo works from any current directory.
    pub(crate) fn load(repo: &Path, diags: &mut Vec<Diagnostic>) -> Settings {
        let mut settings = Settings::default();
        let path = repo.join("cinch.toml");
        if std::fs::symlink_metadata(&path).is_err() {
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
        root.check_keys(&["defaults", "ssh", "repo", "secrets"], diags);
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
                &[
                    "config_file",
                    "known_hosts_file",
                    "connect_timeout",
                    "kex_algorithms",
                    "persist",
                ],
                diags,
            );
            let mut file_setting = |key: &str| {
                let s = f.string(key, diags)?;
                match expand_path(repo, &s.value) {
                    Ok(path) => {
                        if std::fs::metadata(&path).is_err() {
                            settings.problems.push(
                                Diagnostic::at(
                                    s.location,
                                    format!("[ssh] {key} {} does not exist", path.display()),
                                )
                                .with_hint("create it, fix the path, or remove the setting"),
                            );
                        }
                        Some(path)
                    }
                    Err(why) => {
                        diags.push(
                            Diagnostic::at(s.location, format!("[ssh] {key}: {why}")).with_hint(
                                "write a path relative to the repo, an absolute path, or ~/...",
                            ),
                        );
                        None
                    }
                }
            };
            let config_file = file_setting("config_file");
            let known_hosts_file = file_setting("known_hosts_file");
            settings.ssh.config_file = config_file;
            settings.ssh.known_hosts_file = known_hosts_file;
            settings.ssh.connect_timeout = f
                .integer("connect_timeout", 1..=3600, diags)
                .map(|n| n as u64);
            if let Some(kex) = f.string("kex_algorithms", diags) {
                if valid_kex(&kex.value) {
                    settings.ssh.kex_algorithms = Some(kex.value);
                } else {
                    diags.push(
                        Diagnostic::at(
                            kex.location,
                            format!("[ssh] kex_algorithms `{}` is not a list of key exchange names", kex.value),
                        )
                        .with_hint("write names separated by commas, e.g. \"curve25519-sha256\" (see `ssh -Q kex`)"),
                    );
                }
            }
            if let Some(persist) = f.string("persist", diags) {
                match parse_persist(&persist.value) {
                    Some(secs) => settings.ssh.persist = Some(secs),
                    None => diags.push(
                        Diagnostic::at(
                            persist.location,
                            format!("[ssh] persist `{}` is not a time", persist.value),
                        )
                        .with_hint(
                            "write seconds or a unit: \"600\", \"10m\", \"1h\" (at most a week)",
                        ),
                    ),
                }
            }
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
        if let Some(section) = section(&file, "secrets", diags) {
            let f = Fields {
                file: &file,
                table: section,
                what: "[secrets]".into(),
            };
            f.check_keys(&["keys_file"], diags);
            if let Some(s) = f.string("keys_file", diags) {
                match expand_path(repo, &s.value) {
                    Ok(path) => settings.secrets_file = Some(path),
                    Err(why) => diags.push(
                        Diagnostic::at(s.location, format!("[secrets] keys_file: {why}"))
                            .with_hint(
                                "write ~/..., an absolute path, or a path relative to the repo",
                            ),
                    ),
                }
            }
        }
        settings
    }
}

/// A path from cinch.toml as ssh users write it: `~` and `~/x` are in the home directory,
/// relative paths are relative to the repo (so it works from any current directory).
fn expand_path(repo: &Path, raw: &str) -> Result<PathBuf, String> {
    if raw.is_empty() {
        return Err("the path is empty".into());
    }
    let Some(rest) = raw.strip_prefix('~') else {
        return Ok(repo.join(raw));
    };
    let rest = match rest.strip_prefix('/') {
        Some(r) => r,
        None if rest.is_empty() => "",
        None => return Err(format!("{raw:?}: only ~ and ~/ are expanded, not ~user")),
    };
    let home = std::env::home_dir()
        .filter(|h| !h.as_os_str().is_empty())
        .ok_or_else(|| format!("{raw:?}: cannot expand ~, the home directory is unknown"))?;
    Ok(home.join(rest))
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

#[cfg(test)]
mod tests {
    use super::expand_path;
    use std::path::Path;

    #[test]
    fn ssh_file_paths_expand_tilde_and_are_relative_to_the_repo() {
        let repo = Path::new("/repo");
        let home = std::env::home_dir().expect("a home directory");
        assert_eq!(expand_path(repo, "~/.ssh/x"), Ok(home.join(".ssh/x")));
        assert_eq!(expand_path(repo, "~"), Ok(home.clone()));
        assert_eq!(expand_path(repo, "ssh/config"), Ok(repo.join("ssh/config")));
        assert_eq!(expand_path(repo, "/etc/ssh/x"), Ok("/etc/ssh/x".into()));
        assert!(expand_path(repo, "~bob/x").is_err());
        assert!(expand_path(repo, "").is_err());
    }
}
