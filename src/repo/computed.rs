//! Computed metadata: reactors in `bundles/NAME/metadata.rhai` run until nothing they return
//! changes, per node, on demand, memoised and shared by every thread. A reactor that reads
//! another node's metadata pulls that node into the same computation, so nodes that read
//! each other settle together (as in BundleWrap); values that never settle, keys that never
//! appear and sandbox stops are errors of the node, naming reactor, file, line and key.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use foldhash::HashMap as FastMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rhai::{AST, Dynamic, Engine, EvalAltResult, NativeCallContext, Position};
use serde_json::Value;

use crate::diag::{Diagnostic, Location};
use crate::repo::metadata::{self, Layer, Source};
use crate::repo::toml_file::SpanMap;
use crate::repo::{Node, Repo};

/// Most passes over a computation's reactors before their outputs count as oscillating.
pub const MAX_PASSES: usize = 100;

/// The error text `need()` raises, followed by the missing key.
const NEED_MARK: &str = "\u{1e}cinch-need:";

/// One layer of static metadata (a bundle's defaults, a group's or a node's own), shared.
#[derive(Debug, Clone)]
pub(crate) struct StaticLayer {
    pub value: Arc<Value>,
    pub spans: Arc<SpanMap>,
}

/// What the loader hands over about one node's static layers, lowest precedence first.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeLayers {
    /// Bundle names, sorted; their defaults are the lowest layers.
    pub bundles: Vec<(String, StaticLayer)>,
    /// Groups with supergroups before subgroups.
    pub groups: Vec<(String, StaticLayer)>,
    pub own: Option<StaticLayer>,
}

/// A reactor: one public function of a bundle's metadata.rhai.
#[derive(Debug, Clone)]
pub struct Reactor {
    pub bundle: String,
    pub name: String,
    pub file: PathBuf,
    pub line: usize,
}

impl Reactor {
    /// "reactor 'hosts' of bundle 'base' (bundles/base/metadata.rhai:3)".
    fn describe(&self) -> String {
        format!(
            "reactor '{}' of bundle '{}' ({}:{})",
            self.name,
            self.bundle,
            self.file.display(),
            self.line
        )
    }

    fn location(&self) -> Location {
        Location {
            file: self.file.clone(),
            line: self.line,
            column: 0,
        }
    }
}

/// A bundle's compiled metadata.rhai.
struct BundleReactors {
    ast: AST,
    reactors: Vec<Reactor>,
}

/// The computed metadata of one node, and what each of its reactors returned at the end.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub result: Result<Arc<Value>, Vec<Diagnostic>>,
    /// Each reactor with its last output (`None` when it never returned one).
    pub outputs: Vec<(Reactor, Option<Value>)>,
}

impl Outcome {
    fn new(
        result: Result<Arc<Value>, Vec<Diagnostic>>,
        outputs: Vec<(Reactor, Option<Value>)>,
    ) -> Outcome {
        Outcome { result, outputs }
    }
}

/// Everything needed to compute any node's metadata, shared by all nodes of a repo.
pub struct Fleet {
    /// The repo as loaded, with static metadata only: for `nodes()` and node attributes.
    repo: Repo,
    layers: FastMap<String, NodeLayers>,
    engine: Engine,
    reactors: HashMap<String, OnceLock<Result<Arc<BundleReactors>, Diagnostic>>>,
    cells: FastMap<String, OnceLock<Arc<Outcome>>>,
    /// The same computed with reactors in the opposite order (`cinch test`), so a group of
    /// nodes that read each other is recomputed once, not once per node.
    reversed_cells: FastMap<String, OnceLock<Arc<Outcome>>>,
    /// Each node as scripts see it (attributes, no metadata).
    summaries: FastMap<String, Dynamic>,
    /// Each node's name, shared by every read of its metadata that a reactor records.
    names: FastMap<String, Arc<str>>,
    /// What `nodes(selector)` returned for each selector so far: the repo does not change,
    /// and a reactor in every node of a group selects the same group again and again.
    selections: std::sync::Mutex<HashMap<String, Arc<rhai::Array>>>,
    /// Nodes (and direction: reversed or not) some thread is computing right now, with that
    /// thread: another thread asking for one of them waits for the result instead of
    /// computing the same group of nodes a second time.
    busy: std::sync::Mutex<HashMap<(bool, String), std::thread::ThreadId>>,
    /// Signalled whenever a thread finishes a computation and gives up its nodes.
    finished: std::sync::Condvar,
    /// How many computations (sessions) ran, for tests of the scheduling.
    #[cfg(test)]
    sessions: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fleet({} nodes)", self.cells.len())
    }
}

impl Fleet {
    /// A fleet over `repo` (whose nodes carry static metadata) and each node's layers.
    pub(crate) fn new(repo: Repo, layers: HashMap<String, NodeLayers>) -> Fleet {
        let mut engine = crate::repo::rhai_engine::engine(&repo.sandbox());
        register(&mut engine);
        let reactors = repo
            .bundles
            .keys()
            .map(|b| (b.clone(), OnceLock::new()))
            .collect();
        let cells: FastMap<String, OnceLock<Arc<Outcome>>> = repo
            .nodes
            .keys()
            .map(|n| (n.clone(), OnceLock::new()))
            .collect();
        let reversed_cells = cells.keys().map(|n| (n.clone(), OnceLock::new())).collect();
        let summaries = repo
            .nodes
            .values()
            .map(|n| (n.name.clone(), summary_dynamic(n)))
            .collect();
        let names = repo
            .nodes
            .keys()
            .map(|n| (n.clone(), Arc::from(n.as_str())))
            .collect();
        Fleet {
            repo,
            names,
            layers: layers.into_iter().collect(),
            engine,
            reactors,
            cells,
            reversed_cells,
            summaries,
            selections: Default::default(),
            busy: Default::default(),
            finished: std::sync::Condvar::new(),
            #[cfg(test)]
            sessions: Default::default(),
        }
    }

    /// `name` as an `Arc<str>`, shared when it names a node of the repo.
    fn name_of(&self, name: &str) -> Arc<str> {
        self.names
            .get(name)
            .cloned()
            .unwrap_or_else(|| Arc::from(name))
    }

    fn cells(&self, reversed: bool) -> &FastMap<String, OnceLock<Arc<Outcome>>> {
        if reversed {
            &self.reversed_cells
        } else {
            &self.cells
        }
    }

    /// `name`'s computed metadata (see [`Fleet::outcome`]).
    pub fn metadata(self: &Arc<Self>, name: &str) -> Result<Arc<Value>, Vec<Diagnostic>> {
        self.outcome(name).result.clone()
    }

    /// `name`'s computed metadata and reactor outputs, computed on first use.
    pub fn outcome(self: &Arc<Self>, name: &str) -> Arc<Outcome> {
        self.memoised(name, false)
    }

    fn memoised(self: &Arc<Self>, name: &str, reversed: bool) -> Arc<Outcome> {
        let cells = self.cells(reversed);
        let Some(cell) = cells.get(name) else {
            return Arc::new(Outcome::new(
                Err(vec![Diagnostic::new(format!("no node named '{name}'"))]),
                Vec::new(),
            ));
        };
        if let Some(done) = cell.get() {
            return done.clone();
        }
        if let Some(done) = self.wait_for_other_thread(name, reversed, cell) {
            return done;
        }
        {
            // Released when done (also if a script panics), after the results are in place.
            let _claims = Claims {
                fleet: self,
                reversed,
            };
            self.claim(name, reversed);
            for (node, outcome) in self.compute(name, reversed) {
                if let Some(c) = cells.get(&node) {
                    // Another thread may have finished first: its result is the one everyone sees.
                    let _ = c.set(Arc::new(outcome));
                }
            }
        }
        cell.get().cloned().unwrap_or_else(|| {
            Arc::new(Outcome::new(
                Err(vec![Diagnostic::new(format!(
                    "metadata of node '{name}' could not be computed"
                ))]),
                Vec::new(),
            ))
        })
    }

    /// Marks `name` as being computed by this thread, unless another thread already is.
    fn claim(&self, name: &str, reversed: bool) {
        if let Ok(mut busy) = self.busy.lock() {
            busy.entry((reversed, name.to_string()))
                .or_insert_with(|| std::thread::current().id());
        }
    }

    /// When another thread is computing `name`, waits for its result. Only a thread that is
    /// not computing anything itself waits (it holds no nodes another thread could wait for),
    /// so threads can never wait for each other in a circle. A rayon worker does other queued
    /// work meanwhile (another node, the second run of `cinch test`) instead of idling: that
    /// work may wait in turn, but never while holding nodes, so the rule above still holds.
    fn wait_for_other_thread(
        &self,
        name: &str,
        reversed: bool,
        cell: &OnceLock<Arc<Outcome>>,
    ) -> Option<Arc<Outcome>> {
        let computing = FRAMES.with(|f| f.borrow().iter().any(|fr| fr.session.is_some()));
        if computing {
            return None;
        }
        let me = std::thread::current().id();
        let key = (reversed, name.to_string());
        let mut busy = self.busy.lock().ok()?;
        while busy.get(&key).is_some_and(|owner| *owner != me) {
            if let Some(done) = cell.get() {
                return Some(done.clone());
            }
            drop(busy);
            let ran_other_work = matches!(rayon::yield_now(), Some(rayon::Yield::Executed));
            busy = self.busy.lock().ok()?;
            if !ran_other_work && busy.get(&key).is_some_and(|owner| *owner != me) {
                // Nothing else to do: sleep until a computation ends, looking for new work
                // now and then (a worker's queue can fill while this one sleeps).
                busy = self
                    .finished
                    .wait_timeout(busy, std::time::Duration::from_millis(2))
                    .ok()?
                    .0;
            }
        }
        let done = cell.get().cloned();
        if done.is_none() {
            // Claimed under the same lock that found it free: two threads cannot both start.
            busy.entry(key).or_insert(me);
        }
        done
    }

    /// Whether `name`'s metadata is already computed and failed (a runaway reactor, a missing
    /// key): `cinch test` then has no use for a second run of its reactors.
    pub fn known_to_fail(&self, name: &str) -> bool {
        self.cells
            .get(name)
            .and_then(|c| c.get())
            .is_some_and(|o| o.result.is_err())
    }

    /// Computes `name`'s metadata again from scratch, ignoring what is memoised and running
    /// reactors in the opposite order, for `cinch test`'s check that reactors are
    /// deterministic and independent of their order.
    pub fn recompute_reversed(self: &Arc<Self>, name: &str) -> Arc<Outcome> {
        self.memoised(name, true)
    }

    /// Which layer set each value of `name`'s metadata, by dotted path: e.g.
    /// `nginx.port` → `["group 'web' (groups.toml:4)"]`.
    pub fn blame(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<BTreeMap<String, Vec<String>>, Vec<Diagnostic>> {
        let outcome = self.outcome(name);
        let value = outcome.result.clone()?;
        let layers = self.layers.get(name).cloned().unwrap_or_default();
        let outputs: Vec<(Reactor, Value)> = outcome
            .outputs
            .iter()
            .filter_map(|(r, v)| v.clone().map(|v| (r.clone(), v)))
            .collect();
        let empty = SpanMap::default();
        let refs: Vec<(&Reactor, &Value)> = outputs.iter().map(|(r, v)| (r, v)).collect();
        let stack = build_layers(name, &layers, &refs, &empty);
        let (_, _, owners) = metadata::merge_traced(&stack, overrides(&self.repo));
        let mut out = BTreeMap::new();
        let mut leaves = Vec::new();
        collect_leaves(&value, &mut Vec::new(), &mut leaves);
        for path in leaves {
            let owner = (0..=path.len())
                .rev()
                .find_map(|n| owners.get(&path[..n]))
                .cloned()
                .unwrap_or_default();
            let labels = owner
                .iter()
                .map(|&i| {
                    let layer = &stack[i];
                    match layer.source {
                        Source::Reactor(b, r) => outputs
                            .iter()
                            .find(|(x, _)| x.bundle == b && x.name == r)
                            .map(|(x, _)| {
                                format!("reactor '{r}' of bundle '{b}' ({})", x.location())
                            })
                            .unwrap_or_else(|| layer.source.to_string()),
                        _ => match layer.spans.find(&path) {
                            Some(loc) => format!("{} ({loc})", layer.source),
                            None => layer.source.to_string(),
                        },
                    }
                })
                .collect();
            out.insert(path.join("."), labels);
        }
        Ok(out)
    }

    /// Every reactor of the bundles `name` has, in the order they run.
    pub fn reactors_of(&self, name: &str) -> Result<Vec<Reactor>, Diagnostic> {
        let Some(node) = self.repo.nodes.get(name) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for b in &node.bundles {
            out.extend(self.bundle_reactors(b)?.reactors.iter().cloned());
        }
        Ok(out)
    }

    fn bundle_reactors(&self, bundle: &str) -> Result<Arc<BundleReactors>, Diagnostic> {
        let Some(cell) = self.reactors.get(bundle) else {
            return Ok(Arc::new(BundleReactors {
                ast: AST::empty(),
                reactors: Vec::new(),
            }));
        };
        cell.get_or_init(|| self.compile(bundle)).clone()
    }

    /// Compiles `bundles/BUNDLE/metadata.rhai`: every function not starting with `_` (and not
    /// `private`) is a reactor taking `(node, metadata)`.
    fn compile(&self, bundle: &str) -> Result<Arc<BundleReactors>, Diagnostic> {
        let empty = || {
            Ok(Arc::new(BundleReactors {
                ast: AST::empty(),
                reactors: Vec::new(),
            }))
        };
        let Some(b) = self.repo.bundles.get(bundle) else {
            return empty();
        };
        let path = b.dir.join("metadata.rhai");
        let text = match crate::repo::read_text(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return empty(),
            Err(e) => {
                return Err(Diagnostic::at(
                    Location::file(&path),
                    format!("cannot read metadata.rhai: {e}"),
                )
                .as_root_cause());
            }
        };
        let ast = self.engine.compile(&text).map_err(|e| {
            Diagnostic::at(
                position_location(&path, e.position()),
                format!("metadata.rhai does not compile: {}", e.err_type()),
            )
            .as_root_cause()
        })?;
        let mut reactors = Vec::new();
        for f in ast.iter_functions() {
            if f.name.starts_with('_') || f.access == rhai::FnAccess::Private {
                continue;
            }
            let line = fn_line(&text, f.name);
            if f.params.len() != 2 {
                return Err(Diagnostic::at(
                    Location {
                        file: path.clone(),
                        line,
                        column: 0,
                    },
                    format!(
                        "reactor '{}' takes {} parameter(s), but reactors are called as {}(node, metadata)",
                        f.name,
                        f.params.len(),
                        f.name
                    ),
                )
                .with_hint("name helper functions with a leading `_` (or make them `private`)")
                .as_root_cause());
            }
            reactors.push(Reactor {
                bundle: bundle.to_string(),
                name: f.name.to_string(),
                file: path.clone(),
                line,
            });
        }
        reactors.sort_by_key(|r| r.line);
        Ok(Arc::new(BundleReactors { ast, reactors }))
    }

    /// A fresh node state: static layers merged, reactors not run yet.
    fn new_state(&self, name: &str) -> NodeState {
        let mut state = NodeState {
            reactors: Vec::new(),
            outputs: Vec::new(),
            failures: Vec::new(),
            changes: Vec::new(),
            deps: Vec::new(),
            fatal: Vec::new(),
            merged: Arc::new(Value::Object(Default::default())),
            version: 0,
            touched: FastMap::default(),
        };
        if let Some(node) = self.repo.nodes.get(name) {
            for b in &node.bundles {
                match self.bundle_reactors(b) {
                    Ok(br) => {
                        for i in 0..br.reactors.len() {
                            state.reactors.push((br.clone(), i));
                        }
                    }
                    Err(d) => state.fatal.push(d),
                }
            }
            state.merged = Arc::new(node.static_metadata.clone());
        }
        let n = state.reactors.len();
        state.outputs = vec![None; n];
        state.failures = vec![None; n];
        state.changes = vec![0; n];
        state.deps = vec![None; n];
        state
    }

    /// Runs the reactors of `name` and of every node they read until nothing changes.
    fn compute(self: &Arc<Self>, name: &str, reversed: bool) -> Vec<(String, Outcome)> {
        #[cfg(test)]
        self.sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut session = Session {
            reversed,
            order: vec![name.to_string()],
            states: FastMap::default(),
            reads: BTreeMap::new(),
            current: None,
            current_reads: Default::default(),
            current_deps: Vec::new(),
            oscillated: false,
        };
        session
            .states
            .insert(name.to_string(), self.new_state(name));
        let frame = Frame {
            fleet: self.clone(),
            session: Some(session),
        };
        let popped = {
            let _frame = FrameGuard::push(frame);
            self.run_passes();
            FRAMES.with(|f| f.borrow_mut().last_mut().and_then(|fr| fr.session.take()))
        };
        match popped {
            Some(session) => self.finish(session),
            None => Vec::new(),
        }
    }

    /// The fixed-point loop over the session on top of this thread's frame stack.
    fn run_passes(self: &Arc<Self>) {
        for _ in 0..MAX_PASSES {
            let mut order = with_session(|s| s.order.clone()).unwrap_or_default();
            let reversed = with_session(|s| s.reversed).unwrap_or(false);
            if reversed {
                order.reverse();
            }
            let mut ran = false;
            let mut changed = false;
            for node in &order {
                let count = with_session(|s| s.states.get(node).map_or(0, |st| st.reactors.len()))
                    .unwrap_or(0);
                let mut indexes: Vec<usize> = (0..count).collect();
                if reversed {
                    indexes.reverse();
                }
                for i in indexes {
                    match self.run_one(node, i) {
                        RunResult::UpToDate => {}
                        RunResult::Same => ran = true,
                        RunResult::Changed => {
                            ran = true;
                            changed = true;
                        }
                    }
                }
            }
            let grew = with_session(|s| s.order.len()).unwrap_or(0) > order.len();
            if !ran && !changed && !grew {
                return;
            }
        }
        with_session(|s| s.oscillated = true);
    }

    /// Runs reactor `i` of `node` unless nothing it read changed since its last run.
    fn run_one(self: &Arc<Self>, node: &str, i: usize) -> RunResult {
        let prepared = with_session(|s| {
            let st = s.states.get(node)?;
            if !st.fatal.is_empty() {
                return None;
            }
            if let Some(deps) = &st.deps[i]
                && deps.iter().all(|d| s.dep_holds(self, node, i, d))
            {
                return None;
            }
            let (br, idx) = st.reactors[i].clone();
            let input = if st.outputs[i].is_some() {
                // A reactor never sees its own previous output, or it could keep a value
                // alive that nothing else sets any more.
                NodeMeta::dynamic_of(Arc::new(s.merge_without(self, node, i)), self.name_of(node))
            } else {
                NodeMeta::of_state(st, self.name_of(node))
            };
            s.current = Some(node.to_string());
            s.current_reads.clear();
            s.current_deps.clear();
            Some((br, idx, input))
        })
        .flatten();
        let Some((br, idx, input)) = prepared else {
            return RunResult::UpToDate;
        };
        let reactor = &br.reactors[idx];
        let node_dyn = self.summaries.get(node).cloned().unwrap_or(Dynamic::UNIT);
        let result = {
            let _budget = crate::budget::Guard::new(crate::budget::Stop::OnAnyInterrupt);
            let mut scope = rhai::Scope::new();
            self.engine
                .call_fn::<Dynamic>(&mut scope, &br.ast, &reactor.name, (node_dyn, input))
        };
        let outcome = interpret(reactor, result);
        with_session(|s| {
            let reads = std::mem::take(&mut s.current_reads);
            let deps = std::mem::take(&mut s.current_deps);
            s.current = None;
            match s.reads.get_mut(node) {
                Some(set) => set.extend(reads),
                None => {
                    s.reads
                        .insert(node.to_string(), reads.into_iter().collect());
                }
            }
            let Some(st) = s.states.get_mut(node) else {
                return RunResult::UpToDate;
            };
            st.deps[i] = Some(deps);
            match outcome {
                Interpreted::Output(v) => {
                    st.failures[i] = None;
                    if st.outputs[i].as_ref() == Some(&v) {
                        return RunResult::Same;
                    }
                    let old = st.outputs[i].replace(v);
                    st.changes[i] += 1;
                    s.remerge(self, node, i, old);
                    RunResult::Changed
                }
                Interpreted::Retry(f) => {
                    st.failures[i] = Some(f);
                    RunResult::Same
                }
                Interpreted::Fatal(d) => {
                    st.fatal.push(d);
                    RunResult::Same
                }
            }
        })
        .unwrap_or(RunResult::UpToDate)
    }

    /// Turns a finished session into one outcome per node in it.
    fn finish(&self, mut session: Session) -> Vec<(String, Outcome)> {
        let mut results: BTreeMap<String, Outcome> = BTreeMap::new();
        let order = std::mem::take(&mut session.order);
        for name in &order {
            // Each state is used up here: its outputs move into the outcome, not copied.
            let Some(mut st) = session.states.remove(name) else {
                continue;
            };
            let mut problems = st.fatal.clone();
            // Searching the reads for a cycle costs a walk over every node of the session, and
            // its only use is a note on an error: look only when there is one to annotate.
            let has_failure = st.failures.iter().any(Option::is_some);
            let cycle_note = if has_failure || session.oscillated {
                session
                    .cycle_from(name)
                    .map(|c| format!("; nodes whose reactors read each other: {}", c.join(" -> ")))
                    .unwrap_or_default()
            } else {
                String::new()
            };
            for (((br, i), failure), _) in st.reactors.iter().zip(&st.failures).zip(&st.outputs) {
                let r = &br.reactors[*i];
                match failure {
                    Some(Failure::Missing { key, line }) => problems.push(
                        Diagnostic::at(
                            Location {
                                file: r.file.clone(),
                                line: if *line > 0 { *line } else { r.line },
                                column: 0,
                            },
                            format!(
                                "{} needs metadata key `{key}`, which no layer or reactor provides{cycle_note}",
                                r.describe()
                            ),
                        )
                        .with_hint(format!(
                            "set `{key}` in a bundle's metadata.toml, a group or the node, or have a reactor return it"
                        )),
                    ),
                    Some(Failure::Error { message, line }) => problems.push(Diagnostic::at(
                        Location {
                            file: r.file.clone(),
                            line: if *line > 0 { *line } else { r.line },
                            column: 0,
                        },
                        format!("{} failed: {message}{cycle_note}", r.describe()),
                    )),
                    None => {}
                }
            }
            if session.oscillated {
                let busy: Vec<String> = st
                    .reactors
                    .iter()
                    .zip(&st.changes)
                    .filter(|(_, c)| **c as usize >= MAX_PASSES / 2)
                    .map(|((br, i), _)| br.reactors[*i].describe())
                    .collect();
                if !busy.is_empty() || problems.is_empty() {
                    let location = st
                        .reactors
                        .first()
                        .map(|(br, i)| br.reactors[*i].location());
                    let what = if busy.is_empty() {
                        "reactors of other nodes it reads".to_string()
                    } else {
                        busy.join(", ")
                    };
                    let msg = format!(
                        "metadata never settles: after {MAX_PASSES} passes these reactors still change each other's input: {what}{cycle_note}"
                    );
                    let d = match location {
                        Some(l) => Diagnostic::at(l, msg),
                        None => Diagnostic::new(msg),
                    };
                    problems.push(d.with_hint(
                        "a reactor must return the same map once its input stops changing; \
                         do not derive a value from the value itself",
                    ));
                }
            }
            if problems.is_empty() {
                problems.extend(self.conflicts(name, &st));
            }
            let result = if problems.is_empty() {
                Ok(st.merged.clone())
            } else {
                Err(problems)
            };
            let outputs: Vec<(Reactor, Option<Value>)> = st
                .reactors
                .iter()
                .zip(std::mem::take(&mut st.outputs))
                .map(|((br, i), o)| (br.reactors[*i].clone(), o))
                .collect();
            results.insert(name.clone(), Outcome::new(result, outputs));
        }
        // A node whose reactors read a broken node is broken too.
        loop {
            let mut newly = Vec::new();
            for (name, outcome) in &results {
                if outcome.result.is_err() {
                    continue;
                }
                if let Some(bad) = session.reads.get(name).and_then(|reads| {
                    reads.iter().find(|r| {
                        ***r != **name
                            && results.get(&***r).map_or_else(
                                || {
                                    self.cells(session.reversed)
                                        .get(&***r)
                                        .and_then(|c| c.get())
                                        .is_some_and(|o| o.result.is_err())
                                },
                                |o| o.result.is_err(),
                            )
                    })
                }) {
                    newly.push((name.clone(), bad.to_string()));
                }
            }
            if newly.is_empty() {
                break;
            }
            for (name, bad) in newly {
                if let Some(o) = results.get_mut(&name) {
                    o.result = Err(vec![
                        Diagnostic::new(format!(
                            "its reactors read the metadata of node '{bad}', which cannot be computed"
                        ))
                        .with_hint(format!("see `cinch metadata {bad}`")),
                    ]);
                }
            }
        }
        results.into_iter().collect()
    }

    /// Conflicts in the final merge that involve a reactor (static ones are found at load).
    fn conflicts(&self, name: &str, st: &NodeState) -> Vec<Diagnostic> {
        // Only two reactors can conflict (every other layer takes precedence over a reactor or
        // gives way to it), and only under a top-level key both return: without such a key
        // there is nothing to find, and merging every layer again to look costs a whole merge
        // per node. Debug builds still merge, to check the state merged in place and this rule.
        let shared_key = outputs_share_a_key(st);
        if !cfg!(debug_assertions) && !shared_key {
            return Vec::new();
        }
        let none = NodeLayers::default();
        let layers = self.layers.get(name).unwrap_or(&none);
        let outputs = Session::outputs_of(st, None);
        let empty = SpanMap::default();
        let stack = build_layers(name, layers, &outputs, &empty);
        let (merged, conflicts) = metadata::merge(&stack, overrides(&self.repo));
        // Merged again in place key by key (`Session::remerge`), the state must be exactly
        // what merging from scratch gives, key order included.
        debug_assert!(
            st.version == 0
                || serde_json::to_string(&merged).ok() == serde_json::to_string(&*st.merged).ok(),
            "metadata of {name} merged in place differs from a merge from scratch"
        );
        let conflicts: Vec<metadata::Conflict> = conflicts
            .into_iter()
            .filter(|c| {
                matches!(stack[c.first].source, Source::Reactor(..))
                    || matches!(stack[c.second].source, Source::Reactor(..))
            })
            .collect();
        debug_assert!(
            shared_key || conflicts.is_empty(),
            "{name}: a conflict involving a reactor although no two outputs share a key"
        );
        conflicts
            .into_iter()
            .map(|c| {
                let loc = |i: usize| match stack[i].source {
                    Source::Reactor(b, r) => outputs
                        .iter()
                        .find(|(x, _)| x.bundle == b && x.name == r)
                        .map(|(x, _)| x.location()),
                    _ => stack[i].spans.find(&c.path).cloned(),
                };
                let msg = format!(
                    "metadata conflict at `{}`: {} sets {}, {} sets {}",
                    c.path.join("."),
                    stack[c.first].source,
                    c.first_value,
                    stack[c.second].source,
                    c.second_value
                );
                let hint = "return the value from one reactor only, wrap one in atomic(), or set it in the node or a group";
                match loc(c.second).or_else(|| loc(c.first)) {
                    Some(l) => Diagnostic::at(l, msg),
                    None => Diagnostic::new(msg),
                }
                .with_hint(hint)
            })
            .collect()
    }

    /// `nodes(selector)`: the selected nodes as scripts see them, sorted by name.
    fn select(&self, target: &str) -> Result<rhai::Array, String> {
        let cached = self
            .selections
            .lock()
            .ok()
            .and_then(|m| m.get(target).cloned());
        if let Some(hit) = cached {
            // A copy: scripts may change what they get without changing what others see.
            return Ok((*hit).clone());
        }
        let nodes = self.repo.select(target).map_err(|e| e.to_string())?;
        let fresh: rhai::Array = nodes
            .iter()
            .filter_map(|n| self.summaries.get(&n.name).cloned())
            .collect();
        if let Ok(mut m) = self.selections.lock() {
            m.insert(target.to_string(), Arc::new(fresh.clone()));
        }
        Ok(fresh)
    }
}

/// Whether two of a node's reactor outputs have a top-level key in common.
fn outputs_share_a_key(st: &NodeState) -> bool {
    let mut seen: foldhash::HashSet<&str> = Default::default();
    st.outputs
        .iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|o| o.keys())
        .any(|k| !seen.insert(k.as_str()))
}

/// The layer stack of a node: bundle defaults < reactors < groups < node.
fn build_layers<'a>(
    name: &'a str,
    layers: &'a NodeLayers,
    outputs: &[(&'a Reactor, &'a Value)],
    empty: &'a SpanMap,
) -> Vec<Layer<'a>> {
    let mut stack = Vec::new();
    for (b, l) in &layers.bundles {
        stack.push(Layer {
            source: Source::Bundle(b),
            value: &l.value,
            spans: &l.spans,
        });
    }
    for (r, v) in outputs {
        stack.push(Layer {
            source: Source::Reactor(&r.bundle, &r.name),
            value: v,
            spans: empty,
        });
    }
    for (gi, (g, l)) in layers.groups.iter().enumerate() {
        stack.push(Layer {
            source: Source::Group(g, gi),
            value: &l.value,
            spans: &l.spans,
        });
    }
    if let Some(own) = &layers.own {
        stack.push(Layer {
            source: Source::Node(name),
            value: &own.value,
            spans: &own.spans,
        });
    }
    stack
}

/// Precedence between layers: node over everything, subgroups over supergroups, groups over
/// reactors over defaults; two defaults, two reactors or two unrelated groups conflict.
fn overrides(repo: &Repo) -> impl Fn(&Source<'_>, &Source<'_>) -> bool + '_ {
    move |earlier, later| match (earlier, later) {
        (Source::Bundle(_), Source::Bundle(_)) => false,
        (Source::Reactor(..), Source::Reactor(..)) => false,
        (Source::Group(a, _), Source::Group(b, _)) => repo
            .groups
            .get(*b)
            .is_some_and(|g| g.supergroups.iter().any(|s| s == a)),
        _ => true,
    }
}

fn collect_leaves(v: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                path.push(k.clone());
                collect_leaves(v, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

/// The line of `fn NAME(` in `text` (1-based), 0 when not found.
fn fn_line(text: &str, name: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("private ").unwrap_or(l).trim_start();
            l.strip_prefix("fn ")
                .map(str::trim_start)
                .and_then(|rest| rest.strip_prefix(name))
                .is_some_and(|rest| rest.trim_start().starts_with('('))
        })
        .map_or(0, |i| i + 1)
}

fn position_location(path: &std::path::Path, pos: Position) -> Location {
    Location {
        file: path.to_path_buf(),
        line: pos.line().unwrap_or(0),
        column: pos.position().unwrap_or(0),
    }
}

/// A JSON value as scripts see it. Built directly rather than through `rhai::serde`, whose
/// serializer allocates per value: every `node_metadata()` read goes through here. Numbers
/// that are not an `i64` still take the serde path, so the result is the same either way.
fn to_dynamic(v: &Value) -> Dynamic {
    match v {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => rhai::serde::to_dynamic(v).unwrap_or(Dynamic::UNIT),
        },
        Value::String(s) => Dynamic::from(rhai::ImmutableString::from(s.as_str())),
        Value::Array(a) => Dynamic::from_array(a.iter().map(to_dynamic).collect()),
        Value::Object(o) => Dynamic::from_map(
            o.iter()
                .map(|(k, v)| (k.as_str().into(), to_dynamic(v)))
                .collect(),
        ),
    }
}

/// A reactor's output as JSON. Maps, arrays, strings, integers, booleans and `()` are
/// converted directly (rhai::serde goes through a deserializer per value, and every changed
/// output is converted); anything else takes the serde path, so results and errors are the same.
fn from_dynamic(v: &Dynamic) -> Result<Value, Box<EvalAltResult>> {
    if v.is_shared() {
        return rhai::serde::from_dynamic(v);
    }
    if v.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = v.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = v.as_int() {
        return Ok(Value::from(i));
    }
    if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
        // `as_str().to_owned()`: `to_string()` would go through `Display` and a formatter.
        return Ok(Value::String(s.as_str().to_owned()));
    }
    // Sized up front: collecting through `Result` gives no size hint, so a map of a hundred
    // hosts grew (and rehashed) its index seven times.
    if let Some(a) = v.read_lock::<rhai::Array>() {
        let mut out = Vec::with_capacity(a.len());
        for item in a.iter() {
            out.push(from_dynamic(item)?);
        }
        return Ok(Value::Array(out));
    }
    if let Some(m) = v.read_lock::<rhai::Map>() {
        let mut out = serde_json::Map::with_capacity(m.len());
        for (k, item) in m.iter() {
            out.insert(k.as_str().to_owned(), from_dynamic(item)?);
        }
        return Ok(Value::Object(out));
    }
    rhai::serde::from_dynamic(v)
}

/// A node as scripts see it: name, hostname, groups, bundles and every attribute.
fn summary_dynamic(n: &Node) -> Dynamic {
    to_dynamic(&summary_json(n))
}

/// A node's attributes as JSON (what `nodes()` returns for it).
pub(crate) fn summary_json(n: &Node) -> Value {
    serde_json::json!({
        "name": n.name,
        "hostname": n.hostname,
        "groups": n.groups,
        "bundles": n.bundles,
        "username": n.username,
        "port": n.port,
        "transport": n.transport,
        "become": n.become_,
        "lock_dir": n.lock_dir,
        "dummy": n.dummy,
        "os": n.os,
        "os_version": n.os_version,
    })
}

/// A reactor's last failure, kept until it succeeds; still there at the end, it is an error.
#[derive(Debug, Clone)]
enum Failure {
    Missing { key: String, line: usize },
    Error { message: String, line: usize },
}

enum Interpreted {
    Output(Value),
    Retry(Failure),
    Fatal(Diagnostic),
}

enum RunResult {
    UpToDate,
    Same,
    Changed,
}

/// What a reactor call amounts to: an output, a failure to retry later, or a stop.
fn interpret(reactor: &Reactor, result: Result<Dynamic, Box<EvalAltResult>>) -> Interpreted {
    let err = match result {
        Ok(v) if v.is_map() => {
            return match from_dynamic(&v) {
                Ok(value) => Interpreted::Output(value),
                Err(e) => Interpreted::Fatal(Diagnostic::at(
                    reactor.location(),
                    format!(
                        "{} returned a value cinch cannot read: {e}",
                        reactor.describe()
                    ),
                )),
            };
        }
        Ok(v) => {
            return Interpreted::Fatal(
                Diagnostic::at(
                    reactor.location(),
                    format!(
                        "{} must return a map of metadata, but returned {}",
                        reactor.describe(),
                        v.type_name()
                    ),
                )
                .with_hint("return #{} to contribute nothing"),
            );
        }
        Err(e) => e,
    };
    let line = innermost_position(&err).line().unwrap_or(0);
    if let Some(why) = crate::repo::rhai_engine::stop_reason(&err) {
        return Interpreted::Fatal(Diagnostic::at(
            Location {
                file: reactor.file.clone(),
                line: if line > 0 { line } else { reactor.line },
                column: 0,
            },
            format!("{} was stopped: {why}", reactor.describe()),
        ));
    }
    if let Some(key) = needed_key(&err) {
        return Interpreted::Retry(Failure::Missing { key, line });
    }
    Interpreted::Retry(Failure::Error {
        message: innermost_message(&err),
        line,
    })
}

fn innermost(err: &EvalAltResult) -> &EvalAltResult {
    match err {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _)
        | EvalAltResult::ErrorInModule(_, inner, _) => innermost(inner),
        other => other,
    }
}

fn innermost_position(err: &EvalAltResult) -> Position {
    let inner = innermost(err).position();
    if inner.is_none() {
        err.position()
    } else {
        inner
    }
}

fn innermost_message(err: &EvalAltResult) -> String {
    match innermost(err) {
        EvalAltResult::ErrorRuntime(v, _) => v.to_string(),
        other => {
            let mut s = other.to_string();
            if let Some(i) = s.find(" (line ") {
                s.truncate(i);
            }
            s
        }
    }
}

fn needed_key(err: &EvalAltResult) -> Option<String> {
    match innermost(err) {
        EvalAltResult::ErrorRuntime(v, _) => v
            .clone()
            .into_string()
            .ok()
            .and_then(|s| s.strip_prefix(NEED_MARK).map(str::to_string)),
        _ => None,
    }
}

/// One node's progress in a computation.
struct NodeState {
    reactors: Vec<(Arc<BundleReactors>, usize)>,
    outputs: Vec<Option<Value>>,
    failures: Vec<Option<Failure>>,
    changes: Vec<u32>,
    /// For each reactor, what it read at its last run and the values it saw: it runs again
    /// only when one of them changed.
    deps: Vec<Option<Vec<Dep>>>,
    fatal: Vec<Diagnostic>,
    merged: Arc<Value>,
    /// How many times `merged` was replaced.
    version: u64,
    /// For each top-level key, the `version` whose merge last may have changed its value: a
    /// reader that saw an earlier version still holds when the key it read is not listed
    /// after it, without looking the value up (layers merge key by key, so a changed reactor
    /// output changes nothing outside its own top-level keys, old and new).
    touched: FastMap<String, u64>,
}

/// The nodes being computed together on one thread.
struct Session {
    reversed: bool,
    order: Vec<String>,
    states: FastMap<String, NodeState>,
    /// Which nodes each node's reactors read.
    reads: BTreeMap<String, BTreeSet<Arc<str>>>,
    current: Option<String>,
    /// Nodes the running reactor asked for (repeats in a row dropped; `reads` dedups).
    current_reads: Vec<Arc<str>>,
    current_deps: Vec<Dep>,
    oscillated: bool,
}

impl Session {
    fn outputs_of(st: &NodeState, skip: Option<usize>) -> Vec<(&Reactor, &Value)> {
        st.reactors
            .iter()
            .zip(&st.outputs)
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .filter_map(|(_, ((br, i), o))| o.as_ref().map(|v| (&br.reactors[*i], v)))
            .collect()
    }

    fn merge_without(&self, fleet: &Fleet, node: &str, skip: usize) -> Value {
        let Some(st) = self.states.get(node) else {
            return Value::Object(Default::default());
        };
        let outputs = Session::outputs_of(st, Some(skip));
        merge_node(fleet, node, &outputs)
    }

    /// Merges `node` again after reactor `i`'s output changed from `old`. Layers merge key by
    /// key, so only the top-level keys of the old and new output can change: those are merged
    /// again and replaced in place (readers hold no reference to a state's merged metadata;
    /// they remember its version), the rest is left as it is, in the order a whole merge gives.
    fn remerge(&mut self, fleet: &Fleet, node: &str, i: usize, old: Option<Value>) {
        let Some(st) = self.states.get_mut(node) else {
            return;
        };
        let mut keys: Vec<String> = Vec::new();
        for output in old.iter().chain(st.outputs[i].iter()) {
            for key in output.as_object().into_iter().flat_map(|o| o.keys()) {
                if !keys.contains(key) {
                    keys.push(key.clone());
                }
            }
        }
        let none = NodeLayers::default();
        let layers = fleet.layers.get(node).unwrap_or(&none);
        let empty = SpanMap::default();
        let outputs = Session::outputs_of(st, None);
        let stack = build_layers(node, layers, &outputs, &empty);
        if st.version == 0 || !st.merged.is_object() {
            // The first time from scratch: the state started from the loader's static metadata
            // (secrets resolved, for one), so any key may differ, not only the output's.
            let merged = metadata::merge(&stack, overrides(&fleet.repo)).0;
            let (before, after) = (st.merged.as_object(), merged.as_object());
            for key in before.into_iter().chain(after).flat_map(|m| m.keys()) {
                let differs = before.and_then(|m| m.get(key)) != after.and_then(|m| m.get(key));
                if differs && !keys.contains(key) {
                    keys.push(key.clone());
                }
            }
            st.merged = Arc::new(merged);
        } else {
            let mut fresh = metadata::merge_keys(&stack, overrides(&fleet.repo), &keys);
            let order: Vec<String> = metadata::key_order(&stack)
                .into_iter()
                .map(str::to_string)
                .collect();
            if let Value::Object(map) = Arc::make_mut(&mut st.merged) {
                for key in &keys {
                    match fresh.remove(key) {
                        Some(v) if map.contains_key(key) => {
                            map.insert(key.clone(), v);
                        }
                        Some(v) => {
                            // A new key goes where a whole merge puts it: after the keys
                            // present that come before it, so the map rarely needs reordering.
                            let at = order
                                .iter()
                                .take_while(|k| *k != key)
                                .filter(|k| map.contains_key(k.as_str()))
                                .count();
                            map.shift_insert(at, key.clone(), v);
                        }
                        None => {
                            map.shift_remove(key);
                        }
                    }
                }
                // A key can still move (the layer that brought it first no longer has it).
                if !map.keys().eq(order.iter()) {
                    let mut unordered = std::mem::take(map);
                    for key in &order {
                        if let Some((k, v)) = unordered.remove_entry(key) {
                            map.insert(k, v);
                        }
                    }
                }
            }
        }
        st.version += 1;
        for key in keys {
            st.touched.insert(key, st.version);
        }
    }

    /// Whether what reactor `i` of `node` read (`dep`) still has the value it saw.
    fn dep_holds(&self, fleet: &Fleet, node: &str, i: usize, dep: &Dep) -> bool {
        let same = |v: &Value, seen: &Value| -> bool {
            // Unchanged since the read: the same tree, nothing to compare.
            if std::ptr::eq(v, seen) {
                return true;
            }
            match &dep.path {
                Some(p) => metadata::lookup(v, p) == metadata::lookup(seen, p),
                None => *v == *seen,
            }
        };
        // Read from a node's merged metadata at version `at`: it still holds when no output
        // changed since touches the top-level key it read.
        let untouched = |st: &NodeState, at: u64| -> bool {
            if st.version == at {
                return true;
            }
            match &dep.path {
                Some(p) => {
                    let first = p.split('.').next().unwrap_or("");
                    st.touched.get(first).is_none_or(|t| *t <= at)
                }
                None => false,
            }
        };
        if &*dep.node != node {
            // A node outside the computation is finished and cannot change any more.
            let Some(st) = self.states.get(&*dep.node) else {
                return true;
            };
            return match &dep.seen {
                Seen::Version(at) => untouched(st, *at),
                Seen::Tree(seen) => same(&st.merged, seen),
            };
        }
        let Some(st) = self.states.get(node) else {
            return true;
        };
        // The reactor saw its node without its own output: where that output could be part
        // of the value, compare with exactly that; elsewhere the merged value is the same.
        let own = st.outputs[i].as_ref();
        let overlaps = match &dep.path {
            None => own.is_some(),
            Some(p) => {
                let first = p.split('.').next().unwrap_or("");
                own.and_then(Value::as_object)
                    .is_some_and(|o| o.contains_key(first))
            }
        };
        match &dep.seen {
            Seen::Tree(seen) if overlaps => same(&self.merge_without(fleet, node, i), seen),
            Seen::Tree(seen) => same(&st.merged, seen),
            // Its own output may have changed what it read: unless nothing changed since the
            // read (it read itself through node_metadata() after its own output, say), run it
            // again to know.
            Seen::Version(at) if overlaps => st.version == *at,
            Seen::Version(at) => untouched(st, *at),
        }
    }

    /// A chain of reads leading from `start` back to it, if there is one.
    fn cycle_from(&self, start: &str) -> Option<Vec<String>> {
        let mut path = vec![start.to_string()];
        let mut visited = BTreeSet::new();
        fn dfs(
            s: &Session,
            start: &str,
            path: &mut Vec<String>,
            visited: &mut BTreeSet<String>,
        ) -> bool {
            let Some(last) = path.last().cloned() else {
                return false;
            };
            for next in s.reads.get(&last).into_iter().flatten() {
                if **next == *last {
                    continue;
                }
                if &**next == start {
                    path.push(next.to_string());
                    return true;
                }
                if visited.insert(next.to_string()) {
                    path.push(next.to_string());
                    if dfs(s, start, path, visited) {
                        return true;
                    }
                    path.pop();
                }
            }
            false
        }
        dfs(self, start, &mut path, &mut visited).then_some(path)
    }
}

fn merge_node(fleet: &Fleet, node: &str, outputs: &[(&Reactor, &Value)]) -> Value {
    let none = NodeLayers::default();
    let layers = fleet.layers.get(node).unwrap_or(&none);
    let empty = SpanMap::default();
    let stack = build_layers(node, layers, outputs, &empty);
    metadata::merge(&stack, overrides(&fleet.repo)).0
}

/// Gives up the nodes this thread claimed in one direction and wakes threads waiting for them.
struct Claims<'a> {
    fleet: &'a Fleet,
    reversed: bool,
}

impl Drop for Claims<'_> {
    fn drop(&mut self) {
        let me = std::thread::current().id();
        if let Ok(mut busy) = self.fleet.busy.lock() {
            busy.retain(|(reversed, _), owner| *reversed != self.reversed || *owner != me);
        }
        self.fleet.finished.notify_all();
    }
}

/// What scripts on this thread compute in: the fleet and, while reactors run, their session.
struct Frame {
    fleet: Arc<Fleet>,
    session: Option<Session>,
}

thread_local! {
    static FRAMES: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}

/// Pops the frame it pushed, also when a script panics its way out.
struct FrameGuard;

impl FrameGuard {
    fn push(frame: Frame) -> FrameGuard {
        FRAMES.with(|f| f.borrow_mut().push(frame));
        FrameGuard
    }
}

impl Drop for FrameGuard {
    fn drop(&mut self) {
        FRAMES.with(|f| {
            f.borrow_mut().pop();
        });
    }
}

/// Makes `nodes()` and `node_metadata()` available to scripts run on this thread (items.rhai)
/// until the returned guard is dropped.
pub struct ScriptContext {
    _frame: Option<FrameGuard>,
}

/// Enters `fleet` for scripts on this thread; `None` (a node built without a repo) enters
/// nothing and those functions report that they are not available.
pub fn enter(fleet: Option<&Arc<Fleet>>) -> ScriptContext {
    ScriptContext {
        _frame: fleet.map(|f| {
            FrameGuard::push(Frame {
                fleet: f.clone(),
                session: None,
            })
        }),
    }
}

fn with_session<T>(f: impl FnOnce(&mut Session) -> T) -> Option<T> {
    FRAMES.with(|frames| {
        let mut frames = frames.borrow_mut();
        frames.last_mut()?.session.as_mut().map(f)
    })
}

fn current_fleet() -> Option<Arc<Fleet>> {
    FRAMES.with(|f| f.borrow().last().map(|fr| fr.fleet.clone()))
}

/// `node_metadata(name)` for templates: the computed metadata of another node.
pub fn node_metadata_json(fleet: &Arc<Fleet>, name: &str) -> Result<Value, String> {
    if !fleet.cells.contains_key(name) {
        return Err(unknown_node(fleet, name));
    }
    fleet
        .metadata(name)
        .map(|v| (*v).clone())
        .map_err(|d| broken(name, &d))
}

/// `nodes(selector)` for templates.
pub fn nodes_json(fleet: &Arc<Fleet>, target: &str) -> Result<Vec<Value>, String> {
    let nodes = fleet.repo.select(target).map_err(|e| e.to_string())?;
    Ok(nodes.iter().map(|n| summary_json(n)).collect())
}

fn unknown_node(fleet: &Fleet, name: &str) -> String {
    match fleet.repo.node(name) {
        Err(e) => e.to_string(),
        Ok(_) => format!("no node named '{name}'"),
    }
}

fn broken(name: &str, diags: &[Diagnostic]) -> String {
    let first = diags
        .first()
        .map(|d| match &d.location {
            Some(l) => format!("{l}: {}", d.message),
            None => d.message.clone(),
        })
        .unwrap_or_default();
    format!("metadata of node '{name}' cannot be computed: {first}")
}

/// `node_metadata(name)` as scripts call it: inside a reactor computation the node joins it.
fn node_metadata(ctx: NativeCallContext, name: &str) -> Result<Dynamic, Box<EvalAltResult>> {
    let err = |msg: String| Box::new(EvalAltResult::ErrorRuntime(msg.into(), ctx.call_position()));
    // Inside a reactor (every call of the /etc/hosts pattern) the fleet is borrowed from this
    // thread's frame: cloning its `Arc` would make both workers bump one shared counter.
    let in_session = FRAMES.with(|frames| {
        let mut frames = frames.borrow_mut();
        let frame = frames.last_mut()?;
        let fleet = &frame.fleet;
        let s = frame.session.as_mut()?;
        // Every node of the repo has a shared name: one lookup tells whether it exists.
        let Some(shared) = fleet.names.get(name).cloned() else {
            return Some(Err(unknown_node(fleet, name)));
        };
        if s.current_reads.last() != Some(&shared) {
            s.current_reads.push(shared.clone());
        }
        if let Some(st) = s.states.get(name) {
            return Some(Ok(NodeMeta::of_state(st, shared)));
        }
        if let Some(done) = fleet.cells(s.reversed).get(name).and_then(|c| c.get()) {
            return Some(match &done.result {
                Ok(v) => Ok(NodeMeta::dynamic_of(v.clone(), shared)),
                Err(d) => Err(broken(name, d)),
            });
        }
        let st = fleet.new_state(name);
        let value = NodeMeta::of_state(&st, shared);
        fleet.claim(name, s.reversed);
        s.states.insert(name.to_string(), st);
        s.order.push(name.to_string());
        Some(Ok(value))
    });
    if let Some(r) = in_session {
        return r.map_err(err);
    }
    let Some(fleet) = current_fleet() else {
        return Err(err(
            "node_metadata() is only available in reactors, items.rhai and templates".into(),
        ));
    };
    let Some(shared) = fleet.names.get(name).cloned() else {
        return Err(err(unknown_node(&fleet, name)));
    };
    match fleet.metadata(name) {
        Ok(v) => Ok(NodeMeta::dynamic_of(v, shared)),
        Err(d) => Err(err(broken(name, &d))),
    }
}

/// Another node's metadata as scripts get it from `node_metadata()`: read-only and shared, so
/// a reactor reading a hundred nodes does not copy a hundred metadata trees. `m.key` and
/// `m["key"]` read a key (`()` when missing), `need(m, "a.b")`, `"key" in m`, `m.keys()`,
/// `m.len()`, `m.to_map()` (a copy as a plain map) and `m.to_json()` work as on maps.
#[derive(Debug, Clone)]
pub struct NodeMeta {
    value: Arc<Value>,
    /// Whose metadata this is, so reads inside a reactor are remembered as its input.
    node: Option<Arc<str>>,
    /// The node state's `version` when `value` is that state's merged metadata.
    version: Option<u64>,
}

impl NodeMeta {
    fn dynamic_of(value: Arc<Value>, node: Arc<str>) -> Dynamic {
        Dynamic::from(NodeMeta {
            value,
            node: Some(node),
            version: None,
        })
    }

    /// The merged metadata of a node being computed, as it stands now.
    fn of_state(st: &NodeState, node: Arc<str>) -> Dynamic {
        Dynamic::from(NodeMeta {
            value: st.merged.clone(),
            node: Some(node),
            version: Some(st.version),
        })
    }

    /// The value at `path` (the whole metadata for `None`), remembered as read by the
    /// reactor running on this thread, if any.
    fn read(&self, path: Option<&rhai::ImmutableString>) -> Option<&Value> {
        let found = match path {
            Some(p) => metadata::lookup(&self.value, p),
            None => Some(&*self.value),
        };
        if let Some(node) = &self.node {
            with_session(|s| {
                if s.current.is_some() {
                    s.current_deps.push(Dep {
                        node: node.clone(),
                        path: path.cloned(),
                        seen: match self.version {
                            Some(at) => Seen::Version(at),
                            None => Seen::Tree(self.value.clone()),
                        },
                    });
                }
            });
        }
        found
    }
}

/// One value a reactor read: node, dotted path (`None`: all of it) and what it was read from.
#[derive(Debug, Clone)]
struct Dep {
    node: Arc<str>,
    path: Option<rhai::ImmutableString>,
    seen: Seen,
}

/// What a read was made from. A tree no computation changes any more (a finished node, or a
/// reactor's input without its own output) is kept: shared and immutable, it makes a read
/// cheap and a check against the same tree free. The merged metadata of a node being computed
/// is remembered by version instead, so the state stays its only owner and can be merged
/// again in place (see [`Session::remerge`]).
#[derive(Debug, Clone)]
enum Seen {
    Tree(Arc<Value>),
    Version(u64),
}

/// Registers the computed-metadata functions: `need`, `atomic`, `nodes`, `node_metadata`,
/// `in_group` and `has_bundle`.
pub fn register(engine: &mut Engine) {
    engine.register_fn(
        "need",
        |ctx: NativeCallContext,
         m: &mut rhai::Map,
         path: &str|
         -> Result<Dynamic, Box<EvalAltResult>> {
            let mut segments = path.split('.');
            let first = segments.next().and_then(|seg| m.get(seg)).cloned();
            let mut current = match first {
                Some(v) if !v.is_unit() => v,
                _ => {
                    return Err(Box::new(EvalAltResult::ErrorRuntime(
                        format!("{NEED_MARK}{path}").into(),
                        ctx.call_position(),
                    )));
                }
            };
            for seg in segments {
                let next = if let Some(map) = current.read_lock::<rhai::Map>() {
                    map.get(seg).cloned()
                } else if let Some(arr) = current.read_lock::<rhai::Array>() {
                    seg.parse::<usize>().ok().and_then(|i| arr.get(i).cloned())
                } else {
                    None
                };
                match next {
                    Some(v) if !v.is_unit() => current = v,
                    _ => {
                        return Err(Box::new(EvalAltResult::ErrorRuntime(
                            format!("{NEED_MARK}{path}").into(),
                            ctx.call_position(),
                        )));
                    }
                }
            }
            Ok(current)
        },
    );
    engine.register_type_with_name::<NodeMeta>("NodeMetadata");
    engine.register_indexer_get(|m: &mut NodeMeta, key: rhai::ImmutableString| -> Dynamic {
        m.read(Some(&key)).map_or(Dynamic::UNIT, to_dynamic)
    });
    engine.register_fn(
        "get",
        |m: &mut NodeMeta, key: rhai::ImmutableString| -> Dynamic {
            m.read(Some(&key)).map_or(Dynamic::UNIT, to_dynamic)
        },
    );
    engine.register_fn(
        "need",
        |ctx: NativeCallContext,
         m: &mut NodeMeta,
         path: rhai::ImmutableString|
         -> Result<Dynamic, Box<EvalAltResult>> {
            match m.read(Some(&path)) {
                Some(v) if !v.is_null() => Ok(to_dynamic(v)),
                _ => Err(Box::new(EvalAltResult::ErrorRuntime(
                    format!("{NEED_MARK}{path}").into(),
                    ctx.call_position(),
                ))),
            }
        },
    );
    engine.register_fn(
        "contains",
        |m: &mut NodeMeta, key: rhai::ImmutableString| m.read(Some(&key)).is_some(),
    );
    engine.register_fn("keys", |m: &mut NodeMeta| -> rhai::Array {
        m.read(None)
            .and_then(Value::as_object)
            .map(|o| o.keys().map(|k| Dynamic::from(k.clone())).collect())
            .unwrap_or_default()
    });
    engine.register_fn("values", |m: &mut NodeMeta| -> rhai::Array {
        m.read(None)
            .and_then(Value::as_object)
            .map(|o| o.values().map(to_dynamic).collect())
            .unwrap_or_default()
    });
    engine.register_fn("len", |m: &mut NodeMeta| -> i64 {
        m.read(None)
            .and_then(Value::as_object)
            .map_or(0, |o| o.len() as i64)
    });
    engine.register_fn("is_empty", |m: &mut NodeMeta| -> bool {
        m.read(None)
            .and_then(Value::as_object)
            .is_none_or(|o| o.is_empty())
    });
    engine.register_fn("to_map", |m: &mut NodeMeta| {
        m.read(None).map_or(Dynamic::UNIT, to_dynamic)
    });
    for name in ["to_json", "to_string", "to_debug"] {
        engine.register_fn(name, |m: &mut NodeMeta| {
            m.read(None).map(Value::to_string).unwrap_or_default()
        });
    }
    engine.register_fn("atomic", |v: Dynamic| -> Dynamic {
        let mut m = rhai::Map::new();
        m.insert(metadata::ATOMIC_KEY.into(), v);
        Dynamic::from_map(m)
    });
    engine.register_fn(
        "nodes",
        |ctx: NativeCallContext, target: &str| -> Result<rhai::Array, Box<EvalAltResult>> {
            let err = |msg: String| {
                Box::new(EvalAltResult::ErrorRuntime(msg.into(), ctx.call_position()))
            };
            let fleet = current_fleet().ok_or_else(|| {
                err("nodes() is only available in reactors, items.rhai and templates".into())
            })?;
            fleet.select(target).map_err(err)
        },
    );
    engine.register_fn("node_metadata", node_metadata);
    engine.register_fn("in_group", |node: &mut rhai::Map, group: &str| {
        listed(node, "groups", group)
    });
    engine.register_fn("has_bundle", |node: &mut rhai::Map, bundle: &str| {
        listed(node, "bundles", bundle)
    });
}

fn listed(node: &rhai::Map, key: &str, name: &str) -> bool {
    node.get(key)
        .and_then(|v| {
            v.read_lock::<rhai::Array>().map(|a| {
                a.iter()
                    .any(|x| x.clone().into_string().is_ok_and(|s| s == name))
            })
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repo in a temporary directory from `(path, text)` pairs.
    fn repo_of(files: &[(&str, &str)]) -> (tempfile::TempDir, Repo) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        for (rel, text) in files {
            let path = dir.path().join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir: {e}"));
            }
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {rel}: {e}"));
        }
        let repo = Repo::load(dir.path()).unwrap_or_else(|e| panic!("load: {e}"));
        (dir, repo)
    }

    fn fleet_of(repo: &Repo) -> Arc<Fleet> {
        repo.nodes
            .values()
            .find_map(|n| n.fleet.clone())
            .unwrap_or_else(|| panic!("no fleet"))
    }

    /// `name`'s metadata merged from scratch out of its layers and final reactor outputs, as
    /// JSON text, so that key order counts too.
    fn merged_from_scratch(fleet: &Fleet, outcome: &Outcome, name: &str) -> String {
        let outputs: Vec<(&Reactor, &Value)> = outcome
            .outputs
            .iter()
            .filter_map(|(r, v)| v.as_ref().map(|v| (r, v)))
            .collect();
        merge_node(fleet, name, &outputs).to_string()
    }

    /// A reactor reads another node's key before that node's own reactor replaced it: the
    /// read is remembered by the version of the node's metadata, and the key being touched
    /// afterwards must run the reader again, in both directions, so it ends with the final value.
    #[test]
    fn read_of_another_nodes_key_that_changes_later_sees_the_final_value() {
        let (_dir, repo) = repo_of(&[
            (
                "nodes.toml",
                "[nodes.a]\nbundles = [\"reader\"]\n[nodes.b]\nbundles = [\"source\"]\n",
            ),
            ("bundles/reader/items.toml", ""),
            (
                "bundles/reader/metadata.rhai",
                "fn peer(node, metadata) {\n  let b = node_metadata(\"b\");\n  \
                 #{ peer_ip: b.ip, peer_port: b.svc.port, peer_name: need(b, \"svc.name\") }\n}\n",
            ),
            ("bundles/source/items.toml", ""),
            (
                "bundles/source/metadata.toml",
                "ip = \"default\"\n[svc]\nname = \"web\"\nport = 1\n",
            ),
            (
                "bundles/source/metadata.rhai",
                "fn address(node, metadata) {\n  #{ ip: \"from-reactor\" }\n}\n\
                 fn port(node, metadata) {\n  #{ svc: #{ port: atomic(need(metadata, \"svc.name\").len() * 10) } }\n}\n",
            ),
        ]);
        let fleet = fleet_of(&repo);
        for reversed in [false, true] {
            let a = fleet.memoised("a", reversed);
            let Ok(meta) = a.result.clone() else {
                panic!("a failed: {:?}", a.result);
            };
            assert_eq!(
                meta["peer_ip"], "from-reactor",
                "reversed {reversed}: {meta}"
            );
            assert_eq!(meta["peer_port"], 30, "reversed {reversed}: {meta}");
            assert_eq!(meta["peer_name"], "web", "reversed {reversed}: {meta}");
            let b = fleet.memoised("b", reversed);
            assert_eq!(
                b.result.as_ref().map(|m| m.to_string()).ok(),
                Some(merged_from_scratch(&fleet, &b, "b")),
                "reversed {reversed}"
            );
        }
    }

    /// A reactor reading its own node through node_metadata() under the key it returns (the
    /// template repo's /etc/hosts reactor) ran again on every pass until "metadata never
    /// settles": a read of its own output was never taken to hold, even with nothing changed.
    #[test]
    fn reactor_reading_its_own_output_through_node_metadata_settles() {
        let (_dir, repo) = repo_of(&[
            (
                "nodes.toml",
                "[nodes.n]\nbundles = [\"b\"]\n[nodes.n.metadata.x]\nip = \"10.0.0.1\"\n",
            ),
            ("bundles/b/items.toml", ""),
            (
                "bundles/b/metadata.rhai",
                "fn hosts(node, metadata) {\n  let out = #{};\n  for n in nodes(\"all\") {\n    \
                 out[n.name] = need(node_metadata(n.name), \"x.ip\");\n  }\n  #{ x: #{ hosts: out } }\n}\n",
            ),
        ]);
        let fleet = fleet_of(&repo);
        for reversed in [false, true] {
            let n = fleet.memoised("n", reversed);
            let Ok(meta) = n.result.clone() else {
                panic!("n failed: {:?}", n.result);
            };
            assert_eq!(meta["x"]["hosts"]["n"], "10.0.0.1", "{meta}");
        }
    }

    /// Merging again only the keys a changed output touches, in place, gives exactly what a
    /// merge from scratch gives, key order included: a reactor whose output drops one key for
    /// another, a key a group also sets, a list several layers add to.
    #[test]
    fn merging_in_place_equals_merging_from_scratch() {
        let (_dir, repo) = repo_of(&[
            (
                "nodes.toml",
                "[nodes.n]\ngroups = [\"g\"]\n[nodes.n.metadata]\nlist = [\"node\"]\nz = 1\n",
            ),
            (
                "groups.toml",
                "[groups.g]\nbundles = [\"b\"]\n[groups.g.metadata]\ncommon = \"group\"\nlist = [\"group\"]\n",
            ),
            ("bundles/b/items.toml", ""),
            ("bundles/b/metadata.toml", "first = 0\n"),
            (
                "bundles/b/metadata.rhai",
                "fn early(node, metadata) {\n  if metadata.later == () { #{ tmp: 1, list: [\"early\"] } } \
                 else { #{ kept: metadata.later, common: \"reactor\", list: [\"late\"] } }\n}\n\
                 fn late(node, metadata) {\n  #{ later: 2 }\n}\n",
            ),
        ]);
        let fleet = fleet_of(&repo);
        for reversed in [false, true] {
            let n = fleet.memoised("n", reversed);
            let Ok(meta) = n.result.clone() else {
                panic!("n failed: {:?}", n.result);
            };
            assert_eq!(meta["kept"], 2, "{meta}");
            assert!(meta.get("tmp").is_none(), "{meta}");
            assert_eq!(meta["common"], "group", "{meta}");
            assert_eq!(meta.to_string(), merged_from_scratch(&fleet, &n, "n"));
        }
    }

    /// Two threads asking at once for nodes of a group whose reactors read each other used to
    /// compute the whole group twice (results were memoised only when done): the second now
    /// waits for the first.
    #[test]
    fn two_threads_asking_for_one_group_compute_it_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let root = dir.path();
        let write = |rel: &str, text: &str| {
            let path = root.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir: {e}"));
            }
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {rel}: {e}"));
        };
        let mut nodes = String::new();
        for i in 0..20 {
            nodes.push_str(&format!(
                "[nodes.n{i:02}]\ngroups = [\"rack\"]\n[nodes.n{i:02}.metadata]\nip = \"10.0.0.{i}\"\n\n"
            ));
        }
        write("nodes.toml", &nodes);
        write("groups.toml", "[groups.rack]\nbundles = [\"base\"]\n");
        write("bundles/base/items.toml", "");
        // The first reactor reads the whole group at once, then each one is slow enough that
        // the second thread asks while the first is still computing.
        write(
            "bundles/base/metadata.rhai",
            "fn hosts(node, metadata) {\n  let out = #{};\n  for n in nodes(\"group:rack\") {\n    \
             out[n.name] = need(node_metadata(n.name), \"ip\");\n  }\n  \
             let i = 0; while i < 50000 { i += 1; }\n  #{ hosts: out }\n}\n",
        );
        let repo = Repo::load(root).unwrap_or_else(|e| panic!("load: {e}"));
        let first = repo.nodes.get("n00").cloned();
        let last = repo.nodes.get("n19").cloned();
        let (Some(first), Some(last)) = (first, last) else {
            panic!("nodes missing");
        };
        let Some(fleet) = first.fleet.clone() else {
            panic!("no fleet");
        };
        let start = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            for (node, delay) in [(&first, 0), (&last, 100)] {
                let (fleet, start) = (&fleet, &start);
                s.spawn(move || {
                    start.wait();
                    std::thread::sleep(std::time::Duration::from_millis(delay));
                    let meta = fleet.metadata(&node.name);
                    assert!(meta.is_ok_and(|m| m["hosts"]["n07"] == "10.0.0.7"));
                });
            }
        });
        assert_eq!(
            fleet.sessions.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "the group was computed more than once"
        );
    }

    /// A repo of `racks` racks of `size` nodes whose /etc/hosts-like reactor reads every node
    /// of its rack, and a second reactor that needs the first one's output.
    fn racks_repo(racks: usize, size: usize) -> (tempfile::TempDir, Repo) {
        let mut nodes = String::new();
        let mut groups = String::new();
        for r in 0..racks {
            groups.push_str(&format!(
                "[groups.rack{r}]\nbundles = [\"base\"]\n[groups.rack{r}.metadata]\nrack = \"rack{r}\"\n\n"
            ));
            for i in 0..size {
                nodes.push_str(&format!(
                    "[nodes.n{r}x{i:02}]\ngroups = [\"rack{r}\"]\n[nodes.n{r}x{i:02}.metadata]\nip = \"10.0.{r}.{i}\"\n\n"
                ));
            }
        }
        repo_of(&[
            ("nodes.toml", &nodes),
            ("groups.toml", &groups),
            ("bundles/base/items.toml", ""),
            (
                "bundles/base/metadata.rhai",
                "fn hosts(node, metadata) {\n  let out = #{};\n  \
                 for n in nodes(\"group:\" + need(metadata, \"rack\")) {\n    \
                 out[n.name] = need(node_metadata(n.name), \"ip\");\n  }\n  #{ hosts: out }\n}\n\
                 fn peers(node, metadata) {\n  #{ peers: need(metadata, \"hosts\").len() }\n}\n",
            ),
        ])
    }

    /// What `cinch test` does on two workers (each node's first run beside its reversed run,
    /// waiting workers doing queued work) gives every node exactly what one thread computing
    /// node after node gives. Each rack is computed once per direction, or twice when both
    /// workers start it from two of its nodes at the same moment (a thread already computing
    /// never waits for another, so neither can wait in a circle; the first result stands):
    /// the count is bounded, not exact, since which happens depends on timing (under load
    /// it once was 9 of 8).
    #[test]
    fn two_threads_computing_racks_that_read_each_other_agree_with_one() {
        let (_dir, repo) = racks_repo(4, 12);
        let (_dir2, alone) = racks_repo(4, 12);
        let fleet = fleet_of(&repo);
        let single = fleet_of(&alone);
        let names: Vec<String> = repo.nodes.keys().cloned().collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap_or_else(|e| panic!("pool: {e}"));
        use rayon::prelude::*;
        let both: Vec<(Arc<Outcome>, Arc<Outcome>)> = pool.install(|| {
            names
                .par_iter()
                .with_max_len(1)
                .map(|n| rayon::join(|| fleet.memoised(n, false), || fleet.memoised(n, true)))
                .collect()
        });
        for (name, (forward, reversed)) in names.iter().zip(&both) {
            let one = single.memoised(name, false);
            let one_reversed = single.memoised(name, true);
            let json = |o: &Outcome| o.result.as_ref().map(|v| v.to_string()).ok();
            assert!(
                json(&one).is_some_and(|m| m.contains("\"peers\":12")),
                "{name}"
            );
            assert_eq!(json(forward), json(&one), "{name}");
            assert_eq!(json(reversed), json(&one_reversed), "{name}");
            assert_eq!(json(forward), json(reversed), "{name}");
        }
        let sessions = fleet.sessions.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            (8..=16).contains(&sessions),
            "each of 4 racks once per direction, twice at most: {sessions}"
        );
    }

    /// Two workers running both directions of two nodes that read each other in a circle still
    /// report the circle with its chain, in both directions.
    #[test]
    fn two_threads_still_report_a_cycle_across_nodes_with_its_chain() {
        let (_dir, repo) = repo_of(&[
            (
                "nodes.toml",
                "[nodes.a]\nbundles = [\"p\"]\n[nodes.a.metadata]\npeer = \"b\"\n\
                 [nodes.b]\nbundles = [\"p\"]\n[nodes.b.metadata]\npeer = \"a\"\n",
            ),
            ("bundles/p/items.toml", ""),
            (
                "bundles/p/metadata.rhai",
                "fn count(node, metadata) {\n  #{ n: need(node_metadata(metadata.peer), \"n\") + 1 }\n}\n",
            ),
        ]);
        let fleet = fleet_of(&repo);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap_or_else(|e| panic!("pool: {e}"));
        use rayon::prelude::*;
        let all: Vec<Arc<Outcome>> = pool.install(|| {
            ["a", "b"]
                .par_iter()
                .flat_map(|n| {
                    let (f, r) =
                        rayon::join(|| fleet.memoised(n, false), || fleet.memoised(n, true));
                    [f, r]
                })
                .collect()
        });
        for outcome in all {
            let Err(diags) = &outcome.result else {
                panic!("a cycle computed: {:?}", outcome.result);
            };
            let text: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
            assert!(
                text.iter()
                    .any(|m| m.contains("a -> b -> a") || m.contains("b -> a -> b")),
                "{text:?}"
            );
        }
    }

    /// Two reactors setting one key differently conflict, found by the check after the fixed
    /// point; reactors under disjoint top-level keys (the case that skips that check's merge),
    /// or a group overriding a reactor, do not.
    #[test]
    fn reactors_returning_one_key_differently_conflict_and_disjoint_ones_do_not() {
        let (_dir, repo) = repo_of(&[
            (
                "nodes.toml",
                "[nodes.clash]\nbundles = [\"one\", \"two\"]\n\
                 [nodes.fine]\ngroups = [\"g\"]\nbundles = [\"one\", \"three\"]\n",
            ),
            ("groups.toml", "[groups.g.metadata.web]\nport = 8080\n"),
            ("bundles/one/items.toml", ""),
            ("bundles/two/items.toml", ""),
            ("bundles/three/items.toml", ""),
            (
                "bundles/one/metadata.rhai",
                "fn port(node, metadata) {\n  #{ web: #{ port: 80 } }\n}\n",
            ),
            (
                "bundles/two/metadata.rhai",
                "fn other_port(node, metadata) {\n  #{ web: #{ port: 81 } }\n}\n",
            ),
            (
                "bundles/three/metadata.rhai",
                "fn name(node, metadata) {\n  #{ site: #{ name: \"x\" } }\n}\n",
            ),
        ]);
        let fleet = fleet_of(&repo);
        for reversed in [false, true] {
            let clash = fleet.memoised("clash", reversed);
            let Err(diags) = &clash.result else {
                panic!("no conflict: {:?}", clash.result);
            };
            assert!(
                diags
                    .iter()
                    .any(|d| d.message.contains("metadata conflict at `web.port`")),
                "{diags:?}"
            );
            let fine = fleet.memoised("fine", reversed);
            let Ok(meta) = fine.result.clone() else {
                panic!("fine failed: {:?}", fine.result);
            };
            assert_eq!(meta["web"]["port"], 8080, "{meta}");
            assert_eq!(meta["site"]["name"], "x", "{meta}");
        }
    }

    /// The direct conversion must give scripts exactly what `rhai::serde` would.
    #[test]
    fn direct_json_to_dynamic_matches_rhai_serde() {
        let v = serde_json::json!({
            "s": "text", "n": -3, "big": u64::MAX, "f": 1.5, "t": true, "z": null,
            "list": [1, "two", [3], {"four": 4}], "map": {"b": {"c": []}, "a": {}},
        });
        let direct = to_dynamic(&v);
        let serde = rhai::serde::to_dynamic(&v).unwrap_or(Dynamic::UNIT);
        assert_eq!(format!("{direct:?}"), format!("{serde:?}"));
        let back: Value = rhai::serde::from_dynamic(&direct).unwrap_or(Value::Null);
        let again: Value = rhai::serde::from_dynamic(&serde).unwrap_or(Value::Null);
        assert_eq!(back, again);
        assert_eq!(back["s"], "text");
    }

    /// Reactor outputs converted directly must read exactly as through `rhai::serde`, and what
    /// serde refuses (a node's metadata handle inside an output) must still be refused.
    #[test]
    fn direct_dynamic_to_json_matches_rhai_serde() {
        let engine = Engine::new();
        let out: Dynamic = engine
            .eval(
                r#"#{ s: "text", n: -3, f: 1.5, t: true, z: (), c: 'x',
                     list: [1, "two", [3], #{ four: 4 }], map: #{ b: #{ c: [] }, a: #{} } }"#,
            )
            .unwrap_or(Dynamic::UNIT);
        let direct = from_dynamic(&out).unwrap_or(Value::Null);
        let serde: Value = rhai::serde::from_dynamic(&out).unwrap_or(Value::Bool(false));
        assert_eq!(direct, serde);
        assert_eq!(direct["list"][3]["four"], 4);
        let keys: Vec<&String> = direct["map"]
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        let serde_keys: Vec<&String> = serde["map"]
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys, serde_keys);
        let mut with_handle = rhai::Map::new();
        with_handle.insert(
            "m".into(),
            Dynamic::from(NodeMeta {
                value: Arc::new(Value::Null),
                node: None,
                version: None,
            }),
        );
        let handle = Dynamic::from_map(with_handle);
        assert_eq!(
            from_dynamic(&handle).is_err(),
            rhai::serde::from_dynamic::<Value>(&handle).is_err()
        );
    }
}
