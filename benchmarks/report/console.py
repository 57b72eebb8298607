"""What `benchmarks run` prints last, so that the console's last screen is the answer: the report's summary (per
model and runtime, the best variant within the budget with its speedup and metric change), each model's verdict,
and the warnings counted in one line (report.md lists them, each with its likely cause)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich import box
from rich.table import Table
from rich.text import Text

from benchmarks.report import profiles as report_profiles
from benchmarks.report.cells import models_of, summary_cells, summary_header
from benchmarks.report.summary import budgets, choose, many_hosts, slower_than_fp32, verdict

# the summary table's columns the console keeps (report.md has the fp32 side and the size as well); a choice's note
# is a line under the table, unless it only says that fp32 is the fastest (its row says so: speedup 1.00)
COLUMNS = ("model", "runtime", "host", "best variant", "batch", "threads", "p50 ms", "speedup", "metric change")
RIGHT = ("batch", "threads", "p50 ms", "speedup", "metric change")


def print_summary(out, rows: list[dict], out_dir: Path, cache=None) -> None:
    """On rich console ``out``: per budget, a heading, the summary table, its notes and one verdict line per model;
    then the warnings line. Lines are never wrapped (``soft_wrap``): a log keeps each on one line for grep."""
    header = summary_header(rows)
    keep = [h for h in header if h in COLUMNS]
    for budget in budgets(rows):
        choices = choose(rows, budget)
        out.print(Text(f"Summary (budget: {budget.name}): the best variant per model and runtime, its speedup over "
                       "that runtime's fp32 at the same batch and threads, its metric change vs Keras fp32"),
                  soft_wrap=True)
        if not choices:
            out.print(Text("no measured row to compare"), soft_wrap=True)
            continue
        table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False)
        for h in keep:
            table.add_column(h, justify="right" if h in RIGHT else "left", no_wrap=True)
        for c in choices:
            cells = dict(zip(header, summary_cells(c, many_hosts(rows))))
            table.add_row(*(Text(cells[h]) for h in keep))  # Text: a cell is never read as rich markup
        out.print(table)
        plain = f"no other variant within {budget.name} is faster"
        for c in choices:
            if c.note and c.note != plain:
                out.print(Text(f"{c.model} on {c.runtime}: {c.note}"), soft_wrap=True)
        for model in models_of(rows):
            mine = [c for c in choices if c.model == model]
            if mine:
                out.print(Text(f"{model}: {verdict(mine).replace('**', '')}"), soft_wrap=True)
    out.print(Text(warnings_line(rows, out_dir, cache)), soft_wrap=True)


def warnings_line(rows: list[dict], out_dir: Path, cache=None) -> str:
    """The warnings of OUT_DIR/report.md (quantized slower than fp32) in one line, counted by variant: the report
    lists each with its likely cause. ``cache``: the sweep's --cache-dir, as for the report."""
    warnings = slower_than_fp32(rows, cache, report_profiles.load(out_dir))
    if not warnings:
        return "no warnings: no quantized variant is slower than its fp32 beyond measurement noise"
    counts = ", ".join(f"{variant} {n}" for variant, n in sorted(Counter(w.variant for w in warnings).items()))
    return (f"{len(warnings)} warning(s) (a quantized variant slower than its fp32 at some batch and thread count: "
            f"{counts}): see {out_dir / 'report.md'}")
