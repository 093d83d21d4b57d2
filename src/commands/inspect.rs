//! Inspection commands: nodes, groups, items, metadata, and `repo create`.

use std::path::Path;

use serde_json::{Value, json};

use crate::diag::did_you_mean;
use crate::error::{Error, Result};
use crate::repo::{Node, Repo, TransportKind, metadata};
use crate::settings::{GroupsSettings, ItemsSettings, MetadataSettings, NodesSettings, Settings};

/// Node attributes `cinch nodes -a` can show, besides `metadata.PATH`: every node key.
pub const NODE_ATTRS: &[&str] = crate::repo::load::NODE_KEYS;

/// Runs `cinch nodes`.
pub fn cmd_nodes(ctx: &Settings, args: &NodesSettings) -> Result<u8> {
    for attr in &args.attrs {
        check_attr(attr)?;
    }
    let repo = ctx.load_repo()?;
    let nodes = crate::shard::filter(
        repo.select(args.target.as_deref().unwrap_or("all"))?,
        args.shard,
        |n| &n.name,
    );
    if ctx.console.json() {
        for node in &nodes {
            let mut obj = serde_json::Map::new();
            obj.insert("node".into(), json!(node.name));
            let mut blame = serde_json::Map::new();
            for attr in &args.attrs {
                obj.insert(attr.clone(), node_attr(node, attr));
                if args.blame {
                    blame.insert(attr.clone(), json!(attr_source(node, attr)));
                }
            }
            if args.blame {
                obj.insert("blame".into(), Value::Object(blame));
            }
            ctx.console.json_line(&Value::Object(obj));
        }
        return Ok(0);
    }
    if args.blame {
        // One line per node and attribute: too wide for a table with sources in it.
        for node in &nodes {
            for attr in &args.attrs {
                ctx.console.out(&format!(
                    "{}  {attr} = {}  <- {}",
                    node.name,
                    node_attr(node, attr),
                    attr_source(node, attr).join(", ")
                ));
            }
        }
        return Ok(0);
    }
    if args.attrs.is_empty() {
        // One bare name per line, so the output pipes into other tools.
        for node in &nodes {
            ctx.console.out(&node.name);
        }
        return Ok(0);
    }
    let mut header = vec!["node"];
    header.extend(args.attrs.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|node| {
            std::iter::once(node.name.clone())
                .chain(args.attrs.iter().map(|a| cell(&node_attr(node, a))))
                .collect()
        })
        .collect();
    ctx.console.out(&crate::output::table(&header, &rows));
    Ok(0)
}

fn check_attr(attr: &str) -> Result<()> {
    if NODE_ATTRS.contains(&attr)
        || attr
            .strip_prefix("metadata.")
            .is_some_and(|p| !p.is_empty())
    {
        return Ok(());
    }
    let mut msg = format!("unknown node attribute '{attr}'");
    if let Some(close) = did_you_mean(attr, NODE_ATTRS.iter().copied()) {
        msg.push_str(&format!(" (did you mean '{close}'?)"));
    }
    msg.push_str(&format!(
        "; known: {}, metadata.PATH",
        NODE_ATTRS.join(", ")
    ));
    Err(Error::Usage(msg))
}

/// Where a node attribute's value came from: the node, a group, a reactor or a default.
fn attr_source(node: &Node, attr: &str) -> Vec<String> {
    if let Some(src) = node.attribute_sources.get(attr) {
        return vec![src.clone()];
    }
    match attr {
        "hostname" if node.hostname != node.name => {
            vec![format!("node '{}' ({})", node.name, node.location)]
        }
        "hostname" => vec!["default (the node name)".into()],
        "groups" => vec!["the node's `groups`, group members, patterns and subgroups".into()],
        "bundles" => vec!["the node's and its groups' `bundles`".into()],
        "metadata" => vec!["see `cinch metadata NODE --blame`".into()],
        other => match other.strip_prefix("metadata.") {
            Some(path) => metadata_blame(node)
                .ok()
                .map(|b| {
                    blame_for(&b, path)
                        .into_iter()
                        .flat_map(|(_, v)| v)
                        .collect()
                })
                .unwrap_or_default(),
            None => vec!["default".into()],
        },
    }
}

/// Which layer set each metadata value of `node`, by dotted path.
fn metadata_blame(node: &Node) -> Result<std::collections::BTreeMap<String, Vec<String>>> {
    match &node.fleet {
        Some(fleet) => fleet.blame(&node.name).map_err(Error::Repo),
        None => Ok(Default::default()),
    }
}

/// The blame entries at `key` or below it.
fn blame_for(
    blame: &std::collections::BTreeMap<String, Vec<String>>,
    key: &str,
) -> Vec<(String, Vec<String>)> {
    let prefix = format!("{key}.");
    blame
        .iter()
        .filter(|(p, _)| *p == key || p.starts_with(&prefix) || key.starts_with(&format!("{p}.")))
        .map(|(p, v)| (p.clone(), v.clone()))
        .collect()
}

/// One attribute of a node as JSON; `null` when unset (or a metadata path is missing).
fn node_attr(node: &Node, attr: &str) -> Value {
    match attr {
        "hostname" => json!(node.hostname),
        "username" => json!(node.username),
        "port" => json!(node.port),
        "transport" => json!(match node.transport {
            TransportKind::Ssh => "ssh",
            TransportKind::Local => "local",
        }),
        "groups" => json!(node.groups),
        "bundles" => json!(node.bundles),
        "dummy" => json!(node.dummy),
        "become" => json!(node.become_),
        "lock_dir" => json!(node.lock_dir),
        "os" => json!(node.os),
        "os_version" => json!(node.os_version),
        "metadata" => node.metadata().map(|m| (*m).clone()).unwrap_or(Value::Null),
        other => other
            .strip_prefix("metadata.")
            .and_then(|path| {
                node.metadata()
                    .ok()
                    .and_then(|m| metadata::lookup(&m, path).cloned())
            })
            .unwrap_or(Value::Null),
    }
}

/// How a JSON value reads in a table cell: strings bare, lists of strings comma-joined.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// Runs `cinch groups`.
pub fn cmd_groups(ctx: &Settings, args: &GroupsSettings) -> Result<u8> {
    let repo = ctx.load_repo()?;
    let names = selected_groups(&repo, args.target.as_deref())?;
    let groups: Vec<&crate::repo::Group> =
        names.iter().filter_map(|n| repo.groups.get(n)).collect();
    if ctx.console.json() {
        for g in groups {
            ctx.console.json_line(&json!({
                "group": g.name,
                "members": g.nodes,
                "bundles": g.bundles,
                "subgroups": g.subgroups,
                "supergroups": g.supergroups,
            }));
        }
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                g.name.clone(),
                abbreviated(&g.nodes),
                g.bundles.join(", "),
                g.subgroups.join(", "),
            ]
        })
        .collect();
    ctx.console.out(&crate::output::table(
        &["group", "members", "bundles", "subgroups"],
        &rows,
    ));
    Ok(0)
}

/// A list for a table cell; long member lists are cut so the table stays readable (`--json`
/// has them all).
fn abbreviated(names: &[String]) -> String {
    const SHOWN: usize = 8;
    if names.len() <= SHOWN {
        return names.join(", ");
    }
    format!("{}, … ({} in all)", names[..SHOWN].join(", "), names.len())
}

/// Group names a `groups` target stands for: the groups it names, or else the groups of the
/// nodes it selects.
fn selected_groups(repo: &Repo, target: Option<&str>) -> Result<Vec<String>> {
    let Some(target) = target else {
        return Ok(repo.groups.keys().cloned().collect());
    };
    let as_groups: Option<Vec<String>> = target
        .split(',')
        .map(|s| {
            let s = s.trim();
            let s = s.strip_prefix("group:").unwrap_or(s);
            repo.groups.contains_key(s).then(|| s.to_string())
        })
        .collect();
    if let Some(mut groups) = as_groups {
        groups.sort();
        groups.dedup();
        return Ok(groups);
    }
    let mut groups: Vec<String> = repo
        .select(target)?
        .iter()
        .flat_map(|n| n.groups.iter().cloned())
        .collect();
    groups.sort();
    groups.dedup();
    Ok(groups)
}

/// Runs `cinch items`.
pub fn cmd_items(ctx: &Settings, args: &ItemsSettings) -> Result<u8> {
    crate::commands::items::run(ctx, args)
}

/// Runs `cinch metadata`.
pub fn cmd_metadata(ctx: &Settings, args: &MetadataSettings) -> Result<u8> {
    let repo = ctx.load_repo()?;
    let node = repo.node(&args.node)?.usable()?;
    let computed = node.metadata().map_err(Error::Repo)?;
    for key in &args.keys {
        metadata::lookup(&computed, key).ok_or_else(|| missing_key(node, &computed, key))?;
    }
    if args.blame {
        let blame = metadata_blame(node)?;
        let entries: Vec<(String, Vec<String>)> = if args.keys.is_empty() {
            blame.into_iter().collect()
        } else {
            args.keys
                .iter()
                .flat_map(|k| blame_for(&blame, k))
                .collect()
        };
        if ctx.console.json() {
            let mut obj = serde_json::Map::new();
            for (path, from) in entries {
                let value = metadata::lookup(&computed, &path)
                    .cloned()
                    .unwrap_or(Value::Null);
                obj.insert(path, json!({ "value": value, "from": from }));
            }
            ctx.console.json_line(&Value::Object(obj));
        } else {
            for (path, from) in entries {
                let value = metadata::lookup(&computed, &path)
                    .cloned()
                    .unwrap_or(Value::Null);
                ctx.console
                    .out(&format!("{path} = {value}  <- {}", from.join(", ")));
            }
        }
        return Ok(0);
    }
    let value = if args.keys.is_empty() {
        (*computed).clone()
    } else {
        let mut out = Value::Object(Default::default());
        for key in &args.keys {
            if let Some(found) = metadata::lookup(&computed, key) {
                insert_path(&mut out, key, found.clone());
            }
        }
        out
    };
    // Secrets are masked as on every channel, unless the user asked to see them.
    let text = if ctx.console.json() {
        value.to_string()
    } else {
        serde_json::to_string_pretty(&value)
            .map_err(|e| Error::Usage(format!("cannot print metadata: {e}")))?
    };
    if args.reveal {
        ctx.console.out_revealed(&text);
    } else if ctx.console.json() {
        ctx.console.json_line(&value);
    } else {
        ctx.console.out(&text);
    }
    Ok(0)
}

fn missing_key(node: &Node, metadata: &Value, key: &str) -> Error {
    // Point at the first segment that is missing, and suggest a sibling that exists there.
    let segments: Vec<&str> = key.split('.').collect();
    let mut current = metadata;
    let mut known = String::new();
    for (i, seg) in segments.iter().enumerate() {
        let next = match current {
            Value::Object(m) => m.get(*seg),
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        match next {
            Some(v) => current = v,
            None => {
                let prefix = segments[..i].join(".");
                if let Value::Object(m) = current
                    && let Some(close) = did_you_mean(seg, m.keys().map(String::as_str))
                {
                    let full = if prefix.is_empty() {
                        close.to_string()
                    } else {
                        format!("{prefix}.{close}")
                    };
                    known = format!(" (did you mean '{full}'?)");
                }
                break;
            }
        }
    }
    Error::Usage(format!(
        "node '{}' has no metadata key '{key}'{known}",
        node.name
    ))
}

fn insert_path(out: &mut Value, dotted: &str, value: Value) {
    let mut current = out;
    let mut segments = dotted.split('.').peekable();
    while let Some(seg) = segments.next() {
        let Value::Object(map) = current else { return };
        if segments.peek().is_none() {
            map.insert(seg.to_string(), value);
            return;
        }
        current = map
            .entry(seg.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
}

/// Runs `cinch repo create`.
pub fn cmd_repo_create(ctx: &Settings, dir: &Path) -> Result<u8> {
    if dir.exists() {
        if !dir.is_dir() {
            return Err(Error::Usage(format!(
                "{} exists and is not a directory",
                dir.display()
            )));
        }
        let mut entries = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        if entries.next().is_some() {
            return Err(Error::Usage(format!(
                "{} is not empty; `cinch repo create` only writes into an empty or new directory",
                dir.display()
            )));
        }
    }
    for (rel, content) in crate::repo::template::FILES {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        std::fs::write(&path, content)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    }
    if ctx.console.json() {
        ctx.console.json_line(&json!({
            "event": "repo_created",
            "path": dir.display().to_string(),
            "files": crate::repo::template::FILES.len(),
        }));
    } else if !ctx.console.quiet() {
        ctx.console.out(&format!(
            "created a cinch repo in {dir}\nnext: cinch -r {dir} test && cinch -r {dir} apply demo",
            dir = dir.display()
        ));
    }
    Ok(0)
}
