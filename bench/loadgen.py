#!/usr/bin/env python3
"""Load generator of the expert-imbalance lab (issue 12): drives a running moeserve daemon with the
phases of a workload file and reports, per phase, throughput, TTFT / ITL / TPOT percentiles and
expert and rank imbalance, as JSON and as one self-contained HTML page (inline SVG, nothing
fetched). Against another OpenAI-compatible server (no /v1/lab/stats) it measures latencies only.

  bench/loadgen.py --url http://127.0.0.1:8000 --workload bench/workloads/skew-steps.json \\
      --json /tmp/loadgen.json --html /tmp/loadgen.html
  # sweep: skew levels x concurrency, from the workload's first phase
  bench/loadgen.py --url ... --workload W.json --skew-levels 0 1 2 4 \\
      --skew-template hot:2:{level} --concurrency-levels 1 4 --html sweep.html

Streams every request (stream=true, stream_options.include_usage) from its own thread with
http.client (standard library only). Workload syntax: bench/loadgen_workload.py. Definitions of
the numbers: bench/loadgen_stats.py. docs/imbalance-lab.md, "Load generator", walks through a run.

Imbalance per phase: /v1/lab/stats `total.expert_tokens` read when the daemon is idle before and
after the phase; the difference is the phase's rows per expert and layer (other clients of the
same daemon would add theirs). Rows per rank and layer come from the load recorder
(/v1/lab/recorder/*, restarted for each phase; --no-recorder leaves it alone), or else from the
experts' ranks. Over time: /v1/lab/stats polled every --poll-interval seconds.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import sys
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen_html  # noqa: E402
import loadgen_stats as st  # noqa: E402
import loadgen_workload as wl  # noqa: E402


class HttpStatusError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Target:
    """The daemon's HTTP address; one connection per call (streams are long, setup is tiny)."""

    def __init__(self, url: str, timeout: float):
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise SystemExit(f"--url: expected http://HOST:PORT, got {url!r}")
        self.url = url.rstrip("/")
        self.https = u.scheme == "https"
        self.host, self.port = u.hostname, u.port or (443 if self.https else 80)
        self.prefix = u.path.rstrip("/")
        self.timeout = timeout

    def connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=self.timeout)

    def call(self, method: str, path: str, body=None):
        conn = self.connection()
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, self.prefix + path, body=data,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            payload = resp.read()
            if resp.status != 200:
                raise HttpStatusError(resp.status,
                                      f"{method} {path}: HTTP {resp.status}: {payload[:300]!r}")
            return json.loads(payload)
        finally:
            conn.close()


def stream_request(target: Target, path: str, body: dict, t0: float) -> dict:
    """One streamed request -> its raw timings. Times are seconds from t0 (time.perf_counter)."""
    rec = {"start_s": None, "ttft_s": None, "itl_s": [], "tpot_s": None, "latency_s": None,
           "chunks": 0, "prompt_tokens": 0, "completion_tokens": 0, "finish_reason": None,
           "error": None}
    conn = target.connection()
    sent = time.perf_counter()
    rec["start_s"] = sent - t0
    first = last = None
    usage = None
    try:
        conn.request("POST", target.prefix + path, body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
        resp = conn.getresponse()
        if resp.status != 200:
            rec["error"] = f"HTTP {resp.status}: {resp.read()[:300].decode(errors='replace')}"
            return rec
        while True:
            line = resp.readline()
            if not line:
                break
            if not line.startswith(b"data:"):  # SSE: "data:" and an optional space
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            now = time.perf_counter()
            chunk = json.loads(data)
            if chunk.get("error"):
                rec["error"] = f"stream error: {chunk['error']}"
                break
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                text = choice.get("text")
                if text is None:
                    text = (choice.get("delta") or {}).get("content")
                if choice.get("finish_reason"):
                    rec["finish_reason"] = choice["finish_reason"]
                if not text:
                    continue
                if first is None:
                    first = now
                else:
                    rec["itl_s"].append(now - last)
                last = now
                rec["chunks"] += 1
    except Exception as e:  # noqa: BLE001  one request's failure, whatever it is, is its record
        rec["error"] = f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    end = time.perf_counter()
    rec["latency_s"] = end - sent
    if first is not None:
        rec["ttft_s"] = first - sent
    if usage is not None:
        rec["prompt_tokens"] = usage.get("prompt_tokens", 0)
        rec["completion_tokens"] = usage.get("completion_tokens", 0)
    else:  # a server without include_usage: chunks are the best count there is
        rec["completion_tokens"] = rec["chunks"]
    if first is not None and rec["completion_tokens"] > 1:
        rec["tpot_s"] = (last - first) / (rec["completion_tokens"] - 1)
    if rec["error"] is None and first is None:
        rec["error"] = "the stream carried no text"
    return rec


def request_body(workload: wl.Workload, model: str, req: wl.PlannedRequest) -> tuple:
    body = {"model": model, "max_tokens": req.max_tokens, "stream": True,
            "stream_options": {"include_usage": True}, "temperature": workload.temperature,
            "ignore_eos": workload.ignore_eos}
    if req.skew is not None:
        body["router_skew"] = req.skew
    if workload.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": req.prompt}]
        return "/v1/chat/completions", body
    body["prompt"] = req.prompt
    return "/v1/completions", body


class Progress:
    """One status line on stderr, rewritten in place on a terminal; on anything else, one line
    per finished phase (logs stay short)."""

    def __init__(self, mode: str, phases: int):
        self.live = mode == "always" or (mode == "auto" and sys.stderr.isatty())
        self.quiet = mode == "never"
        self.phases = phases
        self.lock = threading.Lock()
        self.last_tick = 0.0
        self.reset(0, "")

    def reset(self, index: int, name: str, planned=None):
        with self.lock:
            self.index, self.name, self.planned = index, name, planned
            self.done = self.errors = self.inflight = self.tokens = 0
            self.start = time.perf_counter()

    def started(self):
        with self.lock:
            self.inflight += 1

    def finished(self, rec: dict):
        with self.lock:
            self.inflight -= 1
            self.done += 1
            self.errors += rec["error"] is not None
            self.tokens += rec["completion_tokens"]

    def line(self) -> str:
        with self.lock:
            el = time.perf_counter() - self.start
            of = f"/{self.planned}" if self.planned else ""
            rate = self.tokens / el if el > 0 else 0.0
            return (f"loadgen [{self.index + 1}/{self.phases} {self.name}] {self.done}{of} done, "
                    f"{self.inflight} in flight, {self.errors} errors, {rate:.1f} tok/s, "
                    f"{el:.1f} s")

    def tick(self):
        now = time.perf_counter()
        if self.live and now - self.last_tick >= 0.2:
            self.last_tick = now
            sys.stderr.write("\r\x1b[2K" + self.line())
            sys.stderr.flush()

    def phase_done(self):
        if self.quiet:
            return
        sys.stderr.write(("\r\x1b[2K" if self.live else "") + self.line() + "\n")
        sys.stderr.flush()


class StatsPoller(threading.Thread):
    """Polls /v1/lab/stats every `interval` s for the imbalance-over-time plot."""

    def __init__(self, target: Target, interval: float, t0: float):
        super().__init__(daemon=True)
        self.target, self.interval, self.t0 = target, interval, t0
        self.polls, self.phase = [], None
        self.stop_event = threading.Event()

    def poll_once(self):
        s = self.target.call("GET", "/v1/lab/stats")
        self.polls.append({"t_s": time.perf_counter() - self.t0, "phase": self.phase,
                           "engine_steps": s["engine_steps"],
                           "expert_tokens": s["total"]["expert_tokens"],
                           "rank_rows": s["total"]["rank_rows"]})

    def run(self):
        while not self.stop_event.wait(self.interval):
            try:
                self.poll_once()
            except (OSError, RuntimeError, http.client.HTTPException):
                pass  # a missed poll only thins the plot


def idle_stats(target: Target, settle_s: float = 0.05, limit_s: float = 5.0) -> dict:
    """/v1/lab/stats once the engine stopped stepping (two reads settle_s apart agree)."""
    prev = target.call("GET", "/v1/lab/stats")
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(settle_s)
        cur = target.call("GET", "/v1/lab/stats")
        if cur["engine_steps"] == prev["engine_steps"]:
            return cur
        prev = cur
    return prev


def run_phase(target: Target, workload: wl.Workload, model: str, index: int, t0: float,
              progress: Progress) -> tuple:
    """Sends a phase's requests and returns (records, wall seconds)."""
    phase = workload.phases[index]
    records, lock = [], threading.Lock()
    start = time.perf_counter()
    deadline = None if phase.duration_s is None else start + phase.duration_s

    def send(req: wl.PlannedRequest):
        path, body = request_body(workload, model, req)
        progress.started()
        rec = stream_request(target, path, body, t0)
        rec.update({"index": req.index, "skew": req.skew, "max_tokens": req.max_tokens,
                    "prompt_len": req.prompt_len, "scheduled_s": req.arrival_s})
        progress.finished(rec)
        with lock:
            records.append(rec)

    threads = []
    if phase.rate is None:  # closed loop: `concurrency` clients, back to back
        counter = iter(range(1 << 62))

        def client():
            while True:
                with lock:
                    i = next(counter)
                if phase.requests is not None and i >= phase.requests:
                    return
                if deadline is not None and time.perf_counter() >= deadline:
                    return
                send(wl.plan_request(workload, index, i))

        threads = [threading.Thread(target=client, daemon=True) for _ in range(phase.concurrency)]
        for t in threads:
            t.start()
    else:  # open loop: Poisson arrivals, at most max_concurrency in flight
        slots = threading.BoundedSemaphore(phase.max_concurrency)
        offsets = wl.arrival_offsets(workload, index, phase.duration_s, phase.requests)

        def arrive(req):
            try:
                send(req)
            finally:
                slots.release()

        for i, offset in enumerate(offsets):
            wait = start + offset - time.perf_counter()
            while wait > 0:
                progress.tick()
                time.sleep(min(wait, 0.2))
                wait = start + offset - time.perf_counter()
            slots.acquire()
            req = wl.plan_request(workload, index, i)
            req.arrival_s = offset
            t = threading.Thread(target=arrive, args=(req,), daemon=True)
            t.start()
            threads.append(t)
    for t in threads:
        while t.is_alive():
            progress.tick()
            t.join(0.2)
    wall = time.perf_counter() - start
    records.sort(key=lambda r: r["index"])
    return records, wall


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"processor": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


def phase_imbalance(before: dict, after: dict, recorded) -> dict:
    experts = st.matrix_delta(after["total"]["expert_tokens"], before["total"]["expert_tokens"])
    ranks, source = None, None
    if recorded is not None and recorded["steps_dropped"] == 0 and recorded["steps"]:
        ranks, source = recorded["rank_rows"], "recorder"
    if ranks is None:
        ranks = st.rank_rows_from_experts(experts, after["expert_ranks"], after["world_size"])
        source = "expert_ranks" if ranks is not None else None
    out = st.imbalance(experts, ranks)
    out["rank_rows_source"] = source
    return out


def stats_brief(stats):
    if stats is None:
        return None
    return {"engine_steps": stats["engine_steps"], "expert_tokens": stats["total"]["expert_tokens"]}


def recorder_sums(dump: dict) -> dict:
    steps = dump["steps"]
    layers, experts, ranks = dump["num_layers"], dump["num_experts"], dump["world_size"]
    e = [[0] * experts for _ in range(layers)]
    r = [[0] * ranks for _ in range(layers)]
    for s in steps:
        for li in range(layers):
            for j, v in enumerate(s["expert_tokens"][li]):
                e[li][j] += v
            for j, v in enumerate(s["rank_rows"][li]):
                r[li][j] += v
    return {"steps": len(steps), "steps_dropped": dump["steps_dropped"], "expert_tokens": e,
            "rank_rows": r, "first_step": steps[0]["step"] if steps else None,
            "last_step": steps[-1]["step"] if steps else None}


def summary_table(report: dict) -> str:
    head = ("phase", "skew", "load", "req", "err", "req/s", "out tok/s", "TTFT p50/p99 ms",
            "ITL p50/p90/p99 ms", "expert max/mean", "rank max/mean")

    def ms(d, *qs):
        return "/".join("-" if d[q] is None else f"{1000 * d[q]:.1f}" for q in qs)

    def num(x, f="{:.2f}"):
        return "-" if x is None else f.format(x)

    rows = [head]
    for p in report["phases"]:
        s, im = p["summary"], p["imbalance"] or {}
        experts = "-" if not im else (num(im["expert_max_mean_avg"]) + " (max "
                                      + num(im["expert_max_mean_max"]) + ")")
        rows.append((p["name"], p["skew"], p["load"], str(s["requests_ok"]), str(s["errors"]),
                     num(s["req_per_s"]), num(s["output_tok_per_s"], "{:.1f}"),
                     ms(s["ttft_s"], "p50", "p99"), ms(s["itl_s"], "p50", "p90", "p99"),
                     experts, num(im.get("rank_max_mean_avg"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="the daemon's HTTP address")
    ap.add_argument("--workload", help="workload file (.json, or .yaml/.yml)")
    ap.add_argument("--render", metavar="REPORT_JSON",
                    help="run nothing: write --html / --plots-dir from a saved --json report")
    ap.add_argument("--json", help="write the full report (raw per-request timings) here")
    ap.add_argument("--html", help="write the self-contained HTML report here")
    ap.add_argument("--plots-dir", help="also write each plot as DIR/NAME.svg (for docs)")
    ap.add_argument("--skew-levels", nargs="+", type=float,
                    help="sweep: these skew levels (replaces the workload's phases)")
    ap.add_argument("--skew-template", help="sweep: the profile of a level, e.g. hot:2:{level}")
    ap.add_argument("--concurrency-levels", nargs="+", type=int, help="sweep: these concurrencies")
    ap.add_argument("--no-recorder", action="store_true",
                    help="leave the daemon's load recorder alone (rank rows per layer then come "
                    "from the experts' ranks)")
    ap.add_argument("--poll-interval", type=float, default=0.5,
                    help="seconds between /v1/lab/stats polls for the over-time plot")
    ap.add_argument("--timeout", type=float, default=600, help="per-request socket timeout (s)")
    ap.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                    help="the status line on stderr (auto: when stderr is a terminal)")
    return ap.parse_args(argv)


def write_outputs(report: dict, args):
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"json: {args.json}")
    if args.html:
        Path(args.html).write_text(loadgen_html.render(report))
        print(f"html: {args.html}")
    if args.plots_dir:
        Path(args.plots_dir).mkdir(parents=True, exist_ok=True)
        charts = loadgen_html.plots(report)
        for name, svg in charts.items():
            Path(args.plots_dir, f"{name}.svg").write_text(loadgen_html.standalone_svg(svg))
        print(f"plots: {args.plots_dir}/{{{','.join(charts)}}}.svg")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        try:
            report = json.loads(Path(args.render).read_text())
        except (OSError, json.JSONDecodeError) as e:
            print(f"loadgen: --render {args.render}: {e}", file=sys.stderr)
            return 2
        if report.get("object") != "moeserve.loadgen.report":
            print(f"loadgen: --render {args.render}: not a loadgen --json report", file=sys.stderr)
            return 2
        for phase in report["phases"]:  # from the raw records, with this version's numbers
            phase["summary"] = st.phase_summary(phase["requests"], phase["summary"]["wall_s"])
        print(summary_table(report))
        write_outputs(report, argparse.Namespace(json=None, html=args.html,
                                                 plots_dir=args.plots_dir))
        return 0
    if not args.workload:
        print("loadgen: give --workload (or --render REPORT_JSON)", file=sys.stderr)
        return 2
    if args.poll_interval <= 0:
        raise SystemExit("--poll-interval: expected seconds > 0")
    try:
        workload = wl.load_workload(args.workload)
        if args.skew_levels or args.skew_template or args.concurrency_levels:
            raw = wl.apply_sweep_flags(workload.source, args.skew_levels, args.skew_template,
                                       args.concurrency_levels)
            workload = wl.parse_workload(raw, Path(args.workload).resolve().parent)
    except wl.WorkloadError as e:
        print(f"loadgen: {e}", file=sys.stderr)
        return 2
    target = Target(args.url, args.timeout)
    try:
        model = workload.model or target.call("GET", "/v1/models")["data"][0]["id"]
        try:
            stats = idle_stats(target)
        except HttpStatusError as e:
            if e.status != 404:
                raise
            # Another OpenAI-compatible server (vLLM, SGLang, ...): latencies only.
            stats = None
            print(f"loadgen: {args.url} has no /v1/lab/stats (not moeserve?): latencies only, "
                  "no imbalance", file=sys.stderr)
    except (OSError, RuntimeError, http.client.HTTPException, KeyError, IndexError) as e:
        print(f"loadgen: cannot reach the server at {args.url}: {e}", file=sys.stderr)
        return 1
    lab = stats is not None
    recorder = lab and not args.no_recorder
    t0 = time.perf_counter()
    progress = Progress(args.progress, len(workload.phases))
    poller = StatsPoller(target, args.poll_interval, t0)
    if lab:
        poller.poll_once()
        poller.start()
    interrupted = False
    report = {"object": "moeserve.loadgen.report", "version": 1,
              "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
              "workload": {"name": workload.name, "file": str(args.workload),
                           "endpoint": workload.endpoint, "seed": workload.seed,
                           "source": workload.source},
              "target": {"url": args.url, "model": model, "lab": lab,
                         **({k: stats[k] for k in ("world_size", "num_layers", "num_experts",
                                                   "expert_ranks")} if lab else {})},
              "machine": machine(), "definitions": st.__doc__.split("Definitions")[1].strip(),
              "phases": []}
    try:
        for index, phase in enumerate(workload.phases):
            poller.phase = phase.name
            before = idle_stats(target) if lab else None
            if recorder:
                target.call("POST", "/v1/lab/recorder/start")
            progress.reset(index, phase.name, phase.requests)
            phase_t = time.perf_counter() - t0
            records, wall = run_phase(target, workload, model, index, t0, progress)
            after = idle_stats(target) if lab else None
            recorded = None
            if recorder:
                target.call("POST", "/v1/lab/recorder/stop")
                recorded = recorder_sums(target.call("GET", "/v1/lab/recorder/dump"))
            progress.phase_done()
            report["phases"].append({
                "index": index, "name": phase.name, "skew": phase.skew_text(),
                "skew_level": phase.skew_level, "load": phase.load_text(),
                "concurrency": phase.concurrency, "rate": phase.rate,
                "start_s": phase_t, "end_s": phase_t + wall,
                "summary": st.phase_summary(records, wall),
                "imbalance": phase_imbalance(before, after, recorded) if lab else None,
                "stats_before": stats_brief(before), "stats_after": stats_brief(after),
                "recorder": recorded, "requests": records})
    except (OSError, RuntimeError, http.client.HTTPException) as e:
        print(f"\nloadgen: lost the daemon at {args.url}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # report what finished; requests in flight are abandoned
        interrupted = True
        print(f"\nloadgen: interrupted; reporting the {len(report['phases'])} finished "
              "phase(s)", file=sys.stderr)
        if recorder:
            try:
                target.call("POST", "/v1/lab/recorder/stop")
            except (OSError, RuntimeError, http.client.HTTPException):
                pass
    finally:
        poller.stop_event.set()
        if poller.is_alive():
            poller.join()
    if lab:
        try:
            poller.poll_once()
        except (OSError, RuntimeError, http.client.HTTPException):
            pass
    report["timeline"] = st.timeline(poller.polls, stats["world_size"]) if lab else []
    print(summary_table(report))
    write_outputs(report, args)
    errors = sum(p["summary"]["errors"] for p in report["phases"])
    if errors:
        first = next(r["error"] for p in report["phases"] for r in p["requests"] if r["error"])
        print(f"loadgen: {errors} request(s) failed, the first: {first}", file=sys.stderr)
    if interrupted:
        return 130
    return 3 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
