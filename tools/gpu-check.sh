#!/usr/bin/env bash
# Every GPU check behind one script, for the lent GPU machine (run through the `device` tool from
# the repository root). Builds kernels/, parallel/ and tests/gpu there (16 cores, no gRPC needed),
# runs the GPU tests and writes everything to $OUT (default ./gpu-check-out):
#   $OUT/device.txt   nvidia-smi and nvcc versions     $OUT/ctest.txt  GPU test results
#   $OUT/build.txt    configure + build log
# If abseil/googletest are missing there, carry an install prefix of them as .deps/prefix (the
# `device` tool's carry); it is put on CMAKE_PREFIX_PATH.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/gpu-check-out}
mkdir -p "$out"
{ nvidia-smi; nvcc --version; ldd --version | head -1; } >"$out/device.txt" 2>&1
prefix_args=()
[[ -d .deps/prefix ]] && prefix_args=(-DCMAKE_PREFIX_PATH="$PWD/.deps/prefix")
build=${MOESERVE_BUILD_DIR:-build-gpu}
{
  cmake -S . -B "$build" -G Ninja -DMOESERVE_KERNELS_ONLY=ON -DMOESERVE_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=native "${prefix_args[@]}" &&
    ninja -C "$build" -j "$(nproc)"
} >"$out/build.txt" 2>&1
build_rc=$?
echo "build rc=$build_rc" | tee -a "$out/summary.txt"
if [[ $build_rc -eq 0 ]]; then
  (cd "$build" && ctest -L gpu --output-on-failure) >"$out/ctest.txt" 2>&1
  echo "ctest rc=$?" | tee -a "$out/summary.txt"
  tail -5 "$out/ctest.txt"
else
  tail -30 "$out/build.txt"
fi
