"""The daemon with experts sharded over ranks (--ep-size 2 and 4, CPU ranks in one process) serves
the same greedy outputs as --ep-size 1 (the oracle: world size 1), for a batch of concurrent
requests, and reports expert-parallel traffic and imbalance in GetStats and /metrics. With
--router-skew the measured expert imbalance rises."""

import concurrent.futures
import re

import httpx
import pytest

from conftest import MODEL_NAME, Daemon

PROMPTS = ["The capital of France is", "Once upon a time", "def fibonacci(n):",
           "Mixture of experts models route each token", "1, 2, 3, 5, 8,", "Bonjour, je m'appelle",
           "The quick brown fox", "Expert parallelism sends tokens"]


def greedy_outputs(daemon: Daemon) -> list[str]:
    client = daemon.openai()

    def one(prompt: str) -> str:
        r = client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=16,
                                      temperature=0)
        return r.choices[0].text

    # Concurrent, so that requests spread over the ranks and batch together.
    with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
        return list(pool.map(one, PROMPTS))


def stub(daemon: Daemon, pb):
    import grpc

    return pb[1].MoeserveStub(grpc.insecure_channel(daemon.grpc_target))


def metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.M)
    assert m, f"{name}{labels} missing from /metrics"
    return float(m.group(1))


@pytest.fixture(scope="module")
def reference():
    d = Daemon()
    try:
        return greedy_outputs(d)
    finally:
        assert d.terminate() == 0


@pytest.mark.parametrize("ep_size", [2, 4])
def test_ep_serves_the_same_outputs(reference, pb, ep_size):
    d = Daemon("--ep-size", str(ep_size))
    try:
        assert greedy_outputs(d) == reference
        metrics = httpx.get(d.base_url + "/metrics", timeout=30).text
        sent = sum(metric(metrics, "moeserve_ep_bytes_sent_total", f'{{rank="{r}"}}')
                   for r in range(ep_size))
        assert sent > 0, "ranks exchanged no token states"
        assert metric(metrics, "moeserve_expert_imbalance_ratio") >= 1.0
        info = stub(d, pb).ModelInfo(pb[0].ModelInfoRequest(), timeout=30)
        assert info.placement.world_size == ep_size
        held = sorted(e for r in info.placement.ranks for e in r.experts)
        assert held == list(range(8)), "every expert is held by exactly one rank"
        stats = stub(d, pb).GetStats(pb[0].GetStatsRequest(), timeout=30)
        assert stats.expert_parallel.world_size == ep_size
        assert len(stats.expert_parallel.ranks) == ep_size
        assert sum(r.bytes_sent for r in stats.expert_parallel.ranks) == sent
    finally:
        assert d.terminate() == 0


def test_router_skew_raises_measured_imbalance(pb):
    imbalance = {}
    for skew in [None, "0:4"]:
        d = Daemon("--ep-size", "2", *(["--router-skew", skew] if skew else []))
        try:
            greedy_outputs(d)
            stats = stub(d, pb).GetStats(pb[0].GetStatsRequest(), timeout=30)
            imbalance[skew] = stats.expert_parallel.expert_imbalance
            if skew:
                # Expert 0 is routed more than any other expert in every layer.
                for layer in stats.expert_tokens:
                    assert layer.tokens[0] == max(layer.tokens)
        finally:
            assert d.terminate() == 0
    assert imbalance["0:4"] > imbalance[None]


@pytest.mark.parametrize("placement_exists", [True, False])
def test_placement_with_one_rank_is_a_startup_error(tmp_path, placement_exists):
    """--placement with --ep-size 1 used to be ignored (and a missing file went unnoticed)."""
    import subprocess

    from conftest import moeserve_bin

    placement = tmp_path / "placement.json"
    if placement_exists:
        placement.write_text('{"experts": [[0], [0], [0], [0], [0], [0], [0], [0]]}')
    r = subprocess.run([moeserve_bin(), "serve", "--host", "127.0.0.1", "--port", "0",
                        "--grpc-port", "0", "--threads", "1", "--ep-size", "1",
                        "--placement", str(placement)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "--placement" in r.stderr and "--ep-size" in r.stderr, r.stderr
    assert str(placement) in r.stderr, r.stderr
