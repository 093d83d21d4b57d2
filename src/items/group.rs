//! `group` items: a local group and its gid, read with `getent group` and changed with
//! `groupadd`/`groupmod`/`groupdel` (shadow-utils, as on every Debian-like node).

use serde_json::Value;

use super::state::{Change, Local, State, Stateful};
use super::{GroupAttrs, Item};
use crate::node_shell::{Fields, Script};
use crate::shell::quote;

/// `pgr IDX NAME`: the `P` record of a group, with its `getent group` line when it exists.
const PROBE_SH: &str = r#"pgr() {
  f P; f "$1"
  if l=$(getent group "$2"); then f group; f "$l"; fi
  f ''
}"#;

/// Splits a `getent passwd`/`group` line into its `:`-separated fields.
pub fn db_fields(line: &str) -> Vec<&str> {
    line.trim_end_matches('\n').split(':').collect()
}

impl Stateful for GroupAttrs {
    fn expected(&self, _item: &Item, _local: &Local) -> Option<State> {
        if self.delete {
            return None;
        }
        let mut s = State::new();
        s.insert("type".into(), Value::String("group".into()));
        if let Some(gid) = self.gid {
            s.insert("gid".into(), Value::from(gid));
        }
        Some(s)
    }

    fn probe(&self, item: &Item, local: &Local, script: &mut Script) {
        script.helper("pgr", PROBE_SH);
        script.call("pgr", &[&local.idx.to_string(), &item.name]);
    }

    fn actual(&self, _item: &Item, _local: &Local, fields: &Fields) -> Option<State> {
        let line = fields.text("group")?;
        let f = db_fields(&line);
        let mut s = State::new();
        s.insert("type".into(), Value::String("group".into()));
        if let Some(gid) = f.get(2).and_then(|g| g.parse::<u32>().ok()) {
            s.insert("gid".into(), Value::from(gid));
        }
        Some(s)
    }

    fn fix(&self, item: &Item, local: &Local, change: &Change, script: &mut Script) {
        script.fix_step(local.idx, &self.command(item, change));
    }

    fn disturbs_others(&self, change: &Change) -> bool {
        // Owner names in `stat` output follow the group database.
        change.create() || change.delete() || change.needs("gid")
    }
}

impl GroupAttrs {
    /// The one shadow-utils command moving the group from `change.actual` to `change.expected`.
    pub fn command(&self, item: &Item, change: &Change) -> String {
        let name = quote(&item.name);
        if change.delete() {
            return format!("groupdel {name}");
        }
        let gid = self.gid.map(|g| format!("-g {g} ")).unwrap_or_default();
        if change.create() {
            format!("groupadd {gid}{name}")
        } else {
            format!("groupmod {gid}{name}")
        }
    }
}

/// The `group` item type: its table, attributes and parser (see [`super::registry`]).
pub struct Type;

use super::reader::Attr;

impl super::item_type::ItemType for Type {
    fn stateful<'a>(&self, kind: &'a super::ItemKind) -> Option<&'a dyn super::state::Stateful> {
        match kind {
            super::ItemKind::Group(a) => Some(a),
            _ => None,
        }
    }

    fn view(&self, kind: &super::ItemKind) -> serde_json::Value {
        let super::ItemKind::Group(a) = kind else {
            return serde_json::Value::Null;
        };
        serde_json::json!({"gid": a.gid, "delete": a.delete})
    }

    fn deletes(&self, kind: &super::ItemKind) -> bool {
        matches!(kind, super::ItemKind::Group(a) if a.delete)
    }

    fn name(&self) -> &'static str {
        "group"
    }

    fn table(&self) -> &'static str {
        "groups"
    }

    fn attrs(&self) -> &'static [Attr] {
        &[
            Attr {
                name: "gid",
                doc: "numeric group id",
            },
            Attr {
                name: "delete",
                doc: "true: the group must not exist",
            },
        ]
    }

    fn parse(
        &self,
        _bundle: &crate::repo::Bundle,
        _raw: &super::reader::RawItem,
        r: &mut super::reader::Reader<'_>,
    ) -> Option<super::ItemKind> {
        Some(super::ItemKind::Group(super::GroupAttrs {
            gid: r.u32("gid"),
            delete: r.bool("delete").unwrap_or(false),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::ItemKind;

    fn item(attrs: GroupAttrs) -> Item {
        crate::items::testutil::item("group", "web team", ItemKind::Group(attrs))
    }

    #[test]
    fn commands_for_create_change_and_delete() {
        let a = GroupAttrs {
            gid: Some(2001),
            delete: false,
        };
        let it = item(a.clone());
        let local = Local::default();
        let exp = a.expected(&it, &local);
        let create = Change::between(exp.clone(), None).unwrap();
        assert_eq!(a.command(&it, &create), "groupadd -g 2001 'web team'");
        let have = Fields(vec![("group".into(), b"web team:x:2000:bob\n".to_vec())]);
        let actual = a.actual(&it, &local, &have);
        assert_eq!(
            actual.as_ref().and_then(|s| s.get("gid")),
            Some(&Value::from(2000))
        );
        let fix = Change::between(exp, actual).unwrap();
        assert_eq!(fix.keys, vec!["gid".to_string()]);
        assert_eq!(a.command(&it, &fix), "groupmod -g 2001 'web team'");
        let d = GroupAttrs {
            gid: None,
            delete: true,
        };
        let del = Change::between(None, d.actual(&it, &local, &have)).unwrap();
        assert_eq!(d.command(&it, &del), "groupdel 'web team'");
        assert!(d.actual(&it, &local, &Fields::default()).is_none());
    }
}
