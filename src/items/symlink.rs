//! `symlink` items: the link's target and ownership; replaces a file or directory at the path.

use serde_json::Value;

use super::state::{Change, Local, STATE_KEYS, Stat, State, Stateful, chown_spec, path_of};
use super::{Item, SymlinkAttrs};
use crate::node_shell::{Fields, Script};
use crate::shell::quote;

impl Stateful for SymlinkAttrs {
    fn is_link(&self) -> bool {
        !self.delete
    }

    fn expected(&self, _item: &Item, _local: &Local) -> Option<State> {
        if self.delete {
            return None;
        }
        let mut s = State::with_capacity(STATE_KEYS);
        s.insert("type".into(), Value::String("symlink".into()));
        s.insert("target".into(), Value::String(self.target.clone()));
        if let Some(o) = &self.owner {
            s.insert("owner".into(), Value::String(o.clone()));
        }
        if let Some(g) = &self.group {
            s.insert("group".into(), Value::String(g.clone()));
        }
        Some(s)
    }

    fn probe(&self, item: &Item, local: &Local, script: &mut Script) {
        script.probe_path("ps", &[&local.idx.to_string(), &path_of(item)]);
    }

    fn actual(&self, _item: &Item, _local: &Local, fields: &Fields) -> Option<State> {
        let t = fields.text("type")?;
        let mut s = State::with_capacity(STATE_KEYS);
        s.insert("type".into(), Value::String(t));
        if let Some(target) = fields.get("target") {
            s.insert(
                "target".into(),
                Value::String(String::from_utf8_lossy(target).into_owned()),
            );
        }
        if let Some(stat) = Stat::from_fields(fields) {
            let want = |v: &Option<String>| v.clone().unwrap_or_default();
            s.insert(
                "owner".into(),
                Value::String(stat.owner_as(&want(&self.owner))),
            );
            s.insert(
                "group".into(),
                Value::String(stat.group_as(&want(&self.group))),
            );
        }
        Some(s)
    }

    fn fix(&self, item: &Item, local: &Local, change: &Change, script: &mut Script) {
        let p = quote(&path_of(item));
        let guard = super::state::parent_guard(item, local);
        if change.delete() {
            script.fix_step(local.idx, &format!("{guard}rm -rf -- {p}"));
            return;
        }
        let mut steps = Vec::new();
        if change.needs("type") || change.needs("target") {
            steps.push(format!(
                "if [ -e {p} ] || [ -L {p} ]; then rm -rf -- {p} || exit 1; fi; ln -s -- {} {p}",
                quote(&self.target)
            ));
        }
        let spec = chown_spec(self.owner.as_deref(), self.group.as_deref());
        if !spec.is_empty() {
            steps.push(format!("chown -h {} {p}", quote(&spec)));
        }
        script.fix_step(local.idx, &format!("{guard}{}", steps.join(" && \\\n")));
    }

    fn disturbs_others(&self, change: &Change) -> bool {
        change.actual.is_some()
    }
}

/// The `symlink` item type: its table, attributes and parser (see [`super::registry`]).
pub struct Type;

use super::reader::Attr;

impl super::item_type::ItemType for Type {
    fn stateful<'a>(&self, kind: &'a super::ItemKind) -> Option<&'a dyn super::state::Stateful> {
        match kind {
            super::ItemKind::Symlink(a) => Some(a),
            _ => None,
        }
    }

    fn view(&self, kind: &super::ItemKind) -> serde_json::Value {
        let super::ItemKind::Symlink(a) = kind else {
            return serde_json::Value::Null;
        };
        serde_json::json!({
            "target": a.target, "owner": a.owner, "group": a.group, "delete": a.delete,
        })
    }

    fn is_path(&self) -> bool {
        true
    }

    fn deletes(&self, kind: &super::ItemKind) -> bool {
        matches!(kind, super::ItemKind::Symlink(a) if a.delete)
    }

    fn name(&self) -> &'static str {
        "symlink"
    }

    fn table(&self) -> &'static str {
        "symlinks"
    }

    fn attrs(&self) -> &'static [Attr] {
        &[
            Attr {
                name: "target",
                doc: "what the link points to",
            },
            Attr {
                name: "owner",
                doc: "owning user of the link",
            },
            Attr {
                name: "group",
                doc: "owning group of the link",
            },
            Attr {
                name: "delete",
                doc: "true: the link must not exist",
            },
        ]
    }

    fn parse(
        &self,
        _bundle: &crate::repo::Bundle,
        raw: &super::reader::RawItem,
        r: &mut super::reader::Reader<'_>,
    ) -> Option<super::ItemKind> {
        let id = r.id.clone();
        let delete = r.bool("delete").unwrap_or(false);
        let target = r.string("target");
        if target.is_none() && !delete && r.get("target").is_none() {
            let msg = format!("{id} needs a `target`");
            r.hinted(&raw.loc, msg, "add target = \"/path/it/points/to\"");
        }
        if target.as_deref() == Some("") {
            let loc = r
                .get("target")
                .map_or(raw.loc.clone(), |a| a.value_loc.clone());
            r.error(&loc, format!("`target` of {id} must not be empty"));
        }
        Some(super::ItemKind::Symlink(super::SymlinkAttrs {
            target: target.unwrap_or_default(),
            owner: r.account("owner", "user"),
            group: r.account("group", "group"),
            delete,
        }))
    }
}
