//! The bus subscribers that render events for an audience: [`json`] prints every event as one
//! JSON line (`--json`), [`human`] shows apply's and verify's item lines, node lines,
//! progress bars and summary table. They sit above `events` and keep no formatting of their
//! own: the plain-value formatting lives in `output/`.

pub mod human;
pub mod json;
