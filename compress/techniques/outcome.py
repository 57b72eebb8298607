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
    #: a reason that concerns the whole model (the technique did not run at all because of it)
    blocked: str | None = None

    @property
    def ran(self) -> bool:
        return bool(self.applied) and self.blocked is None

    def reason(self) -> str:
        """Why nothing was applied (for models where no layer could take the technique)."""
        if self.ran:
            return ""
        if self.blocked:
            return f"{self.technique}: {self.blocked}"
        if not self.skipped:
            return f"{self.technique}: the model has no layers with weights"
        return f"{self.technique}: no layer supports it (" + "; ".join(f"{k}: {v}" for k, v in self.skipped.items()) + ")"

    def summary(self) -> str:
        """One line: applied to how many layers, skipped how many, or the reason it did not run."""
        if not self.ran:
            return self.reason()
        text = f"{self.technique}: applied to {len(self.applied)} layer(s)"
        if self.skipped:
            text += f", {len(self.skipped)} left unchanged with a reason"
        return text
