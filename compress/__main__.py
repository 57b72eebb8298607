"""python -m compress {prune,quantize}"""
from __future__ import annotations

from pathlib import Path

from models.cli import ArgumentParser, console, run
from models.errors import UserError


def _subject(args):
    from models.loading import resolve

    return resolve(args.model, tiny=args.tiny, cache=args.cache_dir, unsafe=args.unsafe)


def _training_data(subject, data_file):
    """The split pruning fine-tunes on: the zoo spec's train split, or --data x/y arrays for a user model."""
    from models.spec import Split

    if data_file:
        import numpy as np

        try:
            with np.load(data_file, allow_pickle=False) as d:
                return Split(d["x"], d["y"])
        except (OSError, KeyError, ValueError) as e:
            raise UserError(f"cannot read training data {data_file} (need an .npz with arrays x and y): {e}") from None
    if subject.splits is None:
        raise UserError(f"{subject.name} is not a zoo model: pruning fine-tunes on training data, pass --data FILE.npz "
                        "with arrays x and y")
    if subject.spec.train_fn is not None:
        raise UserError(f"{subject.name} is trained by a custom loop ({subject.spec.task}); "
                        "fine-tuning by fit() does not apply to it")
    return subject.splits.train


def _metric(subject, model):
    from models.training import keras_predict

    if subject.spec is None:
        return None
    return subject.spec.score(keras_predict(model), subject.splits.test, subject.config)


def _prune(args):
    from rich.table import Table

    from models.artifacts import atomic_path, sizes

    from .pruning import SCHEDULES, prune, sparsity_report

    if not 0.0 <= args.sparsity < 1.0:
        raise UserError(f"--sparsity must be in [0, 1), got {args.sparsity}")
    if args.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {args.epochs}")
    if args.schedule not in SCHEDULES:
        raise UserError(f"unknown schedule {args.schedule!r}; valid: {', '.join(SCHEDULES)}")
    out_path = Path(args.output or f"{Path(args.model).stem}-pruned{int(args.sparsity * 100)}.keras")
    if out_path.suffix != ".keras":
        raise UserError(f"output {out_path} must end in .keras")
    out = console()
    with out.status(f"preparing {args.model}..."):
        subject = _subject(args)
        train = _training_data(subject, args.data)
    loss = subject.spec.loss if subject.spec else (subject.model.loss or None)
    if loss is None:
        raise UserError(f"{subject.name} was saved without a loss; compile it before saving to fine-tune it")
    before = _metric(subject, subject.model)
    with out.status(f"pruning to {args.sparsity:.0%} with {args.epochs} fine-tuning epoch(s)..."):
        pruned, outcome = prune(subject.model, train, loss, sparsity=args.sparsity, epochs=args.epochs,
                                schedule=args.schedule, batch_size=(subject.config or {}).get("batch_size", 32))
    after = _metric(subject, pruned)
    table = Table(title=f"{subject.name}: sparsity per layer")
    for col in ("layer", "weights", "zeros", "sparsity"):
        table.add_column(col)
    for row in sparsity_report(pruned):
        table.add_row(row.layer, str(row.weights), str(row.zeros), f"{row.sparsity:.1%}")
    out.print(table)
    for layer, reason in outcome.skipped.items():
        out.print(f"skipped {layer}: {reason}")
    if not outcome.ran:
        raise UserError(outcome.reason())
    with atomic_path(out_path) as tmp:
        pruned.save(tmp)
    if before is not None:
        out.print(f"{subject.spec.metric.name}: before {before:.4f} -> after {after:.4f}")
    src_raw, src_gz = sizes(subject.path)
    raw, gz = sizes(out_path)
    out.print(f"size: {src_raw / 1024:.1f} KiB -> {raw / 1024:.1f} KiB raw; gzip {src_gz / 1024:.1f} KiB -> "
              f"{gz / 1024:.1f} KiB ({src_gz / max(gz, 1):.2f}x smaller)")
    out.print(f"wrote {out_path}")


def _quantize(args):
    """Post-training quantization produces an exported file, so this runs the export pipeline with a recipe."""
    from export.cli_common import default_output, report
    from export.exporter import export

    from .ptq import QuantRecipe

    try:
        recipe = QuantRecipe(args.format, args.mode)
    except ValueError as e:
        raise UserError(str(e)) from None
    out = console()
    with out.status(f"preparing {args.model}..."):
        subject = _subject(args)
    path = Path(args.output or default_output(subject.name, args.format, args.mode))
    with out.status(f"quantizing to {recipe}..."):
        result = export(subject, recipe, path, check=not args.no_validate)
    report(out, result, subject)


def _common(p):
    p.add_argument("model", metavar="MODEL", help="zoo name (trained on demand) or path to a .keras/.h5 file")
    p.add_argument("-o", "--output", default=None)
    p.add_argument("--tiny", action="store_true", help="use the zoo model's tiny configuration")
    p.add_argument("--unsafe", action="store_true", help="allow Lambda layers / serialized code in the model file")
    p.add_argument("--cache-dir", default=None)


def main(argv=None):
    parser = ArgumentParser(prog="python -m compress", description="Compression techniques for tf.keras models.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prune", help="magnitude pruning (tfmot) with fine-tuning, stripped before saving")
    _common(p)
    p.add_argument("--sparsity", type=float, default=0.5, help="target fraction of zero weights, in [0, 1)")
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs")
    p.add_argument("--schedule", default="polynomial", help="polynomial | constant")
    p.add_argument("--data", default=None, help="training data for a user model: .npz with arrays x and y")
    p.set_defaults(fn=_prune)
    p = sub.add_parser("quantize", help="post-training quantization to TFLite or ONNX")
    _common(p)
    p.add_argument("--format", required=True, help="tflite | onnx")
    p.add_argument("--mode", required=True, help="dynamic | float16 (tflite) | int8")
    p.add_argument("--no-validate", action="store_true")
    p.set_defaults(fn=_quantize)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(run(main))
