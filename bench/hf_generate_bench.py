#!/usr/bin/env python3
"""transformers' generate() on a Mixtral-shaped model that fits one GPU, against moeserve on the
same shape (docs/benchmarks.md, "GPU").

The model: Mixtral 8x7B's full width (hidden 4096, 8 experts x 14336, GQA 32/8, vocab 32000) with
--layers layers (default 4: ~11.7 GB of bf16), random init created directly on the device
(normal, std 0.02), bf16, eager attention unless --attn says otherwise. Measured, each the median
of --repeats after a warm-up:
  prefill_ms    generate(max_new_tokens=1) on --batch x --prompt-len random tokens
  generate_ms   generate(max_new_tokens=--gen-len, min_new_tokens=--gen-len), greedy, KV cache
  decode_tok_s  batch * (gen_len - 1) / (generate_ms - prefill_ms)
With --moeserve PATH (the moeserve or moeserve_bench binary), the same shape is also run through
`PATH bench --preset mixtral-8x7b --layers N --device cuda` (synthetic context of --prompt-len
tokens, decode batch --batch, prefill of --prompt-len tokens) and its JSON is included under
"moeserve". Prints one JSON object.

  python3 bench/hf_generate_bench.py --moeserve gpu-bins/bin/moeserve_bench
The weights differ between the two engines (both random): compare times, not text.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
import transformers
from transformers import MixtralConfig, MixtralForCausalLM


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def timed_generate(model, ids, new_tokens: int, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=0,
    )
    sync(device)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--intermediate", type=int, default=14336)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--gen-len", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--attn", default="eager", help="attn_implementation: eager | sdpa | ...")
    ap.add_argument("--moeserve", default="", help="moeserve / moeserve_bench binary to compare")
    ap.add_argument("--moeserve-timeout", type=int, default=180)
    args = ap.parse_args()

    device = torch.device(args.device)
    heads = max(1, args.hidden // 128)
    config = MixtralConfig(
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 4),
        num_local_experts=8,
        num_experts_per_tok=2,
        vocab_size=32000,
        max_position_embeddings=32768,
        rope_theta=1e6,
    )
    config._attn_implementation = args.attn  # the attribute every 4.x / 5.x version reads
    torch.manual_seed(0)
    t0 = time.perf_counter()
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # build in bf16: no fp32 copy of the weights
    with torch.device(device):
        model = MixtralForCausalLM(config)
    torch.set_default_dtype(default_dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    model.eval()
    init_s = time.perf_counter() - t0

    ids = torch.randint(3, 32000, (args.batch, args.prompt_len), device=device)
    timed_generate(model, ids, 2, device)  # warm-up
    prefill = statistics.median(timed_generate(model, ids, 1, device) for _ in range(args.repeats))
    total = statistics.median(timed_generate(model, ids, args.gen_len, device) for _ in range(args.repeats))
    decode_s = max(total - prefill, 1e-9)
    result = {
        "engine": "hf-transformers",
        "bench": "generate",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "layers": args.layers,
        "hidden": args.hidden,
        "intermediate": args.intermediate,
        "attn": args.attn,
        "batch": args.batch,
        "prompt_len": args.prompt_len,
        "gen_len": args.gen_len,
        "init_s": init_s,
        "prefill_ms": prefill * 1e3,
        "prefill_tok_s": args.batch * args.prompt_len / prefill,
        "generate_ms": total * 1e3,
        "decode_tok_s": args.batch * (args.gen_len - 1) / decode_s,
        "decode_ms_per_step": decode_s * 1e3 / max(1, args.gen_len - 1),
    }
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()

    if args.moeserve:
        cmd = [
            args.moeserve, "bench", "--device", "cuda" if device.type == "cuda" else "cpu",
            "--preset", "mixtral-8x7b", "--layers", str(args.layers),
            "--batches", str(args.batch), "--context", str(args.prompt_len),
            "--prefill-tokens", str(args.prompt_len), "--moe-tokens", str(args.batch),
            "--copy-mib", "1024",
        ]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.moeserve_timeout)
            lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
            result["moeserve"] = json.loads(lines[-1]) if lines else None
            result["moeserve_exit"] = p.returncode
            if p.returncode != 0:
                result["moeserve_stderr_tail"] = p.stderr[-2000:]
        except (subprocess.TimeoutExpired, OSError, json.JSONDecodeError) as e:
            result["moeserve_error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
