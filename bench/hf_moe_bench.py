#!/usr/bin/env python3
"""transformers' MixtralSparseMoeBlock alone, timed per token count (the baseline for the
`moe_layer` rows of `moeserve bench --preset mixtral-8x7b`, docs/benchmarks.md).

One MoE block of Mixtral 8x7B's shape (hidden 4096, 8 experts x 14336, top-2) in bf16 on the GPU,
random weights (normal, std 0.02: the router's logits then spread enough for varied routing)
created directly on the device. Input: [1, tokens, hidden] random normal activations. For each
token count: --warmup untimed calls, then --iters calls timed with CUDA events (mean per call).

Implementations: "eager" (the per-expert Python loop) always; with transformers >= 5 (the experts
interface: config._experts_implementation / ALL_EXPERTS_FUNCTIONS) also every other registered
one, e.g. "grouped_mm" (torch._grouped_mm) and "batched_mm". What the installed version offers
is detected and reported ("implementations"); one that fails is reported with its error.

Prints one JSON object. Example (GPU machine):
  python3 bench/hf_moe_bench.py                      # full size, tokens 1..1024
  python3 bench/hf_moe_bench.py --device cpu --hidden 256 --intermediate 512 --tokens 1,8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback

import torch
import transformers
from transformers import MixtralConfig
from transformers.models.mixtral import modeling_mixtral


def available_implementations() -> list[str]:
    """"eager" plus whatever the installed transformers registers for experts modules."""
    impls = ["eager"]
    try:
        from transformers.integrations import moe as hf_moe  # transformers >= 5

        registry = getattr(hf_moe, "ALL_EXPERTS_FUNCTIONS", None)
        names = []
        if registry is not None:
            if hasattr(registry, "valid_keys"):
                names = list(registry.valid_keys())
            elif hasattr(registry, "keys"):
                names = list(registry.keys())
        impls += [n for n in names if n != "eager"]
    except ImportError:
        pass
    major = int(transformers.__version__.split(".")[0])
    if len(impls) == 1 and major >= 5:
        # The registry moved or is named differently: try the names transformers 5 documents;
        # one the installed version does not know fails and is reported under "errors".
        impls += ["grouped_mm", "batched_mm"]
    return impls


def make_block(config: MixtralConfig, impl: str, device: torch.device, dtype: torch.dtype):
    if impl != "eager" or hasattr(config, "_experts_implementation"):
        config._experts_implementation = impl
    with torch.device(device):
        block = modeling_mixtral.MixtralSparseMoeBlock(config).to(dtype)
    with torch.no_grad():
        for p in block.parameters():  # v5 experts are torch.empty until a model's _init_weights
            p.normal_(0.0, 0.02)
    return block.eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_block(block, x: torch.Tensor, warmup: int, iters: int, device: torch.device) -> float:
    """Mean seconds per call."""
    for _ in range(warmup):
        block(x)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        sync(device)
        start.record()
        for _ in range(iters):
            block(x)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        block(x)
    return (time.perf_counter() - t0) / iters


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--intermediate", type=int, default=14336)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--tokens", default="1,2,4,8,16,32,64,128,256,512,1024")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--impls", default="auto", help="comma list, or auto (every one detected)")
    args = ap.parse_args()

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    tokens = [int(t) for t in args.tokens.split(",") if t]
    impls = available_implementations() if args.impls == "auto" else args.impls.split(",")
    torch.manual_seed(0)
    result = {
        "engine": "hf-transformers",
        "bench": "MixtralSparseMoeBlock",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype,
        "hidden": args.hidden,
        "intermediate": args.intermediate,
        "experts": args.experts,
        "top_k": args.top_k,
        "implementations": impls,
        "results": {},
        "errors": {},
    }
    for impl in impls:
        config = MixtralConfig(
            hidden_size=args.hidden,
            intermediate_size=args.intermediate,
            num_local_experts=args.experts,
            num_experts_per_tok=args.top_k,
            num_hidden_layers=1,
        )
        try:
            block = make_block(config, impl, device, dtype)
            rows = []
            for t in tokens:
                x = torch.randn(1, t, args.hidden, device=device, dtype=dtype)
                s = time_block(block, x, args.warmup, args.iters, device)
                flops = 2.0 * t * (args.hidden * args.experts + args.top_k * 3.0 * args.hidden * args.intermediate)
                rows.append({"tokens": t, "ms": s * 1e3, "tflop_s": flops / s / 1e12})
                print(f"{impl} tokens={t}: {s * 1e3:.3f} ms", file=sys.stderr)
            result["results"][impl] = rows
        except Exception as e:  # noqa: BLE001 - report and go on with the next implementation
            result["errors"][impl] = f"{type(e).__name__}: {e}"
            traceback.print_exc(file=sys.stderr)
        finally:
            block = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(json.dumps(result))
    return 0 if result["results"] else 1


if __name__ == "__main__":
    sys.exit(main())
