//! The example repo `cinch repo create` writes, embedded at build time so the binary works
//! anywhere, without the source tree.

/// Every file of `repo-template/`: (path relative to the repo, contents).
pub const FILES: &[(&str, &str)] = &[];
