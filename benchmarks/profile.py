"""Per-layer profile of one variant: the runtime's own op profiler, each op mapped back to its Keras layer.

ONNX Runtime: ``SessionOptions.enable_profiling`` writes a Chrome-trace JSON with one ``Node`` event per
kernel run; the node names tf2onnx writes keep the Keras layer path ("sequential/conv2d/Conv2D"), so the
layer is the last path component that names a layer of the Keras model.

LiteRT: the CompiledModel's profiler through libLiteRt.so's C API (benchmarks/profile_litert.py): XNNPACK's
operator timings for ``litert``, one event per TFLite node with builtin kernels for ``litert-noxnnpack``; each
op mapped to its TFLite node and from the node's tensor names to the Keras layer.

An op's per-run time is a 10% trimmed mean over the runs: robust to a preempted run on a shared CPU like a
median, but not stuck at 0 or 1 for ops that LiteRT times in whole microseconds.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.errors import CheckFailed, UserError

PROFILE_RUNTIMES = {"tflite": ["litert", "litert-noxnnpack"], "onnx": ["onnxruntime-cpu"]}
QDQ_SUFFIXES = ("_QuantizeLinear", "_DequantizeLinear", "_quantized", "_dequantized", "_quant", "_dequant", "_Q",
                "_DQ")


@dataclass
class LayerTime:
    layer: str
    ms: float  # per run, summed over the layer's ops
    share: float  # of the run's total op time
    ops: int
    op_types: list[str]


@dataclass
class Profile:
    model: str
    variant: str
    runtime: str
    path: str
    runs: int
    batch: int
    threads: int
    total_ms: float  # per run, all ops (sum of the ops' trimmed means)
    profiler: str
    layers: list[LayerTime] = field(default_factory=list)
    created: str = ""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def layer_of(node: str, layers: set[str] | None) -> str | None:
    """The Keras layer an op belongs to, from its name's path (None: no component names a layer)."""
    parts = [p for p in node.split("/") if p]
    if layers is not None:
        for part in reversed(parts):
            for candidate in (part, *(part[: -len(s)] for s in QDQ_SUFFIXES if part.endswith(s))):
                if candidate in layers:
                    return candidate
        return None
    return parts[-2] if len(parts) >= 2 else None  # a file without its Keras model: the op's parent scope


def keras_layer_names(model) -> set[str]:
    """Every layer name in a Keras model, nested models included (their own name excluded: ops sit in a layer)."""
    names = set()
    for layer in model.layers:
        if hasattr(layer, "layers"):
            names |= keras_layer_names(layer)
        else:
            names.add(layer.name)
    return names


def aggregate(ops: list[tuple[str, str, float]], runs: int, layers: set[str] | None) -> tuple[float, list[LayerTime]]:
    """(node name, op type, µs) of every op run -> per-run ms and share per layer, slowest first. An op's per-run
    time is its 10% trimmed mean over the runs (one preempted run on a shared CPU must not make a layer look
    slow, and whole-µs timings need a mean, not a median)."""
    from scipy.stats import trim_mean

    samples: dict[tuple[str, str], list[float]] = defaultdict(list)
    for name, op_type, us in ops:
        samples[(name, op_type)].append(us)
    by_layer: dict[str, list] = defaultdict(lambda: [0.0, 0, set()])
    for (name, op_type), us in samples.items():
        per_run = max(1, round(len(us) / runs))  # an op inside a loop runs several times per call
        label = name.split(" @")[0] if name.startswith("(") else f"(no Keras layer) {op_type}"
        entry = by_layer[layer_of(name, layers) or label]
        entry[0] += float(trim_mean(us, 0.1)) * per_run
        entry[1] += per_run
        entry[2].add(op_type)
    total_us = sum(e[0] for e in by_layer.values())
    out = [LayerTime(layer, e[0] / 1000.0, e[0] / total_us if total_us else 0.0, e[1], sorted(e[2]))
           for layer, e in by_layer.items()]
    return total_us / 1000.0, sorted(out, key=lambda x: -x.ms)


def onnxruntime_ops(path: Path, feed_inputs, runs: int, warmup: int, threads: int) -> list[tuple[str, str, float]]:
    """Run ``path`` with ONNX Runtime's profiler on; the kernel events of the timed runs (warm-up dropped)."""
    import onnxruntime as ort

    from export.runtime import load

    feed = load(path, providers=["CPUExecutionProvider"], threads=threads)._feed(feed_inputs)
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    model_runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                        key=lambda e: e["ts"])[warmup:]
    if len(model_runs) != runs:
        raise CheckFailed(f"ONNX Runtime's profile has {len(model_runs) + warmup} runs, expected {warmup + runs}")
    start = model_runs[0]["ts"]
    return [(e["name"].removesuffix("_kernel_time"), e.get("args", {}).get("op_name", "?"), float(e["dur"]))
            for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start]


def synthetic_inputs(path: Path, batch: int):
    """Inputs for a bare file (no zoo model to take test data from): normal floats / zeros, dynamic dims = batch."""
    from export.runtime import load

    session = load(path, providers=["CPUExecutionProvider"]).session
    rng = np.random.default_rng(0)
    feed = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else batch for d in i.shape]
        feed[i.name] = (rng.standard_normal(shape).astype(np.float32) if "float" in i.type
                        else np.zeros(shape, dtype=np.int64 if "int64" in i.type else np.int32))
    return feed


@dataclass
class Subject:
    """What gets profiled: the artifact, the names it is filed under, its inputs and its Keras layer names."""

    model: str
    variant: str
    path: Path
    inputs: object
    layers: set[str] | None


def resolve(target: str, variant: str | None, batch: int, tiny: bool = False, cache: str | None = None) -> Subject:
    """A zoo name (its variant built or taken from the sweep's cache, as `benchmarks run` does) or a file path."""
    p = Path(target)
    if p.suffix.lower() in (".onnx", ".tflite"):
        if not p.is_file():
            raise UserError(f"no such file: {p}")
        from export.probe import probe  # a file the toolkit did not write: load and run it in a child first

        probed = probe([p])[0]  # (a crash or a hang there is an error line, not this process killed or stuck)
        if not probed.ok:
            raise UserError(probed.error)
        return Subject(p.stem, variant or p.suffix.lstrip("."), p,
                       synthetic_inputs(p, batch) if p.suffix.lower() == ".onnx" else None, None)
    from models import registry
    from models.artifacts import cache_dir
    from . import variants
    from .build import build_all
    from .runner import batch_of
    from .sweep import SweepConfig
    from .units import build_request, make_unit

    spec = registry.get(target)
    if variant is None:
        raise UserError("--variant is required for a zoo model (e.g. --variant onnx-int8)")
    v = variants.by_name(variant)
    if v.format not in PROFILE_RUNTIMES:
        raise UserError(f"{variant} is a Keras variant; profile a tflite or onnx variant")
    cfg = SweepConfig([target], tiny=tiny, cache=cache)
    unit = make_unit(target, cfg)  # the sweep's own unit: the same cached variants
    path = variants.artifact_path(v, unit, cache_dir(cache) / "variants" / unit.key)
    if not path.exists():
        built = build_all(build_request(unit, cfg, [v.name]))[v.name]
        if built.path is None:
            raise CheckFailed(f"{spec.name} {variant} could not be built: {built.error}")
        path = built.path
    return Subject(spec.name, v.name, path, batch_of(unit.splits().test.x, batch), keras_layer_names(unit.subject.model))


def run_profile(subject: Subject, runtime: str | None = None, runs: int = 50, warmup: int = 5, batch: int = 1,
                threads: int | None = None) -> Profile:
    fmt = subject.path.suffix.lower().lstrip(".")
    valid = PROFILE_RUNTIMES[fmt]
    runtime = runtime or valid[0]
    if runtime not in valid:
        raise UserError(f"runtime {runtime!r} does not run .{fmt} files; valid: {', '.join(valid)}")
    threads = threads or os.cpu_count() or 1
    if runtime.startswith("litert"):
        from importlib import metadata

        from .profile_litert import litert_ops

        xnnpack = runtime == "litert"
        ops = litert_ops(subject.path, subject.inputs, runs, warmup, threads, xnnpack, batch, subject.layers)
        profiler = (f"ai-edge-litert {metadata.version('ai-edge-litert')} CompiledModel profiler (C API), "
                    + ("XNNPACK operator timings" if xnnpack else "builtin kernels, one event per TFLite node"))
    else:
        import onnxruntime

        ops = onnxruntime_ops(subject.path, subject.inputs, runs, warmup, threads)
        profiler = f"onnxruntime {onnxruntime.__version__} SessionOptions.enable_profiling"
    total, layers = aggregate(ops, runs, subject.layers)
    return Profile(subject.model, subject.variant, runtime, str(subject.path), runs, batch, threads, total,
                   profiler, layers, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


def save(profile: Profile, out_dir: Path) -> Path:
    """Store the profile where the report finds it (results/profiles/), atomically."""
    from models.artifacts import atomic_write

    from .report_profiles import profile_path

    path = profile_path(out_dir, profile.model, profile.variant, profile.runtime)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, json.dumps(profile.to_json(), indent=1))
