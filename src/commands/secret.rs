//! `cinch secret ...`: make keys, encrypt and decrypt values and files, print derived
//! passwords, and rotate a repo's ciphertexts from one key to another.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use regex::Regex;

use crate::error::{Error, Result};
use crate::repo::secrets::crypto::{Ciphertext, Key};
use crate::repo::secrets::keys::{self, KeyFile};
use crate::repo::secrets::{SecretError, Vault};
use crate::settings::{SecretAction as SecretCommand, Settings as Context};

/// Runs one `cinch secret` subcommand.
pub fn cmd_secret(ctx: &Context, command: &SecretCommand) -> Result<u8> {
    // The repo is optional here: it only says where the key file is.
    let repo_root = find_repo(ctx);
    let configured = repo_root
        .as_deref()
        .and_then(|r| crate::repo::Settings::load(r, &mut Vec::new()).secrets_file);
    let vault = Vault::new(configured.as_deref());
    let fail = |e: SecretError| Error::Usage(e.to_string());
    let key_of = |name: &str| -> Result<Key> {
        let file = vault.key_file().map_err(fail)?;
        file.key(name).cloned().map_err(fail)
    };
    match command {
        SecretCommand::Keygen { name } => {
            let path = vault
                .path()
                .ok_or_else(|| fail(SecretError::NoKeyFilePath))?;
            keys::keygen(path, name).map_err(fail)?;
            ctx.console.err(&format!(
                "created key '{name}' in {} (mode 0600); keep a copy somewhere safe",
                path.display()
            ));
            Ok(0)
        }
        SecretCommand::Encrypt { key, text } => {
            let plain = text_or_stdin(text.as_deref())?;
            let k = key_of(key)?;
            ctx.console.out(&k.encrypt(plain.as_bytes()));
            Ok(0)
        }
        SecretCommand::Decrypt { ciphertext } => {
            let ct = text_or_stdin(ciphertext.as_deref())?;
            let parsed = Ciphertext::parse(&ct).map_err(fail)?;
            let plain = key_of(&parsed.key)?.decrypt(&parsed).map_err(fail)?;
            let text = String::from_utf8(plain).map_err(|_| {
                Error::Usage("the value is not UTF-8 text (was it a file? use decrypt-file)".into())
            })?;
            ctx.console.out_revealed(text.trim_end_matches('\n'));
            Ok(0)
        }
        SecretCommand::EncryptFile { key, source, dest } => {
            let plain = std::fs::read(source)
                .map_err(|e| Error::io(format!("reading {}", source.display()), e))?;
            let k = key_of(key)?;
            write_new(dest, &format!("{}\n", k.encrypt(&plain)))?;
            ctx.console.err(&format!(
                "encrypted {} with key '{key}' into {}; use it as decrypt_file(\"...\") or \
                 !decrypt_file:... from the bundle's files/",
                source.display(),
                dest.display()
            ));
            Ok(0)
        }
        SecretCommand::PasswordFor { id, length, human } => {
            crate::repo::secrets::set_need(crate::repo::secrets::Need::Values);
            crate::repo::secrets::install(vault);
            let value = if *human {
                crate::repo::secrets::human_password_for(id)
            } else {
                crate::repo::secrets::password_for(id, *length)
            }
            .map_err(Error::Usage)?;
            ctx.console.out_revealed(&value);
            Ok(0)
        }
        SecretCommand::Rotate { old, new } => {
            let root = repo_root.ok_or_else(|| {
                Error::Usage("rotate works on a repo: pass -r DIR or run it inside one".into())
            })?;
            let file = vault.key_file().map_err(fail)?;
            let changed = rotate(&root, file, old, new)?;
            ctx.console.err(&format!(
                "re-encrypted {} value(s) in {} file(s) from key '{old}' to '{new}'",
                changed.0, changed.1
            ));
            Ok(0)
        }
    }
}

fn find_repo(ctx: &Context) -> Option<PathBuf> {
    let is_repo = |d: &Path| {
        d.join("nodes.toml").is_file() || d.join("nodes").is_dir() || d.join("cinch.toml").is_file()
    };
    match &ctx.repo_path {
        Some(p) => Some(p.clone()),
        None => std::env::current_dir()
            .ok()?
            .ancestors()
            .find(|d| is_repo(d))
            .map(Path::to_path_buf),
    }
}

/// The argument, or stdin when it is absent or `-`.
fn text_or_stdin(arg: Option<&str>) -> Result<String> {
    match arg {
        Some(t) if t != "-" => Ok(t.to_string()),
        _ => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Error::io("reading stdin", e))?;
            Ok(s.strip_suffix('\n').unwrap_or(&s).to_string())
        }
    }
}

/// Writes `text` to `path` replacing it atomically (temporary file beside it, then rename),
/// keeping the permissions of the file it replaces.
fn write_new(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension(format!("cinch-tmp{}", std::process::id()));
    let perms = std::fs::metadata(path).ok().map(|m| m.permissions());
    std::fs::write(&tmp, text)
        .and_then(|()| match perms {
            Some(p) => std::fs::set_permissions(&tmp, p),
            None => Ok(()),
        })
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(format!("writing {}", path.display()), e)
        })
}

/// Every ciphertext in a text file of the repo.
fn ciphertext_pattern() -> Regex {
    // Base64 alphabet only: the match stops at a closing quote or the end of the line.
    Regex::new(r"cinch:v1:[A-Za-z0-9_-]{1,64}:[0-9a-fA-F]{8}:[A-Za-z0-9+/=]+")
        .unwrap_or_else(|_| unreachable!("constant regex"))
}

/// Re-encrypts every ciphertext of key `old` in the repo's files with key `new`, in place;
/// decrypts all of them first and changes nothing if any fails. Returns (values, files).
pub fn rotate(root: &Path, keys: &KeyFile, old: &str, new: &str) -> Result<(usize, usize)> {
    let fail = |e: SecretError| Error::Usage(e.to_string());
    let old_key = keys.key(old).map_err(fail)?;
    let new_key = keys.key(new).map_err(fail)?;
    let re = ciphertext_pattern();
    let mut files = Vec::new();
    walk(root, &mut files)?;
    let mut rewrites = Vec::new();
    let mut problems = Vec::new();
    let mut count = 0;
    for path in files {
        let Ok(text) = crate::repo::read_text(&path) else {
            continue;
        };
        if !re.is_match(&text) {
            continue;
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        let mut touched = false;
        for m in re.find_iter(&text) {
            let Ok(ct) = Ciphertext::parse(m.as_str()) else {
                continue;
            };
            if ct.key != old {
                continue;
            }
            match old_key.decrypt(&ct) {
                Ok(plain) => {
                    out.push_str(&text[last..m.start()]);
                    out.push_str(&new_key.encrypt(&plain));
                    last = m.end();
                    touched = true;
                    count += 1;
                }
                Err(e) => {
                    let line = text[..m.start()].matches('\n').count() + 1;
                    problems.push(format!("{}:{line}: {e}", path.display()));
                }
            }
        }
        if touched {
            out.push_str(&text[last..]);
            rewrites.push((path, out));
        }
    }
    if !problems.is_empty() {
        return Err(Error::Usage(format!(
            "nothing was rotated: {} value(s) of key '{old}' do not decrypt:\n  {}",
            problems.len(),
            problems.join("\n  ")
        )));
    }
    let n_files = rewrites.len();
    for (path, text) in rewrites {
        write_new(&path, &text)?;
    }
    Ok((count, n_files))
}

/// Regular files of the repo, not following symlinks, skipping `.git` and `target`.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let name = entry.file_name();
        if kind.is_dir() && name != ".git" && name != "target" {
            walk(&path, out)?;
        } else if kind.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_round_trip_rewrites_strings_and_files_and_refuses_on_failure() {
        let keys_dir = tempfile::tempdir().expect("tempdir");
        let kpath = keys_dir.path().join("keys.toml");
        keys::keygen(&kpath, "old").expect("old");
        keys::keygen(&kpath, "new").expect("new");
        let kf = KeyFile::load(&kpath).expect("loads");
        let old = kf.key("old").expect("old");
        let new = kf.key("new").expect("new");
        let repo = tempfile::tempdir().expect("tempdir");
        let a = old.encrypt(b"alpha");
        let toml = format!("[x]\npw = \"!decrypt:{a}\"\n");
        std::fs::write(repo.path().join("nodes.toml"), &toml).expect("write");
        std::fs::create_dir_all(repo.path().join("bundles/b/files")).expect("mkdir");
        let f = repo.path().join("bundles/b/files/cert.enc");
        std::fs::write(&f, format!("{}\n", old.encrypt(b"-----CERT-----\n"))).expect("write");

        assert_eq!(
            rotate(repo.path(), &kf, "old", "new").expect("rotates"),
            (2, 2)
        );
        let after = std::fs::read_to_string(repo.path().join("nodes.toml")).expect("read");
        let ct = ciphertext_pattern()
            .find(&after)
            .expect("still a ciphertext");
        let parsed = Ciphertext::parse(ct.as_str()).expect("parses");
        assert_eq!(parsed.key, "new");
        assert_eq!(new.decrypt(&parsed).expect("decrypts"), b"alpha");
        let file = std::fs::read_to_string(&f).expect("read");
        let parsed = Ciphertext::parse(&file).expect("parses");
        assert_eq!(new.decrypt(&parsed).expect("decrypts"), b"-----CERT-----\n");

        // Back again, with one value tampered: nothing at all may change.
        let broken = old.encrypt(b"beta").replace(":old:", ":new:");
        let before = format!("{after}y = \"!decrypt:{broken}\"\n");
        std::fs::write(repo.path().join("nodes.toml"), &before).expect("write");
        let err = rotate(repo.path(), &kf, "new", "old").expect_err("refused");
        assert!(err.to_string().contains("nothing was rotated"), "{err}");
        let unchanged = std::fs::read_to_string(repo.path().join("nodes.toml")).expect("read");
        assert_eq!(unchanged, before);
        assert_eq!(std::fs::read_to_string(&f).expect("read"), file);
    }
}
