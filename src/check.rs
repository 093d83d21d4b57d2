//! `cinch test`: validate everything that can be validated without a network.

use crate::cli::{Context, TestArgs};
use crate::error::{Error, Result};

/// Runs `cinch test`.
pub fn cmd_test(_ctx: &Context, _args: &TestArgs) -> Result<u8> {
    Err(Error::Usage("test is not built yet".into()))
}
