//! Generated POSIX sh that reads (probes) and changes (fixes) many items in ONE remote command,
//! because round trips, not bytes, are what an apply costs on a real network.
//!
//! Everything a script prints is a stream of netstrings (`LEN:BYTES,`), never human text, so
//! names with spaces, quotes, backticks, newlines or non-ASCII bytes survive. Records:
//! - `P IDX (KEY VALUE)* ''`  actual state of item IDX (no `type` key = the path is absent)
//! - `X IDX RC MESSAGE`       result of the fix of item IDX
//! - `U IDX RC`               exit code of item IDX's `unless` command
//! - `L RC OUTPUT`            result of the caller's prologue (e.g. taking a lock)
//!
//! Every user string reaches the script through [`crate::shell::quote`].

use crate::shell::quote;

/// Shell helpers shared by probe and fix scripts. `LC_ALL=C` makes `${#x}` count bytes.
const PRELUDE: &str = r#"export LC_ALL=C
f() { printf '%s:%s,' "${#1}" "$1"; }
fc() { n=$(wc -c < "$1" | tr -d ' ') && printf '%s:' "$n" && cat -- "$1" && printf ','; }
st() {
  s=
  if [ -L "$1" ]; then t=symlink
  elif [ -f "$1" ]; then t=file
  elif [ -d "$1" ]; then t=directory
  elif [ -e "$1" ]; then t=other
  else return 1; fi
  f type; f "$t"
  s=$(stat -c '%a/%u/%g/%U/%G/%s' -- "$1") && { f stat; f "$s"; }
  return 0
}
um() {
  cb=$1; p=$2; shift 2
  for e in "$p"/* "$p"/.[!.]* "$p"/..?*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    n=${e##*/}; k=0
    for m in "$@"; do if [ "$n" = "$m" ]; then k=1; break; fi; done
    [ $k = 1 ] || "$cb" "$e" "$n" || return 1
  done
}
pf() {
  f P; f "$1"
  if st "$2" && [ "$t" = file ]; then
    h=$(sha256sum < "$2") && h=${h%% *} && f sha256 && f "$h"
    if [ "$4" -gt 0 ] && [ "$h" != "$3" ] && [ -n "$s" ] && [ "${s##*/}" -le "$4" ]; then f content; fc "$2"; fi
  fi
  f ''
}
pe() { f extra; f "$2"; }
pd() {
  f P; f "$1"; p=$2; u=$3; shift 3
  if st "$p" && [ "$t" = directory ] && [ "$u" = 1 ]; then um pe "$p" "$@"; fi
  f ''
}
ps() {
  f P; f "$1"
  if st "$2" && [ "$t" = symlink ]; then l=$(readlink -- "$2"; echo x); l=${l%??}; f target; f "$l"; fi
  f ''
}
"#;

/// Extra helpers for fix scripts: exact-length reads from stdin and atomic file writes.
const FIX_PRELUDE: &str = r#"g=0; head --version 2>/dev/null | grep -q GNU && g=1
take() { if [ $g = 1 ]; then head -c "$1"; else dd bs=1 count="$1" 2>/dev/null; fi; }
bk=0
wf_() {
  [ -d "$3" ] || { take "$5" >/dev/null; echo "parent directory $3 does not exist (manage it with a directory item, or create it)"; return 1; }
  ( : > "$4" ) 2>/dev/null || { take "$5" >/dev/null; echo "cannot create a temporary file in $3"; return 1; }
  take "$5" > "$4" || { rm -f -- "$4"; echo "upload interrupted"; return 3; }
  h=$(sha256sum < "$4"); [ "${h%% *}" = "$6" ] || { rm -f -- "$4"; echo "upload incomplete (checksum mismatch)"; return 3; }
  sync "$4" 2>/dev/null
  if [ -n "$7" ]; then chmod "$7" "$4" || { rm -f -- "$4"; return 1; }; fi
  if [ -n "$8" ]; then chown "$8" "$4" || { rm -f -- "$4"; return 1; }; fi
  if [ -L "$2" ] || { [ -e "$2" ] && [ ! -f "$2" ]; }; then rm -rf -- "$2" || { rm -f -- "$4"; return 1; }; fi
  mv -f -- "$4" "$2" || { rm -f -- "$4"; return 1; }
}
wf() {
  if [ $bk = 1 ]; then take "$5" >/dev/null 2>&1; f X; f "$1"; f 1; f "not written: an earlier upload in this batch failed"; return; fi
  e=$(wf_ "$@" 2>&1); r=$?
  [ $r = 3 ] && bk=1
  f X; f "$1"; f "$r"; f "$e"
}
rmu() { rm -rf -- "$1"; }
"#;

/// A generated script plus the bytes to feed it on stdin.
#[derive(Debug, Default)]
pub struct Script {
    text: String,
    stdin: Vec<u8>,
    /// Names of the item-specific helpers defined so far (see [`Script::helper`]).
    helpers: Vec<&'static str>,
}

impl Script {
    /// A script that can probe items.
    pub fn probe() -> Self {
        Script {
            text: PRELUDE.to_string(),
            stdin: Vec::new(),
            helpers: Vec::new(),
        }
    }

    /// A script that can fix items (and re-probe them).
    pub fn fix() -> Self {
        let mut s = Script::probe();
        s.text.push_str(FIX_PRELUDE);
        s
    }

    /// Defines shell helper `name` (its `body` is fixed text owned by an item type) unless
    /// this script already has it, so item types keep their shell beside their code and
    /// scripts only carry the helpers they use.
    pub fn helper(&mut self, name: &'static str, body: &str) {
        if !self.helpers.contains(&name) {
            self.helpers.push(name);
            self.raw(body);
        }
    }

    /// Appends a call of a prelude function with every argument quoted.
    pub fn call(&mut self, func: &str, args: &[&str]) {
        self.text.push_str(func);
        for a in args {
            self.text.push(' ');
            self.text.push_str(&quote(a));
        }
        self.text.push('\n');
    }

    /// Appends shell built by the caller (already quoted through [`quote`]).
    pub fn raw(&mut self, shell: &str) {
        self.text.push_str(shell);
        if !shell.ends_with('\n') {
            self.text.push('\n');
        }
    }

    /// Appends a fix step: `snippet` runs in a subshell; its exit code and output become an
    /// `X` record for item `idx`.
    pub fn fix_step(&mut self, idx: usize, snippet: &str) {
        self.text.push_str("e=$( {\n");
        self.text.push_str(snippet);
        self.text.push_str(&format!(
            "\n}} 2>&1 ); r=$?; f X; f {idx}; f \"$r\"; f \"$e\"\n"
        ));
    }

    /// Appends bytes for the script's stdin (consumed in order by `wf` calls).
    pub fn push_stdin(&mut self, bytes: &[u8]) {
        self.stdin.extend_from_slice(bytes);
    }

    /// Runs `command` (user shell, quoted here) as `unless` of item `idx`: a `U` record.
    pub fn unless(&mut self, idx: usize, command: &str) {
        self.text.push_str(&format!(
            "f U; f {idx}; ( cd / && sh -c {} ) </dev/null >/dev/null 2>&1; f \"$?\"\n",
            quote(command)
        ));
    }

    /// Runs the caller's prologue first; a non-zero exit stops the script after the `L` record.
    pub fn prologue(&mut self, shell: &str) {
        self.text.push_str("o=$( {\n");
        self.text.push_str(shell);
        self.text
            .push_str("\n} 2>&1 ); r=$?; f L; f \"$r\"; f \"$o\"; [ \"$r\" = 0 ] || exit 0\n");
    }

    /// Whether anything but the prelude was added.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Splits into the transport command.
    pub fn into_command(self) -> crate::transport::Command {
        crate::transport::Command {
            script: self.text,
            stdin: if self.stdin.is_empty() {
                None
            } else {
                Some(self.stdin)
            },
            timeout: None,
            cleanup: false,
        }
    }
}

/// The shell of one action run: `S` on stdout first if `unless` succeeded (nothing ran),
/// otherwise `R` followed by the command's own stdout.
pub fn action_command(
    command: &str,
    unless: Option<&str>,
    stdin: Option<Vec<u8>>,
) -> crate::transport::Command {
    let mut text = String::new();
    if let Some(u) = unless {
        text.push_str(&format!(
            "if ( sh -c {} ) </dev/null >/dev/null 2>&1; then printf S; exit 0; fi\n",
            quote(u)
        ));
    }
    text.push_str(&format!("printf R; exec sh -c {}\n", quote(command)));
    crate::transport::Command {
        script: text,
        stdin: Some(stdin.unwrap_or_default()),
        timeout: None,
        cleanup: false,
    }
}

/// One record of a script's output.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Actual state of an item, as (key, value) fields in the order printed.
    Probe { idx: usize, fields: Fields },
    /// Result of a fix.
    Fix {
        idx: usize,
        rc: i32,
        message: String,
    },
    /// Exit code of an `unless`.
    Unless { idx: usize, rc: i32 },
    /// Result of the prologue.
    Prologue { rc: i32, output: Vec<u8> },
}

/// The (key, value) fields of a probe record; keys may repeat (`extra` per unmanaged entry).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fields(pub Vec<(String, Vec<u8>)>);

impl Fields {
    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `key` as (lossy) text.
    pub fn text(&self, key: &str) -> Option<String> {
        self.get(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> Vec<&[u8]> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
            .collect()
    }
}

/// Why a script's output could not be read.
#[derive(Debug, thiserror::Error)]
#[error("unreadable answer from the node at byte {offset}: {what}")]
pub struct ParseError {
    pub offset: usize,
    pub what: String,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &str) -> ParseError {
        ParseError {
            offset: self.pos,
            what: what.into(),
        }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn next(&mut self) -> Result<&'a [u8], ParseError> {
        let rest = &self.buf[self.pos..];
        let colon = rest
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| self.err("missing length"))?;
        let len: usize = std::str::from_utf8(&rest[..colon])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| self.err("bad length"))?;
        let start = colon + 1;
        if rest.len() < start + len + 1 || rest[start + len] != b',' {
            return Err(self.err("truncated field (did a file change while it was read?)"));
        }
        self.pos += start + len + 1;
        Ok(&rest[start..start + len])
    }

    fn text(&mut self) -> Result<String, ParseError> {
        Ok(String::from_utf8_lossy(self.next()?).into_owned())
    }

    fn num<T: std::str::FromStr>(&mut self) -> Result<T, ParseError> {
        let t = self.text()?;
        t.trim()
            .parse()
            .map_err(|_| self.err(&format!("expected a number, got {t:?}")))
    }
}

/// Reads every record of a script's stdout.
pub fn parse(stdout: &[u8]) -> Result<Vec<Record>, ParseError> {
    let mut r = Reader {
        buf: stdout,
        pos: 0,
    };
    let mut out = Vec::new();
    while !r.done() {
        let tag = r.next()?;
        match tag {
            b"P" => {
                let idx = r.num()?;
                let mut fields = Vec::new();
                loop {
                    let k = r.text()?;
                    if k.is_empty() {
                        break;
                    }
                    let v = r.next()?.to_vec();
                    fields.push((k, v));
                }
                out.push(Record::Probe {
                    idx,
                    fields: Fields(fields),
                });
            }
            b"X" => {
                let idx = r.num()?;
                let rc = r.num()?;
                let message = r.text()?;
                out.push(Record::Fix { idx, rc, message });
            }
            b"U" => {
                let idx = r.num()?;
                let rc = r.num()?;
                out.push(Record::Unless { idx, rc });
            }
            b"L" => {
                let rc = r.num()?;
                let output = r.next()?.to_vec();
                out.push(Record::Prologue { rc, output });
            }
            other => {
                return Err(r.err(&format!(
                    "unknown record {:?}",
                    String::from_utf8_lossy(other)
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_sh(shell: &str, script: &Script) -> Vec<u8> {
        use std::io::Write;
        let mut child = std::process::Command::new(shell)
            .arg("-c")
            .arg(script.text())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&script.stdin).unwrap();
        drop(stdin);
        child.wait_with_output().unwrap().stdout
    }

    #[test]
    fn probe_reads_odd_names_in_dash_and_bash() {
        let dir = tempfile::tempdir().unwrap();
        let odd = [
            "a b",
            "it's",
            "back`tick`",
            "new\nline",
            "ünï",
            "-dash",
            ".hidden",
            "..dots",
        ];
        for n in odd {
            std::fs::write(dir.path().join(n), n).unwrap();
        }
        std::fs::write(dir.path().join("keep"), "x").unwrap();
        let d = dir.path().to_str().unwrap();
        for shell in ["dash", "bash"] {
            let mut s = Script::probe();
            s.call("pd", &["0", d, "1", "keep"]);
            s.call("pf", &["1", &format!("{d}/new\nline"), "nohash", "100"]);
            s.call("pf", &["2", &format!("{d}/missing"), "nohash", "100"]);
            s.call("ps", &["3", &format!("{d}/a b")]);
            let recs = parse(&run_sh(shell, &s)).unwrap();
            let Record::Probe { idx: 0, fields } = &recs[0] else {
                panic!("{recs:?}")
            };
            let mut extra: Vec<String> = fields
                .all("extra")
                .iter()
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
                .collect();
            extra.sort();
            let mut want: Vec<String> = odd.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(extra, want, "{shell}");
            let Record::Probe { idx: 1, fields } = &recs[1] else {
                panic!()
            };
            assert_eq!(fields.text("type").as_deref(), Some("file"));
            assert_eq!(fields.get("content"), Some(&b"new\nline"[..]));
            let Record::Probe { idx: 2, fields } = &recs[2] else {
                panic!()
            };
            assert!(fields.get("type").is_none());
            let Record::Probe { idx: 3, fields } = &recs[3] else {
                panic!()
            };
            assert_eq!(fields.text("type").as_deref(), Some("file"));
        }
    }

    #[test]
    fn parse_rejects_truncated_output() {
        assert!(parse(b"1:P,1:0,4:ty").is_err());
        assert!(parse(b"x").is_err());
        assert_eq!(parse(b"").unwrap(), vec![]);
    }
}
