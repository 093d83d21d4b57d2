//! The repo as it was at a git revision: `git archive REV:PREFIX | tar -x` into a private
//! temporary directory, so the user's work tree, index and HEAD are never touched.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::diag::{Diagnostic, Location};
use crate::error::{Error, Result};
use crate::repo::Repo;

/// A repo loaded from a git revision; the files live as long as this value.
pub struct Revision {
    /// What the user wrote (`HEAD~1`), for messages.
    pub name: String,
    /// The full commit id it resolved to.
    pub commit: String,
    /// The repo as loaded from that commit.
    pub repo: Repo,
    _dir: tempfile::TempDir,
}

/// Loads the repo at `root` as it was at revision `rev` of the git repository holding it.
pub fn load_at(root: &Path, rev: &str) -> Result<Revision> {
    if rev.is_empty() || rev.starts_with('-') {
        return Err(Error::Usage(format!(
            "'{rev}' is not a git revision; give a commit, branch or tag such as HEAD~1 or main"
        )));
    }
    let toplevel = git(root, &["rev-parse", "--show-toplevel"]).map_err(|e| {
        Error::Usage(format!(
            "{} is not in a git repository: {e}",
            root.display()
        ))
    })?;
    let prefix = git(root, &["rev-parse", "--show-prefix"])?;
    let commit = git(
        root,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &format!("{rev}^{{commit}}"),
        ],
    )
    .map_err(|_| {
        Error::Usage(format!(
            "'{rev}' is not a commit of the git repository at {toplevel}"
        ))
    })?;
    let dir = tempfile::Builder::new()
        .prefix("cinch-diff-")
        .tempdir()
        .map_err(|e| Error::io("creating a temporary directory", e))?;
    let tree = format!("{commit}:{prefix}");
    // From the top level: in a subdirectory, git archive would keep only that subdirectory's
    // paths *inside* the tree named, which is then empty.
    let tar =
        git_bytes(Path::new(&toplevel), &["archive", "--format=tar", &tree]).map_err(|e| {
            Error::Usage(format!(
                "the repo directory {prefix} does not exist at {rev} ({e})",
                prefix = if prefix.is_empty() { "." } else { &prefix }
            ))
        })?;
    untar(&tar, dir.path())?;
    let repo = Repo::load(dir.path()).map_err(|e| relabel(e, dir.path(), rev))?;
    Ok(Revision {
        name: rev.to_string(),
        commit,
        repo,
        _dir: dir,
    })
}

/// Runs git in `dir` and returns its trimmed stdout, or its stderr as the error.
fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = git_bytes(dir, args).map_err(Error::Usage)?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// Runs git in `dir`; stdout, or a one-line reason.
fn git_bytes(dir: &Path, args: &[&str]) -> std::result::Result<Vec<u8>, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run git ({e}); install git to use cinch diff"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err
            .lines()
            .next()
            .unwrap_or("git failed")
            .trim()
            .to_string());
    }
    Ok(out.stdout)
}

/// Unpacks a tar stream from `git archive` into `dest` with the system tar.
fn untar(tar: &[u8], dest: &Path) -> Result<()> {
    let mut child = Command::new("tar")
        .arg("-x")
        .arg("-f")
        .arg("-")
        .arg("-C")
        .arg(dest)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("running tar to unpack a git revision", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A tar that stops reading early reports why through its exit status below.
        let _ = stdin.write_all(tar);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io("running tar to unpack a git revision", e))?;
    if !out.status.success() {
        return Err(Error::io(
            "unpacking a git revision",
            std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        ));
    }
    Ok(())
}

/// Problems found in an unpacked revision point at `REV:path` instead of the temporary
/// directory, which is gone by the time the user reads them.
pub fn relabel(e: Error, dir: &Path, rev: &str) -> Error {
    let fix = |d: Diagnostic| relabel_diag(d, dir, rev);
    match e {
        Error::Repo(diags) => Error::Repo(diags.into_iter().map(fix).collect()),
        Error::Usage(msg) => Error::Usage(relabel_text(&msg, dir, rev)),
        other => other,
    }
}

/// [`relabel`] for one diagnostic.
pub fn relabel_diag(mut d: Diagnostic, dir: &Path, rev: &str) -> Diagnostic {
    if let Some(loc) = &mut d.location
        && let Ok(rel) = loc.file.strip_prefix(dir)
    {
        *loc = Location {
            file: PathBuf::from(format!("{rev}:{}", rel.display())),
            ..loc.clone()
        };
    }
    d.message = relabel_text(&d.message, dir, rev);
    d
}

fn relabel_text(text: &str, dir: &Path, rev: &str) -> String {
    let shown = dir.display().to_string();
    text.replace(&format!("{shown}/"), &format!("{rev}:"))
        .replace(&shown, &format!("{rev}:"))
}
