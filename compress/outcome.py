"""What a technique did to a model: applied where, skipped where and why. Never a silent skip."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Outcome:
    technique: str
    applied: list[str] = field(default_factory=list)
    #: layer name -> reason it was left unchanged
    skipped: dict[str, str] = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    @property
    def ran(self) -> bool:
        return bool(self.applied)

    def reason(self) -> str:
        """Why nothing was applied (for models where no layer could take the technique)."""
        if self.ran:
            return ""
        if not self.skipped:
            return f"{self.technique}: the model has no layers with weights"
        return f"{self.technique}: no layer supports it (" + "; ".join(f"{k}: {v}" for k, v in self.skipped.items()) + ")"
