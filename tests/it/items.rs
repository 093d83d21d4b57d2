//! `cinch items` and item validation through the real binary: listing, blame, JSON, and every
//! kind of bad items.toml / items.rhai named by file, line and column.

use crate::harness::TestRepo;

/// A repo with node `web1` carrying bundles `base` and `web`.
fn repo() -> TestRepo {
    TestRepo::new()
        .file(
            "nodes.toml",
            "[nodes.web1]\nbundles = [\"base\", \"web\"]\n[nodes.web1.metadata]\nnginx = { workers = 4 }\n",
        )
        .file("bundles/base/items.toml", "")
        .file("bundles/web/items.toml", "")
}

fn good() -> TestRepo {
    repo()
        .file(
            "bundles/base/items.toml",
            "[files.\"/etc/motd\"]\ncontent = \"hi\\n\"\n\n[directories.\"/etc/app\"]\nmode = \"0755\"\n",
        )
        .file(
            "bundles/web/items.rhai",
            "#{\n    pkg_apt: #{ \"nginx\": #{} },\n    files: #{ \"/etc/app/workers\": #{ content: `${node.metadata.nginx.workers}` } },\n}\n",
        )
}

#[test]
fn items_lists_ids_and_bundles_sorted() {
    let r = good().cinch(&["items", "web1"]).expect_code(0);
    let ids: Vec<&str> = r
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|w| w.contains(':'))
        .collect();
    assert_eq!(
        ids,
        [
            "directory:/etc/app",
            "file:/etc/app/workers",
            "file:/etc/motd",
            "pkg_apt:nginx"
        ],
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("file:/etc/motd          base"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("items.toml"), "{}", r.stdout);
}

#[test]
fn items_blame_shows_where_each_item_is_defined() {
    good()
        .cinch(&["items", "web1", "--blame"])
        .expect_code(0)
        .stdout_has("bundles/base/items.toml:4:1")
        .stdout_has("bundles/base/items.toml:1:1")
        .stdout_has("bundles/web/items.rhai:2:");
}

#[test]
fn items_json_has_one_line_per_item() {
    let r = good().cinch(&["--json", "items", "web1"]).expect_code(0);
    let lines = r.json_lines();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["id"], "directory:/etc/app");
    assert_eq!(lines[0]["bundle"], "base");
    assert_eq!(lines[0]["file"], "bundles/base/items.toml");
    assert_eq!(lines[0]["line"], 4);
    assert_eq!(lines[3]["type"], "pkg_apt");
}

#[test]
fn items_of_an_unknown_node_suggest_the_close_one() {
    good()
        .cinch(&["items", "web2"])
        .expect_code(2)
        .stderr_has("no node named 'web2'")
        .stderr_has("did you mean 'web1'?");
}

#[test]
fn unknown_item_type_names_file_line_column_and_fix() {
    repo()
        .file(
            "bundles/base/items.toml",
            "[pkg_apt.nginx]\n\n[direcotries.\"/srv\"]\n\n[servicez.nginx]\n",
        )
        .cinch(&["items", "web1"])
        .expect_code(2)
        .stderr_has("bundles/base/items.toml:3:2: unknown item type `direcotries`")
        .stderr_has("did you mean `directories`?")
        .stderr_has("bundles/base/items.toml:5:2: unknown item type `servicez`")
        .stderr_has("item tables are: files, directories, symlinks");
}

#[test]
fn unknown_attribute_suggests_the_close_one() {
    repo()
        .file(
            "bundles/base/items.toml",
            "[actions.a]\ncommand = \"true\"\nneds = [\"action:b\"]\n",
        )
        .cinch(&["items", "web1"])
        .expect_code(2)
        .stderr_has("bundles/base/items.toml:3:1: unknown attribute `neds` for action:a")
        .stderr_has("did you mean `needs`?");
}

#[test]
fn wrong_value_types_point_at_the_value() {
    repo()
        .file(
            "bundles/base/items.toml",
            "[files.\"/etc/motd\"]\ncontent = \"x\"\nmode = 644\nowner = 0\n",
        )
        .cinch(&["items", "web1"])
        .expect_code(2)
        .stderr_has("items.toml:3:8: `mode` of file:/etc/motd must be a string of octal digits")
        .stderr_has("items.toml:4:9: `owner` of file:/etc/motd must be a string, not an integer");
}

#[test]
fn content_and_source_together_are_refused() {
    repo()
        .file(
            "bundles/base/items.toml",
            "[files.\"/etc/motd\"]\ncontent = \"x\"\nsource = \"motd\"\n",
        )
        .file("bundles/base/files/motd", "x")
        .cinch(&["items", "web1"])
        .expect_code(2)
        .stderr_has("items.toml:3:1: file:/etc/motd sets both `content` and `source`");
}

#[test]
fn missing_source_file_is_named() {
    repo()
        .file(
            "bundles/base/items.toml",
            "[files.\"/etc/nginx/nginx.conf\"]\nsource = \"nginx.conf.j2\"\ncontent_type = \"jinja2\"\n",
        )
        .cinch(&["items", "web1"])
        .expect_code(2)
        .stderr_has("items.toml:2:10: source file bundles/base/files/nginx.conf.j2 of file:/etc/nginx/nginx.conf does not exist");
}

#[test]
fn duplicate_ids_across_bundles_name_both() {
    repo()
        .file("bundles/base/items.toml", "[pkg_apt.nginx]\n")
        .file(
            "bundles/web/items.toml",
            "\n[pkg_apt.nginx]\ninstalled = false\n",
        )
        .cinch(&["items", "web1"])
        .expect_code(2)
        .stderr_has("duplicate definition of pkg_apt:nginx on node 'web1'")
        .stderr_has("bundle 'base' (")
        .stderr_has("base/items.toml:1:1")
        .stderr_has("web/items.toml:2:1");
}

#[test]
fn every_problem_of_a_repo_is_reported_at_once() {
    let r = repo()
        .file("bundles/base/items.toml", "[filez.\"/a\"]\n[actions.x]\n")
        .file(
            "bundles/web/items.rhai",
            "#{ users: #{ bob: #{ shel: \"/bin/sh\" } } }\n",
        )
        .cinch(&["items", "web1"])
        .expect_code(2)
        .stderr_has("unknown item type `filez`")
        .stderr_has("action:x needs a `command`")
        .stderr_has("items.rhai:1:");
    assert!(
        r.stderr.contains("unknown attribute `shel` for user:bob"),
        "{}",
        r.stderr
    );
}

#[test]
fn items_rhai_runtime_error_names_file_and_line() {
    repo()
        .file(
            "bundles/base/items.rhai",
            "let a = 1;\nlet b = node.metadata.nginx.workers / 0;\n#{}\n",
        )
        .cinch(&["items", "web1"])
        .expect_code(2)
        .stderr_has("bundles/base/items.rhai:2:")
        .stderr_has("items.rhai failed for node 'web1'");
}

/// A repo whose node `n1` (local transport) has bundle `b`, for the sandbox limits.
fn limits_repo() -> TestRepo {
    let r = TestRepo::new();
    let nodes = format!(
        "[nodes.n1]\ntransport = \"local\"\nbundles = [\"b\"]\nlock_dir = \"{}\"\n",
        r.path().join("locks").display()
    );
    r.file("nodes.toml", &nodes)
        .file("bundles/b/items.toml", "")
}

/// Loops whose every step scans an 8 MB string: few template instructions, minutes of work.
const SLOW_TEMPLATE: &str = "{% set s = \"x\" * 8000000 %}{% for i in range(100000) %}{% if \"y\" in s %}y{% endif %}{% endfor %}\n";

#[test]
fn template_with_long_loops_stops_on_the_first_sigterm_with_exit_130() {
    let r = limits_repo();
    let target = r.path().join("out.conf");
    r.write(
        "bundles/b/items.toml",
        &format!(
            "[files.\"{}\"]\ncontent_type = \"jinja2\"\nsource = \"slow.j2\"\n",
            target.display()
        ),
    );
    r.write("bundles/b/files/slow.j2", SLOW_TEMPLATE);
    let started = std::time::Instant::now();
    let run = crate::harness::signalled(
        &r,
        &["apply", "n1"],
        libc::SIGTERM,
        std::time::Duration::from_millis(1500),
    )
    .expect_code(130)
    .stderr_has("interrupted");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "took {:?}\n{}",
        started.elapsed(),
        run.stderr
    );
    assert!(!target.exists(), "nothing applied after the interrupt");
}

#[test]
fn items_rhai_scanning_big_strings_stops_on_the_first_ctrl_c_with_exit_130() {
    let r = limits_repo();
    // Under the operation limit for hours: every `contains` is one operation over 8 MB.
    r.write(
        "bundles/b/items.rhai",
        "let s = \"x\";\nfor i in 0..23 { s += s; }\nloop { if s.contains(\"y\") { break; } }\n#{}\n",
    );
    let started = std::time::Instant::now();
    let run = crate::harness::signalled(
        &r,
        &["test"],
        libc::SIGINT,
        std::time::Duration::from_millis(1500),
    )
    .expect_code(130)
    .stderr_has("interrupted");
    assert!(
        !run.stdout.contains("problem") && !run.stderr.contains("problem"),
        "an interrupt is not a repo problem\n{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn nested_range_loops_in_a_template_run_out_of_fuel() {
    let r = limits_repo().file(
        "bundles/b/items.toml",
        "[files.\"/tmp/never\"]\ncontent_type = \"jinja2\"\nsource = \"loops.j2\"\n",
    );
    r.write(
        "bundles/b/files/loops.j2",
        "ok\n{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}\n",
    );
    r.cinch(&["test"])
        .expect_code(1)
        .stderr_has("loops.j2:2: template of file:/tmp/never failed: stopped after 5000000 template instructions");
}

#[test]
fn rhai_loop_building_megabyte_strings_stops_at_the_memory_limit() {
    let r = limits_repo().file(
        "bundles/b/items.rhai",
        "let n = 0;\nloop { let s = \"x\"; for i in 0..20 { s += s; } n += s.len(); }\n#{}\n",
    );
    r.cinch(&["test"])
        .expect_code(1)
        .stderr_has("items.rhai failed for node 'n1': memory limit exceeded");
}

#[test]
fn template_error_names_the_undefined_metadata_path() {
    let r = limits_repo().file(
        "bundles/b/items.toml",
        "[files.\"/tmp/never\"]\ncontent_type = \"jinja2\"\nsource = \"demo.j2\"\n",
    );
    r.write(
        "nodes.toml",
        "[nodes.n1]\ntransport = \"local\"\nbundles = [\"b\"]\n[nodes.n1.metadata]\ndemo = { port = 80 }\n",
    );
    r.write(
        "bundles/b/files/demo.j2",
        "port {{ metadata.demo.port }}\nname {{ metadata.demo.nosuch }}\n",
    );
    r.cinch(&["test"]).expect_code(1).stderr_has(
        "demo.j2:2: template of file:/tmp/never failed: `metadata.demo.nosuch` is undefined",
    );
}

#[test]
fn libs_import_cycle_in_items_rhai_is_an_error_not_a_stack_overflow() {
    let r = limits_repo()
        .file("bundles/b/items.rhai", "import \"a\" as a;\n#{}\n")
        .file("libs/a.rhai", "import \"b\" as b;\nfn f() { 1 }\n")
        .file("libs/b.rhai", "fn g() { 2 }\nimport \"a\" as a;\n");
    r.cinch(&["test"])
        .expect_code(1)
        .stderr_has("items.rhai:1:")
        .stderr_has("import cycle: libs/b.rhai line 2 imports \"a\"")
        .stderr_has("(a -> b -> a)");
}
