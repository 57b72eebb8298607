"""The benchmark report: report.md (for diffs in git), report.html (interactive) and results.json.

Answers first: the summary (best variant per model and runtime within the metric budget), the runtimes that
were not available here (once, with how to enable them), the warnings beyond noise per model; then the
per-layer profiles when `python -m benchmarks profile` stored some, and the detail tables.
"""
from __future__ import annotations

import json
from pathlib import Path

from models.artifacts import atomic_write_many

from benchmarks.report import profiles as report_profiles
from benchmarks.report import html as report_html
from benchmarks.report.cells import (BUDGET_NOTE, DETAIL_HEADER, detail_cells, models_of, provenance, reused_notes,
                                     selfcheck_line, summary_cells, summary_header)
from benchmarks.report.summary import (Choice, budgets, choose, detail_rows, distinct_models, host_name, many_hosts,  # noqa
                                       reference_metric, slower_quantized, slower_than_fp32, unavailable, verdict)


def _md_table(header: list[str], body: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(cells) + " |" for cells in body])


def markdown(rows: list[dict], profiles: dict | None = None, cache=None) -> str:
    rows = distinct_models(rows)
    lines = ["# Benchmark report", ""]
    lines += [f"{line}  " for line in provenance(rows)] + [""]
    for budget in budgets(rows):
        choices = choose(rows, budget)
        lines += [f"## Summary (budget: {budget.name})", "", BUDGET_NOTE, ""]
        for model in models_of(rows):
            mine = [c for c in choices if c.model == model]
            if mine:
                lines.append(f"- **{model}**: {verdict(mine)}")
        lines += [""] + _md_table(summary_header(rows), [summary_cells(c, many_hosts(rows)) for c in choices]) + [""]
    missing = unavailable(rows)
    if missing:
        lines += ["## Not available here", ""]
        lines += [f"- {m.runtime}: {m.reason}" + (f". To enable: {m.how}" if m.how else "")
                  + f" ({m.rows} row(s) not measured)" for m in missing] + [""]
    warnings = slower_than_fp32(rows, cache, profiles)
    if warnings:
        lines += ["## Warnings", ""]
        for model in dict.fromkeys(w.model for w in warnings):
            lines += [f"### {model}", ""] + [f"- WARNING: {w.text}" for w in warnings if w.model == model] + [""]
    check = selfcheck_line(rows)
    if check:
        lines += [check, ""]
    if profiles:
        lines += report_profiles.markdown(rows, profiles)
    lines += ["## Details", ""]
    for model in models_of(rows):
        mrows = [r for r in detail_rows(rows) if r["model"] == model]
        if not mrows:
            continue
        ref = reference_metric(rows, model)
        header = [h.format(metric=mrows[0]["metric_name"]) for h in DETAIL_HEADER]
        lines += [f"### {model}", ""] + _md_table(header, [detail_cells(r, ref) for r in mrows]) + [""]
        notes = reused_notes(mrows)
        if notes:
            lines += ["† metric not recomputed in this row: the same file's score on the same runtime (export "
                      "validation) or, with --quick, on another runtime whose outputs agree:", ""] + [f"- {text}" for text in notes] + [""]
    return "\n".join(lines)


def html(rows: list[dict], profiles: dict | None = None, cache=None) -> str:
    return report_html.page(distinct_models(rows), profiles or {}, cache)


def write(rows: list[dict], out_dir: Path, cache=None) -> list[Path]:
    """``cache``: where the sweep kept the variants (its --cache-dir), for the warnings' causes counted from them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = distinct_models(rows)
    profiles = report_profiles.load(out_dir)
    files = {out_dir / "report.md": markdown(rows, profiles, cache), out_dir / "report.html": html(rows, profiles, cache),
             out_dir / "results.json": json.dumps(rows, indent=1, default=str)}
    return atomic_write_many(files)  # the three agree: all of them are replaced, or none
