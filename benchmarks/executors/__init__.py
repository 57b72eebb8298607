"""Where timed measurements run: ``local`` (worker processes on this machine) or ``ray`` (one measuring actor per
node of a Ray cluster). The driver alone writes the store; executors only measure and answer."""
from __future__ import annotations

from models.errors import UserError

from benchmarks.executors.local import Executor, LocalExecutor
from benchmarks.executors.ray_cluster import RayExecutor

EXECUTORS = ("local", "ray")


def make(name: str = "local", address: str | None = None, on: str | None = None) -> Executor:
    """The executor ``--executor NAME [--address ADDR] [--on LABEL]`` asks for (bad combinations: UserError)."""
    if name not in EXECUTORS:
        raise UserError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")
    if name == "local":
        if address or on:
            raise UserError(f"{'--address' if address else '--on'} needs --executor ray")
        return LocalExecutor()
    return RayExecutor(address=address, on=on)
