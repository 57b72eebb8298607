"""The variants a sweep builds for each model: a chain of steps from the trained fp32 model to an artifact."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from models.artifacts import atomic_path, write_json
from models.errors import UserError
from models.loading import load_keras
from models.subject import Subject
from export.quantize.ptq import QuantRecipe


class VariantUnavailable(Exception):
    """This variant cannot be built for this model; the message says why."""


@dataclass(frozen=True)
class Variant:
    name: str
    source: str  # "fp32" or "pruned" (magnitude pruning, PRUNE_SPARSITY, fine-tuned)
    format: str  # keras | tflite | onnx
    mode: str = "fp32"  # quantization mode for exported formats

    def chain(self) -> list[str]:
        steps = ["train"] + ([f"prune({PRUNE_SPARSITY})"] if self.source == "pruned" else [])
        return steps + ([f"{self.format}({self.mode})"] if self.format != "keras" else [])


PRUNE_SPARSITY = 0.5

VARIANTS = [
    Variant("fp32", "fp32", "keras"),
    Variant("pruned", "pruned", "keras"),
    Variant("tflite-fp32", "fp32", "tflite"),
    Variant("tflite-dynamic", "fp32", "tflite", "dynamic"),
    Variant("tflite-float16", "fp32", "tflite", "float16"),
    Variant("tflite-int8", "fp32", "tflite", "int8"),
    Variant("onnx-fp32", "fp32", "onnx"),
    Variant("onnx-float16", "fp32", "onnx", "float16"),
    Variant("onnx-int8", "fp32", "onnx", "int8"),
    Variant("pruned-tflite-int8", "pruned", "tflite", "int8"),
]

#: --quick: the float baseline and int8 of each format, the deployment choice most users make; the pruned chain
#: (fine-tuning), dynamic-range and float16 files are the full sweep's
QUICK = ["fp32", "tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8"]


def chains(names: list[str]) -> list[list[str]]:
    """``names`` grouped by the model they are made from: groups that can be built independently."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(by_name(name).source, []).append(name)
    return list(groups.values())


def by_name(name: str) -> Variant:
    for v in VARIANTS:
        if v.name == name:
            return v
    raise UserError(f"unknown variant {name!r}; valid: {', '.join(v.name for v in VARIANTS)}")


def artifact_path(variant: Variant, subject, work: Path) -> Path:
    """Where ``variant``'s artifact of ``subject`` (anything with the source ``path``) is (or will be) kept."""
    if variant.format == "keras":
        return Path(subject.path) if variant.source == "fp32" else work / f"pruned{int(PRUNE_SPARSITY * 100)}.keras"
    return work / f"{variant.name}.{variant.format}"


def _pruned(subject: Subject, work: Path) -> Path:
    path = artifact_path(by_name("pruned"), subject, work)
    if path.exists():
        return path
    refused = subject.techniques_refused()
    if refused:
        raise VariantUnavailable(refused)
    from compress.techniques.finetune import for_spec  # deferred: compress.techniques.finetune loads TensorFlow
    from compress.techniques.pruning import prune  # deferred: compress.techniques.pruning loads TensorFlow

    # fit()-trained models fine-tune (a user's file on its --data); custom-loop and untrained models are pruned
    # one-shot (the plan says why)
    plan = for_spec(subject.spec, subject.config or {}, subject.splits)  # the model's own lr, 25% of its epochs
    pruned, outcome = prune(load_keras(subject.path, custom_objects=subject.custom_objects), plan,
                            sparsity=PRUNE_SPARSITY)
    if not outcome.ran:
        raise VariantUnavailable(outcome.reason())
    said = {"fine-tuning": outcome.details.get("fine_tuning"), "kept dense": outcome.details.get("kept_dense"),
            "achieved": f"{outcome.details['achieved_sparsity']:.1%}"}
    recipe = "; ".join(f"{k}: {v}" for k, v in said.items() if v)
    write_json(_recipe_path(path), {"step": f"prune({PRUNE_SPARSITY}; {recipe})", "details": outcome.details})
    with atomic_path(path) as tmp:  # the model last: its presence is what makes it cached
        pruned.save(tmp)
    return path


def _recipe_path(pruned: Path) -> Path:
    return Path(str(pruned) + ".json")


def recorded_chain(variant: Variant, source: Path) -> list[str]:
    """``variant``'s steps before its export, with the pruning recipe the pruned model was actually made with."""
    steps = variant.chain()[:-1] if variant.format != "keras" else variant.chain()
    if variant.source != "pruned":
        return steps
    try:
        step = json.loads(_recipe_path(source).read_text())["step"]
    except (OSError, ValueError, KeyError):
        return steps
    return [step if s.startswith("prune(") else s for s in steps]


_SOURCES: dict[tuple, object] = {}


def _source_model(path: Path, custom_objects=None):
    """One loaded model per source file: the exports of a model then share its ONNX graph (export.onnx)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SOURCES:
        _SOURCES.clear()  # a builder works through one model's sources at a time
        _SOURCES[key] = load_keras(path, custom_objects=custom_objects)
    return _SOURCES[key]


def forget_sources() -> None:
    _SOURCES.clear()


def build(variant: Variant, subject: Subject, work: Path) -> Path:
    """The artifact for ``variant`` of ``subject`` (cached under ``work``); raises VariantUnavailable with the reason."""
    work.mkdir(parents=True, exist_ok=True)
    source = Path(subject.path) if variant.source == "fp32" else _pruned(subject, work)
    if variant.format == "keras":
        return source
    path = artifact_path(variant, subject, work)
    if path.exists():
        return path
    from export.exporter import export  # deferred: export.exporter loads TensorFlow

    from export.onnx import int8_flavour  # deferred: export.onnx loads TensorFlow

    subject = dataclasses.replace(subject, model=_source_model(source, subject.custom_objects), path=source)
    try:
        # the ONNX int8 flavour measured fastest on this host is resolved first, so the file's chain names it
        recipe, _ = int8_flavour(subject, QuantRecipe(variant.format, variant.mode))
        result = export(subject, recipe, path, chain=recorded_chain(variant, source))
    except Exception as e:  # a converter that cannot handle an op: recorded with its reason, sweep goes on
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VariantUnavailable(f"{variant.format} conversion failed: {first[:300]}") from None
    if not result.written:
        raise VariantUnavailable(f"parity check failed: {result.validation.failure()}")
    return path
