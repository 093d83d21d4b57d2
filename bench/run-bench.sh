#!/usr/bin/env bash
# Benchmark `cinch run` against BundleWrap's `bw run` on the same node aliases.
#
# Starts a private sshd on 127.0.0.1 (own keys, free port; same setup as tests/it/sshd.rs),
# writes an ssh_config with node1..nodeN aliases, a cinch repo and an equivalent BundleWrap
# repo using them, and times `true` and `uname -a` over 10 and 50 nodes with hyperfine.
# Both tools run all nodes at once (-p N) and use the same ssh_config (no ControlMaster of
# its own for bw: it gets none unless ~/.ssh/config sets one up, as BundleWrap documents).
#
# Usage: bench/run-bench.sh            (NODES="10 50" RUNS=10 by default)
#        NODES=10 RUNS=5 bench/run-bench.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
NODES=${NODES:-"10 50"}
RUNS=${RUNS:-10}
BW_VERSION=5.2.0
BW_VENV=${BW_VENV:-/tmp/cinch-bench-bw-$BW_VERSION}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }
need=()
command -v hyperfine >/dev/null || need+=(hyperfine)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
python3 -c 'import venv' 2>/dev/null || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi
as_root mkdir -p /run/sshd

(cd "$ROOT" && cargo build --release --quiet)
CINCH=$ROOT/target/release/cinch

if [ ! -x "$BW_VENV/bin/bw" ]; then
    python3 -m venv "$BW_VENV"
    "$BW_VENV/bin/pip" install --quiet "bundlewrap==$BW_VERSION"
fi
BW=$BW_VENV/bin/bw

WORK=$(mktemp -d /tmp/cinch-bench.XXXXXX)
SSHD_PID=
cleanup() {
    [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- private sshd -------------------------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -C bench -f "$WORK/host_key"
ssh-keygen -q -t ed25519 -N '' -C bench -f "$WORK/client_key"
cp "$WORK/client_key.pub" "$WORK/authorized_keys"
mkdir -p "$WORK/home"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# MaxStartups: 50 nodes connect at once; SetEnv HOME: skip the user's slow shell rc files.
cat >"$WORK/sshd_config" <<EOF
Port $PORT
ListenAddress 127.0.0.1
HostKey $WORK/host_key
AuthorizedKeysFile $WORK/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
MaxSessions 20
MaxStartups 200:30:400
PidFile none
SetEnv HOME=$WORK/home
EOF
/usr/sbin/sshd -D -e -f "$WORK/sshd_config" 2>"$WORK/sshd.log" &
SSHD_PID=$!
for _ in $(seq 100); do grep -q "Server listening" "$WORK/sshd.log" && break; sleep 0.05; done
grep -q "Server listening" "$WORK/sshd.log" || { cat "$WORK/sshd.log"; exit 1; }

MAX=0
for n in $NODES; do [ "$n" -gt "$MAX" ] && MAX=$n; done
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$WORK/host_key.pub")" >"$WORK/known_hosts"
{
    printf 'Host'
    for i in $(seq "$MAX"); do printf ' node%s' "$i"; done
    printf '\n  HostName 127.0.0.1\n  Port %s\n  User %s\n' "$PORT" "$(id -un)"
    printf '  IdentityFile %s/client_key\n  IdentitiesOnly yes\n' "$WORK"
    printf '  UserKnownHostsFile %s/known_hosts\n  GlobalKnownHostsFile /dev/null\n' "$WORK"
} >"$WORK/ssh_config"

# --- the two repos ------------------------------------------------------------------------
mkdir -p "$WORK/cinch/bundles" "$WORK/bw/bundles" "$WORK/bw/items"
printf '[ssh]\nconfig_file = "%s/ssh_config"\n' "$WORK" >"$WORK/cinch/cinch.toml"
for i in $(seq "$MAX"); do printf '[nodes.node%s]\n' "$i"; done >"$WORK/cinch/nodes.toml"
echo "nodes = {}" >"$WORK/bw/nodes.py"
for i in $(seq "$MAX"); do echo "nodes['node$i'] = {'hostname': 'node$i'}"; done >>"$WORK/bw/nodes.py"
echo "groups = {}" >"$WORK/bw/groups.py"
: >"$WORK/cinch/groups.toml"
for n in $NODES; do
    members=$(for i in $(seq "$n"); do printf '"node%s",' "$i"; done)
    printf '[groups.bench%s]\nmembers = [%s]\n' "$n" "${members%,}" >>"$WORK/cinch/groups.toml"
    echo "groups['bench$n'] = {'members': [${members%,}]}" | tr '"' "'" >>"$WORK/bw/groups.py"
done
: >"$WORK/bw/requirements.txt"
export BW_SSH_ARGS="-F $WORK/ssh_config"

# Both must succeed before timing means anything.
"$CINCH" -r "$WORK/cinch" run "bench$MAX" -p "$MAX" true >/dev/null
(cd "$WORK/bw" && "$BW" run -p "$MAX" "bench$MAX" true >/dev/null)

# --- timing -------------------------------------------------------------------------------
results=()
for n in $NODES; do
    for cmd in true "uname -a"; do
        out=$WORK/result-$n-${cmd%% *}.json
        hyperfine --warmup 1 --runs "$RUNS" --export-json "$out" --style basic \
            -n cinch "$CINCH -r $WORK/cinch run bench$n -p $n '$cmd'" \
            -n bw "cd $WORK/bw && $BW run -p $n bench$n '$cmd'" >&2
        results+=("$n|$cmd|$out")
    done
done

echo
echo "| nodes | command | cinch median | bw median | bw / cinch |"
echo "|---|---|---|---|---|"
for r in "${results[@]}"; do
    IFS='|' read -r n cmd out <<<"$r"
    python3 - "$n" "$cmd" "$out" <<'PY'
import json, sys
n, cmd, path = sys.argv[1:]
res = {r["command"]: r["median"] for r in json.load(open(path))["results"]}
print(f"| {n} | `{cmd}` | {res['cinch']*1000:.0f} ms | {res['bw']*1000:.0f} ms | {res['bw']/res['cinch']:.1f}x |")
PY
done
echo
echo "($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $RUNS runs each, $(ssh -V 2>&1), bundlewrap $BW_VERSION)"
