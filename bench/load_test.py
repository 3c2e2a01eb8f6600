#!/usr/bin/env python3
"""Streaming load test for an OpenAI-compatible server (moeserve, vLLM, SGLang, ...).

For each concurrency level C, C clients each send streaming /v1/completions requests back to back
until --requests-per-level requests have completed (at least C: every client sends one). Measures
per request the time to first token (TTFT: request sent -> first chunk with text or a token) and
the inter-token latencies (gaps between later chunks), and per level the output throughput.

Prints one JSON line per level and, at the end, a Markdown table:
  concurrency | requests | errors | output tok/s | TTFT p50/p90/p99 ms | ITL p50/p90/p99 ms

Example:
  python3 bench/load_test.py --url http://127.0.0.1:8000 --concurrency 1 16 128 1000 \\
      --max-tokens 32 --prompt-words 24
Needs httpx (pip install httpx; tools/e2e-venv.sh installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time

import httpx

WORDS = ("the of and to in is that for it as with was on be by at this from or have an are "
         "expert router token layer model serve batch cache block stream query value key").split()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(q / 100.0 * (len(values) - 1)))))
    return values[k]


async def one_request(client: httpx.AsyncClient, url: str, model: str, prompt: str,
                      max_tokens: int) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": True,
            "temperature": 0.0, "ignore_eos": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first = None
    last = None
    gaps: list[float] = []
    tokens = 0
    async with client.stream("POST", f"{url}/v1/completions", json=body) as resp:
        if resp.status_code != 200:
            await resp.aread()
            return {"error": f"HTTP {resp.status_code}: {resp.text[:200]}"}
        async for line in resp.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("usage") and not chunk.get("choices"):
                tokens = chunk["usage"].get("completion_tokens", tokens)
                continue
            now = time.perf_counter()
            if first is None:
                first = now
            else:
                gaps.append(now - last)
            last = now
    if first is None:
        return {"error": "no tokens"}
    return {"ttft": first - t0, "gaps": gaps, "tokens": tokens, "latency": last - t0}


async def run_level(url: str, model: str, concurrency: int, total: int, max_tokens: int,
                    prompt_words: int, seed: int) -> dict:
    rng = random.Random(seed)
    prompts = [" ".join(rng.choice(WORDS) for _ in range(prompt_words)) for _ in range(total)]
    results: list[dict] = []
    next_index = 0
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(600.0, connect=60.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        async def worker() -> None:
            nonlocal next_index
            while next_index < total:
                i = next_index
                next_index += 1
                try:
                    results.append(await one_request(client, url, model, prompts[i], max_tokens))
                except Exception as e:  # noqa: BLE001 - every failure is counted, none hidden
                    results.append({"error": repr(e)})

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    ok = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    ttft = [r["ttft"] * 1e3 for r in ok]
    itl = [g * 1e3 for r in ok for g in r["gaps"]]
    out_tokens = sum(r["tokens"] for r in ok)
    return {
        "concurrency": concurrency, "requests": len(results), "errors": len(errors),
        "first_errors": errors[:3], "wall_s": wall, "output_tokens": out_tokens,
        "output_tok_s": out_tokens / wall if wall > 0 else 0.0,
        "requests_per_s": len(ok) / wall if wall > 0 else 0.0,
        "ttft_ms": {"p50": percentile(ttft, 50), "p90": percentile(ttft, 90),
                    "p99": percentile(ttft, 99)},
        "itl_ms": {"p50": percentile(itl, 50), "p90": percentile(itl, 90),
                   "p99": percentile(itl, 99)},
        "max_tokens": max_tokens, "prompt_words": prompt_words,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--model", default=None, help="model name (default: the first of /v1/models)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 128, 1000])
    ap.add_argument("--requests-per-level", type=int, default=0,
                    help="requests per level (default: max(2 * concurrency, 16))")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--prompt-words", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model = args.model
    if model is None:
        model = httpx.get(f"{args.url}/v1/models", timeout=30).json()["data"][0]["id"]
    rows = []
    for c in args.concurrency:
        total = args.requests_per_level or max(2 * c, 16)
        r = asyncio.run(run_level(args.url, model, c, max(total, c), args.max_tokens,
                                  args.prompt_words, args.seed))
        r["model"] = model
        print(json.dumps(r), flush=True)
        rows.append(r)
    print("\n| concurrency | requests | errors | output tok/s | req/s | TTFT p50 / p90 / p99 ms "
          "| ITL p50 / p90 / p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        t, i = r["ttft_ms"], r["itl_ms"]
        print(f"| {r['concurrency']} | {r['requests']} | {r['errors']} | {r['output_tok_s']:.0f} "
              f"| {r['requests_per_s']:.1f} | {t['p50']:.0f} / {t['p90']:.0f} / {t['p99']:.0f} "
              f"| {i['p50']:.1f} / {i['p90']:.1f} / {i['p99']:.1f} |")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
