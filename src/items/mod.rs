//! Items: the things a bundle manages. Every type has the same shape (typed attributes parsed
//! from items.toml / items.rhai; an expected state; an actual state read from the node; a fix).

use crate::diag::Location;

/// What kind of thing an item manages, with its type-specific attributes.
#[derive(Debug, Clone, PartialEq, Hash)]
pub enum ItemKind {
    File(FileAttrs),
    Directory(DirectoryAttrs),
    Symlink(SymlinkAttrs),
    Action(ActionAttrs),
    User(UserAttrs),
    Group(GroupAttrs),
    PkgApt(PkgAptAttrs),
    SvcSystemd(SvcSystemdAttrs),
}

impl ItemKind {
    /// The type unit that knows how to handle this kind (the only per-type match outside the
    /// type files).
    pub(crate) fn item_type(&self) -> &'static dyn item_type::ItemType {
        match self {
            ItemKind::File(_) => &file::Type,
            ItemKind::Directory(_) => &directory::Type,
            ItemKind::Symlink(_) => &symlink::Type,
            ItemKind::Action(_) => &action::Type,
            ItemKind::User(_) => &user::Type,
            ItemKind::Group(_) => &group::Type,
            ItemKind::PkgApt(_) => &pkg_apt::Type,
            ItemKind::SvcSystemd(_) => &svc_systemd::Type,
        }
    }

    /// The singular type name used in item ids (`file:/etc/motd`).
    pub fn type_name(&self) -> &'static str {
        self.item_type().name()
    }
}

/// Every item type as (table name in items.toml, singular id prefix), from the registry.
pub fn item_types() -> impl Iterator<Item = (&'static str, &'static str)> + Clone {
    registry::TYPES.iter().map(|t| (t.table(), t.name()))
}

/// How a file's content is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    /// UTF-8 text taken verbatim.
    #[default]
    Text,
    /// A minijinja template rendered per node.
    Jinja2,
    /// `content` is base64; the decoded bytes are the file.
    Base64,
    /// `source` is uploaded byte for byte.
    Binary,
    /// Only existence, mode and ownership are managed.
    Any,
}

/// Where a file's content comes from.
#[derive(Debug, Clone, PartialEq, Hash)]
pub enum FileSource {
    /// Inline `content`.
    Content(String),
    /// `source`, resolved to `bundles/NAME/files/...`.
    Source(std::path::PathBuf),
    /// No content (content_type "any", or delete).
    None,
}

/// `[files."PATH"]`.
#[derive(Debug, Clone, PartialEq, Hash)]
pub struct FileAttrs {
    pub source: FileSource,
    pub content_type: ContentType,
    /// Permission bits; `None` leaves them alone.
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub delete: bool,
    /// Never diff or log the content.
    pub sensitive: bool,
}

/// `[directories."PATH"]`.
#[derive(Debug, Clone, PartialEq, Hash)]
pub struct DirectoryAttrs {
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// Remove entries not managed by any file/directory/symlink item.
    pub purge: bool,
    pub delete: bool,
}

/// `[symlinks."PATH"]`.
#[derive(Debug, Clone, PartialEq, Hash)]
pub struct SymlinkAttrs {
    pub target: String,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub delete: bool,
}

/// `[actions.NAME]`.
#[derive(Debug, Clone, PartialEq, Hash)]
pub struct ActionAttrs {
    pub command: String,
    /// Accepted exit codes; empty means any.
    pub expected_return_code: Vec<i32>,
    pub expected_stdout: Option<String>,
    pub expected_stderr: Option<String>,
    pub data_stdin: Option<String>,
    /// Some(true): only in interactive runs; Some(false): never ask.
    pub interactive: Option<bool>,
}

/// `[users.NAME]`.
#[derive(Debug, Clone, PartialEq, Default, Hash)]
pub struct UserAttrs {
    pub uid: Option<u32>,
    /// Primary group, by name or number.
    pub gid: Option<String>,
    pub groups: Option<Vec<String>>,
    pub home: Option<String>,
    pub shell: Option<String>,
    pub full_name: Option<String>,
    pub password_hash: Option<String>,
    pub delete: bool,
}

/// `[groups.NAME]`.
#[derive(Debug, Clone, PartialEq, Default, Hash)]
pub struct GroupAttrs {
    pub gid: Option<u32>,
    pub delete: bool,
}

/// `[pkg_apt.NAME]`.
#[derive(Debug, Clone, PartialEq, Hash)]
pub struct PkgAptAttrs {
    pub installed: bool,
}

/// `[svc_systemd.NAME]`; `None` means "don't care".
#[derive(Debug, Clone, PartialEq, Default, Hash)]
pub struct SvcSystemdAttrs {
    pub running: Option<bool>,
    pub enabled: Option<bool>,
    pub masked: Option<bool>,
}

/// The attributes every item type shares (docs/items.md), as written (selectors unresolved).
#[derive(Debug, Clone, PartialEq, Default, Hash)]
pub struct Deps {
    pub needs: Vec<String>,
    pub needed_by: Vec<String>,
    pub after: Vec<String>,
    pub before: Vec<String>,
    pub precedes: Vec<String>,
    pub preceded_by: Vec<String>,
    pub triggers: Vec<String>,
    pub triggered_by: Vec<String>,
    pub tags: Vec<String>,
    pub triggered: bool,
    pub unless: Option<String>,
    pub skip: bool,
    /// `None`: computed (true unless skip/triggered/unless is set).
    pub cascade_skip: Option<bool>,
    pub comment: Option<String>,
    /// Where each dependency attribute (`needs`, `after`, ...) was written, so a dependency
    /// problem points at that line rather than at the item's header.
    pub locations: std::collections::BTreeMap<&'static str, Location>,
}

impl Deps {
    /// Where dependency attribute `attr` was written; `fallback` (the item) when unknown.
    pub fn location_of<'a>(&'a self, attr: &str, fallback: &'a Location) -> &'a Location {
        self.locations.get(attr).unwrap_or(fallback)
    }
}

/// One item of one node.
#[derive(Debug, Clone, PartialEq, Hash)]
pub struct Item {
    /// `TYPE:NAME`, e.g. `file:/etc/motd`.
    pub id: String,
    /// The part after `TYPE:` (a path for files, a name otherwise).
    pub name: String,
    pub bundle: String,
    pub kind: ItemKind,
    pub deps: Deps,
    /// Where the item was defined (items.toml table or items.rhai).
    pub location: Location,
}

impl Item {
    /// The singular type name (`file`, `pkg_apt`, ...).
    pub fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }
}

pub mod action;
pub mod directory;
pub mod file;
pub mod group;
pub mod item_type;
pub mod load;
pub mod parse;
pub mod pkg_apt;
pub mod reader;
pub mod registry;
pub mod render;
pub mod rhai;
pub mod selector;
pub mod state;
pub mod svc_systemd;
pub mod symlink;
mod toml_chunks;
pub mod user;

pub use load::load_node_items;

/// The attributes every item type accepts (docs/items.md), for validation and "did you mean" hints.
pub const COMMON_ATTRS: &[&str] = &[
    "needs",
    "needed_by",
    "after",
    "before",
    "precedes",
    "preceded_by",
    "triggers",
    "triggered_by",
    "tags",
    "triggered",
    "unless",
    "skip",
    "cascade_skip",
    "comment",
];

impl Item {
    /// Whether the name is a path on the node (file, directory, symlink), which gives the item
    /// automatic dependencies on its parent directories.
    pub fn is_path(&self) -> bool {
        self.kind.item_type().is_path()
    }

    /// Whether a failure or skip of this item skips the items that need it (docs/items.md): explicit
    /// `cascade_skip`, else true unless `skip`, `triggered` or `unless` is set.
    pub fn cascade_skip(&self) -> bool {
        self.deps
            .cascade_skip
            .unwrap_or(!(self.deps.skip || self.deps.triggered || self.deps.unless.is_some()))
    }

    /// Whether the item removes what it names (`delete = true`, `installed = false`).
    pub fn deletes(&self) -> bool {
        self.kind.item_type().deletes(&self.kind)
    }
}

#[cfg(test)]
pub(crate) mod testutil;
