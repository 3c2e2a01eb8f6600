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


# (method, bytes that are not a valid request message, the message type named in the error)
UNDECODABLE = [
    ("Tokenize", b"\xff\xff\xff\xff", "moeserve.v1.TokenizeRequest"),       # unterminated tag
    ("Tokenize", b"\x0a\x03caf\xc3", "moeserve.v1.TokenizeRequest"),          # truncated field
    ("Tokenize", b"\x0a\x04caf\xc3\x28"[:6], "moeserve.v1.TokenizeRequest"),  # invalid UTF-8
    ("Detokenize", b"\x0a\x05\x01", "moeserve.v1.DetokenizeRequest"),
    ("ModelInfo", b"\x07", "moeserve.v1.ModelInfoRequest"),                  # wire type 7
    ("GetStats", b"\xff", "moeserve.v1.GetStatsRequest"),
    ("Generate", b"\x12\x02\xc3\x28", "moeserve.v1.GenerateRequest"),        # text: bad UTF-8
    ("Generate", b"\x12\xff\xff\xff\xff\x0f", "moeserve.v1.GenerateRequest"),
]


@pytest.mark.parametrize("method,payload,message_type", UNDECODABLE,
                         ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(UNDECODABLE)])
def test_undecodable_request_is_invalid_argument(daemon, pb, grpc_stub, method, payload,
                                                 message_type):
    """Bytes that do not decode as the request message get INVALID_ARGUMENT naming the message
    (gRPC's generated handler answered UNIMPLEMENTED with no message, and protobuf logged an
    error line per request). Sent with identity serializers on a raw channel."""
    with grpc.insecure_channel(daemon.grpc_target) as channel:
        path = f"/moeserve.v1.Moeserve/{method}"
        if method == "Generate":
            call = channel.unary_stream(path, request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.RpcError) as e:
                list(call(payload, timeout=30))
        else:
            call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.RpcError) as e:
                call(payload, timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.value.code(), e.value.details())
    assert message_type in e.value.details(), e.value.details()
    assert "libprotobuf ERROR" not in daemon.log()
    # The daemon keeps serving, and well-formed raw bytes still work.
    assert grpc_stub.Tokenize(pb[0].TokenizeRequest(text="hi"), timeout=30).ids
    with grpc.insecure_channel(daemon.grpc_target) as channel:
        raw = channel.unary_unary("/moeserve.v1.Moeserve/Tokenize", request_serializer=None,
                                  response_deserializer=None)
        reply = pb[0].TokenizeResponse.FromString(
            raw(pb[0].TokenizeRequest(text="hi").SerializeToString(), timeout=30))
    assert list(reply.ids) == list(grpc_stub.Tokenize(pb[0].TokenizeRequest(text="hi")).ids)


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
