"""``compress auto``: the smallest or fastest exported file within an accuracy budget, per runtime.

A bounded, cheap-first search. Per runtime: the fp32 baseline, then post-training quantization (TFLite
dynamic/float16/int8/16x8; ONNX float16/dynamic/int8 in the flavour measured fastest on this host), then,
only where the default int8 loses more than the budget, ONNX's other int8 flavours, per-tensor weights and
entropy/percentile calibration, and mixed precision (the most sensitive layers kept in float); last the Keras
techniques (50% and 2:4 pruning, 16 clusters, 25%/50% channel pruning), each exported fp32 and chained with
int8. Every candidate is the real file, scored on the real runtime (compress.auto.evaluator); the search log
(compress.auto.log) makes a rerun skip what it scored. A candidate that cannot be built is kept with its
reason. The choice is the fastest (or smallest) candidate whose drop is within the budget; when none is, the
one with the smallest drop is written anyway and the output says the budget was not reached.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from models import verdict as gate
from models.artifacts import claim_output_dir, key_of, remove_stale_temps, scratch_dir, sha256_file, write_json
from models.errors import UserError
from models.loading import load_keras
from compress.techniques.saving import save_keras
from export.quantize import mixed_precision, sensitivity
from export.quantize.int8_choice import FLAVOURS, host_description
from export.quantize.ptq import QuantRecipe

from compress.auto import choice as auto_choice, evaluator as auto_eval, log as auto_log, report as auto_report
from compress.auto.candidates import (DEFAULT_RUNTIMES, EXT, LOG_NAME, PTQ_MODES, TECHNIQUES, TIE, AutoResult,  # noqa: F401
                        AutoSpec, Candidate, RuntimeChoice, Technique, runtime_format)
from compress.auto.evaluator import score_file
from compress.auto.log import candidate_key


class _TimeUp(Exception):
    pass


# ---------------------------------------------------------------------------------------------------- search

class _Search:
    def __init__(self, subject, spec: AutoSpec, progress: Callable | None):
        from compress.techniques import finetune  # deferred: compress.techniques.finetune loads TensorFlow

        self.subject, self.spec, self.progress = subject, spec, progress or (lambda c: None)
        self.t0 = time.monotonic()
        self.deadline = None if spec.time_budget_min is None else self.t0 + spec.time_budget_min * 60
        self.formats = {rt: runtime_format(rt) for rt in spec.runtimes}
        spec.out.mkdir(parents=True, exist_ok=True)
        self.log = auto_log.AutoLog(spec.out / LOG_NAME)
        self.model_hash = sha256_file(subject.path)
        host = host_description()
        self.context = {"data": auto_log.data_digest(subject.splits), "metric": subject.metric.name,
                        "host": {k: host[k] for k in ("cpu", "machine", "cores", "onnxruntime")},
                        "resamples": spec.resamples, "seed": spec.seed, "tune_seed": spec.tune_seed}
        self.ref = auto_eval.reference(subject, spec.resamples, spec.seed)
        self.budget = spec.max_drop * abs(self.ref.value) if spec.relative else spec.max_drop
        self.plan = finetune.for_spec(subject.spec, subject.config or {}, subject.splits, seed=spec.tune_seed)
        self.base = [subject.path.name] if subject.spec.task == "user model" else ["train"]
        self.candidates: list[Candidate] = []
        self.seen: dict[str, Candidate] = {}
        self.sources: dict[str, object] = {}  # technique id -> Subject, or the reason it cannot be built
        self.sensitivity: dict[str, dict] = {}
        self.notes: list[str] = []
        self.stopped_early = False
        self.new = 0
        self.kept: dict[str, Path] = {}  # key -> file of a candidate inside the budget, for the final re-timing
        remove_stale_temps(spec.out)  # the scratch folders of killed searches
        self.scratch = scratch_dir(spec.out)  # candidate files, removed once scored; the folder goes at the end

    # -- one candidate ------------------------------------------------------------------------------------
    def time_up(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def passes(self, c: Candidate | None) -> bool:
        if c is None or c.status != "scored":
            return False
        return gate.within(c.ci_high if self.spec.strict else c.drop, self.budget)

    def run(self, runtime: str, recipe: QuantRecipe, stage: str, technique: Technique | None = None,
            always: bool = False) -> Candidate:
        tech_id = f"{technique.id}[{self.plan.describe()}]" if technique else "fp32"
        key = candidate_key(self.model_hash, f"{tech_id}|{recipe}", runtime, self.context)
        chain = self.base + ([technique.step] if technique else []) + [str(recipe)]
        if key in self.seen:  # asked again in this run (mixed precision starts from the int8 already scored)
            return self.seen[key]
        row = self.log.get(key)
        if row is not None:
            cand = Candidate(**{k: v for k, v in row.items() if k in Candidate.LOGGED}, resumed=True)
        elif not always and self.time_up():
            self.stopped_early = True
            cand = Candidate(runtime, chain, stage, asdict(recipe), technique and technique.id, key,
                             status="not scored", reason=f"the --time-budget of {self.spec.time_budget_min:g} min "
                                                         "was spent before it")
        else:
            cand = self._build_and_score(runtime, recipe, stage, technique, key, chain)
            self.log.put(key, cand.logged())
            self.new += 1
        cand.within_budget = self.passes(cand) if cand.status == "scored" else None
        self.seen[key] = cand
        self.candidates.append(cand)
        self.progress(cand)
        return cand

    def _build_and_score(self, runtime, recipe, stage, technique, key, chain) -> Candidate:
        from export.exporter import export  # deferred: export.exporter loads TensorFlow
        from export.onnx import int8_flavour  # deferred: export.onnx loads TensorFlow

        t = time.monotonic()
        cand = Candidate(runtime, chain, stage, asdict(recipe), technique and technique.id, key)
        path = self.scratch / runtime / f"{key}.{EXT[recipe.format]}"
        try:
            source = self.source(technique)
            resolved, notes = int8_flavour(source, recipe, cache=self.spec.cache)
            cand.recipe, cand.notes = asdict(resolved), list(notes)
            cand.chain = chain[:-1] + [str(resolved)]
            path.parent.mkdir(parents=True, exist_ok=True)
            result = export(source, resolved, path, chain=chain[:-1], check=False)
            cand.notes += result.notes
            score = score_file(self.subject, self.ref, path, runtime)
            for k, v in score.as_dict().items():
                setattr(cand, k, v)
        except _Unbuildable as e:
            cand.status, cand.reason = "rejected", str(e)
        except Exception as e:  # a converter or runtime that cannot handle the model: kept with its reason
            first = (str(e).strip().splitlines() or [""])[0][:300]
            kind = "" if isinstance(e, UserError) else f"{type(e).__name__}: "  # a UserError is already a sentence
            cand.status, cand.reason = "rejected", f"cannot be built or run: {kind}{first}".rstrip(": ")
        finally:
            if cand.status == "scored" and self.passes(cand) and path.exists():
                self.kept[key] = path  # a finalist, maybe: timed again beside the others at the end
            else:
                for p in (path, Path(f"{path}.json")):
                    p.unlink(missing_ok=True)
        cand.seconds = time.monotonic() - t
        return cand

    def source(self, technique: Technique | None):
        """The Subject a candidate is exported from: the model itself, or its technique result (built once per
        search directory, shared by every runtime)."""
        if technique is None:
            return self.subject
        if technique.id not in self.sources:
            try:
                self.sources[technique.id] = self._technique(technique)
            except _Unbuildable as e:
                self.sources[technique.id] = str(e)
        found = self.sources[technique.id]
        if isinstance(found, str):
            raise _Unbuildable(found)
        return found

    def _technique(self, technique: Technique):
        directory = self.spec.out / "techniques"
        directory.mkdir(parents=True, exist_ok=True)
        path, meta_path = directory / f"{technique.id}.keras", directory / f"{technique.id}.json"
        key = key_of({"model": self.model_hash, "data": self.context["data"], "technique": technique.id,
                      "plan": self.plan.describe(), "seed": self.plan.seed})
        meta = None
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
            except ValueError:
                meta = None
            if meta is not None and (meta.get("key") != key or (meta.get("reason") is None and not path.exists())):
                meta = None
        if meta is None:
            if self.subject.keras == "savedmodel":
                meta = {"key": key, "reason": f"{technique.step} needs Keras layers; this SavedModel has none "
                                              "(pass the .keras file)"}
            elif self.subject.techniques_refused():
                meta = {"key": key, "reason": self.subject.techniques_refused(technique.step)}
            else:
                from models.training import seed_everything  # deferred: models.training loads TensorFlow

                seed_everything(self.plan.seed)  # the same search and --seed build the same technique result
                try:
                    model, outcome = technique.apply(self.subject.model, self.plan)
                    reason = None if outcome.ran else outcome.reason()
                except Exception as e:
                    first = (str(e).strip().splitlines() or [""])[0][:300]
                    model, outcome, reason = None, None, f"{technique.step} failed: {type(e).__name__}: {first}"
                meta = {"key": key, "reason": reason}
                if reason is None:
                    save_keras(model, path)
                    meta.update(summary=outcome.summary(), skipped=outcome.skipped,
                                fine_tuning=outcome.details.get("fine_tuning") or self.plan.describe(),
                                details={k: v for k, v in outcome.details.items() if k != "fine_tuning"})
            write_json(meta_path, meta)
        if meta.get("reason"):
            raise _Unbuildable(meta["reason"])
        model = load_keras(path, custom_objects=self.subject.custom_objects)
        subject = dataclasses.replace(self.subject, model=model, path=path)
        subject.notes = [f"{technique.step}: {meta['summary']}; fine-tuning: {meta['fine_tuning']}"]
        return subject

    # -- the stages -----------------------------------------------------------------------------------------
    def search(self) -> None:
        spec = self.spec
        fp32 = {rt: self.run(rt, QuantRecipe(fmt, "fp32"), "baseline", always=True)
                for rt, fmt in self.formats.items()}
        self.fp32 = fp32
        int8 = {}
        for rt, fmt in self.formats.items():
            for mode in PTQ_MODES[fmt]:
                c = self.run(rt, QuantRecipe(fmt, mode), "ptq")
                if mode == "int8":
                    int8[rt] = c
        for rt, fmt in self.formats.items():
            if int8[rt].status == "not scored" or self.passes(int8[rt]):
                continue
            best = int8[rt]
            if fmt == "onnx" and best.status == "scored":
                best = self._onnx_fallbacks(rt, best)
            if spec.mixed_precision and best.status == "scored" and not self.passes(best):
                self._mixed(rt, best)
        chosen = [t for t in TECHNIQUES if spec.techniques is None or t.id in spec.techniques]
        for technique in chosen:
            for rt, fmt in self.formats.items():
                self.run(rt, QuantRecipe(fmt, "fp32"), "technique", technique)
                self.run(rt, QuantRecipe(fmt, "int8"), "technique", technique)

    def _onnx_fallbacks(self, rt: str, default: Candidate) -> Candidate:
        """Other int8 flavours, per-tensor weights and histogram calibration: only when the default fails."""
        base = default.quant_recipe()
        recipes = [dataclasses.replace(base, onnx_int8=f) for f in FLAVOURS if f != base.onnx_int8]
        recipes += [dataclasses.replace(base, per_channel=False)]
        recipes += [dataclasses.replace(base, calibration=m) for m in ("entropy", "percentile")]
        best = default
        for recipe in recipes:
            c = self.run(rt, recipe, "fallback")
            if c.status == "scored" and (best.drop is None or c.drop < best.drop):
                best = c
            if self.passes(c):
                return c
        return best

    def _mixed(self, rt: str, int8: Candidate) -> None:
        """Keep the fewest, most sensitive layers in float that bring int8 inside the budget."""
        recipe = int8.quant_recipe()
        if self.time_up():
            self.sensitivity[rt] = {"skipped": "mixed precision not tried: the --time-budget was spent"}
            self.stopped_early = True
            return
        try:
            ranking = sensitivity.rank(self.subject, recipe, calibration=None)
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0][:300]
            self.sensitivity[rt] = {"skipped": f"sensitivity ranking failed: {type(e).__name__}: {first}"}
            return

        def drop_of(kept) -> float:
            c = self.run(rt, dataclasses.replace(recipe, exclude=tuple(kept)), "mixed")
            if c.status == "not scored":
                raise _TimeUp
            bound = (c.ci_high if self.spec.strict else c.drop) if c.status == "scored" else None
            return math.inf if bound is None else float(bound)

        entry = {"recipe": str(recipe), "ranking": [_plain(r) for r in ranking]}
        try:
            mp = mixed_precision.keep_in_float(ranking, drop_of, self.budget)
            entry.update(kept_float=list(mp.kept_float), drop=mp.drop, within_budget=mp.within_budget,
                         steps=[_plain(s) for s in mp.steps])
        except _TimeUp:
            entry["stopped"] = "the --time-budget was spent during the search"
        self.sensitivity[rt] = entry

    def write_best(self, choice: RuntimeChoice) -> None:
        """Export the chosen candidate again through export() (metadata, parity check, atomic writes) as
        DIR/best-<runtime>.<ext>; if the bytes differ from the scored file's, score the written one."""
        from export.exporter import export  # deferred: export.exporter loads TensorFlow

        c = choice.candidate
        if c is None:
            return
        technique = next((t for t in TECHNIQUES if t.id == c.technique), None)
        source = self.source(technique)
        recipe = c.quant_recipe()
        path = self.spec.out / f"best-{c.runtime}.{EXT[recipe.format]}"
        try:
            result = export(source, recipe, path, chain=c.chain[:-1], enforce=False, max_drop=self.budget)
        except Exception as e:  # it was built once; a second failure is said, the search's results are kept
            first = (str(e).strip().splitlines() or [""])[0][:300]
            choice.message += f"; but writing {path.name} failed: {type(e).__name__}: {first}"
            return
        choice.path = path
        if result.failed_check:
            c.notes.append(f"export check of the written file: {result.validation.failure()}")
        if sha256_file(path) != c.sha256:
            score = score_file(self.subject, self.ref, path, c.runtime)
            c.notes.append(f"the written file differs from the scored one (a non-deterministic converter): it was "
                           f"scored again ({self.ref.metric_name} {c.metric:.4f} -> {score.metric:.4f})")
            for k, v in score.as_dict().items():
                setattr(c, k, v)
            n_scored = sum(x.runtime == c.runtime and x.status == "scored" for x in self.candidates)
            auto_choice.describe(self, choice, n_scored)


class _Unbuildable(Exception):
    """A candidate that cannot be built (technique not applicable, nothing to convert); the message says why."""


def _plain(obj):
    if dataclasses.is_dataclass(obj):
        return {k: _plain(v) for k, v in asdict(obj).items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


# ------------------------------------------------------------------------------------------------------ entry

def output_names(spec: AutoSpec) -> list[str]:
    """Everything a search writes in its folder (and so may replace there on a rerun)."""
    names = ["auto.json", "report.md", "report.html", LOG_NAME, "techniques"]
    for rt in spec.runtimes:
        ext = EXT[runtime_format(rt)]
        names += [f"best-{rt}.{ext}", f"best-{rt}.{ext}.json"]
    return names


def claim_output(spec: AutoSpec, inputs=(), take: bool = True) -> None:
    """Make ``spec.out`` this search's folder, or refuse in one line (a folder of the user's, an input among
    what the search writes): models.artifacts.claim_output_dir (``take=False``: only check)."""
    claim_output_dir(spec.out, output_names(spec), "compress auto", inputs, take=take)


def auto(subject, spec: AutoSpec, progress: Callable[[Candidate], None] | None = None,
         say: Callable[[str], None] | None = None) -> AutoResult:
    """Search ``subject``'s compressed files per runtime, write the chosen ones, auto.json and the reports.

    ``progress(candidate)`` is called once per candidate as it is scored (or found in the log, or rejected);
    ``say(line)`` gets what the search is about to do.
    """
    if subject.metric is None:
        raise UserError(f"{subject.name} has no labelled data, so an accuracy budget cannot be checked: pass --data "
                        "FILE with labels (an .npz with x and y, a .csv with --label, or an image folder)")
    claim_output(spec, [subject.path])
    search = _Search(subject, spec, progress)
    try:
        return _finish(search, subject, spec, say)
    finally:
        shutil.rmtree(search.scratch, ignore_errors=True)  # a folder of its own: only candidate files are in it


def _finish(search: _Search, subject, spec: AutoSpec, say) -> AutoResult:
    if say is not None:
        ref = search.ref
        say(f"fp32 Keras {ref.metric_name}: {ref.value:.4f} on {ref.n} test samples; searching "
            f"{', '.join(spec.runtimes)} for the {'smallest' if spec.target == 'size' else 'fastest'} file whose "
            f"drop{' (95% upper bound)' if spec.strict else ''} is at most {search.budget:.4g}; fine-tuning: "
            f"{search.plan.describe()}")
    search.search()
    auto_choice.retime_finalists(search)
    choices = auto_choice.choose(search)
    for choice in choices.values():
        if choice.reachable or spec.write_unreachable:  # the gate: a file outside the budget is not handed over
            search.write_best(choice)
    if search.stopped_early:
        n = sum(c.status == "not scored" for c in search.candidates)
        search.notes.append(f"stopped early: the --time-budget of {spec.time_budget_min:g} min was spent; "
                            f"{n} candidate(s) not scored, chose among the "
                            f"{sum(c.status == 'scored' for c in search.candidates)} scored")
    if search.plan.reason:
        search.notes.append(f"techniques ran one-shot (no fine-tuning): {search.plan.reason}")
    result = AutoResult(spec.out, subject.name, search.ref.metric_name, search.ref.higher_is_better,
                        search.ref.value, search.budget, spec, search.candidates, choices, search.plan.describe(),
                        search.sensitivity, search.stopped_early, time.monotonic() - search.t0, search.new,
                        search.notes)
    write_json(spec.out / "auto.json", result.as_json())
    auto_report.write(result)
    return result
