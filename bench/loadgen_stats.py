"""The numbers of bench/loadgen.py's reports, as pure functions of raw per-request timings and of
/v1/lab/stats snapshots (no I/O here).

Definitions (the JSON report says them too):
  percentile   linear interpolation between the closest ranks of the sorted samples: position
               (n - 1) * q / 100 (numpy's default, "linear"); NaN-free: None when no sample
  TTFT         request sent -> first streamed chunk that carries text
  ITL          gaps between consecutive text chunks of a request, pooled over the phase's
               requests. A chunk usually carries one token; the daemon holds back text that is
               not yet valid UTF-8 (or may match a stop string), so a chunk can carry several and
               the gap then spans them (as in vLLM's benchmark_serving)
  TPOT         per request (last chunk - first chunk) / (completion_tokens - 1)
  max/mean     max over the vector / its mean; CV population std / mean; an all-zero vector
               counts as even (1 and 0), as the daemon's LoadSpread does
"""

from __future__ import annotations

import math


def percentile(values, q: float):
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def distribution(values) -> dict:
    """p50/p90/p99, mean, max and the count of a list of seconds."""
    return {"n": len(values),
            "mean": sum(values) / len(values) if values else None,
            "p50": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99), "max": max(values) if values else None}


def spread(vec) -> dict:
    """max/mean and CV of one load vector (experts of a layer, or ranks)."""
    n = len(vec)
    total = sum(vec)
    if n == 0 or total == 0:
        return {"max_mean": 1.0, "cv": 0.0}
    mean = total / n
    var = sum((x - mean) ** 2 for x in vec) / n
    return {"max_mean": max(vec) / mean, "cv": math.sqrt(var) / mean}


def matrix_delta(after, before):
    return [[a - b for a, b in zip(ra, rb)] for ra, rb in zip(after, before)]


def rank_rows_from_experts(expert_tokens, expert_ranks, world_size: int):
    """[L][R] rows each rank computed, from [L][E] rows per expert, when every expert lives on
    one rank (no replica: then the split between replicas is not in the stats). None otherwise."""
    out = []
    for layer, ranks in zip(expert_tokens, expert_ranks):
        row = [0] * world_size
        for count, holders in zip(layer, ranks):
            if len(holders) != 1:
                return None
            row[holders[0]] += count
        out.append(row)
    return out


def imbalance(expert_tokens, rank_rows) -> dict:
    """Per layer spreads of [L][E] expert rows and [L][R] rank rows (or None), and their mean
    and max over layers."""
    experts = [spread(layer) for layer in expert_tokens]
    out = {"expert_tokens": expert_tokens,
           "expert_max_mean": [s["max_mean"] for s in experts],
           "expert_cv": [s["cv"] for s in experts]}
    out["expert_max_mean_avg"] = sum(out["expert_max_mean"]) / len(experts) if experts else None
    out["expert_max_mean_max"] = max(out["expert_max_mean"], default=None)
    out["expert_cv_avg"] = sum(out["expert_cv"]) / len(experts) if experts else None
    if rank_rows is not None:
        ranks = [spread(layer) for layer in rank_rows]
        out["rank_rows"] = rank_rows
        out["rank_max_mean"] = [s["max_mean"] for s in ranks]
        out["rank_cv"] = [s["cv"] for s in ranks]
        out["rank_max_mean_avg"] = sum(out["rank_max_mean"]) / len(ranks) if ranks else None
        out["rank_max_mean_max"] = max(out["rank_max_mean"], default=None)
    return out


def latencies(ok) -> dict:
    return {"ttft_s": distribution([r["ttft_s"] for r in ok if r["ttft_s"] is not None]),
            "itl_s": distribution([g for r in ok for g in r["itl_s"]]),
            "tpot_s": distribution([r["tpot_s"] for r in ok if r["tpot_s"] is not None]),
            "latency_s": distribution([r["latency_s"] for r in ok])}


def phase_summary(records, wall_s: float) -> dict:
    """Throughput and latency distributions of one phase's request records; with a mix of skews,
    the latencies of each skew's requests too (`by_skew`; "default": no router_skew sent)."""
    ok = [r for r in records if r["error"] is None]
    completion = sum(r["completion_tokens"] for r in ok)
    prompt = sum(r["prompt_tokens"] for r in ok)
    out = {"requests": len(records), "requests_ok": len(ok), "errors": len(records) - len(ok),
           "prompt_tokens": prompt, "completion_tokens": completion, "wall_s": wall_s,
           "req_per_s": len(ok) / wall_s if wall_s > 0 else None,
           "output_tok_per_s": completion / wall_s if wall_s > 0 else None, **latencies(ok)}
    skews = sorted({r["skew"] or "default" for r in records})
    if len(skews) > 1:
        out["by_skew"] = {}
        for skew in skews:
            mine = [r for r in ok if (r["skew"] or "default") == skew]
            out["by_skew"][skew] = {"requests_ok": len(mine),
                                    "completion_tokens": sum(r["completion_tokens"] for r in mine),
                                    **latencies(mine)}
    return out


def timeline(polls, world_size: int) -> list:
    """Imbalance over time from consecutive /v1/lab/stats polls: for each interval in which the
    engine stepped, the expert max/mean (mean over layers) and the rank max/mean of the rows
    computed in that interval (all layers)."""
    out = []
    for prev, cur in zip(polls, polls[1:]):
        steps = cur["engine_steps"] - prev["engine_steps"]
        if steps <= 0:
            continue
        experts = matrix_delta(cur["expert_tokens"], prev["expert_tokens"])
        if sum(map(sum, experts)) == 0:
            continue
        layer_spreads = [spread(layer)["max_mean"] for layer in experts]
        ranks = [a - b for a, b in zip(cur["rank_rows"], prev["rank_rows"])]
        out.append({"t_s": cur["t_s"], "steps": steps, "phase": cur.get("phase"),
                    "expert_max_mean": sum(layer_spreads) / len(layer_spreads),
                    "rank_max_mean": spread(ranks)["max_mean"] if world_size > 1 else 1.0})
    return out
