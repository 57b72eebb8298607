"""The toolkit's files of a Keras 3 model against Keras 3's own ``model.export``.

    python -m benchmarks.studies.keras3_export MODEL.keras [MODEL.keras ...] [--data X.npz ...]

For each model: the toolkit's fp32 ONNX and TFLite files (``export onnx`` / ``export tflite``, written the way the
CLI writes them) and Keras 3's ``model.export(path, format="onnx")`` / ``format="litert"``, side by side: size (raw
and gzip), graph nodes, and batch-1 latency on 1 thread (ONNX Runtime, LiteRT), every file timed in each round,
rounds interleaved with the order rotating, best median kept (the machine is shared). Single-input models; ``--data``
gives the sample (else zeros). Make test models with ``python examples/user_models.py DIR --keras3-graphs``.
"""
from __future__ import annotations

import argparse
import gzip
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from models.backend import quiet_stderr
from models.engines.keras3 import keras3
from models.subject import resolve
from export.exporter import export
from export.quantize.ptq import QuantRecipe


def _say(text: str) -> None:
    print(text, flush=True)


def _files(model_path: Path, data: str | None, out: Path, sample: np.ndarray) -> dict[str, Path]:
    """{label: file}: the toolkit's and Keras 3's fp32 ONNX and TFLite files of one model."""
    subject = resolve(str(model_path), data=data)
    _say(subject.notes[0])
    files = {}
    for fmt in ("onnx", "tflite"):
        path = out / f"toolkit.{fmt}"
        result = export(subject, QuantRecipe(fmt, "fp32"), path)
        files[f"toolkit {fmt}"] = path
        _say(f"  toolkit {fmt}: parity max |Δ| {result.validation.max_abs:.2e}")
    k3 = keras3()
    with quiet_stderr():
        model = k3.saving.load_model(model_path)
        model(sample)  # Keras' ONNX export refuses a model never called
        model.export(str(out / "keras.onnx"), format="onnx", verbose=False)
        model.export(str(out / "keras.tflite"), format="litert", verbose=False)
    files["keras onnx"], files["keras tflite"] = out / "keras.onnx", out / "keras.tflite"
    return files


def _nodes(path: Path) -> str:
    if path.suffix == ".onnx":
        import onnx  # deferred: only this study reads ONNX graphs

        proto = onnx.load(str(path))
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), "?")
        return f"{len(proto.graph.node)} nodes, opset {opset}"
    from ai_edge_litert.interpreter import Interpreter  # deferred: LiteRT

    interp = Interpreter(model_path=str(path))
    ops = interp._get_ops_details()
    return f"{len(ops)} ops"


def _runner(path: Path, sample: np.ndarray):
    """A zero-argument call running ``path`` once on ``sample`` (batch 1, 1 thread)."""
    if path.suffix == ".onnx":
        import onnxruntime as ort  # deferred: ONNX Runtime

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feeds = {session.get_inputs()[0].name: sample}
        return lambda: session.run(None, feeds)
    from ai_edge_litert.interpreter import Interpreter  # deferred: LiteRT

    interp = Interpreter(model_path=str(path), num_threads=1)
    (detail,) = interp.get_input_details()
    interp.resize_tensor_input(detail["index"], list(sample.shape))
    interp.allocate_tensors()

    def run():
        interp.set_tensor(detail["index"], sample)
        interp.invoke()

    return run


def _latencies(files: dict[str, Path], sample: np.ndarray, rounds: int, runs: int) -> dict[str, float | str]:
    """{label: best median ms, or why the file does not run}."""
    runners, failed = {}, {}
    for label, path in files.items():
        try:
            runners[label] = _runner(path, sample)
            runners[label]()
        except Exception as e:  # a file its runtime refuses: said in the table, the others are still timed
            failed[label] = "does not run: " + (str(e).strip().splitlines() or [type(e).__name__])[0][-160:]
            runners.pop(label, None)
    medians: dict[str, list[float]] = {label: [] for label in runners}
    labels = list(runners)
    # interleaved, best of the medians (the machine is shared); the order rotates each round: the file timed first
    # in a round read ~10% slower, whichever file it was
    for r in range(rounds if labels else 0):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            run = runners[label]
            for _ in range(max(5, runs // 10)):
                run()
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            medians[label].append(statistics.median(times) * 1000.0)
    return {**{label: min(values) for label, values in medians.items()}, **failed}


def compare(model_path: Path, data: str | None, rounds: int, runs: int) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="ct-k3-export-") as tmp:
        signature = keras3().saving.load_model(model_path).inputs[0]
        shape = (1,) + tuple(signature.shape[1:])
        sample = np.load(data)["x"][:1].astype("float32") if data else np.zeros(shape, "float32")
        files = _files(model_path, data, Path(tmp), sample)
        latency = _latencies(files, sample, rounds, runs)
        lines = [f"{model_path.name} (batch 1, 1 thread, best median of {rounds} interleaved rounds x {runs} runs)"]
        for label, path in files.items():
            raw = path.read_bytes()
            timing = f"{latency[label]:8.4f} ms" if isinstance(latency[label], float) else latency[label]
            lines.append(f"  {label:14s} {len(raw) / 1024:9.1f} KiB  gzip {len(gzip.compress(raw)) / 1024:9.1f} KiB  "
                         f"{_nodes(path):22s}  {timing}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.studies.keras3_export",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--data", nargs="*", default=None, help="an .npz with x per model, in the same order")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args(argv)
    data = args.data or [None] * len(args.models)
    for model_path, model_data in zip(args.models, data):
        for line in compare(model_path, model_data, args.rounds, args.runs):
            _say(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
