"""The one registry of zoo models that the CLIs, the pipeline and the tests iterate over.

Zoo modules call :func:`register` at import time; :func:`names` and :func:`get`
import every module under ``models.zoo`` first, so adding a file there is all it
takes to add a model (no second list anywhere).
"""
from __future__ import annotations

import importlib
import pkgutil

from models import zoo
from models.errors import UserError
from models.spec import ModelSpec

_REGISTRY: dict[str, ModelSpec] = {}
_loaded = False


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"model {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _load_zoo() -> None:
    global _loaded
    if _loaded:
        return
    for info in sorted(pkgutil.walk_packages(zoo.__path__, f"{zoo.__name__}."), key=lambda m: m.name):
        if not info.ispkg and not info.name.rpartition(".")[2].startswith("_"):
            importlib.import_module(info.name)
    _loaded = True


def names() -> list[str]:
    _load_zoo()
    return sorted(_REGISTRY)


def specs() -> list[ModelSpec]:
    return [_REGISTRY[n] for n in names()]


def get(name: str) -> ModelSpec:
    _load_zoo()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; valid: {', '.join(names())}") from None
