//! `action` items: no state, only a run. One remote command per action, and only when it runs;
//! `unless` rides along in the same command.

use serde_json::Value;

use super::reader::{RawItem, Reader};
use super::{ActionAttrs, ItemKind};
use crate::transport::{Command, Output};

/// How an action run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionOutcome {
    /// `unless` succeeded: nothing ran.
    Unless,
    /// Ran and met every expectation.
    Succeeded,
    /// Ran and missed an expectation; the message says which and shows stderr.
    Failed(String),
}

impl ActionAttrs {
    /// The remote command: `unless` first (if any), then the action with `data_stdin`.
    pub fn command(&self, unless: Option<&str>) -> Command {
        crate::node_shell::action_command(
            &self.command,
            unless,
            self.data_stdin.as_ref().map(|s| s.as_bytes().to_vec()),
        )
    }

    /// Judges a finished run against `expected_return_code`, `expected_stdout` and
    /// `expected_stderr`.
    pub fn judge(&self, out: &Output) -> ActionOutcome {
        let (marker, stdout) = match out.stdout.split_first() {
            Some((m, rest)) => (*m, rest),
            None => (0, &[][..]),
        };
        if marker == b'S' {
            return ActionOutcome::Unless;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout_text = String::from_utf8_lossy(stdout);
        let with_output = |msg: String| {
            let mut m = msg;
            for (name, text) in [("stdout", &stdout_text), ("stderr", &stderr)] {
                let t = text.trim_end();
                if !t.is_empty() {
                    m.push_str(&format!("\n{name}:\n{t}"));
                }
            }
            ActionOutcome::Failed(m)
        };
        if marker != b'R' {
            return with_output("the command could not be started".into());
        }
        let Some(rc) = out.status else {
            return with_output(if out.timed_out {
                "timed out".into()
            } else {
                "killed by a signal".into()
            });
        };
        if !self.expected_return_code.is_empty() && !self.expected_return_code.contains(&rc) {
            let want: Vec<String> = self
                .expected_return_code
                .iter()
                .map(i32::to_string)
                .collect();
            return with_output(format!("return code {rc}, expected {}", want.join(" or ")));
        }
        if let Some(want) = &self.expected_stdout
            && stdout_text != *want
        {
            return with_output(format!("stdout differs from expected_stdout {want:?}"));
        }
        if let Some(want) = &self.expected_stderr
            && stderr != *want
        {
            return with_output(format!("stderr differs from expected_stderr {want:?}"));
        }
        ActionOutcome::Succeeded
    }
}

/// The `action` item type: its table, attributes and parser (see [`super::registry`]).
pub struct Type;

use super::reader::Attr;

impl super::item_type::ItemType for Type {
    fn stateful<'a>(&self, _kind: &'a ItemKind) -> Option<&'a dyn super::state::Stateful> {
        None
    }

    fn run<'a>(&self, kind: &'a ItemKind) -> Option<&'a ActionAttrs> {
        match kind {
            ItemKind::Action(a) => Some(a),
            _ => None,
        }
    }

    fn view(&self, kind: &ItemKind) -> Value {
        let ItemKind::Action(a) = kind else {
            return Value::Null;
        };
        serde_json::json!({
            "command": a.command,
            "expected_return_code": a.expected_return_code,
            "expected_stdout": a.expected_stdout,
            "expected_stderr": a.expected_stderr,
            "interactive": a.interactive,
        })
    }

    fn name(&self) -> &'static str {
        "action"
    }

    fn table(&self) -> &'static str {
        "actions"
    }

    fn attrs(&self) -> &'static [Attr] {
        &[
            Attr {
                name: "command",
                doc: "shell command run on the node",
            },
            Attr {
                name: "expected_return_code",
                doc: "accepted exit codes (default any)",
            },
            Attr {
                name: "expected_stdout",
                doc: "output the command must print",
            },
            Attr {
                name: "expected_stderr",
                doc: "error output the command must print",
            },
            Attr {
                name: "data_stdin",
                doc: "text fed to the command's stdin",
            },
            Attr {
                name: "interactive",
                doc: "true: only in interactive runs; false: never ask",
            },
        ]
    }

    fn parse(
        &self,
        _bundle: &crate::repo::Bundle,
        raw: &super::reader::RawItem,
        r: &mut super::reader::Reader<'_>,
    ) -> Option<super::ItemKind> {
        action_kind(raw, r)
    }
}

/// An action's attributes: its command and what it must return.
fn action_kind(raw: &RawItem, r: &mut Reader<'_>) -> Option<ItemKind> {
    let id = r.id.clone();
    let command = r.string("command");
    match command.as_deref() {
        None if r.get("command").is_none() => {
            let msg = format!("{id} needs a `command`");
            r.hinted(
                &raw.loc,
                msg,
                "add command = \"...\" (run with sh -c on the node)",
            );
        }
        Some(c) if c.trim().is_empty() => {
            let loc = r
                .get("command")
                .map_or(raw.loc.clone(), |a| a.value_loc.clone());
            r.error(&loc, format!("`command` of {id} must not be empty"));
        }
        _ => {}
    }
    let codes = match r.get("expected_return_code") {
        None => vec![0],
        Some(a) => {
            let one = |v: &Value| v.as_i64().and_then(|n| i32::try_from(n).ok());
            let parsed = match &a.value {
                Value::Array(xs) => xs.iter().map(one).collect::<Option<Vec<_>>>(),
                v => one(v).map(|n| vec![n]),
            };
            parsed.unwrap_or_else(|| {
                r.wrong(a, "an integer or a list of integers ([] accepts any)");
                Vec::new()
            })
        }
    };
    Some(ItemKind::Action(ActionAttrs {
        command: command.unwrap_or_default(),
        expected_return_code: codes,
        expected_stdout: r.string("expected_stdout"),
        expected_stderr: r.string("expected_stderr"),
        data_stdin: r.string("data_stdin"),
        interactive: r.bool("interactive"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs() -> ActionAttrs {
        ActionAttrs {
            command: "x".into(),
            expected_return_code: vec![0, 3],
            expected_stdout: None,
            expected_stderr: None,
            data_stdin: None,
            interactive: None,
        }
    }

    fn out(stdout: &[u8], rc: i32) -> Output {
        Output {
            status: Some(rc),
            stdout: stdout.to_vec(),
            stderr: b"boom".to_vec(),
            timed_out: false,
        }
    }

    #[test]
    fn judge_checks_codes_stdout_and_unless() {
        let a = attrs();
        assert_eq!(a.judge(&out(b"S", 0)), ActionOutcome::Unless);
        assert_eq!(a.judge(&out(b"Rhi", 3)), ActionOutcome::Succeeded);
        let ActionOutcome::Failed(m) = a.judge(&out(b"Rhi", 1)) else {
            panic!()
        };
        assert!(
            m.contains("return code 1, expected 0 or 3") && m.contains("boom"),
            "{m}"
        );
        let mut b = attrs();
        b.expected_stdout = Some("ok\n".into());
        assert!(matches!(
            b.judge(&out(b"Rnope\n", 0)),
            ActionOutcome::Failed(_)
        ));
        assert_eq!(b.judge(&out(b"Rok\n", 0)), ActionOutcome::Succeeded);
    }
}
