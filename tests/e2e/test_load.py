"""Load, back-pressure and shutdown, each on a daemon of its own: 429 / RESOURCE_EXHAUSTED past
--max-queue, SIGTERM drain, 1000 concurrent streams (HTTP, then gRPC), 10,000 sequential
requests without KV-block or RSS growth."""

import asyncio
import json
import re
import threading
import time

import grpc
import httpx
import pytest

from conftest import MODEL_NAME, Daemon, post


def metric(daemon, name: str) -> float:
    text = httpx.get(daemon.base_url + "/metrics", timeout=10).text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def test_queue_full_gets_429_and_resource_exhausted(pb):
    d = Daemon("--max-queue", "2", "--max-num-seqs", "1")
    try:
        body = {"model": MODEL_NAME, "prompt": "busy", "max_tokens": 64, "ignore_eos": True}

        async def burst():
            async with httpx.AsyncClient(base_url=d.base_url, timeout=120) as http:
                return await asyncio.gather(*(http.post("/v1/completions", json=body)
                                              for _ in range(12)))

        codes = [r.status_code for r in asyncio.run(burst())]
        assert codes.count(429) >= 1, codes
        assert set(codes) <= {200, 429}, codes
        rejected = next(r for r in asyncio.run(burst()) if r.status_code == 429)
        assert rejected.json()["error"]["type"] == "rate_limit_error"

        # gRPC: fill the queue with HTTP streams, then a Generate is refused.
        stub = pb[1].MoeserveStub(grpc.insecure_channel(d.grpc_target))
        streams = [httpx.stream("POST", d.base_url + "/v1/completions", timeout=120,
                                json={**body, "max_tokens": 200, "stream": True})
                   for _ in range(4)]
        opened = [s.__enter__() for s in streams]
        try:
            with pytest.raises(grpc.RpcError) as e:
                list(stub.Generate(pb[0].GenerateRequest(
                    text="x", sampling=pb[0].SamplingParameters(max_tokens=2)), timeout=30))
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            for s, r in zip(streams, opened):
                s.__exit__(None, None, None)
        assert post(d, "/v1/completions", {**body, "max_tokens": 2}).status_code in (200, 429)
    finally:
        assert d.terminate() == 0, d.log()


def test_sigterm_drains_in_flight_and_exits_0():
    d = Daemon("--drain-timeout", "60")
    result = {}

    def stream_one():
        with httpx.stream("POST", d.base_url + "/v1/completions", timeout=120,
                          json={"model": MODEL_NAME, "prompt": "drain", "max_tokens": 300,
                                "ignore_eos": True, "stream": True}) as r:
            result["events"] = [line for line in r.iter_lines() if line]

    t = threading.Thread(target=stream_one)
    t.start()
    deadline = time.monotonic() + 30
    while metric(d, "moeserve_running_sequences") < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    d.proc.send_signal(15)
    time.sleep(0.2)
    # Admission stopped: new requests are refused while the stream finishes.
    refused = post(d, "/v1/completions", {"model": MODEL_NAME, "prompt": "late", "max_tokens": 2})
    assert refused.status_code == 503, refused.text
    assert d.proc.wait(timeout=90) == 0, d.log()
    t.join(timeout=30)
    events = result["events"]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    d.terminate()


def test_1000_concurrent_streams(pb):
    d = Daemon("--max-num-seqs", "256", "--max-num-batched-tokens", "1024")
    try:
        n = 1000

        async def one(http, i):
            body = {"model": MODEL_NAME, "prompt": f"Request number {i}", "max_tokens": 4,
                    "ignore_eos": True, "stream": True}
            text, done = "", False
            async with http.stream("POST", "/v1/completions", json=body) as r:
                assert r.status_code == 200, await r.aread()
                async for line in r.aiter_lines():
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: "):
                        chunk = json.loads(line[6:])
                        text += "".join(c["text"] for c in chunk["choices"])
            return done

        async def main():
            limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
            async with httpx.AsyncClient(base_url=d.base_url, limits=limits,
                                         timeout=httpx.Timeout(300, connect=60)) as http:
                return await asyncio.gather(*(one(http, i) for i in range(n)),
                                            return_exceptions=True)

        start = time.monotonic()
        results = asyncio.run(main())
        errors = [r for r in results if r is not True]
        assert not errors, f"{len(errors)} failed, e.g. {errors[:3]!r}"
        print(f"1000 HTTP streams in {time.monotonic() - start:.1f} s")
        assert metric(d, "moeserve_kv_blocks_used") == 0

        # The same over gRPC: the callback service pins no thread per stream.
        async def grpc_main():
            async with grpc.aio.insecure_channel(d.grpc_target) as channel:
                stub = pb[1].MoeserveStub(channel)

                async def one(i):
                    request = pb[0].GenerateRequest(
                        text=f"Request number {i}",
                        sampling=pb[0].SamplingParameters(max_tokens=4, ignore_eos=True))
                    tokens = 0
                    async for r in stub.Generate(request, timeout=300):
                        tokens += sum(len(c.token_ids) for c in r.choices)
                    return tokens == 4

                return await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)

        start = time.monotonic()
        results = asyncio.run(grpc_main())
        errors = [r for r in results if r is not True]
        assert not errors, f"{len(errors)} failed, e.g. {errors[:3]!r}"
        print(f"1000 gRPC streams in {time.monotonic() - start:.1f} s")
        assert metric(d, "moeserve_kv_blocks_used") == 0
    finally:
        assert d.terminate() == 0, d.log()


def test_10000_sequential_requests_no_kv_or_rss_growth(pb):
    d = Daemon()
    try:
        stub = pb[1].MoeserveStub(grpc.insecure_channel(d.grpc_target))
        body = {"model": MODEL_NAME, "prompt": "soak", "max_tokens": 1}
        with httpx.Client(base_url=d.base_url, timeout=30) as http:
            def run(count):
                for _ in range(count):
                    assert http.post("/v1/completions", json=body).status_code == 200

            run(500)  # warm-up: allocator pools, thread stacks
            rss_warm = d.rss_kib()
            used_warm = stub.GetStats(pb[0].GetStatsRequest()).kv_blocks_used
            run(9500)
        stats = stub.GetStats(pb[0].GetStatsRequest())
        rss_end = d.rss_kib()
        print(f"RSS {rss_warm} KiB after warm-up, {rss_end} KiB after 10000 requests")
        assert stats.kv_blocks_used == 0 == used_warm
        assert stats.running_sequences == 0
        assert stats.requests_finished >= 10000
        assert rss_end - rss_warm < 64 * 1024, (rss_warm, rss_end)
    finally:
        assert d.terminate() == 0, d.log()
