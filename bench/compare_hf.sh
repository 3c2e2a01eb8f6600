#!/usr/bin/env bash
# moeserve vs Hugging Face transformers on the same weights, in the same run (CPU), alternating
# engines; prints JSON lines and a Markdown table headed with the processor (bench/compare_hf.py).
#   bench/compare_hf.sh [PYTHON] [PRESET] [more compare_hf.py flags, e.g. --rounds 5]
# PYTHON: an interpreter with torch + transformers (default /root/venv-fixtures/bin/python;
# create one with: python3 -m venv V && V/bin/pip install torch transformers safetensors).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-/root/venv-fixtures/bin/python}
preset=${2:-tiny}
shift $(($# < 2 ? $# : 2))
exec "$python" bench/compare_hf.py --python "$python" --preset "$preset" "$@"
