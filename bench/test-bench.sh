#!/usr/bin/env bash
# Times `cinch test` and `cinch items` on a synthetic repo (1000 nodes, 20 groups, 50 bundles,
# 50 items per node) with a release build. Uses hyperfine when installed, else a loop that
# reports the median of RUNS runs.
#   bench/test-bench.sh            # defaults
#   RUNS=20 NODES=2000 bench/test-bench.sh
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
runs="${RUNS:-10}"
nodes="${NODES:-1000}"
repo="${BENCH_REPO:-${TMPDIR:-/tmp}/cinch-bench-repo}"

cargo build --release --quiet --manifest-path "$root/Cargo.toml"
cinch="$root/target/release/cinch"
python3 "$here/gen-repo" "$repo" --nodes "$nodes" --groups 20 --bundles 50
first_node="$("$cinch" -r "$repo" nodes | head -1)"

# A benchmark of a broken repo measures nothing: fail loudly first.
"$cinch" -r "$repo" -q test >/dev/null

commands=(
  "$cinch -r $repo nodes"
  "$cinch -r $repo test"
  "$cinch -r $repo items $first_node"
)

if command -v hyperfine >/dev/null; then
  results="$(mktemp)"
  hyperfine --warmup 2 --runs "$runs" --style basic --output null \
    --export-json "$results" "${commands[@]}"
  python3 - "$results" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(f"{r['command']}: median {r['median'] * 1000:.0f} ms over {len(r['times'])} runs")
PY
  rm -f "$results"
else
  for cmd in "${commands[@]}"; do
    times=()
    for _ in $(seq "$runs"); do
      start=$(date +%s%N)
      $cmd >/dev/null
      end=$(date +%s%N)
      times+=($(( (end - start) / 1000000 )))
    done
    median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    echo "$cmd: median ${median} ms over $runs runs"
  done
fi
