#!/bin/sh
# Benchmark cinch against BundleWrap, Ansible and pyinfra; see bench/README.md.
# The driver is plain Python 3.11+ (standard library only); the peers live in bench/.work/venv.
set -e
here=$(cd "$(dirname "$0")" && pwd)
exec "${PYTHON:-python3}" "$here/bench.py" "$@"
