//! The item types: one `ItemType` per type, each in its own file, listed once in `TYPES`.
//!
//! Adding a type: its file (an `ItemType` for parsing, a `state::Stateful` for probing and
//! fixing), one line in `TYPES`, one `ItemKind` variant, and its tests. The registry test
//! checks every listed type parses a minimal item and is found by name and by table.

use super::ItemKind;
use super::parse::{RawItem, Reader};
use crate::repo::Bundle;

/// What the loader needs to know about one item type.
pub(crate) trait ItemType: Sync {
    /// The singular name used in item ids (`file` in `file:/etc/motd`).
    fn name(&self) -> &'static str;
    /// The items.toml table holding such items (`files`).
    fn table(&self) -> &'static str;
    /// Attributes of this type, besides the dependency attributes every item takes
    /// ([`super::COMMON_ATTRS`]); anything else is reported as unknown.
    fn attrs(&self) -> &'static [&'static str];
    /// Builds the item's typed attributes; problems go to `r` as diagnostics (`None` then).
    fn parse(&self, bundle: &Bundle, raw: &RawItem, r: &mut Reader<'_>) -> Option<ItemKind>;
}

/// Every item type, in the order docs and `ITEM_TYPES` list them.
pub(crate) static TYPES: &[&dyn ItemType] = &[
    &super::file::Type,
    &super::directory::Type,
    &super::symlink::Type,
    &super::action::Type,
    &super::user::Type,
    &super::group::Type,
    &super::pkg_apt::Type,
    &super::svc_systemd::Type,
];

/// The type with this singular name.
pub(crate) fn by_name(name: &str) -> Option<&'static dyn ItemType> {
    TYPES.iter().copied().find(|t| t.name() == name)
}

/// The type stored in this items.toml table.
pub(crate) fn by_table(table: &str) -> Option<&'static dyn ItemType> {
    TYPES.iter().copied().find(|t| t.table() == table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::testutil::Fixture;

    /// A minimal valid item of each type, as items.toml text.
    fn minimal(table: &str) -> String {
        let body = match table {
            "files" => "content = \"x\"",
            "symlinks" => "target = \"/tmp\"",
            "actions" => "command = \"true\"",
            _ => "",
        };
        let name = match table {
            "files" | "directories" | "symlinks" => "\"/tmp/cinch-registry\"",
            _ => "registry1",
        };
        format!("[{table}.{name}]\n{body}\n")
    }

    #[test]
    fn every_registered_item_type_parses_and_is_found_by_name_and_table() {
        for ty in TYPES {
            let f = Fixture::new().toml("b", &minimal(ty.table()));
            let items = f.ok_items();
            assert_eq!(items.len(), 1, "{} parses one item", ty.table());
            let item = &items[0];
            assert_eq!(item.type_name(), ty.name(), "kind of a {} item", ty.table());
            assert_eq!(
                by_name(item.type_name()).map(|t| t.table()),
                Some(ty.table())
            );
            assert_eq!(by_table(ty.table()).map(|t| t.name()), Some(ty.name()));
        }
    }

    #[test]
    fn item_types_listed_for_selectors_and_tables_are_exactly_the_registry() {
        let listed: Vec<(&str, &str)> = super::super::ITEM_TYPES.to_vec();
        let registered: Vec<(&str, &str)> = TYPES.iter().map(|t| (t.table(), t.name())).collect();
        assert_eq!(listed, registered, "ITEM_TYPES and the registry must agree");
    }

    #[test]
    fn names_and_tables_are_unique_and_attributes_not_repeated() {
        let mut seen = std::collections::HashSet::new();
        for ty in TYPES {
            assert!(seen.insert(ty.name()), "{} twice", ty.name());
            assert!(seen.insert(ty.table()) || ty.table() == ty.name());
            let mut attrs = std::collections::HashSet::new();
            for a in ty.attrs() {
                assert!(attrs.insert(a), "{}: `{a}` twice", ty.name());
            }
        }
    }
}
