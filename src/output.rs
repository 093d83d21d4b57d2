//! Shared pieces of human output: tables and diffs.

use comfy_table::{ContentArrangement, Table, presets};

/// Renders rows as an aligned table with a header (no borders, like `bw`'s summaries).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    for r in rows {
        t.add_row(r.iter().map(String::as_str));
    }
    t.to_string()
}
