//! The one item-selector language shared by dependencies, `apply -o/-s` and soft-lock scopes,
//! so a selector means the same thing everywhere:
//! `TYPE:NAME` (one item), `TYPE:` (every item of a type), `bundle:NAME`, `tag:NAME`,
//! `tag:` (every tagged item) and `*` (everything).

use crate::diag::did_you_mean;
use crate::items::{Item, item_types};

/// A selector taken apart, so callers resolving many items parse it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector<'a> {
    /// `*`.
    All,
    /// `bundle:NAME`.
    Bundle(&'a str),
    /// `tag:NAME`.
    Tag(&'a str),
    /// `tag:`.
    AnyTag,
    /// `TYPE:`.
    Type(&'a str),
    /// `TYPE:NAME`, compared with whole item ids (generated items such as
    /// `svc_systemd:nginx:restart` are matched by id too).
    Id(&'a str),
}

impl<'a> Selector<'a> {
    /// Splits a selector without checking that its type exists (see [`validate`]).
    pub fn parse(selector: &'a str) -> Option<Selector<'a>> {
        if selector == "*" {
            return Some(Selector::All);
        }
        let (prefix, rest) = selector.split_once(':')?;
        if prefix.is_empty() {
            return None;
        }
        Some(match (prefix, rest) {
            ("bundle", name) => Selector::Bundle(name),
            ("tag", "") => Selector::AnyTag,
            ("tag", name) => Selector::Tag(name),
            (ty, "") => Selector::Type(ty),
            _ => Selector::Id(selector),
        })
    }

    /// Whether this selector picks `item`.
    pub fn matches(&self, item: &Item) -> bool {
        match *self {
            Selector::All => true,
            Selector::Bundle(b) => item.bundle == b,
            Selector::Tag(t) => item.deps.tags.iter().any(|x| x == t),
            Selector::AnyTag => !item.deps.tags.is_empty(),
            Selector::Type(ty) => item.type_name() == ty,
            Selector::Id(id) => item.id == id,
        }
    }

    /// Whether it names exactly one item (a missing one is then an error, not an empty set).
    pub fn is_single(&self) -> bool {
        matches!(self, Selector::Id(_))
    }
}

/// Whether `selector` picks `item`; an invalid selector picks nothing.
pub fn matches(selector: &str, item: &Item) -> bool {
    Selector::parse(selector).is_some_and(|s| s.matches(item))
}

/// Checks a selector's shape and type name, with a "did you mean" for misspelt types.
pub fn validate(selector: &str) -> Result<(), String> {
    let parsed = Selector::parse(selector).ok_or_else(|| {
        format!(
            "`{selector}` is not an item selector; use TYPE:NAME (like file:/etc/motd), TYPE:, \
             bundle:NAME, tag:NAME or *"
        )
    })?;
    let ty = match parsed {
        Selector::All | Selector::AnyTag | Selector::Tag(_) => return Ok(()),
        Selector::Bundle("") => {
            return Err(format!("`{selector}` lacks a bundle name (bundle:NAME)"));
        }
        Selector::Bundle(_) => return Ok(()),
        Selector::Type(ty) => ty,
        Selector::Id(id) => id.split_once(':').map_or(id, |(ty, _)| ty),
    };
    if crate::items::registry::by_name(ty).is_some() {
        return Ok(());
    }
    let mut msg = format!("`{selector}` names an unknown item type `{ty}`");
    let candidates = item_types().map(|(_, s)| s).chain(["bundle", "tag"]);
    // Users often write the plural table name (`files:`) where the singular id prefix belongs.
    let plural = crate::items::registry::by_table(ty).map(|t| t.name());
    if let Some(better) = plural.or_else(|| did_you_mean(ty, candidates)) {
        msg.push_str(&format!(" (did you mean `{better}:`?)"));
    }
    Err(msg)
}

/// The item id closest to a selector that matched nothing, for "did you mean" hints.
pub fn suggest<'a>(selector: &str, items: impl IntoIterator<Item = &'a Item>) -> Option<&'a str> {
    did_you_mean(selector, items.into_iter().map(|i| i.id.as_str()))
}

/// A message for every selector that matches none of `items`, with a "did you mean" hint: a
/// typo in `-o`, `-s` or `lock add -i` must be an error, never a silent no-op. `*` always
/// matches.
pub fn unmatched(selectors: &[String], items: &[&Item]) -> Vec<String> {
    selectors
        .iter()
        .filter(|sel| sel.as_str() != "*" && !items.iter().any(|i| matches(sel, i)))
        .map(|sel| {
            let hint = suggest(sel, items.iter().copied())
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            format!("item selector '{sel}' matches no item{hint}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Location;
    use crate::items::{Deps, ItemKind, PkgAptAttrs};

    fn item(id: &str, bundle: &str, tags: &[&str]) -> Item {
        let (_, name) = id.split_once(':').unwrap();
        Item {
            id: id.into(),
            name: name.into(),
            bundle: bundle.into(),
            kind: ItemKind::PkgApt(PkgAptAttrs { installed: true }),
            deps: Deps {
                tags: tags.iter().map(|t| t.to_string()).collect(),
                ..Deps::default()
            },
            location: Location::default(),
        }
    }

    #[test]
    fn each_form_matches_what_it_names() {
        let nginx = item("pkg_apt:nginx", "web", &["frontend"]);
        assert!(matches("pkg_apt:nginx", &nginx));
        assert!(!matches("pkg_apt:nginx2", &nginx));
        assert!(matches("pkg_apt:", &nginx));
        assert!(!matches("file:", &nginx));
        assert!(matches("bundle:web", &nginx));
        assert!(!matches("bundle:db", &nginx));
        assert!(matches("tag:frontend", &nginx));
        assert!(!matches("tag:backend", &nginx));
        assert!(matches("tag:", &nginx));
        assert!(!matches("tag:", &item("pkg_apt:x", "web", &[])));
        assert!(matches("*", &nginx));
        assert!(!matches("nonsense", &nginx));
    }

    #[test]
    fn validate_rejects_unknown_types_with_a_hint() {
        assert!(validate("file:/etc/motd").is_ok());
        assert!(validate("svc_systemd:nginx:restart").is_ok());
        assert!(validate("bundle:x").is_ok());
        assert!(validate("*").is_ok());
        let err = validate("files:/etc/motd").unwrap_err();
        assert!(err.contains("did you mean `file:`"), "{err}");
        let err = validate("pkg_atp:nginx").unwrap_err();
        assert!(err.contains("did you mean `pkg_apt:`"), "{err}");
        assert!(
            validate("nginx")
                .unwrap_err()
                .contains("not an item selector")
        );
        assert!(validate("bundle:").is_err());
        assert!(validate(":x").is_err());
    }

    #[test]
    fn suggest_finds_the_closest_id() {
        let items = [
            item("pkg_apt:nginx", "a", &[]),
            item("pkg_apt:postgresql", "a", &[]),
        ];
        assert_eq!(suggest("pkg_apt:ngix", &items), Some("pkg_apt:nginx"));
        assert_eq!(suggest("zzz", &items), None);
    }
}
