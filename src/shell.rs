//! The one place that builds POSIX shell for nodes: every user string goes through [`quote`].
//!
//! Every command a transport runs has the same shape, whatever the transport:
//! `[BECOME -n] sh -c 'export LANG=C LC_ALL=C; SCRIPT'` ([`command_line`]). Over ssh it is
//! additionally prefixed so the node tells us the process group to kill on a timeout
//! ([`report_pgid`], [`kill_group`]).

/// Quotes `s` as one POSIX shell word (single quotes, with embedded quotes escaped).
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The first line a remote command prints on stderr: `PREFIX<pgid>\n` (see [`report_pgid`]).
pub const PGID_MARKER: &str = "cinch-pgid:";

/// The command line that runs `script` under a clean locale, wrapped by `become` (e.g. `sudo`)
/// when set. Used by every transport, so `become` means the same over ssh and locally.
/// `-n` makes sudo (and doas) fail instead of prompting for a password nobody can type.
pub fn command_line(script: &str, become_: Option<&str>) -> String {
    let body = format!("export LANG=C LC_ALL=C\n{script}");
    match become_ {
        Some(wrapper) => format!("{} -n sh -c {}", quote(wrapper), quote(&body)),
        None => format!("sh -c {}", quote(&body)),
    }
}

/// Scripts longer than this travel on stdin instead of the command line: Linux caps one
/// argument at 128 KiB (MAX_ARG_STRLEN), and quoting for a remote login shell can double it.
pub const MAX_INLINE_SCRIPT: usize = 32 * 1024;

/// A small script that reads the real script (`len` bytes) from the front of its stdin and
/// runs it; what follows on stdin stays for the script. GNU `head -c` never reads past `len`
/// on a pipe; elsewhere `dd bs=1` is slow but exact.
pub fn stdin_bootstrap(len: usize) -> String {
    format!(
        "if head --version 2>/dev/null | grep -q GNU; then s=$(head -c {len}; echo x); \
         else s=$(dd bs=1 count={len} 2>/dev/null; echo x); fi\n\
         eval \"${{s%x}}\"\n"
    )
}

/// Wraps a [`command_line`] for a remote login shell: `exec sh` keeps the pid of the process
/// sshd started, which sshd made a session (and process group) leader, so `$$` is the process
/// group of the command and of everything it starts. It is printed first on stderr and the
/// transport strips it again. The outer `exec sh -c '…'` parses the same in bash, zsh, dash
/// and fish, so the user's login shell does not matter.
pub fn report_pgid(command_line: &str) -> String {
    let inner = format!("echo \"{PGID_MARKER}$$\" >&2\nexec {command_line}");
    format!("exec sh -c {}", quote(&inner))
}

/// A script that stops process group `pgid` and everything in it: TERM first, KILL for what
/// is still there about two seconds later. Runs through `become` because the group belongs
/// to whoever `become` made us.
pub fn kill_group(pgid: u32, become_: Option<&str>) -> String {
    let script = format!(
        "kill -s TERM -- -{pgid} 2>/dev/null || exit 0\n\
         i=0\n\
         while [ $i -lt 10 ]; do\n\
         kill -s 0 -- -{pgid} 2>/dev/null || exit 0\n\
         sleep 0.2 2>/dev/null || sleep 1\n\
         i=$((i+1))\n\
         done\n\
         kill -s KILL -- -{pgid} 2>/dev/null\n\
         exit 0"
    );
    command_line(&script, become_)
}

/// A script that writes its stdin to `path` atomically: a temp file beside the target (same
/// filesystem, so the rename is atomic), fsynced where `sync FILE` is supported, then renamed
/// over the target. A failure removes the temp file and leaves the target untouched.
pub fn upload_script(path: &str, mode: Option<u32>) -> String {
    let (dir, base) = match path.rsplit_once('/') {
        Some(("", base)) => ("/", base),
        Some((dir, base)) => (dir, base),
        None => (".", path),
    };
    let template = format!(
        "{}/.{}.cinch-XXXXXXXX",
        dir.trim_end_matches('/'),
        if base.is_empty() { "upload" } else { base }
    );
    let chmod = match mode {
        Some(m) => format!("chmod {m:o} \"$tmp\"\n"),
        None => String::new(),
    };
    format!(
        "set -e\n\
         tmp=$(mktemp {template})\n\
         trap 'rm -f \"$tmp\"' EXIT\n\
         cat >\"$tmp\"\n\
         {chmod}\
         sync \"$tmp\" 2>/dev/null || true\n\
         mv -f \"$tmp\" {target}\n\
         trap - EXIT",
        template = quote(&template),
        target = quote(path),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_script_read_from_stdin_runs_and_leaves_the_rest_of_stdin() {
        let script = format!(
            "{}read line; echo \"got $line\"\n",
            ": padding\n".repeat(5000)
        );
        let mut stdin = script.clone().into_bytes();
        stdin.extend_from_slice(b"payload\n");
        for sh in ["dash", "bash"] {
            let mut child = std::process::Command::new(sh)
                .args(["-c", &super::stdin_bootstrap(script.len())])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect(sh);
            std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), &stdin).expect("write");
            drop(child.stdin.take());
            let out = child.wait_with_output().expect("wait");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "got payload\n",
                "{sh}"
            );
        }
    }

    use super::*;

    #[test]
    fn quote_leaves_plain_words_and_wraps_the_rest() {
        assert_eq!(quote("abc/def.txt"), "abc/def.txt");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's $HOME"), "'it'\\''s $HOME'");
    }

    /// Runs `line` with the given shell and returns stdout.
    fn run_with(shell: &str, line: &str) -> String {
        let out = std::process::Command::new(shell)
            .arg("-c")
            .arg(line)
            .output()
            .expect("shell runs");
        assert!(out.status.success(), "{shell} failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    const NASTY: &str =
        "echo \"it's\" '$HOME' `x` $(y) \\ \\\\ \n\t * ? [a] ; & | > < ! # ~ {a,b} é";

    #[test]
    fn quote_round_trips_through_dash_and_bash() {
        for shell in ["dash", "bash"] {
            let got = run_with(shell, &format!("printf %s {}", quote(NASTY)));
            assert_eq!(got, NASTY, "{shell}");
        }
    }

    #[test]
    fn command_line_sets_locale_and_keeps_the_script_intact() {
        let script = "printf '%s|%s|' \"$LANG\" \"$LC_ALL\"; echo 'a $b' \"c\"";
        for shell in ["dash", "bash"] {
            assert_eq!(run_with(shell, &command_line(script, None)), "C|C|a $b c\n");
        }
    }

    #[test]
    fn command_line_wraps_become_with_non_interactive_flag() {
        let line = command_line("id -u", Some("sudo"));
        assert!(line.starts_with("sudo -n sh -c "), "{line}");
    }

    #[test]
    fn report_pgid_prints_the_process_group_first() {
        let out = std::process::Command::new("setsid")
            .args(["bash", "-c", &report_pgid(&command_line("echo hi", None))])
            .output()
            .expect("setsid runs");
        let err = String::from_utf8_lossy(&out.stderr);
        let pgid: u32 = err
            .strip_prefix(PGID_MARKER)
            .and_then(|r| r.trim().parse().ok())
            .unwrap_or_else(|| panic!("no marker in {err:?}"));
        assert!(pgid > 1);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    }

    #[test]
    fn kill_group_kills_every_process_of_the_group_in_dash_and_bash() {
        for shell in ["dash", "bash"] {
            let tok = format!("{}{}", std::process::id(), shell.len());
            let mut child = std::process::Command::new("setsid")
                .args([
                    shell,
                    "-c",
                    &format!("sleep 300.{tok} & sh -c 'sleep 301.{tok}'"),
                ])
                .spawn()
                .expect("spawn");
            std::thread::sleep(std::time::Duration::from_millis(200));
            let pgid = child.id();
            run_with(shell, &kill_group(pgid, None));
            let _ = child.wait();
            let left = std::process::Command::new("pgrep")
                .args(["-f", &format!("sleep 30[01].{tok}")])
                .output()
                .expect("pgrep");
            assert!(left.stdout.is_empty(), "{shell}: {:?}", left);
        }
    }

    #[test]
    fn upload_script_replaces_the_target_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("it's a file");
        std::fs::write(&target, "old").expect("write");
        let script = upload_script(&target.to_string_lossy(), Some(0o640));
        for shell in ["dash", "bash"] {
            let mut child = std::process::Command::new(shell)
                .arg("-c")
                .arg(&script)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .expect("spawn");
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(b"new\0content")
                .expect("feed");
            assert!(child.wait().expect("wait").success());
            assert_eq!(std::fs::read(&target).expect("read"), b"new\0content");
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&target)
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o640);
            let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
            assert_eq!(left.len(), 1, "temp file left behind");
        }
    }

    #[test]
    fn upload_script_into_a_missing_directory_fails_cleanly() {
        let script = upload_script("/nonexistent-cinch-dir/x", None);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("sh");
        assert!(!out.status.success());
    }
}
