"""The OpenAI-compatible HTTP API, driven by the official `openai` client."""

import json
import re

import httpx

from conftest import MODEL_NAME, post

PROMPT = "The capital of France is"


def test_models_and_health(daemon, client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    assert httpx.get(daemon.base_url + "/health").status_code == 200


def test_completion(client):
    r = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=8, temperature=0)
    assert r.object == "text_completion"
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert isinstance(choice.text, str) and choice.text
    assert choice.finish_reason in ("length", "stop")
    assert r.usage.prompt_tokens > 0
    assert 0 < r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_completion_stream_matches_non_stream(client):
    whole = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=12,
                                      temperature=0)
    chunks = list(client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=12,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason
    assert all(f is None for f in finishes[:-1])
    # include_usage: a last chunk with no choices and the usage.
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_chat(client):
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Name a colour."}]
    r = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=10,
                                       temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    stream = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=10,
                                            temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason


def test_chat_max_completion_tokens_and_logprobs(client):
    r = client.chat.completions.create(model=MODEL_NAME,
                                       messages=[{"role": "user", "content": "Hi"}],
                                       max_completion_tokens=5, temperature=0, logprobs=True,
                                       top_logprobs=3, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 5
    content = r.choices[0].logprobs.content
    assert len(content) == 5
    for lp in content:
        assert lp.logprob <= 0
        assert len(lp.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert abs(lp.top_logprobs[0].logprob - lp.logprob) < 1e-4


def test_completion_logprobs_n_seed_stop(client):
    r = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=6, logprobs=2,
                                  extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    # n=3 with a seed: three choices; the same seed gives the same three again.
    a = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=8, n=3,
                                  temperature=1.0, seed=1234)
    b = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=8, n=3,
                                  temperature=1.0, seed=1234)
    assert sorted(c.index for c in a.choices) == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    # A stop string cut out of the greedy text: the output ends right before it.
    full = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=16,
                                     temperature=0, extra_body={"ignore_eos": True})
    text = full.choices[0].text
    if len(text) > 4:
        stop = text[2:4]
        cut = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=16,
                                        temperature=0, stop=[stop],
                                        extra_body={"ignore_eos": True})
        assert cut.choices[0].finish_reason == "stop"
        assert cut.choices[0].text == text[:text.index(stop)]


def test_sampling_extras_accepted(daemon):
    body = {"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 4, "temperature": 0.8,
            "top_p": 0.9, "top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1,
            "frequency_penalty": 0.5, "presence_penalty": 0.5, "seed": 7,
            "stop_token_ids": [13], "ignore_eos": True}
    r = post(daemon, "/v1/completions", body)
    assert r.status_code == 200, r.text


def test_token_id_prompt(daemon):
    r = post(daemon, "/v1/completions",
             {"model": MODEL_NAME, "prompt": [1, 415, 5565], "max_tokens": 3})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == 3


def test_sse_wire_format(daemon):
    with httpx.stream("POST", daemon.base_url + "/v1/completions", timeout=60,
                      json={"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 4,
                            "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    for e in events[:-1]:
        assert e.startswith("data: {")
        json.loads(e[len("data: "):])


def test_metrics(daemon, client):
    client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=4)
    text = httpx.get(daemon.base_url + "/metrics").text
    for family in ("moeserve_requests_total", "moeserve_time_to_first_token_seconds_bucket",
                   "moeserve_inter_token_latency_seconds_bucket", "moeserve_queue_depth",
                   "moeserve_running_sequences", "moeserve_kv_usage_ratio",
                   "moeserve_preemptions_total", "moeserve_generation_tokens_total"):
        assert re.search(rf"^{family}", text, re.M), family
    experts = re.findall(r'^moeserve_expert_tokens_total\{layer="(\d+)",expert="(\d+)"\} (\d+)',
                         text, re.M)
    assert experts, "no per-expert token counts"
    assert sum(int(n) for _, _, n in experts) > 0
    assert 'code="200"' in text
