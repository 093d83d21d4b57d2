//! Argument building: each event's hook arguments (in [`HOOK_POINTS`] order) as Rhai values.

use crate::events::Event;
use crate::items::{Item, ItemKind};
use crate::repo::Node;
use rhai::{Dynamic, FLOAT, INT, Map};
use serde_json::{Value, json};

use super::*;

impl Hooks {
    /// The full argument list of an event's hook (in [`HOOK_POINTS`] order).
    pub(super) fn arguments(&self, event: &Event<'_>) -> Vec<Dynamic> {
        let repo = self.repo_value();
        let secs = |d: &std::time::Duration| Dynamic::from_float(d.as_secs_f64() as FLOAT);
        // Every text a hook gets is masked, like every output channel.
        let s = |t: &str| Dynamic::from(crate::mask::mask(t).into_owned());
        let nodes_arg = |nodes: &[&Node]| -> Dynamic {
            Dynamic::from_array(nodes.iter().map(|n| node_value(n)).collect())
        };
        match event {
            Event::ApplyStart {
                target,
                nodes,
                interactive,
            } => vec![
                repo,
                s(target),
                nodes_arg(nodes),
                Dynamic::from_bool(*interactive),
            ],
            Event::ApplyEnd {
                target,
                nodes,
                duration,
            } => vec![repo, s(target), nodes_arg(nodes), secs(duration)],
            Event::NodeApplyStart { node, interactive } => {
                vec![repo, node_value(node), Dynamic::from_bool(*interactive)]
            }
            Event::NodeApplyEnd {
                node,
                duration,
                interactive,
                result,
            } => vec![
                repo,
                node_value(node),
                secs(duration),
                Dynamic::from_bool(*interactive),
                to_dynamic(&json!(result)),
            ],
            Event::ItemApplyStart { node, item } | Event::ActionRunStart { node, item } => {
                vec![repo, node_value(node), item_value(item)]
            }
            Event::ItemApplyEnd {
                node,
                item,
                duration,
                status,
                status_before,
                status_after,
                reason,
            } => vec![
                repo,
                node_value(node),
                item_value(item),
                secs(duration),
                s(status.as_str()),
                status_before.map_or(Dynamic::UNIT, to_dynamic),
                status_after.map_or(Dynamic::UNIT, to_dynamic),
                reason.map_or(Dynamic::UNIT, s),
            ],
            Event::ActionRunEnd {
                node,
                item,
                duration,
                status,
            } => vec![
                repo,
                node_value(node),
                item_value(item),
                secs(duration),
                s(status.as_str()),
            ],
            Event::RunStart {
                target,
                nodes,
                command,
            } => vec![repo, s(target), nodes_arg(nodes), s(command)],
            Event::RunEnd {
                target,
                nodes,
                command,
                duration,
            } => vec![
                repo,
                s(target),
                nodes_arg(nodes),
                s(command),
                secs(duration),
            ],
            Event::NodeRunStart { node, command } => vec![repo, node_value(node), s(command)],
            Event::NodeRunEnd {
                node,
                command,
                duration,
                return_code,
                stdout,
                stderr,
            } => vec![
                repo,
                node_value(node),
                s(command),
                secs(duration),
                return_code.map_or(Dynamic::UNIT, |c| Dynamic::from_int(c as INT)),
                s(&String::from_utf8_lossy(stdout)),
                s(&String::from_utf8_lossy(stderr)),
            ],
            Event::LockAdd {
                node,
                lock_id,
                items,
                expiry,
                comment,
            } => vec![
                repo,
                node_value(node),
                s(lock_id),
                Dynamic::from_array(items.iter().map(|i| s(i)).collect()),
                Dynamic::from_int(*expiry as INT),
                s(comment),
            ],
            Event::LockRemove { node, lock_id } => vec![repo, node_value(node), s(lock_id)],
            Event::LockShow { node, lock_info } => {
                vec![repo, node_value(node), to_dynamic(lock_info)]
            }
            Event::NodeSshConnect { node } | Event::TestNode { node } => {
                vec![repo, node_value(node)]
            }
            Event::Test => vec![repo],
        }
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

/// A node as hooks see it: name, hostname, groups, bundles, metadata and the connection fields.
pub(super) fn node_value(node: &Node) -> Dynamic {
    serde_json::to_value(node).map_or(Dynamic::UNIT, |v| to_dynamic(&v))
}

/// An item as hooks see it: id, type, name, bundle, attributes.
pub(super) fn item_value(item: &Item) -> Dynamic {
    to_dynamic(&json!({
        "id": item.id,
        "type": item.type_name(),
        "name": item.name,
        "bundle": item.bundle,
        "attributes": item_attributes(&item.kind),
        "tags": item.deps.tags,
        "comment": item.deps.comment,
    }))
}

/// The type-specific attributes as written in items.toml; sensitive file content is left out.
/// Each type describes its own view (`registry::ItemType::view`).
pub(super) fn item_attributes(kind: &ItemKind) -> Value {
    kind.item_type().view(kind)
}
