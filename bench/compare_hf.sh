#!/usr/bin/env bash
# moeserve vs Hugging Face transformers on the same weights, in the same run (CPU).
#   bench/compare_hf.sh [PYTHON] [PRESET]
# PYTHON: an interpreter with torch + transformers (default /root/venv-fixtures/bin/python;
# create one with: python3 -m venv V && V/bin/pip install torch transformers safetensors).
# Writes the model with `moeserve make-model`, then prints one JSON line per engine and thread count.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-/root/venv-fixtures/bin/python}
preset=${2:-tiny}
model=$(mktemp -d)/$preset
trap 'rm -rf "$(dirname "$model")"' EXIT
./build/server/moeserve make-model --config "$preset" --out "$model" >&2
for threads in 1 2; do
  for shape in "64 32 1" "256 32 8"; do
    read -r prompt gen batch <<<"$shape"
    ./build/server/moeserve bench --model "$model" --threads "$threads" \
      --prompt-len "$prompt" --gen-len "$gen" --batch "$batch" --repeat 3
    "$python" bench/hf_bench.py --model "$model" --threads "$threads" \
      --prompt-len "$prompt" --gen-len "$gen" --batch "$batch" 2>/dev/null | tail -1
  done
done
