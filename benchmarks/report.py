"""Markdown (and JSON) report from the results store: per model, variants x runtimes side by side."""
from __future__ import annotations

import json
from pathlib import Path

from models.artifacts import atomic_write_many

from .runner import SELFCHECK_MAX_MS

FP32 = {"keras": "fp32", "litert": "tflite-fp32", "onnxruntime-cpu": "onnx-fp32"}


def _fmt(value, spec=".3f"):
    return "" if value is None else format(value, spec)


def reference_metric(rows: list[dict], model: str) -> float | None:
    for r in rows:
        if r["model"] == model and r["variant"] == "fp32" and r["status"] == "ok":
            return r["metric"]
    return None


NOISE = 1.10  # a quantized variant must be >10% slower at p50 before it is flagged


def slower_quantized(rows: list[dict]) -> list[str]:
    """Quantized variants slower than fp32 on the same runtime (a known trap, e.g. ONNX Runtime int8 on some CPUs)."""
    warnings = []
    ok = [r for r in rows if r["status"] == "ok"]
    for r in ok:
        base_name = FP32.get(r["runtime"])
        if r["variant"] == base_name or not any(q in r["variant"] for q in ("int8", "dynamic", "float16")):
            continue
        for b in ok:
            if (b["model"], b["runtime"], b["variant"], b["batch"], b["threads"]) == (
                    r["model"], r["runtime"], base_name, r["batch"], r["threads"]) and r["p50_ms"] > NOISE * b["p50_ms"]:
                warnings.append(f"{r['model']}: {r['variant']} is slower than {base_name} on {r['runtime']} "
                                f"(p50 {r['p50_ms']:.3f} ms vs {b['p50_ms']:.3f} ms, batch {r['batch']})")
    return warnings


def markdown(rows: list[dict]) -> str:
    lines = ["# Benchmark report", ""]
    if rows:
        lines += [f"Host: {rows[0]['host']}  ", f"Git revision: {rows[0]['git_rev']}  ",
                  f"Versions: {rows[0]['versions']}", ""]
    warnings = slower_quantized(rows)
    if warnings:
        lines += ["## Warnings", ""] + [f"- WARNING: {w}" for w in warnings] + [""]
    overheads = [r["overhead"] for r in rows if r.get("overhead") is not None]
    if overheads:
        import statistics

        lines += [f"Harness self-check: timing each call adds a median {statistics.median(overheads):+.1%} "
                  f"(max {max(overheads):+.1%}, {len(overheads)} checks on batch-1 calls of at most "
                  f"{SELFCHECK_MAX_MS:g} ms) "
                  "over a bare loop of the same calls.", ""]
    for model in sorted({r["model"] for r in rows}):
        mrows = [r for r in rows if r["model"] == model]
        ref = reference_metric(rows, model)
        metric_name = mrows[0]["metric_name"]
        lines += [f"## {model}", "",
                  f"| variant | runtime | batch | threads | {metric_name} | Δ vs fp32 | size KiB | gzip KiB | init ms "
                  "| p50 ms | p90 ms | p99 ms | runs | items/s | peak RSS MB | status |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        reused = []
        for r in mrows:
            delta = "" if r["metric"] is None or ref is None else f"{r['metric'] - ref:+.4f}"
            metric = _fmt(r["metric"], ".4f")
            if r.get("metric_from"):
                reused.append(f"{r['variant']} on {r['runtime']}: {r['metric_from']}")
                metric += " †"
            status = "ok" if r["status"] == "ok" else f"{r['status']}: {r['reason']}"
            size = "" if r["size"] is None else f"{r['size'] / 1024:.1f}"
            gz = "" if r["size_gzip"] is None else f"{r['size_gzip'] / 1024:.1f}"
            lines.append(f"| {r['variant']} | {r['runtime']} | {r['batch']} | {r['threads']} | {metric} "
                         f"| {delta} | {size} | {gz} | {_fmt(r['init_ms'], '.1f')} | {_fmt(r['p50_ms'])} "
                         f"| {_fmt(r['p90_ms'])} | {_fmt(r['p99_ms'])} | {r['runs'] or ''} | {_fmt(r.get('throughput'), '.0f')} "
                         f"| {_fmt(r.get('peak_rss_mb'), '.0f')} | {status} |")
        lines.append("")
        if reused:
            lines += ["† metric reused from another runtime running the same file (--quick), because their outputs "
                      "agree:", ""] + [f"- {text}" for text in dict.fromkeys(reused)] + [""]
    return "\n".join(lines)


def html(rows: list[dict]) -> str:
    """A self-contained page: the Markdown tables as HTML plus the plots inlined as base64 PNG."""
    import base64
    import html as h

    from . import plots

    parts = ["<!doctype html><meta charset='utf-8'><title>Benchmark report</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:2px 6px}.warn{color:#a60}</style>", "<h1>Benchmark report</h1>"]
    if rows:
        parts.append(f"<p>Host: {h.escape(rows[0]['host'] or '')}<br>Git revision: {h.escape(rows[0]['git_rev'] or '')}"
                     f"<br>Versions: {h.escape(str(rows[0]['versions']))}</p>")
    for w in slower_quantized(rows):
        parts.append(f"<p class='warn'>WARNING: {h.escape(w)}</p>")
    for model in sorted({r["model"] for r in rows}):
        mrows = [r for r in rows if r["model"] == model]
        parts.append(f"<h2>{h.escape(model)}</h2>")
        md = markdown(mrows).splitlines()
        table_md = [line for line in md if line.startswith("|")]
        notes = [line.lstrip("- ") for line in md[md.index(table_md[-1]) + 1:] if line.strip()]
        parts.append("<table>")
        for i, line in enumerate(table_md):
            if i == 1:
                continue
            cells = [c.strip() for c in line.strip("|").split("|")]
            tag = "th" if i == 0 else "td"
            parts.append("<tr>" + "".join(f"<{tag}>{h.escape(c)}</{tag}>" for c in cells) + "</tr>")
        parts.append("</table>")
        if notes:
            parts.append("<p>" + "<br>".join(h.escape(n) for n in notes) + "</p>")
        batch1 = [r for r in mrows if r["batch"] == 1]
        threads = max((r["threads"] for r in batch1), default=1)
        batch1 = [r for r in batch1 if r["threads"] == threads]
        for png in (plots.pareto_scatter(model, batch1), plots.runtime_bars(model, batch1)):
            parts.append(f"<p><img alt='{h.escape(model)} plot' src='data:image/png;base64,"
                         f"{base64.b64encode(png).decode()}'></p>")
    return "\n".join(parts)


def write(rows: list[dict], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {out_dir / "report.md": markdown(rows), out_dir / "report.html": html(rows),
             out_dir / "results.json": json.dumps(rows, indent=1, default=str)}
    return atomic_write_many(files)  # the three agree: all of them are replaced, or none
