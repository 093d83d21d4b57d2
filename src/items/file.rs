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
        script.probe_path(
            "pf",
            &[
                &local.idx.to_string(),
                &path_of(item),
                local.content_hash.as_deref().unwrap_or("-"),
                &limit.to_string(),
            ],
        );
    }

    fn actual(&self, item: &Item, local: &Local, fields: &Fields) -> Option<State> {
        let t = fields.text("type")?;
        let mut s = State::new();
        s.insert("type".into(), Value::String(t.clone()));
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
        let mut rest = change.clone();
        rest.keys.retain(|k| k != "content_hash");
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

/// One file to upload in a wave.
struct Upload {
    idx: usize,
    path: String,
    dir: String,
    bytes: std::sync::Arc<Vec<u8>>,
    hash: String,
    mode: String,
    owner: String,
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
            return Err(steps.join(" && \\\n"));
        }
        let bytes = local.content.clone().unwrap_or_default();
        let hash = local
            .content_hash
            .clone()
            .unwrap_or_else(|| crate::diff::sha256_hex(&bytes));
        // A rename replaces the inode: keep what the old file had unless the repo says otherwise.
        let keep = |k: &str| if actual_is_file { actual(k) } else { None };
        let mode = self
            .mode
            .map(super::state::mode_text)
            .or_else(|| keep("mode"))
            .unwrap_or_default();
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

/// The shell of a wave's uploads (see the fix prelude in [`crate::probe`]): stage every file,
/// then verify, chmod, chown, fsync and rename them in batches. Files sharing a directory are
/// staged in one private temp directory there, so one `mv` renames them all.
fn write_files(uploads: &[Upload], script: &mut Script) {
    if uploads.is_empty() {
        return;
    }
    let tmp = |dir: &str| {
        format!(
            "{}/.cinch-tmp-{:016x}",
            dir.trim_end_matches('/'),
            fastrand::u64(..)
        )
    };
    let dirs: Vec<(&str, Vec<String>, String)> = groups(uploads, |u| u.dir.as_str())
        .into_iter()
        .map(|(d, ids)| {
            let stage = if ids.len() > 1 { tmp(d) } else { String::new() };
            (d, ids, stage)
        })
        .collect();
    let all: Vec<String> = uploads.iter().map(|u| u.idx.to_string()).collect();
    for u in uploads {
        let stage = dirs
            .iter()
            .find(|(d, _, _)| *d == u.dir)
            .map_or("", |(_, _, s)| s.as_str());
        let staged = if stage.is_empty() {
            tmp(&u.dir)
        } else {
            format!("{stage}/{}", u.path.rsplit('/').next().unwrap_or_default())
        };
        script.call(
            "wf",
            &[
                &u.idx.to_string(),
                &u.path,
                &staged,
                &u.bytes.len().to_string(),
                &u.hash,
                stage,
            ],
        );
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
    for (_, members, stage) in &dirs {
        if stage.is_empty() {
            for m in members {
                script.call("wr", &["", m]);
            }
        } else {
            let mut args = vec![stage.as_str()];
            args.extend(ids(members));
            script.call("wr", &args);
        }
    }
}

fn is_file(change: &Change) -> bool {
    change
        .actual
        .as_ref()
        .and_then(|a| a.get("type"))
        .is_some_and(|t| t == "file")
}
