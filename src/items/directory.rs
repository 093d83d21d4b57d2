//! `directory` items: existence, mode and ownership, and `purge` of entries no item manages.

use serde_json::Value;

use super::state::{
    Change, Local, STATE_KEYS, Stat, State, Stateful, chown_spec, expect_ownership, mode_text,
    path_of, put_ownership,
};
use super::{DirectoryAttrs, Item};
use crate::node_shell::{Fields, Script};
use crate::shell::quote;

impl Stateful for DirectoryAttrs {
    fn purges(&self) -> bool {
        self.purge
    }

    fn expected(&self, _item: &Item, _local: &Local) -> Option<State> {
        if self.delete {
            return None;
        }
        let mut s = State::with_capacity(STATE_KEYS);
        s.insert("type".into(), Value::String("directory".into()));
        expect_ownership(
            &mut s,
            self.mode,
            self.owner.as_deref(),
            self.group.as_deref(),
        );
        if self.purge {
            s.insert("unmanaged".into(), Value::Array(Vec::new()));
        }
        Some(s)
    }

    fn probe(&self, item: &Item, local: &Local, script: &mut Script) {
        let idx = local.idx.to_string();
        let path = path_of(item);
        let mut args: Vec<&str> = vec![&idx, &path, if self.purge { "1" } else { "0" }];
        args.extend(local.managed_children.iter().map(String::as_str));
        script.probe_path("pd", &args);
    }

    fn actual(&self, item: &Item, local: &Local, fields: &Fields) -> Option<State> {
        let t = fields.text("type")?;
        let mut s = State::with_capacity(STATE_KEYS);
        s.insert("type".into(), Value::String(t));
        if let Some(stat) = Stat::from_fields(fields) {
            put_ownership(&mut s, self.expected(item, local).as_ref(), &stat);
        }
        if self.purge {
            let extra: Vec<Value> = fields
                .all("extra")
                .into_iter()
                .map(|n| Value::String(String::from_utf8_lossy(n).into_owned()))
                .collect();
            s.insert("unmanaged".into(), Value::Array(extra));
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
        let mut steps = vec![format!(
            "if [ -L {p} ] || {{ [ -e {p} ] && [ ! -d {p} ]; }}; then rm -f -- {p} || exit 1; fi; \
             [ -d {p} ] || mkdir -p -- {p} || exit 1"
        )];
        if let Some(m) = self.mode.filter(|_| change.needs("mode")) {
            // GNU chmod keeps a directory's setuid/setgid bits for numeric modes; clear them
            // explicitly when the repo's mode does not have them.
            let mut cmd = format!("chmod {} {p}", mode_text(m));
            if m & 0o6000 == 0 {
                cmd.push_str(&format!(" && chmod u-s,g-s {p}"));
            }
            steps.push(cmd);
        }
        let owner = self.owner.as_deref().filter(|_| change.needs("owner"));
        let group = self.group.as_deref().filter(|_| change.needs("group"));
        let spec = chown_spec(owner, group);
        if !spec.is_empty() {
            steps.push(format!("chown {} {p}", quote(&spec)));
        }
        if self.purge && change.needs("unmanaged") {
            let mut call = format!("um rmu {p}");
            for name in &local.managed_children {
                call.push(' ');
                call.push_str(&quote(name));
            }
            steps.push(call);
        }
        script.fix_step(local.idx, &format!("{guard}{}", steps.join(" && \\\n")));
    }
}

/// The `directory` item type: its table, attributes and parser (see [`super::registry`]).
pub struct Type;

use super::reader::Attr;

impl super::item_type::ItemType for Type {
    fn stateful<'a>(&self, kind: &'a super::ItemKind) -> Option<&'a dyn super::state::Stateful> {
        match kind {
            super::ItemKind::Directory(a) => Some(a),
            _ => None,
        }
    }

    fn view(&self, kind: &super::ItemKind) -> serde_json::Value {
        let super::ItemKind::Directory(a) = kind else {
            return serde_json::Value::Null;
        };
        serde_json::json!({
            "mode": super::item_type::mode_view(a.mode), "owner": a.owner, "group": a.group, "purge": a.purge,
            "delete": a.delete,
        })
    }

    fn is_path(&self) -> bool {
        true
    }

    fn deletes(&self, kind: &super::ItemKind) -> bool {
        matches!(kind, super::ItemKind::Directory(a) if a.delete)
    }

    fn name(&self) -> &'static str {
        "directory"
    }

    fn table(&self) -> &'static str {
        "directories"
    }

    fn attrs(&self) -> &'static [Attr] {
        &[
            Attr {
                name: "mode",
                doc: "permission bits, \"0755\"",
            },
            Attr {
                name: "owner",
                doc: "owning user, name or numeric id",
            },
            Attr {
                name: "group",
                doc: "owning group, name or numeric id",
            },
            Attr {
                name: "purge",
                doc: "true: remove entries no item manages",
            },
            Attr {
                name: "delete",
                doc: "true: the directory must not exist",
            },
        ]
    }

    fn parse(
        &self,
        _bundle: &crate::repo::Bundle,
        _raw: &super::reader::RawItem,
        r: &mut super::reader::Reader<'_>,
    ) -> Option<super::ItemKind> {
        Some(super::ItemKind::Directory(super::DirectoryAttrs {
            mode: r.mode("mode"),
            owner: r.account("owner", "user"),
            group: r.account("group", "group"),
            purge: r.bool("purge").unwrap_or(false),
            delete: r.bool("delete").unwrap_or(false),
        }))
    }
}
