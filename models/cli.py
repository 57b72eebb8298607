"""Shared command-line plumbing: one-line errors, exit codes, rich console."""
from __future__ import annotations

import argparse
import os
import sys

from models.errors import CheckFailed, UserError
from models.verdict import DEFAULT_MAX_DROP


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad usage in one line (exit 2) instead of usage + error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str, option: str, also: str | None = None) -> int | str:
    """``option``'s value as a positive integer (or the literal ``also``), else a one-line UserError."""
    if also is not None and text == also:
        return text
    expected = "a positive integer" + (f" or {also!r}" if also else "")
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"{option} must be {expected}, got {text!r}") from None
    if value < 1:
        raise UserError(f"{option} must be {expected}, got {value}")
    return value


def console(stderr: bool = False):
    """A rich console; when output is piped, wide enough that tables are not wrapped at 80 columns."""
    from rich.console import Console  # deferred: rich costs ~70 ms of every command's start-up, --help included

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 160
    return Console(stderr=stderr, highlight=False, width=width)


def run(main, argv=None) -> int:
    """Run a CLI main: user errors and failed checks become one line on stderr and an exit code."""
    try:
        return int(main(argv) or 0)
    except (UserError, CheckFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # never a traceback for the user; CT_DEBUG=1 shows it
        if os.environ.get("CT_DEBUG"):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"error: {type(e).__name__}: {first[:300]} (set CT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 3


def input_paths(args) -> list[str]:
    """What a command reads (MODEL or --models, --data, --eval-data, --custom-objects): never one of its outputs."""
    found = list(getattr(args, "models", None) or [])
    for key in ("model", "data", "eval_data", "custom_objects"):
        if getattr(args, key, None):
            found.append(getattr(args, key))
    return found


def add_subject_args(p, max_drop: bool = False):
    """The options that say what a MODEL is judged on: its data, metric and code (every command that takes MODEL)."""
    p.add_argument("--data", default=None, metavar="PATH",
                   help="your data: .npz (x and y, or one array per input + y), a .csv (with --label), a folder of "
                        "images (one sub-folder per class) or an .npy of inputs only; a seeded 20%% hold-out "
                        "scores the metric unless --eval-data is given")
    p.add_argument("--eval-data", default=None, metavar="PATH", help="evaluation data apart from --data (same formats)")
    p.add_argument("--metric", default=None, metavar="NAME",
                   help="accuracy | top5_accuracy | roc_auc (auc) | pr_auc | mse | mae | rmse (default: from the "
                        "model's compile config and output)")
    p.add_argument("--label", default=None, metavar="COLUMN", help="the label column of a .csv --data file")
    p.add_argument("--custom-objects", default=None, metavar="FILE.py|MODULE",
                   help="import your code (custom layers, losses, metrics) so the model loads; runs that code")
    if max_drop:
        add_max_drop(p)


def add_max_drop(p, no_validate: bool = False):
    """The accuracy gate's options, the same on every command that writes a compressed model (models.verdict)."""
    p.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP, metavar="DROP",
                   help="the accuracy gate: a result whose metric on the evaluation data drops more than DROP (in the "
                        "metric's units; inclusive, with a paired bootstrap 95%% interval printed) is refused: exit 1, "
                        f"nothing written (default {DEFAULT_MAX_DROP:g}: one point of accuracy)")
    if no_validate:
        p.add_argument("--no-validate", action="store_true",
                       help="write the result even if the accuracy gate (or an export's parity check) refuses it (the "
                            "numbers are still printed)")
