"""Measure the compression floors on the full (not tiny) zoo models: ``python -m benchmarks.studies.floors``.

1. ``cnn`` pruned to 50% sparsity (fine-tuned) loses at most 1 point of accuracy.
2. ``cnn`` at 80% sparsity + int8 TFLite + gzip is at least 10x smaller than the fp32 TFLite file.
3. int8 PTQ (TFLite, full integer) keeps >= 99% of the fp32 metric on every trained classifier; where it
   does not, the layer whose exclusion recovers it is named.
4. channel pruning of ``cnn`` (50% of the filters) is at least 1.5x faster at batch 1 on LiteRT.

Trained models come from the artifact cache (trained on demand). Not part of the test suite: it trains and
fine-tunes full models and times them.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from models import registry
from models.artifacts import sizes_of
from models.subject import Subject
from models.training import train
from models.training import evaluate
from compress.techniques.channels import channel_prune
from compress.techniques.finetune import for_spec
from compress.techniques.pruning import prune
from export.exporter import export
from export.quantize.ptq import QuantRecipe

from benchmarks.measure import fp32_tflite, litert_latency_ms

CLASSIFIER_METRICS = ("accuracy", "token_accuracy", "node_accuracy", "roc_auc", "pr_auc")


def _say(text: str) -> None:
    print(text, flush=True)


def _trained(name: str, cache=None):
    spec = registry.get(name)
    trained = train(spec, cache=cache)
    return spec, trained, trained.load(), trained.splits()


def _score(spec, trained, model, splits) -> float:
    return evaluate(spec, model, splits, trained.config)


def prune_floor(cache=None) -> dict:
    spec, trained, model, splits = _trained("cnn", cache)
    before = _score(spec, trained, model, splits)
    plan = for_spec(spec, trained.config, splits, epochs=2, lr=1e-4)
    pruned, outcome = prune(model, plan, sparsity=0.5, schedule="polynomial")
    after = _score(spec, trained, pruned, splits)
    loss_points = (before - after) * 100
    return {"floor": "cnn pruned to 50% loses <= 1 point", "before": before, "after": after,
            "sparsity": outcome.details["achieved_sparsity"], "loss_points": loss_points, "ok": loss_points <= 1.0}


def size_floor(cache=None) -> dict:
    spec, trained, model, splits = _trained("cnn", cache)
    plan = for_spec(spec, trained.config, splits, epochs=3, lr=1e-4)
    pruned, outcome = prune(model, plan, sparsity=0.8, schedule="polynomial")
    fp32_raw, _ = sizes_of(fp32_tflite(model))
    with tempfile.TemporaryDirectory() as tmp:
        subject = Subject("cnn", pruned, trained.path, spec, trained.config, splits, trained.seed)
        result = export(subject, QuantRecipe("tflite", "int8"), Path(tmp) / "cnn-p80-int8.tflite")
        data = (Path(tmp) / "cnn-p80-int8.tflite").read_bytes() if result.written else b""
    int8_raw, int8_gz = sizes_of(data) if data else (0, 0)
    ratio = fp32_raw / int8_gz if int8_gz else 0.0
    return {"floor": "cnn 80% sparse + int8 + gzip >= 10x smaller than fp32 TFLite", "fp32_tflite": fp32_raw,
            "int8_tflite": int8_raw, "int8_gzip": int8_gz, "ratio": ratio,
            "sparsity": outcome.details["achieved_sparsity"],
            "metric_fp32": _score(spec, trained, model, splits),
            "metric_int8": result.validation.metric_export if result.validation else None, "ok": ratio >= 10.0}


def classifiers() -> list[str]:
    return [s.name for s in registry.specs()
            if s.trainable and s.metric.higher_is_better and s.metric.name in CLASSIFIER_METRICS]


def _int8(subject, exclude=()):
    with tempfile.TemporaryDirectory() as tmp:
        result = export(subject, QuantRecipe("tflite", "int8", exclude=tuple(exclude)), Path(tmp) / "m.tflite")
    return result.validation


def _culprit(subject, fp32: float) -> str:
    """The weighted layer whose exclusion from int8 recovers the most of the metric."""
    best = (None, -np.inf)
    for layer in subject.model.layers:
        if not layer.weights:
            continue
        try:
            v = _int8(subject, (layer.name,))
        except Exception:  # a layer with no op of its own in the graph (folded): not a candidate
            continue
        if v.metric_export > best[1]:
            best = (layer.name, v.metric_export)
    if best[0] is None:
        return "no single layer's exclusion recovers it"
    return f"{best[0]} (keeping it in float gives {best[1]:.4f}, {best[1] / fp32:.2%} of fp32)"


def int8_floor(names=None, cache=None) -> list[dict]:
    rows = []
    for name in names or classifiers():
        spec, trained, model, splits = _trained(name, cache)
        subject = Subject(name, model, trained.path, spec, trained.config, splits, trained.seed)
        start = time.perf_counter()
        try:
            v = _int8(subject)
        except Exception as e:  # a conversion the converter cannot do is a named result, not a crash
            rows.append({"model": name, "metric": spec.metric.name, "ok": False,
                         "error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"})
            continue
        kept = v.metric_export / v.metric_source if v.metric_source else 0.0
        row = {"model": name, "metric": spec.metric.name, "fp32": v.metric_source, "int8": v.metric_export,
               "kept": kept, "ok": kept >= 0.99, "seconds": round(time.perf_counter() - start, 1)}
        if not row["ok"]:
            row["culprit"] = _culprit(subject, v.metric_source)
        rows.append(row)
        _say(_int8_line(row))
    return rows


def _int8_line(row: dict) -> str:
    if "error" in row:
        return f"  {row['model']:20s} int8 conversion failed: {row['error']}"
    text = (f"  {row['model']:20s} {row['metric']:15s} fp32 {row['fp32']:.4f} -> int8 {row['int8']:.4f} "
            f"({row['kept']:.2%} kept) {'ok' if row['ok'] else 'BELOW 99%'}")
    if row.get("culprit"):
        text += f"; breaks at {row['culprit']}"
    return text


def speed_floor(cache=None, repeats: int = 5) -> dict:
    spec, trained, model, splits = _trained("cnn", cache)
    plan = for_spec(spec, trained.config, splits, epochs=3, lr=1e-3)
    smaller, outcome = channel_prune(model, plan, ratio=0.5)
    base_data, small_data = fp32_tflite(model), fp32_tflite(smaller)
    sample = splits.test.head(1).x
    base, small = [], []
    for _ in range(repeats):  # interleaved, best of the medians: the machine is shared
        base.append(litert_latency_ms(base_data, sample, runs=300))
        small.append(litert_latency_ms(small_data, sample, runs=300))
    speedup = min(base) / min(small)
    return {"floor": "cnn channel-pruned (50% of filters) >= 1.5x faster, batch 1, LiteRT", "base_ms": min(base),
            "pruned_ms": min(small), "speedup": speedup, "widths": outcome.details["widths"],
            "params": outcome.details["params"], "before": _score(spec, trained, model, splits),
            "after": _score(spec, trained, smaller, splits), "ok": speedup >= 1.5}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.studies.floors", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=("prune", "size", "int8", "speed"), default=None)
    parser.add_argument("--models", nargs="*", default=None, help="int8 floor: these classifiers only")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    only = set(args.only or ("prune", "size", "int8", "speed"))
    ok = True
    if "prune" in only:
        r = prune_floor(args.cache_dir)
        ok &= r["ok"]
        _say(f"[{'PASS' if r['ok'] else 'FAIL'}] {r['floor']}: accuracy {r['before']:.4f} -> {r['after']:.4f} "
             f"({r['loss_points']:+.2f} points lost) at {r['sparsity']:.1%} sparsity")
    if "size" in only:
        r = size_floor(args.cache_dir)
        ok &= r["ok"]
        _say(f"[{'PASS' if r['ok'] else 'FAIL'}] {r['floor']}: fp32 TFLite {r['fp32_tflite'] / 1024:.1f} KiB; "
             f"80%-sparse int8 TFLite {r['int8_tflite'] / 1024:.1f} KiB, gzip {r['int8_gzip'] / 1024:.1f} KiB -> "
             f"{r['ratio']:.1f}x smaller (sparsity {r['sparsity']:.1%}; accuracy fp32 {r['metric_fp32']:.4f}, "
             f"pruned int8 {r['metric_int8']:.4f})")
    if "int8" in only:
        _say("int8 PTQ (TFLite full integer) on every trained classifier:")
        rows = int8_floor(args.models, args.cache_dir)
        below = [r for r in rows if not r["ok"]]
        named = [r for r in below if r.get("culprit") and not r["culprit"].startswith("no single")]
        passed = len(named) == len(below)
        ok &= passed
        text = f"int8 PTQ keeps >= 99% of the fp32 metric on {len(rows) - len(below)}/{len(rows)} classifiers"
        if below:
            text += "; below, with the layer that breaks it: " + "; ".join(
                f"{r['model']} at {r.get('culprit') or r.get('error')}" for r in below)
        _say(f"[{'PASS' if passed else 'FAIL'}] {text}")
    if "speed" in only:
        r = speed_floor(args.cache_dir)
        ok &= r["ok"]
        _say(f"[{'PASS' if r['ok'] else 'FAIL'}] {r['floor']}: {r['base_ms']:.3f} ms -> {r['pruned_ms']:.3f} ms = "
             f"{r['speedup']:.2f}x (params {r['params']}; accuracy {r['before']:.4f} -> {r['after']:.4f}; widths "
             + ", ".join(f"{k} {v}" for k, v in r["widths"].items()) + ")")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
