//! The documentation says what the code does: hook table, node keys, links and citations.

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// Every file under `dir` (relative to the crate), recursively.
fn files_under(dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let path = e.expect("dir entry").path();
            // Hidden directories are not the project's files: bench/.work holds the
            // benchmark's venv (third-party code), git-ignored like target/.
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if path.is_dir() && hidden {
                continue;
            }
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join(dir), &mut out);
    out.sort();
    out
}

/// The markdown files users read.
fn user_docs() -> Vec<PathBuf> {
    let mut docs = vec![
        root().join("README.md"),
        root().join("hooks-examples/README.md"),
        root().join("repo-template/README.md"),
        root().join("bench/README.md"),
    ];
    docs.extend(
        files_under("docs")
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "md")),
    );
    docs
}

#[test]
fn hook_table_in_hooks_examples_matches_the_hook_points() {
    let text = read("hooks-examples/README.md");
    let mut documented = Vec::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | name | a, b, c | when |
        if cells.len() == 5
            && cinch::hooks::HOOK_POINTS
                .iter()
                .any(|(n, _)| *n == cells[1])
        {
            let args: Vec<String> = cells[2].split(',').map(|a| a.trim().to_string()).collect();
            documented.push((cells[1].to_string(), args));
        }
    }
    let actual: Vec<(String, Vec<String>)> = cinch::hooks::HOOK_POINTS
        .iter()
        .map(|(n, args)| (n.to_string(), args.iter().map(|a| a.to_string()).collect()))
        .collect();
    assert_eq!(
        documented, actual,
        "the hook table in hooks-examples/README.md differs from HOOK_POINTS"
    );
}

#[test]
fn every_node_key_is_in_the_repo_reference() {
    let text = read("docs/repo.md");
    for key in cinch::repo::load::NODE_KEYS {
        assert!(
            text.contains(&format!("| `{key}` |")),
            "docs/repo.md has no row for node key `{key}`"
        );
    }
}

#[test]
fn relative_links_in_the_docs_point_at_files_that_exist() {
    let link = regex::Regex::new(r"\]\(([^)#\s]+)(#[^)]*)?\)").expect("regex");
    let mut checked = 0;
    for doc in user_docs() {
        let text = std::fs::read_to_string(&doc).expect("read doc");
        for caps in link.captures_iter(&text) {
            let target = &caps[1];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let path = doc.parent().expect("doc has a parent").join(target);
            assert!(
                path.exists(),
                "{} links to {target}, which does not exist",
                doc.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "only {checked} links found: is the regex stale?"
    );
}

#[test]
fn nothing_cites_a_spec_that_is_not_in_the_repo() {
    // Built from parts so this file does not match itself.
    let spec = ["SP", "EC"].concat();
    let cite =
        regex::Regex::new(&format!(r"\b{spec}\b|(?i)\bsection [0-9]|\x{{A7}}")).expect("regex");
    let mut files = user_docs();
    for dir in [
        "src",
        "tests",
        "man",
        "hooks-examples",
        "repo-template",
        "bench",
    ] {
        files.extend(files_under(dir));
    }
    let mut bad = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue; // not text
        };
        for (n, line) in text.lines().enumerate() {
            if cite.is_match(line) {
                bad.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "cite a file in the repo instead (README.md, docs/, hooks-examples/README.md):\n{}",
        bad.join("\n")
    );
}

/// The string literals of every `check_keys(&[…])` list and of `const GROUP_KEYS` in `file`.
fn accepted_keys(file: &str) -> Vec<String> {
    let text = read(file);
    let list =
        regex::Regex::new(r"(?s)(?:check_keys\(\s*&\[|const GROUP_KEYS: &\[&str\] = &\[)(.*?)\]")
            .expect("regex");
    let literal = regex::Regex::new(r#""([a-z_]+)""#).expect("regex");
    list.captures_iter(&text)
        .flat_map(|c| {
            literal
                .captures_iter(&c[1])
                .map(|l| l[1].to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn every_group_and_cinch_toml_key_is_in_the_repo_reference() {
    let text = read("docs/repo.md");
    let mut keys = accepted_keys("src/repo/settings.rs");
    keys.extend(accepted_keys("src/repo/load.rs"));
    for expected in [
        "defaults",
        "ssh",
        "node_workers",
        "connect_timeout",
        "member_patterns",
    ] {
        assert!(
            keys.iter().any(|k| k == expected),
            "the scan of src/repo/ did not find `{expected}`: is the regex stale?"
        );
    }
    for key in keys {
        assert!(
            text.contains(&format!("`{key}`"))
                || text.contains(&format!("] {key}`"))
                || text.contains(&format!("[{key}]")),
            "docs/repo.md does not document the key `{key}` that src/repo/ accepts"
        );
    }
}
