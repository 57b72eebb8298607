"""Matplotlib figures for the report: latency/metric/size Pareto scatter and per-runtime bars (PNG bytes)."""
from __future__ import annotations

import io


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def pareto(points: list[dict], higher_is_better: bool) -> set[int]:
    """Indices of points not dominated in (latency lower, metric better, size smaller)."""
    def better_or_equal(a, b):
        m_ok = a["metric"] >= b["metric"] if higher_is_better else a["metric"] <= b["metric"]
        return a["p50_ms"] <= b["p50_ms"] and m_ok and a["size"] <= b["size"]

    def strictly(a, b):
        return better_or_equal(a, b) and (a["p50_ms"], a["metric"], a["size"]) != (b["p50_ms"], b["metric"], b["size"])

    return {i for i, p in enumerate(points) if not any(strictly(q, p) for j, q in enumerate(points) if j != i)}


def pareto_scatter(model: str, rows: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in rows if r["status"] == "ok" and r["metric"] is not None and r["p50_ms"]]
    front = pareto(points, bool(points and points[0]["higher_is_better"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = [max(p["size"], 1) for p in points]
    scale = 400.0 / max(sizes) if sizes else 1.0
    for i, p in enumerate(points):
        on_front = i in front
        ax.scatter(p["p50_ms"], p["metric"], s=20 + p["size"] * scale, alpha=0.6,
                   edgecolors="red" if on_front else "none", linewidths=2 if on_front else 0)
        ax.annotate(f"{p['variant']}\n{p['runtime']}" + (" *" if on_front else ""), (p["p50_ms"], p["metric"]),
                    fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("batch-1 p50 latency (ms, log)")
    ax.set_ylabel(points[0]["metric_name"] if points else "metric")
    ax.set_title(f"{model}: latency vs metric (marker area ~ file size; red edge = Pareto-optimal)")
    return _png(fig)


def runtime_bars(model: str, rows: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok" and r["p50_ms"]]
    runtimes = sorted({r["runtime"] for r in ok})
    fig, axes = plt.subplots(1, max(1, len(runtimes)), figsize=(3.2 * max(1, len(runtimes)), 3.2), squeeze=False)
    for ax, runtime in zip(axes[0], runtimes):
        rs = [r for r in ok if r["runtime"] == runtime]
        ax.barh([r["variant"] for r in rs], [r["p50_ms"] for r in rs])
        ax.set_title(runtime, fontsize=8)
        ax.set_xlabel("p50 ms", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{model}: batch-1 p50 latency per runtime", fontsize=9)
    return _png(fig)
