//! Computed metadata (issue 14): reactors and their layer, fixed point, `need`, atomic values,
//! other nodes' metadata, attributes through groups, os, and `--blame`.

use crate::harness::TestRepo;

fn metadata_json(r: &TestRepo, node: &str) -> serde_json::Value {
    let run = r.cinch(&["--json", "metadata", node]).expect_code(0);
    run.json_lines().pop().expect("one JSON line")
}

#[test]
fn layers_are_defaults_then_reactors_then_groups_then_node() {
    let r = TestRepo::new()
        .file(
            "nodes.toml",
            "[nodes.web1]\ngroups = [\"eu\"]\nbundles = [\"app\"]\n\
             [nodes.web1.metadata]\nnode_wins = \"node\"\n",
        )
        .file(
            "groups.toml",
            "[groups.all]\nsubgroups = [\"eu\"]\n[groups.all.metadata]\ngroup_wins = \"all\"\nsub = \"all\"\n\
             [groups.eu.metadata]\nsub = \"eu\"\nnode_wins = \"eu\"\n",
        )
        .file(
            "bundles/app/metadata.toml",
            "reactor_wins = \"default\"\ngroup_wins = \"default\"\nonly_default = 1\n",
        )
        .file(
            "bundles/app/metadata.rhai",
            "fn contribute(node, metadata) {\n  #{ reactor_wins: \"reactor\", group_wins: \"reactor\", node_wins: \"reactor\", saw_default: metadata.only_default }\n}\n",
        );
    let m = metadata_json(&r, "web1");
    assert_eq!(m["reactor_wins"], "reactor", "{m}");
    assert_eq!(m["group_wins"], "all", "{m}");
    assert_eq!(m["sub"], "eu", "{m}");
    assert_eq!(m["node_wins"], "node", "{m}");
    assert_eq!(m["saw_default"], 1, "{m}");
}

#[test]
fn reactors_reach_a_fixed_point_and_retry_on_a_missing_key() {
    // `late` needs what `early` derives from what `first` derives: the order in the file
    // is the worst one, so both must be retried.
    let r = TestRepo::new()
        .file(
            "nodes.toml",
            "[nodes.n]\nbundles = [\"b\"]\n[nodes.n.metadata]\nbase = 2\n",
        )
        .file(
            "bundles/b/metadata.rhai",
            "fn late(node, metadata) { #{ c: need(metadata, \"x.b\") * 10 } }\n\
             fn early(node, metadata) { #{ x: #{ b: need(metadata, \"a\") + 1 } } }\n\
             fn first(node, metadata) { #{ a: metadata.base * 2 } }\n",
        );
    let m = metadata_json(&r, "n");
    assert_eq!(m["a"], 4, "{m}");
    assert_eq!(m["x"]["b"], 5, "{m}");
    assert_eq!(m["c"], 50, "{m}");
}

#[test]
fn key_still_missing_at_the_fixed_point_names_reactor_file_line_and_key() {
    let r = TestRepo::new()
        .file("nodes.toml", "[nodes.n]\nbundles = [\"b\"]\n[nodes.m]\n")
        .file(
            "bundles/b/metadata.rhai",
            "// ports\n\nfn ports(node, metadata) {\n  #{ port: need(metadata, \"nginx.port\") }\n}\n",
        );
    let run = r.cinch(&["metadata", "n"]).expect_code(2);
    assert!(
        run.stderr.contains("bundles/b/metadata.rhai:4")
            && run.stderr.contains("reactor 'ports' of bundle 'b'")
            && run.stderr.contains("`nginx.port`"),
        "{}",
        run.stderr
    );
    // Only that node fails.
    r.cinch(&["metadata", "m"]).expect_code(0);
    r.cinch(&["test"]).expect_code(1).stderr_has("`nginx.port`");
}

#[test]
fn oscillating_reactors_are_an_error_naming_them() {
    let r = TestRepo::new()
        .file("nodes.toml", "[nodes.n]\nbundles = [\"b\"]\n")
        .file(
            "bundles/b/metadata.rhai",
            "fn up(node, metadata) { #{ a: (metadata.b ?? 0) + 1 } }\n\
             fn down(node, metadata) { #{ b: (metadata.a ?? 0) + 1 } }\n",
        );
    let run = r.cinch(&["metadata", "n"]).expect_code(2);
    assert!(
        run.stderr.contains("never settles")
            && run.stderr.contains("reactor 'up' of bundle 'b'")
            && run.stderr.contains("reactor 'down' of bundle 'b'"),
        "{}",
        run.stderr
    );
}

#[test]
fn atomic_values_replace_instead_of_merging_in_toml_and_reactors() {
    let r = TestRepo::new()
        .file(
            "nodes.toml",
            "[nodes.n]\nbundles = [\"b\"]\n[nodes.n.metadata]\nports = { __atomic__ = [8080] }\n\
             tags = [\"node\"]\n",
        )
        .file("bundles/b/metadata.toml", "ports = [80, 443]\ntags = [\"default\"]\n")
        .file(
            "bundles/b/metadata.rhai",
            "fn r(node, metadata) { #{ tags: atomic([\"reactor\"]), opts: atomic(#{ only: 1 }) } }\n",
        )
        .file("bundles/b/metadata.toml", "ports = [80, 443]\ntags = [\"default\"]\nopts = { a = 1, b = 2 }\n");
    let m = metadata_json(&r, "n");
    assert_eq!(m["ports"], serde_json::json!([8080]), "{m}");
    // The reactor's atomic list replaced the default; the node's list still merges on top.
    assert_eq!(m["tags"], serde_json::json!(["reactor", "node"]), "{m}");
    assert_eq!(m["opts"], serde_json::json!({"only": 1}), "{m}");
}

/// Three nodes in group `web`; each has a hosts reactor reading the others' addresses.
fn web_fleet() -> TestRepo {
    TestRepo::new()
        .file(
            "nodes.toml",
            "[nodes.web1.metadata]\nip = \"10.0.0.1\"\n\
             [nodes.web2.metadata]\nip = \"10.0.0.2\"\n\
             [nodes.web3]\nos = \"alpine\"\n[nodes.web3.metadata]\nip = \"10.0.0.3\"\n\
             [nodes.db1]\nbundles = [\"monitor\"]\n",
        )
        .file(
            "groups.toml",
            "[groups.web]\nmember_patterns = [\"^web\"]\nbundles = [\"hosts\"]\n",
        )
        .file(
            "bundles/hosts/metadata.rhai",
            "fn hosts(node, metadata) {\n  let out = #{};\n  for n in nodes(\"group:web\") {\n    \
             out[n.name] = need(node_metadata(n.name), \"ip\");\n  }\n  #{ hosts: out, fqdn: node.name + \".example\" }\n}\n",
        )
        .file(
            "bundles/monitor/metadata.rhai",
            "fn targets(node, metadata) {\n  let t = [];\n  for n in nodes(\"group:web\") { t.push(node_metadata(n.name).fqdn); }\n  #{ targets: t }\n}\n",
        )
}

#[test]
fn reactors_read_other_nodes_that_read_them_back() {
    let r = web_fleet();
    let m = metadata_json(&r, "web1");
    assert_eq!(
        m["hosts"],
        serde_json::json!({"web1": "10.0.0.1", "web2": "10.0.0.2", "web3": "10.0.0.3"}),
        "{m}"
    );
    // db1 reads a value the web nodes' own reactors compute.
    let d = metadata_json(&r, "db1");
    assert_eq!(
        d["targets"],
        serde_json::json!(["web1.example", "web2.example", "web3.example"]),
        "{d}"
    );
    r.cinch(&["test"]).expect_code(0);
}

#[test]
fn cross_node_cycle_that_never_settles_names_the_chain() {
    let r = TestRepo::new()
        .file(
            "nodes.toml",
            "[nodes.a]\nbundles = [\"p\"]\n[nodes.a.metadata]\npeer = \"b\"\n\
             [nodes.b]\nbundles = [\"p\"]\n[nodes.b.metadata]\npeer = \"a\"\n[nodes.c]\n",
        )
        .file(
            "bundles/p/metadata.rhai",
            "fn count(node, metadata) {\n  #{ n: need(node_metadata(metadata.peer), \"n\") + 1 }\n}\n",
        );
    let run = r.cinch(&["metadata", "a"]).expect_code(2);
    assert!(
        run.stderr.contains("bundles/p/metadata.rhai:2")
            && run.stderr.contains("`n`")
            && run.stderr.contains("a -> b -> a"),
        "{}",
        run.stderr
    );
    r.cinch(&["metadata", "c"]).expect_code(0);
}

#[test]
fn metadata_of_one_node_computes_only_what_it_needs() {
    // n2's reactor would fail; asking for n1 must not run it.
    let r = TestRepo::new()
        .file(
            "nodes.toml",
            "[nodes.n1]\nbundles = [\"ok\"]\n[nodes.n2]\nbundles = [\"bad\"]\n",
        )
        .file(
            "bundles/ok/metadata.rhai",
            "fn r(node, metadata) { #{ fine: true } }\n",
        )
        .file(
            "bundles/bad/metadata.rhai",
            "fn r(node, metadata) { throw \"must not run\"; }\n",
        );
    let m = metadata_json(&r, "n1");
    assert_eq!(m["fine"], true);
    r.cinch(&["metadata", "n2"])
        .expect_code(2)
        .stderr_has("must not run");
}

#[test]
fn runaway_reactor_is_stopped_by_the_sandbox_with_file_and_line() {
    let r = TestRepo::new()
        .file("nodes.toml", "[nodes.n]\nbundles = [\"b\"]\n")
        .file(
            "bundles/b/metadata.rhai",
            "// spins\nfn spin(node, metadata) {\n  let i = 0;\n  loop { i += 1; }\n}\n",
        );
    // Rhai's operation limit carries no position: the error points at the reactor.
    let run = r.cinch(&["metadata", "n"]).expect_code(2);
    assert!(
        run.stderr.contains("bundles/b/metadata.rhai:2")
            && run.stderr.contains("reactor 'spin' of bundle 'b'")
            && run.stderr.contains("stopped"),
        "{}",
        run.stderr
    );
}

#[test]
fn attributes_come_through_groups_and_unrelated_groups_conflict() {
    let r = TestRepo::new()
        .file(
            "nodes.toml",
            "[nodes.n1]\ngroups = [\"eu\"]\n[nodes.n2]\ngroups = [\"eu\"]\nusername = \"own\"\n\
             [nodes.n3]\ngroups = [\"eu\", \"other\"]\n",
        )
        .file(
            "groups.toml",
            "[groups.all]\nsubgroups = [\"eu\"]\nusername = \"admin\"\nport = 2222\nos = \"debian\"\n\
             [groups.eu]\nusername = \"deploy\"\nos_version = \"12\"\n\
             [groups.other]\nusername = \"ops\"\n",
        );
    let run = r
        .cinch(&[
            "--json",
            "nodes",
            "n1,n2",
            "-a",
            "username,port,os,os_version",
        ])
        .expect_code(0);
    let lines = run.json_lines();
    assert_eq!(lines[0]["username"], "deploy", "{lines:?}");
    assert_eq!(lines[0]["port"], 2222);
    assert_eq!(lines[0]["os"], "debian");
    assert_eq!(lines[0]["os_version"], "12");
    assert_eq!(lines[1]["username"], "own");
    let run = r.cinch(&["metadata", "n3"]).expect_code(2);
    assert!(
        run.stderr.contains("attribute conflict at `username`")
            && run.stderr.contains("group 'eu'")
            && run.stderr.contains("group 'other'")
            && run.stderr.contains("groups.toml:"),
        "{}",
        run.stderr
    );
    let blame = r
        .cinch(&["nodes", "n1", "-a", "username,port", "--blame"])
        .expect_code(0);
    assert!(
        blame
            .stdout
            .contains("username = \"deploy\"  <- group 'eu' (")
            && blame.stdout.contains("port = 2222  <- group 'all' ("),
        "{}",
        blame.stdout
    );
}

#[test]
fn os_and_attributes_reach_templates_items_rhai_and_reactors() {
    let out = tempfile::tempdir().expect("tempdir");
    let r = TestRepo::new()
        .file(
            "nodes.toml",
            &format!(
                "[nodes.n]\ntransport = \"local\"\nos = \"alpine\"\nos_version = \"3.20\"\n\
                 bundles = [\"b\"]\ngroups = [\"g\"]\nlock_dir = \"{0}/locks\"\n",
                out.path().display()
            ),
        )
        .file("groups.toml", "[groups.g]\n")
        .file(
            "bundles/b/metadata.rhai",
            "fn pm(node, metadata) { #{ pm: if node.os == \"alpine\" { \"apk\" } else { \"apt\" } } }\n",
        )
        .file(
            "bundles/b/items.rhai",
            &format!(
                "#{{ files: #{{ \"{0}/rhai\": #{{ content: node.os + \" \" + node.os_version + \" \" + \
                 node.metadata.pm + \" \" + node.in_group(\"g\") + \" \" + node.has_bundle(\"x\") }} }} }}\n",
                out.path().display()
            ),
        )
        .file(
            "bundles/b/items.toml",
            &format!(
                "[files.\"{0}/tmpl\"]\nsource = \"t.j2\"\ncontent_type = \"jinja2\"\n",
                out.path().display()
            ),
        )
        .file(
            "bundles/b/files/t.j2",
            "{{ node.os }} {{ node.os_version }} {{ metadata.pm }} {{ in_group('g') }} \
             {{ has_bundle('b') }} {{ nodes('all') | map(attribute='name') | join(',') }} \
             {{ node_metadata('n').pm }}",
        );
    r.cinch(&["apply", "n"]).expect_code(0);
    let rhai = std::fs::read_to_string(out.path().join("rhai")).expect("rhai file");
    assert_eq!(rhai, "alpine 3.20 apk true false");
    let tmpl = std::fs::read_to_string(out.path().join("tmpl")).expect("template file");
    // Jinja prints booleans the Python way.
    assert_eq!(tmpl, "alpine 3.20 apk True True n apk");
}

#[test]
fn blame_names_layer_and_file_line_or_reactor() {
    let r = TestRepo::new()
        .file(
            "nodes.toml",
            "[nodes.n]\nbundles = [\"b\"]\ngroups = [\"g\"]\n[nodes.n.metadata]\nmine = 1\n",
        )
        .file("groups.toml", "[groups.g.metadata]\nfrom_group = 2\n")
        .file("bundles/b/metadata.toml", "deflt = 3\n")
        .file(
            "bundles/b/metadata.rhai",
            "fn r(node, metadata) { #{ computed: 4 } }\n",
        );
    let run = r.cinch(&["metadata", "n", "--blame"]).expect_code(0);
    assert!(
        run.stdout.contains("mine = 1  <- node 'n' (")
            && run.stdout.contains("nodes.toml:5")
            && run.stdout.contains("from_group = 2  <- group 'g' (")
            && run.stdout.contains("groups.toml:2")
            && run
                .stdout
                .contains("deflt = 3  <- bundle 'b' (metadata.toml) (")
            && run
                .stdout
                .contains("computed = 4  <- reactor 'r' of bundle 'b' (")
            && run.stdout.contains("bundles/b/metadata.rhai"),
        "{}",
        run.stdout
    );
    let j = r
        .cinch(&["--json", "metadata", "n", "computed", "--blame"])
        .expect_code(0);
    let v = j.json_lines().pop().expect("json");
    assert_eq!(v["computed"]["value"], 4, "{v}");
    assert!(
        v["computed"]["from"][0]
            .as_str()
            .is_some_and(|s| s.starts_with("reactor 'r' of bundle 'b'")),
        "{v}"
    );
    assert!(v.get("mine").is_none(), "{v}");
}

#[test]
fn cinch_test_reports_order_dependent_reactors_and_ones_that_never_contribute() {
    let r = TestRepo::new()
        .file("nodes.toml", "[nodes.n]\nbundles = [\"b\"]\n")
        .file(
            "bundles/b/metadata.rhai",
            "fn first(node, metadata) { if metadata.seen == () { #{ seen: \"first\" } } else { #{} } }\n\
             fn second(node, metadata) { if metadata.seen == () { #{ seen: \"second\" } } else { #{} } }\n\
             fn idle(node, metadata) { #{} }\n",
        );
    let run = r.cinch(&["test"]).expect_code(1);
    assert!(
        run.stderr
            .contains("differs between two runs of its reactors"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("reactor 'idle' of bundle 'b' never contributes anything"),
        "{}",
        run.stderr
    );
}

#[test]
fn reactor_that_is_not_a_function_of_node_and_metadata_is_named() {
    let r = TestRepo::new()
        .file("nodes.toml", "[nodes.n]\nbundles = [\"b\"]\n")
        .file(
            "bundles/b/metadata.rhai",
            "fn _helper(x) { x }\n\nfn r(node) { #{} }\n",
        );
    r.cinch(&["metadata", "n"])
        .expect_code(2)
        .stderr_has("bundles/b/metadata.rhai:3")
        .stderr_has("reactor 'r' takes 1 parameter(s)");
}

#[test]
fn other_nodes_metadata_cannot_be_changed_by_a_reactor() {
    let r = TestRepo::new()
        .file(
            "nodes.toml",
            "[nodes.a]\nbundles = [\"w\"]\n[nodes.b.metadata]\nip = \"10.0.0.2\"\n",
        )
        .file(
            "bundles/w/metadata.rhai",
            "fn meddle(node, metadata) {\n  let m = node_metadata(\"b\");\n  m.ip = \"evil\";\n  #{ done: true }\n}\n",
        );
    let run = r.cinch(&["metadata", "a"]).expect_code(2);
    assert!(
        run.stderr.contains("bundles/w/metadata.rhai:3")
            && run.stderr.contains("reactor 'meddle' of bundle 'w'")
            && run.stderr.contains("failed: No writable property 'ip'"),
        "{}",
        run.stderr
    );
    let b = metadata_json(&r, "b");
    assert_eq!(b["ip"], "10.0.0.2", "{b}");
}

#[test]
fn changing_what_nodes_returned_does_not_change_it_for_the_next_reactor() {
    // nodes() results are cached per selector; each call must still hand out its own copy.
    let r = TestRepo::new()
        .file(
            "nodes.toml",
            "[nodes.a]\nbundles = [\"p\"]\n[nodes.b]\nbundles = [\"p\"]\n",
        )
        .file(
            "bundles/p/metadata.rhai",
            "fn spoil(node, metadata) {\n  let all = nodes(\"all\");\n  all[0].name = \"spoiled\";\n  \
             all.push(#{ name: \"extra\" });\n  #{}\n}\n\
             fn names(node, metadata) {\n  let out = [];\n  for n in nodes(\"all\") { out.push(n.name); }\n  #{ names: out }\n}\n",
        );
    for node in ["a", "b"] {
        let m = metadata_json(&r, node);
        assert_eq!(m["names"], serde_json::json!(["a", "b"]), "{m}");
    }
    r.cinch(&["test"]).expect_code(0);
}

/// A node with reactors used to lose its resolved secrets: the first changed reactor output
/// merged the node's layers again from the raw TOML, so `!password_for:db` came back as text.
#[test]
fn reactor_output_keeps_the_secrets_of_static_metadata() {
    let keys = tempfile::tempdir().expect("tempdir");
    let r = TestRepo::new()
        .env(
            "CINCH_SECRETS_FILE",
            &keys.path().join("keys.toml").display().to_string(),
        )
        .file(
            "nodes.toml",
            "[nodes.n]\nbundles = [\"b\"]\n[nodes.n.metadata]\npw = \"!password_for:db\"\n",
        )
        .file("bundles/b/items.toml", "")
        .file(
            "bundles/b/metadata.rhai",
            "fn size(node, metadata) {\n  #{ pw_len: need(metadata, \"pw\").len() }\n}\n",
        );
    r.cinch(&["secret", "keygen"]).expect_code(0);
    let m = metadata_json(&r, "n");
    assert_eq!(m["pw"], "[secret:db]", "{m}");
    assert_eq!(m["pw_len"], 32, "{m}");
}
