//! The example repo `cinch repo create` writes, embedded at build time so the binary works
//! anywhere, without the source tree. A test keeps this list equal to `repo-template/`.

macro_rules! template_files {
    ($($path:literal),* $(,)?) => {
        /// Every file of `repo-template/`: (path relative to the repo, contents).
        pub const FILES: &[(&str, &str)] = &[
            $(($path, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/repo-template/", $path)))),*
        ];
    };
}

template_files!(
    "README.md",
    "cinch.toml",
    "nodes.toml",
    "groups.toml",
    "bundles/demo/items.toml",
    "bundles/demo/metadata.toml",
    "bundles/demo/metadata.rhai",
    "bundles/demo/files/motd.j2",
    "bundles/demo/files/static.conf",
);

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }

    #[test]
    fn embedded_list_matches_repo_template_dir() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("repo-template");
        let mut on_disk = Vec::new();
        walk(&root, &root, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = super::FILES.iter().map(|(p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(
            embedded, on_disk,
            "add new repo-template files to template_files! in src/repo/template.rs"
        );
    }
}
