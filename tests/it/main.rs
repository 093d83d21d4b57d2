//! One integration-test binary (links once): each module covers one area, driving the real
//! `cinch` binary against temporary repos, the local transport and a private sshd.

mod apply;
mod architecture;
mod check;
mod docs;
mod fleet;
mod harness;
mod hooks;
mod inspect;
mod items;
mod lock;
mod metadata;
mod plan;
mod repo;
mod review;
mod run;
mod saved_plan;
mod secrets;
mod snapshots;
mod sshd;
mod steady;
mod sysitems;
mod transport;
mod verify;
mod write;
