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
//!
//! Here: the hook points, dispatch and fail-closed flows; `load` (finding and compiling the
//! files), `args` (each event's arguments as Rhai values, from its serde payload) and `api` (the engine and the
//! functions hooks get).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rhai::{AST, CallFnOptions, Dynamic, Engine, EvalAltResult, Map, Scope};

use crate::console::Console;
use crate::diag::{Diagnostic, Location};
use crate::error::Error;
use crate::events::{Bus, Event, Flow, Outlet, Subscriber};
use crate::repo::rhai_engine;

mod api;
mod args;
mod load;

pub use api::RUN_LOCAL_TIMEOUT;
use api::build_engine;
use load::*;

pub use crate::events::HOOK_POINTS;

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
    /// Where the hooks' own lines go (`log()`, failures): the renderers, never the hooks.
    outlet: Outlet,
    /// Failures already reported; never locked while a hook runs.
    errors: Mutex<Vec<Diagnostic>>,
}

/// Loads the repo's hooks and adds them to `bus`, with the terminal renderer of their `log()`
/// and error lines on `console`; their lines are events on `bus`'s renderers (a JSON
/// subscriber already there prints them). Keep the returned handle to ask
/// [`Hooks::had_errors`] before choosing the exit code.
pub fn subscribe(
    bus: &mut Bus,
    repo_path: &Path,
    allow_external_symlinks: bool,
    console: Arc<Console>,
) -> Result<Arc<Hooks>, Error> {
    let mut options = HookOptions::from_env().map_err(|d| Error::Repo(vec![d]))?;
    options.allow_external_symlinks = allow_external_symlinks;
    // Before loading: a hook's top level may already log.
    bus.subscribe(Box::new(crate::render::hook_lines::HookLines::new(console)));
    let hooks =
        Arc::new(Hooks::load_into(repo_path, bus.outlet().clone(), options).map_err(Error::Repo)?);
    bus.subscribe_hooks(Box::new(hooks.clone()));
    Ok(hooks)
}

impl Hooks {
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
        let Some(name) = event.hook_point() else {
            return Flow::Continue;
        };
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
        self.outlet
            .emit(&Event::Report(crate::events::Report::HookError {
                hook: name,
                file: &failure.location.file,
                line: failure.location.line,
                column: failure.location.column,
                message,
            }));
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
}

impl Subscriber for Hooks {
    fn on_event(&self, event: &Event<'_>) -> Flow {
        self.dispatch(event)
    }

    fn had_errors(&self) -> bool {
        Hooks::had_errors(self)
    }

    fn reads_item_states(&self) -> bool {
        !self.calls.is_empty()
    }
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

/// The bus every command emits on: one place where subscribers are attached, so all commands
/// get the same ones: the hooks, then (with `--json`) the one JSON subscriber, which prints
/// hook points as lines when `json_hook_points` (apply, verify, run; `lock` and `test` print
/// their reports only), and the terminal lines of the hooks' `log()` and errors.
pub fn command_bus(
    console: &Arc<Console>,
    repo: &crate::repo::Repo,
    json_hook_points: bool,
) -> crate::error::Result<crate::events::Bus> {
    Ok(command_bus_with_hooks(console, repo, json_hook_points)?.0)
}

/// [`command_bus`] plus the hooks it loaded, for commands that inspect them (`cinch test`
/// lints them); hooks run their top level at load, so they must never be loaded twice.
pub fn command_bus_with_hooks(
    console: &Arc<Console>,
    repo: &crate::repo::Repo,
    json_hook_points: bool,
) -> crate::error::Result<(crate::events::Bus, Arc<Hooks>)> {
    let mut bus = renderer_bus(console, json_hook_points);
    let hooks = subscribe(
        &mut bus,
        &repo.path,
        repo.settings.allow_external_symlinks,
        console.clone(),
    )?;
    Ok((bus, hooks))
}

/// A bus with the JSON subscriber (with `--json`) and no hooks yet: [`command_bus`]'s start,
/// and the bus of a command whose hooks did not load (`cinch test` still reports).
pub fn renderer_bus(console: &Arc<Console>, json_hook_points: bool) -> crate::events::Bus {
    let mut bus = crate::events::Bus::new();
    if console.json() {
        let json = if json_hook_points {
            crate::render::json::JsonSubscriber::new(console.clone())
        } else {
            crate::render::json::JsonSubscriber::reports_only(console.clone())
        };
        bus.subscribe(Box::new(json));
    }
    bus
}

#[cfg(test)]
mod examples;
#[cfg(test)]
mod tests;
