//! The item types: one `ItemType` per type, each in its own file, listed once in `TYPES`.
//!
//! Adding a type: its file (an [`ItemType`](super::item_type::ItemType) naming the type, its attributes, parser, hook/JSON
//! view, and handing out its `state::Stateful` for probing and fixing), one line in `TYPES`,
//! one `ItemKind` variant with its arm in [`ItemKind::item_type`], and its tests. The registry
//! tests check every listed type parses a minimal item, is found by name and by table, and
//! that everything else (selectors, tables, `stateful`, canned actions) is derived from here.

pub(crate) use super::item_type::ItemType;

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
    fn every_registered_item_type_is_its_kinds_type_and_hands_out_its_behaviour() {
        for ty in TYPES {
            let f = Fixture::new().toml("b", &minimal(ty.table()));
            let item = &f.ok_items()[0];
            assert!(
                std::ptr::addr_eq(item.kind.item_type(), *ty),
                "{}: ItemKind::item_type points at another type",
                ty.name()
            );
            // Only actions run instead of being probed and fixed.
            assert_eq!(
                ty.stateful(&item.kind).is_some(),
                ty.name() != "action",
                "{}: stateful",
                ty.name()
            );
            assert!(ty.view(&item.kind).is_object(), "{}: view", ty.name());
        }
    }

    #[test]
    fn every_attribute_of_every_item_type_is_documented_in_items_md() {
        let docs = include_str!("../../docs/items.md");
        for ty in TYPES {
            let heading = format!("## {} (`{}`)", ty.name(), ty.table());
            let Some(start) = docs.find(&heading) else {
                panic!("docs/items.md has no section `{heading}`");
            };
            let section = &docs[start + heading.len()..];
            let section = &section[..section.find("\n## ").unwrap_or(section.len())];
            // A row's first cell names one or more attributes (`| `owner`, `group` | ...`).
            let named: Vec<&str> = section
                .lines()
                .filter_map(|l| l.strip_prefix("| "))
                .filter_map(|l| l.split(" |").next())
                .collect();
            for a in ty.attrs() {
                let quoted = format!("`{}`", a.name);
                assert!(
                    named.iter().any(|cell| cell.contains(&quoted)),
                    "docs/items.md `{heading}` has no table row for attribute {quoted}"
                );
            }
        }
    }

    #[test]
    fn names_and_tables_are_unique_and_attributes_not_repeated() {
        let mut seen = std::collections::HashSet::new();
        for ty in TYPES {
            assert!(seen.insert(ty.name()), "{} twice", ty.name());
            assert!(seen.insert(ty.table()) || ty.table() == ty.name());
            let mut attrs = std::collections::HashSet::new();
            for a in ty.attrs() {
                assert!(attrs.insert(a.name), "{}: `{}` twice", ty.name(), a.name);
                assert!(
                    !a.doc.is_empty(),
                    "{}: `{}` has no doc line",
                    ty.name(),
                    a.name
                );
            }
        }
    }
}
