//! Dependency resolution through the real binary (`cinch items` builds the plan): every way a
//! graph can be wrong is reported with the item, its place and what to do.

use crate::harness::TestRepo;

fn with_items(items: &str) -> TestRepo {
    TestRepo::new()
        .file("nodes.toml", "[nodes.web1]\nbundles = [\"base\"]\n")
        .file("bundles/base/items.toml", items)
}

#[test]
fn a_sound_graph_lists_every_item_including_dependencies() {
    with_items(
        r#"
[directories."/srv/app"]
owner = "app"
[files."/srv/app/config"]
content = "x"
triggers = ["action:reload"]
[actions.reload]
command = "true"
triggered = true
[actions.migrate]
command = "true"
preceded_by = ["action:backup"]
[actions.backup]
command = "true"
triggered = true
[users.app]
needs = ["tag:accounts"]
[groups.app]
tags = ["accounts"]
"#,
    )
    .cinch(&["items", "web1"])
    .expect_code(0)
    .stdout_has("action:backup")
    .stdout_has("user:app");
}

#[test]
fn dependency_on_a_missing_item_names_item_bundle_node_and_id() {
    with_items("[actions.a]\ncommand = \"true\"\nneeds = [\"pkg_apt:ngnix\"]\n[pkg_apt.nginx]\n")
        .cinch(&["items", "web1"])
        .expect_code(2)
        .stderr_has("items.toml:3:9: action:a in bundle 'base' on node 'web1' has a dependency (needs) on 'pkg_apt:ngnix', which doesn't exist")
        .stderr_has("did you mean 'pkg_apt:nginx'?");
}

#[test]
fn a_loop_is_shown_as_the_whole_cycle() {
    with_items(
        "[actions.a]\ncommand = \"true\"\nneeds = [\"action:b\"]\n\
         [actions.b]\ncommand = \"true\"\nafter = [\"action:c\"]\n\
         [actions.c]\ncommand = \"true\"\nneeded_by = [\"action:b\"]\nafter = [\"action:a\"]\n",
    )
    .cinch(&["items", "web1"])
    .expect_code(2)
    .stderr_has("dependency loop on node 'web1': action:a -> action:b -> action:c -> action:a");
}

#[test]
fn an_item_cannot_trigger_itself() {
    with_items("[actions.a]\ncommand = \"true\"\ntriggered = true\ntriggers = [\"action:a\"]\n")
        .cinch(&["items", "web1"])
        .expect_code(2)
        .stderr_has("action:a cannot trigger itself");
}

#[test]
fn triggering_an_item_that_is_not_triggered_is_an_error() {
    with_items(
        "[files.\"/etc/x\"]\ncontent = \"x\"\ntriggers = [\"action:restart\"]\n\
         [actions.restart]\ncommand = \"true\"\n",
    )
    .cinch(&["items", "web1"])
    .expect_code(2)
    .stderr_has("file:/etc/x triggers action:restart, which is not triggered")
    .stderr_has("add triggered = true to action:restart");
}

#[test]
fn a_file_inside_a_file_is_an_error() {
    with_items("[files.\"/etc/x\"]\ncontent = \"\"\n[files.\"/etc/x/y\"]\ncontent = \"\"\n")
        .cinch(&["items", "web1"])
        .expect_code(2)
        .stderr_has("file:/etc/x/y is inside file:/etc/x, but a file cannot contain other paths");
}

#[test]
fn self_dependency_is_an_error() {
    with_items("[pkg_apt.nginx]\nneeds = [\"pkg_apt:nginx\"]\n")
        .cinch(&["items", "web1"])
        .expect_code(2)
        .stderr_has("pkg_apt:nginx cannot depend on itself");
}

#[test]
fn dependency_error_points_at_the_needs_line_not_the_item_header() {
    with_items(
        "[actions.a]\ncommand = \"true\"\ntags = [\"x\"]\n\nafter = [\"action:b\"]\n",
    )
    .cinch(&["test"])
    .expect_code(1)
    .stderr_has("items.toml:5:9: action:a in bundle 'base' on node 'web1' has a dependency (after) on 'action:b'");
}
