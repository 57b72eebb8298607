"""Export every zoo model to every format and print one Markdown table (for release notes).

    python -m benchmarks.studies.survey [--tiny] [--models ...] [--cache-dir DIR]

Per model and format: exported or the reason, max abs error of the fp32 file against Keras, file
sizes, and the task metric of the int8 file next to fp32.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from models import registry
from models.cli import ArgumentParser, run
from models.subject import Subject
from models.training import train
from export.exporter import export
from export.quantize.ptq import QuantRecipe


def survey_model(name: str, tiny: bool, cache) -> list[str]:
    trained = train(registry.get(name), tiny=tiny, cache=cache)
    subject = Subject(name, trained.load(), trained.path, trained.spec, trained.config, trained.splits())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("tflite", "onnx"):
            cells = [name, fmt]
            t0 = time.perf_counter()
            try:
                fp32 = export(subject, QuantRecipe(fmt), Path(tmp) / f"m.{fmt}", enforce=False)
                int8 = export(subject, QuantRecipe(fmt, "int8"), Path(tmp) / f"q.{fmt}", enforce=False)
            except Exception as e:  # the reason is the result
                rows.append("| " + " | ".join(cells + [f"not exported: {str(e).splitlines()[0][:150]}"] + [""] * 6)
                            + " |")
                continue
            v, q = fp32.validation, int8.validation
            status = "ok" if not fp32.failed_check else "parity FAILED"
            notes = "; ".join(n.split(":")[0] for n in fp32.notes)
            cells += [status + (f" ({notes})" if notes else ""), f"{v.max_abs:.2e}", f"{fp32.size / 1024:.0f}",
                      f"{int8.size / 1024:.0f}", f"{q.metric_name} {q.metric_source:.4f}",
                      f"{q.metric_export:.4f}", f"{time.perf_counter() - t0:.0f}"]
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def main(argv=None):
    parser = ArgumentParser(prog="python -m benchmarks.studies.survey")
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    print("| model | format | fp32 export | max abs err | fp32 KiB | int8 KiB | metric fp32 (Keras) | int8 | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models or registry.names():
        for row in survey_model(name, args.tiny, args.cache_dir):
            print(row, flush=True)


if __name__ == "__main__":
    raise SystemExit(run(main))
