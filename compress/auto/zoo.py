"""``python -m compress.auto.zoo``: `compress auto` over the zoo, one table, and how it compares with the sweep.

Each model's search runs in its own process (``python -m compress auto``: its memory goes back at exit, and its
search log makes a rerun skip what was scored). The table gives, per model and runtime, the chosen recipe, its
size and latency ratios to fp32, its drop with the 95% interval, the layers kept in float and the search time.
With ``--sweep DIR`` (a `benchmarks run` results directory) each choice is set against the fastest fixed sweep
variant within the same budget at batch 1, 1 thread: speedups are compared, each measured against the fp32 of
its own run (ratios, not milliseconds from two runs), with TOLERANCE for the two runs' noise. Auto's choice is
"at least as good" when, inside the budget, it is at least as fast (keeps up) or at least as small as that
variant; both verdicts are in the table, per model x runtime and per model.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from models import registry
from models.artifacts import atomic_write, cache_dir, claim_output_dir, CACHE_ENV
from models.cli import run
from benchmarks.report.summary import Budget, choose, loss
from benchmarks.store import Store

ROOT = Path(__file__).resolve().parents[2]
SWEEP_RUNTIME = {"litert": "litert", "onnxruntime-cpu": "onnxruntime-cpu"}
TOLERANCE = 0.10  # auto "keeps up" with the sweep when its speedup is at least 90% of the sweep's best
SIZE_TOLERANCE = 0.01


@dataclass
class Line:
    model: str
    runtime: str
    recipe: str
    size_ratio: float | None
    speedup: float | None
    drop: str
    kept_float: list
    seconds: float
    reachable: bool
    sweep_variant: str | None = None
    sweep_speedup: float | None = None
    sweep_smaller: float | None = None  # fp32 size / the sweep's best variant's size
    sweep_drop: float | None = None

    @property
    def keeps_up(self) -> bool | None:
        """At least as fast as the sweep's best fixed variant, within the runs' noise."""
        if self.sweep_speedup is None or self.speedup is None:
            return None
        return self.speedup >= self.sweep_speedup * (1 - TOLERANCE)

    @property
    def as_good(self) -> bool | None:
        """Inside the budget and at least as fast or at least as small (sizes are exact: SIZE_TOLERANCE covers
        the metadata each file carries)."""
        if self.keeps_up is None:
            return None
        smaller = (self.size_ratio is not None and self.sweep_smaller is not None
                   and self.size_ratio >= self.sweep_smaller * (1 - SIZE_TOLERANCE))
        return self.reachable and (self.keeps_up or smaller)


def budget_args(metric_in_unit_range: bool, max_drop: float) -> list[str]:
    """The sweep report's 1-point rule: absolute on [0, 1] metrics, else relative to fp32."""
    return ["--max-drop", str(max_drop)] + ([] if metric_in_unit_range else ["--relative"])


def run_one(model: str, out: Path, max_drop: float, tiny: bool, time_budget: float | None) -> dict | None:
    """One model's search (resumed from its log); its auto.json, or None with the reason printed."""
    spec = registry.get(model)
    unit = spec.metric.higher_is_better and 0.0 <= spec.quality_bar <= 1.0  # the bar shows the metric's scale
    out = Path(out).resolve()  # the search runs in the project folder, not this one
    cmd = [sys.executable, "-m", "compress", "auto", model, *budget_args(unit, max_drop), "-o", str(out / model)]
    if tiny:
        cmd.append("--tiny")
    if time_budget:
        cmd += ["--time-budget", str(time_budget)]
    env = dict(os.environ)
    if env.get(CACHE_ENV):
        env[CACHE_ENV] = str(Path(env[CACHE_ENV]).resolve())
    else:
        env[CACHE_ENV] = str(cache_dir().resolve())  # ./.cache of this folder, as `compress auto` here would use
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        print(f"{model}: auto failed: {(res.stderr.strip().splitlines() or ['no output'])[-1]}", flush=True)
        return None
    found = json.loads((out / model / "auto.json").read_text())
    print(f"{model}: {found['search_seconds']:.0f} s", flush=True)
    return found


def lines_of(result: dict) -> list[Line]:
    by_key = {c["key"]: c for c in result["candidates"]}
    out = []
    for rt, choice in result["choices"].items():
        c = by_key.get(choice["chosen_key"])
        if c is None:
            out.append(Line(result["model"], rt, "(nothing built)", None, None, "", [], result["search_seconds"],
                            False))
            continue
        lo, hi = c.get("ci_low"), c.get("ci_high")
        drop = f"{c['drop']:+.4f}" + (f" [{lo:+.4f}, {hi:+.4f}]" if lo is not None and hi is not None else "")
        out.append(Line(result["model"], rt, " → ".join(c["chain"][1:]) or "fp32", choice["size_ratio"],
                        choice["latency_ratio"], drop, list((c.get("recipe") or {}).get("exclude") or []),
                        result["search_seconds"], choice["reachable"]))
    return out


def compare_with_sweep(lines: list[Line], sweep: Path, max_drop: float) -> None:
    """Fill each line's fastest fixed sweep variant within the same budget (batch 1, 1 thread)."""
    rows = [r for r in Store(sweep / "results.db", create=False).rows() if r["batch"] == 1 and r["threads"] == 1]
    best = {(c.model, c.runtime): c for c in choose(rows, Budget("auto", max_drop * 100))}
    for line in lines:
        c = best.get((line.model, SWEEP_RUNTIME.get(line.runtime)))
        if c is not None and c.best is not None:
            line.sweep_variant, line.sweep_speedup = c.best["variant"], c.speedup
            line.sweep_smaller = 1 / c.size_ratio if c.size_ratio else None
            if c.ref is not None and c.best.get("metric") is not None:
                line.sweep_drop = loss(c.ref, c.best["metric"], c.higher_is_better)


def table(lines: list[Line]) -> str:
    def ratio(v):
        return f"{v:.2f}×" if v else ""

    yes_no = {True: "yes", False: "no", None: ""}
    head = ["model", "runtime", "chosen recipe", "smaller", "faster", "drop [95% CI]", "kept float", "search s",
            "sweep's best fixed", "its smaller", "its speedup", "its drop", "auto keeps up", "auto as good"]
    body = []
    for x in lines:
        body.append([x.model, x.runtime, x.recipe + ("" if x.reachable else " (budget unreachable)"),
                     ratio(x.size_ratio), ratio(x.speedup), x.drop, ", ".join(x.kept_float) or "-",
                     f"{x.seconds:.0f}", x.sweep_variant or "", ratio(x.sweep_smaller), ratio(x.sweep_speedup),
                     f"{x.sweep_drop:+.4f}" if x.sweep_drop is not None else "", yes_no[x.keeps_up],
                     yes_no[x.as_good]])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(b) + " |" for b in body]
    compared = [x for x in lines if x.keeps_up is not None]
    if compared:
        fast, good = sum(x.keeps_up for x in compared), sum(x.as_good for x in compared)
        models = {x.model for x in compared}
        good_models = {m for m in models if all(x.as_good for x in compared if x.model == m)}
        rows += ["", f"auto's speedup is at least {1 - TOLERANCE:.0%} of the sweep's best fixed variant within the "
                     f"same budget on {fast} of {len(compared)} model×runtime pairs ({fast / len(compared):.0%})",
                 f"auto's choice is at least as good (inside the budget, at least as fast or as small) on {good} of "
                 f"{len(compared)} model×runtime pairs ({good / len(compared):.0%}) and on every runtime of "
                 f"{len(good_models)} of {len(models)} models ({len(good_models) / len(models):.0%})"]
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m compress.auto.zoo", description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=None, help="default: every zoo model")
    p.add_argument("--max-drop", type=float, default=0.01)
    p.add_argument("--sweep", default=None, help="a `benchmarks run` results directory to compare with")
    p.add_argument("--time-budget", type=float, default=None, help="minutes per model")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("-o", "--output", default="auto-zoo")
    args = p.parse_args(argv)
    out = Path(args.output)
    models = args.models or registry.names()
    for model in models:
        registry.get(model)  # "unknown model ...; valid: ..." before any folder is made
    # a folder per model (each that model's `compress auto` folder) and the table; never a folder of the user's
    claim_output_dir(out, ["auto-zoo.md", *models], "python -m compress.auto.zoo")
    lines = []
    for model in models:
        result = run_one(model, out, args.max_drop, args.tiny, args.time_budget)
        if result is not None:
            lines += lines_of(result)
        if args.sweep:
            compare_with_sweep(lines, Path(args.sweep), args.max_drop)
        text = table(lines)
        atomic_write(out / "auto-zoo.md", text)  # after each model: an interrupted run still leaves its table
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
