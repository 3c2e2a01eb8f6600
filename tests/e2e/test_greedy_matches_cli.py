"""Greedy output of the daemon (HTTP and gRPC) equals `moeserve generate` for the same prompt:
the continuous-batching engine against the single-request CLI loop."""

import re
import subprocess

import pytest

from conftest import MODEL_NAME, moeserve_bin

MAX_TOKENS = 24


def run_cli(*args):
    out = subprocess.run([moeserve_bin(), "generate", "--max-tokens", str(MAX_TOKENS),
                          "--show-tokens", "--threads", "1", *args],
                         capture_output=True, text=True, timeout=120, check=True)
    generated = re.search(r"^generated tokens:(.*)$", out.stderr, re.M)
    ids = [int(t) for t in generated.group(1).split()]
    assert out.stdout.endswith("\n")
    return out.stdout[:-1], ids


@pytest.mark.parametrize("prompt", ["The capital of France is", "Once upon a time, 1 2 3"])
def test_completion_equals_cli(client, pb, grpc_stub, prompt):
    cli_text, cli_ids = run_cli("--prompt", prompt)
    r = client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=MAX_TOKENS,
                                  temperature=0)
    assert r.choices[0].text == cli_text
    request = pb[0].GenerateRequest(text=prompt,
                                    sampling=pb[0].SamplingParameters(max_tokens=MAX_TOKENS))
    ids = [t for resp in grpc_stub.Generate(request, timeout=60) for c in resp.choices
           for t in c.token_ids]
    assert ids == cli_ids


def test_chat_equals_cli(client):
    question = "Write a haiku about experts."
    cli_text, _ = run_cli("--chat", "--prompt", question)
    r = client.chat.completions.create(model=MODEL_NAME, max_tokens=MAX_TOKENS, temperature=0,
                                       messages=[{"role": "user", "content": question}])
    assert r.choices[0].message.content == cli_text
