//! `cinch hash`: a deterministic hash of each selected node's configuration and of the whole
//! selection, computed without connecting (see [`crate::review::expected`] for what is hashed).

use serde_json::json;

use crate::error::Result;
use crate::review::expected::{NodeState, map_node_states, selection_hash};
use crate::settings::{HashSettings as HashArgs, Settings as Context};

/// Runs `cinch hash`.
pub fn cmd_hash(ctx: &Context, args: &HashArgs) -> Result<u8> {
    let repo = ctx.load_repo()?;
    let nodes = crate::shard::filter(
        repo.select(args.target.as_deref().unwrap_or("all"))?,
        args.shard,
        |n| &n.name,
    );
    let states = map_node_states(&repo, &nodes, |s| Hashed {
        hash: s.hash(args.metadata),
        items: if args.items {
            item_hashes(&s)
        } else {
            Vec::new()
        },
        name: s.name,
    })?;
    let hashes: Vec<(&str, String)> = states
        .iter()
        .map(|s| (s.name.as_str(), s.hash.clone()))
        .collect();
    let total = selection_hash(&hashes);
    let c = &ctx.console;
    if c.json() {
        for (state, (_, hash)) in states.iter().zip(&hashes) {
            let mut line = json!({"event": "node_hash", "node": state.name, "hash": hash});
            if args.items {
                line["items"] = serde_json::Value::Object(
                    state
                        .items
                        .iter()
                        .map(|(id, h)| (id.clone(), json!(h)))
                        .collect(),
                );
            }
            c.json_line(&line);
        }
        c.json_line(&json!({
            "event": "hash",
            "hash": total,
            "nodes": states.len(),
            "metadata": args.metadata,
        }));
        return Ok(0);
    }
    if !c.quiet() {
        for (state, (name, hash)) in states.iter().zip(&hashes) {
            c.out(&format!("{hash}  {name}"));
            if args.items {
                for (id, hash) in &state.items {
                    c.out(&format!("  {hash}  {id}"));
                }
            }
        }
    }
    if c.quiet() {
        // For scripts: `[ "$(cinch -q hash web1)" = "$REVIEWED" ]`.
        c.out(&total);
    } else {
        c.out(&format!(
            "{total}  ({} node{})",
            states.len(),
            if states.len() == 1 { "" } else { "s" }
        ));
    }
    Ok(0)
}

/// `{item id: hash}` of one node, in id order.
/// What `hash` keeps of a node once its state is hashed.
struct Hashed {
    name: String,
    hash: String,
    /// Item id and item hash, with `--items`.
    items: Vec<(String, String)>,
}

fn item_hashes(state: &NodeState) -> Vec<(String, String)> {
    state
        .items
        .iter()
        .map(|i| (i.id.clone(), i.hash.clone()))
        .collect()
}
