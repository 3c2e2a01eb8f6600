"""Live expert rebalancing (EPLB, issue 12): POST /v1/lab/rebalance on a daemon with --ep-size 2
and a hot-expert router skew.

Oracles: the same greedy requests before and after the switch must give the same text and the
same logprobs (any valid placement computes the same bits); the rank load is measured from
/v1/lab/stats ("total.rank_rows" grows by the rows each rank computed) over the same requests
before and after, and its max/mean must fall by at least 30%."""

import httpx

from conftest import MODEL_NAME, Daemon, post

PROMPTS = ["The history of the Roman empire", "Sparse mixture of experts models route",
           "A recipe for bread: flour, water,", "In 1969 the first humans", "def fibonacci(n):",
           "The weather tomorrow will be"]


def complete(daemon: Daemon, prompt: str):
    r = post(daemon, "/v1/completions",
             {"model": MODEL_NAME, "prompt": prompt, "max_tokens": 12, "temperature": 0,
              "logprobs": 0, "ignore_eos": True})
    assert r.status_code == 200, r.text
    c = r.json()["choices"][0]
    return c["text"], c["logprobs"]["token_logprobs"]


def rank_rows(daemon: Daemon):
    r = httpx.get(daemon.base_url + "/v1/lab/stats", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["total"]["rank_rows"]


def max_over_mean(before, after):
    d = [a - b for a, b in zip(after, before)]
    return max(d) / (sum(d) / len(d))


def metric(daemon: Daemon, name: str) -> float:
    text = httpx.get(daemon.base_url + "/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_rebalance_cuts_rank_imbalance_and_keeps_outputs():
    # Experts 0 and 1 (both on rank 0) get +8: most rows go to rank 0 (with two ranks max/mean
    # is at most 2 and at least 1, so a 30% fall needs a start above 1.43).
    d = Daemon("--ep-size", "2", "--router-skew", "0,1:8", "--max-model-len", "512")
    try:
        t0 = rank_rows(d)
        before = [complete(d, p) for p in PROMPTS]
        t1 = rank_rows(d)
        imbalance_before = max_over_mean(t0, t1)
        assert imbalance_before > 1.5, imbalance_before

        r = post(d, "/v1/lab/rebalance", {"extra_experts_per_rank": 2})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "moeserve.lab.rebalance"
        assert body["changed"] is True
        assert body["old_placement"]["experts"] == [[0], [0], [0], [0], [1], [1], [1], [1]]
        assert body["new_placement"] != body["old_placement"]
        assert body["replicas"] > 0
        assert body["pause_ms"] >= 0 and body["prepare_ms"] >= 0
        assert body["projected_imbalance_after"] < body["projected_imbalance_before"]
        # The placement the daemon now reports is the new one.
        stats = httpx.get(d.base_url + "/v1/lab/stats", timeout=30).json()
        assert any(len(ranks) > 1 for layer in stats["expert_ranks"] for ranks in layer)

        after = [complete(d, p) for p in PROMPTS]
        t2 = rank_rows(d)
        imbalance_after = max_over_mean(t1, t2)
        assert after == before  # text and logprobs, exactly
        assert imbalance_after <= 0.7 * imbalance_before, (imbalance_before, imbalance_after)

        assert metric(d, "moeserve_eplb_rebalances_total") == 1
        assert metric(d, "moeserve_eplb_last_imbalance_before_ratio") > 1.3
        assert metric(d, "moeserve_eplb_last_pause_seconds") >= 0
        assert "eplb: rebalanced" in d.log()

        # Bad bodies are 400 with the OpenAI error shape.
        for bad in [{"extra_experts_per_rank": -1}, {"budget": 1}, "[1]"]:
            r = post(d, "/v1/lab/rebalance", bad)
            assert r.status_code == 400, r.text
            assert "rebalance" in r.json()["error"]["message"]
    finally:
        assert d.terminate() == 0, d.log()


def test_rebalance_needs_expert_parallelism(daemon):
    r = post(daemon, "/v1/lab/rebalance", {})
    assert 400 <= r.status_code < 500, r.text
    assert "--ep-size > 1" in r.json()["error"]["message"]


def test_rebalance_over_grpc(pb):
    """The gRPC Rebalance call: the same switch as the HTTP route (outputs unchanged, replicas
    placed), INVALID_ARGUMENT for a negative budget, FAILED_PRECONDITION at world size 1."""
    import grpc

    msgs, rpc = pb
    d = Daemon("--ep-size", "2", "--router-skew", "0,1:8", "--max-model-len", "512")
    try:
        before = [complete(d, p) for p in PROMPTS]
        with grpc.insecure_channel(d.grpc_target) as channel:
            stub = rpc.MoeserveStub(channel)
            try:
                stub.Rebalance(msgs.RebalanceRequest(extra_experts_per_rank=-1), timeout=60)
                raise AssertionError("a negative budget was accepted")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
                assert "extra_experts_per_rank" in e.details()
            r = stub.Rebalance(msgs.RebalanceRequest(extra_experts_per_rank=2), timeout=60)
        assert r.changed and r.replicas > 0
        assert r.projected_imbalance_after < r.projected_imbalance_before
        assert r.new_placement != r.old_placement
        stats = httpx.get(d.base_url + "/v1/lab/stats", timeout=30).json()
        assert any(len(ranks) > 1 for layer in stats["expert_ranks"] for ranks in layer)
        assert [complete(d, p) for p in PROMPTS] == before
        assert metric(d, "moeserve_eplb_rebalances_total") == 1
    finally:
        assert d.terminate() == 0, d.log()


def test_rebalance_over_grpc_needs_expert_parallelism(grpc_stub, pb):
    import grpc

    try:
        grpc_stub.Rebalance(pb[0].RebalanceRequest(), timeout=60)
        raise AssertionError("rebalancing one rank succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e
        assert "--ep-size > 1" in e.details()
