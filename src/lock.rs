//! Hard locks (held during apply) and soft locks (`cinch lock add/show/remove`).

use crate::cli::{Context, LockCommand};
use crate::error::{Error, Result};

/// Runs `cinch lock ...`.
pub fn cmd_lock(_ctx: &Context, _cmd: &LockCommand) -> Result<u8> {
    Err(Error::Usage("lock is not built yet".into()))
}
