//! Secrets (issue 15): keys outside the repo, values produced only when used, and every
//! produced value masked on every output channel.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::harness::{Run, TestRepo};

/// A repo with a local node `n1` whose bundle `b` manages files under `out/`, and a key file
/// with keys `default` and `db` outside the repo.
struct Vault {
    repo: TestRepo,
    keys_dir: tempfile::TempDir,
}

impl Vault {
    fn new() -> Vault {
        let keys_dir = tempfile::tempdir().expect("tempdir");
        let repo = TestRepo::new().env(
            "CINCH_SECRETS_FILE",
            &keys_dir.path().join("keys.toml").display().to_string(),
        );
        std::fs::create_dir_all(repo.path().join("out")).expect("out dir");
        let v = Vault { repo, keys_dir };
        v.cinch(&["secret", "keygen"]).expect_code(0);
        v.cinch(&["secret", "keygen", "db"]).expect_code(0);
        v
    }

    fn keys(&self) -> PathBuf {
        self.keys_dir.path().join("keys.toml")
    }

    fn out(&self) -> PathBuf {
        self.repo.path().join("out")
    }

    fn cinch(&self, args: &[&str]) -> Run {
        self.repo.cinch(args)
    }

    /// The value `password_for(id)` gives with this key file.
    fn password_for(&self, id: &str) -> String {
        self.cinch(&["secret", "password-for", id])
            .expect_code(0)
            .stdout
            .trim()
            .to_string()
    }

    fn encrypt(&self, key: &str, text: &str) -> String {
        self.cinch(&["secret", "encrypt", "--key", key, text])
            .expect_code(0)
            .stdout
            .trim()
            .to_string()
    }

    /// nodes.toml with `metadata` for n1 (its own lock directory, so tests run in parallel),
    /// and bundle b with `items`.
    fn write(&self, metadata: &str, items: &str) {
        self.repo.write(
            "nodes.toml",
            &format!(
                "[nodes.n1]\ntransport = \"local\"\nbundles = [\"b\"]\nlock_dir = {:?}\n\
                 [nodes.n1.metadata.b]\n{metadata}",
                self.repo.path().join("locks").display().to_string()
            ),
        );
        self.repo.write(
            "bundles/b/items.toml",
            &items.replace("@", &self.out().display().to_string()),
        );
    }
}

#[track_caller]
fn assert_absent(run: &Run, value: &str) {
    assert!(
        !run.stdout.contains(value) && !run.stderr.contains(value),
        "secret {value:?} leaked\n--- stdout\n{}\n--- stderr\n{}",
        run.stdout,
        run.stderr
    );
}

#[test]
fn secret_values_are_masked_on_every_channel() {
    let v = Vault::new();
    let pw = v.password_for("db_root");
    let token = v.encrypt("default", "api-token-0123456789");
    v.write(
        &format!("pw = \"!password_for:db_root\"\ntoken = \"!decrypt:{token}\"\n"),
        "[files.\"@/conf\"]\ncontent_type = \"jinja2\"\ncontent = \"pw={{ metadata.b.pw }}\\n\"\n\
         [symlinks.\"@/link\"]\ntarget = \"!password_for:db_root\"\n\
         [actions.echo]\ncommand = \"cat; cat >&2 <<'E'\\nalso\\nE\\nexit 3\"\n\
         data_stdin = \"!password_for:db_root and !decrypt\"\n\
         [actions.token]\ncommand = \"cat\"\ndata_stdin = \"!decrypt:TOKEN\"\nexpected_stdout = \"nothing\"\n"
            .replace("TOKEN", &token)
            .as_str(),
    );
    v.repo.write(
        "hooks/leak.rhai",
        "fn node_apply_start(repo, node) { log(\"meta \" + node.metadata.b.pw); \
         if node.metadata.b.pw == \"[secret:db_root]\" { log(\"argument arrived masked\"); } \
         log(\"direct \" + password_for(\"db_root\")); }\n\
         fn item_apply_end(repo, node, item, duration, status_code, status_before, status_after, reason) \
         { let all = node.to_json() + item.to_json() + `${status_after} ${reason}`; \
         if all.contains(password_for(\"db_root\")) { log(\"LEAK in \" + item.id); } \
         else { log(\"clean arguments for \" + item.id); } }\n",
    );
    // Human output at the highest verbosity: action stdout/stderr, hook log() and arguments.
    let run = v.cinch(&["-vv", "apply", "n1"]).expect_code(1);
    assert_absent(&run, &pw);
    assert_absent(&run, "api-token-0123456789");
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains("meta [secret:db_root]"), "{all}");
    assert!(all.contains("argument arrived masked"), "{all}");
    assert!(!all.contains("LEAK"), "{all}");
    assert!(all.contains("clean arguments for symlink:"), "{all}");
    assert!(all.contains("direct [secret:db_root]"), "{all}");
    assert!(all.contains("[secret:default/"), "{all}");
    assert_eq!(
        std::fs::read_to_string(v.out().join("conf")).expect("written"),
        format!("pw={pw}\n"),
        "the node gets the real value"
    );
    // JSON lines.
    std::fs::remove_file(v.out().join("conf")).expect("rm");
    let run = v.cinch(&["--json", "apply", "n1"]).expect_code(1);
    assert_absent(&run, &pw);
    assert_absent(&run, "api-token-0123456789");
    assert!(run.stdout.contains("[secret:db_root]"), "{}", run.stdout);
    let _ = run.json_lines();
    // `cinch run` output: the node's file holds the value, the terminal shows the mask.
    let conf = v.out().join("conf").display().to_string();
    let run = v.cinch(&["run", "n1", &format!("cat {conf}; cat {conf} >&2")]);
    assert_absent(&run, &pw);
    assert!(run.stdout.contains("pw=[secret:db_root]"), "{}", run.stdout);
}

#[test]
fn a_template_error_that_would_quote_the_secret_is_masked() {
    let v = Vault::new();
    let pw = v.password_for("db_root");
    v.write(
        "pw = \"!password_for:db_root\"\n",
        "[files.\"@/conf\"]\ncontent_type = \"jinja2\"\ncontent = \"{% include metadata.b.pw %}\"\n",
    );
    let run = v.cinch(&["apply", "n1"]).expect_code(2);
    assert_absent(&run, &pw);
    assert!(run.stderr.contains("[secret:db_root]"), "{}", run.stderr);
    let run = v.cinch(&["test"]).expect_code(1);
    assert_absent(&run, &pw);
}

#[test]
fn cinch_metadata_masks_secrets_unless_reveal() {
    let v = Vault::new();
    let pw = v.password_for("db_root");
    v.write("pw = \"!password_for:db_root\"\nplain = \"visible\"\n", "");
    let run = v.cinch(&["metadata", "n1"]).expect_code(0);
    assert_absent(&run, &pw);
    assert!(
        run.stdout.contains("\"[secret:db_root]\""),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("visible"), "{}", run.stdout);
    let run = v.cinch(&["--json", "metadata", "n1"]).expect_code(0);
    assert_absent(&run, &pw);
    v.cinch(&["metadata", "n1", "--reveal"])
        .expect_code(0)
        .stdout_has(&pw);
}

#[test]
fn a_missing_key_fails_only_commands_that_need_the_value() {
    let v = Vault::new();
    let db_secret = v.encrypt("db", "only-the-db-team-knows");
    std::fs::remove_file(v.keys()).expect("rm keys");
    v.write(
        "pw = \"!password_for:db_root\"\n",
        &format!(
            "[actions.db]\ncommand = \"cat >/dev/null\"\ndata_stdin = \"!decrypt:{db_secret}\"\n"
        ),
    );
    for args in [
        &["nodes"][..],
        &["groups"],
        &["items", "n1"],
        &["test"],
        &["metadata", "n1"],
    ] {
        v.cinch(args).expect_code(0);
    }
    let run = v.cinch(&["apply", "n1"]).expect_code(1);
    assert!(
        run.stderr.contains("nodes.toml:6"),
        "where it is used: {}",
        run.stderr
    );
    assert!(run.stderr.contains("key 'default'"), "{}", run.stderr);
    assert!(run.stderr.contains("cinch secret keygen"), "{}", run.stderr);
    assert!(!v.out().join("conf").exists());

    // A team member with only the default key: the db secret fails where it is used.
    v.cinch(&["secret", "keygen"]).expect_code(0);
    let run = v.cinch(&["apply", "n1"]).expect_code(2);
    assert!(
        run.stderr.contains("bundles/b/items.toml:3"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("key 'db' is not in"), "{}", run.stderr);
}

#[test]
fn a_value_encrypted_with_another_key_is_refused_naming_the_key() {
    let v = Vault::new();
    let other = Vault::new();
    let foreign = other.encrypt("default", "not-for-you-1234");
    v.write(&format!("x = \"!decrypt:{foreign}\"\n"), "");
    let run = v.cinch(&["test"]).expect_code(1);
    assert!(
        run.stderr.contains("different key named 'default'"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("nodes.toml:6"), "{}", run.stderr);
    assert_absent(&run, "not-for-you-1234");
}

#[test]
fn a_tampered_ciphertext_is_refused_not_decrypted_to_garbage() {
    let v = Vault::new();
    let good = v.encrypt("default", "original-value-99");
    // Flip one character of the data (not the padding at the end).
    let mut chars: Vec<char> = good.chars().collect();
    let i = chars.len() - 6;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let bad: String = chars.into_iter().collect();
    v.write(&format!("x = \"!decrypt:{bad}\"\n"), "");
    let run = v.cinch(&["apply", "n1"]).expect_code(1);
    assert!(
        run.stderr.contains("fails authentication"),
        "{}",
        run.stderr
    );
    v.cinch(&["secret", "decrypt", &bad])
        .expect_code(2)
        .stderr_has("was changed or corrupted");
}

#[test]
fn dummy_mode_gives_deterministic_values_without_keys() {
    let v = Vault::new();
    let real = v.password_for("db_root");
    let token = v.encrypt("db", "real-token-value");
    std::fs::remove_file(v.keys()).expect("rm keys");
    v.write(
        &format!("pw = \"!password_for:db_root\"\ntoken = \"!decrypt:{token}\"\n"),
        "[files.\"@/conf\"]\ncontent_type = \"jinja2\"\ncontent = \"{{ metadata.b.pw }} {{ metadata.b.token }}\"\n",
    );
    let dummy = [("CINCH_SECRETS_DUMMY", "1")];
    v.repo.cinch_env(&dummy, &["test"]).expect_code(0);
    v.repo.cinch_env(&dummy, &["apply", "n1"]).expect_code(0);
    let first = std::fs::read_to_string(v.out().join("conf")).expect("written");
    assert!(
        !first.contains(&real) && !first.contains("real-token-value"),
        "{first}"
    );
    assert!(first.contains("dummy-db-"), "{first}");
    v.repo.cinch_env(&dummy, &["verify", "n1"]).expect_code(0);
}

/// A hash computed over masked stand-ins would differ between a machine with the keys and one
/// without, so `hash` needs the values (or dummy mode) like apply.
#[test]
fn hash_of_a_repo_with_secrets_never_uses_stand_ins() {
    let v = Vault::new();
    v.write(
        "pw = \"!password_for:db_root\"\n",
        "[files.\"@/conf\"]\ncontent_type = \"jinja2\"\ncontent = \"{{ metadata.b.pw }}\"\n",
    );
    let with_key = v.cinch(&["hash", "-q", "n1"]).expect_code(0).stdout;
    let again = v.cinch(&["hash", "-q", "n1"]).expect_code(0).stdout;
    assert_eq!(with_key, again);
    std::fs::remove_file(v.keys()).expect("rm keys");
    v.cinch(&["hash", "n1"])
        .expect_code(2)
        .stderr_has("no key file")
        .stderr_has("CINCH_SECRETS_DUMMY=1");
    let dummy = [("CINCH_SECRETS_DUMMY", "1")];
    let d1 = v
        .repo
        .cinch_env(&dummy, &["hash", "-q", "n1"])
        .expect_code(0)
        .stdout;
    let d2 = v
        .repo
        .cinch_env(&dummy, &["hash", "-q", "n1"])
        .expect_code(0)
        .stdout;
    assert_eq!(d1, d2);
    assert_ne!(d1, with_key);
}

#[test]
fn key_file_readable_by_others_is_refused_with_the_fix() {
    let v = Vault::new();
    v.write("pw = \"!password_for:db_root\"\n", "");
    std::fs::set_permissions(v.keys(), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let run = v.cinch(&["apply", "n1"]).expect_code(1);
    assert!(run.stderr.contains("readable by others"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("chmod 600 {}", v.keys().display())),
        "{}",
        run.stderr
    );
    v.cinch(&["secret", "password-for", "x"])
        .expect_code(2)
        .stderr_has("chmod 600");
}

#[test]
fn rotation_round_trip_keeps_every_value() {
    let v = Vault::new();
    let token = v.encrypt("default", "rotate-me-please");
    let plain = v.repo.path().join("cert.pem");
    std::fs::write(&plain, "-----BEGIN TEST-----\nabc\n").expect("write");
    let enc = v.repo.path().join("bundles/b/files/cert.enc");
    std::fs::create_dir_all(enc.parent().expect("parent")).expect("mkdir");
    v.cinch(&[
        "secret",
        "encrypt-file",
        &plain.display().to_string(),
        &enc.display().to_string(),
    ])
    .expect_code(0);
    std::fs::remove_file(&plain).expect("rm");
    v.write(
        &format!("token = \"!decrypt:{token}\"\n"),
        "[files.\"@/cert\"]\ncontent = \"!decrypt_file:cert.enc\"\n",
    );
    v.cinch(&["apply", "n1"]).expect_code(0);
    let nodes_before = std::fs::read_to_string(v.repo.path().join("nodes.toml")).expect("read");

    v.cinch(&["secret", "rotate", "default", "db"])
        .expect_code(0)
        .stderr_has("re-encrypted 2 value(s) in 2 file(s)");
    let nodes_after = std::fs::read_to_string(v.repo.path().join("nodes.toml")).expect("read");
    assert_ne!(nodes_before, nodes_after);
    assert!(
        nodes_after.contains("!decrypt:cinch:v1:db:"),
        "{nodes_after}"
    );
    assert!(
        std::fs::read_to_string(&enc)
            .expect("read")
            .starts_with("cinch:v1:db:")
    );
    v.cinch(&["verify", "n1"]).expect_code(0);
    v.cinch(&["metadata", "n1", "--reveal"])
        .expect_code(0)
        .stdout_has("rotate-me-please");
    assert_eq!(
        std::fs::read_to_string(v.out().join("cert")).expect("read"),
        "-----BEGIN TEST-----\nabc\n"
    );
    v.cinch(&["secret", "rotate", "db", "default"])
        .expect_code(0);
    v.cinch(&["verify", "n1"]).expect_code(0);
}

#[test]
fn an_item_whose_state_holds_a_secret_is_sensitive_automatically() {
    let v = Vault::new();
    let pw = v.password_for("app");
    v.write(
        "",
        "[files.\"@/plain\"]\ncontent = \"!password_for:app\"\n\
         [files.\"@/tmpl\"]\ncontent_type = \"jinja2\"\ncontent = \"{{ password_for('app') }}\"\n",
    );
    v.repo.write(
        "bundles/b/items.rhai",
        &format!(
            "#{{ files: #{{ \"{}/computed\": #{{ content: \"pw=\" + password_for(\"app\") + \"\\n\" }} }} }}",
            v.out().display()
        ),
    );
    let items = v.cinch(&["--json", "items", "n1"]).expect_code(0);
    assert_absent(&items, &pw);
    let run = v.cinch(&["apply", "n1"]).expect_code(0);
    assert_absent(&run, &pw);
    assert!(
        run.stdout.matches("content hidden (sensitive)").count() == 3,
        "{}",
        run.stdout
    );
    assert_eq!(
        std::fs::read_to_string(v.out().join("plain")).expect("read"),
        pw
    );

    // The node's old copy (an old password, unknown to cinch) is not diffed either, and the
    // expected content's hash is withheld from --json.
    for f in ["computed", "tmpl"] {
        std::fs::write(v.out().join(f), "pw=old-password-zzz\n").expect("drift");
    }
    let run = v.cinch(&["-vv", "verify", "n1"]).expect_code(1);
    assert_absent(&run, "old-password-zzz");
    let run = v.cinch(&["--json", "verify", "n1"]).expect_code(1);
    for f in ["/computed", "/tmpl"] {
        let line = run
            .json_lines()
            .into_iter()
            .find(|l| l["item"].as_str().is_some_and(|i| i.ends_with(f)))
            .expect("an event for the file");
        assert_eq!(
            line["status_expected"]["content_hash"], "(hidden)",
            "{line}"
        );
    }
}

#[test]
fn a_secret_in_an_action_command_is_refused_for_ps_would_show_it() {
    let v = Vault::new();
    v.write("", "[actions.leak]\ncommand = \"!password_for:app\"\n");
    v.cinch(&["test"])
        .expect_code(1)
        .stderr_has("would be visible in `ps`");
}

/// Every process command line on this machine (the node is this machine over ssh).
fn command_lines() -> String {
    let out = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .expect("ps is needed: apt-get install procps");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ps_on_the_node_never_shows_a_secret_during_an_apply() {
    let sshd = crate::sshd::Sshd::start(1);
    let v = Vault::new();
    let pw = v.password_for("ps_check");
    let dir = sshd.node_dir("node1");
    v.repo.write("cinch.toml", &sshd.cinch_toml());
    v.repo.write(
        "nodes.toml",
        &format!(
            "[nodes.node1]\nbundles = [\"b\"]\nlock_dir = {:?}\n\
             [nodes.node1.metadata]\npw = \"!password_for:ps_check\"\n",
            v.repo.path().join("locks").display().to_string()
        ),
    );
    let mut items = String::new();
    for k in 0..20 {
        items.push_str(&format!(
            "[files.\"{}/f{k}\"]\ncontent_type = \"jinja2\"\ncontent = \"{{{{ metadata.pw }}}}\\n\"\n",
            dir.display()
        ));
    }
    items.push_str(
        "[actions.slow]\ncommand = \"read -r x; sleep 2; test -n \\\"$x\\\"\"\n\
         data_stdin = \"!password_for:ps_check\"\n",
    );
    v.repo.write("bundles/b/items.toml", &items);
    let mut cmd = crate::harness::cinch_command();
    cmd.arg("-r").arg(v.repo.path()).args(["apply", "node1"]);
    cmd.env("CINCH_SECRETS_FILE", v.keys());
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("spawn cinch");
    let pid = child.id();
    let mut samples = 0;
    let mut seen_apply = false;
    while Path::new(&format!("/proc/{pid}")).exists() {
        let lines = command_lines();
        assert!(!lines.contains(&pw), "secret on a command line:\n{lines}");
        seen_apply |= lines.contains("sleep 2") || lines.contains("cinch-stage");
        samples += 1;
        if std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z ")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(samples > 10, "ps ran only {samples} times");
    assert!(seen_apply, "ps never saw the apply's remote commands");
    assert_eq!(
        std::fs::read_to_string(dir.join("f3")).expect("written"),
        format!("{pw}\n")
    );
}

#[test]
fn encrypted_files_decrypt_in_templates_and_items_rhai_but_not_through_a_symlink_out() {
    let v = Vault::new();
    let files = v.repo.path().join("bundles/b/files");
    std::fs::create_dir_all(&files).expect("mkdir");
    let plain = v.repo.path().join("plain.txt");
    std::fs::write(&plain, "file-secret-line-one\n").expect("write");
    let enc = files.join("s.enc");
    v.cinch(&[
        "secret",
        "encrypt-file",
        &plain.display().to_string(),
        &enc.display().to_string(),
    ])
    .expect_code(0);
    std::fs::remove_file(&plain).expect("rm");
    v.write(
        "",
        "[files.\"@/t\"]\ncontent_type = \"jinja2\"\ncontent = \"{{ decrypt_file('s.enc') }}\"\n",
    );
    v.repo.write(
        "bundles/b/items.rhai",
        &format!(
            "#{{ files: #{{ \"{}/r\": #{{ content: decrypt_file(\"s.enc\") }} }} }}",
            v.out().display()
        ),
    );
    let run = v.cinch(&["-v", "apply", "n1"]).expect_code(0);
    assert_absent(&run, "file-secret-line-one");
    for f in ["t", "r"] {
        assert_eq!(
            std::fs::read_to_string(v.out().join(f)).expect("read"),
            "file-secret-line-one\n"
        );
    }

    // An encrypted file outside the repo, reached through a symlink in files/, is refused.
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&enc, outside.path().join("x.enc")).expect("copy");
    std::os::unix::fs::symlink(outside.path().join("x.enc"), files.join("link.enc")).expect("ln");
    std::fs::remove_file(v.repo.path().join("bundles/b/items.rhai")).expect("rm");
    v.write(
        "",
        "[files.\"@/l\"]\ncontent = \"!decrypt_file:link.enc\"\n",
    );
    v.cinch(&["apply", "n1"])
        .expect_code(2)
        .stderr_has("link.enc refused");
    assert!(!v.out().join("l").exists());
}
