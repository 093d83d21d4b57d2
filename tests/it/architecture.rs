//! The module graph of `src/`: imports between top-level modules only run downwards.
//!
//! The layers, lowest first (a module may import its own layer and the layers below it, and
//! the graph of top-level modules must have no cycle):
//!
//! 0. foundation — `console`, `output`, `shell`, `diag`, `diff`, `budget`, `interrupt`,
//!    `fanout`, `error`, `mask`, `shard`: printing, quoting, diagnostics, errors and the masking of
//!    secret values on every output; no cinch concepts.
//! 1. model — `repo`: the loaded, immutable repository, with its computed metadata
//!    (`repo::computed`), its secrets vault (`repo::secrets`) and the sandboxed Rhai engine its
//!    scripts, reactors and hooks run in (`repo::rhai_engine`).
//! 2. node access — `transport` (ssh/local) and `node_shell` (the one batched node-side shell
//!    that reads state and applies fixes, and the records it prints).
//! 3. items — `items`: item types, parsing, rendering, expected and actual state.
//! 4. plan — `plan` (one node's items with dependencies resolved) and `prepare` (load,
//!    render and plan one node: the local work every command shares).
//! 5. engine — `executor` (walks a plan on a node), `lock` (lock protocols and the apply
//!    guard), `events` (the event bus), `review` (an item's canonical expected state and its
//!    hash; the repo at a git revision).
//! 6. subscribers and fleet — `hooks` (repo hooks), `render` (the JSON lines and the terminal
//!    renderers of every command and of the hooks' log lines), each a subscriber of the event bus, and `fleet` (the
//!    per-node scaffold: fan-out, interrupts, hook skips, dummy nodes, node_ssh_connect).
//! 7. settings — `settings`: the validated command-line values commands consume.
//! 8. commands — `commands`: apply, verify, run, lock, test and the inspection commands.
//! 9. cli — `cli`: clap definitions, man pages, dispatch; the only user of clap.
//!
//! A new top-level module must be given a layer here; the test says so when one is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every top-level module and its layer (see the module doc).
const LAYERS: &[(&str, u8)] = &[
    ("console", 0),
    ("output", 0),
    ("shell", 0),
    ("diag", 0),
    ("diff", 0),
    ("digest", 0),
    ("budget", 0),
    ("interrupt", 0),
    ("fanout", 0),
    ("error", 0),
    ("mask", 0),
    ("limits", 0),
    ("shard", 0),
    ("repo", 1),
    ("transport", 2),
    ("node_shell", 2),
    ("items", 3),
    ("plan", 4),
    ("prepare", 4),
    ("executor", 5),
    ("lock", 5),
    ("events", 5),
    ("review", 5),
    ("hooks", 6),
    ("fleet", 6),
    ("render", 6),
    ("settings", 7),
    ("commands", 8),
    ("cli", 9),
];

/// The top-level module a file under `src/` belongs to (`None` for the crate roots); no file
/// is included with `#[path]` from elsewhere.
fn top_module(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    if name == "lib" || name == "main" {
        return None;
    }
    Some(name.to_string())
}

/// The source without `//` comments (doc links name modules without depending on them).
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            // `"...//..."` inside a string literal is rare in import lines; a URL in a string
            // only shortens that line, which never adds an edge.
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules `text` names through `crate::x` paths and `use crate::{x, y::z}`.
fn imported_modules(text: &str) -> BTreeSet<String> {
    let text = strip_comments(text);
    let mut out = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("crate::") {
        // `cinch_crate::` or `$crate::` are not paths of this crate.
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            out.extend(group_heads(group));
        } else {
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.insert(ident);
        }
    }
    out.retain(|m| m.chars().next().is_some_and(|c| c.is_ascii_lowercase()));
    out
}

/// The first path segment of every entry of a `{a, b::c, d::{e, f}}` group (after its `{`).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 1usize;
    let mut expecting = true;
    let mut ident = String::new();
    for c in group.chars() {
        if depth == 1 && expecting {
            if c.is_ascii_alphanumeric() || c == '_' {
                ident.push(c);
                continue;
            }
            if !ident.is_empty() {
                heads.push(std::mem::take(&mut ident));
                expecting = false;
            }
        }
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => expecting = true,
            _ => {}
        }
    }
    heads
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The graph of top-level modules: module -> (imported module -> a file that imports it).
fn module_graph(src: &Path) -> BTreeMap<String, BTreeMap<String, PathBuf>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| top_module(f.strip_prefix(src).ok()?))
        .collect();
    let mut graph: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(src).expect("under src");
        let Some(from) = top_module(rel) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        let edges = graph.entry(from.clone()).or_default();
        for to in imported_modules(&text) {
            if to != from && modules.contains(&to) {
                edges.entry(to).or_insert_with(|| rel.to_path_buf());
            }
        }
    }
    graph
}

/// One cycle of the graph, as a path that starts and ends at the same module, if any.
fn find_cycle(graph: &BTreeMap<String, BTreeMap<String, PathBuf>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeMap<String, PathBuf>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            match state.get(next.as_str()) {
                Some(1) => {
                    let start = stack.iter().position(|m| m == next).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node.as_str())
            && let Some(c) = visit(node, graph, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

/// Imports that run against the layering, as readable lines; modules without a layer too.
fn layering_violations(graph: &BTreeMap<String, BTreeMap<String, PathBuf>>) -> Vec<String> {
    let layer = |m: &str| LAYERS.iter().find(|(n, _)| *n == m).map(|(_, l)| *l);
    let mut problems = Vec::new();
    for (from, edges) in graph {
        let Some(lf) = layer(from) else {
            problems.push(format!(
                "module `{from}` has no layer: add it to LAYERS in tests/it/architecture.rs"
            ));
            continue;
        };
        for (to, file) in edges {
            if let Some(lt) = layer(to).filter(|lt| *lt > lf) {
                problems.push(format!(
                    "{}: `{from}` (layer {lf}) imports `{to}` (layer {lt}), which sits above it",
                    file.display()
                ));
            }
        }
    }
    problems
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn top_level_modules_form_no_cycle() {
    let graph = module_graph(&src_dir());
    assert!(
        graph.len() >= LAYERS.len() - 1,
        "read too few modules: {:?}",
        graph.keys()
    );
    if let Some(cycle) = find_cycle(&graph) {
        let via: Vec<String> = cycle
            .windows(2)
            .map(|w| format!("{} -> {} ({})", w[0], w[1], graph[&w[0]][&w[1]].display()))
            .collect();
        panic!(
            "import cycle between top-level modules:\n{}",
            via.join("\n")
        );
    }
}

#[test]
fn imports_only_run_down_the_layers() {
    let graph = module_graph(&src_dir());
    let problems = layering_violations(&graph);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn nothing_below_the_commands_uses_clap_or_the_cli() {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| {
            let rel = f.strip_prefix(src_dir()).expect("under src");
            !matches!(top_module(rel).as_deref(), Some("cli") | None)
        })
        .filter(|f| {
            let text = strip_comments(&std::fs::read_to_string(f).expect("read source"));
            text.contains("clap::") || imported_modules(&text).contains("cli")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "use clap/cli: {offenders:?}");
}

#[test]
fn the_import_reader_sees_paths_groups_and_nested_groups() {
    let text = "use crate::error::Result;\nuse crate::{\n    diag::{Diagnostic, Location},\n    repo,\n};\n\
                fn f() { crate::shell::quote(\"x\"); }\n// crate::cli is only named here\n\
                macro_rules! m { () => { $crate::hidden } }\n";
    let found = imported_modules(text);
    let want: BTreeSet<String> = ["error", "diag", "repo", "shell"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, want);
}

#[test]
fn the_checks_catch_a_cycle_and_an_upward_import() {
    let mut graph: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    let mut edge = |a: &str, b: &str| {
        graph
            .entry(a.into())
            .or_default()
            .insert(b.into(), PathBuf::from(format!("{a}.rs")));
    };
    edge("repo", "items");
    edge("items", "repo");
    edge("console", "cli");
    let cycle = find_cycle(&graph).expect("repo <-> items is a cycle");
    assert_eq!(cycle.first(), cycle.last());
    let problems = layering_violations(&graph);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("`repo` (layer 1) imports `items`"))
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("`console` (layer 0) imports `cli`"))
    );
}
