//! `cinch apply` and `cinch verify`: orchestration of the item engine over nodes.

use crate::cli::{ApplyArgs, Context, VerifyArgs};
use crate::error::{Error, Result};

/// Runs `cinch apply`.
pub fn cmd_apply(_ctx: &Context, _args: &ApplyArgs) -> Result<u8> {
    Err(Error::Usage("apply is not built yet".into()))
}

/// Runs `cinch verify`.
pub fn cmd_verify(_ctx: &Context, _args: &VerifyArgs) -> Result<u8> {
    Err(Error::Usage("verify is not built yet".into()))
}
