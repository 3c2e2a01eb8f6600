#!/usr/bin/env bash
# Creates the Python virtual environment the end-to-end tests (tests/e2e) run in and prints its
# python path. Idempotent: an existing venv whose packages import is reused.
#   MOESERVE_E2E_VENV  where to put it (default: <repo>/.venv-e2e)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${MOESERVE_E2E_VENV:-$PWD/.venv-e2e}
py="$venv/bin/python"
check="import openai, grpc, grpc_tools, grpc_health, grpc_reflection, pytest, httpx"
if [[ -x "$py" ]] && "$py" -c "$check" 2>/dev/null; then
  echo "$py"
  exit 0
fi
python3 -m venv "$venv" >&2
"$py" -m pip install -q --disable-pip-version-check --upgrade pip >&2
# openai brings httpx (the async client of the concurrency test); grpcio-tools generates the
# Python stubs from proto/ at test time.
"$py" -m pip install -q --disable-pip-version-check openai grpcio grpcio-tools \
  grpcio-health-checking grpcio-reflection pytest httpx >&2
"$py" -c "$check"
echo "$py"
