#!/usr/bin/env bash
# Builds the GPU test and benchmark binaries HERE (no GPU needed) and stages them in gpu-bins/,
# which a device call carries to the lent GPU machine, where tools/gpu-check.sh runs them without
# building anything:
#
#   tools/build-gpu-bins.sh                      # here: configure + build + stage (prints the size)
#   run(command="tools/gpu-check.sh", carry=["gpu-bins"], timeout_s=540)    # there
#
# Build: ${MOESERVE_GPU_BUILD_DIR:-build-gpu}, Release, without the daemon's front ends
# (MOESERVE_FRONTENDS=OFF: no gRPC / protobuf, which the GPU machine does not have), CUDA code for
# sm_90a only (H100/H200: small binaries, no JIT), cudart linked statically. Only the staged
# targets are built: the gpu_* tests, gpu_backend_ops_bench and moeserve_bench (server/main.cc
# without `serve`: `moeserve_bench bench --preset mixtral-8x7b`, make-model, generate). cuBLASLt is NOT bundled (~500 MB): gpu-check.sh finds libcublasLt.so.13 on
# the GPU machine (the torch wheels' nvidia/cu13/lib or nvidia/cublas/lib, else the CUDA toolkit).
# The other shared libraries the binaries need beyond glibc are copied: abseil and libgomp into
# gpu-bins/lib (always used), libstdc++ and libgcc_s into gpu-bins/lib-fallback (used only when
# the GPU machine's own are too old: ours need glibc >= 2.36). gpu-check.sh sets LD_LIBRARY_PATH.
#
# Staged: gpu-bins/bin/<test or bench> (stripped), gpu-bins/lib/*.so*, gpu-bins/MANIFEST.txt
# (commit, toolchain, the binaries gpu-check.sh must find). At most 64 MiB in all (the device
# call's carry limit): the script fails above that.
# Extra arguments go to CMake, e.g. -DCMAKE_CUDA_ARCHITECTURES=90a-real.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${MOESERVE_GPU_BUILD_DIR:-build-gpu}
jobs=${MOESERVE_JOBS:-$(nproc)}
stage=gpu-bins
limit_bytes=$((64 * 1024 * 1024))

echo "== configure $build"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOESERVE_KERNELS_ONLY=OFF \
  -DMOESERVE_FRONTENDS=OFF -DMOESERVE_CUDA=ON -DMOESERVE_NCCL=OFF -DCMAKE_CUDA_ARCHITECTURES=90a "$@" \
  >"$build.cmake.log" 2>&1 || { cat "$build.cmake.log" >&2; exit 1; }

# Every executable of tests/gpu (gpu_<file>) and every benchmark (a target whose name contains
# "bench"), as ninja lists them: "tests/gpu_backend_ops_test: CXX_EXECUTABLE_LINKER__...".
mapfile -t outputs < <(ninja -C "$build" -t targets all |
  sed -n 's/^\([^:]*\): CXX_EXECUTABLE_LINKER.*/\1/p' |
  grep -E '(^|/)(gpu_[A-Za-z0-9_]+|[A-Za-z0-9_]*bench[A-Za-z0-9_]*)$' | sort -u)
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
  echo "bundled libs: $(cd "$stage/lib" && ls | tr '\n' ' ')"
  echo "fallback libs: $(cd "$stage/lib-fallback" && ls | tr '\n' ' ')"
  for bin in "$stage"/bin/*; do echo "binary: ${bin##*/}"; done
} >"$stage/MANIFEST.txt"

total=$(du -sb "$stage" | cut -f1)
du -b "$stage"/bin/* "$stage"/lib/* "$stage"/lib-fallback/* | sort -n | awk '{printf "  %8.2f MiB  %s\n", $1 / 1048576, $2}'
awk -v t="$total" -v s="$stage" 'BEGIN { printf "%s: %.2f MiB in all (limit 64 MiB)\n", s, t / 1048576 }'
if ((total > limit_bytes)); then
  echo "build-gpu-bins: $stage is over the 64 MiB a device call can carry" >&2
  exit 1
fi
