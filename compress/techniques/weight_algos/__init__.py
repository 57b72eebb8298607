"""Post-training weight algorithms on a Keras model before it is converted: cross-layer equalization (``cle``),
AdaRound (``adaround``) and empirical bias correction (``bias-correction``), each model in -> model out with an
Outcome per algorithm (see ``pipeline.apply``).

This module holds only their names and order (no TensorFlow), for option checks before anything is loaded.
"""
from __future__ import annotations

#: the algorithms in the order they run, whatever order they are named in: CLE only rescales (the function is
#: unchanged) so it goes first; bias correction measures the mean error the other two leave against the fp32
#: model, so it goes last (before AdaRound, its correction would be for round-to-nearest weights AdaRound replaces)
ALGOS = ("cle", "adaround", "bias-correction")

DESCRIPTIONS = {
    "cle": "cross-layer equalization: rescale conv/depthwise/dense pairs joined through ReLU so their per-channel "
           "weight ranges match (batch norms folded first; the fp32 function is unchanged)",
    "adaround": "AdaRound: learn each weight's rounding (up or down) on the calibration data and store the weights "
                "on the int8 grid the converter uses",
    "bias-correction": "empirical bias correction: subtract, per output channel, the mean shift that int8 weights "
                       "cause on the calibration data",
}

_ALIASES = {"bias_correction": "bias-correction", "bc": "bias-correction", "biascorrection": "bias-correction",
            "equalization": "cle", "ada-round": "adaround", "ada_round": "adaround"}


def parse(spec) -> tuple[str, ...]:
    """``"cle,adaround"`` (or a list of names) -> the names in run order; ValueError naming the valid ones."""
    names = spec.split(",") if isinstance(spec, str) else list(spec or ())
    names = [_ALIASES.get(n.strip().lower(), n.strip().lower()) for n in names if n and n.strip()]
    unknown = [n for n in names if n not in ALGOS]
    if unknown:
        raise ValueError(f"unknown weight algorithm {unknown[0]!r}; valid: {', '.join(ALGOS)}")
    return tuple(a for a in ALGOS if a in names)
