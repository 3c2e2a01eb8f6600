#!/usr/bin/env bash
# Builds the GPU test, runtime test and benchmark binaries HERE (no GPU needed) and stages them in
# gpu-bins/, which a device call carries to the lent GPU machine, where tools/gpu-check.sh runs
# them without building anything:
#
#   tools/build-gpu-bins.sh                      # here: configure + build + stage (prints the size)
#   run(command="tools/gpu-check.sh", carry=["gpu-bins"], timeout_s=540)    # there
#
# Build: ${MOESERVE_GPU_BUILD_DIR:-build-gpu}, Release, kernels/ + runtime/ + tests, no front ends
# (MOESERVE_FRONTENDS=OFF: no gRPC / protobuf, which the GPU machine does not have), CUDA code for
# sm_90a only (H100/H200: small binaries, no JIT), cudart linked statically. Staged targets: the
# gpu_* tests, golden_* and unit_engine_test, gpu_backend_ops_bench and moeserve_bench
# (server/main.cc without `serve`: `moeserve_bench bench --preset mixtral-8x7b`, make-model,
# generate). cuBLASLt is NOT bundled (~500 MB): gpu-check.sh finds libcublasLt.so.13 on
# the GPU machine (the torch wheels' nvidia/cu13/lib or nvidia/cublas/lib, else the CUDA toolkit).
# The other shared libraries the binaries need beyond glibc are copied: abseil, libgomp and the
# runtime's (sentencepiece, spdlog, fmt: Debian ships no static archives of those)
# into gpu-bins/lib (always used), libstdc++ and libgcc_s into gpu-bins/lib-fallback (used only when
# the GPU machine's own are too old: ours need glibc >= 2.36). gpu-check.sh sets LD_LIBRARY_PATH.
#
# Staged (then packed into gpu-bins/bins.tar.xz): bin/<test or bench> (stripped), lib/*.so*, MANIFEST.txt
# (commit, toolchain, the binaries gpu-check.sh must find). Test binaries: tests/gpu/* (gpu_*), the
# golden tests against HF fixtures and expert parallelism (golden_*) and the engine test
# (unit_engine_test), each parameterised over cpu/cuda. Their test data is NOT staged: the device
# call's copy of the repository has tests/data (~10 MB), and gpu-check.sh points
# MOESERVE_TEST_DATA_DIR at it (the compiled-in path is this machine's). gpu-bins and the working
# tree, which the call carries too, must fit in 64 MiB together (about 49 + 11 MiB now): the script
# fails above that.
# Extra arguments go to CMake, e.g. -DCMAKE_CUDA_ARCHITECTURES=90a-real.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${MOESERVE_GPU_BUILD_DIR:-build-gpu}
jobs=${MOESERVE_JOBS:-$(nproc)}
# Staged uncompressed in $build/stage, then packed into gpu-bins/bins.tar.xz (the binaries are
# ~58 MiB raw, ~8 MiB packed; the 64 MiB a device call carries includes the working tree).
stage=$build/stage
carry=gpu-bins
limit_bytes=$((64 * 1024 * 1024))

echo "== configure $build"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOESERVE_KERNELS_ONLY=OFF \
  -DMOESERVE_FRONTENDS=OFF -DMOESERVE_CUDA=ON -DMOESERVE_NCCL=OFF -DCMAKE_CUDA_ARCHITECTURES=90a "$@" \
  >"$build.cmake.log" 2>&1 || { cat "$build.cmake.log" >&2; exit 1; }

# Every executable of tests/gpu (gpu_<file>), tests/golden (golden_<file>), the engine test
# (unit_engine_test) and every benchmark (a target whose name contains "bench"), as ninja lists
# them: "tests/gpu_backend_ops_test: CXX_EXECUTABLE_LINKER__...".
mapfile -t outputs < <(ninja -C "$build" -t targets all |
  sed -n 's/^\([^:]*\): CXX_EXECUTABLE_LINKER.*/\1/p' |
  grep -E '(^|/)(gpu_[A-Za-z0-9_]+|golden_[A-Za-z0-9_]+|unit_engine_test|[A-Za-z0-9_]*bench[A-Za-z0-9_]*)$' |
  sort -u)
if [[ ${#outputs[@]} -eq 0 ]]; then
  echo "build-gpu-bins: no gpu_* test or *bench* targets in $build" >&2
  exit 1
fi
echo "== build ${#outputs[@]} binaries: ${outputs[*]##*/}"
ninja -C "$build" -j "$jobs" "${outputs[@]}"

echo "== stage $stage/"
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/lib"
for o in "${outputs[@]}"; do
  cp "$build/$o" "$stage/bin/"
  strip --strip-unneeded "$stage/bin/${o##*/}"
done

# Shared libraries to bundle: whatever ldd resolves, except glibc's own, the CUDA driver and the
# CUDA libraries found on the GPU machine.
declare -A bundled=()
for bin in "$stage"/bin/*; do
  while read -r name path; do
    case "$name" in
      linux-vdso* | ld-linux* | libc.so* | libm.so* | libdl.so* | librt.so* | libpthread.so*) ;;
      libcuda.so* | libcublas* | libcudart* | libnccl* | libnvidia*) ;;
      *) [[ -n "$path" && -f "$path" ]] && bundled[$name]=$path ;;
    esac
  done < <(ldd "$bin" | sed -n 's/^\s*\(\S*\) => \(\S*\) .*/\1 \2/p')
done
# libstdc++ and libgcc_s go to lib-fallback/: the GPU machine's own copies are used when they are
# new enough (ours from this machine need its glibc, 2.36: arc4random), ours only when not.
mkdir -p "$stage/lib-fallback"
for name in "${!bundled[@]}"; do
  dest=$stage/lib
  [[ "$name" == libstdc++* || "$name" == libgcc_s* ]] && dest=$stage/lib-fallback
  cp -L "${bundled[$name]}" "$dest/$name"
  strip --strip-unneeded "$dest/$name" 2>/dev/null || true
done

{
  echo "# gpu-bins: built by tools/build-gpu-bins.sh; run by tools/gpu-check.sh on the GPU machine"
  echo "commit: $(git rev-parse HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), $(ldd --version | head -1)"
  echo "nvcc: $(/usr/local/cuda/bin/nvcc --version | tail -2 | head -1)"
  echo "cxx: $(c++ --version | head -1)"
  echo "cuda archs: $(sed -n 's/^CMAKE_CUDA_ARCHITECTURES:[A-Z]*=//p' "$build/CMakeCache.txt")"
  echo "needs from the GPU machine: the NVIDIA driver (>= CUDA 13.0), libcublasLt.so.13"
  echo "test data: tests/data of the repository copy (gpu-check.sh sets MOESERVE_TEST_DATA_DIR)"
  echo "bundled libs: $(cd "$stage/lib" && ls | tr '\n' ' ')"
  echo "fallback libs: $(cd "$stage/lib-fallback" && ls | tr '\n' ' ')"
  for bin in "$stage"/bin/*; do echo "binary: ${bin##*/}"; done
} >"$stage/MANIFEST.txt"

du -b "$stage"/bin/* "$stage"/lib/* "$stage"/lib-fallback/* | sort -n | awk '{printf "  %8.2f MiB  %s\n", $1 / 1048576, $2}'
echo "== pack $carry/bins.tar.xz"
rm -rf "$carry"
mkdir -p "$carry"
tar -C "$stage" -cf - . | xz -T0 -6 >"$carry/bins.tar.xz"
cp "$stage/MANIFEST.txt" "$carry/MANIFEST.txt"
raw=$(du -sb "$stage" | cut -f1)
total=$(du -sb "$carry" | cut -f1)
# The device call carries the working tree too (tracked + untracked-not-ignored files: tests/data
# is ~10 MB of it), within the same 64 MiB.
tree=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
awk -v raw="$raw" -v t="$total" -v r="${tree:-0}" -v s="$carry" 'BEGIN { printf "%s: %.2f MiB packed (%.2f MiB unpacked); with the working tree (%.2f MiB) %.2f MiB to carry (limit 64 MiB)\n", s, t / 1048576, raw / 1048576, r / 1048576, (t + r) / 1048576 }'
if ((total + ${tree:-0} > limit_bytes)); then
  echo "build-gpu-bins: $carry and the working tree are over the 64 MiB a device call can carry" >&2
  exit 1
fi
