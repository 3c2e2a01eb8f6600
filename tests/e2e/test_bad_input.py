"""Every kind of bad request gets a 400 with an OpenAI error body that says what is wrong, and the
daemon keeps serving."""

import socket
import time

import httpx
import pytest

from conftest import MODEL_NAME, post

OK = {"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 2}
CHAT_OK = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
LONG_PROMPT = "word " * 600  # past --max-model-len 512

# (id, path, body, a word the message must contain)
CASES = [
    ("malformed_json", "/v1/completions", b'{"prompt": "x",', "JSON"),
    ("not_an_object", "/v1/completions", b"[1, 2]", "object"),
    ("wrong_type_prompt", "/v1/completions", {**OK, "prompt": 5}, "prompt"),
    ("wrong_type_max_tokens", "/v1/completions", {**OK, "max_tokens": "ten"}, "max_tokens"),
    ("wrong_type_temperature", "/v1/completions", {**OK, "temperature": "hot"}, "temperature"),
    ("wrong_type_stream", "/v1/completions", {**OK, "stream": "yes"}, "stream"),
    ("wrong_type_messages", "/v1/chat/completions", {**CHAT_OK, "messages": "hi"}, "messages"),
    ("missing_prompt", "/v1/completions", {"model": MODEL_NAME}, "prompt"),
    ("missing_messages", "/v1/chat/completions", {"model": MODEL_NAME}, "messages"),
    ("empty_prompt", "/v1/completions", {**OK, "prompt": ""}, "prompt"),
    ("empty_messages", "/v1/chat/completions", {**CHAT_OK, "messages": []}, "messages"),
    ("bad_role", "/v1/chat/completions",
     {**CHAT_OK, "messages": [{"role": "wizard", "content": "x"}]}, "role"),
    ("prompt_too_long", "/v1/completions", {**OK, "prompt": LONG_PROMPT}, "prompt"),
    ("chat_too_long", "/v1/chat/completions",
     {**CHAT_OK, "messages": [{"role": "user", "content": LONG_PROMPT}]}, "prompt"),
    ("max_tokens_zero", "/v1/completions", {**OK, "max_tokens": 0}, "max_tokens"),
    ("max_tokens_negative", "/v1/completions", {**OK, "max_tokens": -3}, "max_tokens"),
    ("max_tokens_past_context", "/v1/completions", {**OK, "max_tokens": 100000}, "max_tokens"),
    ("chat_max_completion_tokens_zero", "/v1/chat/completions",
     {**CHAT_OK, "max_completion_tokens": 0}, "max_tokens"),
    ("temperature_negative", "/v1/completions", {**OK, "temperature": -0.5}, "temperature"),
    ("top_p_zero", "/v1/completions", {**OK, "top_p": 0}, "top_p"),
    ("top_p_above_one", "/v1/completions", {**OK, "top_p": 1.5}, "top_p"),
    ("top_k_below_minus_one", "/v1/completions", {**OK, "top_k": -2}, "top_k"),
    ("unknown_model", "/v1/completions", {**OK, "model": "gpt-17"}, "gpt-17"),
    ("invalid_utf8", "/v1/completions",
     b'{"model": "moeserve-tiny", "prompt": "caf\xc3\x28", "max_tokens": 2}', "UTF-8"),
    ("too_many_stop_strings", "/v1/completions",
     {**OK, "stop": [f"s{i}" for i in range(40)]}, "stop"),
    ("stop_wrong_type", "/v1/completions", {**OK, "stop": [1, 2]}, "stop"),
    ("n_zero", "/v1/completions", {**OK, "n": 0}, "n"),
    ("batched_prompts", "/v1/completions", {**OK, "prompt": ["a", "b"]}, "prompt"),
    ("token_id_outside_vocab", "/v1/completions", {**OK, "prompt": [1, 99999999]}, "vocabulary"),
]


def assert_openai_error(r: httpx.Response, status: int, word: str):
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert word.lower() in error["message"].lower(), error


@pytest.mark.parametrize("path,body,word", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request_gets_400_and_daemon_keeps_serving(daemon, path, body, word):
    assert_openai_error(post(daemon, path, body), 400, word)
    good = post(daemon, path, CHAT_OK if "chat" in path else OK)
    assert good.status_code == 200, good.text


def test_body_larger_than_limit(daemon):
    big = b'{"prompt": "' + b"x" * (5 << 20) + b'"}'  # past the default --max-body-bytes (4 MiB)
    assert_openai_error(post(daemon, "/v1/completions", big), 400, "max-body-bytes")
    assert post(daemon, "/v1/completions", OK).status_code == 200


def test_openai_client_sees_bad_request(client):
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL_NAME, prompt="x", temperature=-1)
    assert "temperature" in str(e.value)


def test_unknown_route_is_404_json(daemon):
    r = httpx.get(daemon.base_url + "/v1/nothing")
    assert r.status_code == 404
    assert "error" in r.json()


# Numbers that overflow a double, wrong-typed content parts and OpenAI fields we do not
# implement: 400 naming the parameter (issue 10).
def raw(path_fields: str) -> bytes:
    return ('{"model": "moeserve-tiny", "prompt": "Hello", ' + path_fields + "}").encode()


def raw_chat(fields: str) -> bytes:
    return ('{"model": "moeserve-tiny", "messages": [{"role": "user", "content": "Hi"}], '
            + fields + "}").encode()


# (id, path, body, the parameter the error names)
PARAM_CASES = [
    *[(f"overflow_{f}", "/v1/completions", raw(f'"{f}": 1e999'), f)
      for f in ("max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "n",
                "frequency_penalty", "presence_penalty", "repetition_penalty", "logprobs")],
    ("overflow_negative", "/v1/completions", raw('"temperature": -1e999'), "temperature"),
    ("overflow_chat_top_logprobs", "/v1/chat/completions",
     raw_chat('"logprobs": true, "top_logprobs": 1e999'), "top_logprobs"),
    ("overflow_prompt_id", "/v1/completions",
     b'{"model": "moeserve-tiny", "prompt": [1, 1e999]}', "prompt"),
    ("overflow_nested", "/v1/completions", raw('"stream_options": {"include_usage": 1e999}'),
     "stream_options"),
    ("content_part_type_not_string", "/v1/chat/completions",
     {"model": MODEL_NAME, "messages": [{"role": "user", "content": [{"type": 5, "text": "x"}]}]},
     "messages"),
    ("content_part_text_not_string", "/v1/chat/completions",
     {"model": MODEL_NAME,
      "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages"),
    ("content_part_not_object", "/v1/chat/completions",
     {"model": MODEL_NAME, "messages": [{"role": "user", "content": [5]}]}, "messages"),
    ("role_not_string", "/v1/chat/completions",
     {"model": MODEL_NAME, "messages": [{"role": 5, "content": "x"}]}, "messages"),
    ("echo", "/v1/completions", {**OK, "echo": True}, "echo"),
    ("suffix", "/v1/completions", {**OK, "suffix": "the end"}, "suffix"),
    ("best_of", "/v1/completions", {**OK, "best_of": 3}, "best_of"),
    ("logit_bias", "/v1/completions", {**OK, "logit_bias": {"13": 100}}, "logit_bias"),
    ("logit_bias_out_of_range_id", "/v1/completions",
     {**OK, "logit_bias": {"99999999": 5}}, "logit_bias"),
    ("response_format", "/v1/chat/completions",
     {**CHAT_OK, "response_format": {"type": "json_object"}}, "response_format"),
    ("functions", "/v1/chat/completions",
     {**CHAT_OK, "functions": [{"name": "f", "parameters": {}}]}, "functions"),
    ("tools", "/v1/chat/completions",
     {**CHAT_OK, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ("tool_choice", "/v1/chat/completions", {**CHAT_OK, "tool_choice": "required"},
     "tool_choice"),
    ("function_call", "/v1/chat/completions", {**CHAT_OK, "function_call": "auto"},
     "function_call"),
]


@pytest.mark.parametrize("path,body,param", [c[1:] for c in PARAM_CASES],
                         ids=[c[0] for c in PARAM_CASES])
def test_bad_parameter_gets_400_naming_it(daemon, path, body, param):
    r = post(daemon, path, body)
    assert_openai_error(r, 400, param)
    assert r.json()["error"]["param"] == param, r.text
    good = post(daemon, path, CHAT_OK if "chat" in path else OK)
    assert good.status_code == 200, good.text


# Defaults of the fields above mean "not used" and are accepted.
@pytest.mark.parametrize("path,fields", [
    ("/v1/completions", {"echo": False, "best_of": 1, "logit_bias": {}, "suffix": None,
                         "user": "someone"}),
    ("/v1/chat/completions", {"response_format": {"type": "text"}, "tools": [],
                              "tool_choice": "none", "logit_bias": None}),
])
def test_neutral_values_of_unimplemented_fields_are_accepted(daemon, path, fields):
    r = post(daemon, path, {**(CHAT_OK if "chat" in path else OK), **fields})
    assert r.status_code == 200, r.text


def test_form_encoded_body_gets_415(daemon):
    r = httpx.post(daemon.base_url + "/v1/completions", data={"prompt": "x", "max_tokens": "2"})
    assert_openai_error(r, 415, "application/json")


def test_wrong_method_gets_405(daemon):
    for method, path in (("GET", "/v1/completions"), ("PUT", "/v1/chat/completions"),
                         ("POST", "/health"), ("DELETE", "/v1/models"), ("POST", "/metrics")):
        r = httpx.request(method, daemon.base_url + path)
        assert r.status_code == 405, (method, path, r.status_code, r.text)
        assert "allow" in r.headers
        assert "error" in r.json()


@pytest.mark.parametrize("headers", [
    ["Content-Length: -1"],
    ["Content-Length: 5", "Content-Length: 7"],
    ["Content-Length: 5", "Transfer-Encoding: chunked"],
    ["Content-Length: 12abc"],
], ids=["negative", "doubled", "with_transfer_encoding", "not_a_number"])
def test_bad_content_length_gets_400_at_once(daemon, headers):
    head = "\r\n".join(["POST /v1/completions HTTP/1.1", "Host: x",
                        "Content-Type: application/json", *headers]) + "\r\n\r\n"
    with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=3) as s:
        s.sendall(head.encode() + b"{}")
        t0 = time.monotonic()
        reply = s.recv(4096)
        assert time.monotonic() - t0 < 2
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
