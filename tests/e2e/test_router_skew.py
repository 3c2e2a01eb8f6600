"""Per-request router skew (the `router_skew` extension field of the OpenAI bodies and of gRPC
GenerateRequest), its validation, the imbalance-lab series in /metrics and GetStats, and
--ep-size values that do not divide the experts (issue 12).

Oracles: a decisive profile (+1000 on experts 0 and 1, K = top_k = 2) forces every token of the
request onto experts 0 and 1, so the per-layer counts follow from the token count alone; an
unskewed request's greedy tokens and logprobs are the same whether a skewed request runs beside
it or not; --ep-size 3 serves what --ep-size 1 serves."""

import concurrent.futures
import re

import grpc
import httpx
import pytest

from conftest import MODEL_NAME, Daemon, post

DECISIVE = "hot:2:1000"


def stub(daemon: Daemon, pb):
    return pb[1].MoeserveStub(grpc.insecure_channel(daemon.grpc_target))


def complete(daemon: Daemon, prompt: str, skew=None, max_tokens=6):
    body = {"model": MODEL_NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "logprobs": 0, "ignore_eos": True}
    if skew is not None:
        body["router_skew"] = skew
    r = post(daemon, "/v1/completions", body)
    assert r.status_code == 200, r.text
    return r.json()


def layer_tokens(stats):
    return [list(layer.tokens) for layer in stats.expert_tokens]


@pytest.fixture(scope="module")
def fresh(pb):
    d = Daemon("--max-model-len", "512")
    yield d
    assert d.terminate() == 0, d.log()


def test_decisive_skew_routes_the_request_to_its_hot_experts(fresh, pb):
    before = layer_tokens(stub(fresh, pb).GetStats(pb[0].GetStatsRequest(), timeout=30))
    out = complete(fresh, "Routing is forced here", skew=DECISIVE)
    usage = out["usage"]
    # Every prompt token and every generated token but the last is run through the model.
    n = usage["prompt_tokens"] + usage["completion_tokens"] - 1
    after = layer_tokens(stub(fresh, pb).GetStats(pb[0].GetStatsRequest(), timeout=30))
    for layer, (b, a) in enumerate(zip(before, after)):
        grown = [x - y for x, y in zip(a, b)]
        assert grown == [n, n, 0, 0, 0, 0, 0, 0], (layer, grown)
    # The same through gRPC.
    responses = list(stub(fresh, pb).Generate(pb[0].GenerateRequest(
        text="Routing is forced here", router_skew=DECISIVE,
        sampling=pb[0].SamplingParameters(max_tokens=4, ignore_eos=True)), timeout=60))
    u = responses[-1].usage
    m = u.prompt_tokens + u.completion_tokens - 1
    final = layer_tokens(stub(fresh, pb).GetStats(pb[0].GetStatsRequest(), timeout=30))
    for layer, (b, a) in enumerate(zip(after, final)):
        assert [x - y for x, y in zip(a, b)] == [m, m, 0, 0, 0, 0, 0, 0], layer


def test_unskewed_request_is_unchanged_beside_a_skewed_one(fresh):
    prompt = "The quick brown fox jumps"
    alone = complete(fresh, prompt)["choices"][0]
    skewed_alone = complete(fresh, prompt, skew=DECISIVE)["choices"][0]
    assert skewed_alone["logprobs"]["token_logprobs"] != alone["logprobs"]["token_logprobs"]
    # Several times, concurrently with skewed requests, so that they share steps.
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(complete, fresh, prompt, None if i % 2 == 0 else DECISIVE)
                   for i in range(6)]
        results = [f.result()["choices"][0] for f in futures]
    for i, c in enumerate(results):
        want = alone if i % 2 == 0 else skewed_alone
        assert c["text"] == want["text"], i
        assert c["logprobs"]["token_logprobs"] == want["logprobs"]["token_logprobs"], i


@pytest.mark.parametrize("skew", ["cold:1", "hot:9", "hot:0", "zipf:-1", "8:1", "drift:2:0"])
def test_bad_profile_is_400_naming_router_skew(daemon, pb, skew):
    r = post(daemon, "/v1/completions", {"model": MODEL_NAME, "prompt": "x", "router_skew": skew})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "router_skew", error
    assert "router_skew" in error["message"], error
    r = post(daemon, "/v1/chat/completions",
             {"model": MODEL_NAME, "messages": [{"role": "user", "content": "x"}],
              "router_skew": skew})
    assert r.status_code == 400 and r.json()["error"]["param"] == "router_skew", r.text
    with pytest.raises(grpc.RpcError) as e:
        list(stub(daemon, pb).Generate(pb[0].GenerateRequest(text="x", router_skew=skew),
                                       timeout=30))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "router_skew" in e.value.details()


def test_imbalance_series_in_metrics_and_getstats(fresh, pb):
    complete(fresh, "Some load to measure", skew=DECISIVE)
    text = httpx.get(fresh.base_url + "/metrics", timeout=30).text
    window = re.search(r"^moeserve_imbalance_window_steps (\S+)$", text, re.M)
    assert window and float(window.group(1)) == 64
    # The decisive request's last step (one decode token) put both rows on experts 0 and 1.
    for layer in range(4):
        for e in range(8):
            m = re.search(rf'^moeserve_layer_expert_tokens{{layer="{layer}",expert="{e}",'
                          rf'span="last_step"}} (\S+)$', text, re.M)
            assert m, (layer, e)
            assert float(m.group(1)) == (1 if e < 2 else 0), (layer, e, m.group(1))
        ratio = re.search(rf'^moeserve_layer_expert_imbalance_ratio{{layer="{layer}",'
                          rf'span="last_step"}} (\S+)$', text, re.M)
        assert ratio and float(ratio.group(1)) == 4.0
    assert re.search(r'^moeserve_ep_link_rows_total\{src="0",dst="0"\} \d+', text, re.M)
    stats = stub(fresh, pb).GetStats(pb[0].GetStatsRequest(), timeout=30).expert_parallel
    assert stats.window_steps == 64
    assert len(stats.layers) == 4
    for layer in stats.layers:
        assert list(layer.expert_tokens_last_step) == [1, 1, 0, 0, 0, 0, 0, 0]
        assert layer.expert_spread_last_step.max_over_mean == 4.0
        assert abs(layer.expert_spread_last_step.cv - 3 ** 0.5) < 1e-9
    assert len(stats.link_rows_total) == 1


def test_ep_size_not_dividing_the_experts_serves_the_same_tokens():
    prompts = ["The capital of France is", "Once upon a time", "def fibonacci(n):"]
    outputs = {}
    for ep in ["1", "3"]:
        d = Daemon("--ep-size", ep, threads=1)
        try:
            if ep == "3":
                assert "uneven contiguous split" in d.log(), d.log()
            outputs[ep] = [complete(d, p)["choices"][0]["text"] for p in prompts]
        finally:
            assert d.terminate() == 0
    assert outputs["3"] == outputs["1"]
