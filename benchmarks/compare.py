"""Compare two result stores: flag latency regressions beyond the measured noise and metric drops."""
from __future__ import annotations

from dataclasses import dataclass

MIN_REL = 0.10  # never call a change under 10% a regression, whatever the spread
METRIC_TOL = 0.005


@dataclass
class Change:
    key: tuple
    old_p50: float
    new_p50: float
    threshold: float  # relative change that counts as beyond noise for this row
    old_metric: float | None
    new_metric: float | None
    kind: str  # "latency" | "metric"

    def describe(self) -> str:
        name = " / ".join(str(k) for k in self.key)
        if self.kind == "metric":
            return f"{name}: metric {self.old_metric:.4f} -> {self.new_metric:.4f}"
        return (f"{name}: p50 {self.old_p50:.3f} -> {self.new_p50:.3f} ms "
                f"({self.new_p50 / self.old_p50 - 1:+.0%}, noise threshold {self.threshold:.0%})")


def _key(r):
    return (r["model"], r["variant"], r["runtime"], f"batch {r['batch']}", f"{r['threads']} thr")


def noise(r) -> float:
    """Relative spread of one measurement: how far p90 sits above p50."""
    return (r["p90_ms"] - r["p50_ms"]) / r["p50_ms"] if r["p50_ms"] else 0.0


def compare(old_rows: list[dict], new_rows: list[dict]) -> list[Change]:
    old = {_key(r): r for r in old_rows if r["status"] == "ok"}
    changes = []
    for r in new_rows:
        o = old.get(_key(r))
        if r["status"] != "ok" or o is None:
            continue
        threshold = max(MIN_REL, noise(o) + noise(r))
        if r["p50_ms"] > o["p50_ms"] * (1 + threshold):
            changes.append(Change(_key(r), o["p50_ms"], r["p50_ms"], threshold, o["metric"], r["metric"], "latency"))
        if o["metric"] is not None and r["metric"] is not None:
            worse = (o["metric"] - r["metric"]) if r["higher_is_better"] else (r["metric"] - o["metric"])
            if worse > METRIC_TOL:
                changes.append(Change(_key(r), o["p50_ms"], r["p50_ms"], threshold, o["metric"], r["metric"],
                                      "metric"))
    return changes
