//! Argument building: each event's hook arguments (in [`HOOK_POINTS`] order) as Rhai values,
//! read by name from the event's serde payload ([`Event::hook_payload`]), so no point's
//! arguments are built by hand.

use crate::events::{Event, payload_field};
use rhai::{Dynamic, Map};
use serde_json::Value;

use super::*;

impl Hooks {
    /// The full argument list of an event's hook (in [`HOOK_POINTS`] order): `repo`, then
    /// each named field of the payload (masked, like every output channel).
    pub(super) fn arguments(&self, event: &Event<'_>) -> Vec<Dynamic> {
        let Some(name) = event.hook_point() else {
            return Vec::new();
        };
        let Some((_, names)) = HOOK_POINTS.iter().find(|(point, _)| *point == name) else {
            return Vec::new();
        };
        let payload = event.hook_payload();
        names
            .iter()
            .map(|arg| match *arg {
                "repo" => self.repo_value(),
                arg => payload
                    .get(payload_field(arg))
                    .map_or(Dynamic::UNIT, to_dynamic),
            })
            .collect()
    }

    pub(super) fn repo_value(&self) -> Dynamic {
        let mut m = Map::new();
        m.insert(
            "path".into(),
            Dynamic::from(self.repo_path.to_string_lossy().into_owned()),
        );
        Dynamic::from_map(m)
    }
}

pub(super) fn to_dynamic(value: &Value) -> Dynamic {
    rhai::serde::to_dynamic(crate::mask::mask_json(value)).unwrap_or(Dynamic::UNIT)
}

/// An item as hooks see it (the `item` argument), for tests of what hooks may see.
#[cfg(test)]
pub(super) fn item_value(item: &crate::items::Item) -> Dynamic {
    to_dynamic(&crate::events::item_view(item))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::super::tests::{file_item, node};
    use crate::events::{Event, HOOK_POINTS, ItemStatus, NodeResult, payload_field};

    /// One event of every hook point, in [`HOOK_POINTS`] order.
    fn one_of_each<R>(f: impl Fn(&Event<'_>) -> R) -> Vec<R> {
        let n = node("web1", json!({"role": "web"}));
        let nodes = [&n];
        let item = file_item("/etc/motd", "hi\n");
        let before = json!({"content_hash": "a"});
        let result = NodeResult::default();
        let items = vec!["file:/etc/motd".to_string()];
        let info = json!({"id": "L1"});
        let d = Duration::from_millis(250);
        let events = [
            Event::ApplyStart {
                target: "all",
                nodes: &nodes,
                interactive: false,
            },
            Event::ApplyEnd {
                target: "all",
                nodes: &nodes,
                duration: d,
            },
            Event::NodeApplyStart {
                node: &n,
                interactive: true,
            },
            Event::NodeApplyEnd {
                node: &n,
                duration: d,
                interactive: false,
                result: &result,
            },
            Event::ItemApplyStart {
                node: &n,
                item: &item,
            },
            Event::ItemApplyEnd {
                node: &n,
                item: &item,
                duration: d,
                status: ItemStatus::Fixed,
                status_before: Some(&before),
                status_after: None,
                reason: Some("why"),
            },
            Event::ActionRunStart {
                node: &n,
                item: &item,
            },
            Event::ActionRunEnd {
                node: &n,
                item: &item,
                duration: d,
                status: ItemStatus::Ok,
            },
            Event::RunStart {
                target: "all",
                nodes: &nodes,
                command: "uptime",
            },
            Event::RunEnd {
                target: "all",
                nodes: &nodes,
                command: "uptime",
                duration: d,
            },
            Event::NodeRunStart {
                node: &n,
                command: "uptime",
            },
            Event::NodeRunEnd {
                node: &n,
                command: "uptime",
                duration: d,
                return_code: Some(3),
                stdout: b"out",
                stderr: b"",
            },
            Event::LockAdd {
                node: &n,
                lock_id: "L1",
                items: &items,
                expiry: 60,
                comment: "c",
            },
            Event::LockRemove {
                node: &n,
                lock_id: "L1",
            },
            Event::LockShow {
                node: &n,
                lock_info: &info,
            },
            Event::NodeSshConnect { node: &n },
            Event::TestNode { node: &n },
            Event::Test,
        ];
        events.iter().map(f).collect()
    }

    #[test]
    fn every_hook_argument_is_read_from_its_events_payload() {
        let checked = one_of_each(|e| {
            let point = e.hook_point().unwrap_or_default();
            let (_, args) = HOOK_POINTS
                .iter()
                .find(|(p, _)| *p == point)
                .unwrap_or_else(|| panic!("{point} is not in HOOK_POINTS"));
            let payload = e.hook_payload();
            for arg in args.iter().filter(|a| **a != "repo") {
                assert!(
                    payload.contains_key(payload_field(arg)),
                    "{point}: argument {arg} is not a field of the payload {payload:?}"
                );
            }
            point
        });
        let all: Vec<&str> = HOOK_POINTS.iter().map(|(p, _)| *p).collect();
        assert_eq!(checked, all, "one event per hook point, in order");
    }

    #[test]
    fn hooks_get_nodes_and_items_whole_while_json_lines_name_them() {
        let lines = one_of_each(|e| (e.name(), e.hook_payload(), e.to_json()));
        let (_, payload, line) = &lines[5];
        assert_eq!(payload["node"]["name"], "web1");
        assert_eq!(payload["node"]["metadata"]["role"], "web");
        assert_eq!(payload["item"]["type"], "file");
        assert_eq!(payload["item"]["id"], "file:/etc/motd");
        assert_eq!(payload["duration"], 0.25);
        assert_eq!(
            line.as_ref().map(|l| l.to_string()),
            Some(
                r#"{"event":"item_apply_end","node":"web1","item":"file:/etc/motd","bundle":"base","duration":0.25,"status":"fixed","status_before":{"content_hash":"a"},"status_after":null,"reason":"why"}"#
                    .into()
            )
        );
        let (_, payload, line) = &lines[0];
        assert_eq!(payload["nodes"][0]["hostname"], "web1.example.org");
        assert_eq!(
            line.as_ref().map(|l| l.to_string()),
            Some(
                r#"{"event":"apply_start","target":"all","nodes":["web1"],"interactive":false}"#
                    .into()
            )
        );
        let (_, _, line) = &lines[11];
        assert_eq!(
            line.as_ref().map(|l| l.to_string()),
            Some(
                r#"{"event":"node_run_end","node":"web1","command":"uptime","duration":0.25,"return_code":3,"stdout":"out","stderr":""}"#
                    .into()
            )
        );
        let (name, _, line) = &lines[17];
        assert_eq!(*name, "test");
        assert_eq!(
            line.as_ref().map(|l| l.to_string()),
            Some(r#"{"event":"test"}"#.into())
        );
    }
}
