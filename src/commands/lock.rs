//! `cinch lock add/show/remove`: the command over the soft-lock protocol of [`crate::lock`].

use crate::error::{Error, Result};
use crate::events::{Bus, Event, Report};
use crate::fleet::{Fleet, NotContacted};
use crate::items::Item;
use crate::lock::{
    SoftLock, add_soft, format_remaining, format_time, identity, new_soft_lock, now, read_soft,
    remove_soft, rfc3339,
};
use crate::output::lock::LockRow;
use crate::output::{Lines, untrusted};
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
    let bus = crate::hooks::command_bus(&ctx.console, &repo)?;

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
            ctx,
        );
        let _ = transport.close();
        outcome
    });

    let mut failed = false;
    let mut answered = 0usize;
    let mut rows = Vec::new();
    for (node, outcome) in nodes.iter().zip(outcomes) {
        let Some(outcome) = outcome else {
            failed = true;
            report(ctx, node, "interrupted", None);
            continue;
        };
        match outcome {
            NodeOutcome::Added(lock) => {
                if ctx.console.json() {
                    let line = Report::LockAdded {
                        node: &node.name,
                        lock: &lock,
                        created: rfc3339(lock.date),
                        expires: rfc3339(lock.expiry),
                    };
                    ctx.console.json_line(&line.to_json());
                } else if ctx.console.quiet() {
                    ctx.console.out(&lock.id);
                } else {
                    ctx.console.out(&crate::output::lock::added(
                        &node.name,
                        &lock.id,
                        &format_time(lock.expiry),
                    ));
                }
            }
            NodeOutcome::Shown(locks) => {
                answered += 1;
                for l in locks {
                    if ctx.console.json() {
                        let line = Report::Lock {
                            node: &node.name,
                            lock: &l,
                            created: rfc3339(l.date),
                            expires: rfc3339(l.expiry),
                        };
                        ctx.console.json_line(&line.to_json());
                    }
                    rows.push(LockRow {
                        node: node.name.clone(),
                        id: l.id.clone(),
                        owner: l.user.clone(),
                        created: format_time(l.date),
                        expires_in: format_remaining(l.expiry - now()),
                        items: l.items.join(", "),
                        comment: l.comment.clone(),
                    });
                }
            }
            NodeOutcome::Removed(id) => {
                if ctx.console.json() {
                    ctx.console.json_line(
                        &Report::LockRemoved {
                            node: &node.name,
                            lock_id: &id,
                        }
                        .to_json(),
                    );
                } else {
                    ctx.console
                        .out(&crate::output::lock::removed(&node.name, &id));
                }
            }
            NodeOutcome::Skipped(why) => report(ctx, node, "skipped", Some(&why)),
            NodeOutcome::Failed(why) => {
                failed = true;
                report(ctx, node, "failed", Some(&why));
            }
        }
    }
    if matches!(cmd, LockAction::Show { .. }) && !ctx.console.json() {
        if rows.is_empty() {
            // Never "no soft locks" for nodes that could not be read.
            let what = match &lock_id {
                Some(id) => format!("no soft lock {id}"),
                None => "no soft locks".to_string(),
            };
            if !failed {
                ctx.console.out(&what);
            } else if answered > 0 {
                ctx.console
                    .out(&format!("{what} on the nodes that answered"));
            }
        } else {
            ctx.console.out(&crate::output::lock::table(&rows));
        }
    }
    let interrupted = crate::interrupt::requested();
    // A failed lock hook was reported where it happened; it still makes the exit code 1.
    let code = if interrupted {
        130
    } else {
        u8::from(failed || bus.had_errors())
    };
    if ctx.console.json() {
        let command = match cmd {
            LockAction::Add { .. } => "lock add",
            LockAction::Show { .. } => "lock show",
            LockAction::Remove { .. } => "lock remove",
        };
        let line = Report::LockSummary {
            command,
            nodes: nodes.len(),
            failed,
            interrupted,
            exit_code: code,
        };
        ctx.console.json_line(&line.to_json());
    }
    Ok(code)
}

fn report(ctx: &Settings, node: &Node, status: &str, why: Option<&str>) {
    if ctx.console.json() {
        let line = Report::LockNode {
            node: &node.name,
            status,
            reason: why,
        };
        ctx.console.json_line(&line.to_json());
    } else {
        ctx.console
            .err(&crate::output::lock::node_line(&node.name, status, why));
    }
}

fn node_lock_op(
    transport: &dyn Transport,
    node: &Node,
    cmd: &LockAction,
    new_lock: Option<&SoftLock>,
    lock_id: Option<&str>,
    bus: &Bus,
    ctx: &Settings,
) -> NodeOutcome {
    let warn = |ws: &[String]| {
        ws.iter().for_each(|w| {
            ctx.console
                .err(&format!("warning: {}", untrusted(w, Lines::Escape)))
        })
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
