"""The accuracy gate: one verdict for every command that writes a compressed model.

``compress prune / channel-prune / cluster / qat / quantize``, ``export --quantize`` and ``compress auto`` judge a
result the same way: the drop of the task metric on the evaluation split (before minus after, sign-flipped for
lower-is-better metrics), with a paired bootstrap 95% interval (the same resampled test indices for both models,
so the noise they share cancels), against ``--max-drop``. The drop passes when it is at most the budget,
inclusive, with a tolerance for float rounding (0.9250 - 0.9150 is 0.010000000000000009: a drop of exactly the
budget). ``strict`` (``compress auto --strict``) judges the interval's upper bound instead.

A hold-out too small to resolve the budget is said, not hidden: when one sample is worth at least half the
budget (200 samples of accuracy: half a point each) or the interval is wider than WIDE budgets, a drop of one
budget cannot be told from noise, and the verdict carries a note that says so.

Where no per-sample pairs exist (a zoo model scored by its own ``score_fn``) the verdict is on the two aggregate
values, without an interval, and says why.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.spec import Metric, n_samples, take

#: ``--max-drop``'s default on every command that writes a compressed model: one point of accuracy
DEFAULT_MAX_DROP = 0.01
RESAMPLES = 1000
LEVEL = 0.95
MIN_VALID = 0.9  # fraction of resamples whose metric must be defined (e.g. roc_auc needs both classes)
#: a drop this close above the budget is the budget (float rounding of differences of means)
TOLERANCE = 1e-9
#: the hold-out cannot resolve the budget when the drop's interval is wider than this many budgets
WIDE = 2.0
#: metrics that are the mean of a per-sample value: resampled by indexing the per-sample values (fast)
MEAN_OF_SAMPLES = ("accuracy", "top5_accuracy", "top1_agreement", "mse", "mae")
#: metrics that count samples: one sample moves them by 1/n
COUNTED = ("accuracy", "top5_accuracy", "top1_agreement")
#: what a refused result leaves behind, said the same way by every command
NOTHING_WRITTEN = "nothing written (--no-validate writes it anyway)"


def drop_of(before: float, after: float, higher_is_better: bool) -> float:
    """How much worse ``after`` is than ``before``, in the metric's units (negative: better)."""
    return before - after if higher_is_better else after - before


def within(value: float | None, budget: float) -> bool:
    """The gate's rule: ``value`` (a drop, or its upper bound) is at most ``budget``, inclusive, up to rounding."""
    return value is not None and math.isfinite(value) and value <= budget + TOLERANCE * max(1.0, abs(budget))


# ---------------------------------------------------------------------------------------------- the bootstrap

def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, n) indices drawn with replacement: shared by the models compared (the pairing)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _per_sample(metric: Metric, y, pred, n: int) -> np.ndarray | None:
    if metric.name not in MEAN_OF_SAMPLES:
        return None
    try:
        return np.array([metric(take(y, slice(i, i + 1)), take(pred, slice(i, i + 1))) for i in range(n)], float)
    except (ValueError, TypeError, IndexError):  # a form the per-sample path does not take: resample the metric
        return None


def resampled(metric: Metric, y, pred, indices: np.ndarray) -> np.ndarray:
    """The metric on each resample (NaN where it is undefined, e.g. roc_auc on one class)."""
    values = _per_sample(metric, y, pred, indices.shape[1])
    if values is not None:
        return values[indices].mean(axis=1)
    out = np.full(len(indices), np.nan)
    for i, idx in enumerate(indices):
        try:
            out[i] = metric(take(y, idx), take(pred, idx))
        except (ValueError, ZeroDivisionError, FloatingPointError):  # undefined on this resample
            pass
    return out


def interval(before_boot: np.ndarray, after_boot: np.ndarray, higher_is_better: bool,
             level: float = LEVEL) -> tuple[float | None, float | None, str | None]:
    """(low, high, note) of the drop's percentile interval over paired resamples; note says why when None."""
    drops = (before_boot - after_boot) if higher_is_better else (after_boot - before_boot)
    ok = np.isfinite(drops)
    if ok.mean() < MIN_VALID:
        return None, None, (f"the metric is undefined on {1 - ok.mean():.0%} of the resamples (e.g. one class only), "
                            "so no interval")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(drops[ok], [tail, 100 - tail])
    return float(low), float(high), None


# ------------------------------------------------------------------------------------------------ the verdict

@dataclass
class Verdict:
    """A result judged against the budget: what the commands print, and whether they write it."""

    metric_name: str
    higher_is_better: bool
    before: float
    after: float
    n: int
    budget: float
    ci_low: float | None = None
    ci_high: float | None = None
    #: why there is no interval (a score_fn, an undefined metric), else None
    ci_note: str | None = None
    strict: bool = False
    before_label: str = "before"
    after_label: str = "after"
    #: the samples are a hold-out of the user's --data, which the model may have been trained on
    holdout_of_data: bool = False

    @property
    def drop(self) -> float:
        return drop_of(self.before, self.after, self.higher_is_better)

    @property
    def judged(self) -> float | None:
        """What the budget is judged on: the drop, or with ``strict`` its 95% upper bound."""
        return self.ci_high if self.strict else self.drop

    @property
    def passed(self) -> bool:
        return within(self.judged, self.budget)

    @property
    def one_sample(self) -> float | None:
        """How much one sample moves a counted metric (1/n), else None."""
        return 1.0 / self.n if self.metric_name in COUNTED and self.n else None

    @property
    def notes(self) -> list[str]:
        """What the verdict cannot tell: a hold-out too small to resolve a drop of one budget, or one the model may
        have been trained on (a perfect score)."""
        out = []
        why = []
        one = self.one_sample
        if self.budget > 0 and one is not None and one >= self.budget / 2 - TOLERANCE:
            why.append(f"one sample is worth {one:.4g}, at least half the budget")
        if self.budget > 0 and self.ci_high is not None and self.ci_low is not None and \
                self.ci_high - self.ci_low > WIDE * self.budget:
            why.append(f"the drop's 95% interval is {self.ci_high - self.ci_low:.4g} wide, more than {WIDE:g}x the "
                       "budget")
        if why:
            out.append(f"{self.n} evaluation samples are too few to tell a drop of {self.budget:g} from noise "
                       f"({'; '.join(why)}): pass more labelled data (--data, or --eval-data apart from it)")
        if self.holdout_of_data and self.metric_name in COUNTED and self.before >= 1.0 - TOLERANCE:
            out.append(f"the model scores a perfect {self.before:.4f} on the hold-out of --data: if it was trained on "
                       "those samples, they overstate the drop; --eval-data with samples it never saw judges it "
                       "fairly")
        return out

    def interval_text(self) -> str:
        if self.ci_high is None:
            return f"no interval: {self.ci_note}" if self.ci_note else "no interval"
        return f"95% interval [{self.ci_low:+.4f}, {self.ci_high:+.4f}], paired bootstrap over {self.n} samples"

    def lines(self) -> list[str]:
        """What every command prints about the result's metric: the values, the drop against the budget, a note."""
        judged = "its 95% upper bound" if self.strict else "the drop"
        outcome = "passed" if self.passed else "refused"
        lines = [f"{self.metric_name}: {self.before_label} {self.before:.4f} -> {self.after_label} {self.after:.4f}",
                 f"drop {self.drop:+.4f} ({self.interval_text()}); allowed {self.budget:g} (--max-drop), judged on "
                 f"{judged}: {outcome}"]
        lines += [f"note: {note}" for note in self.notes]
        return lines

    def failure(self) -> str:
        """The one line a refused result gets (the command then exits 1)."""
        bound = f", its 95% upper bound {self.ci_high:+.4f}" if self.strict and self.ci_high is not None else ""
        ci = f", 95% interval [{self.ci_low:+.4f}, {self.ci_high:+.4f}]" if self.ci_high is not None else ""
        return (f"{self.metric_name} dropped from {self.before:.4f} to {self.after:.4f} ({self.drop:+.4f} worse"
                f"{ci if not bound else bound}, more than the allowed {self.budget:g}; --max-drop to change it)")

    def as_dict(self) -> dict:
        return {"metric": self.metric_name, "before": self.before, "after": self.after, "drop": self.drop,
                "ci_low": self.ci_low, "ci_high": self.ci_high, "ci_note": self.ci_note, "n": self.n,
                "budget": self.budget, "strict": self.strict, "passed": self.passed, "notes": self.notes}


def judge(metric: Metric, y, before_pred, after_pred, budget: float, *, strict: bool = False,
          resamples: int = RESAMPLES, seed: int = 0, **labels) -> Verdict:
    """The verdict from per-sample predictions of both models on the same labelled samples."""
    n = n_samples(y)
    indices = resample_indices(n, resamples, seed)
    low, high, note = interval(resampled(metric, y, before_pred, indices), resampled(metric, y, after_pred, indices),
                               metric.higher_is_better)
    return Verdict(metric.name, metric.higher_is_better, float(metric(y, before_pred)), float(metric(y, after_pred)),
                   n, budget, low, high, note, strict, **labels)


def judge_values(metric: Metric, before: float, after: float, n: int, budget: float, *, why: str,
                 strict: bool = False, **labels) -> Verdict:
    """The verdict where only the two aggregate values exist (``why``: the reason there are no per-sample pairs)."""
    return Verdict(metric.name, metric.higher_is_better, float(before), float(after), n, budget, ci_note=why,
                   strict=strict, **labels)


def judge_subject(subject, before, after, budget: float, *, strict: bool = False, **labels) -> Verdict | None:
    """The verdict on a subject's evaluation split (``before`` / ``after``: predict functions, inputs -> outputs),
    or None when it has no labels to score on. A subject scored by its own ``score_fn`` is judged on the two
    aggregate values."""
    metric = subject.metric
    if metric is None:
        return None
    labels.setdefault("holdout_of_data", bool(getattr(subject, "holdout_of_data", False)))
    test = subject.splits.test
    if subject.spec.score_fn is not None:
        why = (f"{subject.name} is scored by its own score_fn ({subject.spec.task}), not by a metric of per-sample "
               "(label, prediction) pairs, so its samples cannot be resampled")
        return judge_values(metric, subject.score_predict(before), subject.score_predict(after), n_samples(test.x),
                            budget, why=why, strict=strict, **labels)
    return judge(metric, test.y, before(test.x), after(test.x), budget, strict=strict, **labels)
