#!/usr/bin/env bash
# Installs the Debian bookworm packages moeserve builds against. Idempotent: when everything is
# already there it prints nothing and exits 0. The CUDA toolkit is not installed here; CMake uses
# /usr/local/cuda when it exists and builds the CPU-only engine otherwise.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libabsl-dev libspdlog-dev libfmt-dev
  libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  libsentencepiece-dev nlohmann-json3-dev libcli11-dev libboost-dev
  libgtest-dev libgmock-dev clang-format-14
  # parallel/comm/gloo_communicator: expert parallelism between CPU processes
  libgloo-dev
  # tools/sanitize.sh and tools/fuzz.sh: clang with libFuzzer and the sanitizer runtimes, clang's
  # OpenMP runtime (libomp; its libarcher tells TSan about OpenMP), llvm-symbolizer for stacks
  clang-14 libclang-rt-14-dev libomp-14-dev llvm-14
  # tests/e2e (part of tools/test.sh): tools/e2e-venv.sh makes a venv and pip-installs the clients
  python3 python3-venv
  # tests/e2e/test_lab_page.py opens the live imbalance page (GET /lab) in headless Chromium
  chromium
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "setup: installing ${missing[*]}" >&2
sudo_cmd=()
[[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq >/dev/null
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
