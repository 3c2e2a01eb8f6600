"""The HTML report of bench/loadgen.py: one self-contained page (inline CSS and SVG, no script,
no external resource), so it opens from a file, a CI artifact or an air-gapped host.

Plots: output throughput and p99 ITL against skew level (one line per load: concurrency or
rate), imbalance over time (expert and rank max/mean of the rows routed between two polls of
/v1/lab/stats, phases shaded), and each phase's expert max/mean per layer. Each <svg> carries
data-plot="NAME"; points carry their numbers as data-x / data-y. Plots are styled by attributes,
not CSS, so that each also stands alone as an .svg file (--plots-dir).
"""

from __future__ import annotations

import html
import json
import math

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#7f7f7f", "#bcbd22")
W, H = 680, 300
ML, MR, MT, MB = 64, 180, 30, 44  # margins: left axis labels, right legend, title, x axis


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list:
    if hi <= lo:
        hi = lo + (abs(lo) if lo else 1.0)
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def fmt(v: float) -> str:
    if v == 0:
        return "0"
    if float(v).is_integer() and abs(v) < 1e9:
        return str(int(v))
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.3g}"
    return f"{v:.4g}"


def line_chart(name: str, title: str, x_label: str, y_label: str, series: list,
               bands=(), y_zero: bool = True) -> str:
    """series: [{"name", "points": [(x, y), ...]}]; bands: [(x0, x1, label)] shaded behind."""
    pts = [p for s in series for p in s["points"] if p[0] is not None and p[1] is not None]
    xs = [p[0] for p in pts] + [b[0] for b in bands] + [b[1] for b in bands]
    ys = [p[1] for p in pts]
    out = [f'<svg class="plot" data-plot="{esc(name)}" '
           f'width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" font-size="11" '
           'font-family="sans-serif">',
           f'<title>{esc(title)}</title>', f'<rect width="{W}" height="{H}" fill="#fff"/>',
           f'<text x="{ML}" y="18" font-size="13" font-weight="600">{esc(title)}</text>']
    if not pts:
        out.append(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no data</text></svg>')
        return "\n".join(out)
    xt = nice_ticks(min(xs), max(xs))
    yt = nice_ticks(0.0 if y_zero else min(ys), max(ys))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    pw, ph = W - ML - MR, H - MT - MB

    def px(x):
        return ML + (x - x0) / (x1 - x0) * pw

    def py(y):
        return MT + ph - (y - y0) / (y1 - y0) * ph

    for i, (a, b, label) in enumerate(bands):
        fill = "#f2f2f2" if i % 2 == 0 else "#e4e9f2"
        out.append(f'<rect x="{px(a):.1f}" y="{MT}" width="{max(px(b) - px(a), 0.5):.1f}" '
                   f'height="{ph}" fill="{fill}"><title>{esc(label)}</title></rect>')
        # Staggered so that the labels of short neighbouring phases do not overlap.
        out.append(f'<text x="{px(a) + 2:.1f}" y="{MT + 10 + 11 * (i % 3)}" fill="#666" '
                   f'font-size="10">{esc(label)}</text>')
    for t in yt:
        out.append(f'<line x1="{ML}" x2="{ML + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" '
                   'stroke="#e5e5e5"/>')
        out.append(f'<text x="{ML - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{fmt(t)}</text>')
    for t in xt:
        out.append(f'<text x="{px(t):.1f}" y="{MT + ph + 16}" text-anchor="middle">{fmt(t)}'
                   '</text>')
    out.append(f'<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    out.append(f'<text x="{ML + pw / 2}" y="{H - 8}" text-anchor="middle">{esc(x_label)}</text>')
    out.append(f'<text transform="translate(14 {MT + ph / 2}) rotate(-90)" '
               f'text-anchor="middle">{esc(y_label)}</text>')
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        sp = sorted((x, y) for x, y in s["points"] if x is not None and y is not None)
        if len(sp) > 1:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sp)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" '
                       'stroke-width="1.8"/>')
        if len(sp) <= 60:
            for x, y in sp:
                out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}" '
                           f'data-series="{esc(s["name"])}" data-x="{x}" data-y="{y}">'
                           f'<title>{esc(s["name"])}: {fmt(x)}, {fmt(y)}</title></circle>')
        ly = MT + 14 + 16 * i
        out.append(f'<rect x="{ML + pw + 12}" y="{ly - 8}" width="10" height="10" '
                   f'fill="{color}"/><text x="{ML + pw + 26}" y="{ly + 1}">'
                   f'{esc(s["name"])}</text>')
    out.append("</svg>")
    return "\n".join(out)


def skew_axis(phases: list) -> tuple:
    """(label, x of each phase): the workload's skew_level when every phase gives one, else the
    phase's measured expert max/mean (mean over layers)."""
    if phases and all(p["skew_level"] is not None for p in phases):
        return "skew level (workload)", [p["skew_level"] for p in phases]
    if not all(p["imbalance"] for p in phases):  # no /v1/lab/stats: the phases in order
        return "phase", list(range(len(phases)))
    return ("measured expert max/mean (mean over layers)",
            [p["imbalance"]["expert_max_mean_avg"] for p in phases])


def by_load(phases: list, xs: list, value) -> list:
    groups = {}
    for p, x in zip(phases, xs):
        groups.setdefault(p["load"], []).append((x, value(p)))
    return [{"name": k, "points": v} for k, v in groups.items()]


def table(head, rows) -> str:
    h = "".join(f"<th>{esc(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def ms(d: dict, q: str) -> str:
    return "-" if d[q] is None else f"{1000 * d[q]:.1f}"


def num(x, f="{:.2f}") -> str:
    return "-" if x is None else f.format(x)


def plots(report: dict) -> dict:
    """{name: <svg> text} of the report's four plots."""
    phases = report["phases"]
    x_label, xs = skew_axis(phases)

    def itl99(p):
        v = p["summary"]["itl_s"]["p99"]
        return None if v is None else 1000 * v

    tl = report["timeline"]
    time_series = [{"name": "experts (layer mean)",
                    "points": [(e["t_s"], e["expert_max_mean"]) for e in tl]}]
    if report["target"].get("world_size", 1) > 1:
        time_series.append({"name": "ranks (all layers)",
                            "points": [(e["t_s"], e["rank_max_mean"]) for e in tl]})
    bands = [(p["start_s"], p["end_s"], p["name"]) for p in phases]
    layers = [{"name": p["name"], "points": list(enumerate(p["imbalance"]["expert_max_mean"]))}
              for p in phases if p["imbalance"]]
    return {
        "throughput": line_chart(
            "throughput", "Output throughput against skew", x_label, "output tokens/s",
            by_load(phases, xs, lambda p: p["summary"]["output_tok_per_s"])),
        "itl_p99": line_chart("itl_p99", "p99 inter-token latency against skew", x_label,
                              "ITL p99 (ms)", by_load(phases, xs, itl99)),
        "imbalance_time": line_chart(
            "imbalance_time", "Imbalance over time (rows between polls)", "seconds since start",
            "max/mean", time_series, bands=bands, y_zero=False),
        "imbalance_layers": line_chart("imbalance_layers", "Expert max/mean per layer, per phase",
                                       "layer", "expert max/mean", layers, y_zero=False),
    }


def standalone_svg(svg: str) -> str:
    """An inline <svg> as a file of its own (which needs the namespace)."""
    return svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1) + "\n"


def render(report: dict) -> str:
    phases = report["phases"]
    charts = list(plots(report).values())
    rows = []
    for p in phases:
        s, im = p["summary"], p["imbalance"] or {}
        rows.append((p["name"], p["skew"], p["load"], s["requests_ok"], s["errors"],
                     s["completion_tokens"], num(s["wall_s"]), num(s["req_per_s"]),
                     num(s["output_tok_per_s"], "{:.1f}"), ms(s["ttft_s"], "p50"),
                     ms(s["ttft_s"], "p90"), ms(s["ttft_s"], "p99"), ms(s["itl_s"], "p50"),
                     ms(s["itl_s"], "p90"), ms(s["itl_s"], "p99"), ms(s["tpot_s"], "p50"),
                     num(im.get("expert_max_mean_avg")), num(im.get("expert_max_mean_max")),
                     num(im.get("expert_cv_avg")), num(im.get("rank_max_mean_avg"))))
    head = ("phase", "skew", "load", "ok", "err", "out tokens", "wall s", "req/s", "out tok/s",
            "TTFT p50 ms", "p90", "p99", "ITL p50 ms", "p90", "p99", "TPOT p50 ms",
            "expert max/mean avg", "max", "expert CV avg", "rank max/mean avg")
    t, m = report["target"], report["machine"]
    per_layer = []
    for p in phases:
        im = p["imbalance"] or {"expert_tokens": []}
        for li, tokens in enumerate(im["expert_tokens"]):
            per_layer.append((p["name"], li, " ".join(map(str, tokens)),
                              num(im["expert_max_mean"][li]), num(im["expert_cv"][li]),
                              " ".join(map(str, im["rank_rows"][li])) if "rank_rows" in im
                              else "-",
                              num(im["rank_max_mean"][li]) if "rank_max_mean" in im else "-"))
    by_skew = [(p["name"], skew, d["requests_ok"], d["completion_tokens"], ms(d["ttft_s"], "p50"),
                ms(d["ttft_s"], "p99"), ms(d["itl_s"], "p50"), ms(d["itl_s"], "p99"),
                ms(d["tpot_s"], "p50"))
               for p in phases for skew, d in p["summary"].get("by_skew", {}).items()]
    by_skew_html = "" if not by_skew else (
        "<h2>Mixed phases, per skew profile</h2>\n" +
        table(("phase", "skew", "ok", "out tokens", "TTFT p50 ms", "p99", "ITL p50 ms", "p99",
               "TPOT p50 ms"), by_skew))
    workload_json = json.dumps(report["workload"]["source"], indent=1)
    shape = (f'{t["num_layers"]} layers, {t["num_experts"]} experts, world size {t["world_size"]}'
             if t.get("lab", True) else "no /v1/lab/stats: latencies only")
    source = next((p["imbalance"]["rank_rows_source"] for p in phases if p["imbalance"]), None)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>moeserve loadgen: {esc(report["workload"]["name"])}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 0 20px; font-size: 12px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 6px; text-align: right; }}
th {{ background: #f4f4f4; }} td:first-child, th:first-child {{ text-align: left; }}
svg.plot {{ margin: 6px 12px 12px 0; }}
pre {{ background: #f7f7f7; padding: 8px; font-size: 12px; overflow: auto; }}
</style></head><body>
<h1>moeserve loadgen: {esc(report["workload"]["name"])}</h1>
<p>{esc(report["started_at"])} &middot; {esc(t["url"])} &middot; model {esc(t["model"])} &middot;
{esc(shape)} &middot;
client machine: {esc(m["processor"])} ({m["cpu_count"]} CPUs)</p>
<h2>Phases</h2>
{table(head, rows)}
{by_skew_html}
<h2>Plots</h2>
<div>{"".join(charts)}</div>
<h2>Imbalance per layer</h2>
<p>Rows (token, expert choice) routed during each phase, from /v1/lab/stats before and after it;
rank rows from the {esc(source or "-")}.</p>
{table(("phase", "layer", "rows per expert", "max/mean", "CV", "rows per rank", "rank max/mean"),
       per_layer)}
<h2>Definitions</h2>
<pre>{esc(report["definitions"])}</pre>
<h2>Workload</h2>
<pre>{esc(workload_json)}</pre>
</body></html>
"""
