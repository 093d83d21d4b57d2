//! items.rhai: items computed from the node. The script is compiled once per bundle and
//! evaluated per node in the shared sandbox ([`crate::repo::rhai_engine::engine`]); what it returns goes
//! through the same validation as items.toml, so both report problems the same way.

use std::path::{Path, PathBuf};

use ::rhai::{AST, Dynamic, Engine};
use serde_json::Value;

use crate::diag::{Diagnostic, Location};
use crate::items::Item;
use crate::items::parse::{build_items, item_type};
use crate::items::reader::{RawAttr, RawItem};
use crate::repo::{Bundle, Node, Repo};

/// A bundle's compiled items.rhai with the engine that runs it (both shared across threads).
pub(crate) struct Compiled {
    engine: Engine,
    ast: AST,
    path: PathBuf,
    /// The source text, to find the line an item's name appears on.
    text: String,
}

/// Compiles `bundle/items.rhai` if it exists.
fn compile(repo: &Repo, bundle: &Bundle) -> Result<Option<Compiled>, Vec<Diagnostic>> {
    let path = bundle.dir.join("items.rhai");
    let text = match crate::repo::read_text(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(vec![
                Diagnostic::at(
                    Location::file(&path),
                    format!("cannot read items.rhai: {e}"),
                )
                .as_root_cause(),
            ]);
        }
    };
    let mut engine = crate::repo::rhai_engine::engine(&repo.sandbox());
    // `decrypt_file` in items.rhai reads from the bundle's files/, like templates.
    crate::repo::secrets::register_rhai(
        &mut engine,
        crate::items::parse::files_dir(bundle),
        repo.sandbox(),
    );
    crate::repo::computed::register(&mut engine);
    match engine.compile(&text) {
        Ok(ast) => Ok(Some(Compiled {
            engine,
            ast,
            path,
            text,
        })),
        Err(e) => Err(vec![
            Diagnostic::at(
                position_location(&path, e.position()),
                format!("items.rhai does not compile: {}", e.err_type()),
            )
            .as_root_cause(),
        ]),
    }
}

fn position_location(path: &Path, pos: ::rhai::Position) -> Location {
    Location {
        file: path.to_path_buf(),
        line: pos.line().unwrap_or(0),
        column: pos.position().unwrap_or(0),
    }
}

/// The `node` a script sees: name, hostname, groups, bundles, every attribute (os,
/// os_version, username, ...) and its computed metadata.
pub(crate) fn node_dynamic(node: &Node) -> Result<Dynamic, String> {
    let mut value = crate::repo::computed::summary_json(node);
    let metadata = node.metadata().map_err(|d| {
        d.first()
            .map(|d| d.message.clone())
            .unwrap_or_else(|| "its metadata cannot be computed".into())
    })?;
    if let Value::Object(m) = &mut value {
        m.insert("metadata".into(), (*metadata).clone());
    }
    ::rhai::serde::to_dynamic(&value).map_err(|e| e.to_string())
}

/// The items `bundle`'s items.rhai produces for `node` (none without the file).
/// `compiled` is the bundle's cache of its compiled script (shared by every node).
pub(crate) fn node_items(
    repo: &Repo,
    bundle: &Bundle,
    node: &Node,
    compiled: &std::sync::OnceLock<Result<Option<Compiled>, Vec<Diagnostic>>>,
) -> Result<Vec<Item>, Vec<Diagnostic>> {
    let compiled = match compiled.get_or_init(|| compile(repo, bundle)) {
        Ok(Some(c)) => c,
        Ok(None) => return Ok(Vec::new()),
        Err(diags) => return Err(diags.clone()),
    };
    let file_diag = |msg: String| vec![Diagnostic::at(Location::file(&compiled.path), msg)];
    let node_value = node_dynamic(node).map_err(|e| {
        file_diag(format!(
            "node '{}' metadata cannot be given to items.rhai: {e}",
            node.name
        ))
    })?;
    let mut scope = ::rhai::Scope::new();
    scope.push_constant("node", node_value);
    // Computing items prepares an apply: once the user pressed Ctrl-C, none of it is wanted.
    let budget = crate::budget::Guard::new(crate::budget::Stop::OnAnyInterrupt);
    let _fleet = crate::repo::computed::enter(node.fleet.as_ref());
    let result = compiled
        .engine
        .eval_ast_with_scope::<Dynamic>(&mut scope, &compiled.ast)
        .map_err(|mut e| {
            let why = crate::repo::rhai_engine::stop_reason(&e);
            let pos = e.take_position();
            let why = why.unwrap_or_else(|| e.to_string());
            vec![Diagnostic::at(
                position_location(&compiled.path, pos),
                format!("items.rhai failed for node '{}': {why}", node.name),
            )]
        })?;
    drop(budget);
    if !result.is_map() {
        return Err(file_diag(format!(
            "items.rhai must return a map like #{{ files: #{{ \"/etc/motd\": #{{ content: \"hi\" }} }} }}, \
             but for node '{}' it returned {}",
            node.name,
            result.type_name()
        )));
    }
    let value: Value = ::rhai::serde::from_dynamic(&result).map_err(|e| {
        file_diag(format!(
            "items.rhai returned a value cinch cannot read for node '{}': {e}",
            node.name
        ))
    })?;
    let (raws, mut diags) = raw_items(compiled, &value);
    let (items, more) = build_items(bundle, raws);
    diags.extend(more);
    if diags.is_empty() {
        Ok(items)
    } else {
        for d in &mut diags {
            d.message = format!("{} (items.rhai, node '{}')", d.message, node.name);
        }
        Err(diags)
    }
}

/// Walks the returned map the way items.toml is walked, placing each item at the line its
/// name first appears on (the map itself carries no positions).
fn raw_items(compiled: &Compiled, value: &Value) -> (Vec<RawItem>, Vec<Diagnostic>) {
    let mut raws = Vec::new();
    let mut diags = Vec::new();
    let Value::Object(tables) = value else {
        return (raws, diags);
    };
    for (table, items) in tables {
        let tloc = compiled.find(table);
        let type_name = match item_type(table, &tloc) {
            Ok(t) => t,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        let Value::Object(items) = items else {
            diags.push(Diagnostic::at(
                tloc,
                format!("`{table}` must be a map of items, like #{{ \"NAME\": #{{ ... }} }}"),
            ));
            continue;
        };
        for (name, attrs) in items {
            let loc = compiled.find(name);
            let Value::Object(attrs) = attrs else {
                diags.push(Diagnostic::at(
                    loc,
                    format!("{type_name}:{name} must be a map of attributes"),
                ));
                continue;
            };
            raws.push(RawItem {
                type_name,
                name: name.clone(),
                loc: loc.clone(),
                attrs: attrs
                    .iter()
                    .map(|(k, v)| RawAttr {
                        name: k.clone(),
                        key_loc: loc.clone(),
                        value_loc: loc.clone(),
                        value: v.clone(),
                    })
                    .collect(),
            });
        }
    }
    (raws, diags)
}

impl Compiled {
    /// The first place `word` is written as a string literal or a map key; the file alone if
    /// it is computed.
    fn find(&self, word: &str) -> Location {
        let quoted = format!("\"{word}\"");
        let key = format!("{word}:");
        let offset = self.text.find(&quoted).or_else(|| {
            self.text.match_indices(&key).map(|(i, _)| i).find(|&i| {
                i == 0
                    || !self.text[..i]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_')
            })
        });
        match offset {
            Some(o) => Location::from_offset(&self.path, &self.text, o),
            None => Location::file(&self.path),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::items::testutil::{Fixture, render};
    use crate::items::{FileSource, ItemKind, load_node_items};

    #[test]
    fn items_depend_on_the_node_and_share_validation_with_toml() {
        let f = Fixture::new().bundle("web");
        f.write(
            "libs/util.rhai",
            "fn conf_path(name) { \"/etc/\" + name + \".conf\" }\n",
        );
        f.write(
            "bundles/web/items.rhai",
            r#"import "util" as util;
let files = #{};
files[util::conf_path(node.name)] = #{ content: "workers=" + node.metadata.nginx.workers + "\n" };
#{
    files: files,
    actions: #{
        "reload": #{ command: "true", triggered: true },
    },
}
"#,
        );
        f.write("bundles/web/items.toml", "[pkg_apt.nginx]\n");
        let node = f.node(
            "web1",
            &["web"],
            serde_json::json!({"nginx": {"workers": 4}}),
        );
        let items = load_node_items(&f.repo, &node).unwrap_or_else(|d| panic!("{}", render(&d)));
        let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(
            ids,
            ["action:reload", "file:/etc/web1.conf", "pkg_apt:nginx"]
        );
        let ItemKind::File(a) = &items[1].kind else {
            panic!()
        };
        assert_eq!(a.source, FileSource::Content("workers=4\n".into()));
        // The literal name is found in the script; the computed one points at the file.
        assert!(items[0].location.file.ends_with("items.rhai"));
        assert_eq!(items[0].location.line, 7);
        assert_eq!(items[1].location.line, 0);
    }

    #[test]
    fn bad_items_from_rhai_point_at_the_script() {
        let f = Fixture::new().bundle("b");
        f.write(
            "bundles/b/items.rhai",
            "#{\n  actions: #{\n    \"x\": #{ comand: \"true\" },\n  },\n  servies: #{},\n}\n",
        );
        let node = f.node("n1", &["b"], serde_json::json!({}));
        let errors = render(&load_node_items(&f.repo, &node).unwrap_err());
        assert!(
            errors.contains("items.rhai:3:5: unknown attribute `comand` for action:x"),
            "{errors}"
        );
        assert!(errors.contains("did you mean `command`?"), "{errors}");
        assert!(errors.contains("unknown item type `servies`"), "{errors}");
    }

    #[test]
    fn runtime_and_syntax_errors_report_file_and_line() {
        let f = Fixture::new().bundle("b");
        f.write(
            "bundles/b/items.rhai",
            "let x = 1;\nlet y = nosuchvar + 1;\n#{}\n",
        );
        let node = f.node("n1", &["b"], serde_json::json!({}));
        let errors = render(&load_node_items(&f.repo, &node).unwrap_err());
        assert!(
            errors.contains("items.rhai:2:9: items.rhai failed for node 'n1'"),
            "{errors}"
        );
        assert!(errors.contains("nosuchvar"), "{errors}");

        let f = Fixture::new().bundle("b");
        f.write("bundles/b/items.rhai", "let x = ;\n");
        let errors = render(&load_node_items(&f.repo, &node).unwrap_err());
        assert!(errors.contains("items.rhai:1:"), "{errors}");
        assert!(errors.contains("does not compile"), "{errors}");

        let f = Fixture::new().bundle("b");
        f.write("bundles/b/items.rhai", "42\n");
        let errors = render(&load_node_items(&f.repo, &node).unwrap_err());
        assert!(errors.contains("must return a map"), "{errors}");
    }

    #[test]
    fn runaway_scripts_are_stopped() {
        let f = Fixture::new().bundle("b");
        f.write("bundles/b/items.rhai", "loop {}\n");
        let node = f.node("n1", &["b"], serde_json::json!({}));
        let errors = render(&load_node_items(&f.repo, &node).unwrap_err());
        assert!(
            errors.contains("stopped after 5000000 operations"),
            "{errors}"
        );
    }

    #[test]
    fn duplicates_between_toml_and_rhai_are_errors() {
        let f = Fixture::new().toml("b", "[pkg_apt.nginx]\n");
        f.write("bundles/b/items.rhai", "#{ pkg_apt: #{ nginx: #{} } }\n");
        let node = f.node("n1", &["b"], serde_json::json!({}));
        let errors = render(&load_node_items(&f.repo, &node).unwrap_err());
        assert!(
            errors.contains("duplicate definition of pkg_apt:nginx"),
            "{errors}"
        );
        assert!(errors.contains("items.toml:1:1"), "{errors}");
        assert!(errors.contains("items.rhai:1:"), "{errors}");
    }
}
