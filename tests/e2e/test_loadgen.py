"""bench/loadgen.py, the imbalance lab's load generator (issue 12), run as a user runs it against a
daemon of its own (--ep-size 2: experts 0-3 on rank 0, 4-7 on rank 1).

Oracles:
  * counts: token-id prompts (exact lengths, no tokenizer) and ignore_eos with fixed max_tokens, so
    every request's prompt_tokens and completion_tokens, and every phase's sums, follow from the
    workload the test wrote;
  * percentiles: recomputed from the raw per-request timings in the JSON with
    statistics.quantiles (method "inclusive": the same linear interpolation, another code);
  * imbalance: "hot:2:1000" puts a row of every token run on experts 0 and 1 in every layer, so the
    skewed phase's rows per expert are N, N, 0 x 6 (N = the tokens run: prompt + completion - 1
    per request), max/mean exactly 4 and rank max/mean exactly 2 (both on rank 0); the unskewed
    phase's rows are the test's own /v1/lab/stats difference over the whole run minus that, and
    its spreads are recomputed here in float64. The daemon's own window ratios (a window of 4
    steps, inside the skewed phase at the end) must equal the skewed phase's;
  * the HTML parses (html.parser), holds the four SVG plots and no src/href, and the throughput
    plot's points are the JSON's numbers.
"""

import html.parser
import json
import math
import statistics
import subprocess
import sys

import httpx
import pytest

from conftest import REPO, Daemon

LOADGEN = REPO / "bench" / "loadgen.py"
HOT = "hot:2:1000"
TOP_K = 2
PHASES = [  # (name, skew, requests, concurrency, max_tokens)
    ("off", "off", 6, 2, 5),
    ("hot", HOT, 5, 3, 7),
]
PROMPT_LEN = (3, 9)


@pytest.fixture(scope="module")
def lab():
    d = Daemon("--ep-size", "2", "--max-model-len", "256", "--stats-window-steps", "4")
    yield d
    assert d.terminate() == 0, d.log()


def stats(d):
    r = httpx.get(d.base_url + "/v1/lab/stats", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def workload():
    return {
        "name": "e2e two phases",
        "seed": 5,
        "prompt_sets": {"ids": {"random_tokens": {"low": 100, "high": 30000}}},
        "defaults": {"prompt_set": "ids", "prompt_len": {"uniform": list(PROMPT_LEN)}},
        "phases": [{"name": n, "skew": s, "skew_level": 1000 if s == HOT else 0, "requests": r,
                    "concurrency": c, "output_len": m} for n, s, r, c, m in PHASES],
    }


def run_loadgen(d, tmp_path, work, *extra):
    wpath = tmp_path / "workload.json"
    wpath.write_text(json.dumps(work))
    out = subprocess.run(
        [sys.executable, str(LOADGEN), "--url", d.base_url, "--workload", str(wpath),
         "--json", str(tmp_path / "report.json"), "--html", str(tmp_path / "report.html"),
         "--progress", "never", "--poll-interval", "0.2", *extra],
        capture_output=True, text=True, timeout=300)
    return out


def q(values, p):
    """p-th percentile by statistics.quantiles (inclusive: linear between closest ranks)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def spread(vec):
    mean = math.fsum(vec) / len(vec)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in vec) / len(vec))
    return max(vec) / mean, std / mean


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.plots, self.points, self.plot = [], [], {}, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "svg":
            self.plot = a.get("data-plot")
            self.plots.append(self.plot)
        if tag == "circle" and "data-y" in a:
            self.points.setdefault(self.plot, []).append(float(a["data-y"]))


def test_two_phases_against_their_oracles(lab, tmp_path):
    before = stats(lab)
    out = run_loadgen(lab, tmp_path, workload())
    assert out.returncode == 0, out.stdout + out.stderr
    after = stats(lab)
    report = json.loads((tmp_path / "report.json").read_text())
    layers, experts = after["num_layers"], after["num_experts"]
    assert [p["name"] for p in report["phases"]] == [p[0] for p in PHASES]
    # The printed summary names every phase.
    for name, *_ in PHASES:
        assert any(line.startswith(name + " ") for line in out.stdout.splitlines()), out.stdout

    tokens_run = {}
    for phase, (name, skew, requests, _, max_tokens) in zip(report["phases"], PHASES):
        s, recs = phase["summary"], phase["requests"]
        assert s["requests"] == s["requests_ok"] == len(recs) == requests, name
        assert s["errors"] == 0 and all(r["error"] is None for r in recs)
        assert [r["index"] for r in recs] == list(range(requests))
        assert all(r["skew"] == skew for r in recs)
        for r in recs:
            assert r["completion_tokens"] == r["max_tokens"] == max_tokens, r
            assert PROMPT_LEN[0] <= r["prompt_len"] <= PROMPT_LEN[1]
            assert r["prompt_tokens"] == r["prompt_len"], r  # token ids: no BOS, no tokenizer
        assert s["completion_tokens"] == requests * max_tokens
        assert s["prompt_tokens"] == sum(r["prompt_len"] for r in recs)
        assert s["output_tok_per_s"] == pytest.approx(s["completion_tokens"] / s["wall_s"])
        assert s["req_per_s"] == pytest.approx(requests / s["wall_s"])
        # Percentiles against a direct computation on the raw timings.
        ttft = [r["ttft_s"] for r in recs]
        itl = [g for r in recs for g in r["itl_s"]]
        assert len(itl) == sum(r["chunks"] - 1 for r in recs)
        for key, values in (("ttft_s", ttft), ("itl_s", itl)):
            for p in (50, 90, 99):
                assert s[key][f"p{p}"] == pytest.approx(q(values, p), rel=1e-12), (name, key, p)
            assert s[key]["n"] == len(values)
        tokens_run[name] = sum(r["prompt_tokens"] + r["completion_tokens"] - 1 for r in recs)

    # Imbalance. The skewed phase: by the profile's definition.
    n = tokens_run["hot"]
    hot = report["phases"][1]["imbalance"]
    assert hot["expert_tokens"] == [[n, n] + [0] * (experts - 2)] * layers
    assert hot["expert_max_mean"] == [4.0] * layers
    assert hot["rank_rows"] == [[2 * n, 0]] * layers
    assert hot["rank_max_mean"] == [2.0] * layers
    # The unskewed phase: the test's own /v1/lab/stats difference minus the skewed phase.
    total = [[a - b for a, b in zip(ra, rb)] for ra, rb in
             zip(after["total"]["expert_tokens"], before["total"]["expert_tokens"])]
    off_rows = [[t - h for t, h in zip(tl, hl)] for tl, hl in zip(total, hot["expert_tokens"])]
    off = report["phases"][0]["imbalance"]
    assert off["expert_tokens"] == off_rows
    for layer, row in enumerate(off_rows):
        assert sum(row) == TOP_K * tokens_run["off"], layer
        ratio, cv = spread(row)
        assert off["expert_max_mean"][layer] == pytest.approx(ratio, rel=1e-12)
        assert off["expert_cv"][layer] == pytest.approx(cv, rel=1e-12)
        assert off["expert_max_mean"][layer] < hot["expert_max_mean"][layer]
        # Rows per rank (the recorder's) against the contiguous split of the test's rows.
        assert off["rank_rows"][layer] == [sum(row[:experts // 2]), sum(row[experts // 2:])]
    assert off["expert_max_mean_avg"] < hot["expert_max_mean_avg"]
    # The recorder, another counting path, saw the same rows per phase.
    for phase in report["phases"]:
        assert phase["recorder"]["steps_dropped"] == 0
        assert phase["recorder"]["expert_tokens"] == phase["imbalance"]["expert_tokens"]
    # The daemon's own spreads over its last 4 steps (all in the skewed phase).
    assert after["window"]["expert_imbalance_ratio"] == hot["expert_max_mean"]
    assert after["window"]["rank_imbalance_ratio"] == hot["rank_max_mean"]

    # The HTML report: parses, four plots, self-contained, the JSON's numbers.
    page = Page()
    page.feed((tmp_path / "report.html").read_text())
    page.close()
    assert set(page.plots) == {"throughput", "itl_p99", "imbalance_time", "imbalance_layers"}
    external = [(t, a) for t, a in page.tags if "src" in a or "href" in a or t in ("link",
                                                                                  "script")]
    assert external == []
    assert sorted(page.points["throughput"]) == sorted(
        p["summary"]["output_tok_per_s"] for p in report["phases"])
    assert sorted(page.points["itl_p99"]) == sorted(
        1000 * p["summary"]["itl_s"]["p99"] for p in report["phases"])
    # --render makes the same page from the saved JSON.
    again = subprocess.run([sys.executable, str(LOADGEN), "--render", str(tmp_path / "report.json"),
                            "--html", str(tmp_path / "again.html")],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again.html").read_text() == (tmp_path / "report.html").read_text()


def test_sweep_mode_runs_skew_levels_by_concurrency(lab, tmp_path):
    # --no-recorder: rank rows are summed from the experts' ranks instead.
    out = run_loadgen(lab, tmp_path, workload(), "--skew-levels", "0", "1000",
                      "--skew-template", "hot:2:{level}", "--concurrency-levels", "1", "2",
                      "--no-recorder")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    phases = report["phases"]
    assert [(p["name"], p["skew"], p["concurrency"]) for p in phases] == [
        ("skew=0 c=1", "off", 1), ("skew=1000 c=1", HOT, 1),
        ("skew=0 c=2", "off", 2), ("skew=1000 c=2", HOT, 2)]
    # The base phase is the workload's first: 6 requests of 5 tokens.
    for p in phases:
        assert p["summary"]["requests_ok"] == 6
        assert p["summary"]["completion_tokens"] == 30
        decisive = p["skew"] == HOT
        im = p["imbalance"]
        assert (im["expert_max_mean_avg"] == 4.0) == decisive, p["name"]
        assert p["recorder"] is None and im["rank_rows_source"] == "expert_ranks"
        half = len(im["expert_tokens"][0]) // 2
        assert im["rank_rows"] == [[sum(e[:half]), sum(e[half:])] for e in im["expert_tokens"]]
        if decisive:
            assert im["rank_max_mean"] == [2.0] * len(im["rank_rows"])


def test_bad_workloads_and_profiles_are_clear_errors(lab, tmp_path):
    bad = workload()
    del bad["phases"][0]["requests"]
    out = run_loadgen(lab, tmp_path, bad)
    assert out.returncode == 2
    assert "phases[0]: give requests or duration_s" in out.stderr, out.stderr

    bad = workload()
    bad["phases"][1]["concurency"] = 2
    out = run_loadgen(lab, tmp_path, bad)
    assert out.returncode == 2 and "unknown field(s) ['concurency']" in out.stderr, out.stderr

    # A profile the daemon refuses: the requests fail with its 400 naming router_skew.
    bad = workload()
    bad["phases"] = [{**bad["phases"][0], "skew": "hot:x", "requests": 2}]
    out = run_loadgen(lab, tmp_path, bad)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "2 request(s) failed" in out.stderr and "HTTP 400" in out.stderr, out.stderr
    assert "router_skew" in out.stderr


def test_chat_phase_with_poisson_arrivals(lab, tmp_path):
    work = {"name": "e2e chat, open loop", "endpoint": "chat", "seed": 3,
            "prompt_sets": {"texts": {"prompts": ["Route this", "And this one too"]}},
            "phases": [{"name": "poisson", "rate": 20, "requests": 5, "output_len": 3,
                        "skew": [{"profile": HOT, "weight": 1}, {"profile": "off", "weight": 1}]}]}
    out = run_loadgen(lab, tmp_path, work)
    assert out.returncode == 0, out.stdout + out.stderr
    phase = json.loads((tmp_path / "report.json").read_text())["phases"][0]
    recs = phase["requests"]
    assert phase["summary"]["requests_ok"] == 5 and phase["summary"]["completion_tokens"] == 15
    assert all(r["completion_tokens"] == 3 and r["ttft_s"] is not None for r in recs)
    assert {r["skew"] for r in recs} == {HOT, "off"}  # seed 3 draws both
    # Latencies per profile of the mix: each over its own requests' raw timings.
    by_skew = phase["summary"]["by_skew"]
    assert set(by_skew) == {HOT, "off"}
    for skew, d in by_skew.items():
        mine = [r for r in recs if r["skew"] == skew]
        assert d["requests_ok"] == len(mine) and d["completion_tokens"] == 3 * len(mine)
        itl = [g for r in mine for g in r["itl_s"]]
        assert d["itl_s"]["n"] == len(itl)
        if itl:
            assert d["itl_s"]["p50"] == pytest.approx(q(itl, 50), rel=1e-12)
        assert d["ttft_s"]["p90"] == pytest.approx(q([r["ttft_s"] for r in mine], 90), rel=1e-12)
    # Open loop: Poisson arrival times, increasing from 0, and no request sent before its own.
    arrivals = [r["scheduled_s"] for r in recs]
    assert arrivals[0] == 0 and all(a < b for a, b in zip(arrivals, arrivals[1:]))
    assert all(r["start_s"] >= phase["start_s"] + r["scheduled_s"] for r in recs)


def test_latencies_only_against_a_server_without_the_lab(tmp_path):
    """Another OpenAI-compatible server (here a stub streaming max_tokens one-word chunks, 404
    elsewhere): the run succeeds with the counts and no imbalance."""
    import http.server
    import threading

    class Stub(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/v1/models":
                body = json.dumps({"data": [{"id": "stub"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404)

        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            n = req["max_tokens"]
            for i in range(n):
                chunk = {"choices": [{"index": 0, "text": f" w{i}",
                                      "finish_reason": "length" if i == n - 1 else None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            usage = {"choices": [], "usage": {"prompt_tokens": len(req["prompt"]),
                                              "completion_tokens": n}}
            self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        class Url:
            base_url = f"http://127.0.0.1:{server.server_address[1]}"

        out = run_loadgen(Url, tmp_path, workload())
    finally:
        server.shutdown()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no /v1/lab/stats" in out.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["target"]["lab"] is False and report["timeline"] == []
    for phase, (name, _, requests, _, max_tokens) in zip(report["phases"], PHASES):
        assert phase["imbalance"] is None
        assert phase["summary"]["completion_tokens"] == requests * max_tokens
        assert all(r["chunks"] == max_tokens for r in phase["requests"])
        assert phase["summary"]["itl_s"]["n"] == requests * (max_tokens - 1)
    page = Page()
    page.feed((tmp_path / "report.html").read_text())
    assert {"throughput", "itl_p99"} <= set(page.plots)
