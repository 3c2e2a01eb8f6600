#!/usr/bin/env bash
# Prints a crash's signature: what failed and the first moeserve frame of the stack, e.g.
#   json.exception.out_of_range.406 @ moeserve::runtime::SafetensorsFile::Open
# for `signature.sh HARNESS INPUT` (runs the harness once on the input), or "ok" when the input
# does not crash. Line numbers and values are left out, so a signature survives unrelated edits;
# the kind of failure is kept, so a different bug in the same function gets a different one.
# The full report goes to INPUT.report (or $SIGNATURE_REPORT).
set -uo pipefail
harness=$1 input=$2
report=${SIGNATURE_REPORT:-$input.report}
export PATH="/usr/lib/llvm-14/bin:$PATH"  # llvm-symbolizer, for function names
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:symbolize=1"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
if "$harness" -runs=1 "$input" >"$report" 2>&1; then
  echo ok
  exit 0
fi
kind=$(grep -o -m1 -E '\[json\.exception\.[a-z_]+\.[0-9]+\]' "$report" | tr -d '[]')
[[ -z $kind ]] && kind=$(grep -o -m1 -E "terminate called after throwing an instance of '[^']+'" "$report" |
  sed -E "s/.*'(.*)'/uncaught \1/")
[[ -z $kind ]] && kind=$(grep -o -m1 -E 'ERROR: (Address|Leak|Thread)Sanitizer: [a-zA-Z-]+' "$report" |
  sed 's/^ERROR: //')
[[ -z $kind ]] && kind=$(grep -o -m1 -E 'runtime error: [^:]*' "$report" | sed -E 's/[0-9]+/N/g')
[[ -z $kind ]] && kind=$(grep -o -m1 -E 'ERROR: libFuzzer: [a-zA-Z-]+' "$report" | sed 's/^ERROR: //')
[[ -z $kind ]] && kind="unknown failure"
# The first frame in moeserve code that is not the harness itself.
frame=$(grep -E '^ *#[0-9]+ 0x[0-9a-f]+ in moeserve::' "$report" | grep -v '/tests/fuzz/' | head -1 |
  sed -E 's/^ *#[0-9]+ 0x[0-9a-f]+ in //; s/\(anonymous namespace\)/{anon}/g; s/\(.*//; s/ .*//')
echo "$kind @ ${frame:-no moeserve frame}"
