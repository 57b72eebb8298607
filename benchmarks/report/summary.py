"""What a reader needs first: the best variant per model and runtime, the runtimes missing here, and the
warnings that are beyond measurement noise. Plain functions over the store's rows (see benchmarks/store.py)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from benchmarks import runtimes
from benchmarks.report import int8_causes

# the fp32 artifact each format starts from; a runtime's baseline is the fp32 variant of the format it runs
FP32_BY_FORMAT = {"keras": "fp32", "tflite": "tflite-fp32", "onnx": "onnx-fp32"}
QUANTIZED = ("int8", "dynamic", "float16")

# a p50 difference counts only when larger than both rows' spread (p90 - p50), than NOISE_REL of the baseline's
# p50, and than NOISE_FLOOR_MS: microsecond calls jitter by more than any ratio on them means
NOISE_REL = 0.05
NOISE_FLOOR_MS = 0.02
# the int8-slower-than-fp32 warning's floor: lower, because a quantized file that turns a 7 µs call into 11 µs is a
# real 1.6x loss for an app calling it in a loop (mlp's ONNX int8 on an AVX-512 host), and beyond_noise's spread
# check already rejects calls that jitter by that much
WARN_FLOOR_MS = 0.002

HOW_TO_ENABLE = {
    "tf-gpu": "on a machine with an NVIDIA GPU: pip install -e '.[gpu]' (tensorflow[and-cuda])",
    "onnxruntime-cuda": "on a machine with an NVIDIA GPU: pip install -e '.[gpu]' (onnxruntime-gpu)",
    "onnxruntime-tensorrt": "on a machine with an NVIDIA GPU and TensorRT: pip install -e '.[gpu]' (onnxruntime-gpu)",
    "litert": "pip install ai-edge-litert", "litert-noxnnpack": "pip install ai-edge-litert",
    "onnxruntime-cpu": "pip install onnxruntime",
}


def runtime_format(runtime: str) -> str | None:
    for r in runtimes.RUNTIMES:
        if r.name == runtime:
            return r.format
    return None


def baseline_variant(runtime: str) -> str | None:
    """The fp32 variant ``runtime`` is compared with (None for a runtime this version does not know)."""
    return FP32_BY_FORMAT.get(runtime_format(runtime))


@dataclass(frozen=True)
class Budget:
    """How much worse than Keras fp32 a variant's metric may be and still count."""

    name: str
    points: float  # 1.0 = one point: 0.01 absolute on a metric in [0, 1], else 1 % of the fp32 metric

    def allows(self, ref: float, metric: float, higher_is_better: bool) -> bool:
        return loss(ref, metric, higher_is_better) <= self.allowed(ref, higher_is_better) + 1e-12

    def allowed(self, ref: float, higher_is_better: bool) -> float:
        unit = 0.01 if higher_is_better and 0.0 <= ref <= 1.0 else 0.01 * abs(ref)
        return self.points * unit


ONE_POINT = Budget("1 point", 1.0)


def budgets(rows: list[dict]) -> list[Budget]:
    """The budgets the summary is computed for. Hook: when a `compress auto` result is stored, its budget
    is appended here (nothing writes one yet, so today this is only the 1-point budget)."""
    return [ONE_POINT]


def loss(ref: float, metric: float, higher_is_better: bool) -> float:
    """How much worse ``metric`` is than ``ref`` (negative: better), whatever the metric's direction."""
    return ref - metric if higher_is_better else metric - ref


def ok_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == "ok" and r.get("p50_ms")]


def reference_metric(rows: list[dict], model: str) -> float | None:
    """Keras fp32's metric for ``model``: what every variant's metric change is measured against."""
    for r in rows:
        if r["model"] == model and r["variant"] == "fp32" and r["status"] == "ok" and r["metric"] is not None:
            return r["metric"]
    return None


def spread(row: dict) -> float:
    return max(0.0, (row.get("p90_ms") or row["p50_ms"]) - row["p50_ms"])


def beyond_noise(slow: dict, fast: dict, floor_ms: float = NOISE_FLOOR_MS) -> bool:
    """``slow`` is slower than ``fast`` by more than either row's own spread, a relative margin and a floor."""
    diff = slow["p50_ms"] - fast["p50_ms"]
    return diff > max(spread(slow), spread(fast), NOISE_REL * fast["p50_ms"], floor_ms)


def host_name(row: dict) -> str:
    """The machine's name (first field of the row's host line)."""
    return (row.get("host") or "").split(" | ")[0]


def many_hosts(rows: list[dict]) -> bool:
    return len({r.get("host") for r in rows}) > 1


def distinct_models(rows: list[dict]) -> list[dict]:
    """The rows with each model named apart: a name that stands for more than one model key in ``rows`` (two
    folders named alike, or an earlier version of the same file: other weights, data or metric) is followed by
    its key's hash (``m.keras (v1) [3fa2c1d0]``), so their rows never share a table, a summary line or a baseline."""
    keys: dict[str, set] = defaultdict(set)
    for r in rows:
        keys[r["model"]].add(r.get("model_key"))
    return [{**r, "model": f"{r['model']} [{str(r.get('model_key')).rsplit('-', 1)[-1][:8]}]"}
            if len(keys[r["model"]]) > 1 else r for r in rows]


def _baselines(rows: list[dict]) -> dict[tuple, dict]:
    """(model, runtime, host, batch, threads) -> the fp32 row a variant is compared with (same machine)."""
    out = {}
    for r in ok_rows(rows):
        if r["variant"] == baseline_variant(r["runtime"]):
            out[(r["model"], r["runtime"], r.get("host"), r["batch"], r["threads"])] = r
    return out


@dataclass
class Choice:
    """One summary line: a model on a runtime, its fp32 baseline and the best variant within ``budget``."""

    model: str
    runtime: str
    host: str | None
    budget: Budget
    metric_name: str
    higher_is_better: bool
    baseline: dict | None  # the fp32 row at the best row's batch and threads
    best: dict | None  # None: no variant is within the budget
    ref: float | None  # Keras fp32 metric
    note: str = ""

    @property
    def speedup(self) -> float | None:
        if self.best is None or self.baseline is None:
            return None
        return self.baseline["p50_ms"] / self.best["p50_ms"]

    @property
    def size_ratio(self) -> float | None:
        if self.best is None or self.baseline is None or not self.baseline.get("size") or not self.best.get("size"):
            return None
        return self.best["size"] / self.baseline["size"]

    @property
    def metric_change(self) -> float | None:
        if self.best is None or self.best["metric"] is None or self.ref is None:
            return None
        return self.best["metric"] - self.ref


def choose(rows: list[dict], budget: Budget = ONE_POINT) -> list[Choice]:
    """Per model and available runtime: the variant with the largest speedup over that runtime's fp32 at the same
    batch and threads whose metric is within ``budget`` of Keras fp32; fp32 itself when nothing beats it beyond
    noise. A runtime with no fp32 baseline row is listed with the reason."""
    base = _baselines(rows)
    groups = defaultdict(list)
    for r in ok_rows(rows):
        groups[(r["model"], r["runtime"], r.get("host") or "")].append(r)
    choices = []
    for (model, runtime, host), rs in sorted(groups.items()):
        ref = reference_metric(rows, model)
        first = rs[0]
        hib = bool(first["higher_is_better"])
        choice = Choice(model, runtime, first.get("host"), budget, first["metric_name"], hib, None, None, ref)
        key = (model, runtime, first.get("host"))
        choices.append(choice)
        if ref is None:
            ref = next((b["metric"] for k, b in base.items() if k[:3] == key), None)
            choice.ref = ref
        candidates = []
        for r in rs:
            b = base.get((*key, r["batch"], r["threads"]))
            if b is None or r["metric"] is None or ref is None:
                continue
            if budget.allows(ref, r["metric"], hib):
                candidates.append((b["p50_ms"] / r["p50_ms"], r, b))
        if not any(k[:3] == key for k in base):
            choice.note = f"no ok {baseline_variant(runtime) or 'fp32'} row on {runtime} to compare with"
            continue
        if not candidates:
            choice.baseline = next(b for k, b in sorted(base.items(), key=lambda kv: str(kv[0]))
                                   if k[:3] == key)
            choice.note = (f"no variant within {budget.name} of Keras fp32 ({first['metric_name']} {ref:.4f})"
                           if ref is not None else "no metric to compare with: neither Keras fp32 nor "
                                                   f"{choice.baseline['variant']} has one")
            continue
        _, best, b = max(candidates, key=lambda c: c[0])
        if best is b:
            choice.note = f"no other variant within {budget.name} is faster"
        elif not beyond_noise(b, best):
            choice.note = (f"{best['variant']} is {b['p50_ms'] / best['p50_ms']:.2f}× faster at p50, but within "
                           f"the rows' spread (p90 - p50 up to {max(spread(b), spread(best)):.3f} ms): not beyond "
                           "measurement noise, measure on a quieter machine")
            best = b
        choice.best, choice.baseline = best, b
    return choices


def verdict(choices: list[Choice]) -> str:
    """The one line per model a reader acts on: the fastest choice across its runtimes (by p50)."""
    usable = [c for c in choices if c.best is not None]
    if not usable:
        notes = "; ".join(dict.fromkeys(f"{c.runtime}: {c.note}" for c in choices if c.note))
        return f"nothing to ship within {choices[0].budget.name}" + (f" ({notes})" if notes else "")
    c = min(usable, key=lambda c: (c.best["p50_ms"] / c.best["batch"], -(c.speedup or 0)))
    b = c.best
    where = f" on {host_name(b)}" if len({x.host for x in choices}) > 1 else ""
    what = (f"**{b['variant']} on {c.runtime}**{where} (batch {b['batch']}, {b['threads']} threads): "
            f"p50 {b['p50_ms']:.3f} ms")
    if b is c.baseline:
        return what + f", fp32 is the fastest within {c.budget.name} here ({c.note})"
    change = c.metric_change
    return (what + f", {c.speedup:.2f}× faster than {c.baseline['variant']}, size ×{c.size_ratio:.2f}"
            + ("" if change is None else f", {c.metric_name} {change:+.4f} vs Keras fp32"))


@dataclass(frozen=True)
class Missing:
    runtime: str
    reason: str
    how: str
    rows: int


def unavailable(rows: list[dict]) -> list[Missing]:
    """Each runtime that was not available here, once, with its reason and how to enable it."""
    seen: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["status"] == "unavailable":
            seen[r["runtime"]].append(r)
    return [Missing(name, rs[0]["reason"] or "not available", HOW_TO_ENABLE.get(name, ""), len(rs))
            for name, rs in sorted(seen.items())]


def detail_rows(rows: list[dict]) -> list[dict]:
    """Rows worth a table line: measured or failed, never 'unavailable' (those are listed once at the top)."""
    return [r for r in rows if r["status"] != "unavailable"]


def likely_cause(row: dict, base: dict, cache=None, profiles: dict | None = None) -> str:
    """Why a quantized variant may be slower than fp32 on this runtime. For int8: what its artifact (and stored
    profiles) show, counted by benchmarks.report.int8_causes; when the artifact is gone, that is said and nothing is
    guessed beyond the runtime's known weak spot."""
    variant, runtime = row["variant"], row["runtime"]
    if "int8" in variant:
        found, path = int8_causes.facts(row, base, cache, profiles)
        if found:
            return "; ".join(found)
        if path is not None:
            return (f"nothing in {path.name} explains it (its compute ops are int8, Q/DQ only at the edges); "
                    "profile both variants (`python -m benchmarks profile`) to see which layer did not speed up")
        hint = ("S8S8 activations on a host without VNNI" if runtime.startswith("onnxruntime") else
                "LiteRT's builtin int8 kernels" if runtime == "litert-noxnnpack" else
                "ops XNNPACK does not take in int8")
        return (f"its artifact is not in the cache ({row.get('model_key')}/{variant}), so nothing was counted; the "
                f"known weak spot on {runtime}: {hint}")
    if "float16" in variant:
        return ("no float16 arithmetic on this CPU: float16 weights are converted back to fp32 (LiteRT at load, "
                "ONNX Runtime through Cast nodes per call)")
    if "dynamic" in variant:
        return "dynamic-range quantization quantizes activations on every call"
    return "quantization overhead on this runtime"


@dataclass(frozen=True)
class Warning:
    model: str
    text: str
    variant: str = ""  # the quantized variant that is slower (the console counts the warnings by it)


def slower_than_fp32(rows: list[dict], cache=None, profiles: dict | None = None) -> list[Warning]:
    """Quantized variants slower than their fp32 on the same runtime, batch and threads beyond noise; deduplicated,
    grouped by model (in model order); each names its likely cause (see ``likely_cause``)."""
    base = _baselines(rows)
    where = many_hosts(rows)
    out = {}
    for r in ok_rows(rows):
        b = base.get((r["model"], r["runtime"], r.get("host"), r["batch"], r["threads"]))
        if b is None or r is b or not any(q in r["variant"] for q in QUANTIZED) \
                or not beyond_noise(r, b, WARN_FLOOR_MS):
            continue
        text = (f"{r['variant']} is slower than {b['variant']} on {r['runtime']}"
                + (f" on {host_name(r)}" if where else "") + f" at batch {r['batch']}, "
                f"{r['threads']} threads (p50 {r['p50_ms']:.3f} ms vs {b['p50_ms']:.3f} ms); likely: "
                f"{likely_cause(r, b, cache, profiles)}")
        out.setdefault((r["model"], text), Warning(r["model"], text, r["variant"]))
    return sorted(out.values(), key=lambda w: w.model)


def slower_quantized(rows: list[dict], cache=None, profiles: dict | None = None) -> list[str]:
    """The same warnings as one line each ("model: ..."), for the console of `benchmarks run`."""
    return [f"{w.model}: {w.text}" for w in slower_than_fp32(distinct_models(rows), cache, profiles)]
