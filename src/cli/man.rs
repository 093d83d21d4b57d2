//! Man pages: clap_mangen renders every (sub)command from the one clap definition, and this
//! module adds what clap does not know about — EXIT STATUS, ENVIRONMENT and EXAMPLES — so
//! `man/` stays generated (and tested to be current) instead of hand-edited.

use std::path::Path;

use clap::Command;
use roff::{Roff, bold, roman};

use crate::error::{Error, Result};

/// One example on a man page: the exact arguments after `cinch`, and what they do.
#[derive(Debug, Clone, Copy)]
pub struct Example {
    /// Arguments after `cinch`, one word each (shown shell-quoted).
    pub args: &'static [&'static str],
    /// What running it does.
    pub what: &'static str,
}

/// One environment variable cinch reads, with what it changes.
#[derive(Debug, Clone, Copy)]
pub struct EnvVar {
    /// The variable's name.
    pub name: &'static str,
    /// What it changes.
    pub what: &'static str,
}

/// Every environment variable the binary reads (a test greps the source for `env::var` and
/// `env = "…"` so this list cannot fall behind).
pub const ENVIRONMENT: &[EnvVar] = &[
    EnvVar {
        name: "CINCH_REPO",
        what: "The repository directory when -r/--repo is not given. Without either, cinch \
               looks in the current directory and its parents for nodes.toml, nodes/ or cinch.toml.",
    },
    EnvVar {
        name: "CINCH_IDENTITY",
        what: "Who you are in hard and soft locks (the owner of the locks you add, and whose \
               locks never block you). Default: USER@HOSTNAME.",
    },
    EnvVar {
        name: "USER, LOGNAME",
        what: "The user part of the default identity when CINCH_IDENTITY is unset ($USER, else \
               $LOGNAME).",
    },
    EnvVar {
        name: "CINCH_SSH_CONTROL_DIR",
        what: "Directory for the ssh ControlMaster sockets (default /tmp/cinch-UID, created with \
               mode 0700). Keep it short: socket paths are limited to about 100 bytes.",
    },
    EnvVar {
        name: "NO_COLOR",
        what: "When set, --color auto (the default) prints no colour.",
    },
    EnvVar {
        name: "CINCH_HOOK_NOW",
        what: "UNIX seconds that the hook function now() returns instead of the clock, to test \
               time-dependent hooks. Must be a number.",
    },
    EnvVar {
        name: "CINCH_SECRETS_FILE",
        what: "The secret key file when cinch.toml has no [secrets] keys_file. Default: \
               $XDG_CONFIG_HOME/cinch/secrets.toml, else ~/.config/cinch/secrets.toml. It must \
               have mode 0600 (see docs/secrets.md).",
    },
    EnvVar {
        name: "CINCH_SECRETS_DUMMY",
        what: "When set (and not 0), every secret (password_for, decrypt, decrypt_file) is a \
               deterministic dummy value and no key file is read: for CI.",
    },
    EnvVar {
        name: "XDG_CONFIG_HOME, HOME",
        what: "Where the default secret key file is (see CINCH_SECRETS_FILE).",
    },
    EnvVar {
        name: "other variables",
        what: "Hooks read any variable with env(NAME), and commands started by run_local() \
               inherit the environment. ssh(1) is the system OpenSSH and reads its own \
               variables (SSH_AUTH_SOCK for the agent, for example).",
    },
];

/// Exit codes shared by the commands that connect to nodes.
const NODE_EXIT: &[(&str, &str)] = &[
    ("0", "Success on every selected node."),
    (
        "1",
        "Something failed on some node: an item failed, a command exited non-zero, a lock was \
         refused, a node was unreachable, or a hook failed. The other nodes were still worked on.",
    ),
    (
        "2",
        "Bad usage or a repo that does not load (nothing was touched on any node).",
    ),
    (
        "130",
        "Interrupted by Ctrl-C or SIGTERM: running work finished, locks were released.",
    ),
];

/// Exit codes of the commands that only read the repo.
const LOCAL_EXIT: &[(&str, &str)] = &[
    ("0", "Success."),
    (
        "1",
        "A local I/O problem (for example writing the output failed).",
    ),
    (
        "2",
        "Bad usage (unknown node, selector that matches nothing) or a repo that does not load.",
    ),
];

/// The EXIT STATUS entries of the page for the command at `path` (`[]` is cinch itself).
pub fn exit_status(path: &[&str]) -> &'static [(&'static str, &'static str)] {
    match path {
        ["apply"] => &[
            (
                "0",
                "Nothing failed. Skipped items (soft-locked, skip, unless, not triggered) are not \
                 failures.",
            ),
            (
                "1",
                "An item failed, a node was unreachable, its hard lock was held by someone else, \
                 or a hook failed. The other nodes were still applied.",
            ),
            (
                "2",
                "Bad usage or a repo that does not load (no node was contacted).",
            ),
            (
                "130",
                "Interrupted by Ctrl-C or SIGTERM: running items finished, hard locks were \
                 released.",
            ),
        ],
        ["lock"] | ["lock", _] => &[
            (
                "0",
                "Done on every selected node (dummy nodes are skipped).",
            ),
            (
                "1",
                "A node was unreachable or its lock directory could not be used, lock remove \
                 found no lock with that id on some node, or a lock hook failed.",
            ),
            (
                "2",
                "Bad usage (a target or item selector that matches nothing, an invalid duration \
                 or lock id) or a repo that does not load.",
            ),
            ("130", "Interrupted by Ctrl-C or SIGTERM."),
        ],
        ["verify"] => &[
            ("0", "Every selected node already is as the repo describes."),
            (
                "1",
                "Something would change (drift), something could not be read, or a node was \
                 unreachable. Usable as a drift check in CI.",
            ),
            (
                "2",
                "Bad usage or a repo that does not load (no node was contacted).",
            ),
            ("130", "Interrupted by Ctrl-C or SIGTERM."),
        ],
        ["run"] => &[
            ("0", "The command exited 0 on every selected node."),
            (
                "1",
                "The command exited non-zero, timed out or could not be started on some node, \
                 a node was unreachable, or a hook failed.",
            ),
            (
                "2",
                "Bad usage or a repo that does not load (no node was contacted).",
            ),
            (
                "130",
                "Interrupted by Ctrl-C or SIGTERM (a second one kills the remote commands).",
            ),
        ],
        ["test"] => &[
            ("0", "No problem found."),
            (
                "1",
                "The repo loads, but an item-level problem was found (an attribute, a template, \
                 a dependency or loop, a node's metadata) or a test_node/test hook failed.",
            ),
            (
                "2",
                "The repo does not load (TOML syntax, unknown keys, unknown groups or bundles, \
                 hooks that do not compile) or bad usage. Every problem is still listed.",
            ),
        ],
        ["nodes"] | ["groups"] | ["items"] | ["metadata"] | ["completions"] | ["hash"] => {
            LOCAL_EXIT
        }
        ["diff"] => &[
            ("0", "No selected node differs between the two revisions."),
            (
                "1",
                "Some node differs (items added, removed or changed, or metadata changed), or a \
                 local I/O problem.",
            ),
            (
                "2",
                "Bad usage (not a git repository, an unknown revision, a target that matches \
                 nothing on either side) or a revision whose repo does not load (its problems \
                 are named REV:FILE:LINE).",
            ),
            ("130", "Interrupted by Ctrl-C or SIGTERM."),
        ],
        ["secret"] | ["secret", _] => &[
            ("0", "Done."),
            (
                "1",
                "A local I/O problem (reading or writing a file or stdin).",
            ),
            (
                "2",
                "Bad usage, or a key problem: no key file or key, a key file readable by others, \
                 a wrong key or a tampered value (rotate then changes nothing).",
            ),
        ],
        ["report"] => &[
            (
                "0",
                "Every node of every file succeeded (for verify: nothing would change).",
            ),
            (
                "1",
                "Some node failed (or, for verify, would change), as one run would have said.",
            ),
            (
                "2",
                "Bad usage: a file missing or without a summary line, files of different \
                 commands, or a node in more than one file.",
            ),
            ("130", "One of the runs was interrupted."),
        ],
        ["repo"] | ["repo", "create"] => &[
            ("0", "The repo was written."),
            ("1", "Writing a file failed."),
            (
                "2",
                "DIR exists and is not an empty directory (nothing is overwritten).",
            ),
        ],
        _ => NODE_EXIT,
    }
}

/// The EXAMPLES of the page for the command at `path` (`[]` is cinch itself).
pub fn examples(path: &[&str]) -> &'static [Example] {
    match path {
        [] => &[
            Example {
                args: &["repo", "create", "myrepo"],
                what: "Start a new repo from the built-in template.",
            },
            Example {
                args: &["-r", "repo-template", "test"],
                what: "Check the demo repo of cinch's source tree without touching a machine.",
            },
            Example {
                args: &["-r", "repo-template", "apply", "demo"],
                what: "Apply the demo repo to this machine (it manages files under /tmp/cinch-demo \
                       only); run it twice and the second run has nothing to fix.",
            },
            Example {
                args: &["verify", "all"],
                what: "Drift check of the whole fleet; exit 1 if anything would change.",
            },
        ],
        ["apply"] => &[
            Example {
                args: &["apply", "web1"],
                what: "Bring node web1 to the state the repo describes, with a diff of every \
                       changed file and a summary table.",
            },
            Example {
                args: &["apply", "webservers,!web3", "-p", "4"],
                what: "Apply to the group webservers except web3, four nodes at a time.",
            },
            Example {
                args: &["apply", "bundle:nginx", "-o", "bundle:nginx"],
                what: "On every node with the nginx bundle, apply only that bundle's items (and \
                       the items they need).",
            },
            Example {
                args: &["apply", "all", "-s", "pkg_apt:", "--no-diff"],
                what: "Apply everything except packages, without file diffs.",
            },
            Example {
                args: &["apply", "-i", "db1"],
                what: "Show each change on db1 and ask yes/no/quit before making it.",
            },
            Example {
                args: &["apply", "all", "--batch", "10%", "--max-fail", "2"],
                what: "Roll out in waves of a tenth of the nodes; once more than two nodes have \
                       failed, start no new node.",
            },
            Example {
                args: &["apply", "all", "--resume-file", "done.txt"],
                what: "Record each node that succeeded in done.txt; after a Ctrl-C, the same \
                       command continues with the nodes not yet done.",
            },
            Example {
                args: &["--json", "apply", "all", "--shard", "2/4"],
                what: "The second of four CI jobs: only this shard's nodes (see cinch report).",
            },
            Example {
                args: &["--json", "apply", "all", "--stats"],
                what: "JSON lines for CI, ending with a summary that includes remote commands and \
                       bytes per node.",
            },
        ],
        ["verify"] => &[
            Example {
                args: &["verify", "all"],
                what: "Show what apply would change on every node, with diffs; exit 1 if \
                       anything would.",
            },
            Example {
                args: &["verify", "web1", "-o", "file:/etc/nginx/nginx.conf"],
                what: "Check one file on one node.",
            },
            Example {
                args: &["-q", "verify", "group:db"],
                what: "Only the result for the group db: quiet output for cron or CI.",
            },
        ],
        ["run"] => &[
            Example {
                args: &["run", "webservers", "systemctl is-active nginx"],
                what: "Run one shell command on every node of webservers in parallel; output \
                       lines are prefixed with the node name, and a table of return codes \
                       follows.",
            },
            Example {
                args: &["run", "-p", "20", "--timeout", "30", "all", "uptime"],
                what: "Twenty nodes at a time; a command still running after 30 seconds is \
                       stopped (its remote process group is killed).",
            },
            Example {
                args: &[
                    "run",
                    "all",
                    "--batch",
                    "5",
                    "--max-fail",
                    "0",
                    "apt-get -y upgrade",
                ],
                what: "Five nodes at a time, and stop starting nodes at the first failure.",
            },
            Example {
                args: &["run", "web1", "--", "df", "-h", "/"],
                what: "Everything after -- is the command, even words that start with -.",
            },
        ],
        ["lock"] => &[
            Example {
                args: &["lock", "add", "web1,web2", "-c", "db migration", "-e", "2h"],
                what: "Put a soft lock on two nodes for two hours; prints the lock id.",
            },
            Example {
                args: &["lock", "show", "all"],
                what: "List every soft lock on every node.",
            },
            Example {
                args: &["lock", "remove", "web1,web2", "AB12"],
                what: "Remove lock AB12 from both nodes.",
            },
        ],
        ["lock", "add"] => &[
            Example {
                args: &[
                    "lock",
                    "add",
                    "web1,web2",
                    "-c",
                    "db migration",
                    "-e",
                    "2h",
                    "-i",
                    "bundle:postgres",
                ],
                what: "Hands off the postgres bundle's items on web1 and web2 for two hours: \
                       other people's applies skip them. Prints the lock id.",
            },
            Example {
                args: &["lock", "add", "all", "-c", "release freeze", "-e", "1d12h"],
                what: "Lock every item of every node for a day and a half.",
            },
        ],
        ["lock", "show"] => &[
            Example {
                args: &["lock", "show", "all"],
                what: "Table of soft locks: node, id, owner, created, expires, items, comment.",
            },
            Example {
                args: &["--json", "lock", "show", "webservers"],
                what: "The same as JSON lines.",
            },
        ],
        ["lock", "remove"] => &[Example {
            args: &["lock", "remove", "web1,web2", "ab12"],
            what: "Remove lock AB12 (ids are case-insensitive) from both nodes.",
        }],
        ["test"] => &[
            Example {
                args: &["test"],
                what: "Validate the whole repo without connecting: every problem, with file and \
                       line; then the test_node and test hooks.",
            },
            Example {
                args: &["test", "webservers"],
                what: "Only the nodes of webservers (the test hook runs only without a target).",
            },
            Example {
                args: &["-r", "repo-template", "test"],
                what: "Test the demo repo of cinch's source tree.",
            },
        ],
        ["report"] => &[Example {
            args: &["report", "shard-1.json", "shard-2.json", "shard-3.json"],
            what: "The summary table and exit code of three shards' --json outputs, as one \
                       unsharded run would have given them (see docs/ci.md).",
        }],
        ["hash"] => &[
            Example {
                args: &["-r", "repo-template", "hash", "--items"],
                what: "The hash of every node of the demo repo, each followed by the hash of \
                       every item; the last line is the hash of the whole selection.",
            },
            Example {
                args: &["-q", "hash", "web1", "--metadata"],
                what: "Only the hash of web1's items and metadata, for a script to compare with \
                       the hash recorded at review.",
            },
            Example {
                args: &["--json", "hash", "webservers", "--items"],
                what: "JSON lines: one node_hash per node with its item hashes, then the hash \
                       of the selection.",
            },
        ],
        ["diff"] => &[
            Example {
                args: &["diff", "HEAD"],
                what: "What the uncommitted changes of the work tree change on every node.",
            },
            Example {
                args: &[
                    "--color",
                    "never",
                    "diff",
                    "origin/main..HEAD",
                    "webservers",
                ],
                what: "What a branch changes on the webservers, as plain text for a pull \
                       request comment; exit 1 if anything differs.",
            },
            Example {
                args: &["--json", "diff", "v1.4..v1.5"],
                what: "One diff_node line per node that differs, then a diff_summary, for bots.",
            },
        ],
        ["nodes"] => &[
            Example {
                args: &["nodes"],
                what: "Every node name, one a line.",
            },
            Example {
                args: &[
                    "-r",
                    "repo-template",
                    "nodes",
                    "-a",
                    "hostname,groups,bundles",
                ],
                what: "A table with those attributes as columns.",
            },
            Example {
                args: &[
                    "-r",
                    "repo-template",
                    "nodes",
                    "demo",
                    "-a",
                    "os,lock_dir",
                    "--blame",
                ],
                what: "Each attribute with where it came from (the node, a group, a default).",
            },
            Example {
                args: &["--json", "nodes", "bundle:nginx"],
                what: "The nodes that have the nginx bundle, as JSON lines.",
            },
        ],
        ["groups"] => &[
            Example {
                args: &["groups"],
                what: "Every group name.",
            },
            Example {
                args: &["-r", "repo-template", "groups", "demo"],
                what: "The groups node demo is in (directly, by pattern or through subgroups).",
            },
        ],
        ["items"] => &[
            Example {
                args: &["-r", "repo-template", "items", "demo"],
                what: "The ids of every item node demo gets, from items.toml and items.rhai.",
            },
            Example {
                args: &["-r", "repo-template", "items", "demo", "--blame"],
                what: "The same with the bundle and file that defined each item.",
            },
        ],
        ["metadata"] => &[
            Example {
                args: &["-r", "repo-template", "metadata", "demo"],
                what: "Node demo's computed metadata as JSON (bundle defaults < reactors < groups < node).",
            },
            Example {
                args: &["-r", "repo-template", "metadata", "demo", "demo.color"],
                what: "Only one key, as a dotted path.",
            },
            Example {
                args: &["-r", "repo-template", "metadata", "demo", "--blame"],
                what: "Every value with the layer and file:line (or reactor) that set it.",
            },
            Example {
                args: &["metadata", "db1", "mysql.root_password", "--reveal"],
                what: "Show a secret's value instead of [secret:ID] (needs the key).",
            },
        ],
        ["secret"] | ["secret", "keygen"] => &[
            Example {
                args: &["secret", "keygen"],
                what: "Create the key file (mode 0600) with a key named default.",
            },
            Example {
                args: &["secret", "keygen", "db"],
                what: "Add a key named db, for secrets only the database team may read.",
            },
        ],
        ["secret", "encrypt"] => &[Example {
            args: &["secret", "encrypt", "--key", "db", "-"],
            what: "Encrypt what you type on stdin with key db; paste the output into TOML as \
                   \"!decrypt:cinch:v1:db:...\".",
        }],
        ["secret", "decrypt"] => &[Example {
            args: &["secret", "decrypt", "cinch:v1:default:1a2b3c4d:..."],
            what: "Print the value of a ciphertext.",
        }],
        ["secret", "encrypt-file"] => &[Example {
            args: &[
                "secret",
                "encrypt-file",
                "tls.key",
                "bundles/web/files/tls.key.enc",
            ],
            what: "Encrypt a file into the bundle; use it as content = \
                   \"!decrypt_file:tls.key.enc\".",
        }],
        ["secret", "password-for"] => &[Example {
            args: &["secret", "password-for", "mysql_root"],
            what: "Print the password that password_for(\"mysql_root\") gives in the repo.",
        }],
        ["secret", "rotate"] => &[Example {
            args: &["secret", "rotate", "default", "new2026"],
            what: "Re-encrypt every value and file of key default with key new2026, in place.",
        }],
        ["repo"] | ["repo", "create"] => &[Example {
            args: &["repo", "create", "myrepo"],
            what: "Write a commented working repo (the same as repo-template/ in cinch's source) \
                   into the new directory myrepo; then cd myrepo && cinch test.",
        }],
        ["completions"] => &[Example {
            args: &["completions", "bash"],
            what: "Print bash completions; save them as \
                   ~/.local/share/bash-completion/completions/cinch.",
        }],
        _ => &[],
    }
}

/// Writes one man page per visible (sub)command of `cmd` into `dir`.
pub fn write_pages(cmd: Command, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    write_tree(&cmd, &mut Vec::new(), dir)
}

fn write_tree(cmd: &Command, path: &mut Vec<String>, dir: &Path) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        path.push(sub.get_name().to_string());
        write_tree(sub, path, dir)?;
        path.pop();
    }
    let words: Vec<&str> = path.iter().map(String::as_str).collect();
    let man = clap_mangen::Man::new(cmd.clone());
    let file = dir.join(man.get_filename());
    let page = render(man, &words)?;
    std::fs::write(&file, page).map_err(|e| Error::io(format!("writing {}", file.display()), e))
}

/// clap_mangen's page with our sections spliced in before VERSION (the conventional order).
fn render(man: clap_mangen::Man, path: &[&str]) -> Result<String> {
    let mut out = Vec::new();
    man.render(&mut out)
        .map_err(|e| Error::io("rendering a man page", e))?;
    let page = String::from_utf8_lossy(&out).into_owned();
    let extra = extra_sections(path);
    Ok(match page.find("\n.SH VERSION\n") {
        Some(at) => format!("{}\n{}{}", &page[..at], extra, &page[at + 1..]),
        None => format!("{page}{extra}"),
    })
}

/// EXIT STATUS, ENVIRONMENT and EXAMPLES as roff, without the preamble that defines `\*(Aq`
/// for apostrophes (the page already starts with it).
fn extra_sections(path: &[&str]) -> String {
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, what) in exit_status(path) {
        roff.control("TP", []);
        roff.text([bold(*code)]);
        roff.text([roman(*what)]);
    }
    roff.control("SH", ["ENVIRONMENT"]);
    for var in ENVIRONMENT {
        roff.control("TP", []);
        roff.text([bold(var.name)]);
        roff.text([roman(var.what)]);
    }
    roff.control("SH", ["EXAMPLES"]);
    for ex in examples(path) {
        roff.control("TP", []);
        roff.text([bold(command_line(ex.args))]);
        roff.text([roman(ex.what)]);
    }
    let text = roff.render();
    match text.find(".SH") {
        Some(start) => text[start..].to_string(),
        None => text,
    }
}

/// How an example is typed at a shell: `cinch` and its arguments, each quoted as needed.
pub fn command_line(args: &[&str]) -> String {
    let mut line = String::from("cinch");
    for a in args {
        line.push(' ');
        line.push_str(&crate::shell::quote(a));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Variables read only by cinch's own tests, not by the binary.
    // PATH: read by a unit test that puts a counting `head` first on it.
    const TEST_ONLY: &[&str] = &["CINCH_BLESS", "CINCH_UPDATE_MAN", "PATH"];

    fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                out.push((path.display().to_string(), text));
            }
        }
    }

    #[test]
    fn every_env_var_the_code_reads_is_in_the_man_pages() {
        let mut files = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        // std's env::var and env::var_os with a literal name, clap's env attribute, and
        // constants named …_ENV (the hooks' clock variable).
        let read = regex::Regex::new(
            r#"env::var(?:_os)?\(\s*"([A-Z_][A-Z0-9_]*)"|\benv = "([A-Z_][A-Z0-9_]*)"|_ENV: &str = "([A-Z_][A-Z0-9_]*)""#,
        )
        .expect("regex");
        let documented: Vec<&str> = ENVIRONMENT
            .iter()
            .flat_map(|v| v.name.split(", "))
            .collect();
        let mut found = 0;
        for (file, text) in &files {
            for caps in read.captures_iter(text) {
                let Some(name) = caps.iter().skip(1).flatten().next() else {
                    continue;
                };
                let name = name.as_str();
                found += 1;
                if TEST_ONLY.contains(&name) {
                    continue;
                }
                assert!(
                    documented.contains(&name),
                    "{file} reads ${name}, which ENVIRONMENT in src/man.rs does not document"
                );
            }
        }
        assert!(
            found >= 6,
            "the scan found only {found} variables: is the regex stale?"
        );
    }

    #[test]
    fn examples_are_shown_quoted_as_a_shell_needs() {
        assert_eq!(
            command_line(&["apply", "webservers,!web3", "-c", "it's"]),
            "cinch apply 'webservers,!web3' -c 'it'\\''s'"
        );
    }

    #[test]
    fn extra_sections_go_before_version() {
        let mut cmd = <crate::cli::Cli as clap::CommandFactory>::command();
        cmd.build();
        let page = render(clap_mangen::Man::new(cmd), &[]).expect("render");
        let exit = page.find(".SH \"EXIT STATUS\"").expect("exit status");
        let env = page.find(".SH ENVIRONMENT").expect("environment");
        let examples = page.find(".SH EXAMPLES").expect("examples");
        let version = page.find(".SH VERSION").expect("version");
        assert!(exit < env && env < examples && examples < version, "{page}");
        assert_eq!(page.matches(".ds Aq").count(), 2, "one preamble:\n{page}");
    }
}
