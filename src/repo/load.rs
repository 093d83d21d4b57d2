//! Loading a repo from disk: read every file, check every attribute and reference, resolve
//! group membership and metadata, and report all problems together.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde_json::Value;

use crate::diag::{Diagnostic, Location, did_you_mean};
use crate::repo::computed::{Fleet, NodeLayers, StaticLayer};
use crate::repo::group::{Edges, Hierarchy};
use crate::repo::metadata::{self, Layer, Source};
use crate::repo::toml_file::{Fields, Located, SpanMap, TomlFile, validate_name};
use crate::repo::{Bundle, Group, Node, Repo, Settings, TransportKind};

/// Every attribute a `[nodes.NAME]` table may have.
pub const NODE_KEYS: &[&str] = &[
    "hostname",
    "username",
    "port",
    "transport",
    "groups",
    "bundles",
    "dummy",
    "become",
    "lock_dir",
    "os",
    "os_version",
    "metadata",
];
const GROUP_KEYS: &[&str] = &[
    "bundles",
    "members",
    "member_patterns",
    "subgroups",
    "metadata",
    "username",
    "port",
    "transport",
    "dummy",
    "become",
    "lock_dir",
    "os",
    "os_version",
];

/// Node attributes a group may set for its nodes (subgroup over supergroup, node over all).
pub const INHERITED_ATTRS: &[&str] = &[
    "username",
    "port",
    "transport",
    "dummy",
    "become",
    "lock_dir",
    "os",
    "os_version",
];

/// Operating systems `os` may name (as BundleWrap knows them, plus rocky).
pub const KNOWN_OS: &[&str] = &[
    "alpine",
    "amazonlinux",
    "arch",
    "centos",
    "debian",
    "fedora",
    "freebsd",
    "gentoo",
    "linux",
    "macos",
    "netbsd",
    "openbsd",
    "opensuse",
    "oraclelinux",
    "raspbian",
    "rhel",
    "rocky",
    "ubuntu",
];

/// Inherited attributes as written on one node or group, already checked, as JSON values.
type Attrs = BTreeMap<&'static str, Located<Value>>;

/// A node as written, before groups and metadata are resolved.
struct NodeDef {
    name: String,
    location: Location,
    hostname: Option<String>,
    attrs: Attrs,
    groups: Vec<Located<String>>,
    bundles: Vec<Located<String>>,
    metadata: Arc<Value>,
    spans: Arc<SpanMap>,
}

/// A group as written, with its patterns compiled once.
pub(crate) struct GroupDef {
    pub name: String,
    pub location: Location,
    pub bundles: Vec<Located<String>>,
    pub members: Vec<Located<String>>,
    pub patterns: Vec<(regex::Regex, Located<String>)>,
    pub subgroups: Vec<Located<String>>,
    attrs: Attrs,
    pub metadata: Arc<Value>,
    pub spans: Arc<SpanMap>,
}

struct BundleDef {
    bundle: Bundle,
    spans: Arc<SpanMap>,
}

/// Loads the repo rooted at `root` (already known to be a repo directory).
pub(crate) fn load(root: &Path) -> Result<Repo, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let settings = Settings::load(root, &mut diags);
    crate::repo::secrets::install(
        crate::repo::secrets::Vault::new(settings.secrets_file.as_deref()).with_sandbox(
            crate::repo::Sandbox::new(root, settings.allow_external_symlinks),
        ),
    );
    let sandbox = crate::repo::Sandbox::new(root, settings.allow_external_symlinks);
    let nodes = read_entities(root, &sandbox, "nodes", &mut diags, read_node);
    let groups = read_entities(root, &sandbox, "groups", &mut diags, read_group);
    let bundles = read_bundles(root, &sandbox, &mut diags);

    for name in nodes.keys() {
        if let Some(g) = groups.get(name) {
            let n = &nodes[name];
            diags.push(
                Diagnostic::at(
                    g.location.clone(),
                    format!("'{name}' is both a node ({}) and a group", n.location),
                )
                .with_hint("rename one of them: targets must be unambiguous"),
            );
        }
    }

    let groups: Vec<GroupDef> = groups.into_values().collect();
    let group_index: HashMap<&str, usize> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.name.as_str(), i))
        .collect();

    // A node or group file that does not parse leaves its names undefined; the "unknown
    // group" errors that would follow are its knock-on effects, not problems of their own.
    let entity_file_broken = diags.iter().any(|d| {
        d.root_cause
            && d.location.as_ref().is_some_and(|l| {
                ["nodes.toml", "nodes", "groups.toml", "groups"]
                    .iter()
                    .any(|p| l.file.starts_with(root.join(p)))
            })
    });
    if !entity_file_broken {
        check_references(&nodes, &groups, &group_index, &bundles, &mut diags);
    }
    let edges: Vec<Edges<'_>> = groups
        .iter()
        .map(|g| Edges {
            name: &g.name,
            subgroups: &g.subgroups,
        })
        .collect();
    let hierarchy = Hierarchy::build(&edges, &group_index, &mut diags);

    // Which groups list each node as a member, directly or by pattern.
    let mut listed_in: HashMap<&str, Vec<usize>> = HashMap::new();
    for (gi, g) in groups.iter().enumerate() {
        for m in &g.members {
            listed_in.entry(m.value.as_str()).or_default().push(gi);
        }
    }

    let resolved: Vec<(Node, Vec<Diagnostic>, NodeLayers)> = nodes
        .par_iter()
        .map(|(_, def)| {
            resolve_node(
                def,
                &groups,
                &group_index,
                &hierarchy,
                &bundles,
                &listed_in,
                root,
            )
        })
        .collect();

    // A metadata or attribute conflict belongs to the nodes it is on: they fail (apply,
    // verify, test, `cinch metadata`) and every other node works as usual.
    let mut out_nodes = BTreeMap::new();
    let mut layers = HashMap::new();
    for (mut node, problems, node_layers) in resolved {
        node.problems = problems;
        layers.insert(node.name.clone(), node_layers);
        out_nodes.insert(node.name.clone(), node);
    }

    if !diags.is_empty() {
        crate::diag::sort(&mut diags);
        return Err(diags);
    }

    let mut out_groups = BTreeMap::new();
    for (gi, g) in groups.into_iter().enumerate() {
        let members = out_nodes
            .values()
            .filter(|n: &&Node| n.groups.contains(&g.name))
            .map(|n| n.name.clone())
            .collect();
        out_groups.insert(
            g.name.clone(),
            Group {
                supergroups: hierarchy.ancestor_names(gi),
                name: g.name,
                bundles: g.bundles.into_iter().map(|b| b.value).collect(),
                members: g.members.into_iter().map(|m| m.value).collect(),
                member_patterns: g.patterns.into_iter().map(|(_, p)| p.value).collect(),
                subgroups: g.subgroups.into_iter().map(|s| s.value).collect(),
                metadata: (*g.metadata).clone(),
                location: g.location,
                nodes: members,
            },
        );
    }
    let bundles: BTreeMap<String, Bundle> =
        bundles.into_iter().map(|(k, v)| (k, v.bundle)).collect();
    // The fleet keeps its own copy of the static repo, so nodes can point at it without
    // the repo pointing at itself.
    let fleet = Arc::new(Fleet::new(
        Repo {
            path: root.to_path_buf(),
            settings: settings.clone(),
            nodes: out_nodes.clone(),
            groups: out_groups.clone(),
            bundles: bundles.clone(),
        },
        layers,
    ));
    for node in out_nodes.values_mut() {
        node.fleet = Some(fleet.clone());
    }
    Ok(Repo {
        path: root.to_path_buf(),
        settings,
        nodes: out_nodes,
        groups: out_groups,
        bundles,
    })
}

/// A metadata conflict found on one node, described by its sources' names and locations.
struct Conflict {
    path: Vec<String>,
    first: String,
    second: String,
    first_loc: Option<Location>,
    second_loc: Option<Location>,
    first_value: Value,
    second_value: Value,
}

impl Conflict {
    /// The conflict as a problem of its node. The message does not name the node, so
    /// `cinch test` can report one conflict found on many nodes once.
    fn into_diagnostic(self) -> Diagnostic {
        let first_at = self
            .first_loc
            .as_ref()
            .map(|l| format!(" at {l}"))
            .unwrap_or_default();
        let message = format!(
            "metadata conflict at `{}`: {} sets {}{first_at}, {} sets {}",
            self.path.join("."),
            self.first,
            self.first_value,
            self.second,
            self.second_value,
        );
        let hint = "set the value in a group that is a subgroup of both, in the node itself, \
                    or remove one of them";
        match self.second_loc {
            Some(loc) => Diagnostic::at(loc, message),
            None => Diagnostic::new(message),
        }
        .with_hint(hint)
    }
}

/// Reads `KIND.toml` and `KIND/*.toml`, each holding `[KIND.NAME]` tables; a name defined
/// twice is an error naming both places.
fn read_entities<T>(
    root: &Path,
    sandbox: &crate::repo::Sandbox,
    kind: &str,
    diags: &mut Vec<Diagnostic>,
    read_one: fn(&TomlFile, &str, &dyn toml_edit::TableLike, Location, &mut Vec<Diagnostic>) -> T,
) -> BTreeMap<String, T>
where
    T: HasLocation,
{
    let mut files = Vec::new();
    let main = root.join(format!("{kind}.toml"));
    // Anything at `nodes.toml` is read, so a directory or FIFO there is an error rather than
    // a silently empty repo.
    if std::fs::symlink_metadata(&main).is_ok() {
        files.push(main);
    }
    files.extend(toml_files_in(&root.join(kind), diags));

    let singular = &kind[..kind.len() - 1];
    let mut out: BTreeMap<String, T> = BTreeMap::new();
    for path in files {
        if let Some(d) = escape_diag(sandbox, &path) {
            diags.push(d);
            continue;
        }
        let file = match TomlFile::read(&path) {
            Ok(f) => f,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        let root_fields = Fields {
            file: &file,
            table: file.root(),
            what: file
                .path
                .strip_prefix(root)
                .unwrap_or(&file.path)
                .display()
                .to_string(),
        };
        root_fields.check_keys(&[kind], diags);
        let Some(item) = file.root().get(kind) else {
            continue;
        };
        let Some(table) = item.as_table_like() else {
            diags.push(Diagnostic::at(
                file.item_loc(item),
                format!("`{kind}` must be a table of [{kind}.NAME] tables"),
            ));
            continue;
        };
        for (name, entry) in table.iter() {
            let location = file.key_loc(table, name);
            let location = match entry.as_table() {
                Some(t) if t.span().is_some() => file.loc(t.span()),
                _ => location,
            };
            if let Err(why) = validate_name(name) {
                diags.push(Diagnostic::at(
                    location,
                    format!("invalid {singular} name: {why}"),
                ));
                continue;
            }
            let Some(attrs) = entry.as_table_like() else {
                diags.push(
                    Diagnostic::at(
                        location,
                        format!(
                            "{singular} '{name}' must be a table, found {}",
                            crate::repo::toml_file::describe(entry)
                        ),
                    )
                    .with_hint(format!(
                        "write it as [{kind}.{name}] followed by its attributes"
                    )),
                );
                continue;
            };
            if let Some(prev) = out.get(name) {
                diags.push(
                    Diagnostic::at(
                        location,
                        format!(
                            "{singular} '{name}' is defined twice: here and at {}",
                            prev.location()
                        ),
                    )
                    .with_hint(format!("keep one definition of {singular} '{name}'")),
                );
                continue;
            }
            let value = read_one(&file, name, attrs, location, diags);
            out.insert(name.to_string(), value);
        }
    }
    out
}

/// A repo file that is (or lies under) a symlink out of the repo, as an error naming the link.
fn escape_diag(sandbox: &crate::repo::Sandbox, path: &Path) -> Option<Diagnostic> {
    sandbox.escape(path).map(|why| {
        Diagnostic::at(Location::file(path), format!("refused: {why}"))
            .with_hint(crate::repo::sandbox::HINT)
    })
}

/// `*.toml` files directly in `dir`, sorted (files starting with `_` or `.` are ignored).
fn toml_files_in(dir: &Path, diags: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    if !dir.is_dir() {
        return Vec::new();
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(Diagnostic::at(
                Location::file(dir),
                format!("cannot read directory: {e}"),
            ));
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            p.extension().is_some_and(|x| x == "toml")
                && !name.starts_with('_')
                && !name.starts_with('.')
        })
        .collect();
    files.sort();
    files
}

trait HasLocation {
    fn location(&self) -> &Location;
}

impl HasLocation for NodeDef {
    fn location(&self) -> &Location {
        &self.location
    }
}

impl HasLocation for GroupDef {
    fn location(&self) -> &Location {
        &self.location
    }
}

fn read_node(
    file: &TomlFile,
    name: &str,
    table: &dyn toml_edit::TableLike,
    location: Location,
    diags: &mut Vec<Diagnostic>,
) -> NodeDef {
    let f = Fields {
        file,
        table,
        what: format!("node '{name}'"),
    };
    f.check_keys(NODE_KEYS, diags);
    let hostname = f.string("hostname", diags).and_then(|h| {
        if h.value.trim().is_empty() {
            diags.push(Diagnostic::at(
                h.location,
                format!("node '{name}': hostname must not be empty"),
            ));
            None
        } else if h.value.starts_with('-') {
            // ssh would read it as an option (`-oProxyCommand=...`).
            diags.push(Diagnostic::at(
                h.location,
                format!(
                    "node '{name}': hostname '{}' must not start with '-'",
                    h.value
                ),
            ));
            None
        } else {
            Some(h.value)
        }
    });
    let attrs = read_attrs(&f, diags);
    let (metadata, spans) = f
        .table("metadata", diags)
        .unwrap_or_else(|| (Value::Object(Default::default()), SpanMap::default()));
    NodeDef {
        name: name.to_string(),
        location,
        hostname,
        attrs,
        groups: f.string_list("groups", diags),
        bundles: f.string_list("bundles", diags),
        metadata: Arc::new(metadata),
        spans: Arc::new(spans),
    }
}

/// The inherited attributes of a node or group table, each checked where it is written.
fn read_attrs(f: &Fields<'_>, diags: &mut Vec<Diagnostic>) -> Attrs {
    let what = f.what.clone();
    let mut attrs = Attrs::new();
    let at = |key: &str| f.file.key_loc(f.table, key);
    let mut put = |key: &'static str, value: Value, location: Location| {
        attrs.insert(key, Located { value, location });
    };
    if let Some(t) = f.string("transport", diags) {
        match t.value.as_str() {
            "ssh" | "local" => put("transport", Value::String(t.value), t.location),
            other => diags.push(
                Diagnostic::at(t.location, format!("{what}: unknown transport '{other}'"))
                    .with_hint("use \"ssh\" or \"local\""),
            ),
        }
    }
    if let Some(u) = f.string("username", diags) {
        if u.value.is_empty() || u.value.starts_with('-') {
            diags.push(
                Diagnostic::at(
                    u.location,
                    format!(
                        "{what}: username '{}' must not be empty or start with '-'",
                        u.value
                    ),
                )
                .with_hint("ssh would read it as an option"),
            );
        } else {
            put("username", Value::String(u.value), u.location);
        }
    }
    if let Some(d) = f.string("lock_dir", diags) {
        if d.value.starts_with('/') {
            put("lock_dir", Value::String(d.value), d.location);
        } else {
            diags.push(
                Diagnostic::at(
                    d.location,
                    format!("{what}: lock_dir '{}' is not an absolute path", d.value),
                )
                .with_hint("lock_dir must start with '/'"),
            );
        }
    }
    if let Some(p) = f.integer("port", 1..=65535, diags) {
        put("port", Value::from(p), at("port"));
    }
    if let Some(b) = f.boolean("dummy", diags) {
        put("dummy", Value::Bool(b), at("dummy"));
    }
    if let Some(b) = f.string("become", diags) {
        put("become", Value::String(b.value), b.location);
    }
    if let Some(os) = f.string("os", diags) {
        if KNOWN_OS.contains(&os.value.as_str()) {
            put("os", Value::String(os.value), os.location);
        } else {
            let hint = match did_you_mean(&os.value, KNOWN_OS.iter().copied()) {
                Some(close) => format!("did you mean '{close}'?"),
                None => format!("known: {}", KNOWN_OS.join(", ")),
            };
            diags.push(
                Diagnostic::at(os.location, format!("{what}: unknown os '{}'", os.value))
                    .with_hint(hint),
            );
        }
    }
    if let Some(item) = f.table.get("os_version") {
        let loc = f.file.item_loc(item);
        let text = item
            .as_str()
            .map(str::to_string)
            .or_else(|| item.as_integer().map(|i| i.to_string()))
            .or_else(|| item.as_float().map(|x| x.to_string()));
        match text {
            Some(t) if !t.trim().is_empty() => put("os_version", Value::String(t), loc),
            _ => diags.push(
                Diagnostic::at(
                    loc,
                    format!("{what}: `os_version` must be a version like \"12\" or \"24.04\""),
                )
                .with_hint("write it as a string"),
            ),
        }
    }
    attrs
}

fn read_group(
    file: &TomlFile,
    name: &str,
    table: &dyn toml_edit::TableLike,
    location: Location,
    diags: &mut Vec<Diagnostic>,
) -> GroupDef {
    let f = Fields {
        file,
        table,
        what: format!("group '{name}'"),
    };
    f.check_keys(GROUP_KEYS, diags);
    let mut patterns = Vec::new();
    for p in f.string_list("member_patterns", diags) {
        match regex::Regex::new(&p.value) {
            Ok(re) => patterns.push((re, p)),
            Err(e) => diags.push(Diagnostic::at(
                p.location.clone(),
                format!(
                    "group '{name}': invalid member pattern '{}': {}",
                    p.value,
                    regex_reason(&e)
                ),
            )),
        }
    }
    let (metadata, spans) = f
        .table("metadata", diags)
        .unwrap_or_else(|| (Value::Object(Default::default()), SpanMap::default()));
    GroupDef {
        name: name.to_string(),
        location,
        bundles: f.string_list("bundles", diags),
        members: f.string_list("members", diags),
        patterns,
        subgroups: f.string_list("subgroups", diags),
        attrs: read_attrs(&f, diags),
        metadata: Arc::new(metadata),
        spans: Arc::new(spans),
    }
}

/// The last line of a regex error ("unclosed group"), without the pattern echo above it.
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().last().unwrap_or("invalid regex").trim();
    last.strip_prefix("error: ").unwrap_or(last).to_string()
}

/// Every directory under `bundles/` is a bundle; `metadata.toml` in it holds its defaults.
fn read_bundles(
    root: &Path,
    sandbox: &crate::repo::Sandbox,
    diags: &mut Vec<Diagnostic>,
) -> BTreeMap<String, BundleDef> {
    let mut out = BTreeMap::new();
    let dir = root.join("bundles");
    if !dir.is_dir() {
        return out;
    }
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(Diagnostic::at(
                Location::file(&dir),
                format!("cannot read directory: {e}"),
            ));
            return out;
        }
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for path in dirs {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(String::from) else {
            diags.push(Diagnostic::at(
                Location::file(&path),
                "bundle directory name is not valid UTF-8",
            ));
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        if let Err(why) = validate_name(&name) {
            diags.push(Diagnostic::at(
                Location::file(&path),
                format!("invalid bundle name: {why}"),
            ));
            continue;
        }
        // The bundle directory, or one of its files, may be the link out of the repo.
        let escape = [
            "",
            "items.toml",
            "items.rhai",
            "metadata.toml",
            "metadata.rhai",
        ]
        .iter()
        .find_map(|f| sandbox.escape(&path.join(f)));
        if let Some(why) = escape {
            diags.push(
                Diagnostic::at(Location::file(&path), format!("bundle '{name}': {why}"))
                    .with_hint(crate::repo::sandbox::HINT),
            );
            continue;
        }
        let meta_path = path.join("metadata.toml");
        let mut spans = SpanMap::default();
        let mut defaults = Value::Object(Default::default());
        if std::fs::symlink_metadata(&meta_path).is_ok() {
            match TomlFile::read(&meta_path) {
                Ok(file) => {
                    let item = toml_edit::Item::Table(file.root().clone());
                    defaults = crate::repo::toml_file::to_json(
                        &file,
                        &item,
                        &mut Vec::new(),
                        &mut spans,
                        diags,
                    );
                }
                Err(d) => diags.push(d),
            }
        }
        out.insert(
            name.clone(),
            BundleDef {
                bundle: Bundle::new(name, path, defaults),
                spans: Arc::new(spans),
            },
        );
    }
    out
}

/// Every group, node and bundle named anywhere must exist.
fn check_references(
    nodes: &BTreeMap<String, NodeDef>,
    groups: &[GroupDef],
    group_index: &HashMap<&str, usize>,
    bundles: &BTreeMap<String, BundleDef>,
    diags: &mut Vec<Diagnostic>,
) {
    let group_names = || group_index.keys().copied();
    let unknown = |what: &str, kind: &str, name: &Located<String>, known: Vec<&str>| {
        let mut d = Diagnostic::at(
            name.location.clone(),
            format!("{what} names unknown {kind} '{}'", name.value),
        );
        d = match did_you_mean(&name.value, known.iter().copied()) {
            Some(close) => d.with_hint(format!("did you mean '{close}'?")),
            None if kind == "bundle" => {
                d.with_hint(format!("create bundles/{}/ or fix the name", name.value))
            }
            None => d.with_hint(format!("define {kind} '{}' or fix the name", name.value)),
        };
        d
    };
    let bundle_names: Vec<&str> = bundles.keys().map(String::as_str).collect();
    for node in nodes.values() {
        let what = format!("node '{}'", node.name);
        for g in &node.groups {
            if !group_index.contains_key(g.value.as_str()) {
                diags.push(unknown(&what, "group", g, group_names().collect()));
            }
        }
        for b in &node.bundles {
            if !bundles.contains_key(&b.value) {
                diags.push(unknown(&what, "bundle", b, bundle_names.clone()));
            }
        }
    }
    for g in groups {
        let what = format!("group '{}'", g.name);
        for m in &g.members {
            if !nodes.contains_key(&m.value) {
                diags.push(unknown(
                    &what,
                    "node",
                    m,
                    nodes.keys().map(String::as_str).collect(),
                ));
            }
        }
        for s in &g.subgroups {
            if !group_index.contains_key(s.value.as_str()) {
                diags.push(unknown(&what, "group", s, group_names().collect()));
            }
        }
        for b in &g.bundles {
            if !bundles.contains_key(&b.value) {
                diags.push(unknown(&what, "bundle", b, bundle_names.clone()));
            }
        }
    }
}

fn resolve_node(
    def: &NodeDef,
    groups: &[GroupDef],
    group_index: &HashMap<&str, usize>,
    hierarchy: &Hierarchy,
    bundles: &BTreeMap<String, BundleDef>,
    listed_in: &HashMap<&str, Vec<usize>>,
    root: &Path,
) -> (Node, Vec<Diagnostic>, NodeLayers) {
    let mut immediate: Vec<usize> = def
        .groups
        .iter()
        .filter_map(|g| group_index.get(g.value.as_str()).copied())
        .collect();
    if let Some(listed) = listed_in.get(def.name.as_str()) {
        immediate.extend(listed);
    }
    for (gi, g) in groups.iter().enumerate() {
        if g.patterns.iter().any(|(re, _)| re.is_match(&def.name)) {
            immediate.push(gi);
        }
    }
    let member_of = hierarchy.closure(&immediate);

    let mut bundle_set: BTreeSet<&str> = def.bundles.iter().map(|b| b.value.as_str()).collect();
    for &gi in &member_of {
        bundle_set.extend(groups[gi].bundles.iter().map(|b| b.value.as_str()));
    }
    bundle_set.retain(|b| bundles.contains_key(*b));

    // Layers lowest precedence first; groups ordered so every supergroup precedes its subgroups.
    let mut node_layers = NodeLayers::default();
    let mut layers: Vec<Layer<'_>> = Vec::new();
    for b in &bundle_set {
        let def = &bundles[*b];
        layers.push(Layer {
            source: Source::Bundle(&def.bundle.name),
            value: &def.bundle.metadata_defaults,
            spans: &def.spans,
        });
        node_layers.bundles.push((
            def.bundle.name.clone(),
            StaticLayer {
                value: Arc::new(def.bundle.metadata_defaults.clone()),
                spans: def.spans.clone(),
            },
        ));
    }
    let mut ordered = member_of.clone();
    ordered.sort_by_key(|&gi| (hierarchy.depth(gi), groups[gi].name.as_str()));
    for &gi in &ordered {
        layers.push(Layer {
            source: Source::Group(&groups[gi].name, gi),
            value: &groups[gi].metadata,
            spans: &groups[gi].spans,
        });
        node_layers.groups.push((
            groups[gi].name.clone(),
            StaticLayer {
                value: groups[gi].metadata.clone(),
                spans: groups[gi].spans.clone(),
            },
        ));
    }
    layers.push(Layer {
        source: Source::Node(&def.name),
        value: &def.metadata,
        spans: &def.spans,
    });
    node_layers.own = Some(StaticLayer {
        value: def.metadata.clone(),
        spans: def.spans.clone(),
    });
    let (mut merged, raw_conflicts) =
        metadata::merge(&layers, |earlier, later| match (earlier, later) {
            (Source::Bundle(_), Source::Bundle(_)) => false,
            (Source::Group(_, a), Source::Group(_, b)) => hierarchy.is_ancestor(*a, *b),
            _ => true,
        });
    let mut problems: Vec<Diagnostic> = raw_conflicts
        .into_iter()
        .map(|c| Conflict {
            first: layers[c.first].source.to_string(),
            second: layers[c.second].source.to_string(),
            first_loc: layers[c.first].spans.find(&c.path).cloned(),
            second_loc: layers[c.second].spans.find(&c.path).cloned(),
            path: c.path,
            first_value: c.first_value,
            second_value: c.second_value,
        })
        .map(Conflict::into_diagnostic)
        .collect();

    // `!password_for:`, `!decrypt:` and `!decrypt_file:` strings become their values here; a
    // value that cannot be produced (no key, wrong key) fails this node only, where it is used.
    let mut secret_errors = Vec::new();
    let secrets =
        crate::repo::secrets::resolve_json(&mut merged, root, &mut Vec::new(), &mut secret_errors);
    if secrets {
        // Reactors merge the layers again, and must find the same values there.
        resolve_layer_secrets(&mut node_layers, root);
    }
    let secret_problems: Vec<Diagnostic> = secret_errors
        .into_iter()
        .map(|(path, why)| {
            let at = layers
                .iter()
                .rev()
                .find_map(|l| l.spans.0.get(&path))
                .or_else(|| layers.iter().rev().find_map(|l| l.spans.find(&path)))
                .cloned();
            let msg = format!("secret at metadata `{}`: {why}", path.join("."));
            match at {
                Some(loc) => Diagnostic::at(loc, msg),
                None => Diagnostic::new(msg),
            }
        })
        .collect();
    problems.extend(secret_problems);
    let (attrs, sources, attr_problems) = resolve_attrs(def, groups, &ordered, hierarchy);
    problems.extend(attr_problems);
    let text = |k: &str| attrs.get(k).and_then(Value::as_str).map(str::to_string);

    let mut group_names: Vec<String> = member_of
        .iter()
        .map(|&gi| groups[gi].name.clone())
        .collect();
    group_names.sort();
    let node = Node {
        name: def.name.clone(),
        hostname: def.hostname.clone().unwrap_or_else(|| def.name.clone()),
        username: text("username"),
        port: attrs
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok()),
        transport: match text("transport").as_deref() {
            Some("local") => TransportKind::Local,
            _ => TransportKind::Ssh,
        },
        groups: group_names,
        bundles: bundle_set.into_iter().map(String::from).collect(),
        dummy: attrs.get("dummy").and_then(Value::as_bool).unwrap_or(false),
        become_: text("become"),
        lock_dir: text("lock_dir").unwrap_or_else(|| Node::DEFAULT_LOCK_DIR.to_string()),
        os: text("os").unwrap_or_else(|| Node::DEFAULT_OS.to_string()),
        os_version: text("os_version"),
        static_metadata: merged,
        location: def.location.clone(),
        problems: Vec::new(),
        attribute_sources: sources,
        fleet: None,
    };
    (node, problems, node_layers)
}

/// Resolves the secrets in each of a node's layers, as in its merged static metadata. Their
/// errors were reported for the merged metadata already: a value that is overridden there
/// cannot fail the node.
fn resolve_layer_secrets(layers: &mut NodeLayers, root: &Path) {
    let all = layers
        .bundles
        .iter_mut()
        .chain(layers.groups.iter_mut())
        .map(|(_, l)| l)
        .chain(layers.own.iter_mut());
    for layer in all {
        let mut value = (*layer.value).clone();
        if crate::repo::secrets::resolve_json(&mut value, root, &mut Vec::new(), &mut Vec::new()) {
            layer.value = Arc::new(value);
        }
    }
}

/// The node's inherited attributes: its own value, else the one of the most specific group
/// that sets it; two groups neither of which is a subgroup of the other setting different
/// values is a problem naming both. Also says where each value came from.
fn resolve_attrs(
    def: &NodeDef,
    groups: &[GroupDef],
    ordered: &[usize],
    hierarchy: &Hierarchy,
) -> (
    BTreeMap<&'static str, Value>,
    BTreeMap<String, String>,
    Vec<Diagnostic>,
) {
    let mut values = BTreeMap::new();
    let mut sources = BTreeMap::new();
    let mut problems = Vec::new();
    for &key in INHERITED_ATTRS {
        if let Some(own) = def.attrs.get(key) {
            values.insert(key, own.value.clone());
            sources.insert(
                key.to_string(),
                format!("node '{}' ({})", def.name, own.location),
            );
            continue;
        }
        let setters: Vec<usize> = ordered
            .iter()
            .copied()
            .filter(|&gi| groups[gi].attrs.contains_key(key))
            .collect();
        // The most specific setters: no other setter is a subgroup of them.
        let specific: Vec<usize> = setters
            .iter()
            .copied()
            .filter(|&g| {
                !setters
                    .iter()
                    .any(|&h| h != g && hierarchy.is_ancestor(g, h))
            })
            .collect();
        let Some(&first) = specific.first() else {
            continue;
        };
        let chosen = &groups[first].attrs[key];
        if let Some(&other) = specific
            .iter()
            .find(|&&g| groups[g].attrs[key].value != chosen.value)
        {
            let theirs = &groups[other].attrs[key];
            problems.push(
                Diagnostic::at(
                    theirs.location.clone(),
                    format!(
                        "attribute conflict at `{key}`: group '{}' sets {} at {}, group '{}' sets {}",
                        groups[first].name,
                        chosen.value,
                        chosen.location,
                        groups[other].name,
                        theirs.value
                    ),
                )
                .with_hint(format!(
                    "set `{key}` in the node itself, in a group that is a subgroup of both, \
                     or remove one of them"
                )),
            );
            continue;
        }
        values.insert(key, chosen.value.clone());
        sources.insert(
            key.to_string(),
            format!("group '{}' ({})", groups[first].name, chosen.location),
        );
    }
    (values, sources, problems)
}
