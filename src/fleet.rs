//! The per-node scaffold every command that talks to nodes shares, with one policy:
//!
//! - nodes run on at most `workers` threads ([`crate::fanout`]); after Ctrl-C no further node
//!   starts, and the ones never started are answered `None`;
//! - a hook's `skip_node`/`abort` at a node's start point keeps that node from running;
//! - a dummy node is never contacted;
//! - `node_ssh_connect` fires just before an ssh node's transport opens, and a hook that
//!   refuses there keeps the node from being contacted;
//! - connect options come from `cinch.toml` and the command line once, for every node.
//!
//! apply/verify, run and lock use it; what each prints stays with the command.

use crate::events::{Bus, Event, Flow};
use crate::repo::{Node, TransportKind};
use crate::transport::{ConnectOptions, Transport};

/// The nodes' shared scaffold for one command.
pub struct Fleet<'a> {
    /// Where node events go (hooks, JSON).
    pub bus: &'a Bus,
    /// How to reach nodes.
    pub connect: ConnectOptions,
    /// How many nodes at once (at least 1).
    pub workers: usize,
}

/// Why a node was not contacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotContacted {
    /// The node is a dummy: it has no host to talk to.
    Dummy,
    /// A hook at `node_ssh_connect` refused the connection, with its reason.
    Refused(String),
}

impl<'a> Fleet<'a> {
    /// A scaffold over `bus` with these connect options and worker count.
    pub fn new(bus: &'a Bus, connect: ConnectOptions, workers: usize) -> Self {
        Fleet {
            bus,
            connect,
            workers: workers.max(1),
        }
    }

    /// Calls `work` for every element, at most `workers` at once, results in input order;
    /// elements not started because of Ctrl-C get `None`.
    pub fn map<T, R, F>(&self, items: &[T], work: F) -> Vec<Option<R>>
    where
        T: Sync,
        R: Send,
        F: Fn(&T) -> R + Sync,
    {
        crate::fanout::map_bounded(items, self.workers, crate::interrupt::requested, work)
    }

    /// Emits a node's start event (`node_apply_start`, `node_run_start`) and answers whether
    /// the node may run: `Err(reason)` when a hook skips or aborts it.
    pub fn start(&self, event: &Event<'_>) -> Result<(), String> {
        match self.bus.emit(event) {
            Flow::Continue => Ok(()),
            Flow::SkipNode(reason) | Flow::Abort(reason) => Err(reason),
        }
    }

    /// Opens the transport to `node`, firing `node_ssh_connect` first for an ssh node. The
    /// transport connects on first use (or on `connect()`); the caller closes it.
    pub fn open(&self, node: &Node) -> Result<Box<dyn Transport>, NotContacted> {
        if node.dummy {
            return Err(NotContacted::Dummy);
        }
        if node.transport == TransportKind::Ssh {
            match self.bus.emit(&Event::NodeSshConnect { node }) {
                Flow::Continue => {}
                Flow::SkipNode(reason) | Flow::Abort(reason) => {
                    return Err(NotContacted::Refused(reason));
                }
            }
        }
        Ok(crate::transport::open(node, &self.connect))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Subscriber;

    /// Answers every event with one flow, and counts the ssh-connect events it saw.
    struct Answer(Flow, std::sync::atomic::AtomicUsize);

    impl Subscriber for Answer {
        fn on_event(&self, event: &Event<'_>) -> Flow {
            if matches!(event, Event::NodeSshConnect { .. }) {
                self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            self.0.clone()
        }
    }

    fn node(transport: TransportKind, dummy: bool) -> Node {
        Node {
            name: "n1".into(),
            hostname: "n1.invalid".into(),
            username: None,
            port: None,
            transport,
            groups: vec![],
            bundles: vec![],
            dummy,
            become_: None,
            lock_dir: "/tmp/x".into(),
            ..Node::bare("n1", serde_json::json!({}))
        }
    }

    fn bus(flow: Flow) -> Bus {
        let mut bus = Bus::new();
        bus.subscribe(Box::new(Answer(flow, Default::default())));
        bus
    }

    fn connect() -> ConnectOptions {
        ConnectOptions::from_settings(std::path::Path::new("/"), &Default::default(), false)
    }

    #[test]
    fn a_hook_refusing_node_ssh_connect_keeps_every_command_off_the_node() {
        for flow in [Flow::SkipNode("maint".into()), Flow::Abort("maint".into())] {
            let bus = bus(flow);
            let fleet = Fleet::new(&bus, connect(), 1);
            let refused = fleet.open(&node(TransportKind::Ssh, false)).err();
            assert_eq!(refused, Some(NotContacted::Refused("maint".into())));
        }
    }

    #[test]
    fn a_dummy_node_is_never_contacted_and_fires_no_connect_event() {
        let mut bus = Bus::new();
        let seen = std::sync::Arc::new(Answer(Flow::Continue, Default::default()));
        struct Shared(std::sync::Arc<Answer>);
        impl Subscriber for Shared {
            fn on_event(&self, event: &Event<'_>) -> Flow {
                self.0.on_event(event)
            }
        }
        bus.subscribe(Box::new(Shared(seen.clone())));
        let fleet = Fleet::new(&bus, connect(), 1);
        assert_eq!(
            fleet.open(&node(TransportKind::Ssh, true)).err(),
            Some(NotContacted::Dummy)
        );
        assert_eq!(seen.1.load(std::sync::atomic::Ordering::SeqCst), 0);
        let local = fleet.open(&node(TransportKind::Local, false));
        assert!(local.is_ok(), "a local node opens without ssh");
        assert_eq!(seen.1.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn a_hook_skip_or_abort_at_a_node_start_point_stops_the_node() {
        let n = node(TransportKind::Local, false);
        let start = Event::NodeRunStart {
            node: &n,
            command: "true",
        };
        assert_eq!(
            Fleet::new(&bus(Flow::Continue), connect(), 1).start(&start),
            Ok(())
        );
        for flow in [Flow::SkipNode("why".into()), Flow::Abort("why".into())] {
            let b = bus(flow);
            assert_eq!(
                Fleet::new(&b, connect(), 1).start(&start),
                Err("why".into())
            );
        }
    }

    #[test]
    fn workers_are_at_least_one() {
        let b = Bus::new();
        assert_eq!(Fleet::new(&b, connect(), 0).workers, 1);
    }
}
