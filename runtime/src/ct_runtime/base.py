"""What both runtimes share: input dicts, metadata checked against the file, output order from the metadata,
silencing native start-up notes."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from .errors import RuntimeModelError, first_line  # noqa: F401  (first_line: imported from here too)
from .metadata import check_fields, file_problems, warn


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


class ExportedModel:
    """A loaded file: ``predict(inputs)``, ``bind(inputs)``, ``input_names``, ``output_names``, ``metadata``."""

    input_names: list[str]
    output_names: list[str]

    def __init__(self, path, metadata):
        self.path = Path(path)
        self.metadata = metadata

    def _settle_metadata(self, given, embedded, inputs: list[str], outputs: list[str], leading: list) -> None:
        """Choose ``self.metadata`` and the I/O order from it; see :mod:`ct_runtime.metadata` for the contract.

        ``given`` (the sidecar's, or what the caller passed) is used whole when well-formed and it agrees with the
        file, else ignored with a warning; then ``embedded()`` (the file's own copy) is used without the fields
        the file contradicts. ``inputs``/``outputs``: the file's names in its order; ``leading``: each input's
        leading dimension (None: dynamic).
        """
        meta = None
        if given:
            if not isinstance(given, dict):
                warn(f"the metadata given for {self.path} is not a dict: ignored, using the file's own")
            else:
                kept, problems = check_fields(given)
                contradicts = file_problems(kept, inputs, outputs, leading)
                reasons = problems + [f"{k}: {v}" for k, v in contradicts.items()]
                if reasons:
                    warn(f"sidecar of {self.path} ignored, using the file's own metadata: {'; '.join(reasons)}")
                else:
                    meta = dict(given)
        if meta is None:
            meta = dict(embedded())
            contradicts = file_problems(meta, inputs, outputs, leading)
            if contradicts:
                warn(f"the metadata inside {self.path} contradicts the file, field(s) ignored: "
                     f"{'; '.join(f'{k}: {v}' for k, v in contradicts.items())}")
                for key in contradicts:
                    meta.pop(key)
        self.metadata = meta
        self.input_names = list(meta["inputs"]["names"]) if "inputs" in meta else list(inputs)
        self.output_names = list(meta["outputs"]["names"]) if "outputs" in meta else list(outputs)

    def _ordered(self, outputs: dict):
        """Outputs in the Keras model's order (the metadata's, checked at load), one array for a single output."""
        values = [outputs[n] for n in self.output_names]
        return values[0] if len(values) == 1 else values
