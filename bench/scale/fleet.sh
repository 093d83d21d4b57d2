#!/bin/sh
# N node aliases on one private sshd (MaxStartups/MaxSessions raised): `run all true` and a
# steady-state apply of F files per node, with -p 100 and -p 500, with the default key
# exchange, with kex_algorithms = curve25519-sha256, and with persist. Reports wall time,
# peak RSS and the most descriptors cinch held. With BW=path/to/bw (BundleWrap), the same
# `run all true` and steady apply by BundleWrap (ssh multiplexed, one master per node alias:
# `%n`, since every alias has the same host and port and `%C` would share one master among all
# of them), each cut at 10 minutes. SETTINGS="default kex persist" picks the cinch rows. See bench/README.md.
# Usage: [BW=bench/.work/venv/bin/bw] bench/scale/fleet.sh CINCH [NODES] [FILES] [WORKERS...]
set -eu
cinch=$1 nodes=${2:-1000} files=${3:-20}; shift 3 2>/dev/null || shift $#
workers=${*:-100 500}
w=/tmp/cinch-bench-fleet
rm -rf "$w" && mkdir -p "$w/home" "$w/nodes"
ssh-keygen -q -t ed25519 -N '' -f "$w/host_key"; ssh-keygen -q -t ed25519 -N '' -f "$w/client_key"
cp "$w/client_key.pub" "$w/authorized_keys"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# SetEnv HOME: sessions log in as the current user (root here), whose ~/.bashrc may be slow
# (pyenv init), and bash sources it even for `bash -c` under sshd; an empty HOME keeps every
# session from paying it (without this, 200 nodes spent minutes in pyenv-rehash).
cat > "$w/sshd_config" <<CFG
Port $port
ListenAddress 127.0.0.1
HostKey $w/host_key
AuthorizedKeysFile $w/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
MaxStartups 2000:30:4000
MaxSessions 50
Subsystem sftp internal-sftp
PidFile none
SetEnv HOME=$w/home
LogLevel ERROR
CFG
/usr/sbin/sshd -D -e -f "$w/sshd_config" 2>"$w/sshd.log" &
sshd=$!
trap 'kill $sshd 2>/dev/null || true' EXIT
sleep 1
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$w/host_key.pub")" > "$w/known_hosts"
printf 'Host n*\n  HostName 127.0.0.1\n  Port %s\n  User %s\n  IdentityFile %s/client_key\n  IdentitiesOnly yes\n  UserKnownHostsFile %s/known_hosts\n  GlobalKnownHostsFile /dev/null\n  LogLevel ERROR\n' \
  "$port" "$(id -un)" "$w" "$w" > "$w/ssh_config"
python3 - "$w" "$nodes" "$files" <<'PY'
import sys, os
w, n, f = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = f"{w}/repo"; os.makedirs(f"{r}/bundles/b", exist_ok=True)
with open(f"{r}/nodes.toml", "w") as o:
    for i in range(1, n + 1):
        o.write(f'[nodes.n{i}]\nbundles = ["b"]\nlock_dir = "{w}/nodes/n{i}/locks"\nmetadata = {{ dir = "{w}/nodes/n{i}" }}\n')
with open(f"{r}/bundles/b/items.rhai", "w") as o:
    o.write('let d = node.metadata.dir;\nlet items = #{ directories: #{}, files: #{} };\n'
            'items.directories[d] = #{ mode: "0755" };\n'
            f'for i in 0..{f} {{ items.files[`${{d}}/f${{i}}.conf`] = #{{ content: `file ${{i}} of ${{node.name}}\\n`, mode: "0644" }}; }}\n'
            'items\n')
PY
base="[ssh]\nconfig_file = \"$w/ssh_config\"\n"
measure() { # label, cinch args...
  label=$1; shift
  "$@" >"$w/out" 2>"$w/err" &
  pid=$! peak=0
  while kill -0 $pid 2>/dev/null; do
    c=$(pgrep -P $pid | head -1 || true)   # cinch, under /usr/bin/time
    fds=$(ls /proc/${c:-$pid}/fd 2>/dev/null | wc -l); [ "$fds" -gt "$peak" ] && peak=$fds
    sleep 0.2
  done
  wait $pid && rc=0 || rc=$?
  echo "$label | exit $rc | $(tail -1 "$w/time") | max fds $peak | load $(cut -d' ' -f1-3 /proc/loadavg)"
}
for settings in ${SETTINGS:-default kex persist}; do
  case $settings in
    none) continue;;   # SETTINGS=none: BundleWrap's rows only
    default) printf "$base" > "$w/repo/cinch.toml";;
    kex) printf "$base""kex_algorithms = \"curve25519-sha256\"\n" > "$w/repo/cinch.toml";;
    persist) printf "$base""kex_algorithms = \"curve25519-sha256\"\npersist = \"10m\"\n" > "$w/repo/cinch.toml";;
  esac
  export CINCH_SSH_CONTROL_DIR=$w/ctl-$settings
  "$cinch" -q -r "$w/repo" apply -p 200 all >/dev/null 2>&1 || true   # converge (untimed)
  for p in $workers; do
    measure "$settings run all true -p $p" /usr/bin/time -o "$w/time" -f "%e s, %M KB peak RSS" "$cinch" -q -r "$w/repo" run -p "$p" all true
    measure "$settings steady apply ($files files/node) -p $p" /usr/bin/time -o "$w/time" -f "%e s, %M KB peak RSS" "$cinch" -q -r "$w/repo" apply -p "$p" all
  done
  if [ $settings = persist ]; then
    for s in "$w"/ctl-persist/p-*/master; do ssh -S "$s" -O exit x 2>/dev/null || true; done
  fi
done

if [ -n "${BW:-}" ]; then
  # BundleWrap: its own nodes and the same 20 files per node, written as a converged apply
  # would leave them, so every timed apply is a steady state.
  python3 - "$w" "$nodes" "$files" <<'PY'
import sys, os
w, n, f = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = f"{w}/bw"; os.makedirs(f"{r}/bundles/b", exist_ok=True)
nodes = {f"n{i}": {"hostname": f"n{i}", "bundles": ["b"], "cmd_wrapper_outer": "sh -c {0}"} for i in range(1, n + 1)}
open(f"{r}/nodes.py", "w").write(f"nodes = {nodes!r}\n")
open(f"{r}/groups.py", "w").write("groups = {'all': {'member_patterns': [r'.*']}}\n")
open(f"{r}/bundles/b/items.py", "w").write(
    f"d = '{w}/bwnodes/' + node.name\n"
    "directories = {d: {'mode': '0755', 'owner': 'root', 'group': 'root'}}\n"
    f"files = {{f'{{d}}/f{{i}}.conf': {{'content': f'file {{i}} of {{node.name}}\\n', 'mode': '0644', 'owner': 'root', 'group': 'root'}} for i in range({f})}}\n")
for i in range(1, n + 1):
    d = f"{w}/bwnodes/n{i}"; os.makedirs(d, exist_ok=True); os.chmod(d, 0o755)
    for j in range(f):
        p = f"{d}/f{j}.conf"
        with open(p, "w") as o:
            o.write(f"file {j} of n{i}\n")
        os.chmod(p, 0o644)
PY
  mkdir -p "$w/bwcm"; rm -rf /var/lib/bundlewrap/hard-n[0-9]*   # left by an earlier, cut run
  export BW_SSH_ARGS="-F $w/ssh_config -o ControlMaster=auto -o ControlPath=$w/bwcm/%n -o ControlPersist=60"
  export BW_SCP_ARGS="$BW_SSH_ARGS" BW_IDENTITY=bench BW_COLORS=0 BW_TABLE_STYLE=grep
  for p in ${BW_WORKERS:-$workers}; do
    measure "BundleWrap run all true -p $p" /usr/bin/time -o "$w/time" -f "%e s, %M KB peak RSS" timeout 600 "$BW" -r "$w/bw" run -p "$p" all true
    measure "BundleWrap steady apply ($files files/node) -p $p" /usr/bin/time -o "$w/time" -f "%e s, %M KB peak RSS" timeout 600 "$BW" -r "$w/bw" apply -p "$p" all
  done
  for s in "$w"/bwcm/*; do ssh -S "$s" -O exit x 2>/dev/null || true; done
fi
