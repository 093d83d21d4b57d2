//! Hook loading: find `hooks/*.rhai`, compile each in the sandbox, run its top level once,
//! and record which lifecycle points it defines.

use crate::console::Console;
use crate::diag::{Diagnostic, Location};
use rhai::{Module, Scope};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::*;

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
        let outlet = Outlet::new();
        if console.json() {
            outlet.add(Arc::new(crate::render::json::JsonSubscriber::reports_only(
                console.clone(),
            )));
        }
        outlet.add(Arc::new(crate::render::hook_lines::HookLines::new(console)));
        Hooks::load_into(repo_path, outlet, options)
    }

    /// [`Hooks::load_with`], the hooks' `log()` and error lines going to `outlet`'s renderers
    /// as events.
    pub fn load_into(
        repo_path: &Path,
        outlet: Outlet,
        options: HookOptions,
    ) -> Result<Hooks, Vec<Diagnostic>> {
        let paths = hook_paths(repo_path)?;
        let sandbox = crate::repo::Sandbox::new(repo_path, options.allow_external_symlinks);
        let mut engine = build_engine(repo_path, outlet.clone(), options);
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
            outlet,
            errors: Mutex::new(Vec::new()),
        })
    }
}

/// `hooks/*.rhai` in file-name order; no `hooks/` directory means no hooks.
pub(super) fn hook_paths(repo_path: &Path) -> Result<Vec<PathBuf>, Vec<Diagnostic>> {
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

pub(super) fn module_name(index: usize) -> String {
    format!("cinch_hook_{index}")
}

pub(super) fn shim_name(index: usize, hook: &str) -> String {
    format!("cinch_call_{index}_{hook}")
}
