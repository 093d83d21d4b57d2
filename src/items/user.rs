//! `user` items: a local account read from the name service (`getent passwd`, `id`,
//! `getent shadow`) and changed with `useradd`/`usermod`/`userdel`, as BundleWrap does.
//! Only the attributes the repo sets are compared; `groups` is the exact set of
//! supplementary groups.

use serde_json::Value;

use super::group::db_fields;
use super::state::{Change, Local, State, Stateful, show_keys};
use super::{Item, UserAttrs};
use crate::node_shell::{Fields, Script};
use crate::shell::quote;

/// `pu IDX NAME SHADOW`: the `P` record of a user: its passwd line, primary group name,
/// every group it is in, and (SHADOW = 1, needs root) its shadow line.
const PROBE_SH: &str = r#"pu() {
  f P; f "$1"
  if l=$(getent passwd "$2"); then
    f passwd; f "$l"
    f pgroup; f "$(id -gn -- "$2" 2>/dev/null)"
    f groups; f "$(id -Gn -- "$2" 2>/dev/null)"
    if [ "$3" = 1 ] && l=$(getent shadow "$2"); then f shadow; f "$l"; fi
  fi
  f ''
}"#;

/// useradd/usermod option per state key, in the order they are written. `password_hash` has
/// none: a command line is visible to every user in `ps`, so the hash goes to `chpasswd -e`
/// on stdin instead (see [`UserAttrs::password_stdin`]).
const OPTIONS: &[(&str, &str)] = &[
    ("uid", "-u"),
    ("gid", "-g"),
    ("groups", "-G"),
    ("home", "-d"),
    ("shell", "-s"),
    ("full_name", "-c"),
    ("password_hash", ""),
];

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl UserAttrs {
    /// Supplementary groups as the sorted set the state compares.
    fn group_set(&self) -> Option<Vec<String>> {
        self.groups.as_ref().map(|g| {
            let mut v = g.clone();
            v.sort();
            v.dedup();
            v
        })
    }

    /// The option value for `key` as useradd/usermod take it.
    fn option_value(&self, key: &str) -> Option<String> {
        match key {
            "uid" => self.uid.map(|u| u.to_string()),
            "gid" => self.gid.clone(),
            "groups" => self.group_set().map(|g| g.join(",")),
            "home" => self.home.clone(),
            "shell" => self.shell.clone(),
            "full_name" => self.full_name.clone(),
            "password_hash" => self.password_hash.clone(),
            _ => None,
        }
    }

    /// The shadow-utils command moving the user from `change.actual` to `change.expected`.
    pub fn command(&self, item: &Item, change: &Change) -> String {
        let name = quote(&item.name);
        if change.delete() {
            return format!("userdel {name}");
        }
        let mut opts = String::new();
        for (key, flag) in OPTIONS {
            if !flag.is_empty()
                && change.needs(key)
                && let Some(v) = self.option_value(key)
            {
                opts.push_str(&format!("{flag} {} ", quote(&v)));
            }
        }
        let command = if !change.create() {
            if opts.is_empty() {
                ":".to_string()
            } else {
                format!("usermod {opts}{name}")
            }
        } else if self.gid.is_some() {
            format!("useradd {opts}{name}")
        } else {
            // Debian's useradd refuses to create a user whose same-named group already exists
            // unless told to use it; that group is what the user would have got anyway.
            format!(
                "if getent group {name} >/dev/null 2>&1; then useradd -g {name} {opts}{name}; \
                 else useradd {opts}{name}; fi"
            )
        };
        match self.password_stdin(change) {
            // The hash is read into the shell first (so stdin stays in step even when the
            // command fails) and reaches chpasswd through the builtin printf: no process
            // ever has it on its command line.
            Some(h) => format!(
                "cph=$(take {len}) && {command} && \\\n\
                 printf '%s:%s\\n' {name} \"$cph\" | chpasswd -e",
                len = h.len()
            ),
            None => command,
        }
    }

    /// The password hash to send on the fix script's stdin, when this change sets it.
    pub fn password_stdin(&self, change: &Change) -> Option<&str> {
        if change.delete() || !(change.create() || change.needs("password_hash")) {
            return None;
        }
        self.password_hash.as_deref()
    }
}

impl Stateful for UserAttrs {
    fn expected(&self, _item: &Item, _local: &Local) -> Option<State> {
        if self.delete {
            return None;
        }
        let mut s = State::new();
        s.insert("type".into(), Value::String("user".into()));
        for (key, _) in OPTIONS {
            let value = match *key {
                "uid" => self.uid.map(Value::from),
                "groups" => self
                    .group_set()
                    .map(|g| Value::Array(g.into_iter().map(Value::String).collect())),
                _ => self.option_value(key).map(Value::String),
            };
            if let Some(v) = value {
                s.insert((*key).into(), v);
            }
        }
        Some(s)
    }

    fn probe(&self, item: &Item, local: &Local, script: &mut Script) {
        script.helper("pu", PROBE_SH);
        let shadow = if self.password_hash.is_some() {
            "1"
        } else {
            "0"
        };
        script.call("pu", &[&local.idx.to_string(), &item.name, shadow]);
    }

    fn actual(&self, _item: &Item, _local: &Local, fields: &Fields) -> Option<State> {
        let line = fields.text("passwd")?;
        let pw = db_fields(&line);
        let field = |i: usize| pw.get(i).copied().unwrap_or("").to_string();
        let mut s = State::new();
        s.insert("type".into(), Value::String("user".into()));
        if let Ok(uid) = field(2).parse::<u32>() {
            s.insert("uid".into(), Value::from(uid));
        }
        let primary = fields.text("pgroup").unwrap_or_default().trim().to_string();
        let gid = match &self.gid {
            Some(g) if is_number(g) => field(3),
            _ => primary.clone(),
        };
        s.insert("gid".into(), Value::String(gid));
        let wanted = self.groups.as_deref().unwrap_or(&[]);
        let mut groups: Vec<String> = fields
            .text("groups")
            .unwrap_or_default()
            .split_whitespace()
            // `id -G` lists the primary group too; it only counts as supplementary when the
            // repo lists it (membership of it is implied either way).
            .filter(|g| *g != primary || wanted.iter().any(|w| w == g))
            .map(str::to_string)
            .collect();
        groups.sort();
        groups.dedup();
        s.insert(
            "groups".into(),
            Value::Array(groups.into_iter().map(Value::String).collect()),
        );
        s.insert("full_name".into(), Value::String(field(4)));
        s.insert("home".into(), Value::String(field(5)));
        s.insert("shell".into(), Value::String(field(6)));
        if let Some(shadow) = fields.text("shadow") {
            let hash = db_fields(&shadow).get(1).copied().unwrap_or("").to_string();
            s.insert("password_hash".into(), Value::String(hash));
        }
        Some(s)
    }

    fn fix(&self, item: &Item, local: &Local, change: &Change, script: &mut Script) {
        script.fix_step(local.idx, &self.command(item, change));
        if let Some(h) = self.password_stdin(change) {
            script.push_stdin(h.as_bytes());
        }
    }

    fn show(&self, _item: &Item, _local: &Local, change: &Change, _f: Option<&Fields>) -> String {
        show_keys(change, self.hidden_keys())
    }

    fn disturbs_others(&self, change: &Change) -> bool {
        // File owners shown by `stat` follow the user database; userdel may drop the
        // user's own group, which a later group item must then see.
        change.create() || change.delete() || change.needs("uid") || change.needs("gid")
    }

    fn hidden_keys(&self) -> &'static [&'static str] {
        &["password_hash"]
    }
}

/// The `user` item type: its table, attributes and parser (see [`super::registry`]).
pub struct Type;

use super::reader::Attr;

impl super::item_type::ItemType for Type {
    fn stateful<'a>(&self, kind: &'a super::ItemKind) -> Option<&'a dyn super::state::Stateful> {
        match kind {
            super::ItemKind::User(a) => Some(a),
            _ => None,
        }
    }

    fn view(&self, kind: &super::ItemKind) -> serde_json::Value {
        let super::ItemKind::User(a) = kind else {
            return serde_json::Value::Null;
        };
        serde_json::json!({
            "uid": a.uid, "gid": a.gid, "groups": a.groups, "home": a.home, "shell": a.shell,
            "full_name": a.full_name, "delete": a.delete,
        })
    }

    fn deletes(&self, kind: &super::ItemKind) -> bool {
        matches!(kind, super::ItemKind::User(a) if a.delete)
    }

    fn name(&self) -> &'static str {
        "user"
    }

    fn table(&self) -> &'static str {
        "users"
    }

    fn attrs(&self) -> &'static [Attr] {
        &[
            Attr {
                name: "uid",
                doc: "numeric user id",
            },
            Attr {
                name: "gid",
                doc: "primary group, name or number",
            },
            Attr {
                name: "groups",
                doc: "supplementary groups",
            },
            Attr {
                name: "home",
                doc: "home directory",
            },
            Attr {
                name: "shell",
                doc: "login shell",
            },
            Attr {
                name: "full_name",
                doc: "the GECOS full name",
            },
            Attr {
                name: "password_hash",
                doc: "crypt(3) hash of the password (never shown)",
            },
            Attr {
                name: "delete",
                doc: "true: the user must not exist",
            },
        ]
    }

    fn parse(
        &self,
        _bundle: &crate::repo::Bundle,
        _raw: &super::reader::RawItem,
        r: &mut super::reader::Reader<'_>,
    ) -> Option<super::ItemKind> {
        let id = r.id.clone();
        let password_hash = r.string("password_hash");
        if let Some(h) = &password_hash
            && let Some(bad) = h.chars().find(|c| *c == ':' || c.is_control())
            && let Some(a) = r.get("password_hash")
        {
            // The hash travels as one `NAME:HASH` line to `chpasswd -e`.
            let msg = format!(
                "`password_hash` of {id} must not contain {bad:?} (a crypt(3) hash has \
                 neither colons nor control characters)"
            );
            let loc = a.value_loc.clone();
            r.hinted(
                &loc,
                msg,
                "paste the hash exactly as mkpasswd or openssl passwd prints it",
            );
        }
        Some(super::ItemKind::User(super::UserAttrs {
            uid: r.u32("uid"),
            gid: r.account("gid", "group"),
            groups: r.accounts("groups", "group"),
            home: r.string("home"),
            shell: r.string("shell"),
            full_name: r.string("full_name"),
            password_hash,
            delete: r.bool("delete").unwrap_or(false),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::ItemKind;

    fn user(attrs: UserAttrs) -> (UserAttrs, Item) {
        let it = crate::items::testutil::item("user", "cinch bob", ItemKind::User(attrs.clone()));
        (attrs, it)
    }

    fn probe_fields(passwd: &str, pgroup: &str, groups: &str) -> Fields {
        Fields(vec![
            ("passwd".into(), passwd.as_bytes().to_vec()),
            ("pgroup".into(), pgroup.as_bytes().to_vec()),
            ("groups".into(), groups.as_bytes().to_vec()),
        ])
    }

    #[test]
    fn create_passes_every_set_attribute_quoted() {
        let (a, it) = user(UserAttrs {
            uid: Some(1500),
            gid: Some("staff".into()),
            groups: Some(vec!["b".into(), "a".into(), "b".into()]),
            home: Some("/home/bob".into()),
            shell: Some("/bin/sh".into()),
            full_name: Some("Bob O'Neil".into()),
            password_hash: Some("$6$x$y".into()),
            delete: false,
        });
        let c = Change::between(a.expected(&it, &Local::default()), None).unwrap();
        assert_eq!(
            a.command(&it, &c),
            "cph=$(take 6) && useradd -u 1500 -g staff -G a,b -d /home/bob -s /bin/sh \
             -c 'Bob O'\\''Neil' 'cinch bob' && \\\nprintf '%s:%s\\n' 'cinch bob' \"$cph\" \
             | chpasswd -e"
        );
        assert!(!show_keys(&c, a.hidden_keys()).contains("$6$"));
    }

    /// `useradd -p HASH` put the hash on a command line, readable in `ps` by every user of
    /// the node: the hash must only travel on the fix script's stdin.
    #[test]
    fn password_hash_is_never_on_a_command_line() {
        let (a, it) = user(UserAttrs {
            shell: Some("/bin/sh".into()),
            password_hash: Some("$6$salt$secrethash".into()),
            ..UserAttrs::default()
        });
        let create = Change::between(a.expected(&it, &Local::default()), None).unwrap();
        let f = probe_fields("cinch bob:x:1001:1001::/home/bob:/bin/sh", "bob", "bob");
        let mut actual = a.actual(&it, &Local::default(), &f).unwrap();
        actual.insert("password_hash".into(), Value::String("$6$old$hash".into()));
        let modify = Change::between(a.expected(&it, &Local::default()), Some(actual)).unwrap();
        assert_eq!(modify.keys, vec!["password_hash".to_string()]);
        for c in [&create, &modify] {
            let mut script = Script::fix();
            a.fix(&it, &Local::default(), c, &mut script);
            let cmd = script.into_command();
            assert!(!cmd.script.contains("secrethash"), "{}", cmd.script);
            assert!(cmd.script.contains("chpasswd -e"), "{}", cmd.script);
            assert_eq!(cmd.stdin.as_deref(), Some(&b"$6$salt$secrethash"[..]));
        }
    }

    #[test]
    fn create_without_gid_reuses_a_same_named_group() {
        let (a, it) = user(UserAttrs::default());
        let c = Change::between(a.expected(&it, &Local::default()), None).unwrap();
        assert_eq!(
            a.command(&it, &c),
            "if getent group 'cinch bob' >/dev/null 2>&1; then useradd -g 'cinch bob' \
             'cinch bob'; else useradd 'cinch bob'; fi"
        );
    }

    #[test]
    fn only_differing_keys_are_modified_and_groups_are_an_exact_set() {
        let (a, it) = user(UserAttrs {
            gid: Some("1000".into()),
            groups: Some(vec!["audio".into()]),
            shell: Some("/bin/bash".into()),
            home: Some("/home/bob".into()),
            ..UserAttrs::default()
        });
        let f = probe_fields(
            "cinch bob:x:1001:1000:Bob:/home/bob:/bin/sh",
            "bob",
            "bob video audio",
        );
        let actual = a.actual(&it, &Local::default(), &f);
        let c = Change::between(a.expected(&it, &Local::default()), actual).unwrap();
        assert_eq!(c.keys, vec!["groups".to_string(), "shell".to_string()]);
        assert_eq!(
            a.command(&it, &c),
            "usermod -G audio -s /bin/bash 'cinch bob'"
        );
        let ok = probe_fields(
            "cinch bob:x:1001:1000:Bob:/home/bob:/bin/bash",
            "bob",
            "bob audio",
        );
        let actual = a.actual(&it, &Local::default(), &ok);
        assert!(Change::between(a.expected(&it, &Local::default()), actual).is_none());
    }

    #[test]
    fn delete_and_absent() {
        let (a, it) = user(UserAttrs {
            delete: true,
            ..UserAttrs::default()
        });
        assert!(
            a.actual(&it, &Local::default(), &Fields::default())
                .is_none()
        );
        let f = probe_fields("cinch bob:x:1001:1001::/home/bob:/bin/sh", "bob", "bob");
        let c = Change::between(None, a.actual(&it, &Local::default(), &f)).unwrap();
        assert_eq!(a.command(&it, &c), "userdel 'cinch bob'");
    }
}
