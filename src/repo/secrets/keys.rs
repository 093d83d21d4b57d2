//! The key file: named keys kept outside the repo, mode 0600, found through `cinch.toml`
//! `[secrets] keys_file`, else `$CINCH_SECRETS_FILE`, else a per-user default.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::SecretError;
use super::crypto::{KEY_LEN, Key, check_key_name};

/// The variable naming the key file when cinch.toml does not.
pub const FILE_ENV: &str = "CINCH_SECRETS_FILE";

/// The per-user default: `$XDG_CONFIG_HOME/cinch/secrets.toml`, else
/// `~/.config/cinch/secrets.toml`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("cinch/secrets.toml"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".config/cinch/secrets.toml"))
}

/// Which key file to use: the repo's setting, else the environment, else the default.
pub fn locate(configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = configured {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(FILE_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    default_path()
}

/// The keys of one key file.
#[derive(Debug, Clone)]
pub struct KeyFile {
    /// Where it was read from (named in every error).
    pub path: PathBuf,
    /// The keys by name.
    pub keys: BTreeMap<String, Key>,
}

impl KeyFile {
    /// Reads and checks the key file: it must exist, be private to its owner and parse.
    pub fn load(path: &Path) -> Result<KeyFile, SecretError> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SecretError::NoKeyFile {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(SecretError::io(path, e)),
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SecretError::LoosePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = crate::repo::read_text(path).map_err(|e| SecretError::io(path, e))?;
        let bad = |why: String| SecretError::BadKeyFile {
            path: path.to_path_buf(),
            why,
        };
        let table: toml::Table = toml::from_str(&text).map_err(|e| bad(e.message().into()))?;
        let mut keys = BTreeMap::new();
        for (section, value) in &table {
            if section != "keys" {
                return Err(bad(format!(
                    "unknown section `{section}`: keys go under [keys]"
                )));
            }
            let Some(entries) = value.as_table() else {
                return Err(bad("`keys` must be a table: [keys] NAME = \"...\"".into()));
            };
            for (name, v) in entries {
                check_key_name(name).map_err(&bad)?;
                let decoded = v
                    .as_str()
                    .and_then(|s| B64.decode(s.trim()).ok())
                    .filter(|b| b.len() == KEY_LEN)
                    .ok_or_else(|| {
                        bad(format!(
                            "key `{name}` is not {KEY_LEN} bytes of base64; make one with \
                             `cinch secret keygen {name}`"
                        ))
                    })?;
                let mut bytes = [0u8; KEY_LEN];
                bytes.copy_from_slice(&decoded);
                keys.insert(
                    name.clone(),
                    Key {
                        name: name.clone(),
                        bytes,
                    },
                );
            }
        }
        Ok(KeyFile {
            path: path.to_path_buf(),
            keys,
        })
    }

    /// The key called `name`, or an error naming the file and how to get the key.
    pub fn key(&self, name: &str) -> Result<&Key, SecretError> {
        self.keys.get(name).ok_or_else(|| SecretError::NoKey {
            key: name.to_string(),
            path: self.path.clone(),
        })
    }
}

/// Adds a new random key `name` to the key file at `path` (created with mode 0600, its
/// directory 0700), refusing to replace an existing key.
pub fn keygen(path: &Path, name: &str) -> Result<(), SecretError> {
    check_key_name(name).map_err(|why| SecretError::BadKeyFile {
        path: path.to_path_buf(),
        why,
    })?;
    let mut file = match KeyFile::load(path) {
        Ok(f) => f,
        Err(SecretError::NoKeyFile { .. }) => KeyFile {
            path: path.to_path_buf(),
            keys: BTreeMap::new(),
        },
        Err(e) => return Err(e),
    };
    if file.keys.contains_key(name) {
        return Err(SecretError::KeyExists {
            key: name.to_string(),
            path: path.to_path_buf(),
        });
    }
    file.keys.insert(name.to_string(), Key::generate(name));
    let mut text = String::from(
        "# cinch secret keys: keep this file private (mode 0600) and out of any repo.\n\
         # Losing a key loses every secret encrypted or derived with it.\n[keys]\n",
    );
    for (n, k) in &file.keys {
        text.push_str(&format!("{n} = \"{}\"\n", B64.encode(k.bytes)));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| SecretError::io(dir, e))?;
    }
    // Written beside the target with mode 0600 from the start, then renamed over it, so the
    // keys are never readable by others, not even for a moment, and never half-written.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        SecretError::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_file_and_keeps_existing_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/keys.toml");
        keygen(&path, "default").expect("first key");
        keygen(&path, "db").expect("second key");
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let f = KeyFile::load(&path).expect("loads");
        assert_eq!(f.keys.keys().collect::<Vec<_>>(), ["db", "default"]);
        let again = keygen(&path, "db");
        assert!(
            matches!(again, Err(SecretError::KeyExists { .. })),
            "{again:?}"
        );
    }

    #[test]
    fn key_file_readable_by_others_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys.toml");
        keygen(&path, "default").expect("key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = KeyFile::load(&path).expect_err("refused");
        let msg = err.to_string();
        assert!(msg.contains("chmod 600"), "{msg}");
        assert!(msg.contains("0644"), "{msg}");
    }
}
