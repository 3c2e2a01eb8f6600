#!/usr/bin/env bash
# CTest's fuzz_replay.<name>: runs harness <name> once on every committed input, no mutation.
#   corpus/<name>/*        seeds: must pass
#   regressions/<name>/*   reproducers of crashes found by fuzzing: must pass, except those listed
#                          in known_crashes.tsv (not fixed yet), which must still crash with the
#                          signature recorded there; one that no longer crashes fails the test
#                          until its line is removed, so the list stays true.
set -uo pipefail
name=$1 harness=$2
dir=$(cd "$(dirname "$0")" && pwd)
known="$dir/known_crashes.tsv"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

declare -A expected=()
while IFS=$'\t' read -r h sig repro _; do
  [[ -z ${h:-} || $h == \#* || $h != "$name" ]] && continue
  expected["$dir/$repro"]=$sig
done <"$known"

inputs=()
for f in "$dir/corpus/$name"/* "$dir/regressions/$name"/*; do
  [[ -f $f && -z ${expected[$f]:-} ]] && inputs+=("$f")
done
failed=0
if [[ ${#inputs[@]} -gt 0 ]]; then
  if ! "$harness" "${inputs[@]}" >"$tmp/replay.log" 2>&1; then
    tail -60 "$tmp/replay.log"
    echo "FAIL: an input of corpus/$name or regressions/$name crashes (above)"
    failed=1
  fi
fi
echo "$name: ${#inputs[@]} inputs pass"
for f in "${!expected[@]}"; do
  got=$(SIGNATURE_REPORT="$tmp/report" "$dir/signature.sh" "$harness" "$f")
  if [[ $got == "${expected[$f]}" ]]; then
    echo "known crash, not fixed yet: ${f#"$dir/"}: $got"
  elif [[ $got == ok ]]; then
    echo "FAIL: ${f#"$dir/"} no longer crashes: remove its line from tests/fuzz/known_crashes.tsv"
    failed=1
  else
    tail -40 "$tmp/report"
    echo "FAIL: ${f#"$dir/"} crashes differently: '$got', known_crashes.tsv says '${expected[$f]}'"
    failed=1
  fi
done
exit $failed
