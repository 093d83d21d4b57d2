//! Review before apply (issue 16): `cinch hash` and `cinch diff`, both computed from the repo
//! alone, over one definition of an item's expected state ([`expected`]) that saved plans and
//! drift records are meant to reuse.

pub mod diff;
pub mod expected;
pub mod git;
pub mod hash;
