#!/usr/bin/env python3
"""cinch side by side with BundleWrap, Ansible and pyinfra, on one machine.

Usage: bench/run.sh [--nodes N] [--files M] [--runs R] [--latency MS] [--tools cinch,bw,ansible,pyinfra]
                    [--scenarios files,run,test,latency] [--test-nodes K] [--smoke] [--output FILE]

A private sshd on 127.0.0.1 plays N nodes (aliases node1..nodeN in a generated ssh_config); node K of
tool T manages /tmp/cinch-bench/T/nodeK/. Every tool gets the same scenario, every timed run is
checked (sha256 and mode of every file it should have written), and medians go to bench/RESULTS.md.
See bench/README.md for what is measured and how each peer is configured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TARGET_BASE = Path("/tmp/cinch-bench")
ALL_TOOLS = ["cinch", "bw", "ansible", "pyinfra"]
ALL_SCENARIOS = ["files", "run", "test", "latency"]
PEER_NAMES = {"cinch": "cinch", "bw": "BundleWrap", "ansible": "Ansible", "pyinfra": "pyinfra"}
# One timed invocation may not take longer than this: a hung tool must not hang the benchmark.
RUN_TIMEOUT = 1800


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(argv, **kw) -> subprocess.CompletedProcess:
    """Runs a setup command and fails loudly; timed runs use `timed` instead."""
    res = subprocess.run(argv, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        raise SystemExit(f"bench: {' '.join(map(str, argv))} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    return res


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"bench: nothing listens on 127.0.0.1:{port} after {seconds} s")


# ---------------------------------------------------------------------------------------------
# The scenario: what every tool must produce
# ---------------------------------------------------------------------------------------------

def file_content(node: str, i: int, variant: int = 0) -> str:
    """A few hundred bytes, deterministic per (node, file, variant), identical for every tool."""
    seed = hashlib.sha256(f"{node}/{i}/{variant}".encode()).hexdigest()
    lines = [f"# managed by the cinch benchmark", f"node = {node}", f"file = {i}"]
    for k in range(4):
        lines.append(f"key{k} = " + hashlib.sha256(f"{seed}/{k}".encode()).hexdigest())
    return "\n".join(lines) + "\n"


@dataclass
class Scenario:
    nodes: list[str]
    files: int

    def node_dir(self, tool: str, node: str) -> Path:
        return TARGET_BASE / tool / node

    def file_path(self, tool: str, node: str, i: int) -> Path:
        return self.node_dir(tool, node) / f"f{i:04d}.conf"

    def expected(self, tool: str, node: str):
        """(path, content) of every file node `node` of `tool` must have."""
        return [(self.file_path(tool, node, i), file_content(node, i)) for i in range(1, self.files + 1)]

    def drift(self, tool: str) -> int:
        """Changes 10 % of the files on every node (every tenth, at least one), as drift would."""
        changed = 0
        for node in self.nodes:
            for i in range(1, self.files + 1):
                if i % 10 == 1:
                    self.file_path(tool, node, i).write_text(file_content(node, i, variant=1))
                    changed += 1
        return changed

    def clean(self, tool: str) -> None:
        shutil.rmtree(TARGET_BASE / tool, ignore_errors=True)

    def verify(self, tool: str) -> list[str]:
        """Every expected file with the expected sha256 and mode, the directory with 0755,
        and nothing else in it. Returns the problems (empty = correct)."""
        problems = []
        for node in self.nodes:
            d = self.node_dir(tool, node)
            if not d.is_dir():
                problems.append(f"{d}: missing directory")
                continue
            if (d.stat().st_mode & 0o7777) != 0o755:
                problems.append(f"{d}: mode {oct(d.stat().st_mode & 0o7777)}, expected 0o755")
            want = self.expected(tool, node)
            names = {p.name for p, _ in want}
            extra = sorted(p.name for p in d.iterdir() if p.name not in names)
            if extra:
                problems.append(f"{d}: unexpected entries {extra[:5]}")
            for path, content in want:
                try:
                    data = path.read_bytes()
                except OSError as e:
                    problems.append(f"{path}: {e.strerror}")
                    continue
                if hashlib.sha256(data).hexdigest() != hashlib.sha256(content.encode()).hexdigest():
                    problems.append(f"{path}: sha256 differs from the expected content")
                mode = path.stat().st_mode & 0o7777
                if mode != 0o644:
                    problems.append(f"{path}: mode {oct(mode)}, expected 0o644")
        return problems


# ---------------------------------------------------------------------------------------------
# The private sshd (and the latency proxy in front of it)
# ---------------------------------------------------------------------------------------------

class Sshd:
    """/usr/sbin/sshd on 127.0.0.1:free port with its own host key, client key and authorized_keys.

    Sessions log in as the current user (root here), but sshd sets HOME to an empty directory
    (server-side SetEnv): root's real ~/.bashrc runs `pyenv init`, which bash sources even for
    `bash -c` under sshd and which costs 0.1-1 s per remote command. The working directory is
    still the real home (sshd chdirs to the passwd entry), where BundleWrap puts its uploads.
    """

    def __init__(self, work: Path):
        self.dir = work / "sshd"
        shutil.rmtree(self.dir, ignore_errors=True)
        (self.dir / "home").mkdir(parents=True)
        self.user = sh(["id", "-un"]).stdout.strip()
        for key in ("host_key", "client_key"):
            sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cinch-bench", "-f", str(self.dir / key)])
        shutil.copy(self.dir / "client_key.pub", self.dir / "authorized_keys")
        self.host_key = " ".join((self.dir / "host_key.pub").read_text().split()[:2])
        self.log_path = self.dir / "sshd.log"
        os.makedirs("/run/sshd", exist_ok=True)
        for _attempt in range(8):
            self.port = free_port()
            (self.dir / "sshd_config").write_text(
                f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.dir}/host_key\n"
                f"AuthorizedKeysFile {self.dir}/authorized_keys\nStrictModes no\nUsePAM no\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nMaxSessions 50\nMaxStartups 100:30:200\n"
                f"PidFile none\nSetEnv HOME={self.dir}/home\n"
                # VERBOSE logs one "Starting session" line per remote command: the neutral
                # count of remote commands for every tool.
                "LogLevel VERBOSE\nSubsystem sftp internal-sftp\n"
            )
            self.log_file = open(self.log_path, "w")
            self.proc = subprocess.Popen(
                ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.dir / "sshd_config")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log_file,
            )
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.proc.poll() is None:
                if "Server listening on" in self.log_path.read_text():
                    return
                time.sleep(0.02)
            self.proc.kill()
            self.proc.wait()
            if "Address already in use" not in self.log_path.read_text():
                raise SystemExit(f"bench: sshd did not start:\n{self.log_path.read_text()}")
        raise SystemExit("bench: sshd found no free port in 8 attempts")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def log_offset(self) -> int:
        return self.log_path.stat().st_size

    def sessions_since(self, offset: int) -> tuple[int, int]:
        """(sessions, connections) sshd started since `offset` of its log."""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        return text.count("Starting session:"), text.count("Accepted publickey")


@dataclass
class Net:
    """How the tools reach the nodes: straight to sshd, or through the latency proxy."""
    name: str
    port: int
    dir: Path
    nodes: list[str]
    sshd: Sshd
    rtt_ms: int = 0

    def __post_init__(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {self.sshd.host_key}\n")
        self.ssh_config = self.dir / "ssh_config"
        self.ssh_config.write_text(
            f"Host {' '.join(self.nodes)}\n  HostName 127.0.0.1\n  Port {self.port}\n"
            f"  User {self.sshd.user}\n  IdentityFile {self.sshd.dir}/client_key\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n  BatchMode yes\n  LogLevel ERROR\n"
        )


class LatencyProxy:
    def __init__(self, target_port: int, rtt_ms: int, work: Path):
        self.port = free_port()
        self.log = open(work / "latency-proxy.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "latency-proxy.py"), str(self.port), f"127.0.0.1:{target_port}",
             str(rtt_ms), "--seconds", "7200"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def become_reaper() -> None:
    """Adopt and reap orphaned ssh processes, as a normal init does.

    ssh ControlMaster processes daemonize (`ssh -M -f`), so when they exit they are reaped by
    PID 1. In this sandbox PID 1 never reaps, the masters stay zombies, and a tool that waits
    for its master to disappear (`kill(pid, 0)` succeeds on a zombie) waits in vain: cinch
    then spends its 0.5 s grace period per invocation. Making this driver the child
    subreaper and reaping exited `ssh` orphans gives every tool the behaviour of a real host.
    `--no-reaper` measures the sandbox as it is.
    """
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        log("warning: could not become a child subreaper; orphaned ssh masters stay zombies")
        return
    me = os.getpid()

    def reap(_sig, _frame):
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            comm = stat[stat.find("(") + 1:stat.rfind(")")]
            state, ppid = stat[stat.rfind(")") + 2:].split()[:2]
            # Only ssh: the driver's own children (the timed tools) are waited for by subprocess.
            if state == "Z" and int(ppid) == me and comm == "ssh":
                try:
                    os.waitpid(int(d), os.WNOHANG)
                except ChildProcessError:
                    pass

    signal.signal(signal.SIGCHLD, reap)


# ---------------------------------------------------------------------------------------------
# The tools
# ---------------------------------------------------------------------------------------------

def toml_str(s: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes for this ASCII content.
    return json.dumps(s)


class Tool:
    name = ""

    def __init__(self, ctx: "Ctx"):
        self.ctx = ctx

    def env(self) -> dict:
        return dict(os.environ)

    def setup(self, net: Net, scn: Scenario) -> None:
        """Writes this tool's repo/playbook/deploy for `scn`, reaching nodes through `net`."""

    def apply_cmd(self, net: Net) -> list[str]:
        raise NotImplementedError

    def run_cmd(self, net: Net) -> list[str]:
        raise NotImplementedError

    def before_run(self, net: Net) -> None:
        """Untimed: fresh per-run state (e.g. a new ControlMaster directory)."""

    def after_run(self, net: Net) -> None:
        """Untimed: close what the run left open, so the next run starts cold as well."""

    def version(self) -> str:
        return "?"


class Cinch(Tool):
    name = "cinch"

    def repo(self, net: Net) -> Path:
        return self.ctx.work / "repos" / net.name / "cinch"

    def env(self):
        e = dict(os.environ)
        e["CINCH_IDENTITY"] = "bench"
        e.pop("CINCH_REPO", None)
        return e

    def setup(self, net, scn):
        r = self.repo(net)
        shutil.rmtree(r, ignore_errors=True)
        (r / "bundles").mkdir(parents=True)
        (r / "cinch.toml").write_text(
            f"[ssh]\nconfig_file = {toml_str(str(net.ssh_config))}\n"
            f"known_hosts_file = {toml_str(str(net.known_hosts))}\n"
        )
        (r / "nodes.toml").write_text("".join(f"[nodes.{n}]\nbundles = [\"files_{n}\"]\n\n" for n in scn.nodes))
        for n in scn.nodes:
            b = r / "bundles" / f"files_{n}"
            b.mkdir()
            out = [f"[directories.{toml_str(str(scn.node_dir('cinch', n)))}]\nmode = \"0755\"\nowner = \"root\"\ngroup = \"root\"\n"]
            for path, content in scn.expected("cinch", n):
                out.append(f"[files.{toml_str(str(path))}]\ncontent = {toml_str(content)}\n"
                           "mode = \"0644\"\nowner = \"root\"\ngroup = \"root\"\n")
            (b / "items.toml").write_text("\n".join(out))

    def apply_cmd(self, net):
        return [str(self.ctx.cinch), "-r", str(self.repo(net)), "--json", "apply", "all",
                "-p", str(len(self.ctx.scn.nodes)), "--stats"]

    def run_cmd(self, net):
        return [str(self.ctx.cinch), "-r", str(self.repo(net)), "run", "all",
                "-p", str(len(self.ctx.scn.nodes)), "uname -a"]

    def version(self):
        try:
            v = subprocess.run([str(self.ctx.cinch), "--version"], capture_output=True, text=True).stdout.strip()
        except OSError:
            return "missing"
        rev = self.ctx.args.cinch_rev or subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        return f"{v} (git {rev})"


class ControlMasterTool(Tool):
    """A peer that drives the ssh binary: it gets OpenSSH multiplexing, in a fresh control
    directory per run, and its masters are closed after the run (untimed)."""

    def before_run(self, net):
        self.cm_dir = Path(sh(["mktemp", "-d", "/tmp/cb-cm-XXXXXX"]).stdout.strip())

    def ssh_mux_args(self) -> list[str]:
        # %n (the alias), not %C: every node is an alias of one host and port here, and %C
        # would share ONE master (one key exchange) among all nodes, as no real fleet does.
        return ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.cm_dir}/%n", "-o", "ControlPersist=60"]

    def after_run(self, net):
        for n in self.ctx.scn.nodes:
            subprocess.run(["ssh", "-F", str(net.ssh_config), "-o", f"ControlPath={self.cm_dir}/%n",
                            "-O", "exit", n], capture_output=True)
        shutil.rmtree(self.cm_dir, ignore_errors=True)


class BundleWrap(ControlMasterTool):
    name = "bw"

    def repo(self, net):
        return self.ctx.work / "repos" / net.name / "bw"

    def env(self):
        e = dict(os.environ)
        mux = " ".join(self.ssh_mux_args())
        e.update(BW_SSH_ARGS=f"-F {self.net.ssh_config} {mux}", BW_SCP_ARGS=f"-F {self.net.ssh_config} {mux}",
                 BW_IDENTITY="bench", BW_COLORS="0", BW_TABLE_STYLE="grep")
        e.pop("BW_REPO_PATH", None)
        return e

    def before_run(self, net):
        super().before_run(net)
        self.net = net

    def setup(self, net, scn):
        r = self.repo(net)
        shutil.rmtree(r, ignore_errors=True)
        (r / "bundles").mkdir(parents=True)
        (r / "items").mkdir()
        # Logged in as root already: run commands with `sh -c` rather than the default
        # `sudo -u root sh -c`, as cinch does without `become` (no sudo round trip either way).
        nodes = {n: {"hostname": n, "bundles": [f"files_{n}"], "cmd_wrapper_outer": "sh -c {0}"} for n in scn.nodes}
        (r / "nodes.py").write_text(f"nodes = {nodes!r}\n")
        (r / "groups.py").write_text("groups = {'all': {'member_patterns': [r'.*']}}\n")
        for n in scn.nodes:
            b = r / "bundles" / f"files_{n}"
            b.mkdir()
            dirs = {str(scn.node_dir("bw", n)): {"mode": "0755", "owner": "root", "group": "root"}}
            files = {str(p): {"content": c, "mode": "0644", "owner": "root", "group": "root"}
                     for p, c in scn.expected("bw", n)}
            (b / "items.py").write_text(f"directories = {dirs!r}\n\nfiles = {files!r}\n")

    def apply_cmd(self, net):
        return [str(self.ctx.venv / "bin" / "bw"), "-r", str(self.repo(net)), "apply",
                "-p", str(len(self.ctx.scn.nodes)), "all"]

    def run_cmd(self, net):
        return [str(self.ctx.venv / "bin" / "bw"), "-r", str(self.repo(net)), "run",
                "-p", str(len(self.ctx.scn.nodes)), "all", "uname -a"]

    def version(self):
        return "bundlewrap " + pip_version(self.ctx, "bundlewrap")


class Ansible(ControlMasterTool):
    name = "ansible"

    def dir(self, net):
        return self.ctx.work / "repos" / net.name / "ansible"

    def before_run(self, net):
        super().before_run(net)
        self.net = net

    def env(self):
        e = dict(os.environ)
        e.update(ANSIBLE_CONFIG=str(self.dir(self.net) / "ansible.cfg"),
                 ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.cm_dir),
                 ANSIBLE_LOCAL_TEMP=str(self.ctx.work / "ansible-local-tmp"),
                 ANSIBLE_HOME=str(self.ctx.work / "ansible-home"),
                 ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
        return e

    def setup(self, net, scn):
        d = self.dir(net)
        shutil.rmtree(d, ignore_errors=True)
        (d / "host_vars").mkdir(parents=True)
        n = len(scn.nodes)
        (d / "ansible.cfg").write_text(
            "[defaults]\n"
            f"inventory = {d}/inventory.ini\nforks = {n}\nhost_key_checking = True\n"
            "interpreter_python = /usr/bin/python3\ngathering = explicit\nretry_files_enabled = False\n"
            "\n[ssh_connection]\npipelining = True\n"
            f"ssh_args = -F {net.ssh_config} -o ControlMaster=auto -o ControlPersist=60s\n"
            # A master per node (Ansible's default path hashes host, port and user, which all
            # aliases of the one bench sshd share).
            f"control_path_dir = {d}/cp\ncontrol_path = %(directory)s/%%n\n"
        )
        (d / "inventory.ini").write_text("[bench]\n" + "".join(f"{x}\n" for x in scn.nodes))
        for x in scn.nodes:
            (d / "host_vars" / f"{x}.json").write_text(json.dumps({
                "bench_dir": str(scn.node_dir("ansible", x)),
                "bench_files": [{"path": str(p), "content": c} for p, c in scn.expected("ansible", x)],
            }))
        (d / "site.yml").write_text(
            "- hosts: bench\n  gather_facts: false\n  tasks:\n"
            "    - name: node directory\n"
            "      ansible.builtin.file: {path: \"{{ bench_dir }}\", state: directory, mode: \"0755\", owner: root, group: root}\n"
            "    - name: files\n"
            "      ansible.builtin.copy: {dest: \"{{ item.path }}\", content: \"{{ item.content }}\", mode: \"0644\", owner: root, group: root}\n"
            "      loop: \"{{ bench_files }}\"\n"
            "      loop_control: {label: \"{{ item.path }}\"}\n"
        )

    def apply_cmd(self, net):
        return [str(self.ctx.venv / "bin" / "ansible-playbook"), str(self.dir(net) / "site.yml")]

    def run_cmd(self, net):
        return [str(self.ctx.venv / "bin" / "ansible"), "bench", "-f", str(len(self.ctx.scn.nodes)),
                "-a", "uname -a"]

    def version(self):
        return "ansible-core " + pip_version(self.ctx, "ansible-core")


class Pyinfra(Tool):
    name = "pyinfra"

    def dir(self, net):
        return self.ctx.work / "repos" / net.name / "pyinfra"

    def setup(self, net, scn):
        d = self.dir(net)
        shutil.rmtree(d, ignore_errors=True)
        (d / "spec").mkdir(parents=True)
        hosts = []
        for x in scn.nodes:
            spec = d / "spec" / f"{x}.json"
            spec.write_text(json.dumps({
                "dir": str(scn.node_dir("pyinfra", x)),
                "files": [{"path": str(p), "content": c} for p, c in scn.expected("pyinfra", x)],
            }))
            # pyinfra speaks SSH itself (paramiko): same address, key and pre-trusted host key.
            hosts.append((x, {"ssh_hostname": "127.0.0.1", "ssh_port": net.port, "ssh_user": self.ctx.sshd.user,
                              "ssh_key": str(self.ctx.sshd.dir / "client_key"),
                              "ssh_known_hosts_file": str(net.known_hosts),
                              "ssh_strict_host_key_checking": "yes", "bench_spec": str(spec)}))
        (d / "inventory.py").write_text(f"bench = {hosts!r}\n")
        (d / "deploy.py").write_text(
            "import io, json\n"
            "from pyinfra import host\n"
            "from pyinfra.operations import files\n"
            "with open(host.data.bench_spec) as f:\n"
            "    spec = json.load(f)\n"
            "files.directory(name='node directory', path=spec['dir'], mode='755', user='root', group='root')\n"
            "for f in spec['files']:\n"
            "    files.put(name=f['path'], src=io.StringIO(f['content']), dest=f['path'],\n"
            "              mode='644', user='root', group='root')\n"
        )

    def apply_cmd(self, net):
        d = self.dir(net)
        return [str(self.ctx.venv / "bin" / "pyinfra"), "-y", str(d / "inventory.py"), str(d / "deploy.py")]

    def run_cmd(self, net):
        d = self.dir(net)
        return [str(self.ctx.venv / "bin" / "pyinfra"), "-y", str(d / "inventory.py"), "exec", "--", "uname -a"]

    def version(self):
        return "pyinfra " + pip_version(self.ctx, "pyinfra")


def pip_version(ctx, pkg: str) -> str:
    res = subprocess.run([str(ctx.venv / "bin" / "python"), "-c",
                          f"import importlib.metadata as m; print(m.version({pkg!r}))"], capture_output=True, text=True)
    return res.stdout.strip() or "missing"


TOOL_CLASSES = {"cinch": Cinch, "bw": BundleWrap, "ansible": Ansible, "pyinfra": Pyinfra}


# ---------------------------------------------------------------------------------------------
# Timing and bookkeeping
# ---------------------------------------------------------------------------------------------

@dataclass
class Result:
    scenario: str
    tool: str
    times: list[float] = field(default_factory=list)
    sessions: list[int] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)
    cinch_commands: list[float] = field(default_factory=list)
    error: str | None = None
    capped: bool = False

    def median(self):
        return statistics.median(self.times) if self.times and not self.error else None


class Ctx:
    def __init__(self, args):
        self.args = args
        self.work = Path(args.work_dir).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.venv = self.work / "venv"
        self.cinch: Path | None = None
        self.sshd: Sshd | None = None
        self.results: dict[tuple[str, str], Result] = {}
        self.scn: Scenario | None = None
        self.logs = self.work / "logs"
        shutil.rmtree(self.logs, ignore_errors=True)
        self.logs.mkdir()
        self.counter = 0
        self.load_start = loadavg()
        # Whether a tool's last timed run left its nodes verified correct (no warm-up needed).
        self.converged: dict[str, bool] = {}

    def result(self, scenario, tool) -> Result:
        return self.results.setdefault((scenario, tool), Result(scenario, tool))

    def should_run(self, scenario: str, tool: str) -> bool:
        """False once the tool failed this scenario, or its first run was slower than --slow:
        repeating it would not change the picture but would multiply the benchmark's
        duration (Ansible at the defaults)."""
        res = self.result(scenario, tool)
        if res.error:
            return False
        if res.times and res.times[0] > self.args.slow:
            res.capped = True
            return False
        return True

    def timed(self, scenario: str, tool: Tool, net: Net, argv: list[str], check=None) -> None:
        """One timed invocation; a failure marks the (scenario, tool) result as failed."""
        if not self.should_run(scenario, tool.name):
            return
        res = self.result(scenario, tool.name)
        self.counter += 1
        logf = self.logs / f"{self.counter:03d}-{scenario.replace(' ', '_').replace('/', '_')}-{tool.name}.log"
        tool.before_run(net)
        env = tool.env()
        offset = self.sshd.log_offset()
        t0 = time.perf_counter()
        stdout = b""
        try:
            code, stdout, stderr = run_group(argv, env, self.work, RUN_TIMEOUT)
            elapsed = time.perf_counter() - t0
            out = stdout.decode(errors="replace") + stderr.decode(errors="replace")
        finally:
            tool.after_run(net)
        time.sleep(0.05)  # let sshd flush its log lines of the last sessions
        sessions, conns = self.sshd.sessions_since(offset)
        logf.write_text(f"$ {' '.join(argv)}\n# exit {code}, {elapsed:.3f} s\n{out}")
        problems = []
        if code != 0:
            first = next((l.strip() for l in out.splitlines() if l.strip()), "")
            problems.append(f"exit code {code}" + (f" ({first[:120]})" if first else ""))
        if check:
            problems += check(out)
        if problems:
            self.converged[tool.name] = False
            res.error = f"{'; '.join(problems[:3])} (log: {logf.relative_to(self.work)})"
            log(f"  {tool.name:8} {scenario}: FAILED {res.error}")
            return
        res.times.append(elapsed)
        res.sessions.append(sessions)
        res.connections.append(conns)
        self.converged[tool.name] = True
        if tool.name == "cinch":
            cmds = cinch_commands(stdout.decode(errors="replace"))
            if cmds is not None:
                res.cinch_commands.append(cmds)
        log(f"  {tool.name:8} {scenario}: {elapsed:7.3f} s  ({sessions} ssh sessions)")


def run_group(argv, env, cwd: Path, timeout: float):
    """Runs argv in its own process group; on timeout or interrupt the whole group is killed,
    so no tool's workers outlive the benchmark. Returns (exit code, stdout, stderr)."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, cwd=str(cwd), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        return "timeout", out, err
    except BaseException:
        os.killpg(proc.pid, 9)
        proc.wait()
        raise


def cinch_commands(stdout: str):
    """Mean remote commands per node from `cinch --json apply --stats`'s summary line."""
    for line in stdout.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and ev.get("event") == "summary" and ev.get("nodes"):
            return sum(n.get("commands", 0) for n in ev["nodes"]) / len(ev["nodes"])
    return None


# ---------------------------------------------------------------------------------------------
# Setup: cinch binary, peers' venv
# ---------------------------------------------------------------------------------------------

def build_cinch(args) -> Path:
    if args.cinch:
        return Path(args.cinch).resolve()
    profile = "debug" if args.smoke and not args.release else "release"
    log(f"building cinch ({profile})")
    cmd = ["cargo", "build", "--quiet", "--bin", "cinch"] + (["--release"] if profile == "release" else [])
    sh(cmd, cwd=str(ROOT))
    return ROOT / "target" / profile / "cinch"


def ensure_venv(ctx: Ctx) -> None:
    """A venv with the pinned peers; rebuilt only when requirements.txt changes."""
    req = BENCH / "requirements.txt"
    stamp = ctx.venv / "requirements.sha256"
    want = hashlib.sha256(req.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == want:
        return
    log("creating the peers' venv (pip install -r bench/requirements.txt)")
    shutil.rmtree(ctx.venv, ignore_errors=True)
    sh([sys.executable, "-m", "venv", str(ctx.venv)])
    sh([str(ctx.venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "-r", str(req)])
    stamp.write_text(want)


# ---------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------

def uname_check(n: int):
    def check(out: str):
        hits = sum(1 for line in out.splitlines() if "Linux" in line)
        return [] if hits >= n else [f"expected uname output from {n} nodes, saw {hits} lines"]
    return check


def files_check(scn: Scenario, tool: str):
    def check(_out: str):
        problems = scn.verify(tool)
        if problems:
            return [f"{len(problems)} wrong files, e.g. {problems[0]}"]
        return []
    return check


def bench_files(ctx: Ctx, tools: list[Tool], net: Net, label_prefix: str = "", steady_only=False) -> None:
    scn, runs = ctx.scn, ctx.args.runs
    for t in tools:
        t.setup(net, scn)
    if not steady_only:
        label = f"{label_prefix}files: first apply"
        log(label)
        for _ in range(runs):
            for t in tools:
                if not ctx.should_run(label, t.name):
                    continue
                scn.clean(t.name)
                ctx.timed(label, t, net, t.apply_cmd(net), files_check(scn, t.name))
    label = f"{label_prefix}files: steady state"
    log(label)
    for t in tools:
        if ctx.converged.get(t.name):
            continue
        # Untimed: start from the converged state (the previous run did not verify it); clean
        # first so that files of an earlier, larger run cannot linger.
        scn.clean(t.name)
        t.before_run(net)
        try:
            run_group(t.apply_cmd(net), t.env(), ctx.work, RUN_TIMEOUT)
        finally:
            t.after_run(net)
    for _ in range(runs):
        for t in tools:
            ctx.timed(label, t, net, t.apply_cmd(net), files_check(scn, t.name))
    if steady_only:
        return
    label = f"{label_prefix}files: 10% changed"
    log(label)
    for _ in range(runs):
        for t in tools:
            if not ctx.should_run(label, t.name):
                continue
            scn.drift(t.name)
            ctx.timed(label, t, net, t.apply_cmd(net), files_check(scn, t.name))


def bench_run(ctx: Ctx, tools: list[Tool], net: Net, label_prefix: str = "") -> None:
    label = f"{label_prefix}run: uname -a"
    log(label)
    for _ in range(ctx.args.runs):
        for t in tools:
            ctx.timed(label, t, net, t.run_cmd(net), uname_check(len(ctx.scn.nodes)))


# --- test: a synthetic repo, in cinch's format and in BundleWrap's ---------------------------

def gen_test_repo(ctx: Ctx, nodes: int) -> tuple[Path, Path]:
    """The cinch repo from bench/gen-repo (the repo engineer's generator) when present, else a
    built-in one of a similar shape; then the same repo translated into BundleWrap's format."""
    base = ctx.work / "repos" / "test"
    shutil.rmtree(base, ignore_errors=True)
    c, b = base / "cinch", base / "bw"
    gen = BENCH / "gen-repo"
    if gen.exists():
        sh([sys.executable, str(gen), str(c), "--nodes", str(nodes)])
    else:
        builtin_test_repo(c, nodes)
    cinch_to_bw(c, b)
    return c, b


def builtin_test_repo(c: Path, nodes: int) -> None:
    """`nodes` nodes; 10 groups by the node number's last digit (member_patterns), each
    contributing 2 of 10 bundles and metadata; 2 explicit groups; 20 items per bundle."""
    (c / "bundles").mkdir(parents=True)
    out = []
    for i in range(1, nodes + 1):
        out.append(f"[nodes.n{i:04d}]\nhostname = \"n{i:04d}.example.com\"\ngroups = [\"dc_{'a' if i % 2 else 'b'}\"]\n"
                   f"[nodes.n{i:04d}.metadata]\nid = {i}\nrack = \"r{i % 40}\"\n")
    (c / "nodes.toml").write_text("\n".join(out))
    out = []
    for k in range(10):
        pattern = toml_str("^n\\d*" + str(k) + "$")
        out.append(f"[groups.role{k}]\nbundles = [\"b{k}\", \"b{(k + 1) % 10}\"]\n"
                   f"member_patterns = [{pattern}]\n"
                   f"[groups.role{k}.metadata]\nrole = {{ index = {k}, name = \"role{k}\" }}\n")
    out += [f"[groups.{dc}]\n[groups.{dc}.metadata]\ndc = \"{dc}\"\n" for dc in ("dc_a", "dc_b")]
    (c / "groups.toml").write_text("\n".join(out))
    for k in range(10):
        root = f"/srv/b{k}"
        d = c / "bundles" / f"b{k}"
        (d / "files").mkdir(parents=True)
        (d / "files" / "node.conf.j2").write_text("# {{ node.name }}\nhost = {{ node.hostname }}\n")
        items = [f"[directories.\"{root}\"]\nmode = \"0755\"\n"]
        for j in range(14):
            content = f"bundle b{k} file {j}\n" + hashlib.sha256(f"{k}/{j}".encode()).hexdigest() * 4 + "\n"
            items.append(f"[files.\"{root}/f{j:02d}.conf\"]\ncontent = {toml_str(content)}\nmode = \"0644\"\n"
                         f"triggers = [\"action:reload_b{k}\"]\n")
        items.append(f"[files.\"{root}/node.conf\"]\nsource = \"node.conf.j2\"\ncontent_type = \"jinja2\"\n")
        items += [f"[symlinks.\"{root}/link{j}\"]\ntarget = \"{root}/f{j:02d}.conf\"\n" for j in range(3)]
        items.append(f"[actions.reload_b{k}]\ncommand = \"true\"\ntriggered = true\n")
        (d / "items.toml").write_text("\n".join(items))


def cinch_to_bw(c: Path, b: Path) -> None:
    """Translates a cinch repo (the subset both tools share: nodes, groups, bundles with
    items.toml, metadata.toml and files/) into the equivalent BundleWrap repo.

    Templates see `metadata` in cinch; BundleWrap's equivalent of `metadata.x.y` is
    `node.metadata.get('x/y')`, which is what the translation writes.
    """
    import tomllib

    def load(path: Path) -> dict:
        return tomllib.loads(path.read_text()) if path.exists() else {}

    (b / "bundles").mkdir(parents=True)
    (b / "items").mkdir()
    nodes = dict(load(c / "nodes.toml").get("nodes", {}))
    for extra in sorted((c / "nodes").glob("*.toml")) if (c / "nodes").is_dir() else []:
        nodes.update(load(extra).get("nodes", {}))
    groups = dict(load(c / "groups.toml").get("groups", {}))
    for extra in sorted((c / "groups").glob("*.toml")) if (c / "groups").is_dir() else []:
        groups.update(load(extra).get("groups", {}))
    (b / "nodes.py").write_text(f"nodes = {nodes!r}\n")
    (b / "groups.py").write_text(f"groups = {groups!r}\n")
    for bundle in sorted(p for p in (c / "bundles").iterdir() if p.is_dir()):
        dst = b / "bundles" / bundle.name
        dst.mkdir()
        items = load(bundle / "items.toml")
        (dst / "items.py").write_text("".join(f"{kind} = {table!r}\n" for kind, table in items.items()))
        meta = load(bundle / "metadata.toml")
        if meta:
            (dst / "metadata.py").write_text(f"defaults = {meta!r}\n")
        if (bundle / "files").is_dir():
            shutil.copytree(bundle / "files", dst / "files")
            for f in (dst / "files").rglob("*"):
                if f.is_file():
                    f.write_text(re.sub(r"(?<![\w.])metadata\.([\w.]+)",
                                        lambda m: "node.metadata.get(%r)" % m.group(1).replace(".", "/"),
                                        f.read_text()))


class LocalTool(Tool):
    """A tool invocation that contacts no node (`test`)."""

    def __init__(self, ctx, name):
        super().__init__(ctx)
        self.name = name

    def env(self):
        return {**os.environ, "BW_COLORS": "0", "CINCH_IDENTITY": "bench"}


def bench_test(ctx: Ctx, tool_names: list[str]) -> None:
    nodes = ctx.args.test_nodes
    c, b = gen_test_repo(ctx, nodes)
    label = f"test: {nodes}-node repo"
    log(label)
    cmds = {}
    if "cinch" in tool_names:
        cmds["cinch"] = [str(ctx.cinch), "-r", str(c), "test"]
    if "bw" in tool_names:
        cmds["bw"] = [str(ctx.venv / "bin" / "bw"), "-r", str(b), "test"]
    dummy_net = ctx.nets["loopback"]
    for _ in range(ctx.args.runs):
        for name, argv in cmds.items():
            ctx.timed(label, LocalTool(ctx, name), dummy_net, argv)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def fmt_s(x):
    return "—" if x is None else (f"{x:.3f} s" if x < 10 else f"{x:.1f} s")


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine_info() -> list[str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    osname = "?"
    try:
        osname = re.search(r'PRETTY_NAME="([^"]*)"', Path("/etc/os-release").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    ssh_v = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    return [f"CPU: {cpu}, {os.cpu_count()} cores; memory {mem}",
            f"OS: {osname}, kernel {platform.release()}",
            f"Python {platform.python_version()}; {ssh_v}"]


def write_report(ctx: Ctx, tools: list[Tool], path: Path, started: dt.datetime, notes: list[str]) -> None:
    a = ctx.args
    names = [t.name for t in tools]
    peers = [n for n in names if n != "cinch"]
    scenarios = []
    for (scn, _tool) in ctx.results:
        if scn not in scenarios:
            scenarios.append(scn)
    L = []
    L.append("# Benchmark results: cinch vs BundleWrap, Ansible, pyinfra\n")
    L.append(f"Generated by `bench/run.sh {shlex.join(sys.argv[1:])}` on {started.strftime('%Y-%m-%d %H:%M %Z').strip()} "
             f"(took {(dt.datetime.now(dt.timezone.utc) - started).total_seconds() / 60:.1f} min). "
             f"{len(ctx.scn.nodes)} nodes, {ctx.scn.files} files per node, {a.runs} runs per cell; "
             "each cell is the median wall time of one whole invocation (process start to exit). "
             "How to read and reproduce it, and where the time goes: bench/README.md.\n")
    L.append("## Medians\n")
    head = ["scenario"] + [PEER_NAMES[n] for n in names]
    if "cinch" in names:
        head += [f"{PEER_NAMES[p]} / cinch" for p in peers]
    L.append("| " + " | ".join(head) + " |")
    L.append("|" + "---|" * len(head))
    for scn in scenarios:
        row = [scn]
        for n in names:
            r = ctx.results.get((scn, n))
            if r is None:
                row.append("n/a")
            elif r.error:
                row.append("FAILED¹")
            else:
                row.append(fmt_s(r.median()) + (" ²" if r.capped else ""))
        if "cinch" in names:
            c = ctx.results.get((scn, "cinch"))
            for p in peers:
                r = ctx.results.get((scn, p))
                if c and r and c.median() and r.median():
                    row.append(f"{r.median() / c.median():.1f}×")
                else:
                    row.append("—")
        L.append("| " + " | ".join(row) + " |")
    L.append("\nRatios are peer median / cinch median: above 1× means cinch is faster.")
    if any(r.capped for r in ctx.results.values()):
        L.append(f"² one run only: the first took longer than {a.slow:g} s (`--slow`), so it was not repeated.")
    L.append("")

    L.append("## Remote commands per node\n")
    L.append("`cinch --stats` is cinch's own count (from the `--json` summary). The other columns are "
             "ssh sessions per node counted in the private sshd's log (`LogLevel VERBOSE`, one "
             "\"Starting session\" line per remote command, scp/sftp transfer or exec), the same "
             "yardstick for every tool; \"conn\" is TCP connections per node.\n")
    head = ["scenario"] + (["cinch --stats"] if "cinch" in names else []) + \
        [f"{PEER_NAMES[n]} sessions (conn)" for n in names]
    L.append("| " + " | ".join(head) + " |")
    L.append("|" + "---|" * len(head))
    nn = len(ctx.scn.nodes)
    for scn in scenarios:
        row = [scn]
        per = nn if not scn.startswith("test") else 1
        if "cinch" in names:
            c = ctx.results.get((scn, "cinch"))
            row.append(f"{statistics.median(c.cinch_commands):g}" if c and c.cinch_commands else "—")
        for n in names:
            r = ctx.results.get((scn, n))
            if r and r.sessions and not r.error and not scn.startswith("test"):
                row.append(f"{statistics.median(r.sessions) / per:g} ({statistics.median(r.connections) / per:g})")
            else:
                row.append("—")
        L.append("| " + " | ".join(row) + " |")

    failed = [r for r in ctx.results.values() if r.error]
    if failed:
        L.append("\n¹ Failures (the tool exited non-zero, or produced wrong files; logs under bench/.work/):\n")
        for r in failed:
            L.append(f"- {r.scenario}, {PEER_NAMES[r.tool]}: {r.error}")

    L.append("\n## All runs (seconds)\n")
    L.append("| scenario | tool | runs |")
    L.append("|---|---|---|")
    for (scn, tool), r in ctx.results.items():
        L.append(f"| {scn} | {PEER_NAMES[tool]} | {', '.join(f'{t:.3f}' for t in r.times) or '—'} |")

    if notes:
        L.append("\n## Notes\n")
        L += [f"- {n}" for n in notes]

    L.append("\n## Setup\n")
    L += [f"- {x}" for x in machine_info()]
    L.append("- Versions: " + "; ".join(t.version() for t in tools))
    L.append(f"- Load average (1/5/15 min) at start: {ctx.load_start}; at end: {loadavg()}. The machine is "
             "shared: a high load means other work competed for the same 2 cores during the runs.")
    if not a.no_reaper:
        L.append("- The driver reaps orphaned ssh ControlMaster processes as a normal init would "
                 "(this sandbox's PID 1 does not; see `become_reaper` in bench.py).")
    L.append(f"- Date: {started.strftime('%Y-%m-%d %H:%M UTC')}")
    L.append("- Nodes: one private sshd on 127.0.0.1 plays every node (ssh_config aliases node1..nodeN); "
             "tool T's node K manages /tmp/cinch-bench/T/nodeK/. Nodes and controller share the same 2 cores.")
    path.write_text("\n".join(L) + "\n")
    log(f"wrote {path}")


# ---------------------------------------------------------------------------------------------

def interrupted(_sig, _frame):
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency", type=int, default=25, help="round-trip ms added by the proxy (0: skip)")
    ap.add_argument("--tools", default=",".join(ALL_TOOLS))
    ap.add_argument("--scenarios", default=",".join(ALL_SCENARIOS))
    ap.add_argument("--test-nodes", type=int, default=1000)
    ap.add_argument("--slow", type=float, default=30,
                    help="a tool whose first run of a scenario takes longer than this many seconds runs it only once")
    ap.add_argument("--smoke", action="store_true", help="N=2, M=5, R=1, cinch only, no PyPI")
    ap.add_argument("--cinch", help="cinch binary to use (default: cargo build --release)")
    ap.add_argument("--cinch-rev", help="with --cinch: the commit that binary was built from, for the report")
    ap.add_argument("--release", action="store_true", help="with --smoke: still use a release build")
    ap.add_argument("--output", help="report path (default bench/RESULTS.md; smoke: .work/RESULTS-smoke.md)")
    ap.add_argument("--work-dir", default=str(BENCH / ".work"))
    ap.add_argument("--no-reaper", action="store_true",
                    help="do not reap orphaned ssh masters (see become_reaper in bench.py)")
    args = ap.parse_args()
    if args.smoke:
        args.nodes, args.files, args.runs, args.tools = 2, 5, 1, "cinch"
        args.test_nodes = min(args.test_nodes, 50)
    tool_names = [t for t in args.tools.split(",") if t]
    scen_names = [s for s in args.scenarios.split(",") if s]
    for t in tool_names:
        if t not in ALL_TOOLS:
            ap.error(f"unknown tool {t!r}; choose from {','.join(ALL_TOOLS)}")
    for s in scen_names:
        if s not in ALL_SCENARIOS:
            ap.error(f"unknown scenario {s!r}; choose from {','.join(ALL_SCENARIOS)}")
    if args.nodes < 1 or args.files < 1 or args.runs < 1:
        ap.error("--nodes, --files and --runs must be at least 1")
    out = Path(args.output) if args.output else (
        Path(args.work_dir) / "RESULTS-smoke.md" if args.smoke else BENCH / "RESULTS.md")

    started = dt.datetime.now(dt.timezone.utc)
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop sshd, the proxy and the tools.
    signal.signal(signal.SIGTERM, interrupted)
    if not args.no_reaper:
        become_reaper()
    ctx = Ctx(args)
    ctx.scn = Scenario([f"node{i}" for i in range(1, args.nodes + 1)], args.files)
    if "cinch" in tool_names:
        ctx.cinch = build_cinch(args)
    if any(t != "cinch" for t in tool_names):
        ensure_venv(ctx)
    tools = [TOOL_CLASSES[t](ctx) for t in tool_names]
    notes = []
    proxy = None
    ctx.sshd = Sshd(ctx.work)
    try:
        ctx.nets = {"loopback": Net("loopback", ctx.sshd.port, ctx.work / "net-loopback", ctx.scn.nodes, ctx.sshd)}
        log(f"sshd on 127.0.0.1:{ctx.sshd.port}; {args.nodes} nodes x {args.files} files, {args.runs} runs; "
            f"tools: {', '.join(tool_names)}")
        if "files" in scen_names:
            bench_files(ctx, tools, ctx.nets["loopback"])
        if "run" in scen_names:
            bench_run(ctx, tools, ctx.nets["loopback"])
        if "test" in scen_names and ({"cinch", "bw"} & set(tool_names)):
            bench_test(ctx, tool_names)
        if "latency" in scen_names and args.latency > 0:
            proxy = LatencyProxy(ctx.sshd.port, args.latency, ctx.work)
            net = Net("latency", proxy.port, ctx.work / "net-latency", ctx.scn.nodes, ctx.sshd, args.latency)
            ctx.nets["latency"] = net
            prefix = f"+{args.latency} ms RTT: "
            bench_files(ctx, tools, net, prefix, steady_only=True)
            bench_run(ctx, tools, net, prefix)
            notes.append(f"\"+{args.latency} ms RTT\" rows: this kernel has no netem qdisc, so `tc netem` could not "
                         f"be used; every ssh connection went through bench/latency-proxy.py instead, a TCP proxy "
                         f"on 127.0.0.1 that delays each chunk by {args.latency / 2:g} ms in each direction "
                         f"(one request/response round trip costs ~{args.latency} ms more than loopback). "
                         "It delays, it does not drop or reorder, and it adds no bandwidth limit.")
    finally:
        if proxy:
            proxy.stop()
        ctx.sshd.stop()
    if "test" in scen_names:
        source = "bench/gen-repo" if (BENCH / "gen-repo").exists() else "bench.py `builtin_test_repo`"
        notes.append(f"test: a synthetic {args.test_nodes}-node repo from {source}, translated into "
                     "BundleWrap's format by bench.py `cinch_to_bw`: `cinch test` vs `bw test` (its default on a whole repo, "
                     "-HIJKMSp: items instantiated, templates rendered, dependencies and metadata checked). "
                     "No node is contacted.")
    write_report(ctx, tools, out, started, notes)
    (ctx.work / "results.json").write_text(json.dumps(
        [r.__dict__ for r in ctx.results.values()], indent=1))
    return 1 if any(r.error for r in ctx.results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
