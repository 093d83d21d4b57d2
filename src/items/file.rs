//! `file` items: content compared by sha256 on the node, written atomically (temp file beside
//! the target, fsynced, chmod/chown, then renamed).

use serde_json::Value;

use super::state::{
    Change, Local, Stat, State, Stateful, chown_spec, expect_ownership, path_of, put_ownership,
    show_keys,
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
        script.call(
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
        let path = path_of(item);
        let idx = local.idx;
        if change.delete() {
            script.fix_step(idx, &format!("rm -rf -- {}", quote(&path)));
            return;
        }
        let actual_is_file = change
            .actual
            .as_ref()
            .and_then(|a| a.get("type"))
            .is_some_and(|t| t == "file");
        let upload = !actual_is_file || change.needs("content_hash");
        let actual = |k: &str| {
            change
                .actual
                .as_ref()
                .and_then(|a| a.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if upload {
            let empty = Vec::new();
            let bytes: &[u8] = local.content.as_deref().map_or(&empty, |c| c.as_slice());
            let hash = local
                .content_hash
                .clone()
                .unwrap_or_else(|| crate::diff::sha256_hex(bytes));
            // A rename replaces the inode: keep what the old file had unless the repo says otherwise.
            let keep = |k: &str| if actual_is_file { actual(k) } else { None };
            let mode = self
                .mode
                .map(super::state::mode_text)
                .or_else(|| keep("mode"))
                .unwrap_or_default();
            let owner = self.owner.clone().or_else(|| keep("uid"));
            let group = self.group.clone().or_else(|| keep("gid"));
            let dir = parent_dir(&path);
            let tmp = format!(
                "{}/.cinch-tmp-{:016x}",
                dir.trim_end_matches('/'),
                fastrand::u64(..)
            );
            script.call(
                "wf",
                &[
                    &idx.to_string(),
                    &path,
                    &dir,
                    &tmp,
                    &bytes.len().to_string(),
                    &hash,
                    &mode,
                    &chown_spec(owner.as_deref(), group.as_deref()),
                ],
            );
            script.push_stdin(bytes);
            return;
        }
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
        script.fix_step(idx, &steps.join(" && \\\n"));
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

fn is_file(change: &Change) -> bool {
    change
        .actual
        .as_ref()
        .and_then(|a| a.get("type"))
        .is_some_and(|t| t == "file")
}
