//! `cinch run`: one shell command on many nodes, output prefixed by node.

use crate::cli::{Context, RunArgs};
use crate::error::{Error, Result};

/// Runs `cinch run`.
pub fn cmd_run(_ctx: &Context, _args: &RunArgs) -> Result<u8> {
    Err(Error::Usage("run is not built yet".into()))
}
