#!/usr/bin/env python3
"""moeserve vs Hugging Face transformers on the same weights, in one run, alternating engines (CPU).

For every thread count and shape, the two engines run one after the other, --rounds times
(moeserve, transformers, moeserve, transformers, ...), so slow drift of a shared machine hits
both alike. Each engine run reports its own median of 3 repeats; the table gives the median over
rounds. Prints one JSON line per engine run to stderr-free stdout, then a Markdown table headed
with the processor model, its vector/matrix flags, the kernel path moeserve chose and the
library versions, ready for docs/benchmarks.md.

  bench/compare_hf.py --moeserve build/server/moeserve --python /root/venv-fixtures/bin/python

Needs only the standard library itself; PYTHON must have torch + transformers (hf_bench.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The ISA flags that decide which kernels either engine can use.
FLAGS_OF_INTEREST = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni",
                     "amx_tile", "amx_bf16", "amx_int8"]


def cpu_description() -> tuple[str, list[str]]:
    model, flags, ids = platform.processor() or "unknown", [], {}
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() in ("cpu family", "model"):
                ids[key.strip()] = value.strip()  # a VM's model name can be as vague as "AMD EPYC"
            elif key.strip() == "flags":
                have = set(value.split())
                flags = [f for f in FLAGS_OF_INTEREST if f in have]
                break
    except OSError:
        pass
    if ids:
        model += f" (family {ids.get('cpu family', '?')}, model {ids.get('model', '?')})"
    return model, flags


def run_json(cmd: list[str], env: dict[str, str]) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"exit {proc.returncode}: {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    out = proc.stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        sys.exit(f"no JSON line from: {' '.join(cmd)}\n{out}")
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moeserve", default=str(ROOT / "build/server/moeserve"))
    ap.add_argument("--python", default="/root/venv-fixtures/bin/python",
                    help="interpreter with torch + transformers for bench/hf_bench.py")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--model", help="an existing HF-layout model dir (default: make-model --config PRESET)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--shapes", default="64x1,256x8", help="PROMPTxBATCH,... (decode steps: --gen-len)")
    ap.add_argument("--gen-len", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hf-dtype", default="auto", help="hf_bench.py --dtype (auto = the checkpoint's: bf16)")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    model = args.model
    if model is None:
        model = os.path.join(tmp.name, args.preset)
        subprocess.run([args.moeserve, "make-model", "--config", args.preset, "--out", model], check=True,
                       capture_output=True)
    env = dict(os.environ)
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        for shape in args.shapes.split(","):
            prompt, batch = (int(v) for v in shape.split("x"))
            ours, theirs = [], []
            for _ in range(args.rounds):
                ours.append(run_json([args.moeserve, "bench", "--model", model, "--threads", str(threads),
                                      "--prompt-len", str(prompt), "--gen-len", str(args.gen_len),
                                      "--batch", str(batch), "--repeat", "3"], env))
                print(json.dumps(ours[-1]), flush=True)
                theirs.append(run_json([args.python, str(ROOT / "bench/hf_bench.py"), "--model", model,
                                        "--threads", str(threads), "--prompt-len", str(prompt),
                                        "--gen-len", str(args.gen_len), "--batch", str(batch),
                                        "--dtype", args.hf_dtype], env))
                print(json.dumps(theirs[-1]), flush=True)
            med = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
            rows.append((threads, f"{batch} × {prompt}, {args.gen_len}", med(ours, "prefill_tok_s"),
                         med(theirs, "prefill_tok_s"), med(ours, "decode_tok_s"), med(theirs, "decode_tok_s"),
                         ours[0].get("cpu_kernels", "?"), theirs[0]))

    cpu, flags = cpu_description()
    hf = rows[0][7]
    print()
    print(f"{datetime.date.today().isoformat()}, {cpu} ({os.cpu_count()} vCPU), flags: {' '.join(flags) or 'none'};")
    print(f"moeserve kernels: {rows[0][6]}; transformers {hf.get('transformers_version')} / torch "
          f"{hf.get('torch_version')} in {hf.get('dtype')} ({hf.get('attn_implementation')} attention, "
          f"{hf.get('experts_implementation')} experts); medians of {args.rounds} alternating rounds.")
    print()
    print("| threads | batch × prompt, decode steps | moeserve prefill tok/s | HF prefill tok/s | ratio |"
          " moeserve decode tok/s | HF decode tok/s | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for threads, shape, op, hp, od, hd, _, _ in rows:
        print(f"| {threads} | {shape} | {op:.0f} | {hp:.0f} | {op / hp:.2f}× | {od:.1f} | {hd:.1f} | {od / hd:.2f}× |")


if __name__ == "__main__":
    main()
