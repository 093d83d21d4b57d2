//! The dependency graph of one node's items: pure, so `cinch test` and `cinch items` use it
//! without a network.
//!
//! Semantics follow BundleWrap (reference/bundlewrap.md 3.1-3.3): `needs` is a hard edge
//! (a failed or skipped dependency skips its dependents when it cascades), `after`/`before`
//! only order, a triggered item runs after every item that can trigger it, and a triggered
//! item that `precedes` X runs before X, only when X is about to change.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use foldhash::HashMap;
use std::path::Path;

use crate::diag::{Diagnostic, did_you_mean};
use crate::items::selector::Selector;
use crate::items::{Item, ItemKind};
use crate::repo::Node;

/// One node's items with every dependency resolved to indices into `items`.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The node this plan is for (used in messages).
    pub node: String,
    /// Sorted by id, so indices, output and execution order are deterministic.
    pub items: Vec<Item>,
    /// Item id -> index.
    pub index: HashMap<String, usize>,
    /// Hard dependencies (needs, needed_by, automatic): their failure or skip cascades.
    pub needs: Vec<Vec<usize>>,
    /// Ordering-only dependencies (after/before, triggered-after-triggerer, preceded-by).
    pub order: Vec<Vec<usize>>,
    /// What an item fires when it is fixed (or its action succeeds).
    pub triggers: Vec<Vec<usize>>,
    /// For a triggered item P: the items it must run before, if any of them will change.
    pub precedes: Vec<Vec<usize>>,
    /// Whether a failure or skip of the item skips the items that need it.
    pub cascade_skip: Vec<bool>,
    /// `needs` ∪ `order`: everything that must finish before the item starts.
    pub blocked_by: Vec<Vec<usize>>,
    /// Reverse of `blocked_by`: whom to wake up when an item finishes.
    pub dependents: Vec<Vec<usize>>,
    /// Reverse of `needs`: who is skipped when an item fails or is skipped.
    pub needed_by: Vec<Vec<usize>>,
    /// Reverse of `triggers`: who can fire a triggered item.
    pub triggered_by: Vec<Vec<usize>>,
}

/// Extra items an item brings along (e.g. `svc_systemd:NAME:restart`), added before any
/// dependency is resolved so they can be depended on like written ones.
pub type Generator<'a> = &'a (dyn Fn(&Node, &Item) -> Vec<Item> + Sync);

/// Items indexed by every way a selector can name them, so resolving a selector costs the size
/// of its result, not the number of items.
struct Index<'a> {
    items: &'a [Item],
    by_id: HashMap<&'a str, usize>,
    by_type: HashMap<&'a str, Vec<usize>>,
    by_bundle: HashMap<&'a str, Vec<usize>>,
    by_tag: HashMap<&'a str, Vec<usize>>,
    tagged: Vec<usize>,
}

/// Why a selector could not be resolved.
enum Unresolved {
    Invalid(String),
    Missing,
    SelfRef,
}

impl<'a> Index<'a> {
    fn new(items: &'a [Item]) -> Self {
        let mut ix = Index {
            items,
            by_id: HashMap::with_capacity_and_hasher(items.len(), Default::default()),
            by_type: HashMap::default(),
            by_bundle: HashMap::default(),
            by_tag: HashMap::default(),
            tagged: Vec::new(),
        };
        for (i, item) in items.iter().enumerate() {
            ix.by_id.insert(item.id.as_str(), i);
            ix.by_type.entry(item.type_name()).or_default().push(i);
            ix.by_bundle
                .entry(item.bundle.as_str())
                .or_default()
                .push(i);
            for t in &item.deps.tags {
                ix.by_tag.entry(t.as_str()).or_default().push(i);
            }
            if !item.deps.tags.is_empty() {
                ix.tagged.push(i);
            }
        }
        for v in ix.by_tag.values_mut() {
            v.dedup();
        }
        ix
    }

    /// The items `sel` names, as seen from item `me` (group selectors never include `me`).
    fn resolve(&self, sel: &str, me: usize, out: &mut Vec<usize>) -> Result<(), Unresolved> {
        out.clear();
        let parsed = Selector::parse(sel)
            .ok_or_else(|| Unresolved::Invalid(format!("`{sel}` is not an item selector")))?;
        let group: &[usize] = match parsed {
            Selector::Id(id) => {
                let &i = self.by_id.get(id).ok_or(Unresolved::Missing)?;
                if i == me {
                    return Err(Unresolved::SelfRef);
                }
                out.push(i);
                return Ok(());
            }
            Selector::All => {
                out.extend((0..self.items.len()).filter(|&i| i != me));
                return Ok(());
            }
            Selector::Bundle(b) => self.by_bundle.get(b).map_or(&[], Vec::as_slice),
            Selector::Tag(t) => self.by_tag.get(t).map_or(&[], Vec::as_slice),
            Selector::AnyTag => &self.tagged,
            Selector::Type(t) => self.by_type.get(t).map_or(&[], Vec::as_slice),
        };
        out.extend(group.iter().copied().filter(|&i| i != me));
        Ok(())
    }
}

/// The dependency attributes, in the order they are resolved.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Needs,
    NeededBy,
    After,
    Before,
    Triggers,
    TriggeredBy,
    Precedes,
    PrecededBy,
}

impl Kind {
    const ALL: [Kind; 8] = [
        Kind::Needs,
        Kind::NeededBy,
        Kind::After,
        Kind::Before,
        Kind::Triggers,
        Kind::TriggeredBy,
        Kind::Precedes,
        Kind::PrecededBy,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Needs => "needs",
            Kind::NeededBy => "needed_by",
            Kind::After => "after",
            Kind::Before => "before",
            Kind::Triggers => "triggers",
            Kind::TriggeredBy => "triggered_by",
            Kind::Precedes => "precedes",
            Kind::PrecededBy => "preceded_by",
        }
    }

    fn selectors(self, item: &Item) -> &[String] {
        let d = &item.deps;
        match self {
            Kind::Needs => &d.needs,
            Kind::NeededBy => &d.needed_by,
            Kind::After => &d.after,
            Kind::Before => &d.before,
            Kind::Triggers => &d.triggers,
            Kind::TriggeredBy => &d.triggered_by,
            Kind::Precedes => &d.precedes,
            Kind::PrecededBy => &d.preceded_by,
        }
    }
}

/// Adjacency lists being built.
struct Edges {
    needs: Vec<Vec<usize>>,
    order: Vec<Vec<usize>>,
    triggers: Vec<Vec<usize>>,
    precedes: Vec<Vec<usize>>,
}

impl Plan {
    /// Resolves every dependency of a node's items (with the canned actions they bring,
    /// such as `svc_systemd:NAME:restart`) and checks the graph has no loops.
    pub fn build(node: &Node, items: Vec<Item>) -> Result<Plan, Vec<Diagnostic>> {
        Plan::build_with(node, items, &crate::items::state::canned_actions)
    }

    /// Like [`Plan::build`], first adding the items `generate` derives from each item.
    pub fn build_with(
        node: &Node,
        mut items: Vec<Item>,
        generate: Generator<'_>,
    ) -> Result<Plan, Vec<Diagnostic>> {
        let generated: Vec<Item> = items.iter().flat_map(|i| generate(node, i)).collect();
        items.extend(generated);
        items.sort_by(|a, b| a.id.cmp(&b.id));
        let dups = crate::items::load::duplicates(&items, &node.name);
        if !dups.is_empty() {
            return Err(dups);
        }
        let n = items.len();
        let mut edges = Edges {
            needs: vec![Vec::new(); n],
            order: vec![Vec::new(); n],
            triggers: vec![Vec::new(); n],
            precedes: vec![Vec::new(); n],
        };
        let mut diags = Vec::new();
        let ix = Index::new(&items);
        resolve_declared(node, &ix, &mut edges, &mut diags);
        auto_dependencies(&ix, &mut edges, &mut diags);
        if !diags.is_empty() {
            return Err(diags);
        }
        for list in [
            &mut edges.needs,
            &mut edges.order,
            &mut edges.triggers,
            &mut edges.precedes,
        ] {
            for v in list.iter_mut() {
                v.sort_unstable();
                v.dedup();
            }
        }
        let blocked_by: Vec<Vec<usize>> = (0..n)
            .map(|i| {
                let mut v = edges.needs[i].clone();
                v.extend_from_slice(&edges.order[i]);
                v.sort_unstable();
                v.dedup();
                v
            })
            .collect();
        let index = items
            .iter()
            .enumerate()
            .map(|(i, it)| (it.id.clone(), i))
            .collect();
        let plan = Plan {
            node: node.name.clone(),
            cascade_skip: items.iter().map(Item::cascade_skip).collect(),
            dependents: reverse(&blocked_by),
            needed_by: reverse(&edges.needs),
            triggered_by: reverse(&edges.triggers),
            blocked_by,
            index,
            items,
            needs: edges.needs,
            order: edges.order,
            triggers: edges.triggers,
            precedes: edges.precedes,
        };
        let loops = plan.loops();
        if !loops.is_empty() {
            return Err(loops);
        }
        Ok(plan)
    }

    /// A plan whose items have no edges yet, in the order given: a node that cannot run has
    /// one with no items, and executor tests add edges by index.
    pub fn unlinked(node: &str, items: Vec<Item>) -> Plan {
        let n = items.len();
        Plan {
            node: node.to_string(),
            index: items
                .iter()
                .enumerate()
                .map(|(i, it)| (it.id.clone(), i))
                .collect(),
            cascade_skip: items.iter().map(Item::cascade_skip).collect(),
            items,
            needs: vec![Vec::new(); n],
            order: vec![Vec::new(); n],
            triggers: vec![Vec::new(); n],
            precedes: vec![Vec::new(); n],
            blocked_by: vec![Vec::new(); n],
            dependents: vec![Vec::new(); n],
            needed_by: vec![Vec::new(); n],
            triggered_by: vec![Vec::new(); n],
        }
    }

    /// Topological levels over needs ∪ order: every item's dependencies sit in earlier waves.
    /// Items caught in a loop are returned separately.
    pub fn waves(&self) -> (Vec<Vec<usize>>, Vec<usize>) {
        let n = self.items.len();
        let mut level: Vec<Option<usize>> = vec![None; n];
        let mut changed = true;
        while changed {
            changed = false;
            for i in 0..n {
                if level[i].is_some() {
                    continue;
                }
                let deps = self.needs[i].iter().chain(&self.order[i]);
                let mut l = 0;
                let mut ready = true;
                for &d in deps {
                    match level.get(d).copied().flatten() {
                        Some(dl) => l = l.max(dl + 1),
                        None if d < n => ready = false,
                        None => {}
                    }
                }
                if ready {
                    level[i] = Some(l);
                    changed = true;
                }
            }
        }
        let depth = level.iter().flatten().max().map_or(0, |m| m + 1);
        let mut waves = vec![Vec::new(); depth];
        let mut stuck = Vec::new();
        for (i, l) in level.iter().enumerate() {
            match l {
                Some(l) => waves[*l].push(i),
                None => stuck.push(i),
            }
        }
        (waves, stuck)
    }

    /// Everything that must finish before item `i` may start.
    pub fn blockers(&self, i: usize) -> &[usize] {
        &self.blocked_by[i]
    }

    /// A deterministic execution order: among items whose blockers are done, lowest id first.
    pub fn topo_order(&self) -> Vec<usize> {
        let n = self.items.len();
        let mut waiting: Vec<usize> = self.blocked_by.iter().map(Vec::len).collect();
        let mut ready: BinaryHeap<Reverse<usize>> =
            (0..n).filter(|&i| waiting[i] == 0).map(Reverse).collect();
        let mut out = Vec::with_capacity(n);
        while let Some(Reverse(i)) = ready.pop() {
            out.push(i);
            for &d in &self.dependents[i] {
                waiting[d] -= 1;
                if waiting[d] == 0 {
                    ready.push(Reverse(d));
                }
            }
        }
        out
    }

    /// The items in `roots` plus everything they transitively need (what `apply -o` keeps).
    pub fn needs_closure(&self, roots: impl IntoIterator<Item = usize>) -> Vec<bool> {
        let mut keep = vec![false; self.items.len()];
        let mut stack: Vec<usize> = roots.into_iter().collect();
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut keep[i], true) {
                stack.extend(self.needs[i].iter().copied().filter(|&d| !keep[d]));
            }
        }
        keep
    }

    /// One diagnostic per dependency loop, each spelling out the whole cycle.
    fn loops(&self) -> Vec<Diagnostic> {
        let order = self.topo_order();
        if order.len() == self.items.len() {
            return Vec::new();
        }
        let mut done = vec![false; self.items.len()];
        for &i in &order {
            done[i] = true;
        }
        let mut diags = Vec::new();
        for scc in strongly_connected(&self.blocked_by, &done) {
            let cycle = shortest_cycle(&self.blocked_by, &scc);
            let path: Vec<&str> = cycle.iter().map(|&i| self.items[i].id.as_str()).collect();
            let first = &self.items[cycle[0]];
            diags.push(
                Diagnostic::at(
                    first.location.clone(),
                    format!(
                        "dependency loop on node '{}': {}",
                        self.node,
                        path.join(" -> ")
                    ),
                )
                .with_hint(
                    "each arrow means \"waits for\" (needs, after, triggers, precedes or an \
                     automatic parent/owner dependency); remove one of them",
                ),
            );
        }
        diags
    }
}

fn reverse(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut rev = vec![Vec::new(); adj.len()];
    for (i, targets) in adj.iter().enumerate() {
        for &t in targets {
            rev[t].push(i);
        }
    }
    rev
}

/// Resolves the dependency attributes users wrote into edges.
fn resolve_declared(node: &Node, ix: &Index<'_>, e: &mut Edges, diags: &mut Vec<Diagnostic>) {
    let items = ix.items;
    let mut targets = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let err_at = |attr: &str, msg: String| {
            Diagnostic::at(item.deps.location_of(attr, &item.location).clone(), msg)
        };
        if item.deps.triggered && !item.deps.preceded_by.is_empty() {
            diags.push(err_at(
                "preceded_by",
                format!(
                    "{} is triggered, so it cannot be preceded_by other items",
                    item.id
                ),
            ));
        }
        if !item.deps.triggered_by.is_empty() && !item.deps.triggered {
            diags.push(
                err_at(
                    "triggered_by",
                    format!("{} has triggered_by but is not triggered", item.id),
                )
                .with_hint("add triggered = true, or use needs/after"),
            );
        }
        if !item.deps.precedes.is_empty() && !item.deps.triggered {
            diags.push(
                err_at(
                    "precedes",
                    format!("{} precedes other items but is not triggered", item.id),
                )
                .with_hint("add triggered = true, or use before"),
            );
        }
        for kind in Kind::ALL {
            // A dependency problem points at the `needs = ...` line, not the item header.
            let at = item.deps.location_of(kind.name(), &item.location);
            let err = |msg: String| Diagnostic::at(at.clone(), msg);
            for sel in kind.selectors(item) {
                match ix.resolve(sel, i, &mut targets) {
                    Ok(()) => {}
                    Err(Unresolved::Invalid(m)) => {
                        diags.push(err(format!("{} ({}): {m}", item.id, kind.name())));
                        continue;
                    }
                    Err(Unresolved::SelfRef) => {
                        let msg = if matches!(kind, Kind::Triggers | Kind::TriggeredBy) {
                            format!("{} cannot trigger itself", item.id)
                        } else {
                            format!(
                                "{} cannot depend on itself ({} = {sel:?})",
                                item.id,
                                kind.name()
                            )
                        };
                        diags.push(err(msg));
                        continue;
                    }
                    Err(Unresolved::Missing) => {
                        let mut d = err(format!(
                            "{} in bundle '{}' on node '{}' has a dependency ({}) on '{sel}', \
                             which doesn't exist",
                            item.id,
                            item.bundle,
                            node.name,
                            kind.name()
                        ));
                        if let Some(g) = did_you_mean(sel, ix.by_id.keys().copied()) {
                            d = d.with_hint(format!("did you mean '{g}'?"));
                        }
                        diags.push(d);
                        continue;
                    }
                }
                for &t in &targets {
                    let target = &items[t];
                    match kind {
                        Kind::Needs => e.needs[i].push(t),
                        Kind::NeededBy => e.needs[t].push(i),
                        Kind::After => e.order[i].push(t),
                        Kind::Before => e.order[t].push(i),
                        Kind::Triggers => {
                            if !target.deps.triggered {
                                diags.push(
                                    err(format!(
                                        "{} triggers {}, which is not triggered",
                                        item.id, target.id
                                    ))
                                    .with_hint(format!(
                                        "add triggered = true to {} (it then runs only when \
                                         triggered), or use needs/before",
                                        target.id
                                    )),
                                );
                                continue;
                            }
                            e.triggers[i].push(t);
                            e.order[t].push(i);
                        }
                        Kind::TriggeredBy => {
                            e.triggers[t].push(i);
                            e.order[i].push(t);
                        }
                        Kind::Precedes => {
                            if target.deps.triggered {
                                diags.push(err(format!(
                                    "{} precedes {}, but a triggered item cannot be preceded",
                                    item.id, target.id
                                )));
                                continue;
                            }
                            e.precedes[i].push(t);
                            e.order[t].push(i);
                        }
                        Kind::PrecededBy => {
                            if !target.deps.triggered {
                                diags.push(
                                    err(format!(
                                        "{} is preceded_by {}, which is not triggered",
                                        item.id, target.id
                                    ))
                                    .with_hint(format!(
                                        "add triggered = true to {}, or use after",
                                        target.id
                                    )),
                                );
                                continue;
                            }
                            e.precedes[t].push(i);
                            e.order[i].push(t);
                        }
                    }
                }
            }
        }
    }
}

/// Dependencies nobody writes: a path needs its managed parent directories and symlinks and
/// the managed user and group owning it; a user needs its managed groups.
fn auto_dependencies(ix: &Index<'_>, e: &mut Edges, diags: &mut Vec<Diagnostic>) {
    let items = ix.items;
    let paths: HashMap<&str, usize> = items
        .iter()
        .enumerate()
        .filter(|(_, it)| it.is_path())
        .map(|(i, it)| (it.name.as_str(), i))
        .collect();
    // Needs a managed user/group if there is one; depending on a deleted one is a contradiction.
    let mut owner =
        |i: usize, ty: &str, name: &Option<String>, what: &str, diags: &mut Vec<Diagnostic>| {
            let Some(name) = name else { return };
            let Some(&j) = ix.by_id.get(format!("{ty}:{name}").as_str()) else {
                return;
            };
            if items[j].deletes() {
                diags.push(Diagnostic::at(
                    items[i].location.clone(),
                    format!(
                        "{} {what} {}, which has delete = true",
                        items[i].id, items[j].id
                    ),
                ));
            } else {
                e.needs[i].push(j);
            }
        };
    for (i, item) in items.iter().enumerate() {
        match &item.kind {
            ItemKind::File(a) => {
                owner(i, "user", &a.owner, "is owned by", diags);
                owner(i, "group", &a.group, "belongs to", diags);
            }
            ItemKind::Directory(a) => {
                owner(i, "user", &a.owner, "is owned by", diags);
                owner(i, "group", &a.group, "belongs to", diags);
            }
            ItemKind::Symlink(a) => {
                owner(i, "user", &a.owner, "is owned by", diags);
                owner(i, "group", &a.group, "belongs to", diags);
            }
            ItemKind::User(a) if !a.delete => {
                owner(i, "group", &a.gid, "has the primary group", diags);
                for g in a.groups.iter().flatten() {
                    owner(i, "group", &Some(g.clone()), "is a member of", diags);
                }
            }
            ItemKind::Group(g) if g.delete => {
                // groupdel refuses a group that is still some user's primary group: remove
                // deleted users first.
                for (u, other) in items.iter().enumerate() {
                    if matches!(&other.kind, ItemKind::User(a) if a.delete) {
                        e.order[i].push(u);
                    }
                }
            }
            ItemKind::SvcSystemd(a) if a.masked == Some(true) => {
                let on: Vec<&str> = [("running", a.running), ("enabled", a.enabled)]
                    .into_iter()
                    .filter(|(_, v)| *v == Some(true))
                    .map(|(k, _)| k)
                    .collect();
                if !on.is_empty() {
                    diags.push(
                        Diagnostic::at(
                            item.location.clone(),
                            format!(
                                "{} is masked = true, so it cannot also be {} = true",
                                item.id,
                                on.join(" = true and ")
                            ),
                        )
                        .with_hint("a masked unit can be neither started nor enabled"),
                    );
                }
            }
            _ => {}
        }
    }
    for (i, item) in items.iter().enumerate() {
        if !item.is_path() {
            continue;
        }
        for parent in Path::new(&item.name).ancestors().skip(1) {
            let Some(&j) = parent.to_str().and_then(|p| paths.get(p)) else {
                continue;
            };
            let p = &items[j];
            let err = |msg: String| Diagnostic::at(item.location.clone(), msg);
            match &p.kind {
                ItemKind::File(_) if !p.deletes() => diags.push(
                    err(format!(
                        "{} is inside {}, but a file cannot contain other paths",
                        item.id, p.id
                    ))
                    .with_hint(format!(
                        "make {} a directory item, or move one of them",
                        p.name
                    )),
                ),
                _ if p.deletes() && !item.deletes() => diags.push(err(format!(
                    "{} is inside {}, which has delete = true",
                    item.id, p.id
                ))),
                _ => e.needs[i].push(j),
            }
        }
    }
}

/// Strongly connected components (Tarjan, iterative) among items not yet `done` that contain a
/// cycle, each sorted, in order of their smallest member.
fn strongly_connected(adj: &[Vec<usize>], done: &[bool]) -> Vec<Vec<usize>> {
    let n = adj.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut out = Vec::new();
    for root in 0..n {
        if done[root] || index[root] != usize::MAX {
            continue;
        }
        let mut call: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(top) = call.last_mut() {
            let v = top.0;
            if let Some(&w) = adj[v].get(top.1) {
                top.1 += 1;
                if done[w] {
                    continue;
                }
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    call.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            call.pop();
            if let Some(&(parent, _)) = call.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut comp = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort_unstable();
                    out.push(comp);
                }
            }
        }
    }
    out.sort();
    out
}

/// The shortest cycle through the smallest member of a component, as `a, b, ..., a`.
fn shortest_cycle(adj: &[Vec<usize>], scc: &[usize]) -> Vec<usize> {
    let start = scc[0];
    let inside = |v: usize| scc.binary_search(&v).is_ok();
    let mut parent: HashMap<usize, usize> = HashMap::default();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &adj[v] {
            if !inside(w) {
                continue;
            }
            if w == start {
                let mut path = vec![start];
                let mut cur = v;
                while cur != start {
                    path.push(cur);
                    cur = parent[&cur];
                }
                path.push(start);
                let last = path.len() - 1;
                path[1..last].reverse();
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = parent.entry(w) {
                slot.insert(v);
                queue.push_back(w);
            }
        }
    }
    // Unreachable for a real component; show its members rather than nothing.
    let mut path = scc.to_vec();
    path.push(start);
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::testutil::{Fixture, render};

    #[test]
    fn a_plan_can_be_shared_by_node_workers() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Plan>();
    }

    fn plan(f: &Fixture) -> Result<Plan, String> {
        let bundles: Vec<&str> = f.repo.bundles.keys().map(String::as_str).collect();
        let node = f.node("n1", &bundles, serde_json::json!({}));
        let items = crate::items::load_node_items(&f.repo, &node).map_err(|d| render(&d))?;
        Plan::build(&node, items).map_err(|d| render(&d))
    }

    fn ok(toml: &str) -> Plan {
        plan(&Fixture::new().toml("b", toml)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(toml: &str) -> String {
        match plan(&Fixture::new().toml("b", toml)) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    impl Plan {
        fn ids(&self, v: &[usize]) -> Vec<&str> {
            v.iter().map(|&i| self.items[i].id.as_str()).collect()
        }
        fn of(&self, id: &str) -> usize {
            self.index[id]
        }
    }

    fn action(name: &str, extra: &str) -> String {
        format!("[actions.{name}]\ncommand = \"true\"\n{extra}\n")
    }

    #[test]
    fn needs_and_needed_by_are_hard_edges() {
        let p = ok(&[
            action("a", "needs = [\"action:b\"]"),
            action("b", ""),
            action("c", "needed_by = [\"action:a\"]"),
        ]
        .concat());
        assert_eq!(p.ids(&p.needs[p.of("action:a")]), ["action:b", "action:c"]);
        assert_eq!(
            p.ids(p.blockers(p.of("action:a"))),
            ["action:b", "action:c"]
        );
        assert_eq!(p.ids(&p.needed_by[p.of("action:b")]), ["action:a"]);
        assert!(p.order.iter().all(Vec::is_empty));
    }

    #[test]
    fn after_and_before_only_order() {
        let p = ok(&[
            action("a", "after = [\"action:b\"]"),
            action("b", ""),
            action("c", "before = [\"action:a\"]"),
        ]
        .concat());
        assert_eq!(p.ids(&p.order[p.of("action:a")]), ["action:b", "action:c"]);
        assert!(p.needs.iter().all(Vec::is_empty));
        assert!(p.needed_by.iter().all(Vec::is_empty));
        assert_eq!(p.ids(&p.dependents[p.of("action:b")]), ["action:a"]);
    }

    #[test]
    fn group_selectors_resolve_without_the_item_itself() {
        let f = Fixture::new()
            .toml(
                "base",
                &[
                    action("a", "needs = [\"bundle:base\"]"),
                    action("b", "tags = [\"t\"]\nafter = [\"tag:t\"]"),
                    action("c", "needs = [\"pkg_apt:\"]"),
                    action("d", "tags = [\"t\"]"),
                ]
                .concat(),
            )
            .toml(
                "web",
                "[pkg_apt.nginx]\nafter = [\"pkg_apt:\", \"tag:nothing\"]\n[pkg_apt.curl]\n",
            );
        let p = plan(&f).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.ids(&p.needs[p.of("action:a")]),
            ["action:b", "action:c", "action:d"]
        );
        assert_eq!(p.ids(&p.order[p.of("action:b")]), ["action:d"]);
        assert_eq!(
            p.ids(&p.needs[p.of("action:c")]),
            ["pkg_apt:curl", "pkg_apt:nginx"]
        );
        assert_eq!(p.ids(&p.order[p.of("pkg_apt:nginx")]), ["pkg_apt:curl"]);
    }

    #[test]
    fn triggers_fire_triggered_items_which_run_after_their_triggerers() {
        let p = ok(&[
            "[files.\"/etc/x\"]\ncontent = \"x\"\ntriggers = [\"action:restart\"]\n".to_string(),
            action("restart", "triggered = true"),
            action(
                "reload",
                "triggered = true\ntriggered_by = [\"file:/etc/x\"]",
            ),
        ]
        .concat());
        let x = p.of("file:/etc/x");
        assert_eq!(p.ids(&p.triggers[x]), ["action:reload", "action:restart"]);
        assert_eq!(p.ids(&p.order[p.of("action:restart")]), ["file:/etc/x"]);
        assert_eq!(p.ids(&p.order[p.of("action:reload")]), ["file:/etc/x"]);
        assert_eq!(
            p.ids(&p.triggered_by[p.of("action:restart")]),
            ["file:/etc/x"]
        );
        assert!(!p.cascade_skip[p.of("action:restart")]);
        assert!(p.cascade_skip[x]);
    }

    #[test]
    fn triggering_mistakes_are_errors() {
        let e = err(&[action("a", "triggers = [\"action:b\"]"), action("b", "")].concat());
        assert!(
            e.contains("action:a triggers action:b, which is not triggered"),
            "{e}"
        );
        assert!(e.contains("add triggered = true to action:b"), "{e}");
        let e = err(&action("a", "triggered = true\ntriggers = [\"action:a\"]"));
        assert!(e.contains("action:a cannot trigger itself"), "{e}");
        let e = err(&[
            action("a", "triggered_by = [\"action:b\"]"),
            action("b", ""),
        ]
        .concat());
        assert!(
            e.contains("action:a has triggered_by but is not triggered"),
            "{e}"
        );
    }

    #[test]
    fn precedes_and_preceded_by_put_the_triggered_item_first() {
        let p = ok(&[
            action("stop", "triggered = true\nprecedes = [\"action:upgrade\"]"),
            action("upgrade", ""),
            action("backup", "triggered = true"),
            action("migrate", "preceded_by = [\"action:backup\"]"),
        ]
        .concat());
        assert_eq!(p.ids(&p.precedes[p.of("action:stop")]), ["action:upgrade"]);
        assert_eq!(p.ids(&p.order[p.of("action:upgrade")]), ["action:stop"]);
        assert_eq!(
            p.ids(&p.precedes[p.of("action:backup")]),
            ["action:migrate"]
        );
        assert_eq!(p.ids(&p.order[p.of("action:migrate")]), ["action:backup"]);
        let e = err(&[action("a", "preceded_by = [\"action:b\"]"), action("b", "")].concat());
        assert!(
            e.contains("action:a is preceded_by action:b, which is not triggered"),
            "{e}"
        );
        let e = err(&[action("a", "precedes = [\"action:b\"]"), action("b", "")].concat());
        assert!(
            e.contains("action:a precedes other items but is not triggered"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_dependency_names_item_bundle_node_and_id() {
        let e = err(&action(
            "a",
            "needs = [\"action:restrat\"]\n[actions.restart]\ncommand = \"true\"",
        ));
        assert!(
            e.contains("action:a in bundle 'b' on node 'n1' has a dependency (needs) on 'action:restrat', which doesn't exist"),
            "{e}"
        );
        assert!(e.contains("did you mean 'action:restart'?"), "{e}");
        // The `needs = ...` value (line 3), not the item header (line 1).
        assert!(e.contains("items.toml:3:9"), "{e}");
    }

    #[test]
    fn self_dependency_is_an_error() {
        let e = err(&action("a", "after = [\"action:a\"]"));
        assert!(e.contains("action:a cannot depend on itself (after"), "{e}");
    }

    #[test]
    fn loops_print_the_whole_cycle() {
        let e = err(&[
            action("a", "needs = [\"action:b\"]"),
            action("b", "after = [\"action:c\"]"),
            action("c", "needs = [\"action:a\"]"),
            action("d", "needs = [\"action:a\"]"),
        ]
        .concat());
        assert!(
            e.contains(
                "dependency loop on node 'n1': action:a -> action:b -> action:c -> action:a"
            ),
            "{e}"
        );
        assert_eq!(e.matches("dependency loop").count(), 1, "{e}");
        // Two separate loops are both reported.
        let e = err(&[
            action("a", "needs = [\"action:b\"]"),
            action("b", "needs = [\"action:a\"]"),
            action("x", "before = [\"action:y\"]"),
            action("y", "before = [\"action:x\"]"),
        ]
        .concat());
        assert!(e.contains("action:a -> action:b -> action:a"), "{e}");
        assert!(e.contains("action:x -> action:y -> action:x"), "{e}");
    }

    #[test]
    fn loops_through_triggers_are_found() {
        let e = err(&[
            action("a", "triggers = [\"action:b\"]\nneeds = [\"action:b\"]"),
            action("b", "triggered = true"),
        ]
        .concat());
        assert!(e.contains("action:a -> action:b -> action:a"), "{e}");
    }

    #[test]
    fn topological_order_is_deterministic_lowest_id_first() {
        let p = ok(&[
            action("z", ""),
            action("y", "needs = [\"action:z\"]"),
            action("a", "after = [\"action:y\"]"),
            action("m", ""),
        ]
        .concat());
        let order = p.ids(&p.topo_order()).join(" ");
        assert_eq!(order, "action:m action:z action:y action:a");
        for _ in 0..5 {
            assert_eq!(p.ids(&p.topo_order()).join(" "), order);
        }
    }

    #[test]
    fn paths_need_their_managed_parents_and_owners() {
        let p = ok(r#"
[directories."/srv"]
[directories."/srv/app"]
owner = "app"
group = "app"
[symlinks."/srv/current"]
target = "/srv/app"
[files."/srv/current/x"]
content = ""
owner = "root"
[files."/srv/app/deep/er/file"]
content = ""
[users.app]
gid = "app"
groups = ["www", "unmanaged"]
[groups.app]
[groups.www]
"#);
        assert_eq!(
            p.ids(&p.needs[p.of("directory:/srv/app")]),
            ["directory:/srv", "group:app", "user:app"]
        );
        assert_eq!(
            p.ids(&p.needs[p.of("file:/srv/current/x")]),
            ["directory:/srv", "symlink:/srv/current"]
        );
        assert_eq!(
            p.ids(&p.needs[p.of("file:/srv/app/deep/er/file")]),
            ["directory:/srv", "directory:/srv/app"]
        );
        assert_eq!(
            p.ids(&p.needs[p.of("user:app")]),
            ["group:app", "group:www"]
        );
        let order = p.ids(&p.topo_order());
        let pos = |id: &str| order.iter().position(|x| *x == id).unwrap();
        assert!(pos("group:app") < pos("user:app"));
        assert!(pos("user:app") < pos("directory:/srv/app"));
        assert!(pos("directory:/srv/app") < pos("file:/srv/app/deep/er/file"));
    }

    #[test]
    fn a_file_cannot_be_a_parent_and_owners_cannot_be_deleted() {
        let e = err("[files.\"/a\"]\ncontent = \"\"\n[files.\"/a/b\"]\ncontent = \"\"\n");
        assert!(
            e.contains("file:/a/b is inside file:/a, but a file cannot contain other paths"),
            "{e}"
        );
        let e =
            err("[files.\"/a\"]\ncontent = \"\"\nowner = \"bob\"\n[users.bob]\ndelete = true\n");
        assert!(
            e.contains("file:/a is owned by user:bob, which has delete = true"),
            "{e}"
        );
    }

    #[test]
    fn cascade_skip_defaults_and_overrides() {
        let p = ok(&[
            action("plain", ""),
            action("skipped", "skip = true"),
            action("guarded", "unless = \"true\""),
            action("forced", "unless = \"true\"\ncascade_skip = true"),
            action("off", "cascade_skip = false"),
        ]
        .concat());
        let cs = |id: &str| p.cascade_skip[p.of(id)];
        assert!(cs("action:plain"));
        assert!(!cs("action:skipped"));
        assert!(!cs("action:guarded"));
        assert!(cs("action:forced"));
        assert!(!cs("action:off"));
    }

    #[test]
    fn generated_items_join_before_resolution() {
        let f = Fixture::new().toml(
            "b",
            "[svc_systemd.nginx]\n[files.\"/etc/nginx.conf\"]\ncontent = \"\"\ntriggers = [\"svc_systemd:nginx:restart\"]\n",
        );
        let node = f.node("n1", &["b"], serde_json::json!({}));
        let items = crate::items::load_node_items(&f.repo, &node).unwrap();
        assert!(Plan::build_with(&node, items.clone(), &|_, _| Vec::new()).is_err());
        // `build` brings the canned actions of svc_systemd itself.
        assert!(Plan::build(&node, items.clone()).is_ok());
        let restart = |_: &Node, item: &Item| -> Vec<Item> {
            if !matches!(item.kind, ItemKind::SvcSystemd(_)) {
                return Vec::new();
            }
            let mut r = item.clone();
            r.id = format!("{}:restart", item.id);
            r.name = format!("{}:restart", item.name);
            r.kind = ItemKind::Action(crate::items::ActionAttrs {
                command: format!("systemctl restart {}", item.name),
                expected_return_code: vec![0],
                expected_stdout: None,
                expected_stderr: None,
                data_stdin: None,
                interactive: None,
            });
            r.deps = crate::items::Deps {
                triggered: true,
                needs: vec![item.id.clone()],
                ..Default::default()
            };
            vec![r]
        };
        let p =
            Plan::build_with(&node, items, &restart).unwrap_or_else(|d| panic!("{}", render(&d)));
        let r = p.of("svc_systemd:nginx:restart");
        assert_eq!(p.ids(&p.needs[r]), ["svc_systemd:nginx"]);
        assert_eq!(p.ids(&p.triggered_by[r]), ["file:/etc/nginx.conf"]);
    }

    #[test]
    fn needs_closure_keeps_what_selected_items_need() {
        let p = ok(&[
            action("a", "needs = [\"action:b\"]"),
            action("b", "needs = [\"action:c\"]"),
            action("c", ""),
            action("d", ""),
        ]
        .concat());
        let keep = p.needs_closure([p.of("action:a")]);
        let kept: Vec<usize> = (0..keep.len()).filter(|&i| keep[i]).collect();
        assert_eq!(p.ids(&kept), ["action:a", "action:b", "action:c"]);
    }

    #[test]
    #[allow(clippy::print_stderr)] // the timing is worth seeing with --nocapture
    fn thousand_nodes_of_fifty_items_plan_quickly() {
        let mut toml = String::from("[directories.\"/srv\"]\n");
        for i in 0..49 {
            toml.push_str(&format!(
                "[files.\"/srv/f{i}\"]\ntags = [\"t{}\"]\n",
                i / 10
            ));
            // A fifth of the files are templates, as in a typical repo.
            if i % 5 == 0 {
                toml.push_str("content_type = \"jinja2\"\nsource = \"t.j2\"\n");
            } else {
                toml.push_str(&format!("content = \"{i}\"\n"));
            }
            if i >= 10 {
                toml.push_str(&format!("after = [\"tag:t{}\"]\n", i / 10 - 1));
            }
            if i % 10 > 0 {
                toml.push_str(&format!("needs = [\"file:/srv/f{}\"]\n", i - 1));
            }
        }
        let f = Fixture::new().toml("b", &toml).source(
            "b",
            "t.j2",
            "{% for k in metadata.keys %}{{ k }} {{ node.name }}\n{% endfor %}",
        );
        let node = f.node("n1", &["b"], serde_json::json!({"keys": ["a", "b", "c"]}));
        let started = std::time::Instant::now();
        for _ in 0..1000 {
            let items = crate::items::load_node_items(&f.repo, &node).unwrap();
            let p = Plan::build(&node, items).unwrap_or_else(|d| panic!("{}", render(&d)));
            assert_eq!(p.topo_order().len(), 50);
        }
        let planned = started.elapsed();
        let items = crate::items::load_node_items(&f.repo, &node).unwrap();
        for _ in 0..1000 {
            assert!(crate::items::render::render_all(&f.repo, &node, &items).is_empty());
        }
        let took = started.elapsed();
        eprintln!("1000 nodes x 50 items: plans {planned:?}, plans + rendering {took:?}");
        // Debug build on a shared 2-core machine; release is several times faster.
        assert!(took.as_secs_f64() < 10.0, "{took:?}");
    }
}
