//! `cinch lock add/show/remove`: the command over the soft-lock protocol of [`crate::lock`].
//! It prints nothing itself: each node's result is an event on the bus, which the JSON
//! subscriber and the terminal renderer ([`crate::render::lock`]) show.

use crate::error::{Error, Result};
use crate::events::{Bus, Event, Note, Report};
use crate::fleet::{Fleet, NotContacted};
use crate::items::Item;
use crate::lock::{SoftLock, add_soft, identity, new_soft_lock, read_soft, remove_soft, rfc3339};
use crate::repo::{Node, Repo};
use crate::settings::{LockAction, Settings};
use crate::transport::Transport;

/// What one node answered to a lock command.
enum NodeOutcome {
    Added(SoftLock),
    Shown(Vec<SoftLock>),
    Removed(String),
    Skipped(String),
    Failed(String),
}

/// Runs `cinch lock ...`: every node in parallel; an unreachable node is reported and the
/// others proceed (exit 1).
pub fn cmd_lock(ctx: &Settings, cmd: &LockAction) -> Result<u8> {
    let repo = ctx.load_repo()?;
    let target = cmd.target();
    let nodes = repo.select(target)?;
    let me = identity();
    let connect = ctx.connect_options(&repo);
    let mut bus = crate::hooks::command_bus(&ctx.console, &repo, false)?;
    bus.subscribe(Box::new(crate::render::lock::LockRenderer::new(
        ctx.console.clone(),
    )));

    // Everything the user typed was validated into `cmd` before any work (see
    // crate::settings); the lock id is already normalised.
    let lock_id = match cmd {
        LockAction::Remove { lock_id, .. } => Some(lock_id.clone()),
        LockAction::Show { lock_id, .. } => lock_id.clone(),
        LockAction::Add { .. } => None,
    };
    // One lock, one id: every node of one `lock add` gets the same lock (as in BundleWrap), so
    // `lock remove n3,n4 ID` and `lock show all ID` work on all of them.
    let new_lock = match cmd {
        LockAction::Add {
            items,
            comment,
            expires_in,
            ..
        } => {
            check_item_selectors(&repo, &nodes, items)?;
            Some(new_soft_lock(&me, items, *expires_in, comment))
        }
        _ => None,
    };

    let workers =
        crate::limits::cap_node_workers(repo.settings.node_workers, nodes.len(), &ctx.console);
    let fleet = Fleet::new(&bus, connect, workers);
    let outcomes = fleet.map(&nodes, |node| {
        let transport = match fleet.open(node) {
            Ok(t) => t,
            Err(NotContacted::Dummy) => return NodeOutcome::Skipped("dummy node".into()),
            Err(NotContacted::Refused(reason)) => return NodeOutcome::Failed(reason),
        };
        let outcome = node_lock_op(
            transport.as_ref(),
            node,
            cmd,
            new_lock.as_ref(),
            lock_id.as_deref(),
            &bus,
        );
        let _ = transport.close();
        outcome
    });

    let mut failed = false;
    let mut answered = 0usize;
    for (node, outcome) in nodes.iter().zip(outcomes) {
        let Some(outcome) = outcome else {
            failed = true;
            node_report(&bus, node, "interrupted", None);
            continue;
        };
        match outcome {
            NodeOutcome::Added(lock) => {
                bus.emit(&Event::Report(Report::LockAdded {
                    node: &node.name,
                    lock: &lock,
                    created: rfc3339(lock.date),
                    expires: rfc3339(lock.expiry),
                }));
            }
            NodeOutcome::Shown(locks) => {
                answered += 1;
                for l in &locks {
                    bus.emit(&Event::Report(Report::Lock {
                        node: &node.name,
                        lock: l,
                        created: rfc3339(l.date),
                        expires: rfc3339(l.expiry),
                    }));
                }
            }
            NodeOutcome::Removed(id) => {
                bus.emit(&Event::Report(Report::LockRemoved {
                    node: &node.name,
                    lock_id: &id,
                }));
            }
            NodeOutcome::Skipped(why) => node_report(&bus, node, "skipped", Some(&why)),
            NodeOutcome::Failed(why) => {
                failed = true;
                node_report(&bus, node, "failed", Some(&why));
            }
        }
    }
    if matches!(cmd, LockAction::Show { .. }) {
        bus.emit(&Event::Note(Note::LockShowEnd {
            lock_id: lock_id.as_deref(),
            answered,
            failed,
        }));
    }
    let interrupted = crate::interrupt::requested();
    // A failed lock hook was reported where it happened; it still makes the exit code 1.
    let code = if interrupted {
        130
    } else {
        u8::from(failed || bus.had_errors())
    };
    let command = match cmd {
        LockAction::Add { .. } => "lock add",
        LockAction::Show { .. } => "lock show",
        LockAction::Remove { .. } => "lock remove",
    };
    bus.emit(&Event::Report(Report::LockSummary {
        command,
        nodes: nodes.len(),
        failed,
        interrupted,
        exit_code: code,
    }));
    Ok(code)
}

/// A node skipped, failed or interrupted.
fn node_report(bus: &Bus, node: &Node, status: &str, why: Option<&str>) {
    bus.emit(&Event::Report(Report::LockNode {
        node: &node.name,
        status,
        reason: why,
    }));
}

fn node_lock_op(
    transport: &dyn Transport,
    node: &Node,
    cmd: &LockAction,
    new_lock: Option<&SoftLock>,
    lock_id: Option<&str>,
    bus: &Bus,
) -> NodeOutcome {
    let warn = |ws: &[String]| {
        ws.iter().for_each(|w| {
            bus.emit(&Event::Note(Note::Warning { text: w }));
        });
    };
    match cmd {
        LockAction::Add { .. } => {
            let Some(lock) = new_lock else {
                return NodeOutcome::Failed("no lock to add".into());
            };
            match add_soft(transport, node, lock) {
                Ok(()) => {
                    let lock = lock.clone();
                    bus.emit(&Event::LockAdd {
                        node,
                        lock_id: &lock.id,
                        items: &lock.items,
                        expiry: lock.expiry,
                        comment: &lock.comment,
                    });
                    NodeOutcome::Added(lock)
                }
                Err(e) => NodeOutcome::Failed(e.to_string()),
            }
        }
        LockAction::Show { .. } => match read_soft(transport, node) {
            Ok((mut locks, warnings)) => {
                warn(&warnings);
                if let Some(id) = lock_id {
                    locks.retain(|l| l.id.eq_ignore_ascii_case(id));
                }
                for l in &locks {
                    let info = serde_json::to_value(l).unwrap_or_default();
                    bus.emit(&Event::LockShow {
                        node,
                        lock_info: &info,
                    });
                }
                NodeOutcome::Shown(locks)
            }
            Err(e) => NodeOutcome::Failed(e.to_string()),
        },
        LockAction::Remove { .. } => {
            let id = lock_id.unwrap_or_default();
            match remove_soft(transport, node, id) {
                Ok(true) => {
                    bus.emit(&Event::LockRemove { node, lock_id: id });
                    NodeOutcome::Removed(id.to_string())
                }
                Ok(false) => NodeOutcome::Failed(format!(
                    "no soft lock {id} on this node (see `cinch lock show {}`)",
                    node.name
                )),
                Err(e) => NodeOutcome::Failed(e.to_string()),
            }
        }
    }
}

/// Every `-i` selector must match at least one item on every selected node: a typo must not
/// silently lock nothing.
fn check_item_selectors(repo: &Repo, nodes: &[&Node], selectors: &[String]) -> Result<()> {
    for sel in selectors {
        crate::items::selector::validate(sel)
            .map_err(|e| Error::Usage(format!("invalid item selector {sel:?}: {e}")))?;
    }
    let mut problems = Vec::new();
    for node in nodes.iter().filter(|n| !n.dummy) {
        let items = crate::items::load_node_items(repo, node).map_err(Error::Repo)?;
        let refs: Vec<&Item> = items.iter().collect();
        for p in crate::items::selector::unmatched(selectors, &refs) {
            problems.push(format!("{p} on node {}", node.name));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Usage(problems.join("\n")))
    }
}
