"""Workload files of bench/loadgen.py: parsing, validation, sweep expansion and the deterministic
request plan of each phase. Standard library only (YAML when PyYAML happens to be installed).

A workload (JSON, or YAML with PyYAML) is an object:

  name: str                        shown in reports
  endpoint: completions | chat     /v1/completions (default) or /v1/chat/completions
  model: str                       default: the first id of GET /v1/models
  seed: int                        default 0; every request of a phase follows from (seed, phase, i)
  temperature: float               default 0 (also top_p, top_k, seed-per-request are not sent)
  ignore_eos: bool                 default true: every request generates exactly max_tokens
  prompt_sets: {NAME: SET}         SET is one of
      {"file": PATH}                   one prompt a line (PATH relative to the workload file)
      {"prompts": [str, ...]}          inline texts
      {"random_tokens": {"low": a, "high": b}}   token-id prompts (completions only), ids drawn
                                       uniformly from [a, b], length from prompt_len: exact
                                       prompt lengths, no tokenizer involved
      {"random_words": [str, ...]}     prompt_len words drawn from the list (an empty list: a
                                       built-in list)
  defaults: PHASE                  merged under every phase (and under the sweep's phase)
                                   (a phase giving rate drops the default concurrency, and
                                   the other way round; likewise requests and duration_s)
  phases: [PHASE, ...]
  sweep: {"skew_levels": [x, ...], "skew_template": "hot:2:{level}",
          "concurrency": [c, ...], "phase": PHASE}
                                   adds one phase per (concurrency, level), after `phases`;
                                   level 0 sends "off" unless zero_level_profile says otherwise

PHASE:
  name: str
  prompt_set: NAME                 default: the only set, when there is one
  prompt_len: LEN                  tokens (random_tokens) or words (random_words); texts ignore it
  output_len: LEN                  max_tokens of each request (default 16)
  concurrency: int                 closed loop: this many clients send back to back (default 1)
  rate: float                      open loop instead: Poisson arrivals at this many requests/s
  max_concurrency: int             cap on requests in flight under `rate` (default 256)
  requests: int                    how many requests the phase sends ...
  duration_s: float                ... or for how long it sends (at least one of the two)
  skew: SKEW                       the per-request router_skew: a profile string ("off" sends
                                   "off"; null/"default" sends no field: the daemon's default),
                                   or a mix [{"profile": str|null, "weight": w}, ...]
  skew_level: float                the x of the report's plots against skew (default: none)

LEN: an int (fixed), {"uniform": [lo, hi]} (inclusive), {"normal": {"mean": m, "std": s,
"min": a, "max": b}} (rounded, clipped; min default 1), or {"choice": [v, ...], "weights": [...]}.
"""

from __future__ import annotations

import copy
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_WORDS = ("the of and to in is that for it as with was on be by at this from or have an "
                 "are expert router token layer model serve batch cache block stream query value "
                 "key skew load rank step").split()

PHASE_KEYS = {"name", "prompt_set", "prompt_len", "output_len", "concurrency", "rate",
              "max_concurrency", "requests", "duration_s", "skew", "skew_level"}
TOP_KEYS = {"name", "endpoint", "model", "seed", "temperature", "ignore_eos", "prompt_sets",
            "defaults", "phases", "sweep"}
SWEEP_KEYS = {"skew_levels", "skew_template", "concurrency", "phase", "zero_level_profile"}


class WorkloadError(ValueError):
    """A workload file that cannot run; the message names the field."""


@dataclass
class LengthDist:
    kind: str  # fixed | uniform | normal | choice
    params: dict

    def draw(self, rng: random.Random) -> int:
        p = self.params
        if self.kind == "fixed":
            return p["value"]
        if self.kind == "uniform":
            return rng.randint(p["lo"], p["hi"])
        if self.kind == "normal":
            v = int(round(rng.gauss(p["mean"], p["std"])))
            return max(p["min"], min(p["max"], v))
        return rng.choices(p["values"], weights=p["weights"])[0]

    def describe(self) -> str:
        p = self.params
        if self.kind == "fixed":
            return str(p["value"])
        if self.kind == "uniform":
            return f"uniform[{p['lo']},{p['hi']}]"
        if self.kind == "normal":
            return f"normal({p['mean']},{p['std']})"
        return f"choice{p['values']}"


@dataclass
class PromptSet:
    name: str
    kind: str  # texts | random_tokens | random_words
    texts: list = field(default_factory=list)
    low: int = 0
    high: int = 0


@dataclass
class Phase:
    name: str
    prompt_set: PromptSet
    prompt_len: LengthDist | None
    output_len: LengthDist
    concurrency: int | None
    rate: float | None
    max_concurrency: int
    requests: int | None
    duration_s: float | None
    skew_mix: list  # [(profile or None, weight)]
    skew_level: float | None

    def skew_text(self) -> str:
        if len(self.skew_mix) == 1:
            return self.skew_mix[0][0] or "default"
        return " + ".join(f"{w:g}x {p or 'default'}" for p, w in self.skew_mix)

    def load_text(self) -> str:
        if self.rate is not None:
            return f"rate {self.rate:g}/s"
        return f"concurrency {self.concurrency}"


@dataclass
class PlannedRequest:
    index: int
    prompt: Any  # str or list of token ids
    prompt_len: int | None  # known exactly for token-id prompts
    max_tokens: int
    skew: str | None
    arrival_s: float  # offset from the phase start (rate mode; 0 in closed loop)


@dataclass
class Workload:
    name: str
    endpoint: str
    model: str | None
    seed: int
    temperature: float
    ignore_eos: bool
    phases: list
    source: dict  # the parsed file, for the report


def _fail(where: str, message: str):
    raise WorkloadError(f"{where}: {message}")


def _int(where: str, v, minimum: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        _fail(where, f"expected an integer >= {minimum}, got {v!r}")
    return v


def _num(where: str, v, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        _fail(where, f"expected a number, got {v!r}")
    if positive and v <= 0:
        _fail(where, f"expected a number > 0, got {v!r}")
    return float(v)


def parse_length(where: str, v, minimum: int) -> LengthDist:
    if isinstance(v, int) and not isinstance(v, bool):
        return LengthDist("fixed", {"value": _int(where, v, minimum)})
    if not isinstance(v, dict) or len(set(v) - {"weights"}) != 1:
        _fail(where, "expected an int, {uniform: [lo, hi]}, {normal: {mean, std, min, max}} or "
              f"{{choice: [...], weights: [...]}}, got {v!r}")
    if "fixed" in v:
        return LengthDist("fixed", {"value": _int(where + ".fixed", v["fixed"], minimum)})
    if "uniform" in v:
        u = v["uniform"]
        if not isinstance(u, list) or len(u) != 2:
            _fail(where + ".uniform", f"expected [lo, hi], got {u!r}")
        lo, hi = _int(where + ".uniform", u[0], minimum), _int(where + ".uniform", u[1], minimum)
        if lo > hi:
            _fail(where + ".uniform", f"lo {lo} > hi {hi}")
        return LengthDist("uniform", {"lo": lo, "hi": hi})
    if "normal" in v:
        n = v["normal"]
        if not isinstance(n, dict) or not {"mean", "std"} <= set(n):
            _fail(where + ".normal", f"expected {{mean, std[, min, max]}}, got {n!r}")
        lo = _int(where + ".normal.min", n.get("min", max(1, minimum)), minimum)
        hi = _int(where + ".normal.max", n.get("max", 1 << 30), lo)
        return LengthDist("normal", {"mean": _num(where + ".normal.mean", n["mean"]),
                                     "std": _num(where + ".normal.std", n["std"]),
                                     "min": lo, "max": hi})
    if "choice" in v:
        values = v["choice"]
        if not isinstance(values, list) or not values:
            _fail(where + ".choice", f"expected a non-empty list, got {values!r}")
        values = [_int(where + ".choice", x, minimum) for x in values]
        weights = v.get("weights", [1] * len(values))
        if not isinstance(weights, list) or len(weights) != len(values):
            _fail(where + ".weights", "expected one weight per choice")
        weights = [_num(where + ".weights", w) for w in weights]
        if min(weights) < 0 or sum(weights) <= 0:
            _fail(where + ".weights", "weights must be >= 0 with a positive sum")
        return LengthDist("choice", {"values": values, "weights": weights})
    _fail(where, f"unknown length distribution {sorted(v)}; use uniform, normal, choice or fixed")


def parse_skew(where: str, v) -> list:
    """-> [(profile text or None for the daemon's default, weight)]. The daemon validates the
    profile syntax itself (HTTP 400 naming router_skew): its parser is the one source of truth."""
    def profile(w, p):
        if p is None or p == "default":
            return None
        if not isinstance(p, str) or not p:
            _fail(w, f"expected a profile string (e.g. 'hot:2:4', 'off') or null, got {p!r}")
        return p

    if not isinstance(v, list):
        return [(profile(where, v), 1.0)]
    if not v:
        _fail(where, "an empty skew mix")
    mix = []
    for i, item in enumerate(v):
        w = f"{where}[{i}]"
        if not isinstance(item, dict) or "profile" not in item:
            _fail(w, f"expected {{profile: ..., weight: ...}}, got {item!r}")
        weight = _num(w + ".weight", item.get("weight", 1), positive=True)
        mix.append((profile(w + ".profile", item["profile"]), weight))
    return mix


def parse_prompt_set(name: str, v, base_dir: Path) -> PromptSet:
    where = f"prompt_sets.{name}"
    if not isinstance(v, dict) or len(v) != 1:
        _fail(where, "expected one of {file: PATH}, {prompts: [...]}, {random_tokens: {low, "
              "high}}, {random_words: [...]}")
    (kind, arg), = v.items()
    if kind == "file":
        path = Path(arg) if Path(arg).is_absolute() else base_dir / arg
        try:
            lines = [ln.strip() for ln in path.read_text().splitlines()]
        except OSError as e:
            _fail(where + ".file", f"cannot read {path}: {e.strerror}")
        texts = [ln for ln in lines if ln]
        if not texts:
            _fail(where + ".file", f"{path} holds no prompt")
        return PromptSet(name, "texts", texts=texts)
    if kind == "prompts":
        if not isinstance(arg, list) or not arg or not all(isinstance(p, str) and p for p in arg):
            _fail(where + ".prompts", "expected a non-empty list of non-empty strings")
        return PromptSet(name, "texts", texts=list(arg))
    if kind == "random_tokens":
        if not isinstance(arg, dict):
            _fail(where + ".random_tokens", "expected {low: id, high: id}")
        low = _int(where + ".random_tokens.low", arg.get("low", 3), 0)
        high = _int(where + ".random_tokens.high", arg.get("high"), low)
        return PromptSet(name, "random_tokens", low=low, high=high)
    if kind == "random_words":
        if not isinstance(arg, list) or not all(isinstance(p, str) and p for p in arg):
            _fail(where + ".random_words", "expected a list of words (empty: built-in words)")
        return PromptSet(name, "random_words", texts=list(arg) or list(DEFAULT_WORDS))
    _fail(where, f"unknown prompt set kind {kind!r}")


def parse_phase(where: str, raw: dict, sets: dict, endpoint: str) -> Phase:
    if not isinstance(raw, dict):
        _fail(where, f"expected an object, got {raw!r}")
    unknown = set(raw) - PHASE_KEYS
    if unknown:
        _fail(where, f"unknown field(s) {sorted(unknown)}; known: {sorted(PHASE_KEYS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        _fail(where + ".name", "every phase needs a name")
    set_name = raw.get("prompt_set")
    if set_name is None:
        if len(sets) != 1:
            _fail(where + ".prompt_set", f"name one of {sorted(sets)}")
        set_name = next(iter(sets))
    if set_name not in sets:
        _fail(where + ".prompt_set", f"no prompt set {set_name!r}; have {sorted(sets)}")
    pset = sets[set_name]
    if pset.kind == "random_tokens" and endpoint == "chat":
        _fail(where + ".prompt_set", "random_tokens prompts need endpoint 'completions'")
    prompt_len = None
    if pset.kind != "texts":
        if "prompt_len" not in raw:
            _fail(where + ".prompt_len", f"prompt set {set_name!r} draws prompts of prompt_len")
        prompt_len = parse_length(where + ".prompt_len", raw["prompt_len"], 1)
    output_len = parse_length(where + ".output_len", raw.get("output_len", 16), 1)
    rate = raw.get("rate")
    if rate is not None:
        rate = _num(where + ".rate", rate, positive=True)
        if "concurrency" in raw:
            _fail(where, "give either rate (open loop) or concurrency (closed loop), not both")
        concurrency = None
    else:
        concurrency = _int(where + ".concurrency", raw.get("concurrency", 1), 1)
    max_concurrency = _int(where + ".max_concurrency", raw.get("max_concurrency", 256), 1)
    requests = raw.get("requests")
    duration = raw.get("duration_s")
    if requests is None and duration is None:
        _fail(where, "give requests or duration_s")
    if requests is not None:
        requests = _int(where + ".requests", requests, 1)
    if duration is not None:
        duration = _num(where + ".duration_s", duration, positive=True)
    skew_level = raw.get("skew_level")
    if skew_level is not None:
        skew_level = _num(where + ".skew_level", skew_level)
    return Phase(name, pset, prompt_len, output_len, concurrency, rate, max_concurrency, requests,
                 duration, parse_skew(where + ".skew", raw.get("skew")), skew_level)


# Fields that stand for one another: a phase that sets one drops the other from the defaults.
ALTERNATIVES = (("rate", "concurrency"), ("requests", "duration_s"))


def merge_phase(defaults: dict, phase: dict) -> dict:
    base = dict(defaults)
    for a, b in ALTERNATIVES:
        if a in phase and b not in phase:
            base.pop(b, None)
        if b in phase and a not in phase:
            base.pop(a, None)
    return {**base, **phase}


def expand_sweep(sweep: dict, defaults: dict) -> list:
    """The sweep's phases, raw: for each concurrency, for each skew level, the base phase with
    that concurrency, skew and skew_level."""
    if not isinstance(sweep, dict):
        _fail("sweep", "expected an object")
    unknown = set(sweep) - SWEEP_KEYS
    if unknown:
        _fail("sweep", f"unknown field(s) {sorted(unknown)}; known: {sorted(SWEEP_KEYS)}")
    levels = sweep.get("skew_levels")
    if not isinstance(levels, list) or not levels:
        _fail("sweep.skew_levels", "expected a non-empty list of numbers")
    levels = [_num("sweep.skew_levels", x) for x in levels]
    template = sweep.get("skew_template")
    if not isinstance(template, str) or "{level}" not in template:
        _fail("sweep.skew_template", "expected a profile with {level}, e.g. 'hot:2:{level}'")
    zero = sweep.get("zero_level_profile", "off")
    conc = sweep.get("concurrency", [defaults.get("concurrency", 1)])
    if not isinstance(conc, list) or not conc:
        _fail("sweep.concurrency", "expected a non-empty list of integers")
    conc = [_int("sweep.concurrency", c, 1) for c in conc]
    base = merge_phase(defaults, sweep.get("phase", {}))
    base.pop("rate", None)
    out = []
    for c in conc:
        for level in levels:
            profile = zero if level == 0 else template.replace("{level}", f"{level:g}")
            out.append({**base, "name": f"skew={level:g} c={c}", "concurrency": c,
                        "skew": profile, "skew_level": level})
    return out


def parse_workload(raw: dict, base_dir: Path) -> Workload:
    if not isinstance(raw, dict):
        _fail("workload", "expected an object at the top level")
    unknown = set(raw) - TOP_KEYS
    if unknown:
        _fail("workload", f"unknown field(s) {sorted(unknown)}; known: {sorted(TOP_KEYS)}")
    endpoint = raw.get("endpoint", "completions")
    if endpoint not in ("completions", "chat"):
        _fail("endpoint", f"expected 'completions' or 'chat', got {endpoint!r}")
    sets_raw = raw.get("prompt_sets") or {"words": {"random_words": []}}
    if not isinstance(sets_raw, dict):
        _fail("prompt_sets", "expected an object NAME -> SET")
    sets = {n: parse_prompt_set(n, v, base_dir) for n, v in sets_raw.items()}
    defaults = raw.get("defaults", {})
    if not isinstance(defaults, dict):
        _fail("defaults", "expected an object")
    phases_raw = raw.get("phases", [])
    if not isinstance(phases_raw, list):
        _fail("phases", "expected a list")
    merged = [merge_phase(defaults, p) if isinstance(p, dict) else p for p in phases_raw]
    if raw.get("sweep") is not None:
        merged += expand_sweep(raw["sweep"], defaults)
    if not merged:
        _fail("phases", "no phase to run (give phases or a sweep)")
    phases = [parse_phase(f"phases[{i}]", p, sets, endpoint) for i, p in enumerate(merged)]
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        _fail("phases", f"phase names must be unique: {names}")
    model = raw.get("model")
    if model is not None and not isinstance(model, str):
        _fail("model", "expected a string")
    ignore_eos = raw.get("ignore_eos", True)
    if not isinstance(ignore_eos, bool):
        _fail("ignore_eos", "expected true or false")
    return Workload(name=str(raw.get("name", "workload")), endpoint=endpoint, model=model,
                    seed=_int("seed", raw.get("seed", 0)),
                    temperature=_num("temperature", raw.get("temperature", 0.0)),
                    ignore_eos=ignore_eos, phases=phases, source=copy.deepcopy(raw))


def load_workload(path: str) -> Workload:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise WorkloadError(f"{path}: cannot read: {e.strerror}") from None
    if p.suffix in (".yaml", ".yml"):
        try:
            import yaml  # optional: JSON needs nothing
        except ImportError:
            raise WorkloadError(f"{path}: YAML needs PyYAML (pip install pyyaml); or use JSON")
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise WorkloadError(f"{path}: not valid YAML: {e}") from None
    else:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise WorkloadError(f"{path}: not valid JSON: {e}") from None
    return parse_workload(raw, p.resolve().parent)


def apply_sweep_flags(raw: dict, levels, template, concurrency) -> dict:
    """--skew-levels/--skew-template/--concurrency-levels: a sweep from the command line, whose
    base phase is the workload's sweep.phase or else its first phase (the phases are replaced)."""
    raw = copy.deepcopy(raw)
    sweep = dict(raw.get("sweep") or {})
    if "phase" not in sweep and raw.get("phases"):
        sweep["phase"] = {k: v for k, v in raw["phases"][0].items()
                          if k not in ("name", "skew", "skew_level")}
    if levels is not None:
        sweep["skew_levels"] = levels
    if template is not None:
        sweep["skew_template"] = template
    if concurrency is not None:
        sweep["concurrency"] = concurrency
    raw["sweep"] = sweep
    raw["phases"] = []
    return raw


def plan_request(workload: Workload, phase_index: int, i: int) -> PlannedRequest:
    """Request i of a phase, a pure function of (seed, phase index, i): the same plan whatever
    the order in which client threads draw it."""
    phase = workload.phases[phase_index]
    rng = random.Random(f"{workload.seed}/{phase_index}/{i}")
    pset = phase.prompt_set
    prompt_len = None
    if pset.kind == "texts":
        prompt = pset.texts[rng.randrange(len(pset.texts))]
    elif pset.kind == "random_tokens":
        prompt_len = phase.prompt_len.draw(rng)
        prompt = [rng.randint(pset.low, pset.high) for _ in range(prompt_len)]
    else:
        prompt = " ".join(rng.choice(pset.texts) for _ in range(phase.prompt_len.draw(rng)))
    max_tokens = phase.output_len.draw(rng)
    profiles = [p for p, _ in phase.skew_mix]
    skew = profiles[0] if len(profiles) == 1 else rng.choices(
        profiles, weights=[w for _, w in phase.skew_mix])[0]
    return PlannedRequest(i, prompt, prompt_len, max_tokens, skew, 0.0)


def arrival_offsets(workload: Workload, phase_index: int, limit_s: float | None,
                    limit_n: int | None) -> list:
    """Poisson arrivals of an open-loop phase: exponential gaps of mean 1/rate, seeded, until
    limit_n requests or limit_s seconds (whichever comes first)."""
    phase = workload.phases[phase_index]
    rng = random.Random(f"{workload.seed}/{phase_index}/arrivals")
    out, t = [], 0.0
    while True:
        if limit_n is not None and len(out) >= limit_n:
            return out
        if limit_s is not None and t > limit_s:
            return out
        out.append(t)
        t += rng.expovariate(phase.rate)
