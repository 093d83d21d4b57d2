#!/bin/sh
# A 10,000-node repo (bench/gen-repo): `cinch test`, `cinch nodes`, `cinch hash`, with wall time and peak
# RSS. See bench/README.md. Usage: bench/scale/bigrepo.sh CINCH [NODES]
set -eu
cinch=$1 nodes=${2:-10000}
here=$(cd "$(dirname "$0")/.." && pwd)
w=/tmp/cinch-bench-bigrepo
python3 "$here/gen-repo" "$w" --nodes "$nodes" >/dev/null
echo "== $nodes nodes, load: $(cut -d' ' -f1-3 /proc/loadavg)"
for cmd in test nodes hash; do
  /usr/bin/time -f "cinch $cmd: %e s wall, %M KB peak RSS" "$cinch" -q -r "$w" $cmd >/dev/null
done
rm -rf "$w"
