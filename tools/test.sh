#!/usr/bin/env bash
# README command 2: install what is missing, build, and run the whole test suite (CTest).
# GPU tests skip on machines without a GPU; tools/gpu-check.sh runs them on one.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
tools/build.sh
cd "${MOESERVE_BUILD_DIR:-build}"
ctest -j "${MOESERVE_JOBS:-$(nproc)}" --output-on-failure --timeout 600
