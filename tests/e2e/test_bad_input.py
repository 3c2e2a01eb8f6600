"""Every kind of bad request gets a 400 with an OpenAI error body that says what is wrong, and the
daemon keeps serving."""

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
