//! One integration-test binary (links once): each module covers one area, driving the real
//! `cinch` binary against temporary repos, the local transport and a private sshd.

mod apply;
mod harness;
mod inspect;
mod lock;
mod repo;
mod sshd;
mod transport;
mod verify;
