#!/usr/bin/env bash
# Every GPU check behind one script, for the lent GPU machine. It builds NOTHING: the binaries come
# prebuilt in gpu-bins/ (tools/build-gpu-bins.sh, run here first), carried by the device call:
#
#   run(command="tools/gpu-check.sh", carry=["gpu-bins"], timeout_s=540)
#
# Steps (each under `timeout`; about 8 minutes at most in all):
#   1. the machine: nvidia-smi, driver and runtime versions, OS, glibc;
#   2. libraries: finds libcublasLt.so.13 (the torch wheels' nvidia/cu13/lib or nvidia/cublas/lib
#      under python3's site-packages, else the CUDA toolkit), puts it and gpu-bins/lib on
#      LD_LIBRARY_PATH, records `ldd` of every binary;
#   3. every test binary in gpu-bins/bin with --gtest_output=json: gpu_* whole, the runtime tests
#      (golden_*: HF fixtures and expert parallelism, unit_engine_test) only their CUDA cases
#      (--gtest_filter=*cuda*: their CPU halves run in CI), reading tests/data of this repository
#      copy (MOESERVE_TEST_DATA_DIR);
#   4. the benchmarks: every benchmark binary (name containing "bench"; moeserve_bench with
#      `bench --preset mixtral-8x7b`) and bench/hf_moe_bench.py (section 4 below).
# Results in $OUT (default ./gpu-check-out), at most 3 files (a device call returns 8 at most):
#   summary.txt        the machine, the libraries, per-binary counts, failed and skipped GPU tests
#   failures.txt       the output of every failed test (empty when none failed)
#   gpu-check.tar.gz   everything: logs, gtest JSON, ldd, nvidia-smi -q, benchmark output
# Exit status non-zero when a binary listed in gpu-bins/MANIFEST.txt is missing or cannot start,
# any test failed or crashed, or any GPU test (a name containing "cuda") was skipped: on the GPU
# machine a skipped CUDA case means the CUDA backend did not come up, which is a failure. The one
# exception is a skip by design, whose message starts with "[expected skip]" (tests/golden/
# backends.h: e.g. expert parallelism on CUDA, which needs a device communicator not built yet);
# those are counted and listed apart, with their reason, and do not fail the check.
#
# --dry-run: for checking this script's logic on a machine without a GPU. Everything runs the
# same; the CUDA cases then skip and are reported as failures, so the exit status is non-zero
# by design (the summary says so).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
dry_run=0
[[ "${1:-}" == --dry-run ]] && dry_run=1
bins=${MOESERVE_GPU_BINS:-gpu-bins}
out=${OUT:-$PWD/gpu-check-out}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$SECONDS
budget=${MOESERVE_GPU_CHECK_BUDGET_S:-470}  # seconds for everything
# tools/build-gpu-bins.sh packs the binaries (bins.tar.xz: the raw ones are over the carry limit).
if [[ -f "$bins/bins.tar.xz" && ! -d "$bins/bin" ]]; then
  mkdir -p "$work/bins"
  if ! { xz -dc "$bins/bins.tar.xz" | tar -C "$work/bins" -xf -; } 2>/dev/null; then
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
      "$bins/bins.tar.xz" "$work/bins"
  fi
  bins=$work/bins
fi
summary=$work/summary.txt
failed=0
fail() {
  echo "FAIL: $*" | tee -a "$summary"
  failed=1
}
# Seconds left for a step: min(wanted, what the budget still allows), at least 5.
step_limit() {
  local left=$((budget - (SECONDS - start)))
  local want=$1
  ((left < want)) && want=$left
  ((want < 5)) && want=5
  echo "$want"
}

{
  echo "moeserve gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ)$([[ $dry_run == 1 ]] && echo ' (DRY RUN)')"
  [[ -f "$bins/MANIFEST.txt" ]] && sed -n 's/^\(commit\|built\|nvcc\|cuda archs\): /  bins \1: /p' "$bins/MANIFEST.txt"
} >"$summary"

# ---- 1. The machine.
{
  timeout 30 nvidia-smi
  timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
  cat /proc/driver/nvidia/version
  uname -a
  cat /etc/os-release
  ldd --version | head -1
  command -v nvcc && timeout 10 nvcc --version
} >"$work/device.txt" 2>&1
timeout 60 nvidia-smi -q >"$work/nvidia-smi-q.txt" 2>&1
gpu=$(timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap \
  --format=csv,noheader 2>/dev/null | head -1)
{
  echo "gpu: ${gpu:-none found}"
  echo "os: $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"), $(ldd --version | head -1)"
} >>"$summary"
[[ -z "$gpu" && $dry_run == 0 ]] && fail "nvidia-smi found no GPU"

# ---- 2. Libraries.
if [[ ! -d "$bins/bin" ]]; then
  fail "$bins/bin is missing: build it here with tools/build-gpu-bins.sh and carry it (carry=[\"$bins\"])"
  cp "$summary" "$out/summary.txt"
  exit 1
fi
cublas_dir=""
{
  echo "# candidates for libcublasLt.so.13, in the order tried"
  site=$(timeout 30 python3 -c 'import site, sys; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
  for dir in ${MOESERVE_CUBLAS_DIR:-} $(for s in $site; do echo "$s/nvidia/cu13/lib" "$s/nvidia/cublas/lib"; done) \
    /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    if [[ -e "$dir/libcublasLt.so.13" ]]; then
      echo "found: $dir/libcublasLt.so.13 -> $(readlink -f "$dir/libcublasLt.so.13")"
      [[ -z "$cublas_dir" ]] && cublas_dir=$dir
    else
      echo "absent: $dir"
    fi
  done
  # Anything else under site-packages/nvidia, for the record.
  for s in $site; do [[ -d "$s/nvidia" ]] && timeout 30 find "$s/nvidia" -name 'libcublasLt.so*'; done
} >"$work/libraries.txt" 2>&1
echo "cublasLt: ${cublas_dir:-NOT FOUND}" >>"$summary"
[[ -z "$cublas_dir" ]] && fail "libcublasLt.so.13 not found (see libraries.txt in the tarball)"
export MOESERVE_MATMUL_LOG=1  # the CUDA backend logs its cuBLASLt choice per matmul shape
export LD_LIBRARY_PATH="$PWD/$bins/lib${cublas_dir:+:$cublas_dir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

mapfile -t expected < <(sed -n 's/^binary: //p' "$bins/MANIFEST.txt" 2>/dev/null)
[[ ${#expected[@]} -eq 0 ]] && fail "$bins/MANIFEST.txt lists no binaries"
for name in "${expected[@]}"; do
  [[ -x "$bins/bin/$name" ]] || fail "binary $name (in MANIFEST.txt) is missing from $bins/bin"
done
# The machine's own libstdc++/libgcc_s unless a binary needs newer ones than it has.
unresolved() { for b in "$bins"/bin/*; do ldd "$b" 2>&1 | grep "not found"; done; }
if [[ -n "$(unresolved)" && -d "$bins/lib-fallback" ]]; then
  { echo "without lib-fallback:"; unresolved; } >>"$work/libraries.txt"
  export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$PWD/$bins/lib-fallback"
  echo "libstdc++: the bundled fallback (the machine's is too old or missing)" >>"$summary"
else
  echo "libstdc++: the machine's own" >>"$summary"
fi
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >>"$work/libraries.txt"
for bin in "$bins"/bin/*; do
  echo "== ${bin##*/}" >>"$work/libraries.txt"
  ldd "$bin" >>"$work/libraries.txt" 2>&1
  if ldd "$bin" 2>&1 | grep -q "not found"; then
    fail "${bin##*/}: $(ldd "$bin" 2>&1 | grep 'not found' | tr -s ' \t\n' ' ')"
  fi
done
cuda_runtime=$(sed -n 's/^nvcc: //p' "$bins/MANIFEST.txt" 2>/dev/null)
echo "cuda runtime (static, from the build): ${cuda_runtime:-?}" >>"$summary"

# ---- 3. Tests. Counts come from the gtest JSON (python3: the machine's torch python); skip
# messages (not in gtest's JSON) from the log.
echo "tests (binary: total passed failed skipped, GPU skips count as failures unless expected):" >>"$summary"
: >"$work/failures.txt"
# The runtime tests' fixtures: this repository copy's tests/data (the compiled-in path is the
# build machine's).
export MOESERVE_TEST_DATA_DIR=$PWD/tests/data
[[ -d "$MOESERVE_TEST_DATA_DIR/golden" ]] || fail "$MOESERVE_TEST_DATA_DIR/golden is missing (golden and engine tests need it)"
for bin in "$bins"/bin/*; do
  name=${bin##*/}
  [[ "$name" == *bench* ]] && continue
  filter=()
  [[ "$name" == golden_* || "$name" == unit_* ]] && filter=(--gtest_filter='*cuda*')
  limit=$(step_limit 180)
  json=$work/$name.json
  t0=$SECONDS
  timeout "$limit" "$bin" "${filter[@]}" --gtest_output="json:$json" >"$work/$name.log" 2>&1
  rc=$?
  secs=$((SECONDS - t0))
  if [[ ! -s "$json" ]]; then
    fail "$name: no results (exit $rc after ${secs}s$([[ $rc == 124 ]] && echo ', timed out')); log tail:"
    tail -15 "$work/$name.log" | sed 's/^/    /' | tee -a "$summary"
    continue
  fi
  python3 - "$json" "$name" "$rc" "$secs" "$work/failures.txt" "$work/$name.log" >>"$summary" <<'EOF'
import json, sys
path, name, rc, secs, failures_path, log_path = sys.argv[1:]
data = json.load(open(path))
# Skip messages from the log: "file:line: Skipped", the message, then "[  SKIPPED ] Suite.Name".
skip_message, pending = {}, None
for line in open(log_path, errors="replace").read().splitlines():
    if line.endswith(": Skipped"):
        pending = []
    elif line.startswith("[  SKIPPED ] ") and pending is not None:
        skip_message[line[13:].split(" (")[0].strip()] = " ".join(pending).strip()
        pending = None
    elif pending is not None:
        pending.append(line.strip())
total = passed = 0
failed, skipped, gpu_skipped, expected_skips = [], [], [], []
for suite in data.get("testsuites", []):
    for case in suite.get("testsuite", []):
        full = f'{suite["name"]}.{case["name"]}'
        total += 1
        if case.get("failures"):
            failed.append((full, case["failures"]))
        elif case.get("result") == "SKIPPED":
            skipped.append(full)
            message = skip_message.get(full, "")
            if message.startswith("[expected skip]"):
                expected_skips.append((full, message))
            elif "cuda" in full.lower():
                gpu_skipped.append(full)
        else:
            passed += 1
print(f"  {name}: {total} {passed} {len(failed)} {len(skipped)}  (exit {rc}, {secs}s)"
      + (f", {len(expected_skips)} expected skips" if expected_skips else ""))
for full, _ in failed[:20]:
    print(f"    FAILED {full}")
if len(failed) > 20:
    print(f"    ... and {len(failed) - 20} more failed")
for full in gpu_skipped[:5]:
    print(f"    SKIPPED (GPU) {full}")
if len(gpu_skipped) > 5:
    print(f"    ... and {len(gpu_skipped) - 5} more GPU tests skipped")
if gpu_skipped:  # the reason, once
    print(f"    skip reason: {skip_message.get(gpu_skipped[0], '?')[:300]}")
reasons = {}  # expected skips: each distinct reason once, with a count
for full, message in expected_skips:
    reasons.setdefault(message, []).append(full)
for message, names in reasons.items():
    print(f"    expected skip x{len(names)} (e.g. {names[0]}): {message[:300]}")
with open(failures_path, "a") as f:
    for full, msgs in failed:
        f.write(f"==== {name}: {full}\n")
        for m in msgs:
            f.write(m.get("failure", "") + "\n")
sys.exit(1 if failed or gpu_skipped or rc not in ("0", "1") else 0)
EOF
  py_rc=$?
  if [[ $py_rc != 0 ]]; then
    failed=1
    echo "FAIL: $name" >>"$summary"
  fi
done

# ---- 4. Benchmarks (about 4 minutes at most in all; docs/benchmarks.md explains the numbers).
# Each under `timeout`, its stdout (JSON, or text for gpu_backend_ops_bench) in <name>.json and its log in <name>.log in the
# tarball, the JSON also in the summary. The budget bounds them with the rest: a step gets what
# is left, so a slow test run shortens the benchmarks rather than the whole check.
#   gpu_backend_ops_bench   per-op timings (tests/gpu), 60 s
#   moeserve_bench          `bench --preset mixtral-8x7b` on CUDA: 93 GB of random bf16 weights
#                           made on the device, copy bandwidth, decode at batch 1/8/64/256 with a
#                           512-token context, prefill 512/4096, the MoE block at 1..1024 tokens;
#                           150 s. --dry-run: the tiny preset on the CPU at tiny sizes.
#   bench/hf_moe_bench.py   transformers' MixtralSparseMoeBlock, same shape, eager and (if the
#                           installed transformers has it) grouped_mm; 60 s. Skipped without torch.
run_bench() {  # name want_seconds command...
  local name=$1 want=$2
  shift 2
  local limit
  limit=$(step_limit "$want")
  local t0=$SECONDS
  timeout "$limit" "$@" >"$work/$name.json" 2>"$work/$name.log"
  local rc=$?
  echo "bench $name: exit $rc after $((SECONDS - t0))s (limit ${limit}s$([[ $rc == 124 ]] && echo ', TIMED OUT'))" >>"$summary"
  if grep -q '^{' "$work/$name.json"; then  # a JSON benchmark: its result line
    grep '^{' "$work/$name.json" | tail -1 | cut -c1-6000 | sed 's/^/    /' >>"$summary"
  else  # a text one (gpu_backend_ops_bench): its first lines
    head -60 "$work/$name.json" | sed 's/^/    /' >>"$summary"
  fi
  [[ $rc != 0 ]] && { tail -8 "$work/$name.log" | sed 's/^/    log: /' >>"$summary"; fail "benchmark $name exited $rc"; }
}
for bin in "$bins"/bin/*bench*; do
  [[ -e "$bin" ]] || continue
  name=${bin##*/}
  case "$name" in
    moeserve_bench)
      if [[ $dry_run == 1 ]]; then
        run_bench "$name" 120 "$bin" bench --device cpu --preset tiny --batches 1,4 --context 32 \
          --warmup 1 --steps 2 --prefill-tokens 32 --moe-tokens 1,16 --copy-mib 16
      else
        run_bench "$name" 150 "$bin" bench --device cuda --preset mixtral-8x7b
      fi
      ;;
    *) run_bench "$name" 60 "$bin" ;;
  esac
done
if timeout 30 python3 -c 'import torch, transformers' 2>/dev/null; then
  if [[ $dry_run == 1 ]]; then
    run_bench hf_moe_bench 60 python3 bench/hf_moe_bench.py --device cpu --hidden 256 \
      --intermediate 512 --tokens 1,16 --iters 2
  else
    run_bench hf_moe_bench 60 python3 bench/hf_moe_bench.py
  fi
else
  echo "bench hf_moe_bench: skipped (python3 has no torch + transformers)" >>"$summary"
fi

elapsed=$((SECONDS - start))
{
  echo "elapsed: ${elapsed}s"
  if [[ $dry_run == 1 ]]; then
    echo "DRY RUN without a GPU: every CUDA case skipped, so this run reports failure by design;"
    echo "what matters here is that the CPU cases passed and every binary started."
  fi
  [[ $failed == 0 ]] && echo "RESULT: PASS" || echo "RESULT: FAIL"
} >>"$summary"

cp "$summary" "$out/summary.txt"
cp "$work/failures.txt" "$out/failures.txt"
cp "$bins/MANIFEST.txt" "$work/" 2>/dev/null
tar -czf "$out/gpu-check.tar.gz" -C "$work" . 2>/dev/null
cat "$out/summary.txt"
exit $failed
