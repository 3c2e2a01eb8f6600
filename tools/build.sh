#!/usr/bin/env bash
# Configures and builds moeserve into ${MOESERVE_BUILD_DIR:-build} with Ninja (and ccache when
# present). Extra arguments go to CMake, e.g. tools/build.sh -DMOESERVE_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${MOESERVE_BUILD_DIR:-build}
jobs=${MOESERVE_JOBS:-$(nproc)}
if [[ ! -f "$build_dir/build.ninja" || $# -gt 0 ]]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >"$build_dir.cmake.log" 2>&1 ||
    { cat "$build_dir.cmake.log" >&2; exit 1; }
fi
ninja -C "$build_dir" -j "$jobs"
