"""The sweep's per-model unit: a zoo name or the user's file alike (a Subject, keyed by content), and how the
child processes that build its variants are told to make the same one."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from models import registry
from models.artifacts import cache_dir
from models.loading import CUSTOM_OBJECTS_ENV
from models.subject import content_key, resolve, Source


@dataclass
class Unit:
    """The sweep's per-model unit, from a zoo name or the user's file alike (a Subject, keyed by content)."""

    subject: object  # models.subject.Subject
    source: object  # models.subject.Source: how a child process makes the same subject
    key: str  # "<stem>-<content key>": rows, variants and the store are keyed by it
    name: str  # what the store and the report call it (display_name)

    @property
    def spec(self):
        return self.subject.spec

    @property
    def path(self) -> Path:
        return self.subject.path

    @property
    def seed(self) -> int:
        return self.subject.seed

    @property
    def config(self) -> dict:
        return self.subject.config or {}

    @property
    def metric(self):
        return self.subject.metric

    def splits(self):
        return self.subject.splits


def make_source(name: str, cfg):
    """How ``name`` (a zoo name, or a model file with ``cfg.source``'s data, metric and code) is made, in this
    process or a child (models.subject.Source)."""
    options = {} if name in registry.names() else dict(cfg.source)
    if name not in registry.names():  # builders run in the project folder: every path made absolute
        name = str(Path(name).resolve())
        options.update({k: str(Path(v).resolve()) for k, v in options.items() if k in ("data", "eval_data") and v})
    if options.get("custom_objects"):  # builders and workers load the file too: they import the same code
        ref = str(Path(options["custom_objects"]).resolve()) if Path(options["custom_objects"]).exists() \
            else options["custom_objects"]
        options["custom_objects"] = ref
        known = [r for r in os.environ.get(CUSTOM_OBJECTS_ENV, "").split(os.pathsep) if r]
        os.environ[CUSTOM_OBJECTS_ENV] = os.pathsep.join(dict.fromkeys(known + [ref]))
    return Source(name, tiny=cfg.tiny, cache=absolute_cache(cfg), **options)


def absolute_cache(cfg) -> str:
    """The sweep's cache folder as an absolute path: builders run in the project folder, not the user's."""
    return str(cache_dir(cfg.cache).resolve())


def display_name(name: str) -> str:
    """What the store and the report call a model: a zoo name as it is; a file by its name and its folder's
    (``m.keras (v1)``), the same on every run, so that v1/m.keras and v2/m.keras stay two models."""
    if name in registry.names():
        return name
    path = Path(name).resolve()
    return f"{path.name} ({path.parent.name})" if path.parent.name else path.name


def make_unit(name: str, cfg) -> Unit:
    """A zoo name (trained on demand, cached) or a model file with ``cfg.source``'s data, metric and code."""
    source = make_source(name, cfg)
    name = source.model
    subject = resolve(source)
    path = Path(subject.path)
    if name in registry.names():  # the trained file's name already carries its content key
        key = path.stem
    else:  # the model's every file, the data, the metric and the code (models.subject.content_key)
        key = f"{path.stem}-{content_key(source)}"
    return Unit(subject, source, key, display_name(name))


def build_request(unit: Unit, cfg, missing: list[str]) -> dict:
    """What benchmarks.build needs to rebuild ``unit``'s missing variants in a child process."""
    return {"model": unit.name, "source": unit.source.as_dict(), "key": unit.key,
            "cache": absolute_cache(cfg), "variants": missing}
