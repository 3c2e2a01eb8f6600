#!/usr/bin/env bash
# README command 1: install what is missing, build, and start the moeserve daemon on the embedded
# default model (HTTP on :8000, gRPC on :50051; Ctrl-C or SIGTERM drains and stops it).
# Arguments replace the default command line, e.g.
#   tools/start.sh serve --model /models/Mixtral-8x7B-v0.1 --ep-size 2
#   tools/start.sh generate --prompt "Hi"
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
tools/build.sh
if [[ $# -eq 0 ]]; then
  set -- serve
fi
exec ./build/server/moeserve "$@"
