//! `cinch test`: validate everything that can be validated without a network, and report
//! every problem (not only the first), each with its file and line.

use rayon::prelude::*;
use serde_json::Value;

use crate::diag::Diagnostic;
use crate::error::{Error, Result};
use crate::events::{Bus, Event, Flow, Note, Report};
use crate::repo::Node;
use crate::settings::{Settings, TestSettings};

/// Exit code when the repo is fine but some node's items, dependencies or templates are not.
const EXIT_PROBLEMS: u8 = 1;
/// Exit code when the repo cannot even be loaded (README.md "Exit codes": bad repo).
const EXIT_BAD_REPO: u8 = 2;

/// A node's item count, or everything wrong with it.
type NodeCheck = Result<usize, Vec<Diagnostic>>;

/// One problem and the nodes it was found on (a bundle's mistake shows on all its nodes, but
/// is reported once).
struct Problem {
    diag: Diagnostic,
    nodes: Vec<String>,
}

/// Runs `cinch test`.
pub fn cmd_test(ctx: &Settings, args: &TestSettings) -> Result<u8> {
    let repo = match ctx.load_repo() {
        Ok(repo) => repo,
        Err(Error::Repo(diags)) => {
            let problems: Vec<Problem> = diags
                .into_iter()
                .map(|diag| Problem {
                    diag,
                    nodes: Vec::new(),
                })
                .collect();
            let bus = with_renderer(crate::hooks::renderer_bus(&ctx.console, false), ctx);
            report(&bus, &problems);
            summary(&bus, 0, 0, 0, problems.len(), "the repo does not load");
            return Ok(EXIT_BAD_REPO);
        }
        Err(e) => return Err(e),
    };
    let nodes = repo.select(args.target.as_deref().unwrap_or("all"))?;

    let mut hook_problems = Vec::new();
    // The one load of the hooks (their top level runs at load): syntax errors are problems
    // like any other; lint findings are warnings that do not change the exit code.
    let (bus, hooks) = match crate::hooks::command_bus_with_hooks(&ctx.console, &repo, false) {
        Ok((bus, hooks)) => (bus, Some(hooks)),
        Err(Error::Repo(diags)) => {
            hook_problems = diags
                .into_iter()
                .map(|diag| Problem {
                    diag,
                    nodes: Vec::new(),
                })
                .collect();
            (crate::hooks::renderer_bus(&ctx.console, false), None)
        }
        Err(e) => return Err(e),
    };
    let bus = with_renderer(bus, ctx);
    if let Some(hooks) = &hooks {
        warn(&bus, &hooks.lint());
    }
    let mut idle_reactors = Vec::new();

    // Hooks run right after each node's checks, on the same worker; a failing `test_node`
    // hook has already been reported (with its file and line) and marks the node as bad.
    let results: Vec<(&Node, NodeCheck, bool)> = nodes
        .par_iter()
        // One node per job: a worker waiting for a rack the other is computing, or out of
        // work at the end, can take any node left (by default rayon hands each worker long
        // runs of nodes that only their owner can go through).
        .with_max_len(1)
        .map(|node| {
            // The second, reversed run of the node's reactors needs nothing from the first:
            // an idle worker takes it while this one computes the first run and renders.
            let (prepared, reversed) =
                rayon::join(|| crate::prepare::prepare(&repo, node), || second_run(node));
            let checked = prepared.map(|c| c.plan.items.len()).and_then(|count| {
                let unstable = reactor_determinism(node, reversed);
                if unstable.is_empty() {
                    Ok(count)
                } else {
                    Err(unstable)
                }
            });
            let hook_ok = bus.emit(&Event::TestNode { node }) == Flow::Continue;
            (*node, checked, hook_ok)
        })
        .collect();
    // Checks stopped by Ctrl-C fail with "interrupted": they are not problems of the repo.
    if crate::interrupt::requested() {
        return Err(Error::Interrupted);
    }
    idle_reactors.extend(reactors_never_contributing(&nodes));
    warn(&bus, &idle_reactors);
    // `test` is the end of a full test only: a target tests part of the repo.
    if args.target.is_none() {
        bus.emit(&Event::Test);
    }
    let hook_errors = hooks.as_ref().map_or(0, |h| h.errors().len());

    let mut items = 0;
    let mut bad_nodes = 0;
    let mut found: Vec<(&str, &Diagnostic)> = Vec::new();
    for (node, result, hook_ok) in &results {
        if !hook_ok && result.is_ok() {
            bad_nodes += 1;
        }
        match result {
            Ok(count) => {
                items += count;
                if *hook_ok {
                    bus.emit(&Event::Note(Note::NodeChecked {
                        node: &node.name,
                        items: *count,
                    }));
                }
            }
            Err(diags) => {
                bad_nodes += 1;
                found.extend(diags.iter().map(|d| (node.name.as_str(), d)));
            }
        }
    }
    let bad_hooks = !hook_problems.is_empty();
    let mut problems = hook_problems;
    problems.extend(repo.settings.problems.iter().map(|diag| Problem {
        diag: diag.clone(),
        nodes: Vec::new(),
    }));
    problems.extend(merge_by_place(found));
    report(&bus, &problems);
    summary(
        &bus,
        nodes.len(),
        bad_nodes,
        items,
        problems.len() + hook_errors,
        if bad_hooks { "hooks do not load" } else { "" },
    );
    let code = if bad_hooks {
        EXIT_BAD_REPO
    } else if problems.is_empty() && hook_errors == 0 {
        0
    } else {
        EXIT_PROBLEMS
    };
    drop(results);
    // The process ends with the test: freeing every node's computed metadata, reactor outputs
    // and reads one value at a time is a last serial step (3 % of the instructions of a
    // 1000-node test, valgrind --tool=callgrind) that the system does at exit for free.
    std::mem::forget(repo);
    Ok(code)
}

/// A node's reactors run a second time, from scratch and in the opposite order (`None` for a
/// node without computed metadata, or one already known to fail: only a node whose checks
/// pass is compared with its second run).
fn second_run(node: &Node) -> Option<std::sync::Arc<crate::repo::computed::Outcome>> {
    let fleet = node.fleet.as_ref()?;
    if !node.problems.is_empty() || fleet.known_to_fail(&node.name) {
        return None;
    }
    Some(fleet.recompute_reversed(&node.name))
}

/// Compares a node's metadata with the second run of its reactors ([`second_run`]) and reports
/// a difference: metadata that depends on reactor order or on anything but its input (time,
/// chance) would make applies unrepeatable.
fn reactor_determinism(
    node: &Node,
    second: Option<std::sync::Arc<crate::repo::computed::Outcome>>,
) -> Vec<Diagnostic> {
    let Some(second) = second else {
        return Vec::new();
    };
    let Ok(first) = node.metadata() else {
        return Vec::new();
    };
    match second.result.clone() {
        Ok(second) if second == first => Vec::new(),
        Ok(second) => {
            let path = first_difference(&first, &second, &mut Vec::new()).unwrap_or_default();
            vec![
                Diagnostic::new(format!(
                    "metadata differs between two runs of its reactors (the second in the \
                     opposite order): first at `{}`: {} vs {}",
                    path,
                    crate::repo::metadata::lookup(&first, &path)
                        .cloned()
                        .unwrap_or_default(),
                    crate::repo::metadata::lookup(&second, &path)
                        .cloned()
                        .unwrap_or_default(),
                ))
                .with_hint(
                    "a reactor must return the same map for the same input; do not depend on \
                     time, randomness or on which reactor ran first",
                ),
            ]
        }
        Err(diags) => diags
            .into_iter()
            .map(|mut d| {
                d.message = format!(
                    "{} (only when its reactors run in the opposite order)",
                    d.message
                );
                d
            })
            .collect(),
    }
}

/// The dotted path of the first place two metadata values differ.
fn first_difference(a: &Value, b: &Value, path: &mut Vec<String>) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                path.push(k.clone());
                let found = match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => first_difference(p, q, path),
                    _ => Some(path.join(".")),
                };
                path.pop();
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        _ if a == b => None,
        _ => Some(path.join(".")),
    }
}

/// Reactors that returned nothing (`#{}`) on every tested node whose metadata computed:
/// probably dead code, or a condition that never holds.
fn reactors_never_contributing(nodes: &[&Node]) -> Vec<Diagnostic> {
    let mut seen: std::collections::BTreeMap<
        (String, String),
        (crate::repo::computed::Reactor, bool),
    > = Default::default();
    for node in nodes {
        let Some(fleet) = &node.fleet else { continue };
        let outcome = fleet.outcome(&node.name);
        if outcome.result.is_err() {
            continue;
        }
        for (reactor, output) in &outcome.outputs {
            let gave = output
                .as_ref()
                .is_some_and(|v| v.as_object().is_none_or(|m| !m.is_empty()));
            let entry = seen
                .entry((reactor.bundle.clone(), reactor.name.clone()))
                .or_insert_with(|| (reactor.clone(), false));
            entry.1 |= gave;
        }
    }
    seen.into_values()
        .filter(|(_, gave)| !gave)
        .map(|(r, _)| {
            Diagnostic::at(
                crate::diag::Location {
                    file: r.file.clone(),
                    line: r.line,
                    column: 0,
                },
                format!(
                    "reactor '{}' of bundle '{}' never contributes anything (it returned #{{}} on every node)",
                    r.name, r.bundle
                ),
            )
            .with_hint("remove it, or name it with a leading `_` if it is a helper")
        })
        .collect()
}

/// `bus` with test's terminal renderer added.
fn with_renderer(mut bus: Bus, ctx: &Settings) -> Bus {
    bus.subscribe(Box::new(crate::render::test::TestRenderer::new(
        ctx.console.clone(),
    )));
    bus
}

/// Hook lint findings: shown, never fatal (a misspelt hook is not called, which may be fine).
fn warn(bus: &Bus, warnings: &[Diagnostic]) {
    for w in warnings {
        let loc = w.location.as_ref();
        bus.emit(&Event::Report(Report::TestWarning {
            file: loc.map(|l| l.file.display().to_string()),
            line: loc.map(|l| l.line),
            column: loc.map(|l| l.column),
            message: &w.message,
            hint: w.hint.as_deref(),
        }));
    }
}

/// One problem per place and message, with every node it was found on (a bundle's mistake
/// shows on all its nodes but is one thing to fix), in the order of [`crate::diag::sort`]:
/// files that do not parse first, then file by file, in line order.
fn merge_by_place(found: Vec<(&str, &Diagnostic)>) -> Vec<Problem> {
    let mut index: std::collections::HashMap<(Option<crate::diag::Location>, &str), usize> =
        std::collections::HashMap::new();
    let mut diags: Vec<Diagnostic> = Vec::new();
    let mut nodes: Vec<Vec<String>> = Vec::new();
    for (node, diag) in found {
        let key = (diag.location.clone(), diag.message.as_str());
        let i = *index.entry(key).or_insert_with(|| {
            diags.push(diag.clone());
            nodes.push(Vec::new());
            diags.len() - 1
        });
        if !nodes[i].iter().any(|n| n == node) {
            nodes[i].push(node.to_string());
        }
    }
    let mut problems: Vec<Problem> = diags
        .into_iter()
        .zip(nodes)
        .map(|(diag, nodes)| Problem { diag, nodes })
        .collect();
    problems.sort_by_cached_key(|p| crate::diag::order_key(&p.diag));
    problems
}

fn report(bus: &Bus, problems: &[Problem]) {
    for p in problems {
        let loc = p.diag.location.as_ref();
        bus.emit(&Event::Report(Report::TestProblem {
            file: loc.map(|l| l.file.display().to_string()),
            line: loc.map(|l| l.line),
            column: loc.map(|l| l.column),
            message: &p.diag.message,
            hint: p.diag.hint.as_deref(),
            nodes: &p.nodes,
        }));
    }
}

/// The closing line: counts for JSON, the sentence (with why the test stopped early, if it
/// did) for the terminal.
fn summary(bus: &Bus, nodes: usize, bad_nodes: usize, items: usize, problems: usize, why: &str) {
    bus.emit(&Event::Report(Report::TestSummary {
        nodes,
        nodes_with_problems: bad_nodes,
        items,
        problems,
    }));
    bus.emit(&Event::Note(Note::TestSummary {
        nodes,
        bad_nodes,
        items,
        problems,
        why,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The second run is for nodes whose checks pass: a node whose first run already failed
    /// (here a key no layer provides; a runaway reactor would spin to the sandbox's limit
    /// again) gets none, a sound node still gets its full second run.
    #[test]
    fn no_second_run_for_a_node_whose_first_run_failed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let files = [
            (
                "nodes.toml",
                "[nodes.bad]\nbundles = [\"b\"]\n[nodes.good]\nbundles = [\"b\"]\n\
                 [nodes.good.metadata]\nx = 1\n",
            ),
            ("bundles/b/items.toml", ""),
            (
                "bundles/b/metadata.rhai",
                "fn y(node, metadata) {\n  #{ y: need(metadata, \"x\") + 1 }\n}\n",
            ),
        ];
        for (rel, text) in files {
            let path = dir.path().join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir: {e}"));
            }
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {rel}: {e}"));
        }
        let repo = crate::repo::Repo::load(dir.path()).unwrap_or_else(|e| panic!("load: {e}"));
        let (Some(bad), Some(good)) = (repo.nodes.get("bad"), repo.nodes.get("good")) else {
            panic!("nodes missing");
        };
        assert!(bad.metadata().is_err());
        assert!(second_run(bad).is_none());
        let Ok(first) = good.metadata() else {
            panic!("good failed");
        };
        let second = second_run(good).unwrap_or_else(|| panic!("no second run for good"));
        assert_eq!(second.result.as_ref().ok(), Some(&first));
        assert!(reactor_determinism(good, Some(second)).is_empty());
    }
}
