//! The sandboxed Rhai engine shared by hooks and `items.rhai`: bounded work, imports only
//! from the repo's `libs/`, no other file or process access except what cinch provides.

use std::cell::RefCell;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rhai::module_resolvers::FileModuleResolver;
use rhai::{Engine, EvalAltResult, Module, ModuleResolver, Position};

use crate::repo::Sandbox;

/// Upper bound on Rhai operations per call, so a `loop {}` in a repo script cannot hang cinch.
pub const MAX_OPERATIONS: u64 = 5_000_000;
/// Longest string a script may build (bytes); command output handed in may be longer.
pub const MAX_STRING_SIZE: usize = 16 << 20;
/// Largest array or object map a script may build.
pub const MAX_COLLECTION_SIZE: usize = 1 << 20;
/// Most modules one call may import (directly or transitively).
pub const MAX_MODULES: usize = 64;
/// Most bytes one call may allocate in total: operations are cheap to count but one of them
/// can build a megabyte string, so a loop doing that would stay under [`MAX_OPERATIONS`] for hours.
pub const MAX_ALLOCATION: u64 = crate::budget::MAX_SCRIPT_ALLOCATION;

/// Where script output (`log`, `print`, `debug`) goes: `(source file, text)`. Scripts must
/// never print on their own, or they would tear progress bars.
pub type LogFn = Arc<dyn Fn(Option<&str>, &str) + Send + Sync>;

/// A fresh engine with cinch's limits; `import "x"` resolves to `REPO/libs/x.rhai` only.
/// `print`, `debug` and `log` output is dropped: use [`engine_with_log`] to show it.
pub fn engine(sandbox: &Sandbox) -> Engine {
    engine_with_log(sandbox, Arc::new(|_, _| {}))
}

/// Like [`engine`], with `log(text)`, `print` and `debug` routed to `log` (normally the console).
pub fn engine_with_log(sandbox: &Sandbox, log: LogFn) -> Engine {
    let mut engine = Engine::new();
    // Rhai's string interner is one lock per engine that every string assignment, string
    // interpolation and `for` loop takes for writing; a thread that finds it taken sleeps
    // 10 ms (rhai's `locked_write`). Reactors and hooks run on every worker thread with one
    // shared engine, so with it two threads mostly slept on each other (`cinch test` used
    // one core of two). Strings simply stay unshared without it.
    engine.set_max_strings_interned(0);
    engine.set_max_operations(MAX_OPERATIONS);
    engine.set_max_call_levels(64);
    engine.set_max_expr_depths(128, 64);
    engine.set_max_string_size(MAX_STRING_SIZE);
    engine.set_max_array_size(MAX_COLLECTION_SIZE);
    engine.set_max_map_size(MAX_COLLECTION_SIZE);
    engine.set_max_modules(MAX_MODULES);
    engine.set_module_resolver(LibsResolver::new(sandbox.clone()));
    // Memory and Ctrl-C are checked every few operations; the reason becomes the error.
    engine.on_progress(|ops| {
        if ops % 16 != 0 {
            return None;
        }
        crate::budget::exceeded(MAX_ALLOCATION).map(rhai::Dynamic::from)
    });

    // Rhai's own to_json writes strings with Rust escapes, which is not always valid JSON.
    engine.register_fn("to_json", |m: &mut rhai::Map| {
        json_text(&rhai::Dynamic::from_map(m.clone()))
    });
    engine.register_fn("to_json", |a: &mut rhai::Array| {
        json_text(&rhai::Dynamic::from_array(a.clone()))
    });

    crate::repo::secrets::register_rhai(&mut engine, sandbox.root().to_path_buf(), sandbox.clone());

    let l = log.clone();
    engine.on_print(move |text| l(None, text));
    let l = log.clone();
    engine.on_debug(move |text, source, _pos| l(source, text));
    let l = log;
    engine.register_fn(
        "log",
        move |ctx: rhai::NativeCallContext, value: rhai::Dynamic| {
            let text = if value.is_string() {
                value.into_string().unwrap_or_default()
            } else {
                value.to_string()
            };
            l(ctx.call_source(), &text);
        },
    );
    engine
}

/// Why a script was stopped by cinch's limits or a Ctrl-C (see [`crate::budget`]), looking
/// through the function and module calls Rhai wraps errors in; `None` for other errors.
pub fn stop_reason(err: &EvalAltResult) -> Option<String> {
    match err {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _)
        | EvalAltResult::ErrorInModule(_, inner, _) => stop_reason(inner),
        EvalAltResult::ErrorTerminated(token, _) => Some(token.to_string()),
        EvalAltResult::ErrorTooManyOperations(_) => Some(format!(
            "stopped after {MAX_OPERATIONS} operations (an endless loop?)"
        )),
        _ => None,
    }
}

fn json_text(value: &rhai::Dynamic) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

thread_local! {
    /// The modules being imported on this thread, outermost first, as (file, name): an import
    /// of one of them again is a cycle, which Rhai itself would follow until the stack overflows.
    static IMPORTING: RefCell<Vec<(PathBuf, String)>> = const { RefCell::new(Vec::new()) };
}

/// Pops [`IMPORTING`] when a module has been resolved, even if resolving failed.
struct Importing;

impl Drop for Importing {
    fn drop(&mut self) {
        IMPORTING.with(|s| s.borrow_mut().pop());
    }
}

/// Resolves `import "name"` to `libs/name.rhai` and refuses everything else: Rhai's own
/// `FileModuleResolver` happily reads absolute paths even when given a base path.
pub struct LibsResolver {
    libs: PathBuf,
    sandbox: Sandbox,
    inner: FileModuleResolver,
}

impl LibsResolver {
    /// A resolver confined to the repo's `libs/` (which need not exist).
    pub fn new(sandbox: Sandbox) -> Self {
        let libs = sandbox.root().join("libs");
        let mut inner = FileModuleResolver::new_with_path(libs.clone());
        inner.enable_cache(true);
        LibsResolver {
            libs,
            sandbox,
            inner,
        }
    }

    /// Why `path` may not be imported, if it may not.
    fn refusal(&self, path: &str) -> Option<String> {
        let p = Path::new(path);
        let plain = !path.is_empty()
            && !path.contains('\\')
            && p.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Some(format!(
                "import {path:?} refused: modules can only be imported from the repo's libs/ \
                 by a relative name such as \"notify\" (for libs/notify.rhai)"
            ));
        }
        // Nor may a symlink (libs/ itself, or a file in it) lead out of the repo.
        let file = self.libs.join(p).with_extension("rhai");
        self.sandbox.escape(&file).map(|why| {
            format!(
                "import {path:?} refused: {why}; {}",
                crate::repo::sandbox::HINT
            )
        })
    }

    fn check(&self, path: &str, pos: Position) -> Result<(), Box<EvalAltResult>> {
        match self.refusal(path) {
            Some(msg) => Err(Box::new(EvalAltResult::ErrorRuntime(msg.into(), pos))),
            None => Ok(()),
        }
    }

    /// Records that `path` is being imported, or refuses it if it already is (a cycle), naming
    /// the importing file and line and the whole chain.
    fn enter(
        &self,
        source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Importing, Box<EvalAltResult>> {
        let file = self.libs.join(path).with_extension("rhai");
        let key = file.canonicalize().unwrap_or(file);
        IMPORTING.with(|s| {
            let mut stack = s.borrow_mut();
            if let Some(start) = stack.iter().position(|(f, _)| *f == key) {
                let chain: Vec<&str> = stack[start..]
                    .iter()
                    .map(|(_, n)| n.as_str())
                    .chain([path])
                    .collect();
                let importer = match source {
                    // Rhai names a module by its path without the extension.
                    Some(src) => {
                        let src = Path::new(src);
                        let rel = src
                            .strip_prefix(&self.libs)
                            .ok()
                            .or_else(|| src.file_name().map(Path::new))
                            .unwrap_or(src);
                        Path::new("libs")
                            .join(rel)
                            .with_extension("rhai")
                            .display()
                            .to_string()
                    }
                    None => "the script".to_string(),
                };
                let line = pos.line().map(|l| format!(" line {l}")).unwrap_or_default();
                let msg = format!(
                    "import cycle: {importer}{line} imports {path:?}, which is still being \
                     imported ({}); move what both need into a third module",
                    chain.join(" -> ")
                );
                return Err(Box::new(EvalAltResult::ErrorRuntime(msg.into(), pos)));
            }
            stack.push((key, path.to_string()));
            Ok(Importing)
        })
    }
}

impl ModuleResolver for LibsResolver {
    fn resolve(
        &self,
        engine: &Engine,
        source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Arc<Module>, Box<EvalAltResult>> {
        self.check(path, pos)?;
        let _importing = self.enter(source, path, pos)?;
        self.inner.resolve(engine, source, path, pos)
    }

    fn resolve_ast(
        &self,
        engine: &Engine,
        source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Option<Result<rhai::AST, Box<EvalAltResult>>> {
        if let Err(e) = self.check(path, pos) {
            return Some(Err(e));
        }
        let _importing = match self.enter(source, path, pos) {
            Ok(i) => i,
            Err(e) => return Some(Err(e)),
        };
        self.inner.resolve_ast(engine, source, path, pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn repo_with_lib() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("libs")).expect("mkdir");
        std::fs::write(
            dir.path().join("libs/greet.rhai"),
            "fn hello(n) { `hello ${n}` }",
        )
        .expect("write");
        dir
    }

    /// Regression: with Rhai's string interner, two threads running scripts on one engine
    /// slept 10 ms whenever both assigned a string at once (`cinch test` used one core of two;
    /// `perf record -e sched:sched_switch` showed the sleeps under `get_interned_string`).
    /// Only release builds clash often enough to time, so the setting itself is pinned.
    #[test]
    fn two_threads_on_one_engine_do_not_sleep_on_its_string_interner() {
        let dir = repo_with_lib();
        let e = engine(&Sandbox::new(dir.path(), false));
        assert_eq!(e.max_strings_interned(), 0);
        // Every `let` of a string and every string built interns it (when interning is on).
        let ast = e
            .compile(
                r#"
                let names = [];
                for i in 0..1000 { names.push(`n${i}`); }
                let n = 0;
                for round in 0..20 { for s in names { let x = s; let y = s; n += 1; } }
                n
                "#,
            )
            .expect("compile");
        std::thread::scope(|s| {
            let runs: Vec<_> = (0..2)
                .map(|_| s.spawn(|| e.eval_ast::<rhai::INT>(&ast).expect("eval")))
                .collect();
            for r in runs {
                assert_eq!(r.join().expect("thread"), 20_000);
            }
        });
    }

    #[test]
    fn imports_from_libs_work() {
        let dir = repo_with_lib();
        let e = engine(&Sandbox::new(dir.path(), false));
        let out: String = e
            .eval(r#"import "greet" as g; g::hello("x")"#)
            .expect("eval");
        assert_eq!(out, "hello x");
    }

    #[test]
    fn absolute_and_parent_imports_are_refused() {
        let dir = repo_with_lib();
        // A real .rhai file outside libs/ that the plain FileModuleResolver would load.
        let outside = dir.path().join("outside.rhai");
        std::fs::write(&outside, "fn secret() { 42 }").expect("write");
        let e = engine(&Sandbox::new(dir.path(), false));
        let abs = outside.with_extension("");
        for path in [
            abs.to_string_lossy().into_owned(),
            "../outside".into(),
            "./greet".into(),
        ] {
            let err = e
                .run(&format!("import {path:?} as m;"))
                .expect_err("must be refused");
            assert!(err.to_string().contains("refused"), "{path}: {err}");
        }
    }

    #[test]
    fn symlink_out_of_the_repo_in_libs_is_refused_unless_allowed() {
        let dir = repo_with_lib();
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret.rhai"), "fn secret() { 42 }").expect("write");
        std::os::unix::fs::symlink(
            outside.path().join("secret.rhai"),
            dir.path().join("libs/out.rhai"),
        )
        .expect("symlink");
        // A link that stays inside the repo keeps working.
        std::fs::write(dir.path().join("shared.rhai"), "fn common() { 7 }").expect("write");
        std::os::unix::fs::symlink("../shared.rhai", dir.path().join("libs/in.rhai"))
            .expect("symlink");
        let e = engine(&Sandbox::new(dir.path(), false));
        let err = e.run(r#"import "out" as m;"#).expect_err("must be refused");
        let text = err.to_string();
        assert!(
            text.contains("libs/out.rhai is a symlink to") && text.contains("outside the repo"),
            "{text}"
        );
        let n: i64 = e.eval(r#"import "in" as m; m::common()"#).expect("inside");
        assert_eq!(n, 7);
        let n: i64 = engine(&Sandbox::new(dir.path(), true))
            .eval(r#"import "out" as m; m::secret()"#)
            .expect("allowed");
        assert_eq!(n, 42);
    }

    #[test]
    fn symlinked_libs_directory_outside_the_repo_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("x.rhai"), "fn x() { 1 }").expect("write");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("libs")).expect("symlink");
        let err = engine(&Sandbox::new(dir.path(), false))
            .run(r#"import "x" as m;"#)
            .expect_err("must be refused");
        assert!(err.to_string().contains("libs is a symlink to"), "{err}");
    }

    #[test]
    fn to_json_is_valid_json() {
        let dir = repo_with_lib();
        let e = engine(&Sandbox::new(dir.path(), false));
        let out: String = e
            .eval(r#"let m = #{a: "q\"\x01é", b: [1, 2.5, (), true]}; m.to_json()"#)
            .expect("eval");
        let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(v["a"], "q\"\u{1}é");
        assert_eq!(v["b"], serde_json::json!([1, 2.5, null, true]));
        let out: String = e.eval(r#"[1, "x"].to_json()"#).expect("eval");
        assert_eq!(out, r#"[1,"x"]"#);
    }

    #[test]
    fn endless_loop_stops_at_operation_limit() {
        let dir = repo_with_lib();
        let err = engine(&Sandbox::new(dir.path(), false))
            .run("loop {}")
            .expect_err("must stop");
        assert!(
            matches!(*err, EvalAltResult::ErrorTooManyOperations(_)),
            "{err}"
        );
    }

    #[test]
    fn huge_strings_are_refused() {
        let dir = repo_with_lib();
        let err = engine(&Sandbox::new(dir.path(), false))
            .run(r#"let s = "x"; loop { s += s; }"#)
            .expect_err("must stop");
        assert!(
            matches!(*err, EvalAltResult::ErrorDataTooLarge(..)),
            "{err}"
        );
    }

    #[test]
    fn libs_import_cycle_is_an_error_with_file_and_line_not_a_stack_overflow() {
        let dir = repo_with_lib();
        std::fs::write(
            dir.path().join("libs/u.rhai"),
            "import \"u\" as u;\nfn f() { 1 }\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("libs/a.rhai"), "import \"b\" as b;\n").expect("write");
        std::fs::write(
            dir.path().join("libs/b.rhai"),
            "// b needs a\n\nimport \"a\" as a;\n",
        )
        .expect("write");
        let e = engine(&Sandbox::new(dir.path(), false));
        let err = e.run(r#"import "u" as u;"#).expect_err("self import");
        let text = err.to_string();
        assert!(
            text.contains("import cycle: libs/u.rhai line 1 imports \"u\"")
                && text.contains("(u -> u)"),
            "{text}"
        );
        let err = e.run(r#"import "a" as a;"#).expect_err("a <-> b");
        let text = err.to_string();
        assert!(
            text.contains("import cycle: libs/b.rhai line 3 imports \"a\"")
                && text.contains("(a -> b -> a)"),
            "{text}"
        );
        // The stack of imports in progress is unwound: a sound import still works afterwards,
        // also twice from one script.
        let out: String = e
            .eval(r#"import "greet" as g; import "greet" as h; h::hello("y")"#)
            .expect("eval");
        assert_eq!(out, "hello y");
    }

    #[test]
    fn loop_building_megabyte_strings_stops_at_the_memory_limit() {
        let dir = repo_with_lib();
        let started = std::time::Instant::now();
        let _budget = crate::budget::Guard::new(crate::budget::Stop::OnNewInterrupt);
        let err = engine(&Sandbox::new(dir.path(), false))
            .run(r#"let n = 0; loop { let s = "x"; for i in 0..20 { s += s; } n += s.len(); }"#)
            .expect_err("must stop");
        let reason = stop_reason(&err).unwrap_or_else(|| panic!("not a limit: {err}"));
        assert!(reason.contains("memory limit exceeded"), "{reason}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn print_debug_and_log_go_to_the_log_callback() {
        let dir = repo_with_lib();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let mut e = engine_with_log(
            &Sandbox::new(dir.path(), false),
            Arc::new(move |_src, text| s.lock().expect("lock").push(text.to_string())),
        );
        e.set_optimization_level(rhai::OptimizationLevel::None);
        e.run(r#"print("a"); debug("b"); log("c"); log(42);"#)
            .expect("run");
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen, vec!["a", "\"b\"", "c", "42"]);
    }
}
