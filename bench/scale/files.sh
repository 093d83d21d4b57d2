#!/bin/sh
# One node (local transport), N small files: cinch first apply and steady state against
# rsync -a --checksum into an empty directory and rsync --dry-run. See bench/README.md.
# Usage: bench/scale/files.sh CINCH N [WORKDIR]
set -eu
cinch=$1 n=$2 w=${3:-/tmp/cinch-bench-scale}
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$w" && mkdir -p "$w"
python3 "$here/gen-files.py" "$n" "$w/repo" "$w/out"
t() { /usr/bin/time -f "%e s wall, %U s user, %S s sys, %M KB peak RSS" "$@"; }
echo "== $n files, load: $(uptime | sed 's/.*load/load/')"
echo "-- cinch first apply";  t "$cinch" -q -r "$w/repo" apply one >/dev/null
# Applies of a real node are minutes apart; the node's hash cache keeps only files unchanged
# for two seconds before a probe (README.md, "How apply works").
sleep 2
echo "-- cinch steady state (first unchanged apply: it also writes the steady marker and the hash cache)"; t "$cinch" -q -r "$w/repo" apply one >/dev/null
echo "-- cinch steady state again (one command, on the marker and the hash cache)"; t "$cinch" -q -r "$w/repo" apply one >/dev/null
echo "-- cinch steady state --rehash (one command, every file hashed as rsync --checksum does)"; t "$cinch" -q -r "$w/repo" apply one --rehash >/dev/null
echo "-- rsync -a --checksum into an empty directory"; t rsync -a --checksum "$w/out/" "$w/rs/"
echo "-- rsync -a --checksum --dry-run (nothing to do)"; t rsync -a --checksum --dry-run "$w/out/" "$w/rs/"
find "$w/out" -type f | wc -l | sed 's/^/files written by cinch: /'
rm -rf "$w"
