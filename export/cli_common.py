"""Printing export results (shared by `python -m export` and `python -m compress quantize`)."""
from __future__ import annotations

from models.artifacts import OutputFiles, claim_output_file
from models.cli import input_paths
from models.errors import CheckFailed
from models.verdict import NOTHING_WRITTEN


def add_model_args(p):
    from models.cli import add_subject_args  # deferred: only the subcommand that calls this needs it (CLI start-up)

    p.add_argument("model", metavar="MODEL", help="path to your .keras/.h5 file or SavedModel (tf_keras or Keras 3), "
                                                  "or a zoo name (trained on demand)")
    add_subject_args(p, max_drop=True)
    p.add_argument("-o", "--output", default=None, help="output file (default: ./<model>[-<mode>].<ext>)")
    p.add_argument("--tiny", action="store_true", help="use the zoo model's tiny configuration")
    p.add_argument("--unsafe", action="store_true", help="allow Lambda layers / serialized code in the model file")
    p.add_argument("--no-validate", action="store_true",
                   help="write the file even if the parity check or the accuracy gate fails (the numbers are still "
                        "printed)")
    p.add_argument("--batch", default="dynamic", help="batch axis: N (static) or 'dynamic' (default)")
    p.add_argument("--allow-flex", action="store_true",
                   help="TFLite: allow TF Select ops (the app then needs the Flex delegate)")
    p.add_argument("--cache-dir", default=None)


def add_weight_algos_arg(p) -> None:
    """``--weight-algos``: post-training weight algorithms run on the Keras model before an int8 conversion."""
    p.add_argument("--weight-algos", default="", metavar="ALGO[,ALGO]",
                   help="int8/16x8: run these on the Keras model first: cle (cross-layer equalization, batch norms "
                        "folded), adaround (learned rounding, weights stored on the int8 grid), bias-correction "
                        "(empirical, from the calibration data); they run in that order whatever order is given")


def parse_batch(text: str) -> int | None:
    from models.cli import positive_int  # deferred: only the subcommand that calls this needs it (CLI start-up)

    value = positive_int(text, "--batch", also="dynamic")
    return None if value == "dynamic" else value


def default_output(name: str, fmt: str, mode: str) -> str:
    return f"{name}{'' if mode == 'fp32' else '-' + mode}.{fmt}"


def claim_export(path, args) -> OutputFiles:
    """May the exported file and its sidecar be written? (models.artifacts.claim_output_file: not an input, and
    not a file the toolkit did not write); ``.record()`` them once written."""
    return claim_output_file(path, input_paths(args), also=[f"{path}.json"])


def describe_subject(out, subject) -> None:
    """Where the model, its data and its metric came from (every command says it before it works)."""
    for line in subject.describe():
        out.print(line)


def report(out, result, subject) -> None:
    """Print sizes and validation numbers; raise CheckFailed if the parity or metric check failed."""
    v = result.validation
    for note in result.notes:
        out.print(note)
    out.print(f"{subject.name} -> {result.recipe}: {result.size / 1024:.1f} KiB (gzip {result.size_gzip / 1024:.1f} KiB)")
    if v is not None:
        from rich.table import Table  # deferred: only the subcommand that calls this needs it (CLI start-up)

        t = Table(title=f"validation on {v.n_samples} {v.inputs_from}")
        for col in ("output", "max abs error", "max rel error", "tolerance"):
            t.add_column(col)
        for o in v.outputs:
            t.add_row(o.name, f"{o.max_abs:.3g}", f"{o.max_rel:.3g}", "n/a (quantized)" if v.atol is None else f"{v.atol:.1g}")
        out.print(t)
        if v.top1_agreement is not None:
            out.print(f"top-1 agreement with Keras: {v.top1_agreement:.4f}")
        if v.verdict is not None:  # the accuracy gate's lines, as every compress command prints them
            for line in v.verdict.lines():
                out.print(line)
        elif v.metric_name:
            out.print(f"{v.metric_name}: keras fp32 {v.metric_source:.4f} -> {result.recipe} {v.metric_export:.4f}")
        elif subject.metric is None and result.recipe.mode != "fp32":
            out.print("accuracy unknown: " + ("calibrated on synthetic inputs, " if result.recipe.needs_calibration
                                              else "") + "no labelled data to score the file on; --data fixes it")
    if result.written:
        out.print(f"wrote {result.path} (+ {result.path.name}.json)")
    if result.failed_check and not result.written:
        raise CheckFailed(f"{v.failure()}; {NOTHING_WRITTEN}")
    if result.failed_check:
        out.print(f"warning: {v.failure()} (written anyway: --no-validate)")
