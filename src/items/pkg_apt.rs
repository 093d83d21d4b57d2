//! `pkg_apt` items: Debian packages installed or purged. One `dpkg-query` per remote command
//! reads every package of the node (not one query per item), and all package changes of a
//! wave go through one `apt-get` transaction, so a node never runs two apt processes at once.
//! Only if that transaction fails is each package retried alone, so one bad name does not
//! block the others and every item reports apt's own error text.

use serde_json::Value;

use super::state::{Change, Fixing, Local, State, Stateful};
use super::{Item, PkgAptAttrs};
use crate::node_shell::{Fields, Script};
use crate::shell::quote;

/// `pk IDX NAME`: the `P` record of a package. The first call lists every package once per
/// script into `$pkc` (`pkq` = 1 listed, 2 no dpkg here); an empty `pkq` forces a re-read.
/// A package counts as installed when dpkg's status (second letter) is `i`, also when held.
const PROBE_SH: &str = r#"pkn='
'
pk() {
  f P; f "$1"
  if [ -z "$pkq" ]; then
    if command -v dpkg-query >/dev/null 2>&1; then
      pkq=1; pkc=$(dpkg-query -W -f '${Package} ${db:Status-Abbrev}\n' 2>/dev/null)
    else pkq=2; fi
  fi
  if [ "$pkq" = 2 ]; then f nodpkg; f 1
  else
    case "$pkn$pkc" in *"$pkn$2 "?i*) f installed; f 1;; *) f installed; f 0;; esac
  fi
  f ''
}"#;

/// The apt-get invocation for one transaction: `installs` installed, `removals` purged.
/// Non-interactive, keeps changed config files, waits for another apt to release its lock,
/// and discards stdout so a failure reports only apt's error text (stderr).
pub fn apt_command(installs: &[&str], removals: &[&str]) -> String {
    let mut cmd = String::from(
        "DEBIAN_FRONTEND=noninteractive apt-get -qy -o Dpkg::Options::=--force-confold \
         -o DPkg::Lock::Timeout=60 --no-install-recommends install --purge",
    );
    for p in installs {
        cmd.push(' ');
        cmd.push_str(&quote(p));
    }
    for p in removals {
        cmd.push(' ');
        cmd.push_str(&quote(&format!("{p}-")));
    }
    cmd.push_str(" >/dev/null");
    cmd
}

impl Stateful for PkgAptAttrs {
    fn expected(&self, _item: &Item, _local: &Local) -> Option<State> {
        let mut s = State::new();
        s.insert("installed".into(), Value::Bool(self.installed));
        Some(s)
    }

    fn probe(&self, item: &Item, local: &Local, script: &mut Script) {
        script.helper("pk", PROBE_SH);
        script.call("pk", &[&local.idx.to_string(), &item.name]);
    }

    fn actual(&self, _item: &Item, _local: &Local, fields: &Fields) -> Option<State> {
        let mut s = State::new();
        let installed = fields.text("installed").is_some_and(|v| v == "1");
        s.insert("installed".into(), Value::Bool(installed));
        Some(s)
    }

    fn probe_error(&self, _item: &Item, fields: &Fields) -> Option<String> {
        fields.get("nodpkg").map(|_| {
            "dpkg-query not found on this node: pkg_apt items need a Debian-like system \
             (dpkg and apt)"
                .to_string()
        })
    }

    fn fix(&self, item: &Item, local: &Local, change: &Change, script: &mut Script) {
        super::state::fix_as_wave(self, item, local, change, script);
    }

    fn fix_wave(&self, fixes: &[Fixing<'_>], script: &mut Script) {
        let wants =
            |f: &Fixing<'_>| matches!(&f.item.kind, super::ItemKind::PkgApt(a) if a.installed);
        let names = |install: bool| -> Vec<&str> {
            fixes
                .iter()
                .filter(|f| wants(f) == install)
                .map(|f| f.item.name.as_str())
                .collect()
        };
        let alone = |f: &Fixing<'_>| {
            let name = [f.item.name.as_str()];
            if wants(f) {
                apt_command(&name, &[])
            } else {
                apt_command(&[], &name)
            }
        };
        match fixes {
            [] => {}
            [one] => script.fix_step(one.local.idx, &alone(one)),
            _ => {
                script.raw(&format!(
                    "e=$( {{ {}\n}} 2>&1 ); r=$?\nif [ \"$r\" = 0 ]; then",
                    apt_command(&names(true), &names(false))
                ));
                for f in fixes {
                    script.raw(&format!("f X; f {}; f 0; f ''", f.local.idx));
                }
                script.raw("else");
                for f in fixes {
                    script.fix_step(f.local.idx, &alone(f));
                }
                script.raw("fi");
            }
        }
        // The re-probe after the fix must list the packages again.
        script.raw("pkq=");
    }

    fn disturbs_others(&self, _change: &Change) -> bool {
        // Packages ship files (configs, directories) that other items may manage.
        true
    }
}

/// The `pkg_apt` item type: its table, attributes and parser (see [`super::registry`]).
pub struct Type;

use super::reader::Attr;

impl super::item_type::ItemType for Type {
    fn stateful<'a>(&self, kind: &'a super::ItemKind) -> Option<&'a dyn super::state::Stateful> {
        match kind {
            super::ItemKind::PkgApt(a) => Some(a),
            _ => None,
        }
    }

    fn view(&self, kind: &super::ItemKind) -> serde_json::Value {
        let super::ItemKind::PkgApt(a) = kind else {
            return serde_json::Value::Null;
        };
        serde_json::json!({"installed": a.installed})
    }

    fn deletes(&self, kind: &super::ItemKind) -> bool {
        matches!(kind, super::ItemKind::PkgApt(a) if !a.installed)
    }

    fn name(&self) -> &'static str {
        "pkg_apt"
    }

    fn table(&self) -> &'static str {
        "pkg_apt"
    }

    fn attrs(&self) -> &'static [Attr] {
        &[Attr {
            name: "installed",
            doc: "false: the package must not be installed",
        }]
    }

    fn parse(
        &self,
        _bundle: &crate::repo::Bundle,
        _raw: &super::reader::RawItem,
        r: &mut super::reader::Reader<'_>,
    ) -> Option<super::ItemKind> {
        Some(super::ItemKind::PkgApt(super::PkgAptAttrs {
            installed: r.bool("installed").unwrap_or(true),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::ItemKind;

    fn pkg(name: &str, installed: bool, idx: usize) -> (Item, Local, Change) {
        let a = PkgAptAttrs { installed };
        let it = crate::items::testutil::item("pkg_apt", name, ItemKind::PkgApt(a.clone()));
        let local = Local {
            idx,
            ..Local::default()
        };
        let have = Fields(vec![(
            "installed".into(),
            if installed {
                b"0".to_vec()
            } else {
                b"1".to_vec()
            },
        )]);
        let c = Change::between(a.expected(&it, &local), a.actual(&it, &local, &have)).unwrap();
        (it, local, c)
    }

    #[test]
    fn one_transaction_installs_and_purges_with_a_retry_per_package() {
        let (a, la, ca) = pkg("sl", true, 3);
        let (b, lb, cb) = pkg("cowsay", false, 5);
        let fixes = [
            Fixing {
                item: &a,
                local: &la,
                change: &ca,
            },
            Fixing {
                item: &b,
                local: &lb,
                change: &cb,
            },
        ];
        let mut s = Script::fix();
        PkgAptAttrs { installed: true }.fix_wave(&fixes, &mut s);
        let text = s.text();
        let all = "DEBIAN_FRONTEND=noninteractive apt-get -qy -o Dpkg::Options::=--force-confold \
                   -o DPkg::Lock::Timeout=60 --no-install-recommends install --purge sl cowsay- \
                   >/dev/null";
        assert_eq!(text.matches(all).count(), 1, "{text}");
        assert!(text.contains("install --purge sl >/dev/null"), "{text}");
        assert!(
            text.contains("install --purge cowsay- >/dev/null"),
            "{text}"
        );
        assert_eq!(text.matches("apt-get").count(), 3, "{text}");
    }

    #[test]
    fn probe_reads_dpkg_status_held_and_absent_in_dash() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("dpkg-query");
        std::fs::write(
            &fake,
            "#!/bin/sh\nprintf 'sl ii \\nslx un \\nhold hi \\nconf rc \\nlib ii \\nlib un \\n'\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut s = Script::probe();
        for (i, name) in ["sl", "slx", "hold", "conf", "lib", "s"].iter().enumerate() {
            let it = crate::items::testutil::item(
                "pkg_apt",
                name,
                ItemKind::PkgApt(PkgAptAttrs { installed: true }),
            );
            let local = Local {
                idx: i,
                ..Local::default()
            };
            PkgAptAttrs { installed: true }.probe(&it, &local, &mut s);
        }
        let path = format!("{}:/usr/bin:/bin", dir.path().display());
        let out = std::process::Command::new("dash")
            .arg("-c")
            .arg(s.text())
            .env("PATH", path)
            .output()
            .unwrap();
        let got: Vec<String> = crate::node_shell::parse(&out.stdout)
            .unwrap()
            .into_iter()
            .map(|r| match r {
                crate::node_shell::Record::Probe { fields, .. } => {
                    fields.text("installed").unwrap()
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, ["1", "0", "1", "0", "1", "0"]);
        assert_eq!(s.text().matches("pk() {").count(), 1);
    }
}
