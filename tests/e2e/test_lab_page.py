"""The live imbalance view (issue 12): GET /v1/lab/stats against /metrics for the same state, and
the page GET /lab opened in a real headless Chromium that must show skew the test injects.

Oracle: the explicit profile "5:1000" (+1000 on expert 5's router logit in every layer) makes
expert 5 one of the two choices of every token of the request, so in every layer its count is
the number of tokens run through the model (prompt + completion - 1), and no other expert can
exceed that. With --ep-size 2 expert 5 lives on rank 1 (experts 4..7), so rank 1 computes the
most expert rows. The window is made longer than the whole test (--stats-window-steps) so that
window counts are whole-run sums.

Chromium: Debian's `chromium` package (tools/setup.sh installs it). The test is skipped, saying
so, only when no chromium binary is found, and fails instead when MOESERVE_REQUIRE_CHROMIUM=1
(.ci/run sets it). MOESERVE_LAB_SCREENSHOT=path keeps the screenshot."""

import html.parser
import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import httpx
import pytest

from conftest import MODEL_NAME, Daemon, post

HOT = 5
PROMPTS = ["The hot expert takes every token", "Skew shows on the live page",
           "Expert five is busy"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    message = ("no chromium binary on PATH (Debian: apt-get install chromium; tools/setup.sh "
               "installs it)")
    if os.environ.get("MOESERVE_REQUIRE_CHROMIUM") == "1":  # CI (.ci/run): a skip would hide it
        pytest.fail(message + "; MOESERVE_REQUIRE_CHROMIUM=1 asks for it")
    pytest.skip(message)


def run_chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="moeserve-chromium-")
    try:
        # --no-sandbox: CI runs as root, where Chromium refuses its sandbox. The other flags keep
        # it from reaching for the network or a GPU, neither of which the test has.
        return subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--disable-extensions", "--disable-background-networking",
             "--disable-component-update", "--force-color-profile=srgb",
             "--hide-scrollbars", f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=timeout, check=True)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def lab():
    d = Daemon("--max-model-len", "512", "--ep-size", "2", "--stats-window-steps", "100000")
    yield d
    assert d.terminate() == 0, d.log()


@pytest.fixture(scope="module")
def skewed_tokens(lab):
    """Runs the skewed requests; returns the tokens they put through the model."""
    n = 0
    for prompt in PROMPTS:
        r = post(lab, "/v1/completions", {"model": MODEL_NAME, "prompt": prompt, "max_tokens": 8,
                                          "temperature": 0, "ignore_eos": True,
                                          "router_skew": f"{HOT}:1000"})
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        n += usage["prompt_tokens"] + usage["completion_tokens"] - 1
    return n


def lab_stats(daemon: Daemon) -> dict:
    r = httpx.get(daemon.base_url + "/v1/lab/stats", timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def metrics(daemon: Daemon) -> dict[str, float]:
    text = httpx.get(daemon.base_url + "/metrics", timeout=30).text
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(moeserve_\w+(?:\{[^}]*\})?) (\S+)$", text, re.M)}


def test_lab_stats_shape_and_counts_match_metrics(lab, skewed_tokens):
    s = lab_stats(lab)
    m = metrics(lab)  # the engine is idle: the same state
    L, E, R = s["num_layers"], s["num_experts"], s["world_size"]
    assert (s["object"], L, E, R, s["window_steps"]) == ("moeserve.lab.stats", 4, 8, 2, 100000)
    assert s["engine_steps"] == m["moeserve_engine_steps_total"] > 0
    assert s["expert_ranks"] == [[[0]] * 4 + [[1]] * 4] * L
    for span in ("last_step", "window"):
        for layer in range(L):
            for e in range(E):
                key = f'moeserve_layer_expert_tokens{{layer="{layer}",expert="{e}",span="{span}"}}'
                assert s[span]["expert_tokens"][layer][e] == m[key], key
            for r in range(R):
                key = f'moeserve_layer_rank_rows{{layer="{layer}",rank="{r}",span="{span}"}}'
                assert s[span]["rank_rows"][layer][r] == m[key], key
            for field, family in (("expert_imbalance_ratio", "layer_expert_imbalance_ratio"),
                                  ("expert_cv", "layer_expert_cv"),
                                  ("rank_imbalance_ratio", "layer_rank_imbalance_ratio"),
                                  ("rank_cv", "layer_rank_cv")):
                key = f'moeserve_{family}{{layer="{layer}",span="{span}"}}'
                assert s[span][field][layer] == pytest.approx(m[key], rel=1e-5), key
    for src in range(R):
        for dst in range(R):
            for field in ("rows", "bytes"):
                key = f'moeserve_ep_link_{field}_total{{src="{src}",dst="{dst}"}}'
                assert s["total"][f"link_{field}"][src][dst] == m[key], key
    for layer in range(L):
        for e in range(E):
            key = f'moeserve_expert_tokens_total{{layer="{layer}",expert="{e}"}}'
            assert s["total"]["expert_tokens"][layer][e] == m[key], key
    # The oracle: the hot expert took every skewed token in every layer, which is all the load.
    for layer in range(L):
        window = s["window"]["expert_tokens"][layer]
        assert window[HOT] == skewed_tokens, (layer, window)
        assert sum(window) == 2 * skewed_tokens, (layer, window)


def test_lab_stats_takes_only_get(lab):
    r = httpx.post(lab.base_url + "/v1/lab/stats", json={}, timeout=30)
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == "GET"
    assert "GET" in r.json()["error"]["message"]


class LabDom(html.parser.HTMLParser):
    """The data-* attributes of the page's heatmap cells, rank bars and link entries."""

    def __init__(self):
        super().__init__()
        self.cells, self.bars, self.links, self.status = [], [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "data-span" in a:
            self.cells.append((a["data-span"], int(a["data-layer"]), int(a["data-expert"]),
                               int(a["data-tokens"])))
        elif "data-rank" in a:
            self.bars.append((int(a["data-rank"]), int(a["data-rows"])))
        elif "data-src" in a:
            self.links.append((int(a["data-src"]), int(a["data-dst"]), int(a["data-rows"])))
        elif a.get("id") == "status":
            self.status = a


def png_pixels(path: Path):
    """(width, height, rows of RGB tuples) of an 8-bit RGB/RGBA PNG, decoded with zlib only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    bpp = 3 if color == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, corner = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 255
        rows.append([tuple(line[x * bpp:x * bpp + 3]) for x in range(width)])
        prev = line
    return width, height, rows


def test_live_page_in_headless_chromium_shows_the_hot_expert(lab, skewed_tokens):
    page = httpx.get(lab.base_url + "/lab", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # No CDN, no external fetch: the only URL the page's script reads is our own endpoint.
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", page.text)
    assert "/v1/lab/stats" in page.text

    url = lab.base_url + "/lab?interval=200"
    # --virtual-time-budget lets the page's timers run (several polls) before the DOM is dumped.
    dom = run_chromium("--virtual-time-budget=3000", "--dump-dom", url).stdout
    parsed = LabDom()
    parsed.feed(dom)
    stats = lab_stats(lab)
    assert parsed.status is not None and int(parsed.status["data-steps"]) == stats["engine_steps"]
    window = [c for c in parsed.cells if c[0] == "window"]
    assert len(window) == 4 * 8, dom[:2000]
    for layer in range(4):
        row = {e: tokens for span, l, e, tokens in window if l == layer}
        assert row[HOT] == skewed_tokens, (layer, row)
        assert all(row[HOT] > v for e, v in row.items() if e != HOT), (layer, row)
    # Expert 5 is on rank 1: rank 1 computed the most rows; the bars show the window's counts.
    bars = dict(parsed.bars)
    assert bars == {r: sum(layer[r] for layer in stats["window"]["rank_rows"]) for r in range(2)}
    assert bars[1] > bars[0], bars
    assert {(s, d): v for s, d, v in parsed.links} == {
        (s, d): stats["total"]["link_rows"][s][d] for s in range(2) for d in range(2)}

    shot = Path(tempfile.mkdtemp(prefix="moeserve-lab-")) / "lab.png"
    run_chromium("--virtual-time-budget=3000", "--window-size=1100,760", f"--screenshot={shot}",
                 url)
    width, height, rows = png_pixels(shot)
    assert (width, height) == (1100, 760)
    colors = {px for row in rows[::4] for px in row[::4]}
    assert len(colors) > 20, f"screenshot looks blank: {len(colors)} colours"
    # The hottest heatmap cell is painted with the ramp's end colour, rgb(128, 0, 38).
    hot = sum(1 for row in rows for px in row
              if abs(px[0] - 128) <= 6 and px[1] <= 6 and abs(px[2] - 38) <= 6)
    assert hot > 500, f"{hot} pixels of the hottest heatmap colour"
    if os.environ.get("MOESERVE_LAB_SCREENSHOT"):
        shutil.copy(shot, os.environ["MOESERVE_LAB_SCREENSHOT"])
