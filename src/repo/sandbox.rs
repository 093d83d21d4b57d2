//! Which files repo code may read: those inside the repo. A symlink in the repo that leads
//! out of it (`files/x -> /etc/shadow`) would otherwise upload or render any file the user
//! running cinch can read, so it is refused, naming the link, unless `cinch.toml` says
//! `[repo] allow_external_symlinks = true`.

use std::path::{Component, Path, PathBuf};

/// The repo root and whether symlinks may leave it; cheap to clone into closures.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The repo root as given (shown in messages).
    root: PathBuf,
    /// The repo root with every symlink resolved (what real paths are compared with).
    real_root: Option<PathBuf>,
    /// `[repo] allow_external_symlinks` of cinch.toml.
    allow_external: bool,
}

/// The hint every refusal carries, so users know both ways out.
pub const HINT: &str = "copy the file into the repo, or set `allow_external_symlinks = true` \
                        under [repo] in cinch.toml to allow links out of it";

impl Sandbox {
    /// The sandbox of the repo at `root`.
    pub fn new(root: &Path, allow_external: bool) -> Sandbox {
        Sandbox {
            root: root.to_path_buf(),
            real_root: root.canonicalize().ok(),
            allow_external,
        }
    }

    /// The repo root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Why `path` (inside the repo, as `root/...`) may not be read, if it may not: the first
    /// symlink on the way whose target resolves outside the repo, named relative to the repo.
    /// Paths that do not exist are left to the caller's "not found" error.
    pub fn escape(&self, path: &Path) -> Option<String> {
        if self.allow_external {
            return None;
        }
        let real_root = self.real_root.as_ref()?;
        let real = path.canonicalize().ok()?;
        if real.starts_with(real_root) {
            return None;
        }
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        let mut prefix = self.root.clone();
        let mut last_link = None;
        for c in rel.components() {
            if let Component::Normal(part) = c {
                prefix.push(part);
            } else {
                prefix = prefix.join(c.as_os_str());
            }
            let Ok(meta) = prefix.symlink_metadata() else {
                break;
            };
            if !meta.file_type().is_symlink() {
                continue;
            }
            last_link = Some(prefix.clone());
            let outside = prefix
                .canonicalize()
                .is_ok_and(|r| !r.starts_with(real_root));
            if outside {
                break;
            }
        }
        let link = last_link.unwrap_or_else(|| path.to_path_buf());
        let shown = link.strip_prefix(&self.root).unwrap_or(&link);
        let target = std::fs::read_link(&link)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| real.display().to_string());
        let resolved = if Path::new(&target) == real {
            String::new()
        } else {
            format!(" ({})", real.display())
        };
        Some(format!(
            "{} is a symlink to {target}, which is outside the repo{resolved}",
            shown.display(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_inside_the_repo_pass_and_links_out_are_named() {
        let repo = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let root = repo.path();
        std::fs::create_dir_all(root.join("a/files")).expect("mkdir");
        std::fs::write(root.join("a/files/real"), "x").expect("write");
        std::fs::write(outside.path().join("secret"), "s").expect("write");
        symlink("real", root.join("a/files/inside")).expect("symlink");
        symlink(outside.path().join("secret"), root.join("a/files/out")).expect("symlink");
        symlink(outside.path(), root.join("a/dir")).expect("symlink");
        let sb = Sandbox::new(root, false);
        assert_eq!(sb.escape(&root.join("a/files/real")), None);
        assert_eq!(sb.escape(&root.join("a/files/inside")), None);
        assert_eq!(sb.escape(&root.join("a/files/missing")), None);
        let msg = sb.escape(&root.join("a/files/out")).expect("refused");
        assert!(msg.starts_with("a/files/out is a symlink to /"), "{msg}");
        assert!(msg.contains("outside the repo"), "{msg}");
        let msg = sb.escape(&root.join("a/dir/secret")).expect("refused");
        assert!(msg.starts_with("a/dir is a symlink to "), "{msg}");
        assert_eq!(
            Sandbox::new(root, true).escape(&root.join("a/files/out")),
            None
        );
    }
}
