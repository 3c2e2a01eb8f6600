#!/usr/bin/env bash
# Stages a built moeserve for a runtime image: OUT/bin/moeserve (stripped) and, in OUT/lib, every
# shared library it links beyond what any glibc-based base image has (glibc, libstdc++, libgcc_s)
# and beyond what the CUDA runtime image and the driver provide (libcuda, libcudart, cuBLAS,
# NCCL). The runtime stages of deploy/Dockerfile copy OUT to /opt/moeserve and run the binary
# with LD_LIBRARY_PATH=/opt/moeserve/lib, so the CPU image (Debian bookworm-slim) and the CUDA
# image (nvidia/cuda runtime, Ubuntu) run the same Debian-bookworm-built binary with the same
# libraries (abseil, gRPC, protobuf, sentencepiece, spdlog, fmt, OpenSSL, libgomp, ...).
# Needs glibc >= 2.36 at run time (bookworm's); Ubuntu 24.04's 2.39 is newer.
#
#   deploy/stage-runtime.sh build/server/moeserve /tmp/stage
set -euo pipefail
if [[ $# -ne 2 ]]; then
  echo "usage: $0 MOESERVE_BINARY OUT_DIR" >&2
  exit 2
fi
bin=$1
out=$2
mkdir -p "$out/bin" "$out/lib"
install -m 0755 "$bin" "$out/bin/moeserve"
strip --strip-unneeded "$out/bin/moeserve"

# Provided by the runtime image (or the driver): not copied, and allowed to be unresolved here
# (the CUDA builder's loader path need not include /usr/local/cuda/lib64).
provided() {
  case "$1" in
    # glibc and the C++ runtime: every base image has them (newer is compatible).
    libc.so.* | libm.so.* | libdl.so.* | libpthread.so.* | librt.so.* | libresolv.so.* | \
      ld-linux-*.so.* | libstdc++.so.* | libgcc_s.so.*) return 0 ;;
    # The driver (mounted by the NVIDIA container toolkit) and the CUDA runtime image's libraries.
    libcuda.so.* | libcudart.so.* | libcublas.so.* | libcublasLt.so.* | libnccl.so.*) return 0 ;;
  esac
  return 1
}
missing=()
while read -r lib; do
  provided "$lib" || missing+=("$lib")
done < <(ldd "$bin" | awk '/not found/ {print $1}')
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "stage-runtime: $bin needs libraries that are not installed: ${missing[*]}" >&2
  exit 1
fi
count=0
while read -r lib; do
  provided "$(basename "$lib")" && continue
  cp -L "$lib" "$out/lib/"
  count=$((count + 1))
done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3}')
echo "stage-runtime: $out/bin/moeserve + $count libraries in $out/lib ($(du -sh "$out" | cut -f1))"
