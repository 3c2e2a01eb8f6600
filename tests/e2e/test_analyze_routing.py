"""`moeserve analyze-routing` (the Mixtral paper's routing analysis) on the embedded model.

Oracles: every statistic is recomputed here in Python from the per-token traces the command
writes with --json (shares of routed rows per expert and layer; consecutive tokens keeping the
first expert or sharing one of their top-k; the random baselines by counting subsets); the
traces are the ones the daemon returns for the same prompts (return_routing); the SVG is parsed
as XML and refers to nothing outside itself."""

import json
import math
import subprocess
import xml.etree.ElementTree as ET

from conftest import MODEL_NAME, moeserve_bin, post

CODE = ["def add(a, b):\n", "for i in range(10): print(i)", "int main() { return 0; }"]
PROSE = ["The cat sat on the mat.", "Mixture of experts models route each token.",
         "It was the best of times, it was the worst of times."]


def run_analysis(tmp_path):
    files = {}
    for name, lines in (("code", CODE), ("prose", PROSE)):
        path = tmp_path / f"{name}.txt"
        # blank lines are skipped; a prompt is one line
        path.write_text("\n".join(line.replace("\n", " ") for line in lines) + "\n\n")
        files[name] = path
    out_json, out_svg = tmp_path / "routing.json", tmp_path / "routing.svg"
    proc = subprocess.run(
        [moeserve_bin(), "analyze-routing", "--threads", "2",
         "--prompts", f"code={files['code']}", "--prompts", f"prose={files['prose']}",
         "--json", str(out_json), "--plot", str(out_svg)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(out_json.read_text()), out_svg.read_text()


def test_statistics_are_recomputed_from_the_traces(tmp_path):
    table, doc, svg = run_analysis(tmp_path)
    L, E, k = doc["num_layers"], doc["num_experts"], doc["top_k"]
    assert doc["paper_layers"] == sorted({0, (L - 1) // 2, L - 1})
    assert math.isclose(doc["random_first"], 1 / E)
    assert math.isclose(doc["random_top_k"], 1 - math.comb(E - k, k) / math.comb(E, k))
    assert [s["name"] for s in doc["sets"]] == ["code", "prose"]
    for s in doc["sets"]:
        traces = s["traces"]
        assert s["num_prompts"] == len(traces) == 3
        rows = [[0] * E for _ in range(L)]
        first = [0] * L
        shared = [0] * L
        pairs = 0
        for t in traces:
            ex = t["experts"]
            assert len(ex) == len(t["token_ids"]) and t["token_ids"][0] == 1  # BOS first
            pairs += len(ex) - 1
            for p, per_layer in enumerate(ex):
                for l, chosen in enumerate(per_layer):
                    assert len(chosen) == k
                    for e in chosen:
                        rows[l][e] += 1
                    if p:
                        prev = ex[p - 1][l]
                        first[l] += prev[0] == chosen[0]
                        shared[l] += bool(set(prev) & set(chosen))
        tokens = sum(len(t["experts"]) for t in traces)
        assert s["num_tokens"] == tokens and s["num_pairs"] == pairs
        for l in range(L):
            for e in range(E):
                assert math.isclose(s["expert_share"][l][e], rows[l][e] / (tokens * k))
            assert math.isclose(s["repeat_first"][l], first[l] / pairs)
            assert math.isclose(s["repeat_top_k"][l], shared[l] / pairs)
        for l in doc["paper_layers"]:  # the table shows the paper layers of every set
            want = f"{100 * s['repeat_first'][l]:9.1f} {100 * s['repeat_top_k'][l]:9.1f}"
            assert f"{s['name']:<16} {l:5d} {want}" in table
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert svg.count("http") == 1 and "<script" not in svg and "href" not in svg
    texts = "".join(root.itertext())
    assert "code (3 prompts" in texts and "prose (3 prompts" in texts


def test_traces_are_the_daemons(tmp_path, daemon):
    _, doc, _ = run_analysis(tmp_path)
    for s, prompts in zip(doc["sets"], (CODE, PROSE)):
        for t, prompt in zip(s["traces"], prompts):
            r = post(daemon, "/v1/completions", {
                "model": MODEL_NAME, "prompt": prompt.replace("\n", " "), "max_tokens": 1,
                "temperature": 0, "return_routing": True})
            assert r.status_code == 200, r.text
            got = r.json()["routing"]["choices"][0]
            assert got["token_ids"] == t["token_ids"]
            assert got["experts"] == t["experts"]


def test_bad_prompt_spec_is_a_clear_error(tmp_path):
    proc = subprocess.run([moeserve_bin(), "analyze-routing", "--prompts", "nofile"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "NAME=FILE" in proc.stderr
    proc = subprocess.run([moeserve_bin(), "analyze-routing", "--prompts",
                           f"x={tmp_path / 'missing.txt'}"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and "missing.txt" in proc.stderr


def test_router_skew_shows_in_the_analysis(tmp_path):
    """hot:2:1000 forces every token onto experts 0 and 1: by definition each gets half the rows
    of every layer, and consecutive tokens always share an expert."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROSE) + "\n")
    out = tmp_path / "skewed.json"
    proc = subprocess.run([moeserve_bin(), "analyze-routing", "--threads", "2", "--router-skew",
                           "hot:2:1000", "--prompts", f"prose={prompts}", "--json", str(out),
                           "--no-traces"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (s,) = json.loads(out.read_text())["sets"]
    assert "traces" not in s
    for share, top_k in zip(s["expert_share"], s["repeat_top_k"]):
        assert share == [0.5, 0.5] + [0.0] * (len(share) - 2)
        assert top_k == 1.0
    proc = subprocess.run([moeserve_bin(), "analyze-routing", "--router-skew", "hot:99",
                           "--prompts", f"prose={prompts}"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and "--router-skew" in proc.stderr
