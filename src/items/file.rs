//! `file` items: content compared by sha256 on the node, written atomically (temp file beside
//! the target, fsynced, chmod/chown, then renamed).

use serde_json::Value;

use super::state::{
    Change, Fixing, Local, Stat, State, Stateful, chown_spec, expect_ownership, path_of,
    put_ownership, show_keys,
};
use super::{ContentType, FileAttrs, Item};
use crate::probe::{Fields, Script};
use crate::shell::quote;

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
    fn expected(&self, _item: &Item, local: &Local) -> Option<State> {
        if self.delete {
            return None;
        }
        let mut s = State::new();
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
        let mut s = State::new();
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
            if self.sensitive {
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

fn ids(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Distinct values in first-seen order, each with the items that have it.
fn groups<'a>(
    uploads: &'a [Upload],
    key: impl Fn(&'a Upload) -> &'a str,
) -> Vec<(&'a str, Vec<String>)> {
    let mut out: Vec<(&str, Vec<String>)> = Vec::new();
    for u in uploads {
        let k = key(u);
        match out.iter_mut().find(|(v, _)| *v == k) {
            Some((_, ids)) => ids.push(u.idx.to_string()),
            None => out.push((k, vec![u.idx.to_string()])),
        }
    }
    out
}

/// The shell of a wave's uploads (see the fix prelude in [`crate::probe`]): stage every file
/// in a private directory made by `mktemp -d` beside its target (one per directory, so one
/// `mv` renames them all), then verify, chmod, chown, fsync and rename them in batches.
fn write_files(uploads: &[Upload], script: &mut Script) {
    if uploads.is_empty() {
        return;
    }
    let dirs = groups(uploads, |u| u.dir.as_str());
    let all: Vec<String> = uploads.iter().map(|u| u.idx.to_string()).collect();
    for u in uploads {
        let k = dirs
            .iter()
            .position(|(d, _)| *d == u.dir)
            .map_or(0, |p| p + 1)
            .to_string();
        let idx = u.idx.to_string();
        let len = u.bytes.len().to_string();
        let mut args = vec![
            idx.as_str(),
            u.path.as_str(),
            len.as_str(),
            u.hash.as_str(),
            k.as_str(),
        ];
        args.extend(u.links.iter().map(String::as_str));
        script.call("wf", &args);
        script.push_stdin(&u.bytes);
    }
    script.call("wv", &ids(&all));
    for (func, key) in [("wm", 0), ("wo", 1)] {
        for (value, members) in groups(uploads, |u| if key == 0 { &u.mode } else { &u.owner }) {
            if !value.is_empty() {
                let mut args = vec![value];
                args.extend(ids(&members));
                script.call(func, &args);
            }
        }
    }
    script.call("wy", &ids(&all));
    for (k, (_, members)) in dirs.iter().enumerate() {
        let k = (k + 1).to_string();
        let mut args = vec![k.as_str()];
        args.extend(ids(members));
        script.call("wr", &args);
    }
}

fn is_file(change: &Change) -> bool {
    change
        .actual
        .as_ref()
        .and_then(|a| a.get("type"))
        .is_some_and(|t| t == "file")
}
