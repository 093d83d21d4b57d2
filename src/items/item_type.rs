//! The interface every item type implements, in the type's own file: what the type is called,
//! its attributes, how it parses and how it is probed, fixed or run. The registry lists the
//! implementations; nothing here names a type.

use super::reader::{Attr, RawItem, Reader};
use super::state::Stateful;
use super::{Item, ItemKind};
use crate::repo::Bundle;

/// Everything cinch knows about one item type, in the type's own file.
pub(crate) trait ItemType: Sync {
    /// The singular name used in item ids (`file` in `file:/etc/motd`).
    fn name(&self) -> &'static str;
    /// The items.toml table holding such items (`files`).
    fn table(&self) -> &'static str;
    /// Attributes of this type, besides the dependency attributes every item takes
    /// ([`super::COMMON_ATTRS`]); anything else is reported as unknown, and the parser may
    /// read nothing else (checked in debug builds).
    fn attrs(&self) -> &'static [Attr];
    /// Builds the item's typed attributes; problems go to `r` as diagnostics (`None` then).
    fn parse(&self, bundle: &Bundle, raw: &RawItem, r: &mut Reader<'_>) -> Option<ItemKind>;
    /// How items of this type are probed and fixed; `None` for types that only run (actions).
    fn stateful<'a>(&self, kind: &'a ItemKind) -> Option<&'a dyn Stateful>;
    /// The type-specific attributes as hooks and JSON see them (sensitive values left out).
    fn view(&self, kind: &ItemKind) -> serde_json::Value;
    /// Whether the name is a path on the node, giving the item automatic dependencies on its
    /// parent directories.
    fn is_path(&self) -> bool {
        false
    }
    /// Whether the item removes what it names (`delete = true`, `installed = false`).
    fn deletes(&self, kind: &ItemKind) -> bool {
        let _ = kind;
        false
    }
    /// What the item runs, for types that run instead of being probed and fixed (actions).
    fn run<'a>(&self, kind: &'a ItemKind) -> Option<&'a super::ActionAttrs> {
        let _ = kind;
        None
    }
    /// The items this item brings along (`svc_systemd:nginx:restart`), ids `ITEM_ID:NAME`.
    fn canned_actions(&self, item: &Item) -> Vec<Item> {
        let _ = item;
        Vec::new()
    }
}

/// `mode` as users write it (`0644`), for attribute views.
pub(crate) fn mode_view(mode: Option<u32>) -> Option<String> {
    mode.map(|m| format!("{m:04o}"))
}
