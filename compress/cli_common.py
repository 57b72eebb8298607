"""Plumbing shared by the ``python -m compress`` subcommands: option checks, loading, fine-tuning plans, output."""
from __future__ import annotations

import math
from pathlib import Path

from models.errors import CheckFailed, UserError
from models.verdict import NOTHING_WRITTEN, judge_subject

TECHNIQUE_COMMANDS = ("prune", "cluster", "qat", "channel-prune")


# ------------------------------------------------------------------------------------------------ validation


def check_output(path: Path, suffixes: tuple[str, ...]) -> Path:
    if path.suffix not in suffixes:
        raise UserError(f"output {path} must end in {' or '.join(suffixes)}")
    return path


def validate(args) -> None:
    """Option checks that need no model: fail in one line before anything is loaded or trained."""
    if (getattr(args, "epochs", None) or 0) < 0:
        raise UserError(f"--epochs must be >= 0 (0: one-shot, no fine-tuning), got {args.epochs}")
    if getattr(args, "lr", None) is not None and args.lr <= 0:
        raise UserError(f"--lr must be > 0, got {args.lr}")
    if getattr(args, "max_drop", None) is not None and not math.isfinite(args.max_drop):
        raise UserError(f"--max-drop must be a finite number, got {args.max_drop}")
    if getattr(args, "limit", None) is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    if args.command == "prune":
        from compress.techniques.pruning import SCHEDULES  # deferred: compress.techniques.pruning loads TensorFlow

        if not 0.0 <= args.sparsity < 1.0:
            raise UserError(f"--sparsity must be in [0, 1), got {args.sparsity}")
        if args.schedule not in SCHEDULES:
            raise UserError(f"unknown schedule {args.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if args.structure not in (None, "2:4"):
            try:
                m, n = (int(v) for v in args.structure.split(":"))
                if not 0 < m < n:
                    raise ValueError
            except ValueError:
                raise UserError(f"--structure must be M:N with 0 < M < N (e.g. 2:4), got {args.structure!r}") from None
    if args.command in ("cluster", "qat"):
        from compress.techniques.clustering import INITS  # deferred: compress.techniques.clustering loads TensorFlow

        if args.init not in INITS:
            raise UserError(f"unknown centroid init {args.init!r}; valid: {', '.join(INITS)}")
    if args.command == "cluster" and args.clusters < 2:
        raise UserError(f"--clusters must be >= 2, got {args.clusters}")
    if args.command == "qat":
        if args.scheme not in ("default", "pqat", "cqat"):
            raise UserError(f"unknown scheme {args.scheme!r}; valid: default, pqat, cqat")
        if not 0.0 <= args.sparsity < 1.0:
            raise UserError(f"--sparsity must be in [0, 1), got {args.sparsity}")
        if args.clusters != 0 and args.clusters < 2:
            raise UserError(f"--clusters must be 0 (keep the model's clusters) or >= 2, got {args.clusters}")
    if args.command == "channel-prune":
        from compress.techniques.channels import CRITERIA  # deferred: compress.techniques.channels loads TensorFlow

        if not 0.0 < args.ratio < 1.0:
            raise UserError(f"--ratio must be in (0, 1), got {args.ratio}")
        if args.criterion not in CRITERIA:
            raise UserError(f"unknown criterion {args.criterion!r}; valid: {', '.join(CRITERIA)}")
    if args.command in TECHNIQUE_COMMANDS:
        suffixes = (".tflite", ".keras") if args.command == "qat" else (".keras",)
        if args.output:
            check_output(Path(args.output), suffixes)


# --------------------------------------------------------------------------------------------------- helpers


def load_subject(args):
    from models.subject import Source, resolve  # deferred: only the subcommand that calls this needs it (CLI start-up)

    return resolve(Source.from_args(args))


def refuse_techniques(subject) -> None:
    """One line and exit 2 when tfmot's techniques cannot run on the model (a Keras 3 graph served as it is)."""
    refused = subject.techniques_refused()
    if refused:
        raise UserError(refused)


def finetune_plan(args, subject):
    """The fine-tuning plan on the subject's training data (zoo split or --data), or one-shot with the reason."""
    from compress.techniques import finetune  # deferred: compress.techniques.finetune loads TensorFlow

    plan = finetune.for_spec(subject.spec, subject.config or {}, subject.splits,
                             epochs=None if args.epochs is None else max(args.epochs, 1), lr=args.lr,
                             limit=args.limit, seed=args.tune_seed)
    if args.epochs == 0:
        return plan.without("--epochs 0 (one-shot)")
    if plan.reason and subject.splits.train.y is None:
        return plan.without("no labelled training data (pass --data with labels: an .npz with x and y, a .csv with "
                            "--label, or an image folder)")
    return plan


def apply_technique(args, out, doing: str, technique, native=None):
    """Load MODEL and its fine-tuning plan, then ``technique(model, plan)`` from ``--seed``; one line if it cannot
    run. ``native(keras3_model, plan)``: the technique for a Keras 3 graph the tf_keras bridge cannot rebuild (it
    works on the Keras 3 model itself, without tfmot); without one such a model is refused with the reason.

    Returns (subject, plan, new model, outcome).
    """
    from models.engines.native import serving_of  # deferred: only the subcommand that calls this needs it
    from models.training import seed_everything  # deferred: models.training loads TensorFlow

    with out.status(f"preparing {args.model}..."):
        subject = load_subject(args)
        serving = serving_of(subject.model) if native is not None else None
        if serving is None:
            refuse_techniques(subject)
        plan = finetune_plan(args, subject)
    for line in subject.describe():
        out.print(line)
    seed_everything(args.tune_seed)  # the same command and --seed give the same model (and file)
    with out.status(f"{doing} ({plan.describe()})..."):
        model, outcome = native(serving.model, plan) if serving is not None else technique(subject.model, plan)
    if not outcome.ran:
        raise UserError(outcome.reason())
    return subject, plan, model, outcome


def gate(args, out, subject, model, label: str = "after"):
    """The accuracy gate (models.verdict) on a Keras result, before anything is written: print the verdict's lines;
    a refused result is CheckFailed (exit 1, nothing written) unless --no-validate. Returns the Verdict (None: no
    labels to judge on)."""
    from models.training import keras_predict  # deferred: models.training loads TensorFlow

    verdict = judge_subject(subject, keras_predict(subject.model), keras_predict(model), args.max_drop,
                            after_label=label)
    report_verdict(out, verdict, written_anyway=args.no_validate)
    return verdict


def report_verdict(out, verdict, written_anyway: bool) -> None:
    """Print a verdict's lines; raise CheckFailed when it refused the result and it is not written anyway."""
    if verdict is None:
        out.print("accuracy unknown: no labelled data to score the model on; --data fixes it")
        return
    for line in verdict.lines():
        out.print(line)
    if not verdict.passed and not written_anyway:
        raise CheckFailed(f"{verdict.failure()}; {NOTHING_WRITTEN}")
    if not verdict.passed:
        out.print(f"warning: {verdict.failure()} (written anyway: --no-validate)")


def print_outcome(out, outcome, plan) -> None:
    out.print(outcome.summary())
    # the technique's own account of its recipe (e.g. where pruning's sparsity schedule ends) when it gives one
    out.print(f"fine-tuning: {outcome.details.get('fine_tuning') or plan.describe()}")
    if outcome.details.get("kept_dense"):
        out.print(f"kept dense: {outcome.details['kept_dense']}")
    for layer, reason in outcome.skipped.items():
        out.print(f"  skipped {layer}: {reason}")


def print_result(out, subject, out_path) -> None:
    """Sizes before and after, and where the result went (its metric was said by the gate)."""
    from models.artifacts import sizes  # deferred: only the subcommand that calls this needs it (CLI start-up)

    src_raw, src_gz = sizes(subject.path) if subject.path.is_file() else (0, 0)
    raw, gz = sizes(out_path)
    out.print(f"size: {src_raw / 1024:.1f} KiB -> {raw / 1024:.1f} KiB raw; gzip {src_gz / 1024:.1f} KiB -> "
              f"{gz / 1024:.1f} KiB ({src_gz / max(gz, 1):.2f}x smaller)")
    out.print(f"wrote {out_path}")
