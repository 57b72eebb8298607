"""Plumbing shared by the ``python -m compress`` subcommands: option checks, loading, fine-tuning plans, output."""
from __future__ import annotations

from pathlib import Path

from models.errors import UserError

TECHNIQUE_COMMANDS = ("prune", "cluster", "qat", "channel-prune")


# ------------------------------------------------------------------------------------------------ validation


def check_output(path: Path, suffixes: tuple[str, ...]) -> Path:
    if path.suffix not in suffixes:
        raise UserError(f"output {path} must end in {' or '.join(suffixes)}")
    return path


def validate(args) -> None:
    """Option checks that need no model: fail in one line before anything is loaded or trained."""
    if getattr(args, "epochs", 1) < 0:
        raise UserError(f"--epochs must be >= 0 (0: one-shot, no fine-tuning), got {args.epochs}")
    if getattr(args, "lr", 1.0) <= 0:
        raise UserError(f"--lr must be > 0, got {args.lr}")
    if getattr(args, "limit", None) is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    if args.command == "prune":
        from .pruning import SCHEDULES

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
        from .clustering import INITS

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
        from .channels import CRITERIA

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
    from models.loading import resolve

    return resolve(args.model, tiny=args.tiny, cache=args.cache_dir, unsafe=args.unsafe)


def user_data(data_file):
    import numpy as np

    from models.spec import Split

    try:
        with np.load(data_file, allow_pickle=False) as d:
            return Split(d["x"], d["y"])
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"cannot read training data {data_file} (need an .npz with arrays x and y): {e}") from None


def finetune_plan(args, subject):
    """The fine-tuning plan: the zoo spec's train split, --data for a user model, or one-shot with the reason."""
    from . import finetune

    if args.epochs == 0:
        plan = finetune.FineTune(reason="--epochs 0 (one-shot)")
        if subject.spec is not None:
            plan.calibration = subject.spec.calibration(subject.splits, 64)
        return plan
    if args.data:
        return finetune.for_user_model(subject.model, user_data(args.data), epochs=args.epochs,
                                       batch_size=(subject.config or {}).get("batch_size", 32), lr=args.lr)
    if subject.spec is None:
        return finetune.for_user_model(subject.model, None)
    return finetune.for_spec(subject.spec, subject.config, subject.splits, epochs=args.epochs, lr=args.lr,
                             limit=args.limit)


def metric_of(subject, model):
    from models.training import evaluate

    if subject.spec is None:
        return None
    return evaluate(subject.spec, model, subject.splits, subject.config)


def apply_technique(args, out, doing: str, technique):
    """Load MODEL and its fine-tuning plan, score it, then ``technique(model, plan)``; one line if it cannot run.

    Returns (subject, plan, metric before, new model, outcome).
    """
    with out.status(f"preparing {args.model}..."):
        subject = load_subject(args)
        plan = finetune_plan(args, subject)
    before = metric_of(subject, subject.model)
    with out.status(f"{doing} ({plan.describe()})..."):
        model, outcome = technique(subject.model, plan)
    if not outcome.ran:
        raise UserError(outcome.reason())
    return subject, plan, before, model, outcome


def print_outcome(out, outcome, plan) -> None:
    out.print(outcome.summary())
    out.print(f"fine-tuning: {plan.describe()}")
    for layer, reason in outcome.skipped.items():
        out.print(f"  skipped {layer}: {reason}")


def print_result(out, subject, before, after, out_path, label="after") -> None:
    from models.artifacts import sizes

    if before is not None:
        out.print(f"{subject.spec.metric.name}: before {before:.4f} -> {label} {after:.4f}")
    src_raw, src_gz = sizes(subject.path) if subject.path.is_file() else (0, 0)
    raw, gz = sizes(out_path)
    out.print(f"size: {src_raw / 1024:.1f} KiB -> {raw / 1024:.1f} KiB raw; gzip {src_gz / 1024:.1f} KiB -> "
              f"{gz / 1024:.1f} KiB ({src_gz / max(gz, 1):.2f}x smaller)")
    out.print(f"wrote {out_path}")


def save_keras(model, path: Path) -> None:
    from models.artifacts import atomic_path

    with atomic_path(path) as tmp:
        model.save(tmp)
