"""Plotly figures for report.html: Pareto front of latency vs metric, speedup per runtime, hosts side by side.

Each trace carries its runtime, batch and threads in ``meta``; the page's selects show or hide traces by them
(benchmarks/report/html.py), so one figure covers every batch/threads combination without redrawing.
"""
from __future__ import annotations

from benchmarks.report.summary import baseline_variant, host_name, many_hosts, ok_rows

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def pareto(points: list[dict], higher_is_better: bool) -> set[int]:
    """Indices of points not dominated in (latency lower, metric better, size smaller)."""
    def better_or_equal(a, b):
        m_ok = a["metric"] >= b["metric"] if higher_is_better else a["metric"] <= b["metric"]
        return a["p50_ms"] <= b["p50_ms"] and m_ok and a["size"] <= b["size"]

    def strictly(a, b):
        return better_or_equal(a, b) and (a["p50_ms"], a["metric"], a["size"]) != (b["p50_ms"], b["metric"], b["size"])

    return {i for i, p in enumerate(points) if not any(strictly(q, p) for j, q in enumerate(points) if j != i)}


def front_2d(points: list[dict], higher_is_better: bool) -> list[dict]:
    """The latency/metric front (no point both faster and better), sorted by latency: the line a reader follows."""
    sign = 1 if higher_is_better else -1
    front, best = [], float("-inf")
    for p in sorted(points, key=lambda p: (p["p50_ms"], -sign * p["metric"])):
        if sign * p["metric"] > best:
            front.append(p)
            best = sign * p["metric"]
    return front


def _hover(r: dict) -> str:
    size = "" if r.get("size") is None else f"<br>size {r['size'] / 1024:.1f} KiB"
    return (f"<b>{r['variant']}</b> on {r['runtime']}<br>batch {r['batch']}, {r['threads']} threads"
            f"<br>p50 {r['p50_ms']:.3f} ms<br>{r['metric_name']} "
            + ("not scored" if r["metric"] is None else f"{r['metric']:.4f}") + size)


def _series(r: dict, multi: bool) -> str:
    """A trace's name: the runtime, and the machine when the rows come from several."""
    return f"{r['runtime']} @ {host_name(r)}" if multi else r["runtime"]


def _colors(rows, multi: bool):
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted({_series(r, multi) for r in rows}))}


def combos(rows: list[dict]) -> list[tuple[int, int]]:
    """The (batch, threads) pairs measured, batch 1 with the most threads first (the default view)."""
    pairs = {(r["batch"], r["threads"]) for r in ok_rows(rows)}
    return sorted(pairs, key=lambda bt: (bt[0], -bt[1]))


def pareto_figure(model: str, rows: list[dict]):
    """Latency vs metric, one trace per runtime/batch/threads; marker area ~ file size; the front is a line with
    labels (only there, so they stay readable), the rest is on hover."""
    import plotly.graph_objects as go  # deferred: plotly

    points = [r for r in ok_rows(rows) if r["metric"] is not None]
    fig = go.Figure()
    if not points:
        return None
    hib, multi = bool(points[0]["higher_is_better"]), many_hosts(points)
    colors, default = _colors(points, multi), combos(points)[0]
    largest = max((p["size"] or 1) for p in points)
    keys = sorted({(p["runtime"], _series(p, multi), p["batch"], p["threads"]) for p in points})
    for (runtime, series, batch, threads) in keys:
        ps = [p for p in points if (p["runtime"], _series(p, multi), p["batch"], p["threads"]) == (runtime, series,
                                                                                                  batch, threads)]
        fig.add_trace(go.Scatter(
            x=[p["p50_ms"] for p in ps], y=[p["metric"] for p in ps], mode="markers", name=series,
            legendgroup=series, visible=(batch, threads) == default,
            marker=dict(size=[8 + 22 * ((p["size"] or 1) / largest) ** 0.5 for p in ps], color=colors[series],
                        opacity=0.75, line=dict(width=1, color="white")),
            hovertext=[_hover(p) for p in ps], hoverinfo="text",
            meta={"runtime": runtime, "batch": batch, "threads": threads}))
    for (batch, threads) in combos(points):  # across machines too: the front says what is reachable at all
        front = front_2d([p for p in points if (p["batch"], p["threads"]) == (batch, threads)], hib)
        fig.add_trace(go.Scatter(
            x=[p["p50_ms"] for p in front], y=[p["metric"] for p in front], mode="lines+markers+text",
            name="Pareto front", line=dict(color="#444", dash="dot", width=1), marker=dict(size=4, color="#444"),
            text=[f"{p['variant']} ({_series(p, multi)})" for p in front], textposition="top right",
            textfont=dict(size=10), hovertext=[_hover(p) for p in front], hoverinfo="text",
            visible=(batch, threads) == default, showlegend=True,
            meta={"runtime": "*", "batch": batch, "threads": threads}))
    fig.update_layout(title=f"{model}: p50 latency vs {points[0]['metric_name']} (marker area ~ file size)",
                      xaxis=dict(title="p50 latency per call (ms, log scale)", type="log"),
                      yaxis=dict(title=points[0]["metric_name"] + (" (higher is better)" if hib else
                                                                   " (lower is better)")),
                      height=460, margin=dict(l=60, r=30, t=50, b=50), legend=dict(title="runtime"))
    return fig


def speedup_figure(model: str, rows: list[dict]):
    """Speedup of each variant over its runtime's fp32 at the same batch and threads (1 = no gain)."""
    import plotly.graph_objects as go  # deferred: plotly

    ok = ok_rows(rows)
    multi = many_hosts(ok)

    def key(r):
        return r["runtime"], r.get("host"), r["batch"], r["threads"]

    base = {key(r): r for r in ok if r["variant"] == baseline_variant(r["runtime"])}
    bars = [(r, base[key(r)]) for r in ok if key(r) in base]
    if not bars:
        return None
    colors, default = _colors([r for r, _ in bars], multi), combos([r for r, _ in bars])[0]
    fig = go.Figure()
    for (runtime, series, batch, threads) in sorted({(r["runtime"], _series(r, multi), r["batch"], r["threads"])
                                                     for r, _ in bars}):
        bs = [(r, b) for r, b in bars
              if (r["runtime"], _series(r, multi), r["batch"], r["threads"]) == (runtime, series, batch, threads)]
        fig.add_trace(go.Bar(
            x=[r["variant"] for r, _ in bs], y=[b["p50_ms"] / r["p50_ms"] for r, b in bs], name=series,
            marker_color=colors[series], visible=(batch, threads) == default,
            hovertext=[_hover(r) + f"<br>{b['variant']} p50 {b['p50_ms']:.3f} ms" for r, b in bs], hoverinfo="text",
            meta={"runtime": runtime, "batch": batch, "threads": threads}))
    fig.add_hline(y=1.0, line=dict(color="#888", dash="dash"))
    fig.update_layout(title=f"{model}: speedup over the runtime's fp32 (same batch and threads)", barmode="group",
                      yaxis=dict(title="× faster than fp32"), height=380, margin=dict(l=60, r=30, t=50, b=80),
                      legend=dict(title="runtime"))
    return fig


def hosts_figure(model: str, rows: list[dict]):
    """p50 per variant/runtime, one bar per host: only when the rows come from more than one host."""
    import plotly.graph_objects as go  # deferred: plotly

    ok = ok_rows(rows)
    hosts = sorted({r["host"] for r in ok if r.get("host")})
    if len(hosts) < 2:
        return None
    fig = go.Figure()
    default = combos(ok)[0]
    for i, host in enumerate(hosts):
        for (batch, threads) in combos(ok):
            hs = [r for r in ok if r["host"] == host and (r["batch"], r["threads"]) == (batch, threads)]
            fig.add_trace(go.Bar(
                x=[f"{r['variant']} / {r['runtime']}" for r in hs], y=[r["p50_ms"] for r in hs],
                name=" | ".join(host.split(" | ")[:2]), legendgroup=host,
                marker_color=PALETTE[i % len(PALETTE)], visible=(batch, threads) == default,
                hovertext=[_hover(r) + f"<br>{host}" for r in hs], hoverinfo="text",
                meta={"runtime": "*", "batch": batch, "threads": threads}))
    fig.update_layout(title=f"{model}: p50 latency per host", barmode="group", height=400,
                      yaxis=dict(title="p50 ms", type="log"), margin=dict(l=60, r=30, t=50, b=120),
                      legend=dict(title="host"))
    return fig
