"""The gRPC API (proto/moeserve.proto) with stubs generated at test time, plus the standard
health service and server reflection."""

import time

import grpc
import pytest

from conftest import MODEL_NAME


def generate(pb, stub, timeout=60, **kwargs):
    sampling = kwargs.pop("sampling", {})
    request = pb[0].GenerateRequest(sampling=pb[0].SamplingParameters(**sampling), **kwargs)
    return list(stub.Generate(request, timeout=timeout))


def collect(responses):
    text, ids, finish = "", [], ""
    for r in responses:
        for c in r.choices:
            text += c.text
            ids += list(c.token_ids)
            finish = c.finish_reason or finish
    return text, ids, finish


def test_generate_text_chat_and_ids(pb, grpc_stub):
    responses = generate(pb, grpc_stub, text="Hello there",
                         sampling={"max_tokens": 6, "ignore_eos": True})
    assert responses[-1].finished
    text, ids, finish = collect(responses)
    assert len(ids) == 6 and finish == "length"
    assert responses[-1].usage.completion_tokens == 6

    chat = pb[0].ChatMessages(messages=[pb[0].ChatMessage(role="user", content="Hi")])
    _, chat_ids, _ = collect(generate(pb, grpc_stub, chat=chat, sampling={"max_tokens": 4}))
    assert 1 <= len(chat_ids) <= 4

    # A token-id prompt equal to the text prompt's tokens gives the same greedy tokens.
    prompt = grpc_stub.Tokenize(pb[0].TokenizeRequest(text="Hello there", add_bos=True)).ids
    _, same, _ = collect(generate(pb, grpc_stub, token_ids=pb[0].TokenIds(ids=prompt),
                                  sampling={"max_tokens": 6, "ignore_eos": True}))
    assert same == ids


def test_tokenize_detokenize(pb, grpc_stub):
    tok = grpc_stub.Tokenize(pb[0].TokenizeRequest(text="Hello world", add_bos=True))
    assert tok.ids[0] == 1 and len(tok.ids) == len(tok.pieces) >= 3
    text = grpc_stub.Detokenize(pb[0].DetokenizeRequest(ids=tok.ids)).text
    assert text == "Hello world"
    with pytest.raises(grpc.RpcError) as e:
        grpc_stub.Detokenize(pb[0].DetokenizeRequest(ids=[10**6]))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_model_info_and_stats(pb, grpc_stub):
    info = grpc_stub.ModelInfo(pb[0].ModelInfoRequest())
    assert info.served_model_name == MODEL_NAME
    assert info.config.num_local_experts == 8 and info.config.num_experts_per_tok == 2
    assert info.limits.max_model_len == 512
    assert info.placement.world_size >= 1
    assert "max_queue" in info.server_config
    generate(pb, grpc_stub, text="stats please", sampling={"max_tokens": 2})
    stats = grpc_stub.GetStats(pb[0].GetStatsRequest())
    assert stats.requests_finished >= 1 and stats.generated_tokens >= 1
    assert stats.kv_blocks_total > 0
    assert len(stats.expert_tokens) == info.config.num_hidden_layers
    assert all(len(layer.tokens) == 8 for layer in stats.expert_tokens)
    assert sum(sum(layer.tokens) for layer in stats.expert_tokens) > 0


def test_invalid_argument(pb, grpc_stub):
    cases = [
        ({}, "prompt"),
        ({"text": ""}, "prompt"),
        ({"text": "x", "sampling": {"temperature": -1}}, "temperature"),
        ({"text": "x", "sampling": {"top_p": 0}}, "top_p"),
        ({"text": "x", "sampling": {"top_k": -5}}, "top_k"),
        ({"text": "x", "sampling": {"max_tokens": 0}}, "max_tokens"),
        ({"text": "x", "sampling": {"max_tokens": 100000}}, "max_tokens"),
        ({"text": "x", "model": "no-such-model"}, "model"),
    ]
    for kwargs, word in cases:
        with pytest.raises(grpc.RpcError) as e:
            generate(pb, grpc_stub, **kwargs)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, kwargs
        assert word in e.value.details(), (kwargs, e.value.details())
    assert collect(generate(pb, grpc_stub, text="still serving", sampling={"max_tokens": 2}))[1]


def wait_for_idle_kv(pb, grpc_stub, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = grpc_stub.GetStats(pb[0].GetStatsRequest())
        if stats.kv_blocks_used == 0 and stats.running_sequences == 0:
            return stats
        time.sleep(0.05)
    raise AssertionError(f"KV blocks still in use: {stats}")


def test_deadline_and_cancel_free_kv(pb, grpc_stub):
    sampling = pb[0].SamplingParameters(max_tokens=400, ignore_eos=True)
    with pytest.raises(grpc.RpcError) as e:
        list(grpc_stub.Generate(pb[0].GenerateRequest(text="a long one", sampling=sampling),
                                timeout=0.3))
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for_idle_kv(pb, grpc_stub)
    call = grpc_stub.Generate(pb[0].GenerateRequest(text="cancel me", sampling=sampling))
    next(call)  # the request is running
    call.cancel()
    wait_for_idle_kv(pb, grpc_stub)
    assert grpc_stub.GetStats(pb[0].GetStatsRequest()).requests_cancelled >= 2


def test_health_and_reflection(daemon):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(daemon.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(reflection.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in response.list_services_response.service}
        assert "moeserve.v1.Moeserve" in names and "grpc.health.v1.Health" in names
