#!/usr/bin/env python3
"""Per-GPU memory plan for Mixtral 8x7B (bf16) at expert parallelism 2 on 2 x 80 GB GPUs.

Prints the arithmetic that docs/deployment.md shows and that chose the numbers in
deploy/configs/*.env (MOESERVE_KV_BLOCKS, MOESERVE_MAX_NUM_SEQS, ...). Python 3 stdlib only.

    python3 deploy/configs/memory_plan.py            # the whole plan, as markdown
    python3 deploy/configs/memory_plan.py --check    # exit 1 if an env file disagrees with it

Every input is either a model shape (config.json of mistralai/Mixtral-8x7B-v0.1), a constant of
the code (cited) or an assumption (marked ASSUMED): the assumptions are what a first run on the
real GPUs must check (nvidia-smi, the step's high-water mark), then rerun this script.
"""
import argparse
import os
import sys

GiB = 1 << 30
MiB = 1 << 20
BF16 = 2
FP32 = 4

# Mixtral 8x7B config.json.
LAYERS = 32
HIDDEN = 4096
INTERMEDIATE = 14336
EXPERTS = 8
TOP_K = 2
Q_HEADS = 32
KV_HEADS = 8
HEAD_DIM = 128
VOCAB = 32000
MAX_POSITION = 32768

EP = 2
KV_BLOCK_SIZE = 16  # tokens per KV block (--kv-block-size default)
CUBLASLT_WORKSPACE = 32 * MiB  # kernels/cuda/cuda_backend.cc kCublasLtWorkspaceBytes

# ASSUMED reserves per GPU (not measured: no A100/H100 was available to this project).
CUDA_CONTEXT = 1 * GiB  # context + module images of our kernels and cuBLASLt (lazy loading)
NCCL_BUFFERS = GiB // 2  # issue 11: NCCL channels' buffers for one peer
CUDA_GRAPHS = 1 * GiB  # docs/wip/decode-graphs.patch: graphs for the decode batch buckets
MARGIN = 2 * GiB  # stream-ordered pool fragmentation, step-buffer regrowth (old + new), error

# nvidia-smi memory.total (vendor figures; check on the target: nvidia-smi
# --query-gpu=memory.total --format=csv).
GPUS = {
    "a100-80gb": {"name": "A100-SXM4-80GB", "total": 81920 * MiB},
    "h100-80gb": {"name": "H100 80GB HBM3", "total": 81559 * MiB},
}

# Per-GPU choices (the env files must agree; --check verifies it).
CHOICES = {
    # A100: ~312 TFLOP/s bf16 dense, 2.0 TB/s. A 2048-token prefill chunk per rank costs about
    # 2048 * 2 * 12.9e9 active params = 53 TFLOP, ~0.28 s at 60 % of peak: the longest stall a
    # running stream sees when a long prompt arrives. 128 sequences per rank keep a decode step
    # (45 GB of the rank's weights + the KV read) near 30 ms.
    "a100-80gb": {"max_num_batched_tokens": 2048, "max_num_seqs": 128, "max_model_len": 32768},
    # H100: ~989 TFLOP/s, 3.35 TB/s: 4096-token chunks (~0.18 s at 60 %); 192 sequences per rank
    # (the KV of 192 sequences of ~1,200 tokens fits, so a typical chat load is not preempted).
    "h100-80gb": {"max_num_batched_tokens": 4096, "max_num_seqs": 192, "max_model_len": 32768},
}


def params():
    """Parameter counts by part (elements)."""
    q = HIDDEN * Q_HEADS * HEAD_DIM
    kv = HIDDEN * KV_HEADS * HEAD_DIM
    o = Q_HEADS * HEAD_DIM * HIDDEN
    attention = LAYERS * (q + 2 * kv + o)
    router = LAYERS * EXPERTS * HIDDEN
    norms = LAYERS * 2 * HIDDEN + HIDDEN  # input + post-attention per layer, final norm
    embed = VOCAB * HIDDEN
    lm_head = VOCAB * HIDDEN  # untied
    experts = LAYERS * EXPERTS * 3 * HIDDEN * INTERMEDIATE
    return {
        "attention (q, k, v, o)": attention,
        "router": router,
        "norms": norms,
        "embed_tokens": embed,
        "lm_head": lm_head,
        "experts": experts,
    }


def kv_bytes_per_token():
    return 2 * LAYERS * KV_HEADS * HEAD_DIM * BF16  # K and V


def pow2(n):
    c = 1
    while c < n:
        c *= 2
    return c


def activation_bytes(t, r):
    """High-water mark of the step's device buffers for t tokens and r LM-head rows on one rank.

    runtime/model/mixtral_model.cc StepBuffers: x, branch, h [T, hidden]; q, attn [T, q_width];
    k, v [T, kv_width] (bf16); rows [R, hidden] bf16 + logits [R, vocab] fp32, T and R rounded up
    to powers of two (their capacities grow by doubling). Sampling scratch
    ASSUMED 2 x logits (sort values + indices). parallel/moe/ep_moe_layer.cc per MoE layer:
    router logits [T, E] fp32, ids + weights [T, 2]; send [2T, hidden]; recv, grouped, grouped_out
    [rows, hidden] and inter [rows, intermediate], where rows <= top_k * T * EP (worst case: every
    token of both ranks routed to this rank's experts).
    """
    t_cap, r_cap = pow2(t), pow2(r)  # StepBuffers capacities grow by doubling (GrowTo)
    step = t_cap * (3 * HIDDEN + 2 * Q_HEADS * HEAD_DIM + 2 * KV_HEADS * HEAD_DIM) * BF16
    recv_rows = TOP_K * t * EP
    moe = (t * EXPERTS * FP32 + t * TOP_K * (4 + FP32) + TOP_K * t * HIDDEN * BF16 +
           3 * recv_rows * HIDDEN * BF16 + recv_rows * INTERMEDIATE * BF16)
    lm_head = r_cap * (HIDDEN * BF16 + VOCAB * FP32) + 2 * r * VOCAB * FP32
    return step + moe + lm_head


def plan(key):
    gpu, choice = GPUS[key], CHOICES[key]
    p = params()
    experts = p["experts"]
    replicated = sum(v for k, v in p.items() if k != "experts")
    weights = (replicated + experts // EP) * BF16
    act = activation_bytes(choice["max_num_batched_tokens"], choice["max_num_seqs"])
    reserved = CUDA_CONTEXT + CUBLASLT_WORKSPACE + NCCL_BUFFERS + CUDA_GRAPHS + MARGIN + act
    kv_budget = gpu["total"] - weights - reserved
    block = kv_bytes_per_token() * KV_BLOCK_SIZE
    blocks = kv_budget // block
    return {
        "weights": weights,
        "activations": act,
        "reserved": reserved,
        "kv_budget": kv_budget,
        "kv_blocks": blocks,
        "kv_tokens": blocks * KV_BLOCK_SIZE,
    }


def gb(x):
    return f"{x / 1e9:.3f} GB ({x / GiB:.3f} GiB)"


def report():
    p = params()
    total = sum(p.values())
    out = ["### Weights (bf16, 2 bytes per parameter)", "",
           "| part | parameters | bytes | per GPU at EP 2 |", "|---|---:|---:|---|"]
    for k, v in p.items():
        where = f"1/{EP}: {v // EP:,}" if k == "experts" else "replicated"
        out.append(f"| {k} | {v:,} | {v * BF16:,} | {where} |")
    replicated = total - p["experts"]
    out.append(f"| **total** | {total:,} | {total * BF16:,} = {gb(total * BF16)} | |")
    per_gpu = (replicated + p["experts"] // EP) * BF16
    out += ["", f"Per GPU: replicated {replicated:,} x 2 = {gb(replicated * BF16)} + half the "
            f"experts {p['experts'] // EP:,} x 2 = {gb(p['experts'] // EP * BF16)} = "
            f"**{gb(per_gpu)}**.", ""]
    kvt = kv_bytes_per_token()
    out += [f"KV per token: 2 x {LAYERS} layers x {KV_HEADS} heads x {HEAD_DIM} x 2 B = "
            f"{kvt:,} B ({kvt // 1024} KiB); per block of {KV_BLOCK_SIZE} tokens "
            f"{kvt * KV_BLOCK_SIZE:,} B ({kvt * KV_BLOCK_SIZE // MiB} MiB); a full "
            f"{MAX_POSITION}-token sequence {kvt * MAX_POSITION / GiB:.0f} GiB.", ""]
    for key in GPUS:
        g, c, pl = GPUS[key], CHOICES[key], plan(key)
        out += [f"### {g['name']} x 2, EP 2 (deploy/configs/{key}-ep2.env)", "",
                "| item | bytes | GiB |", "|---|---:|---:|",
                f"| memory.total | {g['total']:,} | {g['total'] / GiB:.3f} |",
                f"| weights (above) | {pl['weights']:,} | {pl['weights'] / GiB:.3f} |",
                f"| CUDA context + modules (assumed) | {CUDA_CONTEXT:,} | {CUDA_CONTEXT / GiB:.3f} |",
                f"| cuBLASLt workspace | {CUBLASLT_WORKSPACE:,} | "
                f"{CUBLASLT_WORKSPACE / GiB:.3f} |",
                f"| NCCL buffers (assumed, issue 11) | {NCCL_BUFFERS:,} | {NCCL_BUFFERS / GiB:.3f} |",
                f"| CUDA graphs (assumed, decode-graphs patch) | {CUDA_GRAPHS:,} | "
                f"{CUDA_GRAPHS / GiB:.3f} |",
                f"| step activations, T = {c['max_num_batched_tokens']}, R = {c['max_num_seqs']} "
                f"| {pl['activations']:,} | {pl['activations'] / GiB:.3f} |",
                f"| safety margin (assumed) | {MARGIN:,} | {MARGIN / GiB:.3f} |",
                f"| **left for KV** | {pl['kv_budget']:,} | {pl['kv_budget'] / GiB:.3f} |", "",
                f"KV blocks per GPU = floor({pl['kv_budget']:,} / {kvt * KV_BLOCK_SIZE:,}) = "
                f"**{pl['kv_blocks']:,}** = {pl['kv_tokens']:,} tokens. "
                f"--gpu-memory-utilization equivalent (when it lands; it sizes KV after the "
                f"weights, context and workspaces are allocated): 1 - (activations + graphs + "
                f"margin) / total = {1 - (pl['activations'] + CUDA_GRAPHS + MARGIN) / g['total']:.3f}.",
                "",
                "| context length per sequence | " +
                " | ".join(str(n) for n in (1024, 2048, 4096, 8192, 16384, 32768)) + " |",
                "|---|" + "---:|" * 6,
                "| sequences whose KV fits, per GPU | " +
                " | ".join(f"{pl['kv_tokens'] // n:,}" for n in (1024, 2048, 4096, 8192, 16384,
                                                                  32768)) + " |",
                "| same, the 2-GPU group | " +
                " | ".join(f"{EP * (pl['kv_tokens'] // n):,}" for n in (1024, 2048, 4096, 8192,
                                                                        16384, 32768)) + " |", ""]
    return "\n".join(out)


def read_env(path):
    env = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                k, _, v = line.partition("=")
                env[k] = v
    return env


def check(config_dir):
    errors = []
    for key, choice in CHOICES.items():
        path = os.path.join(config_dir, f"{key}-ep2.env")
        env = read_env(path)
        want = {
            "MOESERVE_KV_BLOCKS": plan(key)["kv_blocks"],
            "MOESERVE_KV_BLOCK_SIZE": KV_BLOCK_SIZE,
            "MOESERVE_EP_SIZE": EP,
            "MOESERVE_MAX_NUM_SEQS": choice["max_num_seqs"],
            "MOESERVE_MAX_NUM_BATCHED_TOKENS": choice["max_num_batched_tokens"],
            "MOESERVE_MAX_MODEL_LEN": choice["max_model_len"],
        }
        for k, v in want.items():
            if env.get(k) != str(v):
                errors.append(f"{path}: {k}={env.get(k)!r}, the memory plan says {v}")
    return errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare the env files with the plan")
    ap.add_argument("--config-dir", default=os.path.dirname(os.path.abspath(__file__)))
    args = ap.parse_args()
    if args.check:
        errors = check(args.config_dir)
        for e in errors:
            print(e, file=sys.stderr)
        return 1 if errors else 0
    print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
