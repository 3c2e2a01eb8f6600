#!/usr/bin/env python3
"""Generate golden fixtures for moeserve's C++ tests.

For each fixture this script

  1. builds a small, RANDOM Mixtral model deterministically (numpy RandomState
     with a fixed seed per fixture),
  2. writes it to tests/data/golden/<name>/ in the canonical Hugging Face
     Mixtral checkpoint layout (config.json + model.safetensors, or sharded
     model-0000k-of-0000n.safetensors + model.safetensors.index.json) with the
     per-expert tensor names used by mistralai/Mixtral-8x7B-v0.1
     (block_sparse_moe.experts.{e}.w1/w2/w3),
  3. loads that directory with transformers' MixtralForCausalLM.from_pretrained
     (attn_implementation="eager", experts_implementation="eager") and checks
     that every loaded parameter is bit-identical to what was written (so we
     know transformers read the canonical layout correctly),
  4. checks the transformers output against an independent float64 re-implementation
     written below (`independent_forward`), which encodes the exact semantics
     documented in tests/data/golden/README.md,
  5. writes golden.json (prompts, greedy continuations, metadata) and
     golden.safetensors (float32 logits).

The C++ tests read only the files written here; they never need torch.

Regenerate (from the repo root):
    /root/venv-fixtures/bin/python tools/gen_golden_fixtures.py
Options: --out DIR (default tests/data/golden), --only NAME[,NAME...].
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import MixtralForCausalLM

GEN_TOKENS = 32
PROMPT_LENS = (5, 11, 19)
GENERATOR = "tools/gen_golden_fixtures.py"

# Minimum top1-top2 logit gap at every greedy step, and minimum gap between
# the 2nd and 3rd router logit over every token/layer of every full sequence.
# Prompts are re-drawn (deterministically) until both hold, so an fp32 engine
# whose rounding differs from torch's still makes the same discrete choices.
MIN_GREEDY_MARGIN = 2e-3
MIN_ROUTER_GAP = 1e-3

FIXTURES = [
    dict(
        name="fp32_window",
        dtype="float32",
        seed=1001,
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_hidden_layers=2,
        num_local_experts=8,
        intermediate_size=96,
        vocab_size=256,
        rope_theta=1e6,
        sliding_window=7,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        shards=1,
    ),
    dict(
        name="fp32_odd",
        dtype="float32",
        seed=2002,
        hidden_size=72,
        num_attention_heads=3,
        num_key_value_heads=1,
        head_dim=20,
        num_hidden_layers=3,
        num_local_experts=6,
        intermediate_size=100,
        vocab_size=301,
        rope_theta=10000.0,
        sliding_window=None,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        # Tied: lm_head == embed_tokens.  With embed std 1 the logit of the
        # current token (|e_t|^2 ~ hidden) dominates and greedy just repeats
        # the last token, so use a smaller embedding scale here.
        embed_std=0.2,
        shards=2,
    ),
    dict(
        name="bf16",
        dtype="bfloat16",
        seed=3003,
        hidden_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        num_hidden_layers=2,
        num_local_experts=8,
        intermediate_size=160,
        vocab_size=512,
        rope_theta=1e6,
        sliding_window=None,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        shards=1,
    ),
    dict(
        # Same shape as fp32_window (kept small for the size budget), bf16 weights,
        # window 5.
        name="bf16_window",
        dtype="bfloat16",
        seed=4004,
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_hidden_layers=2,
        num_local_experts=8,
        intermediate_size=96,
        vocab_size=256,
        rope_theta=1e6,
        sliding_window=5,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        shards=1,
    ),
    dict(
        # config.json written by transformers itself (MixtralConfig.save_pretrained), in the
        # transformers-5 layout: "rope_parameters": {"rope_theta", "rope_type"} and no top-level
        # "rope_theta". The non-default theta makes an engine that misses it (and falls back to
        # Mixtral's 1e6) fail the logits comparison.
        name="fp32_rope_params",
        dtype="float32",
        seed=5005,
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_hidden_layers=2,
        num_local_experts=8,
        intermediate_size=96,
        vocab_size=256,
        rope_theta=5e5,
        sliding_window=None,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        shards=1,
        config_writer="transformers",
    ),
]

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def fail(msg: str) -> None:
    print(f"FATAL: {msg}", file=sys.stderr)
    sys.exit(1)


# --------------------------------------------------------------------------
# Random weights in the canonical HF Mixtral layout
# --------------------------------------------------------------------------

def make_weights(fx: dict) -> dict[str, torch.Tensor]:
    """Canonical-layout tensors (already rounded to the fixture dtype)."""
    rng = np.random.RandomState(fx["seed"])
    H = fx["hidden_size"]
    nh, nkv, d = fx["num_attention_heads"], fx["num_key_value_heads"], fx["head_dim"]
    I, E, V = fx["intermediate_size"], fx["num_local_experts"], fx["vocab_size"]
    dt = TORCH_DTYPES[fx["dtype"]]

    def normal(shape, std):
        return rng.standard_normal(size=shape).astype(np.float32) * np.float32(std)

    def norm_w(n):
        return rng.uniform(0.9, 1.1, size=(n,)).astype(np.float32)

    # Scales: matrices ~ N(0, 1/fan_in) so each sub-layer contributes O(1) to the
    # residual stream (with std 0.02 the attention/MoE would be invisible in the
    # logits and the fixtures would not catch bugs there).  Router logits get
    # std ~2 (decisive, non-uniform routing, while the 2nd expert still matters);
    # q/k slightly larger so attention is not uniform; lm_head gives logits of
    # std ~2.5 so greedy decisions have healthy margins.
    w: dict[str, np.ndarray] = {}
    w["model.embed_tokens.weight"] = normal((V, H), fx.get("embed_std", 1.0))
    for i in range(fx["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm_w(H)
        w[p + "self_attn.q_proj.weight"] = normal((nh * d, H), 1.5 / math.sqrt(H))
        w[p + "self_attn.k_proj.weight"] = normal((nkv * d, H), 1.5 / math.sqrt(H))
        w[p + "self_attn.v_proj.weight"] = normal((nkv * d, H), 1.0 / math.sqrt(H))
        w[p + "self_attn.o_proj.weight"] = normal((H, nh * d), 1.0 / math.sqrt(nh * d))
        w[p + "post_attention_layernorm.weight"] = norm_w(H)
        w[p + "block_sparse_moe.gate.weight"] = normal((E, H), 2.0 / math.sqrt(H))
        for e in range(E):
            q = p + f"block_sparse_moe.experts.{e}."
            w[q + "w1.weight"] = normal((I, H), 1.0 / math.sqrt(H))
            w[q + "w3.weight"] = normal((I, H), 1.0 / math.sqrt(H))
            w[q + "w2.weight"] = normal((H, I), 1.5 / math.sqrt(I))
    w["model.norm.weight"] = norm_w(H)
    if not fx["tie_word_embeddings"]:
        w["lm_head.weight"] = normal((V, H), 2.5 / math.sqrt(H))
    return {k: torch.from_numpy(v).to(dt).contiguous() for k, v in w.items()}


def write_config_with_transformers(fx: dict, path: str) -> dict:
    """config.json exactly as the installed transformers writes it (MixtralConfig.save_pretrained),
    with the theta given as rope_parameters (transformers 5's layout)."""
    from transformers import MixtralConfig

    cfg = MixtralConfig(
        architectures=["MixtralForCausalLM"],
        hidden_size=fx["hidden_size"],
        intermediate_size=fx["intermediate_size"],
        num_hidden_layers=fx["num_hidden_layers"],
        num_attention_heads=fx["num_attention_heads"],
        num_key_value_heads=fx["num_key_value_heads"],
        head_dim=fx["head_dim"],
        num_local_experts=fx["num_local_experts"],
        num_experts_per_tok=2,
        vocab_size=fx["vocab_size"],
        rms_norm_eps=fx["rms_norm_eps"],
        sliding_window=fx["sliding_window"],
        tie_word_embeddings=fx["tie_word_embeddings"],
        rope_parameters={"rope_type": "default", "rope_theta": fx["rope_theta"]},
        dtype=fx["dtype"],
    )
    outdir = os.path.dirname(path)
    cfg.save_pretrained(outdir)
    with open(path) as f:
        written = json.load(f)
    # The point of this fixture: theta only inside rope_parameters.
    if "rope_theta" in written or written.get("rope_parameters", {}).get("rope_theta") != fx["rope_theta"]:
        fail(f"{fx['name']}: transformers {transformers.__version__} did not write the rope_parameters "
             f"layout: {written}")
    return written


def write_config(fx: dict, path: str) -> dict:
    if fx.get("config_writer") == "transformers":
        return write_config_with_transformers(fx, path)
    cfg = {
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": fx["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": fx["intermediate_size"],
        "max_position_embeddings": 32768,
        "num_attention_heads": fx["num_attention_heads"],
        "num_experts_per_tok": 2,
        "num_hidden_layers": fx["num_hidden_layers"],
        "num_key_value_heads": fx["num_key_value_heads"],
        "head_dim": fx["head_dim"],
        "num_local_experts": fx["num_local_experts"],
        "output_router_logits": False,
        "rms_norm_eps": fx["rms_norm_eps"],
        "rope_theta": fx["rope_theta"],
        "router_aux_loss_coef": 0.02,
        "sliding_window": fx["sliding_window"],
        "tie_word_embeddings": fx["tie_word_embeddings"],
        "torch_dtype": fx["dtype"],
        "dtype": fx["dtype"],
        "use_cache": True,
        "vocab_size": fx["vocab_size"],
    }
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    return cfg


def write_weights(fx: dict, weights: dict[str, torch.Tensor], outdir: str) -> list[str]:
    meta = {"format": "pt"}
    n = fx["shards"]
    if n == 1:
        save_file(weights, os.path.join(outdir, "model.safetensors"), metadata=meta)
        return ["model.safetensors"]
    # Split in checkpoint order into n shards of roughly equal byte size.
    names = list(weights.keys())
    nbytes = {k: weights[k].numel() * weights[k].element_size() for k in names}
    total = sum(nbytes.values())
    shards: list[list[str]] = [[] for _ in range(n)]
    acc = 0
    for k in names:
        idx = min(n - 1, int(acc * n // total))
        shards[idx].append(k)
        acc += nbytes[k]
    files = []
    weight_map = {}
    for j, keys in enumerate(shards):
        fname = f"model-{j + 1:05d}-of-{n:05d}.safetensors"
        save_file({k: weights[k] for k in keys}, os.path.join(outdir, fname), metadata=meta)
        files.append(fname)
        for k in keys:
            weight_map[k] = fname
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(outdir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    files.append("model.safetensors.index.json")
    return files


# --------------------------------------------------------------------------
# Load with transformers and verify it read the canonical layout
# --------------------------------------------------------------------------

def load_and_verify(fx: dict, outdir: str, weights: dict[str, torch.Tensor]) -> MixtralForCausalLM:
    dt = TORCH_DTYPES[fx["dtype"]]
    model, info = MixtralForCausalLM.from_pretrained(
        outdir,
        attn_implementation="eager",
        experts_implementation="eager",
        dtype=dt,
        output_loading_info=True,
    )
    model.eval()
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if info.get(k):
            fail(f"{fx['name']}: from_pretrained reported {k}: {info[k]}")
    c = model.config
    if c.head_dim != fx["head_dim"]:
        fail(f"{fx['name']}: config.head_dim {c.head_dim} != {fx['head_dim']}")
    if c.rope_parameters["rope_theta"] != fx["rope_theta"]:
        fail(f"{fx['name']}: rope_theta not honoured: {c.rope_parameters}")
    if c.rope_parameters.get("rope_type", "default") != "default":
        fail(f"{fx['name']}: unexpected rope_type {c.rope_parameters}")
    if c.sliding_window != fx["sliding_window"]:
        fail(f"{fx['name']}: sliding_window {c.sliding_window} != {fx['sliding_window']}")
    if c._experts_implementation != "eager" or c._attn_implementation != "eager":
        fail(f"{fx['name']}: implementations {c._experts_implementation}/{c._attn_implementation}")
    attn0 = model.model.layers[0].self_attn
    exp_q = (fx["num_attention_heads"] * fx["head_dim"], fx["hidden_size"])
    if tuple(attn0.q_proj.weight.shape) != exp_q or attn0.head_dim != fx["head_dim"]:
        fail(f"{fx['name']}: q_proj {tuple(attn0.q_proj.weight.shape)} != {exp_q}; head_dim not honoured")

    params = dict(model.named_parameters(remove_duplicate=False))
    I = fx["intermediate_size"]
    covered: dict[str, list] = {}

    def check(name_written, loaded):
        ref = weights[name_written]
        if loaded.dtype != ref.dtype or tuple(loaded.shape) != tuple(ref.shape) or not torch.equal(loaded, ref):
            fail(f"{fx['name']}: loaded tensor for {name_written} differs from the written one "
                 f"({loaded.dtype}{tuple(loaded.shape)} vs {ref.dtype}{tuple(ref.shape)})")

    for name, t in weights.items():
        if ".block_sparse_moe.experts." in name:
            pre, rest = name.split(".block_sparse_moe.experts.")
            e_str, wname, _ = rest.split(".")
            e = int(e_str)
            if wname == "w1":
                pn = pre + ".mlp.experts.gate_up_proj"
                check(name, params[pn].data[e, :I])
            elif wname == "w3":
                pn = pre + ".mlp.experts.gate_up_proj"
                check(name, params[pn].data[e, I:])
            else:
                pn = pre + ".mlp.experts.down_proj"
                check(name, params[pn].data[e])
            covered.setdefault(pn, []).append(name)
        else:
            pn = name.replace(".block_sparse_moe.", ".mlp.")
            if pn not in params:
                fail(f"{fx['name']}: no loaded parameter for {name} (looked for {pn})")
            check(name, params[pn].data)
            covered.setdefault(pn, []).append(name)
    # The spot check asked for explicitly: layer 0 expert 3 w1 == gate_up_proj[3, :I].
    g = params["model.layers.0.mlp.experts.gate_up_proj"].data
    if not torch.equal(g[3, :I], weights["model.layers.0.block_sparse_moe.experts.3.w1.weight"]):
        fail(f"{fx['name']}: layer0 expert3 w1 mismatch")
    if not torch.equal(g[3, I:], weights["model.layers.0.block_sparse_moe.experts.3.w3.weight"]):
        fail(f"{fx['name']}: layer0 expert3 w3 mismatch")
    # Tie handling.
    lm = model.lm_head.weight
    emb = model.model.embed_tokens.weight
    if fx["tie_word_embeddings"]:
        if lm.data_ptr() != emb.data_ptr() or not torch.equal(lm, weights["model.embed_tokens.weight"]):
            fail(f"{fx['name']}: lm_head is not tied to embed_tokens")
        covered.setdefault("lm_head.weight", []).append("(tied)")
    # Every parameter must have come from the checkpoint (nothing left random-initialised).
    uncovered = [n for n in params if n not in covered]
    if uncovered:
        fail(f"{fx['name']}: parameters not covered by the checkpoint: {uncovered}")
    inv = model.model.rotary_emb.inv_freq
    if inv.dtype != torch.float32:
        fail(f"{fx['name']}: rotary inv_freq dtype is {inv.dtype}")
    return model


# --------------------------------------------------------------------------
# Independent reference (float64), encoding the semantics in README.md
# --------------------------------------------------------------------------

def independent_forward(fx: dict, W: dict[str, torch.Tensor], ids: list[int]) -> torch.Tensor:
    f64 = {k: v.to(torch.float64) for k, v in W.items()}
    H, nh, nkv, d = fx["hidden_size"], fx["num_attention_heads"], fx["num_key_value_heads"], fx["head_dim"]
    E, eps, win = fx["num_local_experts"], fx["rms_norm_eps"], fx["sliding_window"]
    T = len(ids)

    def rms(x, wt):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * wt

    # RoPE, rotate_half convention: pairs (j, j + d/2), inv_freq_j = theta^(-2j/d).
    inv_freq = 1.0 / (fx["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]  # [T, d/2]
    cos, sin = torch.cos(ang), torch.sin(ang)

    def rope(x):  # x: [T, heads, d]
        x1, x2 = x[..., : d // 2], x[..., d // 2:]
        c, s = cos[:, None, :], sin[:, None, :]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)

    q_idx = torch.arange(T)[:, None]
    k_idx = torch.arange(T)[None, :]
    allowed = k_idx <= q_idx
    if win is not None:
        allowed &= k_idx > q_idx - win  # W keys including the query itself

    x = f64["model.embed_tokens.weight"][torch.tensor(ids)]
    for i in range(fx["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, f64[p + "input_layernorm.weight"])
        q = (h @ f64[p + "self_attn.q_proj.weight"].T).view(T, nh, d)
        k = (h @ f64[p + "self_attn.k_proj.weight"].T).view(T, nkv, d)
        v = (h @ f64[p + "self_attn.v_proj.weight"].T).view(T, nkv, d)
        q, k = rope(q), rope(k)
        rep = nh // nkv
        out = torch.empty(T, nh, d, dtype=torch.float64)
        for hh in range(nh):
            kv = hh // rep  # query head hh uses kv head hh // (nh/nkv)
            s = (q[:, hh, :] @ k[:, kv, :].T) / math.sqrt(d)
            s = s.masked_fill(~allowed, float("-inf"))
            out[:, hh, :] = torch.softmax(s, dim=-1) @ v[:, kv, :]
        x = x + out.reshape(T, nh * d) @ f64[p + "self_attn.o_proj.weight"].T
        h = rms(x, f64[p + "post_attention_layernorm.weight"])
        probs = torch.softmax(h @ f64[p + "block_sparse_moe.gate.weight"].T, dim=-1)
        topv, topi = torch.topk(probs, 2, dim=-1)
        topv = topv / topv.sum(-1, keepdim=True)
        moe = torch.zeros_like(x)
        for t in range(T):
            for j in range(2):
                e = int(topi[t, j])
                pe = p + f"block_sparse_moe.experts.{e}."
                a = f64[pe + "w1.weight"] @ h[t]
                b = f64[pe + "w3.weight"] @ h[t]
                moe[t] += topv[t, j] * (f64[pe + "w2.weight"] @ (torch.nn.functional.silu(a) * b))
        x = x + moe
    x = rms(x, f64["model.norm.weight"])
    lm = f64["model.embed_tokens.weight"] if fx["tie_word_embeddings"] else f64["lm_head.weight"]
    return x @ lm.T


# --------------------------------------------------------------------------
# Reference computations with transformers
# --------------------------------------------------------------------------

@torch.no_grad()
def forward_logits(model, ids: list[int]):
    out = model(torch.tensor([ids]), use_cache=False, output_router_logits=True)
    logits = out.logits[0].float()
    router = [r.float() for r in out.router_logits]
    return logits, router


@torch.no_grad()
def greedy(model, ids: list[int]):
    """32 greedy tokens via repeated full forwards (no KV cache, no EOS stop)."""
    seq = list(ids)
    toks, margins = [], []
    for _ in range(GEN_TOKENS):
        logits = model(torch.tensor([seq]), use_cache=False).logits[0, -1].float()
        top2 = torch.topk(logits, 2).values
        toks.append(int(torch.argmax(logits)))  # ties -> lowest token id (first occurrence)
        margins.append(float(top2[0] - top2[1]))
        seq.append(toks[-1])
    return toks, min(margins)


def router_gap(router_logits: list[torch.Tensor]) -> float:
    gaps = []
    for r in router_logits:
        s = torch.sort(r, dim=-1, descending=True).values
        gaps.append(float((s[:, 1] - s[:, 2]).min()))
    return min(gaps)


@torch.no_grad()
def kv_cache_greedy(model, ids: list[int]) -> list[int]:
    """Greedy with transformers' KV cache (sliding-window cache when windowed)."""
    out = model.generate(
        torch.tensor([ids]), do_sample=False, max_new_tokens=GEN_TOKENS, min_new_tokens=GEN_TOKENS,
        pad_token_id=0, eos_token_id=None,
    )
    return out[0, len(ids):].tolist()


def build_fixture(fx: dict, root: str) -> dict:
    name = fx["name"]
    outdir = os.path.join(root, name)
    if os.path.isdir(outdir):
        shutil.rmtree(outdir)
    os.makedirs(outdir)
    torch.manual_seed(fx["seed"])

    weights = make_weights(fx)
    write_config(fx, os.path.join(outdir, "config.json"))
    files = write_weights(fx, weights, outdir)

    model = load_and_verify(fx, outdir, weights)
    is_bf16 = fx["dtype"] == "bfloat16"
    upcast = None
    if is_bf16:
        # A second, fp32 load of the same bf16 checkpoint (== model.float(), without mutating `model`).
        upcast = MixtralForCausalLM.from_pretrained(
            outdir, attn_implementation="eager", experts_implementation="eager", dtype=torch.float32)
        upcast.eval()
        # Upcasting bf16 -> fp32 is exact: the weights must equal the bf16 model's.
        for (n1, p1), (n2, p2) in zip(model.named_parameters(), upcast.named_parameters()):
            if n1 != n2 or p2.dtype != torch.float32 or not torch.equal(p1.float(), p2):
                fail(f"{name}: upcast parameter {n2} differs from the bf16 one")
    exact = upcast if is_bf16 else model  # the fp32-compute model

    vocab = fx["vocab_size"]
    prompts_out, tensors = [], {}
    max_abs_logit = 0.0
    max_bf16_vs_upcast = 0.0
    max_indep = 0.0
    for pi, plen in enumerate(PROMPT_LENS):
        for attempt in range(100):
            prng = np.random.RandomState(fx["seed"] * 100 + pi * 1000 + attempt + 7)
            ids = [int(t) for t in prng.randint(3, vocab, size=plen)]
            g_exact, m_exact = greedy(exact, ids)
            full_ids = ids + g_exact[:-1]
            full_exact, rl = forward_logits(exact, full_ids)
            rgap = router_gap(rl)
            same_routing = True
            if is_bf16:
                # bf16 rounding must not flip any expert choice on this sequence, so that
                # bf16-vs-upcast differences are pure rounding (no routing discontinuities).
                _, rl_bf = forward_logits(model, full_ids)
                same_routing = all(
                    torch.equal(torch.sort(torch.topk(a, 2, dim=-1).indices, -1).values,
                                torch.sort(torch.topk(b, 2, dim=-1).indices, -1).values)
                    for a, b in zip(rl, rl_bf))
            ok = (m_exact >= MIN_GREEDY_MARGIN and rgap >= MIN_ROUTER_GAP
                  and len(set(g_exact)) >= 8 and same_routing)
            if ok:
                break
            print(f"  [{name}] prompt {pi} attempt {attempt}: margin={m_exact:.2e} router_gap={rgap:.2e} "
                  f"distinct={len(set(g_exact))} same_bf16_routing={same_routing} -> redraw")
        else:
            fail(f"{name}: could not find a prompt with safe margins")

        entry = {"input_ids": ids}
        p_exact, _ = forward_logits(exact, ids)
        # Greedy consistency: the full-sequence forward must reproduce the greedy tokens.
        if full_exact[plen - 1:].argmax(-1).tolist() != g_exact:
            fail(f"{name}: full-forward argmax disagrees with the step-by-step greedy")
        if (p_exact - full_exact[:plen]).abs().max() > 1e-4:
            fail(f"{name}: prompt logits differ from the full-sequence logits prefix (causality?)")
        # KV-cache generate() must agree (validates the cache's sliding-window handling too).
        kvg = kv_cache_greedy(exact, ids)
        if kvg != g_exact:
            fail(f"{name}: generate() with KV cache gives {kvg} != full-forward greedy {g_exact}")
        # Independent float64 implementation of the documented semantics.
        ind = independent_forward(fx, weights, full_ids)
        d_ind = float((ind - full_exact.double()).abs().max())
        max_indep = max(max_indep, d_ind)
        if d_ind > 5e-4:
            fail(f"{name}: independent float64 reference differs from transformers by {d_ind}")

        if is_bf16:
            g_bf, m_bf = greedy(model, ids)
            p_bf, _ = forward_logits(model, ids)
            f_bf, _ = forward_logits(model, ids + g_bf[:-1])
            f_bf_on_exact, _ = forward_logits(model, full_ids)
            entry["greedy"] = g_bf
            entry["upcast_greedy"] = g_exact
            entry["min_greedy_margin_upcast"] = m_exact
            entry["min_greedy_margin"] = m_bf
            entry["greedy_upcast_common_prefix"] = next(
                (j for j in range(GEN_TOKENS) if g_bf[j] != g_exact[j]), GEN_TOKENS)
            tensors[f"logits.{pi}"] = p_bf
            tensors[f"full_logits.{pi}"] = f_bf
            tensors[f"upcast_logits.{pi}"] = p_exact
            tensors[f"upcast_full_logits.{pi}"] = full_exact
            d = max(float((p_bf - p_exact).abs().max()), float((f_bf_on_exact - full_exact).abs().max()))
            entry["max_abs_diff_bf16_vs_upcast"] = d
            max_bf16_vs_upcast = max(max_bf16_vs_upcast, d)
            max_abs_logit = max(max_abs_logit, float(p_bf.abs().max()), float(f_bf.abs().max()),
                                float(full_exact.abs().max()))
            if g_bf != g_exact:
                print(f"  [{name}] note: prompt {pi} bf16 greedy diverges from upcast at step "
                      f"{entry['greedy_upcast_common_prefix']}")
        else:
            entry["greedy"] = g_exact
            entry["min_greedy_margin"] = m_exact
            tensors[f"logits.{pi}"] = p_exact
            tensors[f"full_logits.{pi}"] = full_exact
            max_abs_logit = max(max_abs_logit, float(full_exact.abs().max()))
        entry["min_router_logit_gap"] = rgap
        entry["distinct_greedy_tokens"] = len(set(entry["greedy"]))
        if len(set(entry["greedy"])) < 3:
            fail(f"{name}: degenerate greedy continuation {entry['greedy']}")
        prompts_out.append(entry)
        print(f"  [{name}] prompt {pi} len {plen}: greedy={entry['greedy'][:12]}... "
              f"distinct={entry['distinct_greedy_tokens']} margin={m_exact:.3g} router_gap={rgap:.3g} "
              f"indep_f64_diff={d_ind:.2e}")

    for k, v in tensors.items():
        tensors[k] = v.to(torch.float32).contiguous()
    save_file(tensors, os.path.join(outdir, "golden.safetensors"), metadata={"generator": GENERATOR})

    # Routing statistics over the full sequences (documented, helps judge decisiveness).
    golden = {
        "name": name,
        "dtype": fx["dtype"],
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "generator": GENERATOR,
        "seed": fx["seed"],
        "attn_implementation": "eager",
        "experts_implementation": "eager",
        "gen_tokens": GEN_TOKENS,
        "weight_files": files,
        "config": {k: fx[k] for k in (
            "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "num_hidden_layers",
            "num_local_experts", "intermediate_size", "vocab_size", "rope_theta", "sliding_window",
            "rms_norm_eps", "tie_word_embeddings")} | {"num_experts_per_tok": 2},
        "max_abs_logit": max_abs_logit,
        "max_abs_diff_independent_f64": max_indep,
        "prompts": prompts_out,
        "tensors": {
            "logits.{i}": "[len_i, vocab] float32: one forward over prompt i (reference dtype)",
            "full_logits.{i}": "[len_i+31, vocab] float32: one forward over prompt_i + greedy_i[:-1]",
        },
    }
    if is_bf16:
        golden["max_abs_diff_bf16_vs_upcast"] = max_bf16_vs_upcast
        golden["tensors"]["upcast_logits.{i}"] = "same as logits.{i} but the bf16 weights upcast to fp32, fp32 compute"
        golden["tensors"]["upcast_full_logits.{i}"] = (
            "fp32-compute logits over prompt_i + upcast_greedy_i[:-1] (NB: upcast_greedy, not greedy)")
        golden["tensors"]["full_logits.{i}"] = "bf16 logits over prompt_i + greedy_i[:-1] (bf16 greedy)"
    text = json.dumps(golden, indent=1)
    # Keep integer lists (token ids) on one line.
    text = re.sub(r"\[(\s*-?\d+(?:,\s*-?\d+)*\s*)\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    if json.loads(text) != json.loads(json.dumps(golden)):
        fail(f"{name}: golden.json compaction changed the content")
    with open(os.path.join(outdir, "golden.json"), "w") as f:
        f.write(text + "\n")
    # Read-back sanity check.
    back = load_file(os.path.join(outdir, "golden.safetensors"))
    for pi, plen in enumerate(PROMPT_LENS):
        assert back[f"logits.{pi}"].shape == (plen, vocab)
        assert back[f"full_logits.{pi}"].shape == (plen + GEN_TOKENS - 1, vocab)
    return golden


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "golden"))
    ap.add_argument("--only", default="", help="comma-separated fixture names")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    root = os.path.normpath(args.out)
    os.makedirs(root, exist_ok=True)
    only = set(filter(None, args.only.split(",")))
    for fx in FIXTURES:
        if only and fx["name"] not in only:
            continue
        print(f"== {fx['name']}")
        g = build_fixture(fx, root)
        extra = f" bf16_vs_upcast={g['max_abs_diff_bf16_vs_upcast']:.3g}" if "max_abs_diff_bf16_vs_upcast" in g else ""
        print(f"  max_abs_logit={g['max_abs_logit']:.3g} indep_f64={g['max_abs_diff_independent_f64']:.2e}{extra}")


if __name__ == "__main__":
    main()
