//! cinch: agentless configuration management over SSH.
//!
//! Flow: [`cli`] -> [`repo::Repo`] (loaded once, immutable) -> [`plan::Plan`] per node ->
//! executor over a [`transport::Transport`] -> [`events::Event`]s -> subscribers
//! (terminal output, JSON lines, hooks).

pub mod apply;
pub mod budget;
pub mod check;
pub mod cli;
pub mod console;
pub mod diag;
pub mod diff;
pub mod error;
pub mod events;
pub mod executor;
pub mod fanout;
pub mod hooks;
pub mod inspect;
pub mod interrupt;
pub mod items;
pub mod limits;
pub mod lock;
pub mod man;
pub mod output;
pub mod plan;
pub mod probe;
pub mod repo;
pub mod run;
pub mod script;
pub mod shell;
pub mod transport;

/// Counts allocations per thread so repo scripts and templates can be bounded by memory.
#[global_allocator]
static ALLOCATOR: budget::CountingAlloc = budget::CountingAlloc;
