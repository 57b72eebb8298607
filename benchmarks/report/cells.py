"""Rows -> the table cells and notes both reports show (report.md and report.html read the same)."""
from __future__ import annotations

import statistics

from benchmarks.report.summary import Choice, host_name, many_hosts
from benchmarks.runner import SELFCHECK_MAX_MS

DETAIL_HEADER = ["variant", "runtime", "batch", "threads", "{metric}", "Δ vs fp32", "size KiB", "gzip KiB", "init ms",
                 "p50 ms", "p90 ms", "p99 ms", "runs", "items/s", "peak RSS MB", "status"]
SUMMARY_HEADER = ["model", "runtime", "fp32 variant", "fp32 metric", "fp32 p50 ms", "fp32 size KiB", "best variant",
                  "batch", "threads", "p50 ms", "speedup", "size ratio", "metric change", "note"]


def _fmt(value, spec=".3f"):
    return "" if value is None else format(value, spec)


def _kib(size):
    return "" if size is None else f"{size / 1024:.1f}"


def models_of(rows: list[dict]) -> list[str]:
    return sorted({r["model"] for r in rows})


def summary_header(rows: list[dict]) -> list[str]:
    return SUMMARY_HEADER[:2] + ["host"] + SUMMARY_HEADER[2:] if many_hosts(rows) else SUMMARY_HEADER


def summary_cells(c: Choice, with_host: bool = False) -> list[str]:
    """One summary table row as text cells (shared by the Markdown and the HTML table)."""
    b, best = c.baseline, c.best
    cells = [c.model, c.runtime] + ([host_name({"host": c.host})] if with_host else []) + [
             b["variant"] if b else "", _fmt(b["metric"], ".4f") if b else "",
             _fmt(b["p50_ms"]) if b else "", _kib(b.get("size")) if b else ""]
    if best is None:
        return cells + ["—", "", "", "", "", "", "", c.note]
    change = c.metric_change
    return cells + [best["variant"], str(best["batch"]), str(best["threads"]), _fmt(best["p50_ms"]),
                    f"{c.speedup:.2f}×", _fmt(c.size_ratio, ".2f"), "" if change is None else f"{change:+.4f}", c.note]


def detail_cells(r: dict, ref: float | None) -> list[str]:
    delta = "" if r["metric"] is None or ref is None else f"{r['metric'] - ref:+.4f}"
    metric = _fmt(r["metric"], ".4f") + (" †" if r.get("metric_from") else "")
    status = "ok" if r["status"] == "ok" else f"{r['status']}: {r['reason']}"
    return [r["variant"], r["runtime"], str(r["batch"]), str(r["threads"]), metric, delta, _kib(r["size"]),
            _kib(r["size_gzip"]), _fmt(r["init_ms"], ".1f"), _fmt(r["p50_ms"]), _fmt(r["p90_ms"]), _fmt(r["p99_ms"]),
            str(r["runs"] or ""), _fmt(r.get("throughput"), ".0f"), _fmt(r.get("peak_rss_mb"), ".0f"), status]


def reused_notes(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(f"{r['variant']} on {r['runtime']}: {r['metric_from']}" for r in rows
                              if r.get("metric_from")))


def provenance(rows: list[dict]) -> list[str]:
    """One line per host the rows come from, with git revision and versions."""
    seen = dict.fromkeys((r["host"], r["git_rev"], str(r["versions"])) for r in rows)
    return [f"Host: {host} · git {rev} · versions {versions}" for host, rev, versions in seen]


def selfcheck_line(rows: list[dict]) -> str | None:
    overheads = [r["overhead"] for r in rows if r.get("overhead") is not None]
    if not overheads:
        return None
    return (f"Harness self-check: timing each call adds a median {statistics.median(overheads):+.1%} "
            f"(max {max(overheads):+.1%}, {len(overheads)} checks on batch-1 calls of at most "
            f"{SELFCHECK_MAX_MS:g} ms) over a bare loop of the same calls.")


BUDGET_NOTE = ("Best variant: the largest speedup over the runtime's own fp32 at the same batch and threads whose "
               "metric is within the budget of Keras fp32 (1 point = 0.01 on a metric in [0, 1], else 1 % of the "
               "fp32 value; the metric's direction is respected). Speedups within measurement noise count as none.")
