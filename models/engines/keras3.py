"""Keras 3 files: tell which Keras wrote a file, and bridge Keras 3 models to tf_keras and back.

tfmot (pruning, clustering, QAT) only works on tf_keras models, and tf_keras cannot deserialize a Keras 3
config (its InputLayer, dtype policies and node format differ). The bridge rebuilds the Keras 3 graph layer by
layer as tf_keras layers from each layer's config, copies the weights, and checks the outputs agree before
anything runs on the copy. Results go back through the legacy HDF5 format, which Keras 3 reads natively.
"""
from __future__ import annotations

import inspect
import json
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from models.artifacts import atomic_path
from models.datasets.synthetic import synthetic_inputs
from models.errors import UserError
from models.spec import signature_of

BRIDGE_ATOL = 1e-4  # max |Δ| (relative to the output's scale) between a Keras 3 model and its tf_keras copy


def written_by(path: Path) -> str:
    """"keras3" or "tf_keras": the Keras that wrote a .keras/.h5 file or SavedModel directory."""
    path = Path(path)
    if path.is_dir():
        return "tf_keras" if (path / "keras_metadata.pb").exists() else "keras3"
    version = None
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                if "metadata.json" in zf.namelist():
                    version = json.loads(zf.read("metadata.json")).get("keras_version")
        else:
            import h5py  # deferred: h5py

            with h5py.File(path, "r") as f:
                version = f.attrs.get("keras_version")
                version = version.decode() if isinstance(version, bytes) else version
    except Exception:  # unreadable: the loader reports it with the reason
        return "tf_keras"
    return "keras3" if str(version or "").startswith("3") else "tf_keras"


def keras3():
    """The Keras 3 package (installed with TensorFlow >= 2.16, whatever TF_USE_LEGACY_KERAS says)."""
    import keras  # deferred: Keras 3 (TensorFlow)

    return keras


class BridgeError(UserError):
    """A Keras 3 model that cannot be rebuilt in tf_keras; the message says which layer and why."""


# ------------------------------------------------------------------------------------------- Keras 3 -> tf_keras

_BASE_KWARGS = {"name", "trainable", "dtype", "input_shape", "batch_input_shape", "batch_size", "weights",
                "activity_regularizer", "autocast", "input_dim", "dynamic"}


def _k3_hard_sigmoid(x):
    """Keras 3's hard_sigmoid, relu6(x + 3) / 6 (tf_keras' of the same name is clip(0.2 x + 0.5, 0, 1))."""
    from models.backend import tf  # deferred: models.backend loads TensorFlow

    return tf.nn.relu6(x + 3.0) / 6.0


def _k3_hard_silu(x):
    return x * _k3_hard_sigmoid(x)


#: Keras 3 activations that tf_keras lacks or defines differently, as the same math in tf_keras
ACTIVATIONS = {"hard_sigmoid": _k3_hard_sigmoid, "hard_silu": _k3_hard_silu, "hard_swish": _k3_hard_silu}


def _register_activations() -> None:
    import tf_keras  # deferred: TensorFlow (tf_keras)

    for name, fn in ACTIVATIONS.items():
        key = f"ct_keras3>{fn.__name__}"
        if tf_keras.saving.get_registered_object(key) is None:
            tf_keras.saving.register_keras_serializable("ct_keras3", fn.__name__)(fn)


def is_own_activation(registered_name) -> bool:
    """Whether a tf_keras file's function reference is one of the stand-ins above (registering them so it loads)."""
    if not isinstance(registered_name, str) or not registered_name.startswith("ct_keras3>"):
        return False
    _register_activations()
    return registered_name in {f"ct_keras3>{fn.__name__}" for fn in ACTIVATIONS.values()}


def _keras3_activations(k3) -> dict:
    """The stand-ins by their registered names, as Keras 3's own functions (for results written back)."""
    return {f"ct_keras3>{fn.__name__}": getattr(k3.activations, name) for name, fn in ACTIVATIONS.items()
            if name != "hard_swish"}


def _activations(config: dict) -> dict:
    """Layer configs whose activation is Keras 3's own take the tf_keras function that computes the same."""
    if isinstance(config.get("activation"), str) and config["activation"] in ACTIVATIONS:
        _register_activations()
        config = {**config, "activation": ACTIVATIONS[config["activation"]]}
    return config


def _plain(obj):
    """A Keras 3 serialized object in the form tf_keras deserializes: no module keys, dtype policies as names."""
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and "config" in obj:
        return obj["config"].get("name", "float32")
    if "class_name" in obj and "config" in obj and ("module" in obj or "registered_name" in obj):
        config = _plain(obj["config"])
        cls = _tf_class(obj["class_name"], obj.get("module") or "")
        if cls is not None and isinstance(config, dict):
            accepted = _accepted(cls)
            config = {k: v for k, v in config.items() if accepted is None or k in accepted}
        return {"class_name": obj["class_name"], "config": config}
    return {k: _plain(v) for k, v in obj.items()}


def _tf_class(class_name: str, module: str):
    """The tf_keras class of a serialized Keras 3 initializer, regularizer or constraint (None: not one)."""
    from models.backend import keras as tfk  # deferred: models.backend loads TensorFlow

    for kind in ("initializers", "regularizers", "constraints"):
        if kind in module:
            return getattr(getattr(tfk, kind), class_name, None)
    return None


def _accepted(cls) -> set[str] | None:
    """Keyword arguments ``cls`` takes: its own and its bases' up to one without ``**kwargs`` (for layers, the
    base Layer's)."""
    import tf_keras  # deferred: TensorFlow (tf_keras)

    names = set(_BASE_KWARGS) if issubclass(cls, tf_keras.layers.Layer) else set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        params = inspect.signature(init).parameters
        names.update(n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    return names


def _tf_layer(layer, tfk):
    """A tf_keras layer equivalent to the Keras 3 ``layer`` (no weights yet)."""
    k3 = keras3()
    if isinstance(layer, k3.Model):
        return to_tf_keras(layer, check=False)
    module = type(layer).__module__
    name = type(layer).__name__
    if not module.startswith("keras."):
        raise BridgeError(f"layer {layer.name!r} is a Keras 3 class of the user's own ({module}.{name}), whose "
                          "code tf_keras cannot run")
    cls = getattr(tfk.layers, name, None)
    if cls is None:
        raise BridgeError(f"layer {layer.name!r} ({name}) has no tf_keras counterpart")
    config = _activations(_plain(layer.get_config()))
    if name == "InputLayer":
        config["batch_input_shape"] = config.pop("batch_shape", None)
    accepted = _accepted(cls)
    config = {k: v for k, v in config.items() if k in accepted}
    for _ in range(8):  # a config key tf_keras requires but Keras 3 does not write (MHA's query_shape): None
        try:
            return cls.from_config(dict(config))
        except KeyError as e:
            if e.args[0] in config:
                break
            config[e.args[0]] = None
        except Exception:
            break
    try:
        return cls.from_config(dict(config))
    except Exception as e:
        raise BridgeError(f"layer {layer.name!r} ({name}) cannot be rebuilt in tf_keras: "
                          f"{str(e).strip().splitlines()[0][:200]}") from None


def _graph(model):
    """The functional graph of a Keras 3 model: layer configs with their inbound nodes."""
    k3 = keras3()
    if isinstance(model, k3.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise BridgeError(f"the Keras 3 Sequential model {model.name!r} is not built (no input shape)")
        model = functional
    if not hasattr(model, "_operations") and type(model).__name__ != "Functional":
        raise BridgeError(f"{model.name!r} is a subclassed Keras 3 model ({type(model).__name__}): only "
                          "Sequential and functional models can be bridged to tf_keras")
    try:
        config = model.get_config()
    except NotImplementedError:
        raise BridgeError(f"{model.name!r} ({type(model).__name__}) has no config to rebuild it from") from None
    if "layers" not in config:
        raise BridgeError(f"{model.name!r} is a subclassed Keras 3 model ({type(model).__name__}): only "
                          "Sequential and functional models can be bridged to tf_keras")
    return model, config


def _refuse_ops(config: dict, by_name: dict) -> None:
    """BridgeError naming the first keras.ops call between layers (``a + b``, ``keras.ops.mean``): a graph node
    that is an operation, not a layer, which tf_keras has nothing to rebuild from."""
    ops = [entry for entry in config["layers"] if entry["name"] not in by_name]
    if ops:
        first = ops[0]
        module = str(first.get("module") or "")
        where = "keras.ops" if module.startswith("keras.src.ops") or module.startswith("keras.ops") else module
        more = f" (1 of {len(ops)} such nodes)" if len(ops) > 1 else ""
        raise BridgeError(f"node {first['name']!r} is a {where} {first['class_name']} call between layers{more}, "
                          "which tf_keras has no layer for")


def to_tf_keras(model, check: bool = True, inputs=None):
    """Rebuild a Keras 3 Sequential/functional model in tf_keras with the same weights (checked by parity)."""
    from models.backend import keras as tfk  # deferred: models.backend loads TensorFlow

    k3 = keras3()
    functional, config = _graph(model)
    by_name = {layer.name: layer for layer in functional.layers}
    _refuse_ops(config, by_name)
    made, outputs = {}, {}

    def tensor(obj):
        if isinstance(obj, dict) and obj.get("class_name") == "__keras_tensor__":
            layer_name, node, index = obj["config"]["keras_history"]
            if (layer_name, node) not in outputs:
                raise BridgeError(f"node {layer_name!r} (call {node}) feeds a layer but was not rebuilt in tf_keras")
            return outputs[(layer_name, node)][index]
        if isinstance(obj, list):
            return [tensor(v) for v in obj]
        if isinstance(obj, tuple):
            return tuple(tensor(v) for v in obj)
        if isinstance(obj, dict):
            return {k: tensor(v) for k, v in obj.items()}
        return obj

    for entry in config["layers"]:
        name = entry["name"]
        layer = by_name[name]
        made[name] = new = _tf_layer(layer, tfk)
        if entry["class_name"] == "InputLayer":
            outputs[(name, 0)] = [new.output]
            continue
        for node_index, node in enumerate(entry.get("inbound_nodes", [])):
            args = tensor(node.get("args", []))
            kwargs = tensor(node.get("kwargs", {}))
            result = new(*args, **kwargs)
            outputs[(name, node_index)] = list(result) if isinstance(result, (list, tuple)) else [result]

    def ends(spec):
        if isinstance(spec, dict):  # keras.Model({"image": a, "table": b}, ...): inputs by name, in the dict's order
            spec = list(spec.values())
        if spec and isinstance(spec[0], str):  # one [name, node, index]
            spec = [spec]
        missing = [n for n, node, _ in spec if (n, node) not in outputs]
        if missing:
            raise BridgeError(f"the model's input/output node {missing[0]!r} was not rebuilt in tf_keras")
        return [outputs[(n, node)][i] for n, node, i in spec]

    ins, outs = ends(config["input_layers"]), ends(config["output_layers"])
    rebuilt = tfk.Model(ins if len(ins) > 1 else ins[0], outs if len(outs) > 1 else outs[0], name=model.name)
    for name, new in made.items():
        weights = by_name[name].get_weights()
        if not weights or isinstance(new, tfk.Model):
            continue
        try:
            new.set_weights(weights)
        except ValueError as e:
            raise BridgeError(f"layer {name!r}: its Keras 3 weights do not fit the tf_keras layer "
                              f"({str(e).splitlines()[0][:160]})") from None
    if isinstance(model, k3.Model) and check:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_parity(model, rebuilt, inputs, "the tf_keras copy of the Keras 3 model")
    _copy_compile(model, rebuilt, tfk)
    return rebuilt


def _copy_compile(source, target, tfk) -> None:
    """Keep the user's loss (fine-tuning needs it) when it is a plain Keras name."""
    loss = getattr(source, "loss", None)
    if isinstance(loss, str):
        try:
            target.compile(optimizer="adam", loss=loss)
        except Exception:  # a loss tf_keras does not know: the model just has none
            pass


def check_parity(a, b, inputs, what: str) -> float:
    """Max |Δ| between two models' outputs on ``inputs`` (synthetic if None); BridgeError beyond tolerance."""
    if inputs is None:
        inputs = synthetic_inputs(b, signature_of(b), 16)
    ya, yb = _outputs(a, inputs), _outputs(b, inputs)
    worst = 0.0
    for oa, ob in zip(ya, yb):
        scale = max(1.0, float(np.max(np.abs(oa))) if oa.size else 1.0)
        worst = max(worst, float(np.max(np.abs(oa - ob))) / scale if oa.size else 0.0)
    if len(ya) != len(yb) or not np.isfinite(worst) or worst > BRIDGE_ATOL:
        raise BridgeError(f"{what} disagrees with the original (max |Δ| {worst:.2e} > {BRIDGE_ATOL:g}); "
                          "nothing was run on it")
    return worst


def _outputs(model, inputs) -> list[np.ndarray]:
    if isinstance(inputs, dict) and len(model.inputs) > 1:
        names = [t.name.split(":")[0] for t in model.inputs]
        inputs = [inputs[n] for n in names] if all(n in inputs for n in names) else list(inputs.values())
    out = model(inputs, training=False)
    out = out if isinstance(out, (list, tuple)) else [out]
    return [np.asarray(o) for o in out]


# ------------------------------------------------------------------------------------------- tf_keras -> Keras 3

def to_keras3(model, inputs=None):
    """The tf_keras ``model`` as a Keras 3 model, through the legacy HDF5 format (checked by parity)."""
    k3 = keras3()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "HDF5 is legacy", input-structure notes: the parity check decides
        h5 = Path(tmp) / "model.h5"
        model.save(h5, include_optimizer=False)
        try:
            _register_activations()
            back = k3.saving.load_model(h5, compile=False, custom_objects=_keras3_activations(k3))
        except Exception as e:  # Keras puts the cause after a long config dump: show the cause
            text = str(e).strip()
            cause = text.rsplit("Exception encountered:", 1)[-1].strip() if "Exception encountered:" in text else text
            raise BridgeError("the result cannot be written back as a Keras 3 model: "
                              f"{(cause.splitlines() or [''])[0][:300]}") from None
        check_parity(model, back, inputs, "the Keras 3 copy of the result")
    return back


def save_keras3(model, path: Path, inputs=None) -> None:
    """Write a tf_keras result as a Keras 3 ``.keras`` file (atomically), so ``keras.saving.load_model`` opens it."""
    back = to_keras3(model, inputs)
    with atomic_path(path) as tmp:
        back.save(tmp)


# ---------------------------------------------------------------------------------- SavedModel from model.export

def savedmodel_as_tf_keras(path: Path):
    """A SavedModel with a ``serving_default`` signature (what Keras 3's ``model.export`` writes) as a tf_keras
    model with one layer that calls the signature: it predicts, exports and benchmarks like any model; techniques
    that need Keras layers (pruning, clustering, QAT) find none and say so."""
    from models.backend import keras as tfk  # deferred: models.backend loads TensorFlow
    from models.backend import quiet_stderr, tf  # deferred: models.backend loads TensorFlow

    with quiet_stderr():
        loaded = tf.saved_model.load(str(path))
    signature = getattr(loaded, "signatures", {}).get("serving_default")
    if signature is None:
        raise UserError(f"{path} is a SavedModel without a serving_default signature: nothing says how to call it")
    specs = signature.structured_input_signature[1]
    if not specs:
        raise UserError(f"{path}: its serving signature takes no named inputs")

    class SavedModelSignature(tfk.layers.Layer):
        """Calls a SavedModel's serving signature (its graph holds no Keras layers)."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.loaded = loaded  # tracked, so the signature's variables are part of this model

        def call(self, inputs):
            out = signature(**inputs)
            return [out[k] for k in sorted(out)]

    inputs = {name: tfk.Input(spec.shape[1:], dtype=spec.dtype, name=name) for name, spec in specs.items()}
    outputs = SavedModelSignature(name="saved_model_signature")(inputs)
    return tfk.Model(inputs if len(inputs) > 1 else next(iter(inputs.values())),
                     outputs if len(outputs) > 1 else outputs[0], name=Path(path).name)
