//! The sandboxed Rhai engine shared by hooks and `items.rhai`: bounded work, imports only
//! from the repo's `libs/`, no other file or process access except what cinch provides.

use std::path::Path;

/// Upper bound on Rhai operations per call, so a `loop {}` in a repo script cannot hang cinch.
pub const MAX_OPERATIONS: u64 = 5_000_000;

/// A fresh engine with cinch's limits; `import "x"` resolves to `REPO/libs/x.rhai` only.
pub fn engine(repo_path: &Path) -> rhai::Engine {
    let mut engine = rhai::Engine::new();
    engine.set_max_operations(MAX_OPERATIONS);
    engine.set_max_call_levels(64);
    engine.set_max_expr_depths(128, 64);
    let mut resolver = rhai::module_resolvers::FileModuleResolver::new_with_path(repo_path.join("libs"));
    resolver.enable_cache(true);
    engine.set_module_resolver(resolver);
    engine
}
