"""Turn a MODEL argument (zoo name or path to the user's own file) into a Keras model."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import registry
from .errors import UserError
from .spec import ModelSpec, Splits

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def _looks_like_path(arg: str) -> bool:
    return "/" in arg or "\\" in arg or arg.endswith(KERAS_SUFFIXES + (".onnx", ".tflite")) or Path(arg).exists()


def load_keras(path: str | Path, unsafe: bool = False):
    """Load a ``.keras``/``.h5`` file or SavedModel directory, in Keras safe mode unless ``unsafe``."""
    from .backend import keras, quiet_stderr

    registry.names()  # registers the zoo's custom layers for deserialisation
    path = Path(path)
    if not path.exists():
        raise UserError(f"no such file: {path}")
    is_savedmodel = path.is_dir() and (path / "saved_model.pb").exists()
    if path.is_dir() and not is_savedmodel:
        raise UserError(f"{path} is a directory but not a SavedModel (no saved_model.pb)")
    if not is_savedmodel:
        if path.suffix.lower() not in KERAS_SUFFIXES:
            raise UserError(f"{path} is not a Keras model file (expected .keras, .h5 or a SavedModel directory)")
        if path.stat().st_size == 0:
            raise UserError(f"{path} is empty")
    try:
        with quiet_stderr():
            if path.suffix.lower() == ".keras":
                return keras.models.load_model(path, safe_mode=not unsafe, compile=True)
            return keras.models.load_model(path, compile=True)
    except Exception as e:  # Keras raises many types for bad files; the user needs one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "safe_mode" in str(e) or "Lambda" in str(e):
            raise UserError(f"{path} contains serialized Python code (a Lambda layer); refused in safe mode. "
                            "Pass --unsafe only if you trust the file") from None
        raise UserError(f"cannot load {path} as a Keras model: {msg[:300]}") from None


@dataclass
class Subject:
    """The model a command works on, with its spec and data when it comes from the zoo."""

    name: str
    model: object
    path: Path
    spec: ModelSpec | None = None
    config: dict | None = None
    splits: Splits | None = None
    seed: int = 0


def resolve(arg: str, tiny: bool = False, seed: int = 0, cache=None, unsafe: bool = False) -> Subject:
    """A zoo name is trained on demand (cached); anything path-like is loaded from disk."""
    if arg in registry.names():
        from .training import train

        spec = registry.get(arg)
        trained = train(spec, tiny=tiny, seed=seed, cache=cache)
        return Subject(spec.name, trained.load(), trained.path, spec, trained.config, trained.splits(), seed)
    if _looks_like_path(arg):
        path = Path(arg)
        return Subject(path.stem, load_keras(path, unsafe=unsafe), path)
    registry.get(arg)  # raises "unknown model ...; valid: ..."
    raise AssertionError("unreachable")
