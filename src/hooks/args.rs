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
