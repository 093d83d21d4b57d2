//! The bus subscribers that render events for an audience: [`json`] prints every event as one
//! JSON line (`--json`); the terminal renderers are [`human`] (apply's and verify's item
//! lines, node lines, progress bars and summary table), [`run`] (run's prefixed output lines
//! and summary), [`lock`] (lock add/show/remove), [`test`] (test's problems and summary) and
//! [`hook_lines`] (the hooks' `log()` and error lines). They sit above `events` and keep no
//! formatting of their own: the plain-value formatting lives in `output/`.

pub mod hook_lines;
pub mod human;
pub mod json;
pub mod lock;
pub mod run;
pub mod test;
