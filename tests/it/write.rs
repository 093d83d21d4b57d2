//! The write path on the node under attack: staging files other users could read, staging
//! directories planted in advance, symlinked parents, leftovers of killed applies and names
//! the file system refuses. Runs as root (CI does) with a real second user where one is
//! needed; names of such users start with `cinchw`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::apply::Scene;
use crate::harness::cinch_command;

/// A real local user, removed again when dropped (also when an assertion fails).
struct User(String);

impl User {
    fn new() -> User {
        let out = Command::new("id").arg("-u").output().expect("id runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "0",
            "these tests create a second user with useradd: run them as root (CI does)"
        );
        let name = format!("cinchw{:06x}", fastrand::u32(..0xff_ffff));
        let ok = Command::new("useradd")
            .args(["-M", "-s", "/bin/sh", &name])
            .status()
            .expect("useradd runs (install the passwd package)");
        assert!(ok.success(), "useradd {name} failed");
        User(name)
    }

    /// Whether this user can read `path`, asked for real through `runuser`.
    fn can_read(&self, path: &Path) -> bool {
        Command::new("runuser")
            .args(["-u", &self.0, "--", "cat", "--"])
            .arg(path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("runuser runs (install util-linux)")
            .success()
    }

    fn uid(&self) -> u32 {
        let out = Command::new("id")
            .args(["-u", &self.0])
            .output()
            .expect("id runs");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a uid")
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.0).status();
    }
}

/// Entries of `dir` whose name starts with `.cinch-tmp-`.
fn staging(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(".cinch-tmp-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Makes `n1` run its commands through `wrapper` (a shell script given as text): the
/// wrapper sees the command line exactly as `ps` shows it, and the upload on its stdin.
fn with_become(s: &Scene, wrapper: &str) {
    let path = s.path("become.sh");
    std::fs::write(&path, wrapper).unwrap();
    std::fs::set_permissions(&path, PermissionsExt::from_mode(0o755)).unwrap();
    s.repo.write(
        "nodes.toml",
        &format!(
            "[nodes.n1]\ntransport = \"local\"\nbundles = [\"b\"]\nbecome = \"{}\"\nlock_dir = \"{}\"\n",
            path.display(),
            s.repo.path().join("locks").display()
        ),
    );
}

#[test]
fn sensitive_staging_file_is_never_world_readable() {
    let other = User::new();
    let s = Scene::new(
        "[files.\"@/secret\"]\nsource = \"secret\"\ncontent_type = \"binary\"\n\
         sensitive = true\nmode = \"0600\"\n\
         [files.\"@/plain/readme\"]\ncontent = \"hello\\n\"\n",
    );
    // The scene lives in a 0700 temp dir: open it up so only cinch's own modes protect it.
    std::fs::set_permissions(s.dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::create_dir(s.path("plain")).unwrap();
    let secret: Vec<u8> = (0..4u32 << 20).map(|i| (i % 241) as u8).collect();
    std::fs::create_dir_all(s.repo.path().join("bundles/b/files")).unwrap();
    std::fs::write(s.repo.path().join("bundles/b/files/secret"), &secret).unwrap();
    // Lets 1 MiB of the upload through, then holds the rest: the node sits mid-upload.
    with_become(
        &s,
        "#!/bin/sh\nshift\nif [ -p /dev/stdin ]; then\n  { head -c 1048576; sleep 3; cat; } | \"$@\"\nelse\n  exec \"$@\"\nfi\n",
    );
    let mut cmd = cinch_command();
    cmd.arg("-r").arg(s.repo.path()).args(["apply", "n1"]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while seen.is_empty() && Instant::now() < deadline {
        for d in staging(s.dir.path()) {
            if d.is_dir() {
                for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    seen.push((d.clone(), e.path()));
                }
            } else {
                seen.push((d.clone(), d.clone()));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!seen.is_empty(), "the upload is staged beside the target");
    std::thread::sleep(Duration::from_millis(300));
    for (dir, file) in &seen {
        if let Ok(m) = std::fs::symlink_metadata(dir) {
            let dm = m.mode() & 0o777;
            assert_eq!(dm & 0o077, 0, "staging {dir:?} is {dm:o}");
        }
        if let Ok(m) = std::fs::symlink_metadata(file) {
            assert_eq!(m.mode() & 0o077, 0, "staged {file:?} is {:o}", m.mode());
        }
        assert!(!other.can_read(file), "{} read {file:?}", other.0);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(std::fs::read(s.path("secret")).unwrap(), secret);
    let mode = |p: &str| std::fs::metadata(s.path(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("secret"), 0o600);
    assert!(!other.can_read(&s.path("secret")));
    // A file without a mode still gets the node's usual default, not the staging 0600.
    let umask = Command::new("sh").args(["-c", "umask"]).output().unwrap();
    let umask = u32::from_str_radix(String::from_utf8_lossy(&umask.stdout).trim(), 8).unwrap();
    assert_eq!(mode("plain/readme"), 0o666 & !umask);
    assert!(staging(s.dir.path()).is_empty() && staging(&s.path("plain")).is_empty());
}

#[test]
fn staging_directory_planted_by_another_user_is_never_reused() {
    let other = User::new();
    let s = Scene::new(
        "[files.\"@/a\"]\ncontent = \"a\\n\"\nmode = \"0600\"\n\
         [files.\"@/b\"]\ncontent = \"b\\n\"\nmode = \"0600\"\n",
    );
    // The attacker watches `ps` and creates, before the node does, every staging name the
    // command line gives away, plus one of its own, world-writable and owned by them.
    let log = s.path("planted");
    with_become(
        &s,
        &format!(
            "#!/bin/sh\nshift\nfor w in \"$@\"; do printf '%s\\n' \"$w\"; done | \
             grep -o '/[^ ]*/\\.cinch-tmp-[0-9a-f]*' | sort -u | while read -r d; do \
             mkdir -m 1777 \"$d\" && chown {u} \"$d\" && echo \"$d\" >> {log}; done\n\
             mkdir -p -m 1777 {root}/.cinch-tmp-decoy && chown {u} {root}/.cinch-tmp-decoy\n\
             echo {root}/.cinch-tmp-decoy >> {log}\nexec \"$@\"\n",
            u = other.0,
            log = log.display(),
            root = s.root(),
        ),
    );
    s.cinch(&["apply", "n1"]).expect_code(0);
    let planted = std::fs::read_to_string(&log).unwrap();
    for d in planted.lines() {
        let d = Path::new(d);
        let meta = std::fs::symlink_metadata(d)
            .unwrap_or_else(|e| panic!("planted {d:?} was used and removed: {e}"));
        assert_eq!(meta.uid(), other.uid(), "{d:?}");
        assert_eq!(
            std::fs::read_dir(d).unwrap().count(),
            0,
            "content was staged in the planted {d:?}"
        );
    }
    assert_eq!(std::fs::read_to_string(s.path("a")).unwrap(), "a\n");
    assert_eq!(std::fs::read_to_string(s.path("b")).unwrap(), "b\n");
}

#[test]
fn write_through_an_unmanaged_parent_symlink_is_refused() {
    let s = Scene::new("[files.\"@/dir/evil/passwd\"]\ncontent = \"pwned\\n\"\n");
    std::fs::create_dir(s.path("etc")).unwrap();
    std::fs::write(s.path("etc/passwd"), "root:x:0:0:stand-in\n").unwrap();
    std::fs::create_dir(s.path("dir")).unwrap();
    std::os::unix::fs::symlink(s.path("etc"), s.path("dir/evil")).unwrap();
    let want = format!(
        "parent {}/dir/evil is a symlink to {}/etc",
        s.root(),
        s.root()
    );
    let run = s.cinch(&["verify", "n1"]);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains(&want), "{all}");
    assert!(
        !all.contains("stand-in"),
        "the diff read through the symlink:\n{all}"
    );
    let run = s.cinch(&["apply", "n1"]).expect_code(1);
    assert!(run.stderr.contains(&want), "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(s.path("etc/passwd")).unwrap(),
        "root:x:0:0:stand-in\n"
    );
    // A symlink the repo manages itself is a path the repo chose: writes may go through.
    s.items(&format!(
        "[files.\"@/dir/evil/passwd\"]\ncontent = \"managed\\n\"\n\
         [symlinks.\"@/dir/evil\"]\ntarget = \"{}/etc\"\n",
        s.root()
    ));
    s.cinch(&["apply", "n1"]).expect_code(0);
    assert_eq!(
        std::fs::read_to_string(s.path("etc/passwd")).unwrap(),
        "managed\n"
    );
}

#[test]
fn staging_leftovers_of_a_killed_apply_are_reported_by_verify_and_removed_by_apply() {
    let other = User::new();
    let s = Scene::new("[files.\"@/conf\"]\ncontent = \"new\\n\"\n");
    std::fs::write(s.path("conf"), "new\n").unwrap();
    // What a SIGKILL mid-upload leaves: a staging directory holding a full copy.
    let ours = s.path(".cinch-tmp-0123456789abcdef");
    std::fs::create_dir(&ours).unwrap();
    std::fs::write(ours.join("conf"), "new\n").unwrap();
    let theirs = s.path(".cinch-tmp-notours");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(other.uid()), None).unwrap();
    for p in [&ours, &theirs] {
        let ok = Command::new("touch")
            .args(["-h", "-d", "1 hour ago"])
            .arg(p)
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let run = s.cinch(&["verify", "n1"]).expect_code(1);
    assert!(
        run.stdout.contains(ours.to_str().unwrap()),
        "verify names the leftover:\n{}",
        run.stdout
    );
    assert!(!run.stdout.contains("notours"), "{}", run.stdout);
    assert!(ours.exists(), "verify changes nothing");
    let (_, summary) = s.apply_json(&[]);
    assert_eq!(summary["nodes"][0]["failed"].as_u64(), Some(0), "{summary}");
    assert!(!ours.exists(), "apply removes its own leftover");
    assert!(theirs.exists(), "another user's entry is left alone");
    s.cinch(&["verify", "n1"]).expect_code(0);
}

#[test]
fn overlong_file_name_fails_only_its_own_item() {
    let long = "x".repeat(256);
    let s = Scene::new(&format!(
        "[files.\"@/d/ok\"]\ncontent = \"ok\\n\"\n\
         [files.\"@/d/{long}\"]\ncontent = \"long\\n\"\n\
         [files.\"@/d/also\"]\ncontent = \"also\\n\"\n"
    ));
    std::fs::create_dir(s.path("d")).unwrap();
    for _ in 0..2 {
        let run = s.cinch(&["apply", "n1"]).expect_code(1);
        assert!(run.stderr.contains("too long"), "{}", run.stderr);
        assert!(!run.stderr.contains("interrupted"), "{}", run.stderr);
        assert!(!run.stderr.contains("earlier upload"), "{}", run.stderr);
        assert_eq!(std::fs::read_to_string(s.path("d/ok")).unwrap(), "ok\n");
        assert_eq!(std::fs::read_to_string(s.path("d/also")).unwrap(), "also\n");
        assert!(staging(&s.path("d")).is_empty());
        std::fs::remove_file(s.path("d/ok")).unwrap();
    }
}

#[test]
fn password_hash_never_reaches_a_command_line() {
    let name = format!("cinchw{:06x}", fastrand::u32(..0xff_ffff));
    // Removes the user the apply creates, also when an assertion fails.
    let _gone = User(name.clone());
    let s = Scene::new(&format!(
        "[users.{name}]\nshell = \"/bin/sh\"\nhome = \"/nonexistent/{name}\"\n\
         password_hash = \"$6$cinchw$visibleinps\"\n"
    ));
    // Every command line cinch starts on the node, as `ps` would show it to any user.
    let log = s.path("argv");
    with_become(
        &s,
        &format!(
            "#!/bin/sh\nshift\nprintf '%s\\n' \"$*\" >> {}\nexec \"$@\"\n",
            log.display()
        ),
    );
    s.cinch(&["apply", "n1"]).expect_code(0);
    let argv = std::fs::read_to_string(&log).unwrap();
    assert!(
        argv.contains(&name),
        "the wrapper saw the user's commands:\n{argv}"
    );
    assert!(
        !argv.contains("visibleinps"),
        "hash on a command line:\n{argv}"
    );
    let shadow = Command::new("getent")
        .args(["shadow", &name])
        .output()
        .unwrap();
    let shadow = String::from_utf8_lossy(&shadow.stdout);
    assert!(
        shadow.starts_with(&format!("{name}:$6$cinchw$visibleinps:")),
        "{shadow}"
    );
    // A changed hash is set the same way.
    s.items(&format!(
        "[users.{name}]\nshell = \"/bin/sh\"\nhome = \"/nonexistent/{name}\"\n\
         password_hash = \"$6$cinchw$changedhash\"\n"
    ));
    s.cinch(&["apply", "n1"]).expect_code(0);
    let argv = std::fs::read_to_string(&log).unwrap();
    assert!(!argv.contains("changedhash"), "{argv}");
    let shadow = Command::new("getent")
        .args(["shadow", &name])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&shadow.stdout).contains("$6$cinchw$changedhash:"));
}

#[test]
fn unwritable_directory_fails_only_its_own_files() {
    let other = User::new();
    let s = Scene::new(
        "[files.\"@/open/a\"]\ncontent = \"a\\n\"\n\
         [files.\"@/closed/b\"]\ncontent = \"b\\n\"\n\
         [files.\"@/open/c\"]\ncontent = \"c\\n\"\n",
    );
    // The node side runs as the second user, who may write `open` but not `closed`.
    std::fs::set_permissions(s.dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    for (d, mode) in [("open", 0o777), ("closed", 0o755), ("locks", 0o777)] {
        std::fs::create_dir(s.path(d)).unwrap();
        std::fs::set_permissions(s.path(d), PermissionsExt::from_mode(mode)).unwrap();
    }
    let wrapper = s.path("become.sh");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nshift\nexec runuser -u {} -- \"$@\"\n", other.0),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, PermissionsExt::from_mode(0o755)).unwrap();
    s.repo.write(
        "nodes.toml",
        &format!(
            "[nodes.n1]\ntransport = \"local\"\nbundles = [\"b\"]\nbecome = \"{}\"\nlock_dir = \"{}\"\n",
            wrapper.display(),
            s.path("locks").display()
        ),
    );
    let run = s.cinch(&["apply", "n1"]).expect_code(1);
    assert!(
        run.stderr
            .contains("cannot create a private staging directory in")
            && run.stderr.contains("Permission denied"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("earlier upload"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(s.path("open/a")).unwrap(), "a\n");
    assert_eq!(std::fs::read_to_string(s.path("open/c")).unwrap(), "c\n");
    assert!(!s.path("closed/b").exists());
    assert_eq!(
        std::fs::metadata(s.path("open/a")).unwrap().uid(),
        other.uid()
    );
}

#[test]
fn directories_symlinks_and_deletes_never_act_through_an_unmanaged_parent_symlink() {
    let s = Scene::new(
        "[directories.\"@/d/evil/sub\"]\nmode = \"0755\"\n\
         [symlinks.\"@/d/evil/link\"]\ntarget = \"/nowhere\"\n\
         [files.\"@/d/evil/victim\"]\ndelete = true\n",
    );
    std::fs::create_dir(s.path("etc")).unwrap();
    std::fs::write(s.path("etc/victim"), "keep me").unwrap();
    std::fs::create_dir(s.path("d")).unwrap();
    std::os::unix::fs::symlink(s.path("etc"), s.path("d/evil")).unwrap();
    let run = s.cinch(&["apply", "n1"]).expect_code(1);
    let want = format!(
        "parent {}/d/evil is a symlink to {}/etc",
        s.root(),
        s.root()
    );
    assert_eq!(run.stderr.matches(&want).count(), 3, "{}", run.stderr);
    let mut left: Vec<String> = std::fs::read_dir(s.path("etc"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["victim"]);
    assert_eq!(
        std::fs::read_to_string(s.path("etc/victim")).unwrap(),
        "keep me"
    );
}

#[test]
fn staging_left_by_a_sigkilled_node_shell_is_removed_by_the_next_apply() {
    let s = Scene::new("[files.\"@/big\"]\nsource = \"big\"\ncontent_type = \"binary\"\n");
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i % 239) as u8).collect();
    std::fs::create_dir_all(s.repo.path().join("bundles/b/files")).unwrap();
    std::fs::write(s.repo.path().join("bundles/b/files/big"), &big).unwrap();
    std::fs::write(s.path("big"), "old\n").unwrap();
    // Holds the upload after 1 MiB and records the process group of the node's shell. Only
    // the fix command (it defines `wt`) is held: the probe has stdin too (its file list).
    let pgid_file = s.path("pgid");
    with_become(
        &s,
        &format!(
            "#!/bin/sh\nshift\ncase \"$*\" in *'wt() {{'*)\n  ps -o pgid= -p $$ > {}\n  \
             {{ head -c 1048576; sleep 30; cat; }} | \"$@\";;\n*) exec \"$@\";;\nesac\n",
            pgid_file.display()
        ),
    );
    let mut cmd = cinch_command();
    cmd.arg("-r").arg(s.repo.path()).args(["apply", "n1"]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while (staging(s.dir.path()).is_empty() || !pgid_file.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!staging(s.dir.path()).is_empty(), "the upload is staged");
    std::thread::sleep(Duration::from_millis(200));
    let pgid = std::fs::read_to_string(&pgid_file).unwrap();
    let pgid = pgid.trim();
    // SIGKILL: no trap runs on the node, exactly what a killed node shell leaves behind.
    let killed = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pgid}")])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = child.kill();
    let _ = child.wait();
    let left = staging(s.dir.path());
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(std::fs::read(s.path("big")).unwrap(), b"old\n");
    // Back to a plain node; the killed apply still holds its hard lock, so force.
    s.repo.write(
        "nodes.toml",
        &format!(
            "[nodes.n1]\ntransport = \"local\"\nbundles = [\"b\"]\nlock_dir = \"{}\"\n",
            s.repo.path().join("locks").display()
        ),
    );
    // A leftover counts as stale once untouched for an hour (a younger one may be another
    // node's upload in progress): age it as time would.
    let aged = Command::new("touch")
        .args(["-h", "-d", "2 hours ago"])
        .arg(&left[0])
        .status()
        .unwrap();
    assert!(aged.success());
    let run = s.cinch(&["verify", "n1"]).expect_code(1);
    assert!(
        run.stdout.contains(left[0].to_str().unwrap()),
        "{}",
        run.stdout
    );
    assert!(left[0].exists(), "verify changes nothing");
    s.cinch(&["apply", "n1", "--force"]).expect_code(0);
    assert!(
        staging(s.dir.path()).is_empty(),
        "{:?}",
        staging(s.dir.path())
    );
    assert_eq!(std::fs::read(s.path("big")).unwrap(), big);
}

/// Two node names on one machine applying into the same directory at once: one node's probe
/// removed the other's staging directory mid-upload ("still differs after the fix"), because
/// "older than this run" is no proof that nobody is writing it.
#[test]
fn staging_of_a_concurrent_apply_into_the_same_directory_is_never_removed() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().display().to_string();
    let mut nodes = String::new();
    for n in 0..8 {
        nodes.push_str(&format!(
            "[nodes.n{n}]\ntransport = \"local\"\nbundles = [\"b{n}\"]\nlock_dir = \"{root}/locks\"\n"
        ));
    }
    let repo = crate::harness::TestRepo::new().file("nodes.toml", &nodes);
    for n in 0..8 {
        let mut files = String::new();
        for f in 0..20 {
            files.push_str(&format!(
                "[files.\"{root}/shared/n{n}-{f}\"]\ncontent = \"{n} {f}\\n\"\n"
            ));
        }
        repo.write(&format!("bundles/b{n}/items.toml"), &files);
    }
    std::fs::create_dir(scratch.path().join("shared")).unwrap();
    for round in 0..3 {
        let run = repo.cinch(&["apply", "all", "-p", "8"]);
        assert_eq!(
            run.code, 0,
            "round {round}:\n{}\n{}",
            run.stdout, run.stderr
        );
        for e in std::fs::read_dir(scratch.path().join("shared")).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
    }
}
