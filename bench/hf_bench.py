#!/usr/bin/env python3
"""Baseline throughput of Hugging Face transformers on a Mixtral checkpoint (CPU or GPU).

Measures
  (a) prefill tokens/s: one forward over batch x prompt_len random tokens (no cache),
  (b) decode tokens/s: after a cached prefill, gen_len greedy single-token steps with
      a KV cache (past_key_values); tokens/s = batch * gen_len / decode time.
Each measurement is repeated --repeats times (default 3) after a warm-up; the median
is reported. Prints one JSON line, e.g.

  {"engine": "hf-transformers", "prefill_tok_s": ..., "decode_tok_s": ..., "torch_threads": ...}

Example:
  /root/venv-fixtures/bin/python bench/hf_bench.py --model tests/data/golden/fp32_window \
      --prompt-len 64 --gen-len 32 --batch 1 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import transformers
from transformers import DynamicCache, MixtralForCausalLM

DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def prefill_once(model, ids, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    model(input_ids=ids, use_cache=False, logits_to_keep=1)
    sync(device)
    return time.perf_counter() - t0


@torch.inference_mode()
def decode_once(model, ids, gen_len, device) -> tuple[float, list[int]]:
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    tok = out.logits[:, -1].argmax(-1, keepdim=True)
    generated = []
    sync(device)
    t0 = time.perf_counter()
    for _ in range(gen_len):
        out = model(input_ids=tok, past_key_values=cache, use_cache=True)
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        generated.append(tok)
    sync(device)
    dt = time.perf_counter() - t0
    return dt, torch.cat(generated, dim=1)[0].tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="HF-layout Mixtral directory (config.json + safetensors)")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--gen-len", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="auto",
                    help="auto = the checkpoint's dtype; float32 = fp32 compute")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--attn", default="sdpa", help="attn_implementation (sdpa, eager, ...)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2, help="warm-up iterations of each phase")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    t_load = time.perf_counter()
    model = MixtralForCausalLM.from_pretrained(args.model, dtype=DTYPES[args.dtype], attn_implementation=args.attn)
    model.to(device).eval()
    load_s = time.perf_counter() - t_load
    cfg = model.config
    vocab = cfg.vocab_size
    if args.prompt_len + args.gen_len + 1 > cfg.max_position_embeddings:
        sys.exit("prompt_len + gen_len exceeds max_position_embeddings")

    g = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(3, vocab, (args.batch, args.prompt_len), generator=g).to(device)

    # Warm-up (prefill and a short decode).
    for _ in range(args.warmup):
        prefill_once(model, ids, device)
        decode_once(model, ids, min(4, args.gen_len), device)

    prefill_times = [prefill_once(model, ids, device) for _ in range(args.repeats)]
    decode_runs = [decode_once(model, ids, args.gen_len, device) for _ in range(args.repeats)]
    decode_times = [t for t, _ in decode_runs]
    p_med = statistics.median(prefill_times)
    d_med = statistics.median(decode_times)
    n_params = sum(p.numel() for p in model.parameters())

    result = {
        "engine": "hf-transformers",
        "model": args.model,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "device": str(device),
        "attn_implementation": cfg._attn_implementation,
        "experts_implementation": getattr(cfg, "_experts_implementation", None),
        "batch": args.batch,
        "prompt_len": args.prompt_len,
        "gen_len": args.gen_len,
        "prefill_tok_s": args.batch * args.prompt_len / p_med,
        "decode_tok_s": args.batch * args.gen_len / d_med,
        "prefill_s_median": p_med,
        "decode_s_median": d_med,
        "decode_ms_per_step": 1000.0 * d_med / max(1, args.gen_len),
        "prefill_s_runs": prefill_times,
        "decode_s_runs": decode_times,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "n_params": n_params,
        "load_s": load_s,
        "first_greedy_tokens": decode_runs[0][1][:8],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
