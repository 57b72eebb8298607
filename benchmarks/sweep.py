"""The main job: every model x variant x runtime, with the task metric and latency side by side."""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models import registry
from models.artifacts import cache_dir, key_of, sizes
from models.spec import n_samples, take
from models.training import train

from . import host, runtimes, variants
from .runner import Method, measure
from .store import Store


@dataclass
class SweepConfig:
    models: list[str]
    variants: list[str] = field(default_factory=lambda: [v.name for v in variants.VARIANTS])
    runtimes: list[str] = field(default_factory=lambda: [r.name for r in runtimes.RUNTIMES])
    batches: list[int] = field(default_factory=lambda: [1])
    threads: list[int] = field(default_factory=lambda: [os.cpu_count() or 1])
    method: Method = Method()
    out: Path = Path("results")
    cache: str | None = None
    fresh: bool = False
    tiny: bool = False  # the zoo's tiny configurations (tests)


def batch_of(x, batch: int):
    """The first ``batch`` test inputs, tiled if the split is smaller."""
    n = n_samples(x)
    index = np.arange(batch) % n
    return take(x, index)


class Sweep:
    def __init__(self, cfg: SweepConfig, store: Store, on_step=lambda text: None):
        self.cfg, self.store, self.on_step = cfg, store, on_step

    def plan(self) -> list[tuple]:
        items = []
        for m in self.cfg.models:
            for v in self.cfg.variants:
                variant = variants.by_name(v)
                for r in self.cfg.runtimes:
                    runtime = runtimes.by_name(r)
                    if runtime.format == variant.format:
                        items.append((m, variant, runtime))
        return items

    def run(self, advance=lambda: None) -> int:
        done = 0
        trained_cache = {}
        for model_name, variant, runtime in self.plan():
            spec = registry.get(model_name)
            if model_name not in trained_cache:
                self.on_step(f"{model_name}: training (cached after the first run)")
                trained_cache[model_name] = train(spec, tiny=self.cfg.tiny, cache=self.cfg.cache)
            trained = trained_cache[model_name]
            for batch in self.cfg.batches:
                for threads in self.cfg.threads:
                    key = key_of({"model": trained.path.name, "variant": variant.name, "runtime": runtime.name,
                                  "batch": batch, "threads": threads, "method": self.cfg.method.__dict__})
                    if not self.cfg.fresh and self.store.has(key):
                        continue
                    self.on_step(f"{model_name} / {variant.name} / {runtime.name} / batch {batch}")
                    row = self._measure(trained, variant, runtime, batch, threads)
                    row.update(key=key, model=model_name, model_key=trained.path.stem, variant=variant.name,
                               runtime=runtime.name, batch=batch, threads=threads, metric_name=spec.metric.name,
                               higher_is_better=int(spec.metric.higher_is_better), host=host.host(),
                               versions=host.versions(), git_rev=host.git_rev(),
                               created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
                    self.store.put(row)
                    done += 1
            advance()
        return done

    def _measure(self, trained, variant, runtime, batch, threads) -> dict:
        reason = runtime.unavailable()
        if reason:
            return {"status": "unavailable", "reason": reason}
        work = cache_dir(self.cfg.cache) / "variants" / trained.path.stem
        try:
            path = variants.build(variant, trained, work)
        except variants.VariantUnavailable as e:
            return {"status": "failed", "reason": str(e)}
        raw, gz = sizes(path)
        try:
            loaded = runtime.load(path, threads)
            splits = trained.splits()
            metric = trained.spec.score(loaded.predict, splits.test, trained.config)
            x = batch_of(splits.test.x, batch)
            stats = measure(lambda: loaded.predict(x), self.cfg.method)
        except Exception as e:  # a runtime that cannot run this artifact is a recorded failure
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return {"status": "failed", "reason": f"{runtime.name}: {first[:300]}", "size": raw, "size_gzip": gz}
        return {"status": "ok", "reason": None, "provider": loaded.provider, "metric": metric, "size": raw,
                "size_gzip": gz, "init_ms": loaded.init_ms, "first_ms": stats.first, "runs": stats.runs,
                "min_ms": stats.min, "mean_ms": stats.mean, "std_ms": stats.std, "p50_ms": stats.p50,
                "p90_ms": stats.p90, "p99_ms": stats.p99, "max_ms": stats.max}
