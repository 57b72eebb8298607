"""Turn a MODEL argument (zoo name or path to the user's own file) into a Keras model."""
from __future__ import annotations

import importlib
import importlib.util
import io
import json
import os
import sys
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from models import registry, safety
from models.errors import UserError
from models.engines.keras3 import BridgeError, is_own_activation, keras3, savedmodel_as_tf_keras, to_tf_keras, written_by
from models.engines.native import served_as_tf_keras

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
EXPORTED_SUFFIXES = {".onnx": "an exported ONNX model", ".tflite": "an exported TFLite model"}
MAX_CONFIG_BYTES = 64 << 20  # a model's config.json / model_config: anything bigger is not a real model
#: model files' ``--custom-objects``, for the child processes of a sweep (builders, measurement workers)
CUSTOM_OBJECTS_ENV = "CT_CUSTOM_OBJECTS"
UNSAFE_HINT = "pass --unsafe only if you trust the file"
#: Keras libraries whose classes a safe-mode file may name without --custom-objects when the library is installed:
#: code the user installed and chose, not code carried by the file (only classes the library registers with Keras)
INSTALLED_LIBRARIES = {"keras_hub": "keras-hub"}

_ZIP, _HDF5 = b"PK\x03\x04", b"\x89HDF\r\n\x1a\n"
_OTHER_FORMATS = [(4, b"TFL3", "a TFLite model"), (0, b"SQLite format 3\x00", "an SQLite database"),
                  (0, b"\x93NUMPY", "a NumPy .npy array")]


def _looks_like_path(arg: str) -> bool:
    return "/" in arg or "\\" in arg or arg.endswith(KERAS_SUFFIXES + (".onnx", ".tflite")) or Path(arg).exists()


def _format_of(path: Path) -> str:
    """"zip" (a .keras archive), "hdf5" (a legacy .h5 model), or a description of what else the file is."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    if head.startswith(_ZIP):
        return "zip"
    if head.startswith(_HDF5):
        return "hdf5"
    for offset, magic, what in _OTHER_FORMATS:
        if head[offset:offset + len(magic)] == magic:
            return what
    return "neither a .keras (zip) archive nor an HDF5 file"


def _refuse(path: Path, what: str):
    raise UserError(f"{path} contains {what}; refused in safe mode because loading it would run code from "
                    f"the file ({UNSAFE_HINT})")


def _module_allowed(module: str, class_name: str, registered_name, trusted=()) -> bool:
    """Keras' own objects, objects registered in this process (the zoo's custom layers and losses), or
    objects from the user's ``--custom-objects`` code (an explicit trust decision)."""
    if module in ("keras", "tf_keras") or module.startswith(("keras.", "tf_keras.")):
        return True
    if class_name in trusted or registered_name in trusted:
        return True
    if is_own_activation(registered_name):  # the toolkit's tf_keras stand-in for a Keras 3 activation
        return True
    from models.backend import keras  # deferred: models.backend loads TensorFlow

    if not isinstance(registered_name, str):
        return False
    if module.split(".")[0] in INSTALLED_LIBRARIES and not _import_library(module.split(".")[0]):
        return False
    for registry_ in (keras.saving, keras3().saving):  # tf_keras' and Keras 3's registries
        obj = registry_.get_registered_object(registered_name)
        if obj is not None and getattr(obj, "__module__", None) == module:
            return True
    return False


def _import_library(name: str) -> bool:
    """Import an installed Keras library (its classes register themselves with Keras 3); False if not installed."""
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _scan_config(config, path: Path, trusted=()) -> None:
    """Refuse serialized Python code before Keras sees the config.

    Lambda layers (and ``lambda`` objects in wrappers) carry marshalled bytecode that Keras would run;
    a ``module`` outside Keras makes Keras import it and hand its functions to the model. Both are
    refused unless registered here. Keras' own safe mode also refuses lambdas: this is the second lock,
    and the only one for ``.h5`` files, which Keras loads without safe mode.
    """
    stack = [(config, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > 500:
            raise UserError(f"cannot load {path} as a Keras model: its config is nested implausibly deep")
        if isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
            continue
        if not isinstance(node, dict):
            continue
        class_name = node.get("class_name")
        if class_name == "Lambda":
            _refuse(path, "serialized Python code (a Lambda layer)")
        if class_name == "__lambda__":
            _refuse(path, "serialized Python code (a lambda function)")
        for key, value in node.items():
            if isinstance(key, str) and key.endswith("_type") and value == "lambda":
                _refuse(path, f"serialized Python code (a lambda in {class_name or 'a layer'})")
        module = node.get("module")
        registered = node.get("registered_name")
        if class_name == "function" and registered == "function":  # tf_keras names a registered function here
            registered = node.get("config")
        reason = safety.layer_refusal(node)  # a path on the host that building the layer would read
        if reason:
            raise UserError(f"{path} {reason}")
        if class_name is not None and isinstance(module, str) and not _module_allowed(
                module, str(class_name), registered, trusted):
            inner = node.get("config")
            name = inner if class_name == "function" and isinstance(inner, str) else class_name
            library = module.split(".")[0]
            if library in INSTALLED_LIBRARIES and not _import_library(library):
                raise UserError(f"{path} uses {module}.{name} from {library}, which is not installed here "
                                f"(pip install {INSTALLED_LIBRARIES[library]})")
            _refuse(path, f"a reference to the Python object {module}.{name}, which is neither part of Keras "
                          "nor registered here (if it is your own layer, pass the code that defines it with "
                          "--custom-objects FILE.py)")
        stack.extend((v, depth + 1) for v in node.values())


def _check_safe(path: Path, kind: str, trusted=()) -> None:
    """Read the model's config without building anything and refuse code in it (see _scan_config)."""
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
                unpacked = sum(i.file_size for i in infos)
                if unpacked > max(4 << 30, 50 * path.stat().st_size):
                    raise UserError(f"cannot load {path} as a Keras model: it would unpack to {unpacked / 2**30:.1f} "
                                    "GiB (a zip bomb?)")
                try:
                    info = zf.getinfo("config.json")
                except KeyError:
                    raise UserError(f"cannot load {path} as a Keras model: the archive has no config.json "
                                    "(not a .keras model)") from None
                if info.file_size > MAX_CONFIG_BYTES:
                    raise UserError(f"cannot load {path} as a Keras model: config.json is {info.file_size} bytes")
                text = zf.read(info)
        else:
            import h5py  # deferred: h5py

            with h5py.File(path, "r") as f:
                text = f.attrs.get("model_config")
                if text is None:
                    raise UserError(f"cannot load {path} as a Keras model: it has no model config (a weights-only "
                                    "file? load it into the model it came from)")
                if hasattr(text, "tobytes") and not isinstance(text, (bytes, str)):
                    text = text.tobytes()
                if len(text) > MAX_CONFIG_BYTES:
                    raise UserError(f"cannot load {path} as a Keras model: its model config is {len(text)} bytes")
        config = json.loads(text)
    except UserError:
        raise
    except Exception as e:  # a corrupt archive or HDF5 file, or a config that is not JSON
        raise UserError(f"cannot load {path} as a Keras model: {_first_line(e)}") from None
    _scan_config(config, path, trusted)


def compile_config(path: Path) -> dict:
    """The loss and metrics a model file was compiled with (``{}`` if none or unreadable)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                config = json.loads(zf.read("config.json"))
            return (config.get("compile_config") or {}) if isinstance(config, dict) else {}
        import h5py  # guarded: a library that fails to import is reported, not raised

        with h5py.File(path, "r") as f:
            text = f.attrs.get("training_config")
        return json.loads(text) if text else {}
    except Exception:  # no compile config to infer from: the caller says so
        return {}


def _check_savedmodel_safe(path: Path, trusted=()) -> None:
    metadata = path / "keras_metadata.pb"
    if not metadata.exists():
        return
    from tf_keras.protobuf import saved_metadata_pb2  # deferred: TensorFlow (tf_keras)

    try:
        proto = saved_metadata_pb2.SavedMetadata()
        proto.ParseFromString(metadata.read_bytes())
        configs = [json.loads(node.metadata) for node in proto.nodes if node.metadata]
    except Exception as e:
        raise UserError(f"cannot load {path} as a Keras model: keras_metadata.pb: {_first_line(e)}") from None
    for config in configs:
        _scan_config(config, path, trusted)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


class _ReadWhole:
    """A zip archive whose entries open as in-memory files (see _weights_read_at_once)."""

    def __init__(self, archive):
        self.archive = archive

    def open(self, name, mode="r"):
        return io.BytesIO(self.archive.read(name))


@contextmanager
def _weights_read_at_once():
    """Load a .keras file's weights from memory instead of through the zip member.

    tf_keras hands h5py the ``model.weights.h5`` member as a ZipExtFile; h5py seeks backwards at every
    dataset, and Python 3.11 serves each backward seek by re-reading the member from its start. Loading
    resnet50 (98 MB) took 12.4 s that way, nearly all of it in zipfile.seek; read once into memory, the
    same load takes 2.5 s (same weights, same outputs).
    """
    from tf_keras.src.saving import saving_lib  # deferred: TensorFlow (tf_keras)

    original = saving_lib.H5IOStore

    class H5FromMemory(original):
        def __init__(self, root_path, archive=None, mode="r"):
            super().__init__(root_path, _ReadWhole(archive) if archive is not None and mode == "r" else archive, mode)

    saving_lib.H5IOStore = H5FromMemory
    try:
        yield
    finally:
        saving_lib.H5IOStore = original


@dataclass
class Loaded:
    """A model file as the toolkit works on it: a tf_keras model, and the Keras that wrote the file."""

    model: object  # tf_keras (a Keras 3 model is bridged, see models/engines/keras3.py, or served, see models/engines/native.py)
    keras: str  # "tf_keras" | "keras3" (bridged) | "keras3_native" (served as Keras 3 traces it) | "savedmodel"
    original: object = None  # the Keras 3 model itself, when bridged or served
    why_native: str = ""  # why the bridge could not rebuild it ("keras3_native")


def load_keras(path: str | Path, unsafe: bool = False, custom_objects: dict | None = None):
    """A ``.keras``/``.h5`` file or SavedModel directory as a tf_keras model (see :func:`load_model_file`)."""
    return load_model_file(path, unsafe, custom_objects).model


def load_model_file(path: str | Path, unsafe: bool = False, custom_objects: dict | None = None,
                    parity_inputs=None) -> Loaded:
    """Load a model file with the Keras that wrote it, in safe mode unless ``unsafe``.

    Safe mode refuses serialized Python code (Lambda layers, lambdas, objects from modules outside
    Keras that are neither registered here nor in ``custom_objects``) for every format, ``.h5`` and
    SavedModel included, with a message that says so; and what :mod:`models.safety` refuses
    (ops that touch the host in a SavedModel's graph, host paths in layer configs). A Keras 3 file is bridged to tf_keras (checked by
    output parity on ``parity_inputs``, synthetic if None). Any other problem is a one-line :class:`UserError`.
    """
    from models.backend import keras, quiet_stderr  # deferred: models.backend loads TensorFlow

    registry.names()  # registers the zoo's custom layers for deserialisation
    if custom_objects is None and os.environ.get(CUSTOM_OBJECTS_ENV):  # a child process of a sweep
        custom_objects = {}
        for ref in os.environ[CUSTOM_OBJECTS_ENV].split(os.pathsep):
            custom_objects.update(import_custom_objects(ref))
    custom_objects = dict(custom_objects or {})
    trusted = set(custom_objects) | {getattr(c, "__name__", "") for c in custom_objects.values()}
    path = Path(path)
    if not path.exists():
        raise UserError(f"no such file: {path}")
    is_savedmodel = path.is_dir() and (path / "saved_model.pb").exists()
    if path.is_dir() and not is_savedmodel:
        raise UserError(f"{path} is a directory but not a SavedModel (no saved_model.pb)")
    if is_savedmodel:
        if not unsafe:
            reason = safety.savedmodel_refusal(path)  # ops that touch the host: before anything loads the graph
            if reason:
                raise UserError(f"{path} {reason}")
            _check_savedmodel_safe(path, trusted)
    else:
        suffix = path.suffix.lower()
        if suffix in EXPORTED_SUFFIXES:
            raise UserError(f"{path} is {EXPORTED_SUFFIXES[suffix]}, not a Keras model (expected .keras, .h5 or a "
                            "SavedModel directory; run exported files with `python -m export run`)")
        if suffix not in KERAS_SUFFIXES:
            raise UserError(f"{path} is not a Keras model file (expected .keras, .h5 or a SavedModel directory)")
        try:
            size = path.stat().st_size
        except OSError as e:
            raise UserError(f"cannot read {path}: {e.strerror or e}") from None
        if size == 0:
            raise UserError(f"{path} is empty")
        kind = _format_of(path)
        if kind not in ("zip", "hdf5"):
            raise UserError(f"cannot load {path} as a Keras model: it is {kind}")
        if kind == "zip" and suffix != ".keras":
            raise UserError(f"{path} is a .keras (zip) archive with a {suffix} name; rename it to .keras")
        if not unsafe:
            _check_safe(path, kind, trusted)
    if written_by(path) == "keras3":
        return _load_keras3(path, unsafe, custom_objects, is_savedmodel, parity_inputs)
    from tf_keras.src.saving.serialization_lib import SafeModeScope  # deferred: TensorFlow (tf_keras)

    try:
        with quiet_stderr(), SafeModeScope(not unsafe), _weights_read_at_once():
            if path.suffix.lower() == ".keras" and not is_savedmodel:
                model = keras.models.load_model(path, safe_mode=not unsafe, compile=True,
                                                custom_objects=custom_objects or None)
            else:
                model = keras.models.load_model(path, compile=True, custom_objects=custom_objects or None)
    except Exception as e:  # Keras raises many types for bad files; the user needs one line
        raise _load_error(path, e) from None
    if not isinstance(model, keras.Model):
        raise UserError(f"cannot load {path} as a Keras model: it holds a {type(model).__name__}, not a model")
    return Loaded(model, "tf_keras")


def _load_error(path: Path, e: Exception) -> UserError:
    text = str(e)
    if "safe_mode" in text or "Lambda" in text or "lambda" in text:
        return UserError(f"{path} contains serialized Python code (a Lambda layer or lambda); refused in safe mode "
                         f"because loading it would run code from the file ({UNSAFE_HINT})")
    if "Unknown layer" in text or "Could not locate class" in text or "must be an instance of class Layer" in text:
        return UserError(f"cannot load {path}: it uses a class Keras does not know ({_first_line(e)}); pass the code "
                         "that defines it with --custom-objects FILE.py")
    return UserError(f"cannot load {path} as a Keras model: {_first_line(e)}")


def _load_keras3(path: Path, unsafe: bool, custom_objects: dict, is_savedmodel: bool, parity_inputs) -> Loaded:
    from models.backend import quiet_stderr  # deferred: models.backend loads TensorFlow

    if is_savedmodel:  # Keras 3's model.export (or any TF SavedModel): a graph with a signature, no Keras layers
        return Loaded(savedmodel_as_tf_keras(path), "savedmodel")
    k3 = keras3()
    try:
        with quiet_stderr():
            model = k3.saving.load_model(path, safe_mode=not unsafe, compile=True, custom_objects=custom_objects or None)
    except Exception as e:  # as for tf_keras files: one line
        raise _load_error(path, e) from None
    if not isinstance(model, k3.Model):
        raise UserError(f"cannot load {path} as a Keras model: it holds a {type(model).__name__}, not a model")
    try:
        return Loaded(to_tf_keras(model, inputs=parity_inputs), "keras3", model)
    except Exception as e:  # any graph the bridge cannot rebuild: the model is served as Keras 3 traces it
        why = _first_line(e) if isinstance(e, BridgeError) else f"{type(e).__name__}: {_first_line(e)}"
    try:
        with quiet_stderr():
            served = served_as_tf_keras(model, why)
    except Exception as e:  # nor can Keras 3 trace it: one line naming both causes
        raise BridgeError(f"cannot take {path}: the tf_keras bridge cannot rebuild it ({why}), and Keras 3 cannot "
                          f"trace it for serving ({_first_line(e)})") from None
    return Loaded(served, "keras3_native", model, why)


def import_custom_objects(ref: str | None) -> dict:
    """Import the user's ``--custom-objects`` (a .py file or a module name): its layers, losses and metrics by name.

    Importing runs the user's code: like ``--unsafe``, passing it is the user's decision to trust it.
    """
    if not ref:
        return {}
    path = Path(ref)
    try:
        if path.suffix == ".py" or path.exists():
            if not path.is_file():
                raise UserError(f"--custom-objects {ref}: no such file")
            name = f"ct_custom_{path.stem}_{abs(hash(str(path.resolve()))):x}"
            module = sys.modules.get(name)  # imported once per process: Keras refuses to register a class twice
            if module is None:
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[name]
                    raise
        else:
            module = importlib.import_module(ref)
    except UserError:
        raise
    except Exception as e:  # the user's code failed to import: say where, in one line
        raise UserError(f"--custom-objects {ref}: importing it failed: {type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}") from None
    objects = {}
    for attr, value in vars(module).items():
        if isinstance(value, type) and getattr(value, "__module__", None) == module.__name__:
            objects[attr] = value
    return objects
