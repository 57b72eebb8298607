"""What both runtimes share: input dicts, output order from the metadata, silencing native start-up notes."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from .errors import RuntimeModelError


@contextlib.contextmanager
def quiet_native_stderr():
    """Runtimes print start-up notes from C++ straight to fd 2; keep them out of the app's stderr."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def as_dict(inputs, names):
    """One array for a single-input model, else a dict by input name."""
    if isinstance(inputs, dict):
        missing = [n for n in names if n not in inputs]
        if missing:
            raise RuntimeModelError(f"missing input(s) {missing}; the model takes {names}")
        return inputs
    if len(names) != 1:
        raise RuntimeModelError(f"the model takes {len(names)} inputs {names}: pass a dict")
    return {names[0]: inputs}


def first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0][:300]


class ExportedModel:
    """A loaded file: ``predict(inputs)``, ``bind(inputs)``, ``input_names``, ``output_names``, ``metadata``."""

    input_names: list[str]
    output_names: list[str]

    def __init__(self, path, metadata):
        self.path = Path(path)
        self.metadata = metadata

    def _ordered(self, outputs: dict):
        """Outputs in the Keras model's order (the metadata's), one array for a single-output model."""
        order = [n for n in self.metadata.get("outputs", {}).get("names", []) if n in outputs] or list(outputs)
        values = [outputs[n] for n in order]
        self.output_names = order
        return values[0] if len(values) == 1 else values
