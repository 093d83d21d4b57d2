//! `file` items: content compared by sha256 on the node, written atomically (private staging
//! directory beside the target, file 0600 while it uploads, fsynced, chmod/chown, then
//! renamed), never through a symlinked parent the repo does not manage.

use std::collections::HashMap;

use serde_json::Value;

use super::reader::{RawItem, Reader};
use super::state::{
    Change, Fixing, Local, STATE_KEYS, Stat, State, Stateful, chown_spec, expect_ownership,
    path_of, put_ownership, show_keys,
};
use super::{ContentType, FileAttrs, FileSource, Item, ItemKind};
use crate::diag::did_you_mean;
use crate::node_shell::{Fields, Script};
use crate::repo::Bundle;
use crate::shell::quote;
use std::path::{Component, Path};

impl FileAttrs {
    fn diffable(&self) -> bool {
        !self.sensitive && matches!(self.content_type, ContentType::Text | ContentType::Jinja2)
    }
}

/// The directory a path lives in.
pub fn parent_dir(path: &str) -> String {
    match path.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => path[..i].to_string(),
    }
}

impl Stateful for FileAttrs {
    fn stages(&self) -> bool {
        true
    }

    fn hides_content(&self) -> bool {
        self.sensitive
    }

    fn expected(&self, _item: &Item, local: &Local) -> Option<State> {
        if self.delete {
            return None;
        }
        let mut s = State::with_capacity(STATE_KEYS);
        s.insert("type".into(), Value::String("file".into()));
        s.insert(LEFTOVERS.into(), Value::Array(Vec::new()));
        if let Some(h) = &local.content_hash {
            s.insert("content_hash".into(), Value::String(h.clone()));
        }
        expect_ownership(
            &mut s,
            self.mode,
            self.owner.as_deref(),
            self.group.as_deref(),
        );
        Some(s)
    }

    fn probe(&self, item: &Item, local: &Local, script: &mut Script) {
        let limit = if self.diffable() { local.diff_limit } else { 0 };
        let scan = match (local.staging_scan, local.clean_staging) {
            (false, _) => "0",
            (true, false) => "1",
            (true, true) => "2",
        };
        let idx = local.idx.to_string();
        let path = path_of(item);
        let limit = limit.to_string();
        let mut args = vec![
            idx.as_str(),
            path.as_str(),
            local.content_hash.as_deref().unwrap_or("-"),
            limit.as_str(),
            scan,
        ];
        args.extend(local.link_parents.iter().map(String::as_str));
        script.probe_path("pf", &args);
    }

    fn probe_error(&self, _item: &Item, fields: &Fields) -> Option<String> {
        fields.text("unsafe")
    }

    fn actual(&self, item: &Item, local: &Local, fields: &Fields) -> Option<State> {
        let t = fields.text("type")?;
        let mut s = State::with_capacity(STATE_KEYS);
        s.insert("type".into(), Value::String(t.clone()));
        s.insert(LEFTOVERS.into(), Value::Array(leftovers(item, fields)));
        if t == "file"
            && let Some(h) = fields.text("sha256")
        {
            s.insert("content_hash".into(), Value::String(h));
        }
        if let Some(stat) = Stat::from_fields(fields) {
            put_ownership(&mut s, self.expected(item, local).as_ref(), &stat);
            s.insert("size".into(), Value::from(stat.size));
            s.insert("uid".into(), Value::String(stat.uid));
            s.insert("gid".into(), Value::String(stat.gid));
        }
        Some(s)
    }

    fn fix(&self, item: &Item, local: &Local, change: &Change, script: &mut Script) {
        super::state::fix_as_wave(self, item, local, change, script);
    }

    fn fix_wave(&self, fixes: &[Fixing<'_>], script: &mut Script) {
        let mut uploads = Vec::new();
        for f in fixes {
            let super::ItemKind::File(attrs) = &f.item.kind else {
                continue;
            };
            match attrs.plan(f.item, f.local, f.change) {
                Ok(u) => uploads.push(u),
                Err(step) => script.fix_step(f.local.idx, &step),
            }
        }
        write_files(&uploads, script);
    }

    fn show(&self, item: &Item, local: &Local, change: &Change, fields: Option<&Fields>) -> String {
        let path = path_of(item);
        let mut out = String::new();
        let content_changes = change.expected.is_some()
            && local.content.is_some()
            && (change.create() || change.needs("content_hash"));
        if content_changes {
            let new = local.content.as_deref().map_or(&[][..], |c| c.as_slice());
            let old = fields.and_then(|f| f.get("content"));
            // Content a template filled with a secret is sensitive too, marked or not.
            if self.sensitive || crate::mask::contains_secret(new) {
                out.push_str("content hidden (sensitive)\n");
            } else if self.diffable()
                && crate::diff::is_text(new)
                && old.is_none_or(crate::diff::is_text)
                && (old.is_some() || change.create() || !is_file(change))
            {
                let old_text = old.map(String::from_utf8_lossy).unwrap_or_default();
                out.push_str(&crate::diff::unified(
                    &old_text,
                    &String::from_utf8_lossy(new),
                    &path,
                ));
            } else {
                let old_side = change.actual.as_ref().and_then(|a| {
                    Some((
                        a.get("size")?.as_u64()?,
                        a.get("content_hash")?.as_str()?.to_string(),
                    ))
                });
                let new_hash = local.content_hash.clone().unwrap_or_default();
                out.push_str(&crate::diff::sizes_and_hashes(
                    old_side.as_ref().map(|(s, h)| (*s, h.as_str())),
                    Some((new.len() as u64, &new_hash)),
                ));
            }
        }
        if let Some(f) = fields {
            let stale = leftovers(item, f);
            if !stale.is_empty() {
                out.push_str(&format!(
                    "staging left behind by an interrupted apply (apply removes it): {}\n",
                    stale
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        let mut rest = change.clone();
        rest.keys.retain(|k| k != "content_hash" && k != LEFTOVERS);
        for e in [&mut rest.expected, &mut rest.actual].into_iter().flatten() {
            e.remove(LEFTOVERS);
        }
        if change.create()
            && let Some(e) = &mut rest.expected
        {
            e.remove("content_hash");
        }
        if change.delete() || !rest.keys.is_empty() || change.create() {
            out.push_str(&show_keys(&rest, &["content_hash"]));
        }
        out
    }
}

/// State key listing staging leftovers (`.cinch-tmp-*` beside the file) of interrupted applies;
/// expected empty, so verify reports them and apply removes them.
pub const LEFTOVERS: &str = "staging_leftovers";

/// The staging leftovers a probe reported beside this file: only names cinch itself makes
/// there (`DIR/.cinch-tmp-*`), whatever else the node says.
fn leftovers(item: &Item, fields: &Fields) -> Vec<Value> {
    let dir = parent_dir(&path_of(item));
    let prefix = format!("{}/.cinch-tmp-", dir.trim_end_matches('/'));
    fields
        .all("stale")
        .into_iter()
        .filter_map(|v| std::str::from_utf8(v).ok())
        .filter(|p| {
            p.strip_prefix(&prefix)
                .is_some_and(|rest| !rest.contains('/'))
        })
        .map(|p| Value::String(p.to_string()))
        .collect()
}

/// One file to upload in a wave.
#[derive(Clone)]
struct Upload {
    idx: usize,
    path: String,
    dir: String,
    bytes: std::sync::Arc<Vec<u8>>,
    hash: String,
    mode: String,
    owner: String,
    /// Symlinked parents the repo manages (see [`Local::link_parents`]).
    links: Vec<String>,
}

impl FileAttrs {
    /// The upload this change needs, or else the shell step of a fix that keeps the content
    /// (delete, chmod, chown).
    fn plan(&self, item: &Item, local: &Local, change: &Change) -> Result<Upload, String> {
        let path = path_of(item);
        if change.delete() {
            return Err(format!("rm -rf -- {}", quote(&path)));
        }
        let actual_is_file = is_file(change);
        let actual = |k: &str| {
            change
                .actual
                .as_ref()
                .and_then(|a| a.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if actual_is_file && !change.needs("content_hash") {
            let mut steps = Vec::new();
            if change.needs(LEFTOVERS) {
                let stale = change.actual.as_ref().and_then(|a| a.get(LEFTOVERS));
                let paths: Vec<String> = stale
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(quote)
                    .collect();
                if !paths.is_empty() {
                    steps.push(format!("rm -rf -- {}", paths.join(" ")));
                }
            }
            if change.needs("mode")
                && let Some(m) = self.mode
            {
                steps.push(format!(
                    "chmod {} {}",
                    super::state::mode_text(m),
                    quote(&path)
                ));
            }
            let owner = self.owner.as_deref().filter(|_| change.needs("owner"));
            let group = self.group.as_deref().filter(|_| change.needs("group"));
            let spec = chown_spec(owner, group);
            if !spec.is_empty() {
                steps.push(format!("chown {} {}", quote(&spec), quote(&path)));
            }
            if steps.is_empty() {
                steps.push(":".to_string());
            }
            return Err(steps.join(" && \\\n"));
        }
        let bytes = local.content.clone().unwrap_or_default();
        let hash = local
            .content_hash
            .clone()
            .unwrap_or_else(|| crate::diff::sha256_hex(&bytes));
        // A rename replaces the inode: keep what the old file had unless the repo says otherwise.
        let keep = |k: &str| if actual_is_file { actual(k) } else { None };
        // Staged files are created 0600; "-" is the node's default (0666 less its umask).
        let mode = self
            .mode
            .map(super::state::mode_text)
            .or_else(|| keep("mode"))
            .unwrap_or_else(|| "-".to_string());
        let owner = self.owner.clone().or_else(|| keep("uid"));
        let group = self.group.clone().or_else(|| keep("gid"));
        Ok(Upload {
            idx: local.idx,
            dir: parent_dir(&path),
            path,
            bytes,
            hash,
            mode,
            owner: chown_spec(owner.as_deref(), group.as_deref()),
            links: local.link_parents.clone(),
        })
    }
}

/// Distinct values in first-seen order, each with the uploads that have it; linear, so a
/// wave with thousands of directories or modes costs no more than its uploads.
fn groups<'a>(uploads: &'a [Upload], key: impl Fn(&'a Upload) -> &'a str) -> Vec<Group<'a>> {
    let mut out: Vec<Group<'a>> = Vec::new();
    let mut at: HashMap<&'a str, usize> = HashMap::new();
    for u in uploads {
        let k = key(u);
        let slot = *at.entry(k).or_insert_with(|| {
            out.push((k, Vec::new()));
            out.len() - 1
        });
        out[slot].1.push(u);
    }
    out
}

/// A distinct value and the uploads that have it.
type Group<'a> = (&'a str, Vec<&'a Upload>);

fn ids(members: &[&Upload]) -> Vec<String> {
    members.iter().map(|u| u.idx.to_string()).collect()
}

/// Uploads per batch of a wave. Each batch is a complete write (stage, verify, chmod, chown,
/// sync, rename): the shell's argument lists and per-item variables then stay this small, as
/// their cost in dash and bash grows with their number, and a wave of 100,000 files is linear.
const CHUNK: usize = 256;

/// Uploads per wave from which the bulk write pays: its constant ~45 processes (manifest
/// passes, a pipeline per mode, owner and step) made a wave of one file start 107 processes
/// in all where the per-file helpers start 77; from a few dozen files on, the bulk write's
/// lack of any per-file process wins.
const BULK_AT_LEAST: usize = 32;

/// The shell of a wave's uploads: a wave of [`BULK_AT_LEAST`] uploads or more puts every
/// upload that fits a manifest line into one bulk
/// write ([`write_bulk`]); the rest (a tab, newline or backslash in a path, mode, owner or
/// managed link) takes the per-file helpers of the fix prelude in [`crate::node_shell`], in
/// batches of [`CHUNK`]: register every file of the batch (`wf`, which prepares a private
/// staging directory beside its target, one per directory), then unpack each directory's
/// files from one tar archive on stdin (`wt`), then verify, chmod, chown, sync and rename them
/// per batch.
fn write_files(uploads: &[Upload], script: &mut Script) {
    let small = uploads.len() < BULK_AT_LEAST;
    let (bulk, rest): (Vec<&Upload>, Vec<&Upload>) =
        uploads.iter().partition(|u| !small && u.bulk());
    write_bulk(&bulk, script);
    let rest: Vec<Upload> = rest.into_iter().cloned().collect();
    for batch in rest.chunks(CHUNK) {
        write_batch(batch, script);
    }
}

impl Upload {
    /// Whether this upload can travel as a line of the bulk manifest (`wb`): an absolute
    /// path and fields without the tab, newline or backslash that would split the line or
    /// be escaped in `sha256sum`'s output. Anything else takes the per-file helpers.
    fn bulk(&self) -> bool {
        let plain = |s: &str| !s.contains(['\t', '\n', '\\']);
        self.path.starts_with('/')
            && !self.path.ends_with('/')
            && plain(&self.path)
            && plain(&self.mode)
            && plain(&self.owner)
            && self.links.iter().all(|l| !l.is_empty() && plain(l))
    }
}

/// The uploads of a wave as one bulk write (`wb`, see the bulk prelude in
/// [`crate::node_shell`]): a manifest with a `g` line per group (directory and managed
/// symlinked parents) followed by an `f` line per file, then each group's tar archive; the
/// node starts a constant number of processes per wave, group and distinct mode or owner.
fn write_bulk(uploads: &[&Upload], script: &mut Script) {
    if uploads.is_empty() {
        return;
    }
    let mut order: Vec<(String, Vec<&Upload>)> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for u in uploads {
        let mut key = u.dir.clone();
        for l in &u.links {
            key.push('\t');
            key.push_str(l);
        }
        let slot = *at.entry(key.clone()).or_insert_with(|| {
            order.push((key, Vec::new()));
            order.len() - 1
        });
        order[slot].1.push(u);
    }
    let mut manifest = Vec::new();
    let mut archives = Vec::with_capacity(order.len());
    for (k, (key, members)) in order.iter().enumerate() {
        let tar = archive(members);
        manifest.extend_from_slice(format!("g\t{}\t{}\t{key}\n", k + 1, tar.len()).as_bytes());
        for u in members {
            let owner = if u.owner.is_empty() { "-" } else { &u.owner };
            manifest.extend_from_slice(
                format!(
                    "f\t{}\t{}\t{}\t{}\t{owner}\t{}\n",
                    u.idx,
                    k + 1,
                    u.hash,
                    u.mode,
                    u.path
                )
                .as_bytes(),
            );
        }
        archives.push(tar);
    }
    script.call("wb", &[&manifest.len().to_string()]);
    script.push_stdin(&manifest);
    for a in archives {
        script.push_stdin(&a);
    }
}

fn write_batch(uploads: &[Upload], script: &mut Script) {
    if uploads.is_empty() {
        return;
    }
    let dirs = groups(uploads, |u| u.dir.as_str());
    let number: HashMap<&str, String> = dirs
        .iter()
        .enumerate()
        .map(|(k, (d, _))| (*d, (k + 1).to_string()))
        .collect();
    for u in uploads {
        let k = number.get(u.dir.as_str()).map_or("0", String::as_str);
        let idx = u.idx.to_string();
        let mut args = vec![idx.as_str(), u.path.as_str(), u.hash.as_str(), k];
        args.extend(u.links.iter().map(String::as_str));
        script.call("wf", &args);
    }
    for (k, (_, members)) in dirs.iter().enumerate() {
        let archive = archive(members);
        let k = (k + 1).to_string();
        let len = archive.len().to_string();
        let members = ids(members);
        let mut args = vec![k.as_str(), len.as_str()];
        args.extend(members.iter().map(String::as_str));
        script.call("wt", &args);
        script.push_stdin(&archive);
    }
    // Directory by directory, so `wy` syncs each file system once per directory.
    let all: Vec<String> = dirs.iter().flat_map(|(_, m)| ids(m)).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    script.call("wv", &all);
    for (func, key) in [("wm", 0), ("wo", 1)] {
        for (value, members) in groups(uploads, |u| if key == 0 { &u.mode } else { &u.owner }) {
            if !value.is_empty() {
                let members = ids(&members);
                let mut args = vec![value];
                args.extend(members.iter().map(String::as_str));
                script.call(func, &args);
            }
        }
    }
    script.call("wy", &all);
    for (k, (_, members)) in dirs.iter().enumerate() {
        let k = (k + 1).to_string();
        let members = ids(members);
        let mut args = vec![k.as_str()];
        args.extend(members.iter().map(String::as_str));
        script.call("wr", &args);
    }
}

/// The files of one directory as a tar archive of their base names, private (0600: `wm`
/// sets the real mode before they appear) and owned by whoever unpacks them (`tar -o`). A
/// name tar cannot hold is left out; the node then reports that file's upload incomplete.
fn archive(members: &[&Upload]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for u in members {
        let name = u.path.rsplit('/').next().unwrap_or_default();
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(u.bytes.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(0);
        // Writing into a Vec cannot fail; a refused name only leaves that file out.
        let _ = tar.append_data(&mut header, name, u.bytes.as_slice());
    }
    tar.into_inner().unwrap_or_default()
}

fn is_file(change: &Change) -> bool {
    change
        .actual
        .as_ref()
        .and_then(|a| a.get("type"))
        .is_some_and(|t| t == "file")
}

/// The `file` item type: its table, attributes and parser (see [`super::registry`]).
pub struct Type;

use super::reader::Attr;

impl super::item_type::ItemType for Type {
    fn stateful<'a>(&self, kind: &'a super::ItemKind) -> Option<&'a dyn super::state::Stateful> {
        match kind {
            super::ItemKind::File(a) => Some(a),
            _ => None,
        }
    }

    fn view(&self, kind: &super::ItemKind) -> serde_json::Value {
        let super::ItemKind::File(a) = kind else {
            return serde_json::Value::Null;
        };
        // Keys in sorted order, as hooks and JSON have always seen them.
        let mut m = serde_json::Map::new();
        if let super::FileSource::Content(c) = &a.source
            && !a.sensitive
        {
            m.insert("content".into(), serde_json::json!(c));
        }
        m.insert("content_type".into(), serde_json::json!(a.content_type));
        m.insert("delete".into(), serde_json::json!(a.delete));
        m.insert("group".into(), serde_json::json!(a.group));
        m.insert(
            "mode".into(),
            serde_json::json!(super::item_type::mode_view(a.mode)),
        );
        m.insert("owner".into(), serde_json::json!(a.owner));
        m.insert("sensitive".into(), serde_json::json!(a.sensitive));
        if let super::FileSource::Source(p) = &a.source {
            m.insert("source".into(), serde_json::json!(p.to_string_lossy()));
        }
        serde_json::Value::Object(m)
    }

    fn is_path(&self) -> bool {
        true
    }

    fn deletes(&self, kind: &super::ItemKind) -> bool {
        matches!(kind, super::ItemKind::File(a) if a.delete)
    }

    fn name(&self) -> &'static str {
        "file"
    }

    fn table(&self) -> &'static str {
        "files"
    }

    fn attrs(&self) -> &'static [Attr] {
        &[
            Attr {
                name: "content",
                doc: "the file's content, inline",
            },
            Attr {
                name: "source",
                doc: "a file under bundles/NAME/files/ (not with content)",
            },
            Attr {
                name: "content_type",
                doc: "text, jinja2, base64, binary or any",
            },
            Attr {
                name: "mode",
                doc: "permission bits, \"0644\"",
            },
            Attr {
                name: "owner",
                doc: "owning user, name or numeric id",
            },
            Attr {
                name: "group",
                doc: "owning group, name or numeric id",
            },
            Attr {
                name: "delete",
                doc: "true: the file must not exist",
            },
            Attr {
                name: "sensitive",
                doc: "true: never diff or log the content",
            },
        ]
    }

    fn parse(
        &self,
        bundle: &crate::repo::Bundle,
        raw: &super::reader::RawItem,
        r: &mut super::reader::Reader<'_>,
    ) -> Option<super::ItemKind> {
        file_kind(bundle, raw, r)
    }
}

/// A file item's attributes: content or source, content type, mode, ownership, sensitivity.
fn file_kind(bundle: &Bundle, raw: &RawItem, r: &mut Reader<'_>) -> Option<ItemKind> {
    let id = r.id.clone();
    let content_type = match r.string("content_type").as_deref() {
        None | Some("text") => ContentType::Text,
        Some("jinja2") => ContentType::Jinja2,
        Some("base64") => ContentType::Base64,
        Some("binary") => ContentType::Binary,
        Some("any") => ContentType::Any,
        Some(other) => {
            let loc = r.get("content_type").map(|a| a.value_loc.clone())?;
            let names = ["text", "jinja2", "base64", "binary", "any"];
            let hint = match did_you_mean(other, names) {
                Some(g) => format!("did you mean \"{g}\"?"),
                None => format!("use one of: {}", names.join(", ")),
            };
            let msg = format!("unknown content_type {other:?} for {id}");
            r.hinted(&loc, msg, hint);
            ContentType::Text
        }
    };
    let delete = r.bool("delete").unwrap_or(false);
    let content = r.string("content");
    let source = r.string("source");
    let source_attr = r.get("source");
    let src = if delete {
        FileSource::None
    } else if content.is_some() && source.is_some() {
        let loc = source_attr.map_or(raw.loc.clone(), |a| a.key_loc.clone());
        let msg = format!("{id} sets both `content` and `source`");
        r.hinted(
            &loc,
            msg,
            "keep one: inline content, or a file under files/",
        );
        FileSource::None
    } else if content_type == ContentType::Any {
        if content.is_some() || source.is_some() {
            let msg = format!(
                "{id} has content_type \"any\", which manages only existence, mode and \
                 ownership"
            );
            r.hinted(
                &raw.loc,
                msg,
                "remove content/source or pick another content_type",
            );
        }
        FileSource::None
    } else if let Some(c) = content {
        if content_type == ContentType::Binary {
            let msg = format!("{id} has content_type \"binary\" but inline `content`");
            r.hinted(
                &raw.loc,
                msg,
                "binary content comes from `source`, or use \"base64\"",
            );
        }
        FileSource::Content(c)
    } else {
        // BundleWrap's default: the file's own basename under the bundle's files/.
        let explicit = source.is_some();
        let name = source.unwrap_or_else(|| {
            Path::new(&raw.name)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        let loc = source_attr.map_or(raw.loc.clone(), |a| a.value_loc.clone());
        let rel = Path::new(&name);
        if name.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            let msg =
                format!("`source` of {id} must be a relative path inside files/, got {name:?}");
            r.error(&loc, msg);
            FileSource::None
        } else {
            let path = bundle.dir.join("files").join(rel);
            if !path.is_file() {
                let shown = format!("bundles/{}/files/{name}", bundle.name);
                let msg = if explicit {
                    format!("source file {shown} of {id} does not exist")
                } else {
                    format!("{id} has no `content` and its default source {shown} does not exist")
                };
                r.hinted(
                    &loc,
                    msg,
                    "create the file, set `source`, set `content`, or use content_type = \"any\"",
                );
            }
            FileSource::Source(path)
        }
    };
    Some(ItemKind::File(FileAttrs {
        source: src,
        content_type,
        mode: r.mode("mode"),
        owner: r.account("owner", "user"),
        group: r.account("group", "group"),
        delete,
        sensitive: r.bool("sensitive").unwrap_or(false),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::ItemKind;
    use crate::items::state::Fixing;
    use crate::node_shell::{Record, parse};

    fn file_item(path: &str) -> (Item, FileAttrs) {
        let attrs = FileAttrs {
            source: super::super::FileSource::Content(String::new()),
            content_type: ContentType::Text,
            mode: Some(0o640),
            owner: None,
            group: None,
            delete: false,
            sensitive: false,
        };
        let item = crate::items::testutil::item("file", path, ItemKind::File(attrs.clone()));
        (item, attrs)
    }

    /// Runs one fix wave writing `files` (path, content, managed symlinked parents) with
    /// `shell`, and returns each item's `X` record (rc, message).
    fn wave(shell: &str, files: &[(String, &str, Vec<String>)]) -> Vec<(i32, String)> {
        wave_with_path(shell, files, None)
    }

    /// [`wave`] with `$PATH` set to `path` for the script (to count the programs it starts).
    fn wave_with_path(
        shell: &str,
        files: &[(String, &str, Vec<String>)],
        path: Option<&str>,
    ) -> Vec<(i32, String)> {
        let items: Vec<(Item, FileAttrs)> = files.iter().map(|(p, _, _)| file_item(p)).collect();
        wave_of(shell, items, files, path)
    }

    /// [`wave_with_path`] with each file's own attributes (mode, owner).
    /// Writes `files` in one wave (file `i` with mode `mode(i)`) and checks that every file
    /// succeeded and holds its content and mode.
    fn write_all_with_modes(
        shell: &str,
        files: &[(String, &str, Vec<String>)],
        mode: impl Fn(usize) -> u32,
        path: &str,
    ) {
        use std::os::unix::fs::PermissionsExt;
        let items: Vec<(Item, FileAttrs)> = files
            .iter()
            .enumerate()
            .map(|(i, (p, _, _))| file_item_with(p, mode(i), None))
            .collect();
        let got = wave_of(shell, items, files, Some(path));
        assert!(
            got.iter().all(|r| *r == (0, String::new())),
            "{shell}: {got:?}"
        );
        for (i, (p, c, _)) in files.iter().enumerate() {
            assert_eq!(&std::fs::read_to_string(p).expect("read"), c, "{shell}");
            let m = std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
            assert_eq!(m, mode(i), "{shell} {p}");
        }
    }

    fn wave_of(
        shell: &str,
        items: Vec<(Item, FileAttrs)>,
        files: &[(String, &str, Vec<String>)],
        path: Option<&str>,
    ) -> Vec<(i32, String)> {
        let locals: Vec<Local> = files
            .iter()
            .enumerate()
            .map(|(idx, (_, c, links))| Local {
                idx,
                content_hash: Some(crate::diff::sha256_hex(c.as_bytes())),
                content: Some(std::sync::Arc::new(c.as_bytes().to_vec())),
                link_parents: links.clone(),
                ..Local::default()
            })
            .collect();
        let changes: Vec<Change> = items
            .iter()
            .zip(&locals)
            .map(|((it, a), l)| Change::between(a.expected(it, l), None).expect("a create"))
            .collect();
        let fixing: Vec<Fixing<'_>> = items
            .iter()
            .zip(&locals)
            .zip(&changes)
            .map(|(((item, _), local), change)| Fixing {
                item,
                local,
                change,
            })
            .collect();
        let mut script = Script::fix();
        items[0].1.fix_wave(&fixing, &mut script);
        let cmd = script.into_command();
        let mut command = std::process::Command::new(shell);
        if let Some(p) = path {
            command.env("PATH", p);
        }
        let mut child = command
            .arg("-c")
            .arg(&cmd.script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("shell runs");
        let stdin = cmd.stdin.unwrap_or_default();
        let mut pipe = child.stdin.take().expect("stdin");
        std::io::Write::write_all(&mut pipe, &stdin).expect("feed");
        drop(pipe);
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{shell}: {out:?}");
        let recs = parse(&out.stdout).expect("records");
        (0..files.len())
            .map(|i| {
                recs.iter()
                    .find_map(|r| match r {
                        Record::Fix { idx, rc, message } if *idx == i => {
                            Some((*rc, message.clone()))
                        }
                        _ => None,
                    })
                    .unwrap_or_else(|| panic!("{shell}: no X record for {i}: {recs:?}"))
            })
            .collect()
    }

    /// A first apply of 20,000 files took ~485 s: every file was read from stdin by a `head`
    /// of its own and fsynced on its own. Now a directory's files arrive as one tar archive:
    /// 600 files in one directory start `head` once per batch (plus the GNU check), not 600
    /// times, and all arrive intact.
    #[test]
    fn uploading_many_files_starts_no_process_per_file_in_dash_and_bash() {
        for shell in ["dash", "bash"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let d = dir.path().to_str().expect("utf-8").to_string();
            // A `head` that counts its calls, then runs the real one.
            let bin = dir.path().join("bin");
            std::fs::create_dir(&bin).expect("mkdir");
            let real = String::from_utf8(
                std::process::Command::new("sh")
                    .args(["-c", "command -v head"])
                    .output()
                    .expect("sh")
                    .stdout,
            )
            .expect("utf-8");
            let counter = dir.path().join("calls");
            let shim = bin.join("head");
            std::fs::write(
                &shim,
                format!(
                    "#!/bin/sh\necho x >> {}\nexec {} \"$@\"\n",
                    quote(counter.to_str().expect("utf-8")),
                    quote(real.trim())
                ),
            )
            .expect("shim");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            let path = format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            );
            std::fs::create_dir(dir.path().join("out")).expect("mkdir");
            let contents: Vec<String> = (0..600).map(|i| format!("file {i}\n")).collect();
            let files: Vec<(String, &str, Vec<String>)> = contents
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("{d}/out/f{i}"), c.as_str(), vec![]))
                .collect();
            let got = wave_with_path(shell, &files, Some(&path));
            assert!(
                got.iter().all(|r| *r == (0, String::new())),
                "{shell}: {got:?}"
            );
            for (i, c) in contents.iter().enumerate() {
                let p = dir.path().join(format!("out/f{i}"));
                assert_eq!(&std::fs::read_to_string(&p).expect("read"), c, "{shell}");
            }
            let calls = std::fs::read_to_string(&counter)
                .unwrap_or_default()
                .lines()
                .count();
            assert!(calls <= 4, "{shell}: head ran {calls} times for 600 files");
        }
    }

    /// A first apply of 20,000 files spent more CPU in tar than anything else: GNU tar
    /// unlinks an existing file before extracting it, so every staged (pre-created) file was
    /// deleted and a new inode allocated, which on ext4 costs ten times the write itself. With
    /// GNU tar the archive is unpacked with `--overwrite`, into the staged files.
    #[test]
    fn gnu_tar_writes_into_the_staged_files_instead_of_replacing_them() {
        let version = std::process::Command::new("tar")
            .arg("--version")
            .output()
            .expect("this test needs tar (install GNU tar)");
        assert!(
            String::from_utf8_lossy(&version.stdout).contains("GNU"),
            "this test needs GNU tar (apt-get install tar)"
        );
        for shell in ["dash", "bash"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let d = dir.path().to_str().expect("utf-8").to_string();
            let bin = dir.path().join("bin");
            std::fs::create_dir(&bin).expect("mkdir");
            let real = String::from_utf8(
                std::process::Command::new("sh")
                    .args(["-c", "command -v tar"])
                    .output()
                    .expect("sh")
                    .stdout,
            )
            .expect("utf-8");
            let calls = dir.path().join("calls");
            let shim = bin.join("tar");
            std::fs::write(
                &shim,
                format!(
                    "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {}\nexec {} \"$@\"\n",
                    quote(calls.to_str().expect("utf-8")),
                    quote(real.trim())
                ),
            )
            .expect("shim");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            let path = format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            );
            std::fs::create_dir(dir.path().join("out")).expect("mkdir");
            let contents: Vec<String> = (0..20).map(|i| format!("file {i}\n")).collect();
            let files: Vec<(String, &str, Vec<String>)> = contents
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("{d}/out/f{i}"), c.as_str(), vec![]))
                .collect();
            let got = wave_with_path(shell, &files, Some(&path));
            assert!(
                got.iter().all(|r| *r == (0, String::new())),
                "{shell}: {got:?}"
            );
            for (i, c) in contents.iter().enumerate() {
                let p = dir.path().join(format!("out/f{i}"));
                assert_eq!(&std::fs::read_to_string(&p).expect("read"), c, "{shell}");
            }
            let log = std::fs::read_to_string(&calls).expect("tar ran");
            let extracts: Vec<&str> = log.lines().filter(|l| l.contains("-x")).collect();
            assert!(!extracts.is_empty(), "{shell}: {log}");
            assert!(
                extracts.iter().all(|l| l.contains("--overwrite")),
                "{shell}: {log}"
            );
        }
    }

    /// A 256-byte name used to fail its whole wave with "upload interrupted" on every apply;
    /// a symlinked parent the node controls redirected a write. Each is that item's own
    /// failure, with the real reason, and the rest of the wave is written.
    #[test]
    fn one_bad_name_fails_only_its_own_item_in_dash_and_bash() {
        for shell in ["dash", "bash"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let d = dir.path().to_str().expect("utf-8").to_string();
            std::fs::create_dir(dir.path().join("etc")).expect("mkdir");
            std::fs::write(dir.path().join("etc/passwd"), "stand-in").expect("write");
            std::os::unix::fs::symlink(dir.path().join("etc"), dir.path().join("evil"))
                .expect("symlink");
            std::os::unix::fs::symlink(dir.path().join("etc"), dir.path().join("mine"))
                .expect("symlink");
            let long = format!("{d}/{}", "x".repeat(256));
            let files = vec![
                (format!("{d}/a"), "a\n", vec![]),
                (long, "long\n", vec![]),
                (format!("{d}/evil/passwd"), "pwned\n", vec![]),
                (format!("{d}/b c"), "b\n", vec![]),
                (format!("{d}/mine/group"), "g\n", vec![format!("{d}/mine")]),
            ];
            let got = wave(shell, &files);
            assert_eq!(got[0], (0, String::new()), "{shell}");
            assert_eq!(got[3], (0, String::new()), "{shell}");
            assert_eq!(got[4], (0, String::new()), "{shell}");
            assert_eq!(got[1].0, 1, "{shell}");
            assert!(got[1].1.contains("too long"), "{shell}: {}", got[1].1);
            assert_eq!(got[2].0, 1, "{shell}");
            assert!(
                got[2]
                    .1
                    .contains(&format!("parent {d}/evil is a symlink to {d}/etc")),
                "{shell}: {}",
                got[2].1
            );
            let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).expect(p);
            assert_eq!(read("a"), "a\n");
            assert_eq!(read("b c"), "b\n");
            assert_eq!(read("etc/passwd"), "stand-in");
            assert_eq!(read("etc/group"), "g\n");
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("a")).expect("stat");
            assert_eq!(mode.permissions().mode() & 0o7777, 0o640);
            let left = staging_left(dir.path());
            assert!(left.is_empty(), "{shell}: {left:?}");
        }
    }

    /// Staging files (`.cinch-tmp-*`) an upload left in `dir`: there must be none.
    fn staging_left(dir: &std::path::Path) -> Vec<std::fs::DirEntry> {
        std::fs::read_dir(dir)
            .expect("ls")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".cinch-tmp-"))
            .collect()
    }

    /// A file item at `path` with this mode and owner.
    fn file_item_with(path: &str, mode: u32, owner: Option<&str>) -> (Item, FileAttrs) {
        let (_, mut attrs) = file_item(path);
        attrs.mode = Some(mode);
        attrs.owner = owner.map(str::to_string);
        let item = crate::items::testutil::item("file", path, ItemKind::File(attrs.clone()));
        (item, attrs)
    }

    /// A directory of shims for `tools` that log each call (`NAME ARGS…`, one line) to
    /// `DIR/calls` and run the real tool; returns the `$PATH` to use.
    fn counting_path(dir: &Path, tools: &[&str]) -> String {
        let bin = dir.join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let calls = dir.join("calls");
        for tool in tools {
            let real = String::from_utf8(
                std::process::Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .output()
                    .expect("sh")
                    .stdout,
            )
            .expect("utf-8");
            assert!(!real.trim().is_empty(), "this test needs `{tool}`");
            let shim = bin.join(tool);
            std::fs::write(
                &shim,
                format!(
                    "#!/bin/sh\nprintf '%s\\n' \"{tool} $*\" >> {}\nexec {} \"$@\"\n",
                    quote(calls.to_str().expect("utf-8")),
                    quote(real.trim())
                ),
            )
            .expect("shim");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// A first apply of 20,000 files spent ~75 % of its CPU in dash running per-file helpers
    /// (`wf`, `wv`, `wr`: an `eval` per variable, a `read` of a byte per system call, a
    /// growing `"$@"`) and synced each directory's file system once per batch of 256. Now
    /// the wave is a manifest on stdin: whatever the number of files, a constant number of
    /// `chmod` (one per mode), `mv` (one per directory), `sha256sum` and `sync` (one per file
    /// system), and every file gets its mode and content.
    #[test]
    fn bulk_upload_starts_processes_per_directory_and_mode_not_per_file_in_dash_and_bash() {
        for shell in ["dash", "bash"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let d = dir.path().to_str().expect("utf-8").to_string();
            let path = counting_path(dir.path(), &["chmod", "mv", "sha256sum", "sync", "tar"]);
            for sub in ["a", "b", "c"] {
                std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
            }
            let contents: Vec<String> = (0..900).map(|i| format!("file {i}\n")).collect();
            let files: Vec<(String, &str, Vec<String>)> = contents
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (
                        format!("{d}/{}/f{i}", ["a", "b", "c"][i % 3]),
                        c.as_str(),
                        vec![],
                    )
                })
                .collect();
            write_all_with_modes(shell, &files, |i| [0o640, 0o604][i % 2], &path);
            let log = std::fs::read_to_string(dir.path().join("calls")).expect("calls");
            let count = |tool: &str| {
                log.lines()
                    .filter(|l| l.starts_with(&format!("{tool} ")))
                    .count()
            };
            assert_eq!(count("chmod"), 2, "{shell}: one per mode\n{log}");
            assert_eq!(count("mv"), 3, "{shell}: one per directory\n{log}");
            assert_eq!(
                count("tar") - log.matches("tar --version").count(),
                3,
                "{shell}\n{log}"
            );
            assert_eq!(count("sha256sum"), 1, "{shell}\n{log}");
            let syncs: Vec<&str> = log.lines().filter(|l| l.starts_with("sync ")).collect();
            assert_eq!(syncs.len(), 1, "{shell}: one sync\n{log}");
            assert_eq!(
                syncs[0].split(' ').count(),
                3,
                "{shell}: one file system: {}",
                syncs[0]
            );
            for sub in ["a", "b", "c"] {
                let left = staging_left(&dir.path().join(sub));
                assert!(left.is_empty(), "{shell}: {left:?}");
            }
        }
    }

    /// A wave of a few files took the bulk write's fixed ~45 processes (awk passes, a
    /// `cut | tr | xargs` pipeline per step): a node of 20 files changing one started 107
    /// processes in all, against 29 before the bulk write. Below [`BULK_AT_LEAST`] uploads
    /// the per-file helpers write the wave, with no awk, `cut`, `tr` or `xargs` at all; from
    /// there on the bulk write takes over (one awk pass per step).
    #[test]
    fn small_wave_writes_without_the_bulk_pipelines_in_dash_and_bash() {
        for shell in ["dash", "bash"] {
            for n in [1, BULK_AT_LEAST] {
                let dir = tempfile::tempdir().expect("tempdir");
                let d = dir.path().to_str().expect("utf-8").to_string();
                let path = counting_path(dir.path(), &["awk", "cut", "tr", "xargs"]);
                let contents: Vec<String> = (0..n).map(|i| format!("file {i}\n")).collect();
                let files: Vec<(String, &str, Vec<String>)> = contents
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("{d}/f{i}"), c.as_str(), vec![]))
                    .collect();
                write_all_with_modes(shell, &files, |_| 0o640, &path);
                let log = std::fs::read_to_string(dir.path().join("calls")).unwrap_or_default();
                if n == 1 {
                    assert!(log.is_empty(), "{shell}: {log}");
                } else {
                    assert!(log.lines().any(|l| l.starts_with("awk ")), "{shell}: {log}");
                }
            }
        }
    }

    /// The bulk write's awk keeps at most 8 of its lists (per mode, owner and directory) open;
    /// once a wave had more than 8 it closed the list after every line, so each file's two
    /// lines reopened two files (~40,000 opens for 20,000 files). Now it closes them all when
    /// a ninth is needed and appends on reopening: 12 directories and 3 modes (15 lists) still
    /// put every file in place with its mode, one `mv` per directory and one `chmod` per mode.
    #[test]
    fn bulk_upload_with_more_than_eight_lists_keeps_every_file_in_dash_and_bash() {
        let dirs: Vec<String> = (0..12).map(|i| format!("d{i}")).collect();
        let modes = [0o640, 0o604, 0o600];
        for shell in ["dash", "bash"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let d = dir.path().to_str().expect("utf-8").to_string();
            let path = counting_path(dir.path(), &["chmod", "mv"]);
            for sub in &dirs {
                std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
            }
            let contents: Vec<String> = (0..240).map(|i| format!("file {i}\n")).collect();
            let files: Vec<(String, &str, Vec<String>)> = contents
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("{d}/{}/f{i}", dirs[i / 20]), c.as_str(), vec![]))
                .collect();
            write_all_with_modes(shell, &files, |i| modes[i % 3], &path);
            let log = std::fs::read_to_string(dir.path().join("calls")).expect("calls");
            let count = |tool: &str| {
                log.lines()
                    .filter(|l| l.starts_with(&format!("{tool} ")))
                    .count()
            };
            assert_eq!(count("chmod"), 3, "{shell}: one per mode\n{log}");
            assert_eq!(count("mv"), 12, "{shell}: one per directory\n{log}");
        }
    }

    /// In a bulk write, a file whose chown fails, or whose target is a directory or a
    /// symlink, is that file's own case: the chown failure fails only its item, a directory
    /// in the way is replaced as before, and a symlink is replaced, never written through.
    /// Both ways of writing a wave (per file below [`BULK_AT_LEAST`] uploads, bulk from there).
    #[test]
    fn bulk_upload_failures_and_odd_targets_stay_with_their_own_item_in_dash_and_bash() {
        for (shell, pad) in [
            ("dash", 0),
            ("bash", 0),
            ("dash", BULK_AT_LEAST),
            ("bash", BULK_AT_LEAST),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let d = dir.path().to_str().expect("utf-8").to_string();
            std::fs::create_dir(dir.path().join("was-dir")).expect("mkdir");
            std::fs::write(dir.path().join("was-dir/inside"), "x").expect("write");
            std::fs::write(dir.path().join("elsewhere"), "keep").expect("write");
            std::os::unix::fs::symlink(dir.path().join("elsewhere"), dir.path().join("was-link"))
                .expect("symlink");
            let files = vec![
                (format!("{d}/plain"), "plain\n", vec![]),
                (format!("{d}/bad-owner"), "owner\n", vec![]),
                (format!("{d}/was-dir"), "dir\n", vec![]),
                (format!("{d}/was-link"), "link\n", vec![]),
            ];
            let mut items = vec![
                file_item_with(&files[0].0, 0o644, None),
                file_item_with(&files[1].0, 0o644, Some("cinch-no-such-user")),
                file_item_with(&files[2].0, 0o600, None),
                file_item_with(&files[3].0, 0o600, None),
            ];
            let mut files = files;
            for i in 0..pad {
                files.push((format!("{d}/pad{i}"), "pad\n", vec![]));
                items.push(file_item_with(&files[4 + i].0, 0o644, None));
            }
            let got = wave_of(shell, items, &files, None);
            assert!(
                got[4..].iter().all(|g| *g == (0, String::new())),
                "{shell}: {got:?}"
            );
            assert_eq!(got[0], (0, String::new()), "{shell}");
            assert_eq!(got[1].0, 1, "{shell}: {got:?}");
            assert!(
                got[1].1.contains("cinch-no-such-user"),
                "{shell}: {}",
                got[1].1
            );
            assert_eq!(got[2], (0, String::new()), "{shell}");
            assert_eq!(got[3], (0, String::new()), "{shell}");
            let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).expect(p);
            assert_eq!(read("plain"), "plain\n");
            assert!(!dir.path().join("bad-owner").exists(), "{shell}");
            assert_eq!(read("was-dir"), "dir\n");
            assert_eq!(read("was-link"), "link\n");
            assert!(
                !std::fs::symlink_metadata(dir.path().join("was-link"))
                    .expect("lstat")
                    .file_type()
                    .is_symlink()
            );
            assert_eq!(read("elsewhere"), "keep");
            let left = staging_left(dir.path());
            assert!(left.is_empty(), "{shell}: {left:?}");
        }
    }

    /// A node without awk (or `xargs -0`) reads the bulk manifest in the shell and writes file
    /// by file, with the same result: content, modes, every item's record.
    #[test]
    fn bulk_upload_without_awk_gives_the_same_result_in_dash_and_bash() {
        for shell in ["dash", "bash"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let d = dir.path().to_str().expect("utf-8").to_string();
            let tools = [
                "sh",
                "dash",
                "bash",
                "chmod",
                "chown",
                "mv",
                "sha256sum",
                "sync",
                "tar",
                "head",
                "grep",
                "mktemp",
                "rm",
                "cat",
                "tr",
                "wc",
                "readlink",
                "dd",
                "stat",
                "cut",
                "xargs",
                "printf",
            ];
            let bin = dir.path().join("bin");
            std::fs::create_dir(&bin).expect("mkdir");
            for tool in tools {
                let found = std::process::Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .output()
                    .expect("sh");
                let at = String::from_utf8(found.stdout).expect("utf-8");
                if at.trim().starts_with('/') {
                    std::os::unix::fs::symlink(at.trim(), bin.join(tool)).expect("symlink");
                }
            }
            std::fs::create_dir(dir.path().join("a")).expect("mkdir");
            std::fs::create_dir(dir.path().join("b")).expect("mkdir");
            let contents: Vec<String> = (0..40).map(|i| format!("file {i}\n")).collect();
            let files: Vec<(String, &str, Vec<String>)> = contents
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (
                        format!("{d}/{}/f {i}", ["a", "b"][i % 2]),
                        c.as_str(),
                        vec![],
                    )
                })
                .collect();
            let items: Vec<(Item, FileAttrs)> = files
                .iter()
                .enumerate()
                .map(|(i, (p, _, _))| file_item_with(p, [0o640, 0o604][i % 2], None))
                .collect();
            let got = wave_of(shell, items, &files, Some(bin.to_str().expect("utf-8")));
            assert!(
                got.iter().all(|r| *r == (0, String::new())),
                "{shell}: {got:?}"
            );
            use std::os::unix::fs::PermissionsExt;
            for (i, (p, c, _)) in files.iter().enumerate() {
                assert_eq!(&std::fs::read_to_string(p).expect("read"), c, "{shell}");
                let mode = std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
                assert_eq!(mode, [0o640, 0o604][i % 2], "{shell} {p}");
            }
        }
    }
}
