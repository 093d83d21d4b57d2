//! The repository as cinch sees it: nodes, groups, bundles and settings, loaded once and
//! then only read, so node workers can share it without locks.

pub mod computed;
mod group;
pub mod load;
pub mod metadata;
pub mod node;
pub mod rhai_engine;
pub mod sandbox;
pub mod secrets;
pub mod settings;
mod target;
pub mod template;
pub(crate) mod toml_file;

pub use node::{Node, TransportKind};
pub use sandbox::Sandbox;
pub use settings::Settings;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::diag::{Location, did_you_mean};
use crate::error::{Error, Result};

/// A group as written in the repo, plus where it was defined.
#[derive(Debug, Clone, Default)]
pub struct Group {
    pub name: String,
    pub bundles: Vec<String>,
    pub members: Vec<String>,
    pub member_patterns: Vec<String>,
    pub subgroups: Vec<String>,
    pub metadata: serde_json::Value,
    pub location: Location,
    /// Every supergroup at any distance, sorted: a member of this group is in all of them.
    pub supergroups: Vec<String>,
    /// Every node in the group (directly, by pattern, or through a subgroup), sorted.
    pub nodes: Vec<String>,
}

/// A bundle directory: its files are read by the item loader.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub name: String,
    pub dir: PathBuf,
    /// `metadata.toml` contents (an object), `{}` when absent.
    pub metadata_defaults: serde_json::Value,
    /// Parsed items.toml, compiled items.rhai and templates, filled on first use by the item
    /// loader and shared by every node that has this bundle. The repo does not know the
    /// cache's type (items sit above the repo), so it is held type-erased.
    pub items_cache: DerivedCache,
}

impl Bundle {
    /// A bundle whose item files have not been read yet.
    pub fn new(
        name: impl Into<String>,
        dir: PathBuf,
        metadata_defaults: serde_json::Value,
    ) -> Self {
        Bundle {
            name: name.into(),
            dir,
            metadata_defaults,
            items_cache: Default::default(),
        }
    }
}

/// Data a higher layer derives from a bundle once and keeps with it, of a type the repo does
/// not know. A cloned bundle starts empty and fills its own.
#[derive(Default)]
pub struct DerivedCache(std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>);

impl DerivedCache {
    /// The cached value, made with `init` on first use; `None` if the cache holds another
    /// type (one bundle's cache belongs to one user).
    pub fn get_or_init<T: std::any::Any + Send + Sync>(
        &self,
        init: impl FnOnce() -> T,
    ) -> Option<&T> {
        self.0.get_or_init(|| Box::new(init())).downcast_ref()
    }
}

impl Clone for DerivedCache {
    fn clone(&self) -> Self {
        DerivedCache::default()
    }
}

impl std::fmt::Debug for DerivedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DerivedCache")
            .field("filled", &self.0.get().is_some())
            .finish()
    }
}

/// The loaded repository.
#[derive(Debug, Clone)]
pub struct Repo {
    pub path: PathBuf,
    pub settings: Settings,
    pub nodes: BTreeMap<String, Node>,
    pub groups: BTreeMap<String, Group>,
    pub bundles: BTreeMap<String, Bundle>,
}

impl Repo {
    /// Finds the repo (`-r`, `$CINCH_REPO`, or the current directory and its parents) and loads it.
    pub fn discover(explicit: Option<&Path>) -> Result<Repo> {
        Repo::load(&Repo::discover_root(explicit)?)
    }

    /// Where [`Repo::discover`] finds the repo, without loading it (`cinch diff` loads other
    /// revisions of it from git).
    pub fn discover_root(explicit: Option<&Path>) -> Result<PathBuf> {
        let root = match explicit {
            Some(dir) => {
                if !is_repo(dir) {
                    return Err(not_a_repo(dir, false));
                }
                dir.to_path_buf()
            }
            None => {
                let cwd = std::env::current_dir()
                    .map_err(|e| Error::io("finding the current directory", e))?;
                cwd.ancestors()
                    .find(|d| is_repo(d))
                    .map(Path::to_path_buf)
                    .ok_or_else(|| not_a_repo(&cwd, true))?
            }
        };
        Ok(root)
    }

    /// Loads the repo at `root` without searching; every problem found is in the error.
    pub fn load(root: &Path) -> Result<Repo> {
        let root = std::path::absolute(root)
            .map_err(|e| Error::io(format!("resolving {}", root.display()), e))?;
        load::load(&root).map_err(Error::Repo)
    }

    /// Where repo code may read files (see [`Sandbox`]).
    pub fn sandbox(&self) -> Sandbox {
        Sandbox::new(&self.path, self.settings.allow_external_symlinks)
    }

    /// The node called `name`, or a usage error with the closest name as a hint.
    pub fn node(&self, name: &str) -> Result<&Node> {
        self.nodes.get(name).ok_or_else(|| {
            let mut msg = format!("no node named '{name}'");
            if let Some(close) = did_you_mean(name, self.nodes.keys().map(String::as_str)) {
                msg.push_str(&format!(" (did you mean '{close}'?)"));
            }
            Error::Usage(msg)
        })
    }
}

/// Reads a repo file without ever blocking: a FIFO or device where a file should be is
/// refused (a FIFO would otherwise hang the loader until something writes to it), and so is a
/// directory. A missing file is `NotFound`, as with `std::fs::read`.
pub fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {}, not a regular file", describe_file_type(kind)),
        ));
    }
    let mut out = Vec::new();
    file.read_to_end(&mut out)?;
    Ok(out)
}

/// Like [`read_file`], for text: invalid UTF-8 is an `InvalidData` error.
pub fn read_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_file(path)?).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "it is not valid UTF-8 text",
        )
    })
}

/// "a directory", "a FIFO", ... for errors about a path that is not a regular file.
pub(crate) fn describe_file_type(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else if kind.is_symlink() {
        "a symlink"
    } else {
        "a regular file"
    }
}

fn is_repo(dir: &Path) -> bool {
    dir.join("nodes.toml").is_file()
        || dir.join("nodes").is_dir()
        || dir.join("cinch.toml").is_file()
}

fn not_a_repo(dir: &Path, searched_parents: bool) -> Error {
    let where_ = if searched_parents {
        format!("{} (or any parent directory)", dir.display())
    } else {
        dir.display().to_string()
    };
    let why = if !searched_parents && !dir.exists() {
        " (it does not exist)"
    } else {
        ""
    };
    // Says exactly what `is_repo` accepts.
    Error::Usage(format!(
        "{where_} is not a cinch repo{why}: a repo has a nodes.toml file, a nodes/ directory \
         or a cinch.toml file\n  hint: pass -r DIR or set CINCH_REPO, or create a repo with \
         `cinch repo create DIR`"
    ))
}
