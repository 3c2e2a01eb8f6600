#!/usr/bin/env bash
# Runs the libFuzzer harnesses of tests/fuzz under ASan + UBSan, each for a bounded time, and
# fails on any crash, timeout or out-of-memory whose signature is not in
# tests/fuzz/known_crashes.tsv (a crash already reported, waiting for its fix).
#   tools/fuzz.sh                      every harness, 60 s each (what CI runs)
#   tools/fuzz.sh --time 600           the longer run: 10 minutes each
#   tools/fuzz.sh --only model_config  one harness (repeatable)
# Options: --time S (per harness), --only NAME, --no-build (use the build as it is).
# Builds the harnesses into ${MOESERVE_ASAN_BUILD_DIR:-build-asan} (clang, MOESERVE_FUZZ=ON).
# Output: $OUT (default <build>/fuzz-out): per harness a log, the corpus grown from the seeds
# (tests/fuzz/corpus is only read), the crash artifacts; summary.tsv with executions, coverage
# and crashes; new_crashes/ holds every new crash input with its report.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
time_s=60
only=()
build=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --time) time_s=$2; shift 2 ;;
    --only) only+=("$2"); shift 2 ;;
    --no-build) build=0; shift ;;
    *) echo "usage: tools/fuzz.sh [--time SECONDS] [--only HARNESS]... [--no-build]" >&2; exit 2 ;;
  esac
done
harnesses=(safetensors_header model_config placement_json chat_template openai_request)
[[ ${#only[@]} -gt 0 ]] && harnesses=("${only[@]}")
bdir=${MOESERVE_ASAN_BUILD_DIR:-build-asan}
if [[ $build -eq 1 ]]; then
  tools/sanitize.sh --configure-asan
  ninja -C "$bdir" -j "${MOESERVE_JOBS:-$(nproc)}" "${harnesses[@]/#/fuzz_}"
fi
out=${OUT:-$bdir/fuzz-out}
mkdir -p "$out"
export PATH="/usr/lib/llvm-14/bin:$PATH"  # llvm-symbolizer
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
fuzz_dir=$root/tests/fuzz
declare -A known=()
while IFS=$'\t' read -r h sig _; do
  [[ -z ${h:-} || $h == \#* ]] && continue
  known["$h|$sig"]=1
done <"$fuzz_dir/known_crashes.tsv"

printf 'harness\tseconds\texecutions\tcoverage\tfeatures\tcorpus\tknown_crashes\tnew_crashes\n' \
  >"$out/summary.tsv"
new_total=0
for h in "${harnesses[@]}"; do
  hout=$out/$h
  rm -rf "$hout/artifacts"
  mkdir -p "$hout/corpus" "$hout/artifacts"
  dict=()
  [[ -f $fuzz_dir/$h.dict ]] && dict=(-dict="$fuzz_dir/$h.dict")
  echo "== fuzz $h for ${time_s} s"
  # Fork mode with -ignore_*: a known crash does not end the run; every crash, timeout and OOM
  # is kept as an artifact and judged below. The grown corpus goes to $hout/corpus (first dir).
  "$bdir/tests/fuzz/fuzz_$h" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    -max_total_time="$time_s" -print_funcs=0 -timeout=10 -rss_limit_mb=2048 -max_len=8192 "${dict[@]}" \
    -artifact_prefix="$hout/artifacts/" "$hout/corpus" "$fuzz_dir/corpus/$h" \
    >"$hout/log" 2>&1 || true
  stats=$(grep -E '^#[0-9]+: cov:' "$hout/log" | tail -1)
  execs=$(sed -E 's/^#([0-9]+):.*/\1/' <<<"$stats")
  cov=$(grep -oE 'cov: [0-9]+' <<<"$stats" | cut -d' ' -f2)
  ft=$(grep -oE 'ft: [0-9]+' <<<"$stats" | cut -d' ' -f2)
  corp=$(grep -oE 'corp: [0-9]+' <<<"$stats" | cut -d' ' -f2)
  n_known=0 n_new=0
  declare -A seen=()
  for a in "$hout/artifacts"/*; do
    [[ -f $a && $a != *.report ]] || continue
    sig=$("$fuzz_dir/signature.sh" "$bdir/tests/fuzz/fuzz_$h" "$a")
    [[ $sig == ok ]] && sig="$(basename "$a" | cut -d- -f1) not reproduced alone"
    if [[ -n ${known["$h|$sig"]:-} ]]; then
      n_known=$((n_known + 1))
      [[ -z ${seen["$sig"]:-} ]] && echo "   known (fix pending): $sig"
    else
      n_new=$((n_new + 1))
      mkdir -p "$out/new_crashes/$h"
      cp "$a" "$a.report" "$out/new_crashes/$h/" 2>/dev/null || cp "$a" "$out/new_crashes/$h/"
      if [[ -z ${seen["$sig"]:-} ]]; then
        echo "   NEW: $sig"
        echo "        input: $out/new_crashes/$h/$(basename "$a")"
      fi
    fi
    seen["$sig"]=1
  done
  unset seen
  new_total=$((new_total + n_new))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$h" "$time_s" "${execs:-?}" "${cov:-?}" "${ft:-?}" \
    "${corp:-?}" "$n_known" "$n_new" >>"$out/summary.tsv"
  echo "   ${execs:-?} executions, coverage ${cov:-?}, corpus ${corp:-?}, crashes: $n_known known, $n_new new"
done
column -t "$out/summary.tsv"
if [[ $new_total -gt 0 ]]; then
  echo "fuzz: $new_total new crash input(s) in $out/new_crashes (reproduce with" \
    "tests/fuzz/signature.sh $bdir/tests/fuzz/fuzz_HARNESS INPUT)" >&2
  exit 1
fi
echo "fuzz: no new crashes"
