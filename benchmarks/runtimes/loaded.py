"""What a runtime adapter returns: predict for the metric, bind for the timing loop."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class Loaded:
    predict: Callable  # inputs -> numpy outputs (blocks until done)
    bind: Callable  # inputs -> zero-argument call that runs the model once on them (inputs prepared up front)
    init_ms: float  # load + session/interpreter creation
    provider: str = "cpu"
