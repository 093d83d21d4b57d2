//! cinch: agentless configuration management over SSH.
//!
//! Flow: [`cli`] -> [`settings::Settings`] (validated before any work) -> [`commands`] ->
//! [`repo::Repo`] (loaded once, immutable) -> [`plan::Plan`] per node -> executor over a
//! [`transport::Transport`] -> [`events::Event`]s -> subscribers (terminal output, JSON
//! lines, hooks). The layers and the rule that imports only run downwards are checked by
//! `tests/it/architecture.rs`; docs/architecture.md describes them.

pub mod budget;
pub mod cli;
pub mod commands;
pub mod console;
pub mod diag;
pub mod diff;
pub mod digest;
pub mod error;
pub mod events;
pub mod executor;
pub mod fanout;
pub mod fleet;
pub mod hooks;
pub mod interrupt;
pub mod items;
pub mod limits;
pub mod lock;
pub mod mask;
pub mod node_shell;
pub mod output;
pub mod plan;
pub mod prepare;
pub mod render;
pub mod repo;
pub mod review;
pub mod settings;
pub mod shard;
pub mod shell;
pub mod transport;

/// Counts allocations per thread so repo scripts and templates can be bounded by memory.
#[global_allocator]
static ALLOCATOR: budget::CountingAlloc = budget::CountingAlloc;
