#!/bin/sh
# `cinch run` vs BundleWrap's `bw run`: a thin wrapper around bench/run.sh (one sshd, venv and
# peer setup for every bench; see bench/README.md). One report per node count.
#   bench/run-bench.sh                 # NODES="10 50" RUNS=10
#   NODES=10 RUNS=5 bench/run-bench.sh
set -e
here=$(cd "$(dirname "$0")" && pwd)
for n in ${NODES:-10 50}; do
    "$here/run.sh" --scenarios run --tools "${TOOLS:-cinch,bw}" --nodes "$n" --runs "${RUNS:-10}" \
        --output "$here/.work/RESULTS-run-$n.md" "$@"
    cat "$here/.work/RESULTS-run-$n.md"
done
