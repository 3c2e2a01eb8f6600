#!/usr/bin/env bash
# CTest entry of the end-to-end suite (label e2e): makes the Python venv (tools/e2e-venv.sh) and
# runs pytest on tests/e2e against the moeserve binary given as $1.
#   tests/e2e/run.sh build/server/moeserve [pytest args...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export MOESERVE_BIN=$(realpath "$1")
shift
python=$("$here/../../tools/e2e-venv.sh")
cd "$here"
exec "$python" -m pytest -q -p no:cacheprovider "$@" .
