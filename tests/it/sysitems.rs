//! System items for real through the local transport: users and groups created, changed and
//! deleted (CI runs as root), a small Debian package installed and purged through apt, and
//! services failing clearly on a machine without systemd. Names are random `cinchtst_*` ones
//! and a guard removes them even when an assertion fails.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::apply::Scene;
use crate::harness::TestRepo;

/// Shell commands run when dropped, so a failing test still removes what it created.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!("{c} >/dev/null 2>&1"))
                .status();
        }
    }
}

/// Standard output of a shell command, or `None` when it fails.
fn sh(cmd: &str) -> Option<String> {
    let out = Command::new("sh").arg("-c").arg(cmd).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_string())
}

/// Managing accounts and packages needs root: CI runs as root; elsewhere say so loudly rather
/// than pass without testing anything.
fn require_root() {
    assert!(
        sh("id -u").as_deref() == Some("0"),
        "the system-item tests create real users, groups and packages: run them as root (CI does)"
    );
}

fn passwd(user: &str) -> Option<Vec<String>> {
    sh(&format!("getent passwd {user}")).map(|l| l.split(':').map(str::to_string).collect())
}

fn group_gid(group: &str) -> Option<String> {
    sh(&format!("getent group {group}")).and_then(|l| l.split(':').nth(2).map(str::to_string))
}

/// A gid no group has, so the test never collides with the machine's groups.
fn free_gid() -> u32 {
    loop {
        let gid = 42000 + fastrand::u32(..15000);
        if sh(&format!("getent group {gid}")).is_none()
            && sh(&format!("getent group {}", gid + 1)).is_none()
        {
            return gid;
        }
    }
}

fn summary_counts(s: &Scene) -> (serde_json::Value, String) {
    let (run, summary) = s.apply_json(&[]);
    (summary["nodes"][0].clone(), run.stdout)
}

#[test]
fn users_and_groups_are_created_changed_and_deleted_for_real() {
    require_root();
    let tag = format!("{:06x}", fastrand::u32(..0xff_ffff));
    let (u, g, h) = (
        format!("cinchtst_u{tag}"),
        format!("cinchtst_g{tag}"),
        format!("cinchtst_h{tag}"),
    );
    let _cleanup = Cleanup(vec![
        format!("userdel {u}"),
        format!("groupdel {g}"),
        format!("groupdel {h}"),
    ]);
    let gid = free_gid();
    let v1 = format!(
        r#"
[groups.{g}]
gid = {gid}

[groups.{h}]

[users.{u}]
gid = "{g}"
groups = ["{h}"]
home = "/nonexistent/{u}"
shell = "/bin/sh"
full_name = "Cinch Test"
password_hash = "$6$cinchsalt$notarealhash"

[files."@/owned"]
content = "mine\n"
owner = "{u}"
group = "{g}"

[pkg_apt.dpkg]
installed = true
"#
    );
    let s = Scene::new(&v1);
    let run = s.cinch(&["apply", "n1"]).expect_code(0);
    assert!(
        !run.stdout.contains("notarealhash") && run.stdout.contains("password_hash"),
        "the hash is named, never shown:\n{}",
        run.stdout
    );
    let pw = passwd(&u).expect("user created");
    assert_eq!(pw[3], gid.to_string(), "{pw:?}");
    assert_eq!(
        &pw[4..],
        ["Cinch Test", &format!("/nonexistent/{u}"), "/bin/sh"]
    );
    assert_eq!(group_gid(&g), Some(gid.to_string()));
    let groups = sh(&format!("id -Gn {u}")).unwrap_or_default();
    assert!(groups.split(' ').any(|x| x == h), "{groups}");
    let shadow = sh(&format!("getent shadow {u}")).unwrap_or_default();
    assert!(shadow.starts_with(&format!("{u}:$6$cinchsalt$notarealhash:")));
    let meta = std::fs::metadata(s.path("owned")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        meta.uid().to_string(),
        pw[2],
        "the file needs its owner first"
    );
    assert_eq!(meta.gid(), gid);

    let (n, out) = summary_counts(&s);
    assert_eq!(
        (n["fixed"].as_u64(), n["failed"].as_u64()),
        (Some(0), Some(0)),
        "{out}"
    );
    assert_eq!(
        n["commands"], 2,
        "users, groups, packages and files are all read by the one probe: {n}"
    );

    // Change: a gid for the second group, no supplementary groups (an exact set), new shell.
    let v2 = v1
        .replace(
            &format!("[groups.{h}]\n"),
            &format!("[groups.{h}]\ngid = {}\n", gid + 1),
        )
        .replace(&format!("groups = [\"{h}\"]"), "groups = []")
        .replace("/bin/sh", "/bin/bash");
    s.items(&v2);
    let run = s.cinch(&["apply", "n1"]).expect_code(0);
    assert!(
        run.stdout.contains(&format!("user:{u}  fixed")),
        "{}",
        run.stdout
    );
    assert_eq!(group_gid(&h), Some((gid + 1).to_string()));
    let groups = sh(&format!("id -Gn {u}")).unwrap_or_default();
    assert!(!groups.split(' ').any(|x| x == h), "{groups}");
    assert_eq!(passwd(&u).unwrap()[6], "/bin/bash");
    let (n, out) = summary_counts(&s);
    assert_eq!(n["fixed"], 0, "{out}");

    // Delete: the user goes before its groups (groupdel refuses a primary group in use).
    s.items(&format!(
        "[users.{u}]\ndelete = true\n[groups.{g}]\ndelete = true\n[groups.{h}]\ndelete = true\n"
    ));
    s.cinch(&["apply", "n1"]).expect_code(0);
    assert!(passwd(&u).is_none());
    assert_eq!((group_gid(&g), group_gid(&h)), (None, None));
    let (n, out) = summary_counts(&s);
    assert_eq!(
        (n["fixed"].as_u64(), n["ok"].as_u64()),
        (Some(0), Some(3)),
        "{out}"
    );
}

fn dpkg_installed(pkg: &str) -> bool {
    sh(&format!("dpkg-query -W -f '${{db:Status-Abbrev}}' {pkg}"))
        .is_some_and(|s| s.as_bytes().get(1) == Some(&b'i'))
}

#[test]
fn apt_package_is_installed_and_purged_and_apt_errors_are_reported() {
    // `sl`: tiny, no dependencies beyond libc/ncurses, never installed on a build machine.
    const PKG: &str = "sl";
    require_root();
    assert!(
        sh("command -v apt-get").is_some(),
        "this test needs a Debian-family machine with apt-get"
    );
    if dpkg_installed(PKG) {
        // Left over from an interrupted earlier run: start from "not installed".
        sh(&format!(
            "DEBIAN_FRONTEND=noninteractive apt-get purge -qy {PKG}"
        ));
    }
    let known = sh(&format!("apt-cache policy {PKG}"))
        .is_some_and(|p| p.contains("Candidate:") && !p.contains("Candidate: (none)"));
    if !known {
        sh("apt-get update -qq");
    }
    let _cleanup = Cleanup(vec![format!(
        "DEBIAN_FRONTEND=noninteractive apt-get purge -qy {PKG}"
    )]);
    let started = Instant::now();
    // One wave, one transaction; it fails on the unknown name, so each package is retried
    // alone: the good one is installed, the bad one fails with apt's own words.
    let s = Scene::new(&format!(
        "[pkg_apt.{PKG}]\n[pkg_apt.cinch-no-such-package]\ninstalled = true\n"
    ));
    s.cinch(&["apply", "n1"])
        .expect_code(1)
        .stderr_has("pkg_apt:cinch-no-such-package  failed")
        .stderr_has("Unable to locate package cinch-no-such-package");
    assert!(dpkg_installed(PKG));

    s.items(&format!("[pkg_apt.{PKG}]\ninstalled = true\n"));
    let (n, out) = summary_counts(&s);
    assert_eq!(
        (n["fixed"].as_u64(), n["ok"].as_u64()),
        (Some(0), Some(1)),
        "{out}"
    );
    assert_eq!(n["commands"], 2, "{n}");

    s.items(&format!("[pkg_apt.{PKG}]\ninstalled = false\n"));
    s.cinch(&["apply", "n1"])
        .expect_code(0)
        .stdout_has(&format!("pkg_apt:{PKG}  fixed"))
        .stdout_has("installed: true → false");
    assert!(!dpkg_installed(PKG));
    assert!(
        sh(&format!("dpkg-query -W -f '${{db:Status-Abbrev}}' {PKG}"))
            .is_none_or(|st| !st.starts_with("rc")),
        "purged, not merely removed"
    );
    let (n, out) = summary_counts(&s);
    assert_eq!(n["fixed"], 0, "{out}");
    assert!(started.elapsed() < Duration::from_secs(90));
}

#[test]
fn svc_systemd_fails_clearly_where_systemd_is_not_running() {
    if Path::new("/run/systemd/system").exists() {
        return;
    }
    let s = Scene::new(
        r#"
[svc_systemd.cinch-nothing]
running = true
enabled = true

[files."@/conf"]
content = "x\n"
triggers = ["svc_systemd:cinch-nothing:restart"]
"#,
    );
    s.cinch(&["items", "n1"])
        .expect_code(0)
        .stdout_has("svc_systemd:cinch-nothing:restart")
        .stdout_has("svc_systemd:cinch-nothing:stop");
    let started = Instant::now();
    let run = s
        .cinch(&["apply", "n1"])
        .expect_code(1)
        .stderr_has("n1  b  svc_systemd:cinch-nothing  failed")
        .stderr_has("on this node: svc_systemd items need systemd as the init system")
        .stdout_has("svc_systemd:cinch-nothing:restart  skipped (dependency failed");
    assert!(
        run.stderr.contains("systemctl not found") || run.stderr.contains("systemd is not running"),
        "{}",
        run.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(20), "never hangs");
    assert!(s.path("conf").exists(), "the other items still apply");
}

#[test]
fn bad_system_items_are_test_errors_with_file_and_line() {
    let repo = |items: &str| {
        TestRepo::new()
            .file(
                "nodes.toml",
                "[nodes.n1]\ntransport = \"local\"\nbundles = [\"b\"]\n",
            )
            .file("bundles/b/items.toml", items)
    };
    repo("[users.u]\nshell = \"/bin/sh\"\ncolour = 1\n\n[groups.g]\ndelete = true\ngid = 5\n\n[pkg_apt.x]\nversion = \"1\"\n")
        .cinch(&["test"])
        .stderr_has("items.toml:3:1: unknown attribute `colour` for user:u")
        .stderr_has("items.toml:6:1: group:g has delete = true, so it cannot also set gid")
        .stderr_has("unknown attribute `version` for pkg_apt:x");
    let run = repo(
        "[groups.old]\ndelete = true\n\n[users.v]\ngroups = [\"old\"]\n\n[users.w]\ngid = \"old\"\n\n\
         [svc_systemd.s]\nmasked = true\nrunning = true\n",
    )
    .cinch(&["test"])
    .stderr_has("items.toml:4:1: user:v is a member of group:old, which has delete = true")
    .stderr_has("items.toml:7:1: user:w has the primary group group:old, which has delete = true")
    .stderr_has("items.toml:10:1: svc_systemd:s is masked = true, so it cannot also be running = true");
    assert_ne!(run.code, 0);
}
