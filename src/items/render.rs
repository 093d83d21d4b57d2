//! The expected bytes of file items: inline text, source files, base64 and jinja2 templates.
//! Pure and local, so `cinch test` can render every file of every node without a network.

use std::path::{Component, Path};
use std::sync::LazyLock;

use base64::Engine as _;
use minijinja::{Environment, ErrorKind, Template, UndefinedBehavior, Value as JValue};
use rayon::prelude::*;

use crate::diag::{Diagnostic, Location};
use crate::items::parse::files_dir;
use crate::items::{ContentType, FileSource, Item, ItemKind};
use crate::repo::{Bundle, Node, Repo};

/// Template instructions one render (includes and macros included) may execute: far more than
/// any config file needs, while nested `range()` loops are stopped within seconds.
pub const TEMPLATE_FUEL: u64 = 5_000_000;
/// Most bytes one render may allocate in total, so a template cannot eat the machine's memory.
pub const MAX_TEMPLATE_ALLOCATION: u64 = 1 << 30;

/// The expected content of a file item; `None` when cinch does not manage its content
/// (`content_type = "any"`, `delete = true`) or the item is not a file.
pub fn content(repo: &Repo, node: &Node, item: &Item) -> Result<Option<Vec<u8>>, Diagnostic> {
    content_with(repo, item, &|| node_context(node))
}

/// The expected content of each of a node's items, in order (see [`content`]): the template
/// context is built at most once for all of them, not once per template.
pub fn contents(
    repo: &Repo,
    node: &Node,
    items: &[Item],
) -> Vec<Result<Option<Vec<u8>>, Diagnostic>> {
    let ctx = std::sync::OnceLock::new();
    items
        .par_iter()
        .map(|item| {
            content_with(repo, item, &|| {
                ctx.get_or_init(|| node_context(node)).clone()
            })
        })
        .collect()
}

/// Renders every file item of a node in parallel and returns all problems (for `cinch test`).
pub fn render_all(repo: &Repo, node: &Node, items: &[Item]) -> Vec<Diagnostic> {
    let ctx = node_context(node);
    items
        .par_iter()
        .filter_map(|item| content_with(repo, item, &|| ctx.clone()).err())
        .collect()
}

/// What templates see: `node` (name, hostname, groups, bundles, every attribute, metadata),
/// `metadata`, and the functions `in_group(name)`, `has_bundle(name)`, `nodes(selector)` and
/// `node_metadata(name)`. Callers check the node's problems first, so metadata that cannot be
/// computed only shows as the static layers here.
fn node_context(node: &Node) -> JValue {
    let metadata = node
        .metadata()
        .unwrap_or_else(|_| std::sync::Arc::new(node.static_metadata.clone()));
    // The metadata is converted once and shared by `metadata` and `node.metadata`.
    let meta = jinja_value(&metadata);
    let summary: JValue = match crate::repo::computed::summary_json(node) {
        serde_json::Value::Object(m) => m
            .into_iter()
            .map(|(k, v)| (k, jinja_value(&v)))
            .chain(std::iter::once(("metadata".to_string(), meta.clone())))
            .collect(),
        other => jinja_value(&other),
    };
    let groups = node.groups.clone();
    let bundles = node.bundles.clone();
    let fleet = node.fleet.clone();
    let fleet2 = node.fleet.clone();
    let unavailable = || {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            "nodes() and node_metadata() need a node of a repo",
        )
    };
    minijinja::context! {
        node => summary,
        metadata => meta,
        in_group => JValue::from_function(move |g: &str| groups.iter().any(|x| x == g)),
        has_bundle => JValue::from_function(move |b: &str| bundles.iter().any(|x| x == b)),
        nodes => JValue::from_function(move |target: &str| -> Result<JValue, minijinja::Error> {
            let fleet = fleet.as_ref().ok_or_else(unavailable)?;
            crate::repo::computed::nodes_json(fleet, target)
                .map(|v| JValue::from_serialize(&v))
                .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e))
        }),
        node_metadata => JValue::from_function(move |name: &str| -> Result<JValue, minijinja::Error> {
            let fleet = fleet2.as_ref().ok_or_else(unavailable)?;
            crate::repo::computed::node_metadata_json(fleet, name)
                .map(|v| JValue::from_serialize(&v))
                .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e))
        }),
    }
}

/// A JSON value as templates see it: exactly what `JValue::from_serialize` gives (test
/// `jinja_value_is_what_serde_gives`), built directly. Maps are built from all their entries
/// at once: serde inserts key by key into minijinja's sorted map, and those comparisons were
/// most of the cost of a node's template context (a hundred /etc/hosts entries each).
fn jinja_value(v: &serde_json::Value) -> JValue {
    use serde_json::Value as J;
    match v {
        J::Null => JValue::from(()),
        J::Bool(b) => JValue::from(*b),
        J::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => JValue::from(u),
            (None, Some(i), _) => JValue::from(i),
            (None, None, Some(f)) => JValue::from(f),
            (None, None, None) => JValue::from_serialize(n),
        },
        J::String(s) => JValue::from(s.as_str()),
        J::Array(a) => JValue::from_object(a.iter().map(jinja_value).collect::<Vec<JValue>>()),
        J::Object(m) => m
            .iter()
            .map(|(k, v)| (JValue::from(k.as_str()), jinja_value(v)))
            .collect(),
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
        if let Some(why) = repo.sandbox().escape(path) {
            return Err(at_item(format!("source of {} refused: {why}", item.id))
                .with_hint(crate::repo::sandbox::HINT));
        }
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
                .map_err(|e| template_error(repo, item, env, &JValue::UNDEFINED, &e))?;
            let ctx = ctx();
            render_bounded(&tmpl, &ctx).map_err(|e| template_error(repo, item, env, &ctx, &e))?
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
                .map_err(|e| template_error(repo, item, env, &JValue::UNDEFINED, &e))?;
            let ctx = ctx();
            render_bounded(&tmpl, &ctx).map_err(|e| template_error(repo, item, env, &ctx, &e))?
        }
    };
    Ok(Some(bytes))
}

/// Renders within cinch's limits: [`TEMPLATE_FUEL`], [`MAX_TEMPLATE_ALLOCATION`], and not
/// past a Ctrl-C (templates are rendered to prepare an apply, which the user stopped).
fn render_bounded(tmpl: &Template<'_, '_>, ctx: &JValue) -> Result<Vec<u8>, minijinja::Error> {
    let _budget = crate::budget::Guard::new(crate::budget::Stop::OnAnyInterrupt);
    over_budget()?;
    let mut out = BoundedOutput(Vec::new());
    tmpl.render_captured_to(ctx, &mut out)?;
    // A loop cut short by the budget ends quietly; its output must not pass for complete.
    over_budget()?;
    Ok(out.0)
}

/// An iterator that ends early once the budget is exceeded; [`render_bounded`] then reports why.
struct Checked(Option<minijinja::value::ValueIter>);

impl Iterator for Checked {
    type Item = JValue;

    fn next(&mut self) -> Option<JValue> {
        if over_budget().is_err() {
            self.0 = None;
        }
        self.0.as_mut()?.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.as_ref().map_or((0, Some(0)), Iterator::size_hint)
    }
}

/// Why rendering must stop now, as a template error.
fn over_budget() -> Result<(), minijinja::Error> {
    match crate::budget::exceeded(MAX_TEMPLATE_ALLOCATION) {
        Some(why) => Err(minijinja::Error::new(ErrorKind::InvalidOperation, why)),
        None => Ok(()),
    }
}

/// Render output that checks the budget on every write, so a loop printing text stops on
/// Ctrl-C at once rather than when its fuel runs out.
struct BoundedOutput(Vec<u8>);

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        over_budget().map_err(std::io::Error::other)?;
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
    Ok(super::load::BundleCache::of(bundle)
        .templates
        .get_or_init(|| {
            let dir = files_dir(bundle);
            let sandbox = repo.sandbox();
            let mut env = Environment::new();
            env.set_undefined_behavior(UndefinedBehavior::Strict);
            env.set_fuel(Some(TEMPLATE_FUEL));
            // `range` is what makes loops long: its iterator checks the budget at every step, so
            // a loop that prints nothing still stops on Ctrl-C.
            env.add_function(
                "range",
                |lower: isize, upper: Option<isize>, step: Option<isize>| {
                    over_budget()?;
                    let range = minijinja::functions::range(lower, upper, step)?;
                    Ok::<_, minijinja::Error>(JValue::make_iterable(move || {
                        Checked(range.try_iter().ok())
                    }))
                },
            );
            crate::repo::secrets::register_templates(&mut env, dir.clone(), sandbox.clone());
            // Config files end with a newline; Jinja2's default of eating it surprises everyone.
            env.set_keep_trailing_newline(true);
            env.set_loader(move |name| {
                let rel = Path::new(name);
                if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
                    return Ok(None);
                }
                let path = dir.join(rel);
                if let Some(why) = sandbox.escape(&path) {
                    return Err(minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        format!(
                            "template {name} refused: {why}; {}",
                            crate::repo::sandbox::HINT
                        ),
                    ));
                }
                match crate::repo::read_text(&path) {
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

/// Points a template error at the template file and line (or at the item for inline content),
/// naming what is undefined when that is the problem.
fn template_error(
    repo: &Repo,
    item: &Item,
    env: &Environment<'_>,
    ctx: &JValue,
    outer: &minijinja::Error,
) -> Diagnostic {
    // An error in an included template comes wrapped in "could not render include": report
    // the innermost one, where the mistake is, and say where it was included from.
    let mut e = outer;
    while let Some(inner) =
        std::error::Error::source(e).and_then(|s| s.downcast_ref::<minijinja::Error>())
    {
        e = inner;
    }
    let mut detail = e.kind().to_string();
    // Strict mode reports `undefined + 1` as an invalid operation on an undefined value.
    let about_undefined = e.kind() == ErrorKind::UndefinedError
        || (e.kind() == ErrorKind::InvalidOperation
            && e.detail().is_some_and(|d| d.contains("undefined")));
    if about_undefined && let Some(name) = undefined_name(env, item, ctx, e) {
        detail = format!("`{name}` is undefined");
    } else if e.kind() == ErrorKind::OutOfFuel {
        detail =
            format!("stopped after {TEMPLATE_FUEL} template instructions (loops nested too deep?)");
    }
    if let Some(d) = e.detail() {
        detail = format!("{detail}: {d}");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = format!("{detail}: {s}");
        source = s.source();
    }
    if !std::ptr::eq(e, outer)
        && let (Some(name), Some(line)) = (outer.name(), outer.line())
    {
        let from = if name == item.id {
            "the inline template".to_string()
        } else {
            name.to_string()
        };
        detail = format!("{detail} (included from {from} line {line})");
    }
    if detail.contains(crate::budget::INTERRUPTED) {
        detail = crate::budget::INTERRUPTED.to_string();
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

/// A variable path in template code: `metadata.nginx.workers`, `node["name"]`, `xs[0]`.
static VARIABLE_PATH: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(
        r#"[A-Za-z_][A-Za-z0-9_]*(?:\s*\.\s*[A-Za-z_][A-Za-z0-9_]*|\[\s*(?:"[^"]*"|'[^']*'|-?[0-9]+)\s*\])*"#,
    )
    .unwrap_or_else(|e| unreachable!("static regex: {e}"))
});

/// Words of the template language that look like variables but are not.
const NOT_VARIABLES: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "is",
    "if",
    "elif",
    "else",
    "endif",
    "for",
    "endfor",
    "set",
    "endset",
    "with",
    "endwith",
    "include",
    "import",
    "from",
    "as",
    "extends",
    "block",
    "endblock",
    "macro",
    "endmacro",
    "call",
    "endcall",
    "filter",
    "endfilter",
    "recursive",
    "break",
    "continue",
    "do",
    "raw",
    "endraw",
    "autoescape",
    "endautoescape",
    "ignore",
    "missing",
    "context",
    "without",
    "true",
    "false",
    "none",
    "True",
    "False",
    "None",
    "loop",
];

/// `source` with the text of string literals blanked out (same length), so words inside
/// `"hello world"` are not taken for variables; a subscript key (`["name"]`) is kept.
fn mask_strings(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = bytes.to_vec();
    let mut i = 0;
    while i < bytes.len() {
        let quote = bytes[i];
        if quote != b'"' && quote != b'\'' {
            i += 1;
            continue;
        }
        let subscript = source[..i].trim_end().ends_with('[');
        let Some(len) = bytes[i + 1..].iter().position(|&b| b == quote) else {
            break;
        };
        let end = i + 1 + len;
        if !subscript {
            // Every byte (also of multi-byte characters) becomes an ASCII space.
            out[i + 1..end].fill(b' ');
        }
        i = end + 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| source.to_string())
}

/// The full dotted expression that is undefined, e.g. `metadata.demo.nosuch`: minijinja's
/// strict mode only says "undefined value" and points at the code. Each variable path in the
/// code the error points at is evaluated piece by piece against the node's context; the
/// shortest undefined prefix is the answer. A path rooted in a template-local variable (a
/// loop variable, `set`) cannot be evaluated and is named whole.
fn undefined_name(
    env: &Environment<'_>,
    item: &Item,
    ctx: &JValue,
    e: &minijinja::Error,
) -> Option<String> {
    let name = e.name()?;
    let tmpl = if name == item.id {
        None
    } else {
        Some(env.get_template(name).ok()?)
    };
    let source = match (&tmpl, &item.kind) {
        (Some(t), _) => t.source(),
        (None, ItemKind::File(a)) => match &a.source {
            FileSource::Content(text) => text.as_str(),
            _ => return None,
        },
        (None, _) => return None,
    };
    // The error points at the failing part only (`.nosuch` of `metadata.demo.nosuch`), so
    // every variable path overlapping it is looked at in full.
    let range = e.range()?;
    let code = source.get(range.clone())?;
    let lenient = Environment::new();
    let mut local = None;
    // Paths in the tag around it come next: a filter applied to an undefined value points
    // at the filter's name.
    let tag_start = source[..range.start]
        .rfind("{{")
        .into_iter()
        .chain(source[..range.start].rfind("{%"))
        .max()
        .unwrap_or(range.start);
    let tag_end = [
        source[range.end..].find("}}"),
        source[range.end..].find("%}"),
    ]
    .into_iter()
    .flatten()
    .min()
    .map_or(range.end, |i| range.end + i);
    let masked = mask_strings(source);
    let source = masked.as_str();
    let mut candidates: Vec<regex::Match<'_>> = VARIABLE_PATH
        .find_iter(source)
        .filter(|m| m.start() < tag_end.max(range.end) && m.end() > tag_start.min(range.start))
        .collect();
    candidates.sort_by_key(|m| !(m.start() < range.end && m.end() > range.start));
    for m in candidates {
        let before = source[..m.start()].trim_end();
        let after = source[m.end()..].trim_start();
        // Filter and test names, method and function calls are not variables.
        // So are the names `set` and `for` assign to.
        if NOT_VARIABLES.contains(&m.as_str())
            || before.ends_with('|')
            || before.ends_with('.')
            || before.ends_with(" is")
            || after.starts_with('(')
            || (after.starts_with('=') && !after.starts_with("=="))
        {
            continue;
        }
        let path = m.as_str();
        let mut ends: Vec<usize> = path
            .char_indices()
            .filter(|&(_, c)| c == '.' || c == '[')
            .map(|(i, _)| i)
            .collect();
        ends.push(path.len());
        for (n, &end) in ends.iter().enumerate() {
            let prefix = path[..end].trim_end();
            let Ok(expr) = lenient.compile_expression(prefix) else {
                break;
            };
            match expr.eval(ctx) {
                Ok(v) if !v.is_undefined() => continue,
                // The root is not in the context: a template-local name, or simply unknown.
                _ if n == 0 => {
                    local.get_or_insert_with(|| path.to_string());
                }
                _ => return Some(prefix.to_string()),
            }
            break;
        }
    }
    local.or_else(|| Some(code.trim().to_string()).filter(|c| !c.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::load_node_items;
    use crate::items::testutil::{Fixture, render};

    /// Templates must see exactly what minijinja's serde conversion gave them before.
    #[test]
    fn jinja_value_is_what_serde_gives() {
        let v = serde_json::json!({
            "z": null, "t": true, "u": u64::MAX, "i": -3, "small": 7, "f": 1.5, "whole": 2.0,
            "s": "text ü", "empty": {}, "list": [1, "two", [3], {"four": 4}, null],
            "hosts": {"node0002": "10.0.0.2", "node0001": "10.0.0.1", "Node": "x", "": "e"},
        });
        let direct = jinja_value(&v);
        let serde = JValue::from_serialize(&v);
        assert_eq!(format!("{direct:?}"), format!("{serde:?}"));
        assert_eq!(direct, serde);
        let env = Environment::new();
        let tpl = "{{ v }}|{{ v | tojson }}|{% for k, x in v.hosts | dictsort %}{{ k }}={{ x }},{% endfor %}\
                   |{% for k in v %}{{ k }}:{{ v[k] is number }},{% endfor %}|{{ v.u + 1 }}|{{ v.list[3].four }}";
        let render = |x: &JValue| {
            env.render_str(tpl, minijinja::context! { v => x.clone() })
                .unwrap_or_else(|e| panic!("render: {e}"))
        };
        assert_eq!(render(&direct), render(&serde));
        assert!(render(&direct).contains("node0001=10.0.0.1,node0002=10.0.0.2"));
    }

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
        assert!(errors.contains("bundles/web/files/nginx.conf.j2:1: template of file:/etc/nginx.conf failed: `metadata.nginx.workers` is undefined"), "{errors}");
        assert_eq!(errors.lines().count(), 1, "{errors}");
    }

    #[test]
    fn template_error_names_the_undefined_variable_not_just_undefined_value() {
        let cases = [
            (
                "{{ metadata.demo.nosuch }}",
                "`metadata.demo.nosuch` is undefined",
            ),
            (
                "{{ metadata.nosuch.deeper }}",
                "`metadata.nosuch` is undefined",
            ),
            (
                "{{ metadata.demo.nosuch | upper }}",
                "`metadata.demo.nosuch` is undefined",
            ),
            (
                "{{ metadata['demo'].nosuch }}",
                "`metadata['demo'].nosuch` is undefined",
            ),
            ("x {{ node.name }} {{ nosuch }}", "`nosuch` is undefined"),
            (
                "{% if metadata.demo.port > 1 %}{% endif %}{{ node.metadata.demo.gone + 1 }}",
                "`node.metadata.demo.gone` is undefined",
            ),
            (
                "{% for x in [1] %}{{ x.nope }}{% endfor %}",
                "`x.nope` is undefined",
            ),
            (
                "{% include 'inc.j2' %}",
                "`metadata.demo.missing` is undefined",
            ),
            ("{% set y = nosuch | upper %}", "`nosuch` is undefined"),
            (
                "{{ \"hello world\" ~ metadata.demo.nosuch }}",
                "`metadata.demo.nosuch` is undefined",
            ),
            (
                "{{ 'a' ~ metadata[\"demo\"].gone | upper }}",
                "`metadata[\"demo\"].gone` is undefined",
            ),
        ];
        for (i, (template, expected)) in cases.iter().enumerate() {
            let f = Fixture::new()
                .toml(
                    "b",
                    &format!(
                        "[files.\"/inline\"]\ncontent_type = \"jinja2\"\ncontent = {template:?}\n\
                         [files.\"/src\"]\ncontent_type = \"jinja2\"\nsource = \"t.j2\"\n"
                    ),
                )
                .source("b", "t.j2", &format!("line one\n{template}\n"))
                .source("b", "inc.j2", "\n\n{{ metadata.demo.missing }}\n");
            let node = f.node("n1", &["b"], serde_json::json!({"demo": {"port": 2}}));
            let items =
                load_node_items(&f.repo, &node).unwrap_or_else(|d| panic!("{}", render(&d)));
            let errors = render(&render_all(&f.repo, &node, &items));
            assert_eq!(errors.matches(expected).count(), 2, "case {i}: {errors}");
            let line = if expected.contains("missing") {
                "inc.j2:3:"
            } else {
                "t.j2:2:"
            };
            assert!(errors.contains(line), "case {i}: {errors}");
        }
    }

    #[test]
    fn checked_range_behaves_like_jinja_range() {
        let template = "{{ range(3)|list }} {{ range(3)|length }} {% for i in range(2) %}{{ loop.length }}{{ loop.revindex }}{% endfor %} {{ range(1, 10, 3)|join(',') }} {{ range(5, 0, -2)|list }} {{ 2 in range(3) }}";
        let f = Fixture::new().toml(
            "b",
            &format!("[files.\"/r\"]\ncontent_type = \"jinja2\"\ncontent = {template:?}\n"),
        );
        let node = f.node("n1", &["b"], serde_json::json!({}));
        let items = load_node_items(&f.repo, &node).unwrap_or_else(|d| panic!("{}", render(&d)));
        let out = content(&f.repo, &node, &items[0]).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(
            String::from_utf8_lossy(&out.unwrap_or_default()),
            "[0, 1, 2] 3 2221 1,4,7 [5, 3, 1] True"
        );
    }

    #[test]
    fn nested_range_loops_run_out_of_template_fuel() {
        let f = Fixture::new()
            .toml("b", "[files.\"/x\"]\ncontent_type = \"jinja2\"\nsource = \"x.j2\"\n")
            .source(
                "b",
                "x.j2",
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\n",
            );
        let node = f.node("n1", &["b"], serde_json::json!({}));
        let items = load_node_items(&f.repo, &node).unwrap_or_else(|d| panic!("{}", render(&d)));
        let started = std::time::Instant::now();
        let errors = render(&render_all(&f.repo, &node, &items));
        assert!(
            errors.contains(
                "x.j2:1: template of file:/x failed: stopped after 5000000 template instructions"
            ),
            "{errors}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "{:?}",
            started.elapsed()
        );
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
