//! One node's local preparation, shared by every command: load its items, render their
//! content, resolve the plan. `apply`, `verify` and `cinch test` call [`prepare`];
//! `cinch items` calls [`plan`] (no rendering).

use crate::diag::Diagnostic;
use crate::plan::Plan;
use crate::repo::{Node, Repo};

/// One file item's expected content, or why it cannot be rendered.
type Rendered = Result<Option<Vec<u8>>, Diagnostic>;

/// What the local preparation produces for one node: its plan and each plan item's expected
/// content (`None` where cinch does not manage content), in plan order.
pub struct Prepared {
    pub plan: Plan,
    pub contents: Vec<Option<Vec<u8>>>,
}

/// Every check that needs no network, for one node: its metadata resolved, its items parse,
/// every template renders with its metadata, and the dependency graph resolves without loops.
/// `apply`, `verify` and `cinch test` all call this one function, so `test` passes exactly the
/// repos `apply` accepts — dummy nodes included (apply builds their plan too, then skips it).
pub fn prepare(repo: &Repo, node: &Node) -> Result<Prepared, Vec<Diagnostic>> {
    // A node's own problems (a metadata conflict) come first; its items are still checked so
    // `cinch test` reports everything at once. (apply never gets here for such a node.)
    let mut problems = node.all_problems();
    let items = match crate::items::load_node_items(repo, node) {
        Ok(items) => items,
        Err(diags) => {
            problems.extend(diags);
            return Err(problems);
        }
    };
    let rendered: Vec<(String, Rendered)> = items
        .iter()
        .map(|item| item.id.clone())
        .zip(crate::items::render::contents(repo, node, &items))
        .collect();
    let mut contents: foldhash::HashMap<String, Option<Vec<u8>>> =
        foldhash::HashMap::with_capacity_and_hasher(rendered.len(), Default::default());
    for (id, r) in rendered {
        match r {
            Ok(c) => {
                contents.insert(id, c);
            }
            Err(d) => problems.push(d),
        }
    }
    match Plan::build(node, items) {
        Err(diags) => {
            problems.extend(diags);
            Err(problems)
        }
        Ok(_) if !problems.is_empty() => Err(problems),
        Ok(plan) => {
            // Generated items (canned actions) have no content.
            let contents = plan
                .items
                .iter()
                .map(|i| contents.remove(&i.id).flatten())
                .collect();
            Ok(Prepared { plan, contents })
        }
    }
}

/// A node's items with their dependencies resolved, without rendering any content (what
/// `cinch items` shows, for a node already known to be usable).
pub fn plan(repo: &Repo, node: &Node) -> Result<Plan, Vec<Diagnostic>> {
    let items = crate::items::load_node_items(repo, node)?;
    Plan::build(node, items)
}
