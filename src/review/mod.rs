//! Review before apply: one definition of an item's expected state and its hash
//! ([`expected`]), shared by `cinch hash`, `cinch diff` and saved plans, and reading the repo
//! at a git revision ([`git`]).

pub mod expected;
pub mod git;
