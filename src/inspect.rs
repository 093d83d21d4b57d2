//! Inspection commands: nodes, groups, items, metadata, and `repo create`.

use std::path::Path;

use crate::cli::{Context, GroupsArgs, ItemsArgs, MetadataArgs, NodesArgs};
use crate::error::{Error, Result};

/// Runs `cinch nodes`.
pub fn cmd_nodes(_ctx: &Context, _args: &NodesArgs) -> Result<u8> {
    Err(Error::Usage("nodes is not built yet".into()))
}

/// Runs `cinch groups`.
pub fn cmd_groups(_ctx: &Context, _args: &GroupsArgs) -> Result<u8> {
    Err(Error::Usage("groups is not built yet".into()))
}

/// Runs `cinch items`.
pub fn cmd_items(ctx: &Context, args: &ItemsArgs) -> Result<u8> {
    crate::items::listing::run(ctx, args)
}

/// Runs `cinch metadata`.
pub fn cmd_metadata(_ctx: &Context, _args: &MetadataArgs) -> Result<u8> {
    Err(Error::Usage("metadata is not built yet".into()))
}

/// Runs `cinch repo create`.
pub fn cmd_repo_create(_ctx: &Context, _dir: &Path) -> Result<u8> {
    Err(Error::Usage("repo create is not built yet".into()))
}
