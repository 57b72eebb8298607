"""The main job: every model x variant x runtime, with the task metric and latency side by side.

The metric is computed here (the driver) on the whole test split; latency and memory are measured by an executor
(benchmarks.executors: worker processes here, or one per node of a Ray cluster) in a worker process per (runtime,
threads), so a runtime that leaks or crashes is one failed row. Only the driver writes the store.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import itertools
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models import registry
from models.artifacts import cache_dir, disk_size, key_of, sizes
from models.errors import UserError
from models.spec import n_samples
from models.subject import train_ahead
from export.probe import probe
from export.validate import validated_metric
from export.validate import as_list, parity

from benchmarks import host, runtimes, variants
from benchmarks.build import BuildPool, Built
from benchmarks.child import release_free_memory
from benchmarks.executors.local import Executor, LocalExecutor
from benchmarks.phases import Phases
from benchmarks.runner import Method, batch_of
from benchmarks.store import Store
from benchmarks.tasks import Job, MeasureTask, content_hash
from benchmarks.units import Unit, build_request, display_name, make_source, make_unit



@dataclass
class SweepConfig:
    models: list[str]
    variants: list[str] = field(default_factory=lambda: [v.name for v in variants.VARIANTS])
    runtimes: list[str] = field(default_factory=lambda: [r.name for r in runtimes.RUNTIMES])
    batches: list[int] = field(default_factory=lambda: [1, 32])
    threads: list[int] = field(default_factory=lambda: sorted({1, os.cpu_count() or 1}))
    method: Method = Method()
    out: Path = Path("results")
    cache: str | None = None
    fresh: bool = False
    tiny: bool = False  # the zoo's tiny configurations (tests)
    # --quick: a runtime running a file another runtime already scored reuses that metric when their outputs
    # agree within the model's export tolerance on PARITY_SAMPLES test inputs (checked here, recorded in the row)
    reuse_metric: bool = False
    #: for model files (not zoo names): data, eval_data, metric, label, custom_objects, unsafe (models.subject.Source)
    source: dict = field(default_factory=dict)


PARITY_SAMPLES = 32


def pause_for_test(stored: int) -> None:
    """Test-only hook: with CT_TEST_PAUSE_AFTER_ROWS=N and CT_TEST_PAUSE_FILE=PATH, once this run has stored N rows
    the sweep creates PATH and waits (at most 5 minutes), so a test interrupts or kills it at a known point
    instead of racing it (tests/test_interruptions.py)."""
    after, marker = os.environ.get("CT_TEST_PAUSE_AFTER_ROWS"), os.environ.get("CT_TEST_PAUSE_FILE")
    if not after or not marker or stored != int(after):
        return
    Path(marker).touch()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(0.05)


def save_inputs(x, path: Path, n: int) -> Path:
    x = batch_of(x, n)
    arrays = dict(x) if isinstance(x, dict) else {"__single__": x}
    np.savez(path, **arrays)
    return path


def provider_of(runtime) -> str | None:
    """The execution provider a runtime asks for (ONNX Runtime's), None for the others."""
    return getattr(runtime.load, "keywords", {}).get("provider")


SELFCHECK_RUNTIMES = ("onnxruntime-cpu", "litert")


@dataclass(frozen=True)
class JobContext:
    """What the driver needs to turn a job's answer into rows (never part of the task's hash)."""

    item: int  # index of the (variant, runtime) in the model's plan, for progress
    variant: object
    runtime: object
    metric: float | None
    metric_from: str | None
    size: int
    size_gzip: int


class Sweep:
    def __init__(self, cfg: SweepConfig, store: Store, on_step=lambda text: None, executor: Executor | None = None,
                 on_row=lambda row: None, on_model=lambda name: None):
        self.cfg, self.store, self.on_step, self.on_row, self.on_model = cfg, store, on_step, on_row, on_model
        self.phases = Phases()
        self._model = None  # the model being swept (its phases are being timed)
        self._trained = {}
        self.keys: dict[str, str] = {}  # model argument -> its unit's key, for the models this run has reached
        self._scored: dict[str, tuple[str, float, object]] = {}  # path -> (runtime, metric, outputs on the sample)
        self.executor = executor or LocalExecutor()
        self.builders = BuildPool()  # build children kept for the models in turn (benchmarks.build)
        self.stored = 0  # rows this run has stored

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

    def _key(self, trained, variant, runtime, batch, threads) -> str:
        return key_of({"model": trained.key + trained.path.suffix, "variant": variant.name, "runtime": runtime.name, "batch": batch,
                       "threads": threads, "method": dataclasses.asdict(self.cfg.method)})

    def trained(self, name) -> Unit:
        """The sweep's per-model unit: the one place that makes it (see make_unit)."""
        if name not in self._trained:
            self.on_step(f"{name}: loading (zoo models are trained once and cached)")
            self._trained[name] = make_unit(name, self.cfg)
            self.keys[name] = self._trained[name].key
        return self._trained[name]

    def rows(self) -> list[dict]:
        """The store's rows of this sweep's models: by name, and for a model this run has reached by its content key
        too, so the rows of an earlier version of the same file (other weights, data or metric) stay out."""
        wanted: dict[str, set | None] = {}  # name -> the keys of its models (None: one not reached, any key)
        for m in self.cfg.models:
            name, key = display_name(m), self.keys.get(m)
            keys = wanted.setdefault(name, set())
            wanted[name] = None if keys is None or key is None else keys | {key}
        return [r for r in self.store.rows(list(wanted)) if r["model"] in wanted
                and (wanted[r["model"]] is None or r["model_key"] in wanted[r["model"]])]

    def run(self, advance=lambda: None) -> int:
        """Measure what the store does not have yet; each finished row is committed at once, so an
        interrupted or killed sweep resumes from the rows it completed."""
        try:
            return self._run(advance)
        except BaseException:
            self.builders.kill()
            self.executor.kill_all()
            raise
        finally:
            self.builders.close()
            self.executor.close()

    @staticmethod
    def _probe_all(built: dict[str, Built]) -> None:
        """Load every exported file of the model once in ONE child process (export.probe, which remembers each
        file's result by its bytes) rather than one child per file."""
        paths = [b.path for b in built.values() if b.path is not None and b.path.suffix in (".onnx", ".tflite")]
        if paths:
            probe(paths)

    def _release(self) -> None:
        """Done with a model: free its data, cached outputs and TensorFlow state before the next one."""
        from models.backend import keras  # deferred: models.backend loads TensorFlow
        from models.training import forget_splits  # deferred: models.training loads TensorFlow

        self._trained.clear()
        self._scored.clear()
        forget_splits()
        keras.backend.clear_session()
        gc.collect()
        release_free_memory()

    def _store(self, rows: list[dict]) -> None:
        """Only the driver writes the store: one transaction per row."""
        for row in rows:
            self.store.put(row)
            self.stored += 1
            self.on_row(row)
            pause_for_test(self.stored)

    def _run(self, advance) -> int:
        order = list(dict.fromkeys(m for m, _, _ in self.plan()))
        for index, (model_name, items) in enumerate(itertools.groupby(self.plan(), key=lambda item: item[0])):
            self._model = model_name
            with self.phases.timing(model_name, "train"):
                trained = self.trained(model_name)
            pending = []
            for _, variant, runtime in items:
                todo = [(b, t) for t in self.cfg.threads for b in self.cfg.batches
                        if self.cfg.fresh or not self.store.has(self._key(trained, variant, runtime, b, t))]
                pending.append((variant, runtime, todo))
            with self.phases.timing(model_name, "build"):
                self.executor.before_build()
                built = self._build(trained, [v for v, r, todo in pending if todo and not r.unavailable()],
                                    meanwhile=(lambda: self._train_ahead(order[index + 1:index + 2]))
                                    if self.builders.parallel else None)
            with self.phases.timing(model_name, "measure"), tempfile.TemporaryDirectory(prefix="ct-inputs-") as tmp:
                self._probe_all(built)
                inputs = Path(tmp) / "inputs.npz"
                jobs, waiting = [], {}
                for item, (variant, runtime, todo) in enumerate(pending):
                    if not todo:
                        advance()
                        continue
                    self.on_step(f"{model_name} / {variant.name} / {runtime.name}")
                    rows, item_jobs = self._prepare(item, trained, variant, runtime, todo, built.get(variant.name),
                                                    inputs)
                    self._store(rows)
                    if item_jobs:
                        waiting[item] = len(item_jobs)
                        jobs += item_jobs
                    else:
                        advance()
                for job, answer in self.executor.run(jobs):
                    self._store(self._answer_rows(trained, job, answer))
                    waiting[job.context.item] -= 1
                    if not waiting[job.context.item]:
                        advance()
            self._release()
            self.on_model(model_name)
        return self.stored

    def _train_ahead(self, names: list[str]) -> None:
        """While this model's variants build (in children), train the next zoo model: neither needs the quiet
        machine a measurement does. A failure here is left for that model's own turn to report."""
        for name in names:
            if name in registry.names():
                self.on_step(f"{name}: training (cached) while {self._model}'s variants build")
                with self.phases.timing(name, "train"):
                    try:
                        train_ahead(make_source(name, self.cfg))
                    except Exception:  # noqa: BLE001 - raised again, with its message, when the model's turn comes
                        pass

    def _build(self, trained, wanted, meanwhile=None) -> dict[str, Built]:
        """Each wanted variant's artifact: cached, or built now in child processes (see benchmarks.build), with
        ``meanwhile()``, if given, run here as they build."""
        work = cache_dir(self.cfg.cache) / "variants" / trained.key
        result, missing = {}, []
        for variant in dict.fromkeys(wanted):
            path = variants.artifact_path(variant, trained, work)
            if path.exists():
                result[variant.name] = Built(path)
            else:
                missing.append(variant.name)
        if missing:
            source_mb = disk_size(trained.path) / 2**20
            args = (build_request(trained, self.cfg, missing), variants.chains(missing), self.on_step, source_mb)
            if meanwhile is None:
                made = self.builders.build(*args)
            else:
                self.builders.ensure_started()  # from this thread: see BuildPool.ensure_started
                with ThreadPoolExecutor(1) as pool:
                    building = pool.submit(self.builders.build, *args)
                    try:
                        meanwhile()
                        made = building.result()
                    except BaseException:
                        self.builders.kill()  # the pool's thread then returns instead of building on
                        raise
            for name, built in made.items():
                self.phases.built(trained.subject.name, name, built.seconds)
            result.update(made)
        for built in result.values():
            if built.fatal:  # e.g. the cache cannot be written (disk full): stop the sweep with that line
                raise UserError(built.error)
        return result

    def _row(self, trained, variant, runtime, batch, threads, **values) -> dict:
        metric = trained.metric
        row = dict(key=self._key(trained, variant, runtime, batch, threads), model=trained.name,
                   model_key=trained.key, variant=variant.name, runtime=runtime.name, batch=batch,
                   threads=threads, metric_name=metric.name if metric else None,
                   higher_is_better=int(metric.higher_is_better) if metric else 1,
                   method=dataclasses.asdict(self.cfg.method), host=host.host(), versions=host.versions(),
                   git_rev=host.git_rev(), created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        row.update(values)
        return row

    def _score(self, trained, runtime, path, splits) -> tuple[float, str | None]:
        """The task metric of ``path`` on ``runtime`` over the whole test split, and where it came from
        (None: computed on this runtime; else the runtime it was reused from and the parity that allowed it)."""
        spec = trained.spec
        if trained.metric is None:  # no labels (a user file without --data): latency and size only
            runtime.load(path, None)  # it must still load on this runtime
            return None, None
        validated = validated_metric(path, runtime.name, trained.metric.name, splits.test.x)
        note = (f"the export's own validation scored this file on {runtime.name} over the whole test split "
                f"({n_samples(splits.test.x)} samples) when it was built")
        if validated is not None and not self.cfg.reuse_metric:
            return validated, note
        predict = runtime.load(path, None).predict
        if not self.cfg.reuse_metric:
            return spec.score(predict, splits.test, trained.config), None
        outputs = predict(splits.test.head(PARITY_SAMPLES).x)
        if validated is not None:  # other runtimes may reuse it in turn (--quick)
            self._scored.setdefault(str(path), (runtime.name, validated, outputs))
            return validated, note
        earlier = self._scored.get(str(path))
        if earlier is not None:
            source, metric, reference = earlier
            n_out = len(as_list(reference))
            checks = parity(reference, outputs, [str(i) for i in range(n_out)])
            worst = max((c.max_abs for c in checks), default=float("inf"))
            if len(as_list(outputs)) == n_out and np.isfinite(worst) and worst <= spec.export_atol:
                return metric, (f"{source}: outputs agree on {PARITY_SAMPLES} test inputs "
                                f"(max |Δ| {worst:.1e} ≤ {spec.export_atol:.0e})")
        metric = spec.score(predict, splits.test, trained.config)
        self._scored.setdefault(str(path), (runtime.name, metric, outputs))
        return metric, None

    def _prepare(self, item, trained, variant, runtime, todo, built: Built | None, inputs: Path):
        """Rows that need no timing (unavailable runtime, missing or crashing artifact, unscorable), or the
        metric now and one timed job per thread count for the executor."""
        def all_rows(**values):
            return [self._row(trained, variant, runtime, b, t, **values) for b, t in todo], []

        reason = runtime.unavailable()
        if reason:
            return all_rows(status="unavailable", reason=reason)
        if built is None or built.path is None:
            return all_rows(status="failed", reason=built.error if built else f"{variant.name} was not built")
        path = built.path
        raw, gz = sizes(path)
        splits = trained.splits()
        if variant.format in ("onnx", "tflite"):  # a file that crashes the runtime must not take the sweep down
            probed = probe([path])[0]  # found in probe's memo: the model's files were probed together
            if not probed.ok:
                return all_rows(status="failed", reason=f"{runtime.name}: {probed.error}", size=raw, size_gzip=gz)
        try:
            with self.phases.timing(self._model, "score"):
                metric, metric_from = self._score(trained, runtime, path, splits)
        except Exception as e:  # the runtime cannot run this artifact: a recorded failure, the sweep goes on
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            return all_rows(status="failed", reason=f"{runtime.name}: {first[:300]}", size=raw, size_gzip=gz)
        if not inputs.exists():  # one inputs file per model: the first max(batches) test inputs
            save_inputs(splits.test.x, inputs, max(self.cfg.batches))
        context = JobContext(item, variant, runtime, metric, metric_from, raw, gz)
        jobs = []
        for threads in sorted({t for _, t in todo}):
            task = MeasureTask(artifact=content_hash(path), artifact_name=path.name, artifact_is_dir=path.is_dir(),
                               inputs=content_hash(inputs), variant=variant.name, runtime=runtime.name,
                               provider=provider_of(runtime), batches=tuple(b for b, t in todo if t == threads),
                               threads=threads, method=self.cfg.method, selfcheck=runtime.name in SELFCHECK_RUNTIMES)
            jobs.append(Job(task, path, inputs, context))
        return [], jobs

    def _answer_rows(self, trained, job: Job, result: dict) -> list[dict]:
        """A job's rows from its worker's answer; the host is the node that measured it."""
        ctx, task = job.context, job.task
        common = dict(metric=ctx.metric, metric_from=ctx.metric_from, size=ctx.size, size_gzip=ctx.size_gzip)
        if result.get("host"):
            common["host"] = result["host"]
        if "error" in result:
            return [self._row(trained, ctx.variant, ctx.runtime, b, task.threads, status="failed",
                              reason=result["error"], **common) for b in task.batches]
        return [self._row(
            trained, ctx.variant, ctx.runtime, r["batch"], task.threads, status="ok", reason=None,
            provider=result["provider"], **common, init_ms=result["init_ms"], first_ms=r["first"], runs=r["runs"],
            calls_per_sample=r["calls_per_sample"], min_ms=r["min"], mean_ms=r["mean"], std_ms=r["std"],
            p50_ms=r["p50"], p90_ms=r["p90"], p99_ms=r["p99"], max_ms=r["max"], throughput=r["throughput"],
            peak_rss_mb=result["peak_rss_mb"], load_rss_mb=result["peak_rss_mb"] - result["base_rss_mb"],
            overhead=r.get("overhead"), p50_ci=r.get("p50_ci")) for r in result["results"]]
