//! The expected bytes of file items: inline text, source files, base64 and jinja2 templates.
//! Pure and local, so `cinch test` can render every file of every node without a network.

use std::path::{Component, Path};

use base64::Engine as _;
use minijinja::{Environment, UndefinedBehavior, Value as JValue};
use rayon::prelude::*;

use crate::diag::{Diagnostic, Location};
use crate::items::parse::files_dir;
use crate::items::{ContentType, FileSource, Item, ItemKind};
use crate::repo::{Bundle, Node, Repo};

/// The expected content of a file item; `None` when cinch does not manage its content
/// (`content_type = "any"`, `delete = true`) or the item is not a file.
pub fn content(repo: &Repo, node: &Node, item: &Item) -> Result<Option<Vec<u8>>, Diagnostic> {
    content_with(repo, item, &|| node_context(node))
}

/// Renders every file item of a node in parallel and returns all problems (for `cinch test`).
pub fn render_all(repo: &Repo, node: &Node, items: &[Item]) -> Vec<Diagnostic> {
    let ctx = node_context(node);
    items
        .par_iter()
        .filter_map(|item| content_with(repo, item, &|| ctx.clone()).err())
        .collect()
}

/// What templates see: `node` (name, hostname, groups, bundles, metadata) and `metadata`.
fn node_context(node: &Node) -> JValue {
    minijinja::context! {
        node => minijinja::context! {
            name => node.name.as_str(),
            hostname => node.hostname.as_str(),
            groups => JValue::from_serialize(&node.groups),
            bundles => JValue::from_serialize(&node.bundles),
            metadata => JValue::from_serialize(&node.metadata),
        },
        metadata => JValue::from_serialize(&node.metadata),
    }
}

fn content_with(
    repo: &Repo,
    item: &Item,
    ctx: &dyn Fn() -> JValue,
) -> Result<Option<Vec<u8>>, Diagnostic> {
    let ItemKind::File(attrs) = &item.kind else {
        return Ok(None);
    };
    if attrs.delete || attrs.content_type == ContentType::Any {
        return Ok(None);
    }
    let at_item = |msg: String| Diagnostic::at(item.location.clone(), msg);
    let read = |path: &Path| {
        crate::repo::read_file(path).map_err(|e| {
            at_item(format!(
                "cannot read source {} of {}: {e}",
                path.display(),
                item.id
            ))
        })
    };
    let bytes = match (&attrs.source, attrs.content_type) {
        (FileSource::None, _) | (_, ContentType::Any) => return Ok(None),
        (FileSource::Content(text), ContentType::Text) => text.clone().into_bytes(),
        (FileSource::Source(path), ContentType::Text) => {
            let bytes = read(path)?;
            if std::str::from_utf8(&bytes).is_err() {
                return Err(at_item(format!(
                    "source {} of {} is not UTF-8 text",
                    path.display(),
                    item.id
                ))
                .with_hint("set content_type = \"binary\" to upload it byte for byte"));
            }
            bytes
        }
        (FileSource::Content(b64), ContentType::Base64) => decode_base64(b64.as_bytes())
            .map_err(|e| at_item(format!("content of {} is not valid base64: {e}", item.id)))?,
        (FileSource::Source(path), ContentType::Base64) => {
            decode_base64(&read(path)?).map_err(|e| {
                at_item(format!(
                    "source {} of {} is not valid base64: {e}",
                    path.display(),
                    item.id
                ))
            })?
        }
        (FileSource::Source(path), ContentType::Binary) => read(path)?,
        // Parsing rejects inline content for binary files; treat it as its bytes regardless.
        (FileSource::Content(text), ContentType::Binary) => text.clone().into_bytes(),
        (FileSource::Content(source), ContentType::Jinja2) => {
            let env = templates(repo, item)?;
            let tmpl = env
                .template_from_named_str(&item.id, source)
                .map_err(|e| template_error(repo, item, &e))?;
            tmpl.render(ctx())
                .map_err(|e| template_error(repo, item, &e))?
                .into_bytes()
        }
        (FileSource::Source(path), ContentType::Jinja2) => {
            let env = templates(repo, item)?;
            let bundle = bundle_of(repo, item)?;
            let name = path
                .strip_prefix(files_dir(bundle))
                .map(|p| p.to_string_lossy().into_owned())
                .map_err(|_| at_item(format!("source of {} is outside files/", item.id)))?;
            let tmpl = env
                .get_template(&name)
                .map_err(|e| template_error(repo, item, &e))?;
            tmpl.render(ctx())
                .map_err(|e| template_error(repo, item, &e))?
                .into_bytes()
        }
    };
    Ok(Some(bytes))
}

fn decode_base64(data: &[u8]) -> Result<Vec<u8>, base64::DecodeError> {
    // Line breaks are common in base64 pasted into TOML; they carry no data.
    let compact: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(compact)
}

fn bundle_of<'r>(repo: &'r Repo, item: &Item) -> Result<&'r Bundle, Diagnostic> {
    repo.bundles.get(&item.bundle).ok_or_else(|| {
        Diagnostic::at(
            item.location.clone(),
            format!("bundle '{}' of {} does not exist", item.bundle, item.id),
        )
    })
}

/// The bundle's template environment: strict about undefined values, loading (and caching)
/// templates from its files/ only, so `{% include %}` cannot read outside the bundle.
fn templates<'r>(repo: &'r Repo, item: &Item) -> Result<&'r Environment<'static>, Diagnostic> {
    let bundle = bundle_of(repo, item)?;
    Ok(bundle.items_cache.templates.get_or_init(|| {
        let dir = files_dir(bundle);
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Config files end with a newline; Jinja2's default of eating it surprises everyone.
        env.set_keep_trailing_newline(true);
        env.set_loader(move |name| {
            let rel = Path::new(name);
            if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
                return Ok(None);
            }
            match crate::repo::read_text(&dir.join(rel)) {
                Ok(s) => Ok(Some(s)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!("cannot read template {name}"),
                )
                .with_source(e)),
            }
        });
        env
    }))
}

/// Points a template error at the template file and line (or at the item for inline content).
fn template_error(repo: &Repo, item: &Item, e: &minijinja::Error) -> Diagnostic {
    let mut detail = e.kind().to_string();
    if let Some(d) = e.detail() {
        detail = format!("{detail}: {d}");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = format!("{detail}: {s}");
        source = s.source();
    }
    let inline = e.name().is_none_or(|n| n == item.id);
    let location = if inline {
        // Inline content: the line is relative to the content string, so name the item.
        if let Some(line) = e.line() {
            detail = format!("{detail} (line {line} of the inline template)");
        }
        item.location.clone()
    } else {
        let name = e.name().unwrap_or_default();
        let file = repo.bundles.get(&item.bundle).map_or_else(
            || Path::new(name).to_path_buf(),
            |b| files_dir(b).join(name),
        );
        Location {
            file,
            line: e.line().unwrap_or(0),
            column: 0,
        }
    };
    Diagnostic::at(
        location,
        format!("template of {} failed: {detail}", item.id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::load_node_items;
    use crate::items::testutil::{Fixture, render};

    fn setup() -> (Fixture, Node) {
        let f = Fixture::new()
            .toml(
                "web",
                r#"
[files."/etc/motd"]
content = "hi\n"
[files."/etc/nginx.conf"]
content_type = "jinja2"
source = "nginx.conf.j2"
[files."/etc/inline"]
content_type = "jinja2"
content = "{{ node.hostname }} in {{ node.groups | join(',') }}\n"
[files."/etc/blob"]
content_type = "base64"
content = "aGVs\nbG8="
[files."/etc/bin"]
content_type = "binary"
source = "bin"
[files."/etc/any"]
content_type = "any"
"#,
            )
            .source(
                "web",
                "nginx.conf.j2",
                "{% include \"header.j2\" %}workers {{ metadata.nginx.workers }};\n",
            )
            .source("web", "header.j2", "# {{ node.name }}\n")
            .source("web", "bin", "\u{1}\u{2}");
        let node = f.node(
            "web1",
            &["web"],
            serde_json::json!({"nginx": {"workers": 4}}),
        );
        (f, node)
    }

    #[test]
    fn every_content_type_renders_its_bytes() {
        let (f, node) = setup();
        let items = load_node_items(&f.repo, &node).unwrap_or_else(|d| panic!("{}", render(&d)));
        let get = |id: &str| {
            let item = items.iter().find(|i| i.id == id).unwrap();
            content(&f.repo, &node, item).unwrap()
        };
        assert_eq!(get("file:/etc/motd").unwrap(), b"hi\n");
        assert_eq!(
            get("file:/etc/nginx.conf").unwrap(),
            b"# web1\nworkers 4;\n"
        );
        assert_eq!(
            get("file:/etc/inline").unwrap(),
            b"web1.example.com in all\n"
        );
        assert_eq!(get("file:/etc/blob").unwrap(), b"hello");
        assert_eq!(get("file:/etc/bin").unwrap(), b"\x01\x02");
        assert_eq!(get("file:/etc/any"), None);
        assert!(render_all(&f.repo, &node, &items).is_empty());
    }

    #[test]
    fn undefined_variables_name_template_file_and_line() {
        let (f, node) = setup();
        let items = load_node_items(&f.repo, &node).unwrap();
        assert!(render_all(&f.repo, &node, &items).is_empty());
        let other = f.node("web2", &["web"], serde_json::json!({"nginx": {}}));
        let errors = render(&render_all(&f.repo, &other, &items));
        assert!(errors.contains("bundles/web/files/nginx.conf.j2:1: template of file:/etc/nginx.conf failed: undefined value"), "{errors}");
        assert_eq!(errors.lines().count(), 1, "{errors}");
    }

    #[test]
    fn syntax_errors_name_the_template_and_line_or_the_item() {
        let f = Fixture::new()
            .toml(
                "b",
                "[files.\"/a\"]\ncontent_type = \"jinja2\"\nsource = \"a.j2\"\n\n[files.\"/b\"]\ncontent_type = \"jinja2\"\ncontent = \"ok\\n{% if %}\"\n",
            )
            .source("b", "a.j2", "line one\n{{ broken \n");
        let node = f.node("n1", &["b"], serde_json::json!({}));
        let items = load_node_items(&f.repo, &node).unwrap();
        let errors = render(&render_all(&f.repo, &node, &items));
        assert!(
            errors.contains("bundles/b/files/a.j2:2: template of file:/a failed: syntax error"),
            "{errors}"
        );
        assert!(
            errors.contains("items.toml:5:1: template of file:/b failed: syntax error"),
            "{errors}"
        );
        assert!(errors.contains("line 2 of the inline template"), "{errors}");
    }

    #[test]
    fn bad_base64_and_non_utf8_text_are_reported() {
        let f = Fixture::new()
            .toml(
                "b",
                "[files.\"/a\"]\ncontent_type = \"base64\"\ncontent = \"!!!\"\n[files.\"/t\"]\nsource = \"t\"\n",
            )
            .source("b", "t", "ok");
        std::fs::write(f.path().join("bundles/b/files/t"), [0xff, 0xfe]).unwrap();
        let node = f.node("n1", &["b"], serde_json::json!({}));
        let items = load_node_items(&f.repo, &node).unwrap();
        let errors = render(&render_all(&f.repo, &node, &items));
        assert!(
            errors.contains("content of file:/a is not valid base64"),
            "{errors}"
        );
        assert!(errors.contains("of file:/t is not UTF-8 text"), "{errors}");
    }
}
