"""Routing traces (`return_routing`, HTTP and gRPC) and the load recorder (/v1/lab/recorder/*,
gRPC Start/Stop/DumpRecorder) of the imbalance lab (issue 12).

Oracles: a decisive skew (+1000 on experts 0 and 1, K = top_k) forces every traced token onto
experts {0, 1}; the outputs with traces on are those with traces off (greedy, token for token,
logprobs bitwise); the recorder's counts are recomputed from the traces of the same requests (a
row per (token, choice)); the stream's and gRPC's traces are the non-stream one."""

import math

import grpc
import httpx
import pytest

from conftest import MODEL_NAME, Daemon, post

LAYERS_CAP = 2000  # --max-routing-entries of the fixture daemon


@pytest.fixture(scope="module")
def lab(pb):
    d = Daemon("--max-model-len", "512", "--max-routing-entries", str(LAYERS_CAP),
               "--recorder-max-steps", "10000")
    yield d
    assert d.terminate() == 0, d.log()


def stub(daemon, pb):
    return pb[1].MoeserveStub(grpc.insecure_channel(daemon.grpc_target))


def complete(daemon, prompt, routing=None, max_tokens=5, **extra):
    body = {"model": MODEL_NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "logprobs": 2, "ignore_eos": True, **extra}
    if routing is not None:
        body["return_routing"] = routing
    r = post(daemon, "/v1/completions", body)
    assert r.status_code == 200, r.text
    return r.json()


def model_shape(daemon, pb):
    info = stub(daemon, pb).ModelInfo(pb[0].ModelInfoRequest(), timeout=30)
    return info.config.num_hidden_layers, info.config.num_local_experts, info.config.num_experts_per_tok


def check_trace(choice_trace, n_tokens, layers, experts, top_k):
    assert len(choice_trace["token_ids"]) == n_tokens
    assert len(choice_trace["experts"]) == n_tokens and len(choice_trace["weights"]) == n_tokens
    for ids, ws in zip(choice_trace["experts"], choice_trace["weights"]):
        assert len(ids) == layers and len(ws) == layers
        for e, w in zip(ids, ws):
            assert len(e) == top_k and len(set(e)) == top_k and all(0 <= x < experts for x in e)
            assert w == sorted(w, reverse=True), w          # best first
            assert math.isclose(sum(w), 1.0, rel_tol=1e-5)  # softmax over the k


def test_off_by_default_and_on_leaves_outputs_unchanged(lab, pb):
    layers, experts, top_k = model_shape(lab, pb)
    off = complete(lab, "The quick brown fox")
    assert "routing" not in off
    on = complete(lab, "The quick brown fox", routing=True)
    assert on["choices"][0]["text"] == off["choices"][0]["text"]
    assert on["choices"][0]["logprobs"] == off["choices"][0]["logprobs"]  # bitwise
    explicit_off = complete(lab, "The quick brown fox", routing=False)
    assert "routing" not in explicit_off
    assert explicit_off["choices"] == off["choices"]
    r = on["routing"]
    assert (r["num_layers"], r["top_k"]) == (layers, top_k)
    usage = on["usage"]
    n = usage["prompt_tokens"] + usage["completion_tokens"] - 1  # the last token never runs
    (c,) = r["choices"]
    assert c["index"] == 0
    check_trace(c, n, layers, experts, top_k)
    # The traced ids are the prompt, then the generated tokens but the last.
    tokens = stub(lab, pb).Tokenize(pb[0].TokenizeRequest(text="The quick brown fox", add_bos=True),
                                    timeout=30).ids
    assert c["token_ids"][:len(tokens)] == list(tokens)


def test_decisive_skew_shows_in_the_trace(lab, pb):
    out = complete(lab, "Forced routing", routing=True, router_skew="hot:2:1000")
    for per_layer in out["routing"]["choices"][0]["experts"]:
        assert all(sorted(e) == [0, 1] for e in per_layer), per_layer


def test_stream_final_chunk_and_grpc_carry_the_same_trace(lab, pb):
    ref = complete(lab, "Streams and traces", routing=True, n=2, temperature=0)
    chunks = []
    with httpx.stream("POST", lab.base_url + "/v1/completions", timeout=60, json={
            "model": MODEL_NAME, "prompt": "Streams and traces", "max_tokens": 5,
            "temperature": 0, "ignore_eos": True, "n": 2, "stream": True,
            "return_routing": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                import json
                chunks.append(json.loads(line[6:]))
    traced = {}
    for ch in chunks:
        for c in ch.get("routing", {}).get("choices", []):
            traced[c["index"]] = c
    by_index = {c["index"]: c for c in ref["routing"]["choices"]}
    assert sorted(traced) == [0, 1] and sorted(by_index) == [0, 1]
    for i in (0, 1):
        assert traced[i]["experts"] == by_index[i]["experts"]
        assert traced[i]["weights"] == by_index[i]["weights"]
    # gRPC: repeated TokenRouting on the finishing delta, experts layer-major.
    responses = list(stub(lab, pb).Generate(pb[0].GenerateRequest(
        text="Streams and traces", return_routing=True,
        sampling=pb[0].SamplingParameters(max_tokens=5, ignore_eos=True, n=2)), timeout=60))
    got = {}
    for resp in responses:
        for d in resp.choices:
            if d.routing:
                got[d.index] = d.routing
    assert sorted(got) == [0, 1]
    layers, top_k = ref["routing"]["num_layers"], ref["routing"]["top_k"]
    for i in (0, 1):
        want = by_index[i]
        assert [t.position for t in got[i]] == list(range(len(want["experts"])))
        assert [t.token_id for t in got[i]] == want["token_ids"]
        for t, e, w in zip(got[i], want["experts"], want["weights"]):
            assert list(t.experts) == [x for per in e for x in per]
            # float32 on the wire, the same float32 printed in JSON
            assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in
                       zip(t.weights, [x for per in w for x in per]))
        assert all(len(t.experts) == layers * top_k for t in got[i])


def test_over_the_cap_is_400_and_invalid_argument(lab, pb):
    layers, _, _ = model_shape(lab, pb)
    tokens = LAYERS_CAP // layers + 1  # prompt + max_tokens - 1 over the cap
    body = {"model": MODEL_NAME, "prompt": [1] * 2, "max_tokens": tokens, "return_routing": True}
    r = post(lab, "/v1/completions", body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "return_routing", err
    assert "--max-routing-entries" in err["message"] and str(LAYERS_CAP) in err["message"]
    # The same request without traces is fine.
    body["return_routing"] = False
    assert post(lab, "/v1/completions", body).status_code == 200
    with pytest.raises(grpc.RpcError) as e:
        list(stub(lab, pb).Generate(pb[0].GenerateRequest(
            token_ids=pb[0].TokenIds(ids=[1, 1]), return_routing=True,
            sampling=pb[0].SamplingParameters(max_tokens=tokens)), timeout=60))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "return_routing" in e.value.details()
    r = post(lab, "/v1/completions", {"model": MODEL_NAME, "prompt": "x", "return_routing": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "return_routing", r.text


def recounted(traces, layers, experts):
    """Rows per layer per expert, recomputed from routing traces."""
    counts = [[0] * experts for _ in range(layers)]
    for trace in traces:
        for per_layer in trace["experts"]:
            for layer, chosen in enumerate(per_layer):
                for e in chosen:
                    counts[layer][e] += 1
    return counts


def test_recorder_counts_equal_the_traces(lab, pb):
    layers, experts, top_k = model_shape(lab, pb)
    s = httpx.post(lab.base_url + "/v1/lab/recorder/start", timeout=30).json()
    assert s["recording"] is True and "steps" not in s
    traces = []
    for prompt, skew in [("one two three", None), ("Mixture of experts", "zipf:1.5"),
                         ("A longer prompt about routing and load", None)]:
        extra = {"router_skew": skew} if skew else {}
        out = complete(lab, prompt, routing=True, max_tokens=4, n=2, **extra)
        traces += out["routing"]["choices"]
    stopped = httpx.post(lab.base_url + "/v1/lab/recorder/stop", timeout=30).json()
    assert stopped["recording"] is False
    # Requests after stop are not recorded.
    complete(lab, "not recorded", max_tokens=3)
    dump = httpx.get(lab.base_url + "/v1/lab/recorder/dump", timeout=30).json()
    assert (dump["num_layers"], dump["num_experts"], dump["world_size"]) == (layers, experts, 1)
    assert dump["steps_dropped"] == 0 and dump["steps"]
    summed = [[sum(st["expert_tokens"][l][e] for st in dump["steps"]) for e in range(experts)]
              for l in range(layers)]
    assert summed == recounted(traces, layers, experts)
    n_tokens = sum(len(t["token_ids"]) for t in traces)
    for l in range(layers):
        assert sum(st["rank_rows"][l][0] for st in dump["steps"]) == n_tokens * top_k
    steps = [st["step"] for st in dump["steps"]]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    # gRPC sees the same ring.
    g = stub(lab, pb).DumpRecorder(pb[0].RecorderRequest(), timeout=30)
    assert [st.step for st in g.steps] == steps
    assert [[list(layer.expert_tokens) for layer in st.layers] for st in g.steps] == \
        [st["expert_tokens"] for st in dump["steps"]]


def test_recorder_ring_is_bounded_and_grpc_controls_it(pb):
    d = Daemon("--max-model-len", "512", "--recorder-max-steps", "3")
    try:
        s = stub(d, pb)
        _, _, top_k = model_shape(d, pb)
        assert s.StartRecorder(pb[0].RecorderRequest(), timeout=30).recording
        complete(d, "a b c", max_tokens=6)  # 1 prefill + 5 decode steps
        dump = s.StopRecorder(pb[0].RecorderRequest(), timeout=30)
        assert not dump.recording and dump.max_steps == 3 and len(dump.steps) == 0
        full = s.DumpRecorder(pb[0].RecorderRequest(), timeout=30)
        assert len(full.steps) == 3 and full.steps_dropped == 3
        assert [st.step for st in full.steps] == list(range(full.steps[0].step, full.steps[0].step + 3))
        # Decode steps: one token, top_k rows per layer.
        for st in full.steps:
            assert all(sum(layer.expert_tokens) == top_k for layer in st.layers)
    finally:
        assert d.terminate() == 0, d.log()


def test_recorder_merges_expert_parallel_ranks_by_step(pb):
    """--ep-size 2 (contiguous: rank 0 holds experts 0-3, rank 1 experts 4-7): every recorded step
    merges both ranks; per step and layer, a rank's rows are the rows routed to its experts; the
    sums over steps are the traces' counts."""
    import concurrent.futures

    d = Daemon("--max-model-len", "512", "--ep-size", "2")
    try:
        layers, experts, top_k = model_shape(d, pb)
        httpx.post(d.base_url + "/v1/lab/recorder/start", timeout=30)
        prompts = ["first rank prompt", "second rank prompt here", "a third one"]
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            outs = list(pool.map(lambda p: complete(d, p, routing=True, max_tokens=4), prompts))
        httpx.post(d.base_url + "/v1/lab/recorder/stop", timeout=30)
        dump = httpx.get(d.base_url + "/v1/lab/recorder/dump", timeout=30).json()
        assert dump["world_size"] == 2 and dump["steps"]
        half = experts // 2
        for st in dump["steps"]:
            for l in range(layers):
                tokens = st["expert_tokens"][l]
                assert st["rank_rows"][l] == [sum(tokens[:half]), sum(tokens[half:])], st
        traces = [c for out in outs for c in out["routing"]["choices"]]
        summed = [[sum(st["expert_tokens"][l][e] for st in dump["steps"]) for e in range(experts)]
                  for l in range(layers)]
        assert summed == recounted(traces, layers, experts)
    finally:
        assert d.terminate() == 0, d.log()
