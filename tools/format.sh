#!/usr/bin/env bash
# Checks (default) or applies (--fix) clang-format on every tracked C++/CUDA source.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=(--dry-run -Werror)
[[ "${1:-}" == --fix ]] && mode=(-i)
git ls-files -co --exclude-standard -- '*.cc' '*.h' '*.cu' '*.cuh' | xargs -r clang-format-14 "${mode[@]}"
