"""Per-layer profiles in the report: fp32 and the best int8 variant side by side, per model and runtime (LiteRT
and ONNX Runtime alike), with the layers int8 did not speed up named under each table.

Profiles are the JSON files `python -m benchmarks profile` stores in ``<results>/profiles/``; `benchmarks run`
never needs them, and a report without any has no profile section.
"""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks.profiling.layers import PROFILE_DIR
from benchmarks.report.summary import baseline_variant, choose

TOP = 8


def load(out_dir: Path) -> dict[tuple, dict]:
    """(model, variant, runtime) -> profile, for every readable profile file (a broken one is skipped: the
    report is not the place to fail over a diagnostic)."""
    out = {}
    for path in sorted((Path(out_dir) / PROFILE_DIR).glob("*.json")):
        try:
            p = json.loads(path.read_text())
            out[(p["model"], p["variant"], p["runtime"])] = p
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def pairs(rows: list[dict], profiles: dict) -> list[tuple[dict, dict | None]]:
    """(fp32 profile, int8 profile or None) per model and runtime: the int8 side is the summary's best variant
    when it is int8 and profiled, else any profiled int8 variant."""
    best = {(c.model, c.runtime): c.best["variant"] for c in choose(rows) if c.best is not None}
    out = []
    for (model, variant, runtime), fp32 in sorted(profiles.items()):
        if variant != baseline_variant(runtime):
            continue
        int8 = [p for (m, v, r), p in sorted(profiles.items()) if (m, r) == (model, runtime) and "int8" in v]
        chosen = next((p for p in int8 if p["variant"] == best.get((model, runtime))), int8[0] if int8 else None)
        out.append((fp32, chosen))
    return out


def side_by_side(fp32: dict, int8: dict | None) -> list[list[str]]:
    """The slowest layers of fp32 (and of int8), with both timings and shares, and int8's speedup per layer."""
    a = {x["layer"]: x for x in fp32["layers"]}
    b = {x["layer"]: x for x in int8["layers"]} if int8 else {}
    names = list(dict.fromkeys([x["layer"] for x in fp32["layers"][:TOP]]
                               + [x["layer"] for x in (int8["layers"][:TOP // 2] if int8 else [])]))
    body = []
    for name in names:
        x, y = a.get(name), b.get(name)
        cells = [name, f"{x['ms']:.3f}" if x else "", f"{x['share']:.0%}" if x else ""]
        if int8:
            speedup = x["ms"] / y["ms"] if x and y and y["ms"] > 0 else None
            cells += [f"{y['ms']:.3f}" if y else "", f"{y['share']:.0%}" if y else "",
                      "" if speedup is None else f"{speedup:.2f}×" + (" (not faster)" if speedup <= 1.0 else "")]
        body.append(cells)
    return body


def not_faster(fp32: dict, int8: dict | None) -> list[str]:
    """Layers int8 did not speed up (its time at least fp32's), slowest in int8 first."""
    if not int8:
        return []
    a = {x["layer"]: x["ms"] for x in fp32["layers"]}
    return [f"{y['layer']} ({a[y['layer']]:.3f} → {y['ms']:.3f} ms)" for y in int8["layers"]
            if y["layer"] in a and y["ms"] > 0 and y["ms"] >= a[y["layer"]]]


def footnote(fp32: dict, int8: dict | None) -> str:
    slow = not_faster(fp32, int8)
    if not int8:
        return ""
    return (f"{int8['variant']} did not speed up: " + ", ".join(slow[:5]) if slow
            else f"{int8['variant']} is faster than {fp32['variant']} in every layer both profiles have")


def header(fp32: dict, int8: dict | None) -> list[str]:
    cols = ["layer", f"{fp32['variant']} ms", "share"]
    return cols + ([f"{int8['variant']} ms", "share", "int8 speedup"] if int8 else [])


def caption(fp32: dict, int8: dict | None) -> str:
    text = (f"{fp32['model']} on {fp32['runtime']}: {fp32['variant']} {fp32['total_ms']:.3f} ms per run in its ops "
            f"({fp32['runs']} runs, {fp32['profiler']})")
    if int8:
        text += f"; {int8['variant']} {int8['total_ms']:.3f} ms"
    else:
        text += "; no int8 profile stored (run `python -m benchmarks profile MODEL --variant ...-int8`)"
    return text


def markdown(rows: list[dict], profiles: dict) -> list[str]:
    lines = ["## Per-layer profiles", ""]
    for fp32, int8 in pairs(rows, profiles):
        lines += [f"{caption(fp32, int8)}", "", "| " + " | ".join(header(fp32, int8)) + " |",
                  "|" + "---|" * len(header(fp32, int8))]
        lines += ["| " + " | ".join(cells) + " |" for cells in side_by_side(fp32, int8)] + [""]
        if footnote(fp32, int8):
            lines += [footnote(fp32, int8), ""]
    return lines
