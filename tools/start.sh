#!/usr/bin/env bash
# README command 1: install what is missing, build, and run moeserve on the embedded default model.
# Arguments replace the default ones, e.g. tools/start.sh generate --model /models/Mixtral-8x7B-v0.1 --prompt "Hi"
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
tools/build.sh
if [[ $# -eq 0 ]]; then
  set -- generate --chat --prompt "Write a haiku about experts." --max-tokens 32
fi
exec ./build/server/moeserve "$@"
