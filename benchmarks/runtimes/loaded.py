"""What a runtime adapter returns: a blocking predict, and how long loading took."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class Loaded:
    predict: Callable  # inputs -> numpy outputs (blocks until done)
    init_ms: float
    provider: str = "cpu"
