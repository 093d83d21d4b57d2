//! The dependency graph of one node's items: pure, so `cinch test` and `cinch items` use it
//! without a network.
//!
//! Semantics follow BundleWrap (reference/bundlewrap.md 3.1-3.3): `needs` is a hard edge
//! (a failed or skipped dependency skips its dependents when it cascades), `after`/`before`
//! only order, a triggered item runs after every item that can trigger it, and a triggered
//! item that `precedes` X runs before X, only when X is about to change.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
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
            by_id: HashMap::with_capacity(items.len()),
            by_type: HashMap::new(),
            by_bundle: HashMap::new(),
            by_tag: HashMap::new(),
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
    /// Resolves every dependency of a node's items and checks the graph has no loops.
    pub fn build(node: &Node, items: Vec<Item>) -> Result<Plan, Vec<Diagnostic>> {
        Plan::build_with(node, items, &|_, _| Vec::new())
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
        let dups = crate::items::parse::duplicates(&items, &node.name);
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
        let err = |msg: String| Diagnostic::at(item.location.clone(), msg);
        if item.deps.triggered && !item.deps.preceded_by.is_empty() {
            diags.push(err(format!(
                "{} is triggered, so it cannot be preceded_by other items",
                item.id
            )));
        }
        if !item.deps.triggered_by.is_empty() && !item.deps.triggered {
            diags.push(
                err(format!("{} has triggered_by but is not triggered", item.id))
                    .with_hint("add triggered = true, or use needs/after"),
            );
        }
        if !item.deps.precedes.is_empty() && !item.deps.triggered {
            diags.push(
                err(format!(
                    "{} precedes other items but is not triggered",
                    item.id
                ))
                .with_hint("add triggered = true, or use before"),
            );
        }
        for kind in Kind::ALL {
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
    let mut parent: HashMap<usize, usize> = HashMap::new();
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
