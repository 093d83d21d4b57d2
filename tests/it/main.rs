//! One integration-test binary (links once): each module covers one area, driving the real
//! `cinch` binary against temporary repos, the local transport and a private sshd.

mod harness;
mod lock;
