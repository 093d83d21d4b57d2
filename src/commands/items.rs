//! `cinch items NODE [--blame]`: a node's items as cinch sees them, after dependency
//! resolution (so generated items show up and broken dependencies are reported).

use crate::diag::did_you_mean;
use crate::error::{Error, Result};
use crate::settings::{ItemsSettings, Settings};

/// Runs `cinch items`.
pub fn run(ctx: &Settings, args: &ItemsSettings) -> Result<u8> {
    let repo = ctx.load_repo()?;
    let Some(node) = repo.nodes.get(&args.node) else {
        let mut msg = format!("no node named '{}'", args.node);
        if let Some(g) = did_you_mean(&args.node, repo.nodes.keys().map(String::as_str)) {
            msg.push_str(&format!(" (did you mean '{g}'?)"));
        }
        return Err(Error::Usage(msg));
    };
    let node = node.usable()?;
    let plan = crate::prepare::plan(&repo, node).map_err(Error::Repo)?;
    let shown = |loc: &crate::diag::Location| {
        let mut l = loc.clone();
        if let Ok(rel) = l.file.strip_prefix(&repo.path) {
            l.file = rel.to_path_buf();
        }
        l
    };
    let console = &ctx.console;
    if console.json() {
        for item in &plan.items {
            let loc = shown(&item.location);
            console.json_line(&serde_json::json!({
                "id": item.id,
                "type": item.type_name(),
                "name": item.name,
                "bundle": item.bundle,
                "file": loc.file,
                "line": loc.line,
                "column": loc.column,
            }));
        }
        return Ok(0);
    }
    let mut header = vec!["item", "bundle"];
    if args.blame {
        header.push("defined at");
    }
    let rows: Vec<Vec<String>> = plan
        .items
        .iter()
        .map(|item| {
            let mut row = vec![item.id.clone(), item.bundle.clone()];
            if args.blame {
                row.push(shown(&item.location).to_string());
            }
            row
        })
        .collect();
    console.out(&crate::output::table(&header, &rows));
    Ok(0)
}
