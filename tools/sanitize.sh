#!/usr/bin/env bash
# The sanitizer stage of CI (.ci/run calls it after the README test command):
#   1. build-asan (clang, ASan + UBSan, halt on the first report): the unit and golden tests once,
#      every committed fuzz input once (tests/fuzz: seeds and crash reproducers), then each
#      libFuzzer harness for ${MOESERVE_FUZZ_TIME:-60} s (tools/fuzz.sh)
#   2. build-tsan (clang, TSan): the engine and communicator tests
# Only what these need is built, without the gRPC / HTTP front ends. docs/reliability.md says what
# is covered and what is not. Options:
#   --configure-asan   only configure build-asan (tools/fuzz.sh uses it)
#   --skip-fuzz        steps 1 and 2 without the timed fuzzing
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
asan_dir=${MOESERVE_ASAN_BUILD_DIR:-build-asan}
tsan_dir=${MOESERVE_TSAN_BUILD_DIR:-build-tsan}
jobs=${MOESERVE_JOBS:-$(nproc)}
export PATH="/usr/lib/llvm-14/bin:$PATH"  # llvm-symbolizer, for stacks in reports

configure() {  # configure DIR SANITIZERS FUZZ
  local dir=$1
  mkdir -p "$dir"
  [[ -f $dir/build.ninja ]] && return 0
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DMOESERVE_CUDA=OFF -DMOESERVE_FRONTENDS=OFF -DMOESERVE_SANITIZE="$2" -DMOESERVE_FUZZ="$3" \
    >"$dir.cmake.log" 2>&1 || { cat "$dir.cmake.log" >&2; return 1; }
}
test_targets() {  # test_targets DIR...: the gtest executables of tests/DIR
  local d f
  for d in "$@"; do
    for f in tests/"$d"/*_test.cc; do
      f=$(basename "$f" .cc)
      echo "${d}_$f"
    done
  done
}

configure "$asan_dir" "address,undefined" ON
[[ ${1:-} == --configure-asan ]] && exit 0
skip_fuzz=0
[[ ${1:-} == --skip-fuzz ]] && skip_fuzz=1

stage_start=$(date +%s)
echo "== sanitize: ASan + UBSan build ($asan_dir)"
# shellcheck disable=SC2046
ninja -C "$asan_dir" -j "$jobs" $(test_targets unit golden) \
  fuzz_safetensors_header fuzz_model_config fuzz_placement_json fuzz_chat_template \
  fuzz_openai_request
echo "== sanitize: unit, golden and fuzz-replay tests under ASan + UBSan"
(
  cd "$asan_dir"
  # Halt on the first report (UBSan: -fno-sanitize-recover=all at compile time); leaks are
  # checked at exit. lsan.supp lists leaks inside uninstrumented Debian libraries, with reasons.
  export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:strict_init_order=1"
  export LSAN_OPTIONS="suppressions=$root/tests/sanitizers/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
  ctest -j "$jobs" -L 'unit|golden|fuzz' --output-on-failure --timeout 1200
)
echo "== sanitize: ASan + UBSan tests took $(($(date +%s) - stage_start)) s"

if [[ $skip_fuzz -eq 0 ]]; then
  stage_start=$(date +%s)
  tools/fuzz.sh --no-build --time "${MOESERVE_FUZZ_TIME:-60}"
  echo "== sanitize: fuzzing took $(($(date +%s) - stage_start)) s"
fi

stage_start=$(date +%s)
echo "== sanitize: TSan build ($tsan_dir)"
configure "$tsan_dir" thread OFF
ninja -C "$tsan_dir" -j "$jobs" unit_engine_test unit_communicator_test
echo "== sanitize: engine and communicator tests under TSan"
(
  cd "$tsan_dir"
  export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1:suppressions=$root/tests/sanitizers/tsan.supp"
  # Archer (LLVM's OpenMP tool) tells TSan about libomp's barriers and tasks, which Debian's
  # libomp does not annotate itself; without it every parallel kernel would be a false race.
  export OMP_TOOL_LIBRARIES=/usr/lib/llvm-14/lib/libarcher.so
  ctest -j "$jobs" -R '^unit\.([A-Za-z0-9]+/)?(EngineTest|CommunicatorTest|CommunicatorErrorsTest)\.' \
    --output-on-failure --timeout 1200
)
echo "== sanitize: TSan tests took $(($(date +%s) - stage_start)) s"
