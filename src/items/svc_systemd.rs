//! `svc_systemd` items: whether a unit is running, enabled and masked (each `None` = don't
//! care), read with `systemctl is-active`/`is-enabled` and changed with
//! mask/unmask, enable/disable, start/stop in that order (unmask before anything else, mask
//! before stopping is harmless). Brings the canned actions `:stop`, `:restart` and `:reload`
//! that other items trigger. A node without systemd as init makes the item fail with that
//! reason at once: nothing is attempted, nothing waits on a bus that is not there.

use serde_json::Value;

use super::state::{Change, Local, State, Stateful};
use super::{ActionAttrs, Deps, Item, ItemKind, SvcSystemdAttrs};
use crate::node_shell::{Fields, Script};
use crate::shell::quote;

/// `sv IDX UNIT`: the `P` record of a unit, or `nosystemd REASON` where systemd is not PID 1
/// (the check systemd's own `sd_booted()` makes).
const PROBE_SH: &str = r#"sv() {
  f P; f "$1"
  if ! command -v systemctl >/dev/null 2>&1; then f nosystemd; f 'systemctl not found'
  elif [ ! -d /run/systemd/system ]; then f nosystemd; f 'systemd is not running (no /run/systemd/system)'
  else
    f active; f "$(systemctl is-active -- "$2" 2>/dev/null)"
    f enabled; f "$(systemctl is-enabled -- "$2" 2>/dev/null)"
  fi
  f ''
}"#;

/// `is-enabled` answers that count as enabled (those it exits 0 for, as BundleWrap reads it).
const ENABLED: &[&str] = &[
    "enabled",
    "enabled-runtime",
    "static",
    "alias",
    "indirect",
    "generated",
    "transient",
];

/// The canned actions, in id order of their dependencies (reload needs restart).
const CANNED: &[&str] = &["stop", "restart", "reload"];

/// The systemctl commands moving a unit from `change.actual` to `change.expected`: unmask
/// first (a masked unit can be neither enabled nor started), mask last (after disabling and
/// stopping it).
pub fn commands(attrs: &SvcSystemdAttrs, unit: &str, change: &Change) -> Vec<String> {
    let u = quote(unit);
    let mut out = Vec::new();
    let masking = attrs.masked.filter(|_| change.needs("masked"));
    if masking == Some(false) {
        out.push(format!("systemctl unmask -- {u}"));
    }
    let steps: [(&str, Option<bool>, &str, &str); 2] = [
        ("enabled", attrs.enabled, "enable", "disable"),
        ("running", attrs.running, "start", "stop"),
    ];
    for (key, want, on, off) in steps {
        if let Some(w) = want
            && change.needs(key)
        {
            out.push(format!("systemctl {} -- {u}", if w { on } else { off }));
        }
    }
    if masking == Some(true) {
        out.push(format!("systemctl mask -- {u}"));
    }
    out
}

/// Shell that fails with the reason when systemd is not PID 1, so a canned action never
/// hangs or prints a bus error on such a node.
fn guard(unit: &str, verb: &str) -> String {
    let msg = format!(
        "systemd is not running on this node (no /run/systemd/system): cannot {verb} {unit}"
    );
    format!(
        "[ -d /run/systemd/system ] || {{ echo {} >&2; exit 1; }}; ",
        quote(&msg)
    )
}

/// `svc_systemd:NAME:stop` (needed by the service), `:restart` (needs it) and `:reload`
/// (needs it and the restart), all triggered, with the service's tags, bundle and location.
pub fn canned_actions(item: &Item) -> Vec<Item> {
    CANNED
        .iter()
        .map(|verb| {
            let mut deps = Deps {
                triggered: true,
                tags: item.deps.tags.clone(),
                ..Deps::default()
            };
            match *verb {
                "stop" => deps.needed_by.push(item.id.clone()),
                "restart" => deps.needs.push(item.id.clone()),
                _ => {
                    deps.needs.push(item.id.clone());
                    deps.needs.push(format!("{}:restart", item.id));
                }
            }
            Item {
                id: format!("{}:{verb}", item.id),
                name: format!("{}:{verb}", item.name),
                bundle: item.bundle.clone(),
                kind: ItemKind::Action(ActionAttrs {
                    command: format!(
                        "{}systemctl {verb} -- {}",
                        guard(&item.name, verb),
                        quote(&item.name)
                    ),
                    expected_return_code: vec![0],
                    expected_stdout: None,
                    expected_stderr: None,
                    data_stdin: None,
                    interactive: None,
                }),
                deps,
                location: item.location.clone(),
            }
        })
        .collect()
}

impl Stateful for SvcSystemdAttrs {
    fn expected(&self, _item: &Item, _local: &Local) -> Option<State> {
        let mut s = State::new();
        for (k, v) in [
            ("running", self.running),
            ("enabled", self.enabled),
            ("masked", self.masked),
        ] {
            if let Some(v) = v {
                s.insert(k.into(), Value::Bool(v));
            }
        }
        Some(s)
    }

    fn probe(&self, item: &Item, local: &Local, script: &mut Script) {
        script.helper("sv", PROBE_SH);
        script.call("sv", &[&local.idx.to_string(), &item.name]);
    }

    fn actual(&self, _item: &Item, _local: &Local, fields: &Fields) -> Option<State> {
        let active = fields.text("active").unwrap_or_default();
        let enabled = fields.text("enabled").unwrap_or_default();
        let mut s = State::new();
        s.insert(
            "running".into(),
            Value::Bool(matches!(active.trim(), "active" | "reloading")),
        );
        s.insert(
            "enabled".into(),
            Value::Bool(ENABLED.contains(&enabled.trim())),
        );
        s.insert(
            "masked".into(),
            Value::Bool(enabled.trim().starts_with("masked")),
        );
        Some(s)
    }

    fn probe_error(&self, _item: &Item, fields: &Fields) -> Option<String> {
        fields.text("nosystemd").map(|why| {
            format!("{why} on this node: svc_systemd items need systemd as the init system")
        })
    }

    fn fix(&self, item: &Item, local: &Local, change: &Change, script: &mut Script) {
        script.fix_step(
            local.idx,
            &commands(self, &item.name, change).join(" && \\\n"),
        );
    }

    fn disturbs_others(&self, _change: &Change) -> bool {
        false
    }

    fn makes_redundant(&self, change: &Change, action: &str) -> Option<String> {
        let started = change.needs("running") && self.running == Some(true);
        (started && matches!(action, "restart" | "reload"))
            .then(|| "redundant: the service was just started".to_string())
    }
}

/// The `svc_systemd` item type: its table, attributes and parser (see [`super::registry`]).
pub struct Type;

use super::reader::Attr;

impl super::item_type::ItemType for Type {
    fn stateful<'a>(&self, kind: &'a super::ItemKind) -> Option<&'a dyn super::state::Stateful> {
        match kind {
            super::ItemKind::SvcSystemd(a) => Some(a),
            _ => None,
        }
    }

    fn view(&self, kind: &super::ItemKind) -> serde_json::Value {
        let super::ItemKind::SvcSystemd(a) = kind else {
            return serde_json::Value::Null;
        };
        serde_json::json!({
            "running": a.running, "enabled": a.enabled, "masked": a.masked,
        })
    }

    fn canned_actions(&self, item: &Item) -> Vec<Item> {
        canned_actions(item)
    }

    fn name(&self) -> &'static str {
        "svc_systemd"
    }

    fn table(&self) -> &'static str {
        "svc_systemd"
    }

    fn attrs(&self) -> &'static [Attr] {
        &[
            Attr {
                name: "running",
                doc: "whether the unit must be active",
            },
            Attr {
                name: "enabled",
                doc: "whether the unit starts at boot",
            },
            Attr {
                name: "masked",
                doc: "whether the unit is masked",
            },
        ]
    }

    fn parse(
        &self,
        _bundle: &crate::repo::Bundle,
        _raw: &super::reader::RawItem,
        r: &mut super::reader::Reader<'_>,
    ) -> Option<super::ItemKind> {
        Some(super::ItemKind::SvcSystemd(super::SvcSystemdAttrs {
            running: r.bool("running"),
            enabled: r.bool("enabled"),
            masked: r.bool("masked"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tri(v: Option<bool>) -> &'static str {
        match v {
            None => "-",
            Some(true) => "yes",
            Some(false) => "no",
        }
    }

    /// Every wanted state (27) against every state a unit can be in (masked units report
    /// disabled): the exact commands, kept in `svc_systemd.golden`. Set CINCH_BLESS=1 to
    /// rewrite it after an intended change, then review the diff.
    #[test]
    fn golden_commands_for_every_state_combination() {
        let opts = [None, Some(true), Some(false)];
        let haves = [
            (false, false, false),
            (false, true, false),
            (false, false, true),
            (true, false, false),
            (true, true, false),
            (true, false, true),
        ];
        let item = crate::items::testutil::item(
            "svc_systemd",
            "nginx",
            ItemKind::SvcSystemd(SvcSystemdAttrs::default()),
        );
        let mut out = String::new();
        for running in opts {
            for enabled in opts {
                for masked in opts {
                    let a = SvcSystemdAttrs {
                        running,
                        enabled,
                        masked,
                    };
                    for (r, e, m) in haves {
                        let fields = Fields(vec![
                            (
                                "active".into(),
                                (if r { "active" } else { "inactive" }).into(),
                            ),
                            (
                                "enabled".into(),
                                (if m {
                                    "masked"
                                } else if e {
                                    "enabled"
                                } else {
                                    "disabled"
                                })
                                .into(),
                            ),
                        ]);
                        let local = Local::default();
                        let change = Change::between(
                            a.expected(&item, &local),
                            a.actual(&item, &local, &fields),
                        );
                        let contradictory = masked == Some(true)
                            && (running == Some(true) || enabled == Some(true));
                        let cmds = match &change {
                            _ if contradictory => "(rejected by cinch test)".into(),
                            None => "(ok)".into(),
                            Some(c) => commands(&a, "nginx", c).join(" && "),
                        };
                        out.push_str(&format!(
                            "want running={} enabled={} masked={} | have running={} enabled={} \
                             masked={} | {cmds}\n",
                            tri(running),
                            tri(enabled),
                            tri(masked),
                            tri(Some(r)),
                            tri(Some(e)),
                            tri(Some(m)),
                        ));
                    }
                }
            }
        }
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/items/svc_systemd.golden");
        if std::env::var_os("CINCH_BLESS").is_some() {
            std::fs::write(path, &out).unwrap();
        }
        let golden = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            golden == out,
            "svc_systemd commands changed; rerun with CINCH_BLESS=1 and review the diff of \
             {path}\n{out}"
        );
    }

    #[test]
    fn no_systemd_is_a_probe_error_naming_the_reason() {
        let a = SvcSystemdAttrs::default();
        let item =
            crate::items::testutil::item("svc_systemd", "x", ItemKind::SvcSystemd(a.clone()));
        let f = Fields(vec![("nosystemd".into(), b"systemctl not found".to_vec())]);
        let msg = a.probe_error(&item, &f).unwrap();
        assert!(
            msg.starts_with("systemctl not found on this node: "),
            "{msg}"
        );
        assert!(a.probe_error(&item, &Fields::default()).is_none());
    }

    #[test]
    fn canned_actions_are_triggered_and_ordered_around_the_service() {
        let mut item = crate::items::testutil::item(
            "svc_systemd",
            "my unit",
            ItemKind::SvcSystemd(SvcSystemdAttrs::default()),
        );
        item.deps.tags = vec!["web".into()];
        let acts = canned_actions(&item);
        let ids: Vec<&str> = acts.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "svc_systemd:my unit:stop",
                "svc_systemd:my unit:restart",
                "svc_systemd:my unit:reload"
            ]
        );
        assert!(
            acts.iter()
                .all(|a| a.deps.triggered && a.deps.tags == ["web"])
        );
        assert_eq!(acts[0].deps.needed_by, ["svc_systemd:my unit"]);
        assert_eq!(acts[1].deps.needs, ["svc_systemd:my unit"]);
        assert_eq!(
            acts[2].deps.needs,
            ["svc_systemd:my unit", "svc_systemd:my unit:restart"]
        );
        let ItemKind::Action(a) = &acts[1].kind else {
            panic!()
        };
        assert!(
            a.command.ends_with("; systemctl restart -- 'my unit'"),
            "{}",
            a.command
        );
    }

    #[test]
    fn restart_right_after_a_start_is_redundant() {
        let a = SvcSystemdAttrs {
            running: Some(true),
            ..SvcSystemdAttrs::default()
        };
        let mut st = State::new();
        st.insert("running".into(), Value::Bool(false));
        let item =
            crate::items::testutil::item("svc_systemd", "x", ItemKind::SvcSystemd(a.clone()));
        let c = Change::between(a.expected(&item, &Local::default()), Some(st)).unwrap();
        assert!(a.makes_redundant(&c, "restart").is_some());
        assert!(a.makes_redundant(&c, "reload").is_some());
        assert!(a.makes_redundant(&c, "stop").is_none());
        let enabled_only = Change {
            keys: vec!["enabled".into()],
            ..c
        };
        assert!(a.makes_redundant(&enabled_only, "restart").is_none());
    }
}
