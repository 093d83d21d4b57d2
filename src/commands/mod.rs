//! The commands: each consumes validated [`crate::settings`] and drives the layers below
//! (repo, plan, executor, events). Nothing below this module imports it or the CLI.

pub mod apply;
pub mod check;
pub mod diff;
pub mod hash;
pub mod inspect;
pub mod items;
pub mod lock;
pub mod report;
pub mod run;
pub mod saved_plan;
pub mod secret;
