//! Secrets: derived passwords, encrypted strings and files, and masking, so a repo can hold
//! passwords without printing them. Keys live outside the repo ([`keys`]); values are produced
//! only when used (a repo without keys still loads) and every value produced is registered so
//! every output channel masks it ([`mask`]). See docs/secrets.md.

pub mod crypto;
pub mod keys;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use crypto::{Ciphertext, Key};
use keys::KeyFile;

pub use crate::mask::{contains_secret, mask, mask_bytes, mask_json};

/// The variable that turns on dummy mode: every secret is a deterministic stand-in, for CI.
pub const DUMMY_ENV: &str = "CINCH_SECRETS_DUMMY";
/// Default length of `password_for`.
pub const DEFAULT_PASSWORD_LEN: usize = 32;
/// Longest derived password or byte string.
pub const MAX_DERIVED_LEN: usize = 1024;
/// Largest encrypted file `decrypt_file` reads.
pub const MAX_FILE_LEN: u64 = 16 << 20;

/// Why a secret could not be produced; every message names the key and says what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretError {
    /// The key file does not exist.
    #[error(
        "no key file at {}; create one with `cinch secret keygen`, point [secrets] keys_file \
         in cinch.toml or $CINCH_SECRETS_FILE at yours, or set CINCH_SECRETS_DUMMY=1 for \
         dummy values", path.display()
    )]
    NoKeyFile { path: PathBuf },
    /// No key file is configured and there is no home directory for the default.
    #[error("no key file configured and no home directory: set $CINCH_SECRETS_FILE")]
    NoKeyFilePath,
    /// The key file lacks the named key (a team key this user does not hold).
    #[error(
        "key '{key}' is not in {}; ask whoever holds it, or create it with `cinch secret keygen {key}`",
        path.display()
    )]
    NoKey { key: String, path: PathBuf },
    /// Group or others may read the key file.
    #[error(
        "key file {} is readable by others (mode {mode:04o}) and is refused; fix: chmod 600 {}",
        path.display(), path.display()
    )]
    LoosePermissions { path: PathBuf, mode: u32 },
    /// The key file does not parse, or a key in it is malformed.
    #[error("key file {}: {why}", path.display())]
    BadKeyFile { path: PathBuf, why: String },
    /// `keygen` would replace a key.
    #[error("key '{key}' already exists in {}; pick another name", path.display())]
    KeyExists { key: String, path: PathBuf },
    /// The ciphertext was made with another key of the same name.
    #[error(
        "value was encrypted with a different key named '{key}' (fingerprint {theirs}; yours is \
         {ours}); get the right key file"
    )]
    WrongKey {
        /// The key name both share.
        key: String,
        /// The fingerprint in the ciphertext.
        theirs: String,
        /// The fingerprint of the key here.
        ours: String,
    },
    /// The ciphertext fails authentication.
    #[error(
        "value encrypted with key '{key}' fails authentication: it was changed or corrupted; \
         encrypt it again with `cinch secret encrypt`"
    )]
    Tampered { key: String },
    /// The text is not a cinch ciphertext at all.
    #[error("not a cinch ciphertext: {0}")]
    Malformed(String),
    /// A file could not be read or written.
    #[error("{}: {why}", path.display())]
    Io { path: PathBuf, why: String },
}

impl SecretError {
    /// Wraps an I/O error with the path it was about.
    pub fn io(path: &Path, e: std::io::Error) -> Self {
        SecretError::Io {
            path: path.to_path_buf(),
            why: e.to_string(),
        }
    }

    /// Whether this only means the key is not here (a command that needs no values goes on).
    pub fn key_absent(&self) -> bool {
        matches!(
            self,
            SecretError::NoKeyFile { .. } | SecretError::NoKey { .. } | SecretError::NoKeyFilePath
        )
    }

    /// The message with the right key name where it was not known when the error was made.
    fn for_key(self, key: &str) -> String {
        match self {
            SecretError::NoKeyFile { path } => format!(
                "no key file at {} (needed for key '{key}'); create one with `cinch secret \
                 keygen {key}`, point [secrets] keys_file in cinch.toml or $CINCH_SECRETS_FILE \
                 at yours, or set CINCH_SECRETS_DUMMY=1 for dummy values",
                path.display()
            ),
            other => other.to_string(),
        }
    }
}

/// What the running command does with a secret whose key is not here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// It needs real values (apply, verify, `metadata --reveal`, `secret ...`): an error.
    Values,
    /// It only shows or checks the repo (nodes, items, test, metadata, run, lock): a masked
    /// stand-in, so the repo can be inspected without keys.
    Placeholders,
}

static PLACEHOLDERS: AtomicBool = AtomicBool::new(false);
static VAULT: RwLock<Option<Arc<Vault>>> = RwLock::new(None);

/// Says whether this command may use stand-ins for secrets whose key is absent.
pub fn set_need(need: Need) {
    PLACEHOLDERS.store(need == Need::Placeholders, Ordering::Relaxed);
}

fn need() -> Need {
    if PLACEHOLDERS.load(Ordering::Relaxed) {
        Need::Placeholders
    } else {
        Need::Values
    }
}

/// The keys of a repo, read on first use (never when a repo uses no secrets).
#[derive(Debug)]
pub struct Vault {
    path: Option<PathBuf>,
    dummy: bool,
    file: OnceLock<Result<KeyFile, SecretError>>,
    /// Where encrypted files may be read from (no symlinks out of the repo).
    sandbox: Option<crate::repo::Sandbox>,
}

impl Vault {
    /// The vault for a repo whose cinch.toml names `configured` (or nothing).
    pub fn new(configured: Option<&Path>) -> Vault {
        Vault {
            path: keys::locate(configured),
            dummy: std::env::var_os(DUMMY_ENV).is_some_and(|v| !v.is_empty() && v != "0"),
            file: OnceLock::new(),
            sandbox: None,
        }
    }

    /// The same vault, reading encrypted files only as `sandbox` allows.
    pub fn with_sandbox(mut self, sandbox: crate::repo::Sandbox) -> Vault {
        self.sandbox = Some(sandbox);
        self
    }

    /// The key file's path, if one could be worked out.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The key file, loaded once.
    pub fn key_file(&self) -> Result<&KeyFile, SecretError> {
        self.file
            .get_or_init(|| match &self.path {
                Some(p) => KeyFile::load(p),
                None => Err(SecretError::NoKeyFilePath),
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The key to use, `None` for a stand-in (dummy mode, or an absent key when allowed).
    fn key(&self, name: &str) -> Result<Option<Key>, String> {
        if self.dummy {
            return Ok(None);
        }
        match self.key_file().and_then(|f| f.key(name).cloned()) {
            Ok(k) => Ok(Some(k)),
            Err(e) if e.key_absent() && need() == Need::Placeholders => Ok(None),
            Err(e) => Err(e.for_key(name)),
        }
    }
}

/// Makes `vault` the one repo code and templates use from now on.
pub fn install(vault: Vault) {
    *VAULT.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(vault));
}

/// The installed vault (one from the environment if no repo installed one).
pub fn vault() -> Arc<Vault> {
    if let Some(v) = VAULT.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
        return v.clone();
    }
    let v = Arc::new(Vault::new(None));
    *VAULT.write().unwrap_or_else(|p| p.into_inner()) = Some(v.clone());
    v
}

/// The key every stand-in is derived from: public, so stand-ins are never real secrets.
fn dummy_key(name: &str) -> Key {
    Key {
        name: name.to_string(),
        bytes: [0u8; crypto::KEY_LEN],
    }
}

/// `ID@KEY` names another key than `default`.
fn split_id(id: &str) -> Result<(&str, &str), String> {
    let (id, key) = match id.rsplit_once('@') {
        Some((i, k)) => (i, k),
        None => (id, "default"),
    };
    crypto::check_key_name(key)?;
    if id.is_empty() {
        return Err("a secret id must not be empty".into());
    }
    Ok((id, key))
}

fn produced(value: String, id: &str) -> String {
    crate::mask::register(&value, id);
    value
}

/// `password_for(id[, length])`: an alphanumeric password derived from the key.
pub fn password_for(id: &str, length: usize) -> Result<String, String> {
    if !(1..=MAX_DERIVED_LEN).contains(&length) {
        return Err(format!(
            "password length {length} is out of range 1..={MAX_DERIVED_LEN}"
        ));
    }
    let (bare, key) = split_id(id)?;
    let k = vault().key(key)?.unwrap_or_else(|| dummy_key(key));
    Ok(produced(crypto::password(&k, bare, length), id))
}

/// `human_password_for(id)`: a pronounceable password derived from the key.
pub fn human_password_for(id: &str) -> Result<String, String> {
    let (bare, key) = split_id(id)?;
    let k = vault().key(key)?.unwrap_or_else(|| dummy_key(key));
    Ok(produced(crypto::human_password(&k, bare), id))
}

/// `random_bytes_as_base64_for(id, n)`: `n` bytes derived from the key, base64.
pub fn random_bytes_as_base64_for(id: &str, n: usize) -> Result<String, String> {
    if !(1..=MAX_DERIVED_LEN).contains(&n) {
        return Err(format!(
            "byte count {n} is out of range 1..={MAX_DERIVED_LEN}"
        ));
    }
    let (bare, key) = split_id(id)?;
    let k = vault().key(key)?.unwrap_or_else(|| dummy_key(key));
    Ok(produced(crypto::random_bytes_b64(&k, bare, n), id))
}

/// The plaintext, the mask label, and whether it is a stand-in.
fn decrypt_bytes(ciphertext: &str) -> Result<(Vec<u8>, String, bool), String> {
    let ct = Ciphertext::parse(ciphertext).map_err(|e| e.to_string())?;
    let label = ct.label();
    match vault().key(&ct.key)? {
        Some(k) => Ok((k.decrypt(&ct).map_err(|e| e.to_string())?, label, false)),
        None => Ok((
            format!("dummy-{}", label.replace('/', "-")).into_bytes(),
            label,
            true,
        )),
    }
}

/// `decrypt(ciphertext)`: the text `cinch secret encrypt` encrypted.
pub fn decrypt(ciphertext: &str) -> Result<String, String> {
    let (plain, label, _) = decrypt_bytes(ciphertext)?;
    let text = String::from_utf8(plain)
        .map_err(|_| "the decrypted value is not UTF-8 text".to_string())?;
    Ok(produced(text, &label))
}

/// `decrypt_file(path)`: the contents of a file `cinch secret encrypt-file` wrote; `shown`
/// names it in masks and errors.
pub fn decrypt_file(path: &Path, shown: &str) -> Result<Vec<u8>, String> {
    if let Some(why) = vault().sandbox.as_ref().and_then(|s| s.escape(path)) {
        return Err(format!(
            "{shown} refused: {why}; {}",
            crate::repo::sandbox::HINT
        ));
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if meta.len() > MAX_FILE_LEN {
        return Err(format!("{shown} is larger than {MAX_FILE_LEN} bytes"));
    }
    let text = crate::repo::read_text(path).map_err(|e| format!("{shown}: {e}"))?;
    let (plain, _, standin) = decrypt_bytes(&text).map_err(|e| format!("{shown}: {e}"))?;
    let plain = if standin {
        format!("dummy content of {shown}\n").into_bytes()
    } else {
        plain
    };
    if let Ok(s) = std::str::from_utf8(&plain) {
        crate::mask::register(s, &format!("file:{shown}"));
    }
    Ok(plain)
}

/// A `!password_for:ID`, `!decrypt:CIPHERTEXT` or `!decrypt_file:PATH` string (paths relative
/// to `base`, refused outside it); `None` for any other string.
pub fn resolve_magic(s: &str, base: &Path) -> Option<Result<String, String>> {
    let s_trim = s.trim();
    if let Some(id) = s_trim.strip_prefix("!password_for:") {
        return Some(password_for(id, DEFAULT_PASSWORD_LEN));
    }
    if let Some(ct) = s_trim.strip_prefix("!decrypt:") {
        return Some(decrypt(ct));
    }
    if let Some(rel) = s_trim.strip_prefix("!decrypt_file:") {
        return Some(decrypt_file_in(base, rel).and_then(|b| {
            String::from_utf8(b).map_err(|_| format!("{rel} does not decrypt to UTF-8 text"))
        }));
    }
    None
}

/// Decrypts `rel` inside `base` (no absolute paths, no `..`).
pub fn decrypt_file_in(base: &Path, rel: &str) -> Result<Vec<u8>, String> {
    let p = Path::new(rel);
    if rel.is_empty()
        || !p
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return Err(format!(
            "encrypted file path {rel:?} must be relative, without `..`"
        ));
    }
    decrypt_file(&base.join(p), rel)
}

/// Resolves magic strings everywhere in `value`; each failure is `(path of keys, message)`.
/// Returns whether any secret was resolved.
pub fn resolve_json(
    value: &mut serde_json::Value,
    base: &Path,
    path: &mut Vec<String>,
    errors: &mut Vec<(Vec<String>, String)>,
) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => match resolve_magic(s, base) {
            Some(Ok(v)) => {
                *s = v;
                true
            }
            Some(Err(e)) => {
                errors.push((path.clone(), e));
                false
            }
            None => false,
        },
        Value::Array(xs) => {
            let mut any = false;
            for (i, x) in xs.iter_mut().enumerate() {
                path.push(i.to_string());
                any |= resolve_json(x, base, path, errors);
                path.pop();
            }
            any
        }
        Value::Object(m) => {
            let mut any = false;
            for (k, x) in m.iter_mut() {
                path.push(k.clone());
                any |= resolve_json(x, base, path, errors);
                path.pop();
            }
            any
        }
        _ => false,
    }
}

/// Adds the secret functions to a Rhai engine (reactors, items.rhai and hooks share it);
/// `decrypt_file(path)` reads below `files` (the bundle's `files/`, or the repo for hooks),
/// never through a symlink out of the repo.
pub fn register_rhai(engine: &mut rhai::Engine, files: PathBuf, sandbox: crate::repo::Sandbox) {
    use rhai::{EvalAltResult, INT};
    type R<T> = Result<T, Box<EvalAltResult>>;
    fn err<T>(e: String) -> R<T> {
        Err(e.into())
    }
    fn len(n: INT) -> R<usize> {
        usize::try_from(n).or_else(|_| err(format!("length {n} must not be negative")))
    }
    engine.register_fn("password_for", |id: &str| -> R<String> {
        password_for(id, DEFAULT_PASSWORD_LEN).or_else(err)
    });
    engine.register_fn("password_for", |id: &str, n: INT| -> R<String> {
        password_for(id, len(n)?).or_else(err)
    });
    engine.register_fn("human_password_for", |id: &str| -> R<String> {
        human_password_for(id).or_else(err)
    });
    engine.register_fn(
        "random_bytes_as_base64_for",
        |id: &str, n: INT| -> R<String> { random_bytes_as_base64_for(id, len(n)?).or_else(err) },
    );
    engine.register_fn("decrypt", |ct: &str| -> R<String> {
        decrypt(ct).or_else(err)
    });
    engine.register_fn("decrypt_file", move |rel: &str| -> R<String> {
        if let Some(why) = sandbox.escape(&files.join(rel)) {
            return err(format!("decrypt_file({rel:?}) refused: {why}"));
        }
        let bytes = decrypt_file_in(&files, rel).or_else(err)?;
        String::from_utf8(bytes).or_else(|_| err(format!("{rel} does not decrypt to UTF-8 text")))
    });
}

/// Adds the same functions to a template environment; `decrypt_file` reads below `files`.
pub fn register_templates(
    env: &mut minijinja::Environment<'static>,
    files: PathBuf,
    sandbox: crate::repo::Sandbox,
) {
    use minijinja::{Error, ErrorKind};
    fn err(e: String) -> Error {
        Error::new(ErrorKind::InvalidOperation, e)
    }
    env.add_function("password_for", |id: String, n: Option<usize>| {
        password_for(&id, n.unwrap_or(DEFAULT_PASSWORD_LEN)).map_err(err)
    });
    env.add_function("human_password_for", |id: String| {
        human_password_for(&id).map_err(err)
    });
    env.add_function("random_bytes_as_base64_for", |id: String, n: usize| {
        random_bytes_as_base64_for(&id, n).map_err(err)
    });
    env.add_function("decrypt", |ct: String| decrypt(&ct).map_err(err));
    env.add_function("decrypt_file", move |rel: String| {
        if let Some(why) = sandbox.escape(&files.join(&rel)) {
            return Err(err(format!("decrypt_file({rel:?}) refused: {why}")));
        }
        let bytes = decrypt_file_in(&files, &rel).map_err(err)?;
        String::from_utf8(bytes).map_err(|_| err(format!("{rel} does not decrypt to UTF-8 text")))
    });
}
