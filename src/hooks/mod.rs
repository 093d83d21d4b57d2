//! Rhai hooks: user scripts called at every lifecycle point (hooks-examples/README.md).
//!
//! Every `hooks/*.rhai` file is compiled and its top level run once per invocation (so
//! top-level `const`s and `import`s are visible to its functions as `global::NAME` and `alias::`);
//! after that only its functions are called, from whichever node worker emits the event.
//!
//! Wiring: [`command_bus`] subscribes the hooks (via [`subscribe`]); commands emit
//! events on that bus and end with `if bus.had_errors() { exit 1 }`.
//! How a command must treat the [`Flow`] a hook returns:
//! - `apply_start` / `run_start`: `Abort(reason)` stops before anything runs; show the reason, exit 1.
//! - `node_apply_start` / `node_run_start`: `SkipNode(reason)` skips that node
//!   ("skipped by hook (reason)"); not a failure by itself.
//! - `item_apply_start` / `action_run_start`: `Abort(reason)` means a hook failed (fail closed):
//!   do not apply/run that item, report it as failed with `reason`, go on with the rest.
//! - `test_node`: `Abort(reason)` means a policy hook failed for that node (already reported):
//!   count the node as having a problem.
//! - everything else: always `Continue`; failures show up in [`Hooks::had_errors`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rhai::{AST, CallFnOptions, Dynamic, Engine, EvalAltResult, FLOAT, INT, Map, Module, Scope};
use serde_json::{Value, json};

use crate::console::Console;
use crate::diag::{Diagnostic, Location};
use crate::error::Error;
use crate::events::{Bus, Event, Flow, Subscriber};
use crate::items::{ContentType, FileSource, Item, ItemKind};
use crate::repo::Node;
use crate::rhai_engine;

/// Every hook point with the arguments it provides, in order (the table in
/// hooks-examples/README.md, which a test keeps equal to this list). New arguments are only
/// ever appended, so hooks that declare fewer parameters keep working.
pub const HOOK_POINTS: &[(&str, &[&str])] = &[
    ("apply_start", &["repo", "target", "nodes", "interactive"]),
    ("apply_end", &["repo", "target", "nodes", "duration"]),
    ("node_apply_start", &["repo", "node", "interactive"]),
    (
        "node_apply_end",
        &["repo", "node", "duration", "interactive", "result"],
    ),
    ("item_apply_start", &["repo", "node", "item"]),
    (
        "item_apply_end",
        &[
            "repo",
            "node",
            "item",
            "duration",
            "status_code",
            "status_before",
            "status_after",
            "reason",
        ],
    ),
    ("action_run_start", &["repo", "node", "item"]),
    (
        "action_run_end",
        &["repo", "node", "item", "duration", "status"],
    ),
    ("run_start", &["repo", "target", "nodes", "command"]),
    (
        "run_end",
        &["repo", "target", "nodes", "command", "duration"],
    ),
    ("node_run_start", &["repo", "node", "command"]),
    (
        "node_run_end",
        &[
            "repo",
            "node",
            "command",
            "duration",
            "return_code",
            "stdout",
            "stderr",
        ],
    ),
    (
        "lock_add",
        &["repo", "node", "lock_id", "items", "expiry", "comment"],
    ),
    ("lock_remove", &["repo", "node", "lock_id"]),
    ("lock_show", &["repo", "node", "lock_info"]),
    ("node_ssh_connect", &["repo", "node"]),
    ("test_node", &["repo", "node"]),
    ("test", &["repo"]),
];

/// Environment variable that fixes `now()` (UNIX seconds), so time-dependent hooks are testable.
pub const NOW_ENV: &str = "CINCH_HOOK_NOW";

/// Key of the map thrown by `skip_node` / `abort`, so they can be told apart from real errors.
const FLOW_TAG: &str = "__cinch_flow";

/// What the provided functions see of the outside world; injectable for tests.
#[derive(Debug, Clone, Default)]
pub struct HookOptions {
    /// Fixed value for `now()`; `None` means the real clock.
    pub now: Option<f64>,
    /// Variables `env()` and `run_local()` see in addition to (and over) the process environment.
    pub env: HashMap<String, String>,
    /// cinch.toml's `[repo] allow_external_symlinks`: may `libs/` link out of the repo?
    pub allow_external_symlinks: bool,
}

impl HookOptions {
    /// Options from the process environment (`CINCH_HOOK_NOW`).
    pub fn from_env() -> Result<Self, Diagnostic> {
        let now = match std::env::var(NOW_ENV) {
            Ok(v) => Some(v.trim().parse::<f64>().map_err(|_| {
                Diagnostic::new(format!("{NOW_ENV}={v:?} is not a number"))
                    .with_hint("set it to UNIX seconds, e.g. 1700000000, or unset it")
            })?),
            Err(_) => None,
        };
        Ok(HookOptions {
            now,
            env: HashMap::new(),
            allow_external_symlinks: false,
        })
    }
}

/// One compiled hook file.
struct HookFile {
    path: PathBuf,
    text: String,
    /// Every function it defines: (name, parameter count, public).
    functions: Vec<(String, usize, bool)>,
}

/// The compiled hooks of a repo; shared by all node workers.
pub struct Hooks {
    engine: Engine,
    /// One forwarding function per (file, hook) pair, calling into that file's module.
    shim: AST,
    files: Vec<HookFile>,
    /// Hook name -> (file index, parameter count to pass), in file-name order.
    calls: HashMap<&'static str, Vec<(usize, usize)>>,
    repo_path: PathBuf,
    console: Arc<Console>,
    /// Failures already reported; never locked while a hook runs.
    errors: Mutex<Vec<Diagnostic>>,
}

/// Loads the repo's hooks and adds them to `bus`; keep the returned handle to ask
/// [`Hooks::had_errors`] before choosing the exit code.
pub fn subscribe(
    bus: &mut Bus,
    repo_path: &Path,
    allow_external_symlinks: bool,
    console: Arc<Console>,
) -> Result<Arc<Hooks>, Error> {
    let mut options = HookOptions::from_env().map_err(|d| Error::Repo(vec![d]))?;
    options.allow_external_symlinks = allow_external_symlinks;
    let hooks = Arc::new(Hooks::load_with(repo_path, console, options).map_err(Error::Repo)?);
    bus.subscribe(Box::new(hooks.clone()));
    Ok(hooks)
}

impl Hooks {
    /// Compiles every `hooks/*.rhai` (file-name order) and runs each top level once.
    pub fn load(repo_path: &Path, console: Arc<Console>) -> Result<Hooks, Vec<Diagnostic>> {
        let options = HookOptions::from_env().map_err(|d| vec![d])?;
        Hooks::load_with(repo_path, console, options)
    }

    /// [`Hooks::load`] with explicit options (tests, fixed clock).
    pub fn load_with(
        repo_path: &Path,
        console: Arc<Console>,
        options: HookOptions,
    ) -> Result<Hooks, Vec<Diagnostic>> {
        let paths = hook_paths(repo_path)?;
        let sandbox = crate::repo::Sandbox::new(repo_path, options.allow_external_symlinks);
        let mut engine = build_engine(repo_path, console.clone(), options);
        let mut diags = Vec::new();
        let mut compiled = Vec::new();
        for path in paths {
            if let Some(why) = sandbox.escape(&path) {
                diags.push(
                    Diagnostic::at(Location::file(&path), format!("hook file refused: {why}"))
                        .with_hint(crate::repo::sandbox::HINT),
                );
                continue;
            }
            let text = match crate::repo::read_text(&path) {
                Ok(t) => t,
                Err(e) => {
                    diags.push(Diagnostic::at(
                        Location::file(&path),
                        format!("cannot read hook file: {e}"),
                    ));
                    continue;
                }
            };
            match engine.compile(&text) {
                Ok(mut ast) => {
                    ast.set_source(path.to_string_lossy().as_ref());
                    compiled.push((path, text, ast));
                }
                Err(e) => {
                    let loc = location(&path, e.position());
                    diags.push(Diagnostic::at(
                        loc,
                        format!("syntax error in hook: {}", e.err_type()),
                    ));
                }
            }
        }
        if !diags.is_empty() {
            return Err(diags);
        }

        let mut files = Vec::new();
        let mut calls: HashMap<&'static str, Vec<(usize, usize)>> = HashMap::new();
        let mut shim = String::new();
        for (index, (path, text, ast)) in compiled.into_iter().enumerate() {
            // Running the top level once makes its consts and imports part of each function's
            // environment; calls later never re-run it.
            let budget = crate::budget::Guard::new(crate::budget::Stop::OnNewInterrupt);
            let module = Module::eval_ast_as_new(Scope::new(), &ast, &engine);
            drop(budget);
            let module = match module {
                Ok(m) => m,
                Err(e) => {
                    let f = Failure::from_error(&e, &path);
                    diags.push(Diagnostic::at(
                        f.location,
                        format!("hook file failed while loading: {}", f.message),
                    ));
                    continue;
                }
            };
            engine.register_static_module(module_name(index), module.into());
            let functions: Vec<(String, usize, bool)> = ast
                .iter_functions()
                .map(|f| {
                    (
                        f.name.to_string(),
                        f.params.len(),
                        f.access == rhai::FnAccess::Public,
                    )
                })
                .collect();
            for (hook, provided) in HOOK_POINTS {
                // Largest arity the hook can satisfy, so overloads behave like Rhai calls.
                let arity = functions
                    .iter()
                    .filter(|(name, n, public)| *public && name == hook && *n <= provided.len())
                    .map(|(_, n, _)| *n)
                    .max();
                if let Some(n) = arity {
                    let params: Vec<String> = (0..n).map(|i| format!("a{i}")).collect();
                    let params = params.join(", ");
                    shim.push_str(&format!(
                        "fn {}({params}) {{ {}::{hook}({params}) }}\n",
                        shim_name(index, hook),
                        module_name(index),
                    ));
                    calls.entry(hook).or_default().push((index, n));
                }
            }
            files.push(HookFile {
                path,
                text,
                functions,
            });
        }
        if !diags.is_empty() {
            return Err(diags);
        }
        let shim = engine.compile(&shim).map_err(|e| {
            vec![Diagnostic::new(format!(
                "internal error: hook dispatch did not compile: {e}"
            ))]
        })?;
        Ok(Hooks {
            engine,
            shim,
            files,
            calls,
            repo_path: repo_path.to_path_buf(),
            console,
            errors: Mutex::new(Vec::new()),
        })
    }

    /// Whether any hook failed at a point where failing does not stop the command: the command
    /// must then exit 1.
    pub fn had_errors(&self) -> bool {
        !self.errors().is_empty()
    }

    /// Every hook failure reported so far, for summaries and tests.
    pub fn errors(&self) -> Vec<Diagnostic> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many hook files were loaded.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Warnings for `cinch test`: functions that look like misspelt hooks, and hooks that
    /// declare more parameters than their point provides (they would never be called).
    pub fn lint(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for file in &self.files {
            let first = out.len();
            for (name, arity, public) in &file.functions {
                let loc = function_location(&file.path, &file.text, name);
                if let Some((_, provided)) = HOOK_POINTS.iter().find(|(h, _)| h == name) {
                    if !public {
                        out.push(
                            Diagnostic::at(
                                loc,
                                format!("hook `{name}` is private and is never called"),
                            )
                            .with_hint("remove `private`"),
                        );
                    } else if *arity > provided.len() {
                        let callable = file
                            .functions
                            .iter()
                            .any(|(n, a, _)| n == name && *a <= provided.len());
                        if !callable {
                            out.push(
                                Diagnostic::at(
                                    loc,
                                    format!(
                                        "hook `{name}` declares {arity} parameters but {name} provides {} ({}); it is never called",
                                        provided.len(),
                                        provided.join(", ")
                                    ),
                                )
                                .with_hint(format!("declare at most: fn {name}({})", provided.join(", "))),
                            );
                        }
                    }
                } else if let Some(hook) = close_hook_name(name) {
                    out.push(
                        Diagnostic::at(
                            loc,
                            format!(
                                "function `{name}` is not a hook point and is never called by cinch"
                            ),
                        )
                        .with_hint(format!("did you mean `{hook}`?")),
                    );
                }
            }
            out[first..].sort_by_key(|d| d.location.as_ref().map_or(0, |l| l.line));
        }
        out
    }

    /// Calls `name` in every file defining it, stopping at the first file that changes the flow.
    fn dispatch(&self, event: &Event<'_>) -> Flow {
        let name = event.name();
        let Some(targets) = self.calls.get(name) else {
            return Flow::Continue;
        };
        let args = self.arguments(event);
        for &(index, arity) in targets {
            let call_args: Vec<Dynamic> = args.iter().take(arity).cloned().collect();
            let budget = crate::budget::Guard::new(crate::budget::Stop::OnNewInterrupt);
            let result = self.engine.call_fn_with_options::<Dynamic>(
                CallFnOptions::new().eval_ast(false).rewind_scope(true),
                &mut Scope::new(),
                &self.shim,
                shim_name(index, name),
                call_args,
            );
            drop(budget);
            let Err(err) = result else { continue };
            let file = &self.files[index];
            let mut failure = Failure::from_error(&err, &file.path);
            if failure.location.line == 0 {
                // Some errors (the operation limit) carry no position: point at the hook itself.
                failure.location = function_location(&file.path, &file.text, name);
            }
            let flow = match (&failure.flow, event) {
                (Some(FlowRequest::SkipNode(reason)), Event::NodeApplyStart { .. } | Event::NodeRunStart { .. }) => {
                    return Flow::SkipNode(reason.clone());
                }
                (Some(FlowRequest::Abort(reason)), Event::ApplyStart { .. } | Event::RunStart { .. }) => {
                    return Flow::Abort(reason.clone());
                }
                (Some(FlowRequest::SkipNode(_)), _) => self.fail(
                    event,
                    &failure,
                    &format!("skip_node() only works in node_apply_start and node_run_start, not in {name}"),
                ),
                (Some(FlowRequest::Abort(_)), _) => self.fail(
                    event,
                    &failure,
                    &format!("abort() only works in apply_start and run_start, not in {name}"),
                ),
                (None, _) => self.fail(event, &failure, &failure.message),
            };
            if flow != Flow::Continue {
                return flow;
            }
        }
        Flow::Continue
    }

    /// Reports a failed hook and decides the fail-closed flow for its point.
    fn fail(&self, event: &Event<'_>, failure: &Failure, message: &str) -> Flow {
        let name = event.name();
        let diag = Diagnostic::at(
            failure.location.clone(),
            format!("hook {name} failed: {message}"),
        );
        if self.console.json() {
            self.console.json_line(&json!({
                "event": "hook_error",
                "hook": name,
                "file": failure.location.file,
                "line": failure.location.line,
                "column": failure.location.column,
                "message": message,
            }));
        } else {
            self.console.err(&format!("error: {diag}"));
        }
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(diag);
        let reason = format!("hook failed at {}: {message}", failure.location);
        match event {
            Event::ApplyStart { .. } | Event::RunStart { .. } => Flow::Abort(reason),
            Event::NodeApplyStart { .. } | Event::NodeRunStart { .. } => Flow::SkipNode(reason),
            Event::ItemApplyStart { .. }
            | Event::ActionRunStart { .. }
            | Event::TestNode { .. } => Flow::Abort(reason),
            _ => Flow::Continue,
        }
    }

    /// The full argument list of an event's hook (in [`HOOK_POINTS`] order).
    fn arguments(&self, event: &Event<'_>) -> Vec<Dynamic> {
        let repo = self.repo_value();
        let secs = |d: &std::time::Duration| Dynamic::from_float(d.as_secs_f64() as FLOAT);
        let s = |t: &str| Dynamic::from(t.to_string());
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
                Dynamic::from(String::from_utf8_lossy(stdout).into_owned()),
                Dynamic::from(String::from_utf8_lossy(stderr).into_owned()),
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

    fn repo_value(&self) -> Dynamic {
        let mut m = Map::new();
        m.insert(
            "path".into(),
            Dynamic::from(self.repo_path.to_string_lossy().into_owned()),
        );
        Dynamic::from_map(m)
    }
}

impl Subscriber for Hooks {
    fn on_event(&self, event: &Event<'_>) -> Flow {
        self.dispatch(event)
    }

    fn had_errors(&self) -> bool {
        Hooks::had_errors(self)
    }
}

impl Subscriber for Arc<Hooks> {
    fn on_event(&self, event: &Event<'_>) -> Flow {
        self.dispatch(event)
    }

    fn had_errors(&self) -> bool {
        Hooks::had_errors(self)
    }
}

/// `hooks/*.rhai` in file-name order; no `hooks/` directory means no hooks.
fn hook_paths(repo_path: &Path) -> Result<Vec<PathBuf>, Vec<Diagnostic>> {
    let dir = repo_path.join("hooks");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(vec![Diagnostic::at(
                Location::file(&dir),
                format!("cannot read hooks directory: {e}"),
            )]);
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rhai") && p.is_file())
        .collect();
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(paths)
}

fn module_name(index: usize) -> String {
    format!("cinch_hook_{index}")
}

fn shim_name(index: usize, hook: &str) -> String {
    format!("cinch_call_{index}_{hook}")
}

/// The engine hooks run in: the shared sandbox plus the functions hooks-examples/README.md
/// promises.
fn build_engine(repo_path: &Path, console: Arc<Console>, options: HookOptions) -> Engine {
    let log_console = console.clone();
    let log: rhai_engine::LogFn = Arc::new(move |source, text| {
        let file = source.map(|s| {
            Path::new(s)
                .file_name()
                .map_or(s.to_string(), |f| f.to_string_lossy().into_owned())
        });
        if log_console.json() {
            log_console.json_line(&json!({"event": "hook_log", "file": file, "message": text}));
        } else if !log_console.quiet() {
            match file {
                Some(f) => log_console.out(&format!("hook {f}: {text}")),
                None => log_console.out(&format!("hook: {text}")),
            }
        }
    });
    let sandbox = crate::repo::Sandbox::new(repo_path, options.allow_external_symlinks);
    let mut engine = rhai_engine::engine_with_log(&sandbox, log);
    let options = Arc::new(options);

    let o = options.clone();
    engine.register_fn("env", move |name: &str| -> String {
        o.env
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
            .unwrap_or_default()
    });

    let o = options.clone();
    engine.register_fn("now", move || -> FLOAT {
        o.now.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        }) as FLOAT
    });

    // Who cinch acts as (lock owner), so hooks never guess it from `$USER`.
    let o = options.clone();
    engine.register_fn("identity", move || -> String {
        match o.env.get("CINCH_IDENTITY").filter(|v| !v.trim().is_empty()) {
            Some(id) => id.clone(),
            None => crate::lock::identity(),
        }
    });

    // Times for people carry their zone: UTC RFC 3339, like the JSON output.
    engine.register_fn("format_utc", |secs: INT| crate::lock::rfc3339(secs));
    engine.register_fn("format_utc", |secs: FLOAT| {
        crate::lock::rfc3339(secs.floor() as i64)
    });

    let runner = {
        let o = options.clone();
        let cwd = repo_path.to_path_buf();
        Arc::new(move |ctx: &rhai::NativeCallContext, cmd: &str, secs: f64| {
            run_local(&cwd, &o.env, cmd, secs).map_err(|msg| {
                Box::new(EvalAltResult::ErrorRuntime(
                    format!("run_local: {msg}").into(),
                    ctx.call_position(),
                ))
            })
        })
    };
    let r = runner.clone();
    engine.register_fn(
        "run_local",
        move |ctx: rhai::NativeCallContext, cmd: &str| r(&ctx, cmd, RUN_LOCAL_TIMEOUT),
    );
    let r = runner.clone();
    engine.register_fn(
        "run_local",
        move |ctx: rhai::NativeCallContext, cmd: &str, secs: FLOAT| r(&ctx, cmd, secs),
    );
    let r = runner;
    engine.register_fn(
        "run_local",
        move |ctx: rhai::NativeCallContext, cmd: &str, secs: INT| r(&ctx, cmd, secs as f64),
    );

    engine.register_fn("quote", |s: &str| crate::shell::quote(s));

    for (kind, fn_name) in [("skip_node", "skip_node"), ("abort", "abort")] {
        engine.register_fn(
            fn_name,
            move |ctx: rhai::NativeCallContext, reason: &str| -> Result<(), Box<EvalAltResult>> {
                let mut m = Map::new();
                m.insert(FLOW_TAG.into(), Dynamic::from(kind.to_string()));
                m.insert("reason".into(), Dynamic::from(reason.to_string()));
                Err(Box::new(EvalAltResult::ErrorRuntime(
                    Dynamic::from_map(m),
                    ctx.call_position(),
                )))
            },
        );
    }
    engine
}

/// Seconds a `run_local` command may take unless the hook passes its own limit.
pub const RUN_LOCAL_TIMEOUT: f64 = 300.0;

/// `sh -c cmd` on the control machine, in the repo, killed (with everything it started) after
/// `timeout` seconds or on a second Ctrl-C, so a hook can never hang cinch.
fn run_local(
    cwd: &Path,
    env: &HashMap<String, String>,
    cmd: &str,
    timeout: f64,
) -> Result<Map, String> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(cwd)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can kill what the command started too.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start sh: {e}"))?;
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(timeout.max(0.0));
    let mut nap = std::time::Duration::from_micros(200);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if crate::interrupt::forced() => break Err("interrupted".to_string()),
            Ok(None) if std::time::Instant::now() >= deadline => {
                break Err(format!("timed out after {timeout}s: {cmd}"));
            }
            Ok(None) => {
                std::thread::sleep(nap);
                nap = (nap * 2).min(std::time::Duration::from_millis(20));
            }
            Err(e) => break Err(format!("waiting for sh: {e}")),
        }
    };
    // SAFETY: kill(2) on the process group we created; no memory is touched.
    let kill_group = || unsafe {
        libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
    };
    let status = match status {
        Ok(s) => s,
        Err(msg) => {
            kill_group();
            let _ = child.wait();
            return Err(msg);
        }
    };
    // Something the command left running in the background may hold its output open: wait
    // for that only until the deadline.
    while !(stdout.is_finished() && stderr.is_finished()) {
        if std::time::Instant::now() >= deadline || crate::interrupt::forced() {
            kill_group();
            std::thread::sleep(std::time::Duration::from_millis(50));
            if !(stdout.is_finished() && stderr.is_finished()) {
                return Err(format!("output still open after {timeout}s: {cmd}"));
            }
        }
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
    let rc = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    let text = |h: std::thread::JoinHandle<Vec<u8>>| {
        Dynamic::from(String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned())
    };
    let mut m = Map::new();
    m.insert("rc".into(), Dynamic::from_int(rc as INT));
    m.insert("stdout".into(), text(stdout));
    m.insert("stderr".into(), text(stderr));
    Ok(m)
}

/// What `skip_node` / `abort` asked for.
enum FlowRequest {
    SkipNode(String),
    Abort(String),
}

/// A hook error boiled down to where it happened and what it says.
struct Failure {
    location: Location,
    message: String,
    flow: Option<FlowRequest>,
}

impl Failure {
    /// Digs through Rhai's call wrappers to the innermost error, which has the useful position.
    fn from_error(err: &EvalAltResult, default_file: &Path) -> Failure {
        let mut file = default_file.to_path_buf();
        let mut cur = err;
        loop {
            match cur {
                EvalAltResult::ErrorInFunctionCall(_, source, inner, _) => {
                    if !source.is_empty() {
                        file = PathBuf::from(source.as_str());
                    }
                    cur = inner;
                }
                EvalAltResult::ErrorInModule(path, inner, _) => {
                    file = Path::new("libs").join(path).with_extension("rhai");
                    cur = inner;
                }
                _ => break,
            }
        }
        let location = location(&file, cur.position());
        let flow = match cur {
            EvalAltResult::ErrorRuntime(v, _) => v.read_lock::<Map>().and_then(|m| {
                let kind = m.get(FLOW_TAG)?.clone().into_string().ok()?;
                let reason = m
                    .get("reason")
                    .and_then(|r| r.clone().into_string().ok())
                    .unwrap_or_default();
                match kind.as_str() {
                    "skip_node" => Some(FlowRequest::SkipNode(reason)),
                    "abort" => Some(FlowRequest::Abort(reason)),
                    _ => None,
                }
            }),
            _ => None,
        };
        let message = match cur {
            EvalAltResult::ErrorTooManyOperations(_) | EvalAltResult::ErrorTerminated(..) => {
                rhai_engine::stop_reason(cur).unwrap_or_default()
            }
            EvalAltResult::ErrorRuntime(v, _) if v.is_string() => v.to_string(),
            // The position is already in the location; Rhai appends it to the text too.
            other => {
                let text = other.to_string();
                match text.rfind(" (line ") {
                    Some(i) if text.ends_with(')') => text[..i].to_string(),
                    _ => text,
                }
            }
        };
        Failure {
            location,
            message,
            flow,
        }
    }
}

fn location(file: &Path, pos: rhai::Position) -> Location {
    Location {
        file: file.to_path_buf(),
        line: pos.line().unwrap_or(0),
        column: pos.position().unwrap_or(0),
    }
}

/// Where `fn name` is written in a hook file (Rhai does not expose function positions).
fn function_location(path: &Path, text: &str, name: &str) -> Location {
    regex::Regex::new(&format!(r"\bfn\s+{}\s*\(", regex::escape(name)))
        .ok()
        .and_then(|re| re.find(text))
        .map_or_else(
            || Location::file(path),
            |m| Location::from_offset(path, text, m.start()),
        )
}

/// The hook name `name` was probably meant to be.
fn close_hook_name(name: &str) -> Option<&'static str> {
    HOOK_POINTS
        .iter()
        .map(|(h, _)| *h)
        .map(|h| (strsim::damerau_levenshtein(name, h), h))
        .filter(|(d, h)| *d > 0 && *d <= if h.len() <= 6 { 1 } else { 2 })
        .min_by_key(|(d, _)| *d)
        .map(|(_, h)| h)
}

fn to_dynamic(value: &Value) -> Dynamic {
    rhai::serde::to_dynamic(value).unwrap_or(Dynamic::UNIT)
}

/// A node as hooks see it: name, hostname, groups, bundles, metadata and the connection fields.
fn node_value(node: &Node) -> Dynamic {
    rhai::serde::to_dynamic(node).unwrap_or(Dynamic::UNIT)
}

/// An item as hooks see it: id, type, name, bundle, attributes.
fn item_value(item: &Item) -> Dynamic {
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
fn item_attributes(kind: &ItemKind) -> Value {
    let mode = |m: Option<u32>| m.map(|m| format!("{m:04o}"));
    match kind {
        ItemKind::File(f) => {
            let content_type = match f.content_type {
                ContentType::Text => "text",
                ContentType::Jinja2 => "jinja2",
                ContentType::Base64 => "base64",
                ContentType::Binary => "binary",
                ContentType::Any => "any",
            };
            let mut m = BTreeMap::new();
            match &f.source {
                FileSource::Content(c) if !f.sensitive => {
                    m.insert("content", json!(c));
                }
                FileSource::Source(p) => {
                    m.insert("source", json!(p.to_string_lossy()));
                }
                _ => {}
            }
            m.insert("content_type", json!(content_type));
            m.insert("mode", json!(mode(f.mode)));
            m.insert("owner", json!(f.owner));
            m.insert("group", json!(f.group));
            m.insert("delete", json!(f.delete));
            m.insert("sensitive", json!(f.sensitive));
            json!(m)
        }
        ItemKind::Directory(d) => json!({
            "mode": mode(d.mode), "owner": d.owner, "group": d.group, "purge": d.purge, "delete": d.delete,
        }),
        ItemKind::Symlink(s) => json!({
            "target": s.target, "owner": s.owner, "group": s.group, "delete": s.delete,
        }),
        ItemKind::Action(a) => json!({
            "command": a.command,
            "expected_return_code": a.expected_return_code,
            "expected_stdout": a.expected_stdout,
            "expected_stderr": a.expected_stderr,
            "interactive": a.interactive,
        }),
        ItemKind::User(u) => json!({
            "uid": u.uid, "gid": u.gid, "groups": u.groups, "home": u.home, "shell": u.shell,
            "full_name": u.full_name, "delete": u.delete,
        }),
        ItemKind::Group(g) => json!({"gid": g.gid, "delete": g.delete}),
        ItemKind::PkgApt(p) => json!({"installed": p.installed}),
        ItemKind::SvcSystemd(s) => json!({
            "running": s.running, "enabled": s.enabled, "masked": s.masked,
        }),
    }
}

/// The bus every command emits on: one place where subscribers (hooks, ...) are attached, so
/// all commands get the same ones.
pub fn command_bus(
    console: &Arc<Console>,
    repo: &crate::repo::Repo,
) -> crate::error::Result<crate::events::Bus> {
    Ok(command_bus_with_hooks(console, repo)?.0)
}

/// [`command_bus`] plus the hooks it loaded, for commands that inspect them (`cinch test`
/// lints them); hooks run their top level at load, so they must never be loaded twice.
pub fn command_bus_with_hooks(
    console: &Arc<Console>,
    repo: &crate::repo::Repo,
) -> crate::error::Result<(crate::events::Bus, Arc<Hooks>)> {
    let mut bus = crate::events::Bus::new();
    let hooks = subscribe(
        &mut bus,
        &repo.path,
        repo.settings.allow_external_symlinks,
        console.clone(),
    )?;
    Ok((bus, hooks))
}

#[cfg(test)]
mod examples;
#[cfg(test)]
mod tests;
