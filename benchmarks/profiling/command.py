"""Per-layer profile of one variant: the runtime's own op profiler, each op mapped back to its Keras layer.

ONNX Runtime: ``SessionOptions.enable_profiling`` writes a Chrome-trace JSON with one ``Node`` event per
kernel run; the node names tf2onnx writes keep the Keras layer path ("sequential/conv2d/Conv2D"), so the
layer is the last path component that names a layer of the Keras model.

LiteRT: the CompiledModel's profiler through libLiteRt.so's C API (benchmarks/profiling/litert.py): XNNPACK's
operator timings for ``litert``, one event per TFLite node with builtin kernels for ``litert-noxnnpack``; each
op mapped to its TFLite node and from the node's tensor names to the Keras layer.

An op's per-run time is a 10% trimmed mean over the runs: robust to a preempted run on a shared CPU like a
median, but not stuck at 0 or 1 for ops that LiteRT times in whole microseconds.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from models import registry
from models.artifacts import atomic_write, cache_dir, claim_output_dir, claim_output_file, safe_name
from export.probe import probe
from models.errors import CheckFailed, UserError
from export.runtime import load

from benchmarks import variants
from benchmarks.build import build_all
from benchmarks.profiling.layers import PROFILE_DIR, Profile, aggregate, keras_layer_names, profile_path
from benchmarks.profiling.litert import litert_ops
from benchmarks.runner import batch_of
from benchmarks.sweep import SweepConfig
from benchmarks.units import build_request, make_unit

PROFILE_RUNTIMES = {"tflite": ["litert", "litert-noxnnpack"], "onnx": ["onnxruntime-cpu"]}
def onnxruntime_ops(path: Path, feed_inputs, runs: int, warmup: int, threads: int) -> list[tuple[str, str, float]]:
    """Run ``path`` with ONNX Runtime's profiler on; the kernel events of the timed runs (warm-up dropped)."""
    import onnxruntime as ort  # deferred: ONNX Runtime

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
    if variant is not None:
        safe_name(variant, "--variant")  # it names the profile's file
    if p.suffix.lower() in (".onnx", ".tflite"):
        if not p.is_file():
            raise UserError(f"no such file: {p}")
        # a file the toolkit did not write: loaded and run in a child first (a crash or a hang there is an error
        # line, not this process killed or stuck)
        probed = probe([p])[0]
        if not probed.ok:
            raise UserError(probed.error)
        return Subject(p.stem, variant or p.suffix.lstrip("."), p,
                       synthetic_inputs(p, batch) if p.suffix.lower() == ".onnx" else None, None)
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
        xnnpack = runtime == "litert"
        ops = litert_ops(subject.path, subject.inputs, runs, warmup, threads, xnnpack, batch, subject.layers)
        profiler = (f"ai-edge-litert {metadata.version('ai-edge-litert')} CompiledModel profiler (C API), "
                    + ("XNNPACK operator timings" if xnnpack else "builtin kernels, one event per TFLite node"))
    else:
        import onnxruntime  # deferred: ONNX Runtime

        ops = onnxruntime_ops(subject.path, subject.inputs, runs, warmup, threads)
        profiler = f"onnxruntime {onnxruntime.__version__} SessionOptions.enable_profiling"
    total, layers = aggregate(ops, runs, subject.layers)
    return Profile(subject.model, subject.variant, runtime, str(subject.path), runs, batch, threads, total,
                   profiler, layers, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


def claim_results(out_dir: Path, take: bool = True) -> None:
    """``out_dir`` is a results folder (`benchmarks run`'s): new, empty or an earlier run's, never the user's."""
    claim_output_dir(out_dir, [PROFILE_DIR], "benchmarks run", take=take)


def save(profile: Profile, out_dir: Path) -> Path:
    """Store the profile where the report finds it (results/profiles/), atomically."""
    path = profile_path(out_dir, profile.model, profile.variant, profile.runtime)
    claim_results(out_dir)
    claim = claim_output_file(path, [profile.path], create=True)  # a file of the user's there is never replaced
    atomic_write(path, json.dumps(profile.to_json(), indent=1))
    claim.record()
    return path
