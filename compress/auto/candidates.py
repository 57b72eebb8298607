"""What ``compress auto`` is asked (AutoSpec, the techniques it may try) and what it answers (Candidate,
RuntimeChoice, AutoResult): the data the search (compress.auto.search), its log and its report share."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from models.errors import UserError
from models.verdict import DEFAULT_MAX_DROP
from export.quantize.ptq import QuantRecipe
from benchmarks import runtimes

DEFAULT_RUNTIMES = ("litert", "onnxruntime-cpu")
TARGETS = ("latency", "size")
PTQ_MODES = {"tflite": ("dynamic", "float16", "int8", "16x8"), "onnx": ("float16", "dynamic", "int8")}
EXT = {"tflite": "tflite", "onnx": "onnx"}
LOG_NAME = "auto-log.sqlite"
TIE = 0.03  # latencies closer than this (or the timing's own CI) are a tie, broken by size


# ------------------------------------------------------------------------------------------------ techniques

@dataclass(frozen=True)
class Technique:
    """A Keras-level technique: ``apply(model, plan) -> (model, Outcome)``, written once in DIR/techniques."""

    id: str
    step: str  # its step in a recipe chain
    apply: Callable


def _prune(sparsity=0.5, m_by_n=None):
    def apply(model, plan):
        from compress.techniques.pruning import prune  # deferred: compress.techniques.pruning loads TensorFlow

        return prune(model, plan, sparsity=sparsity, m_by_n=m_by_n)

    return apply


def _cluster(clusters):
    def apply(model, plan):
        from compress.techniques.clustering import cluster  # deferred: compress.techniques.clustering loads TensorFlow

        return cluster(model, plan, clusters=clusters)

    return apply


def _channels(ratio):
    def apply(model, plan):
        # deferred: compress.techniques.channels loads TensorFlow
        from compress.techniques.channels import channel_prune

        return channel_prune(model, plan, ratio=ratio)

    return apply


TECHNIQUES = (
    Technique("prune50", "prune(0.5)", _prune(0.5)),
    Technique("prune2x4", "prune(2:4)", _prune(m_by_n=(2, 4))),
    Technique("cluster16", "cluster(16)", _cluster(16)),
    Technique("channels25", "channels(0.25)", _channels(0.25)),
    Technique("channels50", "channels(0.5)", _channels(0.5)),
)


# ----------------------------------------------------------------------------------------------- spec/result

@dataclass(frozen=True)
class AutoSpec:
    """What to search for. ``max_drop`` is in the metric's units, or a fraction of the fp32 metric with
    ``relative``; ``strict`` judges the drop's 95% upper bound instead of its estimate."""

    out: Path
    max_drop: float = DEFAULT_MAX_DROP
    relative: bool = False
    target: str = "latency"
    runtimes: tuple = DEFAULT_RUNTIMES
    time_budget_min: float | None = None
    strict: bool = False
    #: technique ids to try (None: all of TECHNIQUES)
    techniques: tuple | None = None
    mixed_precision: bool = True
    resamples: int = 1000
    #: the bootstrap's resampling seed
    seed: int = 0
    cache: str | None = None
    #: the techniques' fine-tuning seed (--seed)
    tune_seed: int = 0
    #: write the candidate that loses least when none is within the budget (--no-validate); else nothing is written
    write_unreachable: bool = False

    def __post_init__(self):
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "runtimes", tuple(dict.fromkeys(self.runtimes or DEFAULT_RUNTIMES)))
        if self.target not in TARGETS:
            raise UserError(f"unknown --target {self.target!r}; valid: {', '.join(TARGETS)}")
        if not math.isfinite(self.max_drop):
            raise UserError(f"--max-drop must be a finite number, got {self.max_drop}")
        if self.time_budget_min is not None and not self.time_budget_min >= 0:
            raise UserError(f"--time-budget must be >= 0 minutes, got {self.time_budget_min}")
        if self.resamples < 100:
            raise UserError(f"resamples must be >= 100 for a 95% interval, got {self.resamples}")
        known = {t.id for t in TECHNIQUES}
        unknown = [t for t in (self.techniques or ()) if t not in known]
        if unknown:
            raise UserError(f"unknown technique(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        for name in self.runtimes:
            runtime_format(name)


def runtime_format(name: str) -> str:
    """The file format a runtime runs, or a one-line UserError (unknown, not an exported-file runtime, missing)."""
    valid = [r.name for r in runtimes.RUNTIMES if r.format in EXT]
    try:
        rt = runtimes.by_name(name)
    except UserError:
        raise UserError(f"unknown --runtime {name!r}; valid: {', '.join(valid)}") from None
    if rt.format not in EXT:
        raise UserError(f"--runtime {name} runs Keras models; auto searches exported files: {', '.join(valid)}")
    reason = rt.unavailable()
    if reason:
        raise UserError(f"--runtime {name} is not available here: {reason}")
    return rt.format


@dataclass
class Candidate:
    """One candidate file and its score (or why it has none)."""

    runtime: str
    chain: list
    stage: str  # baseline | ptq | fallback | mixed | technique
    recipe: dict
    technique: str | None
    key: str
    status: str = "scored"  # scored | rejected (cannot be built) | not scored (time budget)
    reason: str | None = None
    metric: float | None = None
    drop: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_note: str | None = None
    size: int | None = None
    size_gzip: int | None = None
    p50_ms: float | None = None
    p50_ci: float | None = None
    runs: int | None = None
    init_ms: float | None = None
    sha256: str | None = None
    notes: list = field(default_factory=list)
    seconds: float = 0.0
    finalist: bool = False  # timed again side by side with the other fastest inside the budget
    # the verdict, set when choosing (not stored in the log)
    resumed: bool = False
    within_budget: bool | None = None
    pareto: bool = False
    chosen: bool = False
    verdict: str = ""

    LOGGED = ("runtime", "chain", "stage", "recipe", "technique", "key", "status", "reason", "metric", "drop",
              "ci_low", "ci_high", "ci_note", "size", "size_gzip", "p50_ms", "p50_ci", "runs", "init_ms", "sha256",
              "notes", "seconds", "finalist")

    @property
    def label(self) -> str:
        return " → ".join(self.chain[1:]) or self.chain[0]

    def quant_recipe(self) -> QuantRecipe:
        return QuantRecipe(**{**self.recipe, "exclude": tuple(self.recipe.get("exclude") or ())})

    def logged(self) -> dict:
        return {k: getattr(self, k) for k in self.LOGGED}

    def drop_text(self) -> str:
        if self.drop is None:
            return "-"
        ci = f" [{self.ci_low:+.4f}, {self.ci_high:+.4f}]" if self.ci_high is not None else " [no CI]"
        return f"{self.drop:+.4f}{ci}"


@dataclass
class RuntimeChoice:
    runtime: str
    candidate: Candidate | None
    fp32: Candidate | None
    reachable: bool
    message: str
    path: Path | None = None
    #: the gate's verdict on the chosen candidate (models.verdict.Verdict), set with the message
    verdict: object | None = None

    def ratios(self) -> tuple[float | None, float | None]:
        """(size, latency) of fp32 over the chosen file's: how many times smaller and faster."""
        c, b = self.candidate, self.fp32
        if c is None or b is None or c.size is None or b.size is None:
            return None, None
        return b.size / c.size, (b.p50_ms / c.p50_ms if c.p50_ms else None)


@dataclass
class AutoResult:
    out: Path
    subject: str
    metric_name: str
    higher_is_better: bool
    baseline: float
    budget: float
    spec: AutoSpec
    candidates: list
    choices: dict
    fine_tuning: str
    sensitivity: dict
    stopped_early: bool
    seconds: float
    new: int  # candidates built and scored in this run (0 on a complete rerun)
    notes: list = field(default_factory=list)

    def as_json(self) -> dict:
        spec = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.spec).items()}
        return {"model": self.subject, "metric": self.metric_name, "higher_is_better": self.higher_is_better,
                "fp32_keras_metric": self.baseline, "budget": self.budget, "spec": spec,
                "fine_tuning": self.fine_tuning, "stopped_early": self.stopped_early,
                "search_seconds": self.seconds, "new_candidates": self.new, "notes": self.notes,
                "choices": {rt: {"file": str(c.path) if c.path else None, "reachable": c.reachable,
                                 "verdict": c.verdict.as_dict() if c.verdict is not None else None,
                                 "message": c.message, "chosen_key": c.candidate.key if c.candidate else None,
                                 "size_ratio": c.ratios()[0], "latency_ratio": c.ratios()[1]}
                            for rt, c in self.choices.items()},
                "sensitivity": self.sensitivity,
                "candidates": [{k: v for k, v in asdict(c).items()} for c in self.candidates]}
