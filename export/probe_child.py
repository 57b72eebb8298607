"""The probe's child process: load one exported file with :mod:`export.runtime` and run it once on zeros.

Run as ``python -m export.probe_child`` by :func:`export.probe.probe`; never imports TensorFlow. Results go
to a private channel (the original stdout) as ``CT-PROBE {json}`` lines; the runtimes' own fd-1 prints are
moved to stderr so they cannot mix with them.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from export import runtime
from export.probe import MAX_PROBE_ELEMENTS, PREFIX, ProbeResult, precheck, runtime_name

_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
           "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
           "tensor(uint8)": "uint8", "tensor(bool)": "bool", "tensor(string)": "str"}


def describe_inputs(model) -> list[dict]:
    """The inputs of an :mod:`export.runtime` model: name, shape (None for a dimension of any size), dtype.

    ``batch_flexible``: the leading dimension may differ from the declared one (the runtime resizes the
    graph or runs it chunk by chunk), as it does for every TFLite model.
    """
    specs = []
    if hasattr(model, "session"):  # OnnxModel
        for arg in model.session.get_inputs():
            shape = [d if isinstance(d, int) and d >= 0 else None for d in (arg.shape or [])]
            specs.append({"name": arg.name, "shape": shape, "dtype": _DTYPES.get(arg.type, arg.type),
                          "batch_flexible": bool(shape) and shape[0] is None})
        return specs
    for name in model.input_names:  # TFLiteModel
        d = model._in[name]
        sig = d.get("shape_signature")
        dims = [int(v) for v in (sig if sig is not None and len(sig) == len(d["shape"]) else d["shape"])]
        shape = [v if v >= 0 else None for v in dims]
        specs.append({"name": name, "shape": shape, "dtype": np.dtype(d["dtype"]).name, "batch_flexible": True})
    return specs


def _zeros(spec: dict):
    shape = tuple(1 if d is None else int(d) for d in spec["shape"])
    if spec["dtype"] == "str":
        return np.full(shape, "", dtype=object)
    return np.zeros(shape, dtype=np.dtype(spec["dtype"]))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


BATCH_CHECK_SIZE = 3


def batch_problem(model) -> str | None:
    """None if ``model`` run on a batch of 3 gives what it gives one sample at a time.

    Some dynamic-batch graphs resize without error but compute garbage (shape arithmetic folded at
    batch 1), and some abort LiteRT outright, which is why this runs in the probe's child.
    """
    rng = np.random.default_rng(0)
    inputs = {}
    for spec in describe_inputs(model):
        shape = (BATCH_CHECK_SIZE,) + tuple(1 if d is None else int(d) for d in spec["shape"][1:])
        dtype = np.dtype(spec["dtype"])
        inputs[spec["name"]] = (rng.random(shape) if dtype.kind == "f" else np.zeros(shape)).astype(dtype)
    batched = model.predict(inputs)
    single = [model.predict({k: v[i:i + 1] for k, v in inputs.items()}) for i in range(BATCH_CHECK_SIZE)]
    batched = batched if isinstance(batched, list) else [batched]
    single = [s if isinstance(s, list) else [s] for s in single]
    for j, out in enumerate(batched):
        expected = np.concatenate([s[j] for s in single])
        if not np.all(np.isfinite(out)) or not np.allclose(out, expected, atol=1e-5):
            return (f"resized to a batch of {BATCH_CHECK_SIZE} it computes different results than one sample "
                    "at a time")
    return None


def probe_in_process(path: str, providers=None, batch_check: bool = False) -> ProbeResult:
    """Load ``path`` and run it once on zeros, here (``batch_check``: also :func:`batch_problem`).

    Use :func:`probe` unless you are the child.
    """
    name = runtime_name(path)
    result = ProbeResult(str(path), False, runtime=name)
    problem = precheck(path)
    if problem:
        result.error = problem
        return result
    try:
        kwargs = {"threads": 1}
        if providers and Path(path).suffix.lower() == ".onnx":
            kwargs["providers"] = list(providers)
        model = runtime.load(path, **kwargs)
        result.inputs = describe_inputs(model)
        elements = sum(int(np.prod([1 if d is None else d for d in s["shape"]], dtype=np.float64))
                       for s in result.inputs)
        if elements > MAX_PROBE_ELEMENTS:
            result.notes.append(f"inputs of {elements:.3g} elements: loaded but not run on zeros")
        else:
            feed = {s["name"]: _zeros(s) for s in result.inputs}
            out = model.predict(feed if len(feed) != 1 else next(iter(feed.values())))
            out = out if isinstance(out, list) else [out]
            result.outputs = [{"name": n, "shape": list(np.shape(v)), "dtype": np.asarray(v).dtype.name}
                              for n, v in zip(model.output_names, out)]
            if batch_check:
                result.error = batch_problem(model)
        result.ok = result.error is None
    except runtime.RuntimeModelError as e:
        result.error = _first_line(e)
    except MemoryError:
        result.error = f"{name} ran out of memory loading {path}"
    except RecursionError:
        result.error = f"{name} cannot load {path}: nested too deeply"
    except Exception as e:  # anything else the runtime or a malformed file throws: still one line
        result.error = f"{name} cannot load {path}: {type(e).__name__}: {_first_line(e)}"
    if result.error and str(path) not in result.error:  # e.g. "LiteRT failed: ..." from the run on zeros
        result.error = f"{path}: {result.error}"
    return result


def _limit_memory(path: str) -> None:
    """Cap the child's address space so a hostile file fails its allocation instead of exhausting the host.

    Skipped where GPU libraries are loaded (they reserve large virtual ranges).
    """
    try:
        import resource  # guarded: no such module off Unix
    except ImportError:
        return
    if os.environ.get("CT_PROBE_NO_MEMORY_LIMIT"):
        return
    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    limit = max(4 << 30, 8 * size + (2 << 30))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft > limit:
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        except (ValueError, OSError):
            pass


def _gpu_providers_present() -> bool:
    try:
        import onnxruntime as ort  # guarded: a library that fails to import is reported, not raised

        return any(p in ort.get_available_providers() for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))
    except Exception:
        return False


def child_main(argv: list[str]) -> int:
    """``python -m export.probe_child [PATH...]``: probe the arguments, else one JSON request (or path) per stdin line."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # native code printing to fd 1 must not mix with the results
    sys.stdout = sys.stderr
    limited = False

    def answer(request):
        nonlocal limited
        if not limited and not _gpu_providers_present():
            _limit_memory(request["path"])
            limited = True
        result = probe_in_process(request["path"], request.get("providers"), bool(request.get("batch_check")))
        channel.write(PREFIX + json.dumps(asdict(result)) + "\n")
        channel.flush()

    if argv:
        for path in argv:
            answer({"path": path})
        return 0
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        answer(json.loads(line) if line.startswith("{") else {"path": line})
    return 0


def main(argv=None) -> int:
    return child_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
