"""bench/loadgen_workload.py without a daemon: the workload syntax, its errors, the sweep expansion
and the request plan (draws against their definitions, Poisson gaps against 1/rate)."""

import math
import random
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import loadgen_workload as wl  # noqa: E402

IDS = {"ids": {"random_tokens": {"low": 10, "high": 20}}}


def parse(raw):
    return wl.parse_workload(raw, REPO)


def one_phase(**phase):
    return parse({"prompt_sets": IDS, "phases": [{"name": "p", "prompt_len": 4, "requests": 1,
                                                  **phase}]})


def test_length_distributions_draw_within_their_definitions():
    rng = random.Random(0)
    uniform = wl.parse_length("x", {"uniform": [3, 6]}, 1)
    assert {uniform.draw(rng) for _ in range(400)} == {3, 4, 5, 6}
    normal = wl.parse_length("x", {"normal": {"mean": 10, "std": 30, "min": 2, "max": 15}}, 1)
    draws = [normal.draw(rng) for _ in range(2000)]
    assert min(draws) == 2 and max(draws) == 15  # clipped at both ends (std 30 reaches both)
    choice = wl.parse_length("x", {"choice": [1, 9], "weights": [0, 1]}, 1)
    assert {choice.draw(rng) for _ in range(100)} == {9}
    assert wl.parse_length("x", 7, 1).draw(rng) == 7


@pytest.mark.parametrize("spec,message", [
    ({"uniform": [5, 2]}, "lo 5 > hi 2"),
    ({"uniform": [0, 2]}, "expected an integer >= 1"),
    ({"poisson": 3}, "unknown length distribution ['poisson']"),
    ({"choice": [1, 2], "weights": [1]}, "one weight per choice"),
    ("12", "expected an int"),
])
def test_bad_lengths_name_the_field(spec, message):
    with pytest.raises(wl.WorkloadError, match="phases\\[0\\].output_len") as e:
        one_phase(output_len=spec)
    assert message in str(e.value)


def test_rate_and_concurrency_replace_each_other_from_the_defaults():
    w = parse({"prompt_sets": IDS,
               "defaults": {"prompt_len": 4, "concurrency": 3, "requests": 5},
               "phases": [{"name": "closed"}, {"name": "open", "rate": 2.5},
                          {"name": "timed", "duration_s": 1.5}]})
    closed, open_, timed = w.phases
    assert (closed.concurrency, closed.rate, closed.requests) == (3, None, 5)
    assert (open_.concurrency, open_.rate) == (None, 2.5)
    assert (timed.requests, timed.duration_s) == (None, 1.5)
    with pytest.raises(wl.WorkloadError, match="not both"):
        one_phase(rate=1, concurrency=2)


def test_sweep_expands_concurrency_by_level():
    w = parse({"prompt_sets": IDS, "sweep": {
        "skew_levels": [0, 2.5, 8], "skew_template": "zipf:{level}", "concurrency": [1, 4],
        "phase": {"prompt_len": 4, "requests": 2}}})
    assert [(p.name, p.skew_text(), p.concurrency, p.skew_level) for p in w.phases] == [
        ("skew=0 c=1", "off", 1, 0), ("skew=2.5 c=1", "zipf:2.5", 1, 2.5),
        ("skew=8 c=1", "zipf:8", 1, 8), ("skew=0 c=4", "off", 4, 0),
        ("skew=2.5 c=4", "zipf:2.5", 4, 2.5), ("skew=8 c=4", "zipf:8", 4, 8)]
    with pytest.raises(wl.WorkloadError, match="sweep.skew_template"):
        parse({"prompt_sets": IDS, "sweep": {"skew_levels": [1], "skew_template": "hot:2"}})


def test_plan_is_a_function_of_seed_phase_and_index():
    raw = {"seed": 9, "prompt_sets": IDS, "phases": [
        {"name": "a", "prompt_len": {"uniform": [2, 8]}, "output_len": {"uniform": [1, 5]},
         "requests": 50, "skew": [{"profile": "hot:2:4", "weight": 3}, {"profile": None}]}]}
    w = parse(raw)
    forward = [wl.plan_request(w, 0, i) for i in range(50)]
    backward = [wl.plan_request(parse(raw), 0, i) for i in reversed(range(50))][::-1]
    assert [(r.prompt, r.max_tokens, r.skew) for r in forward] == [
        (r.prompt, r.max_tokens, r.skew) for r in backward]
    for r in forward:
        assert len(r.prompt) == r.prompt_len and 2 <= r.prompt_len <= 8
        assert all(10 <= t <= 20 for t in r.prompt) and 1 <= r.max_tokens <= 5
    assert {r.skew for r in forward} == {"hot:2:4", None}
    other_seed = parse({**raw, "seed": 10})
    assert [wl.plan_request(other_seed, 0, i).prompt for i in range(50)] != [
        r.prompt for r in forward]


def test_poisson_gaps_have_mean_one_over_rate():
    w = one_phase(rate=4.0, requests=None, duration_s=1.0)
    offsets = wl.arrival_offsets(w, 0, None, 20000)
    gaps = [b - a for a, b in zip(offsets, offsets[1:])]
    assert offsets[0] == 0 and min(gaps) > 0
    # Exponential(4): mean 0.25, std 0.25; the mean of n gaps is within 5 sigma / sqrt(n).
    assert abs(sum(gaps) / len(gaps) - 0.25) < 5 * 0.25 / math.sqrt(len(gaps))
    timed = wl.arrival_offsets(w, 0, 10.0, None)
    assert max(timed) <= 10.0 and len(timed) > 20


def test_workload_errors():
    with pytest.raises(wl.WorkloadError, match="prompt_sets.f.file: cannot read"):
        parse({"prompt_sets": {"f": {"file": "no/such/file.txt"}}, "phases": []})
    with pytest.raises(wl.WorkloadError, match="random_tokens prompts need endpoint"):
        parse({"endpoint": "chat", "prompt_sets": IDS,
               "phases": [{"name": "p", "prompt_len": 3, "requests": 1}]})
    with pytest.raises(wl.WorkloadError, match="phase names must be unique"):
        parse({"prompt_sets": IDS, "phases": [{"name": "p", "prompt_len": 3, "requests": 1}] * 2})
    with pytest.raises(wl.WorkloadError, match="no phase to run"):
        parse({"prompt_sets": IDS})
