"""Keras 3 models the tf_keras bridge cannot rebuild, served as they are through Keras 3's own traced function.

keras.ops calls between layers (``a + b``, MobileNetV3's hard_sigmoid), subclassed models (keras-hub backbones) and
the user's own Keras 3 layers have no tf_keras counterpart, but TensorFlow's converters take the function that
``model.export`` traces: ``model(inputs, training=False)`` over the input signature Keras 3 reads from the model,
batch axis free. :class:`Serving` holds that function; :func:`served_as_tf_keras` wraps it in a one-layer tf_keras
model so predictions, data checks, metadata and the benchmarks' ``keras`` runtime work on it like on any model,
while the exporters convert the traced function itself (export/tflite.py through a SavedModel Keras 3 writes,
export/onnx.py through tf2onnx's ``from_function``). Techniques built on tfmot need tf_keras layers: the subject
says why they cannot run (models.subject).
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

from models.engines.keras3 import BridgeError, keras3

#: what TensorFlow accepts as a signature input name (TFLite signatures come from it; see export/rewrites.py)
_SIGNATURE_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\-/]*")


def _safe(name: str, fallback: str) -> str:
    fixed = re.sub(r"[^A-Za-z0-9_.\-/]", "_", str(name)).lstrip("_-/")
    return fixed or fallback


def _unique(names: list[str], taken: set[str]) -> list[str]:
    out = []
    for name in names:
        candidate, i = name, 1
        while candidate in taken:
            candidate, i = f"{name}_{i}", i + 1
        taken.add(candidate)
        out.append(candidate)
    return out


class Serving:
    """``model(inputs, training=False)`` as a TensorFlow function over flat, named inputs with a free batch axis
    (what ``model.export`` traces), returning the outputs by name."""

    def __init__(self, model, why: str):
        # deferred: Keras 3's export helpers load TensorFlow; the input signature model.export itself reads
        from keras.src.export.export_utils import get_input_signature

        k3 = keras3()
        self.model, self.why = model, why
        try:
            self._signature = get_input_signature(_called(model))
        except Exception as e:  # a subclassed model not built: nothing says what it takes
            raise BridgeError(f"{model.name!r} ({type(model).__name__}) declares no inputs to trace it with: "
                              f"{_first_line(e)}") from None
        leaves = k3.tree.flatten_with_path(self._signature)
        self.specs = [spec for _, spec in leaves]
        names = [next((p for p in reversed(path) if isinstance(p, str)), None) or spec.name or f"input_{i}"
                 for i, (path, spec) in enumerate(leaves)]
        if len(names) == 1 and not _SIGNATURE_NAME.fullmatch(names[0]):  # one input: nothing feeds it by name
            names = [_safe(names[0], "input")]
        self.input_names = _unique(names, set())
        symbolic = k3.tree.map_structure(lambda s: k3.KerasTensor(tuple(s.shape), s.dtype), self._signature)
        try:
            outputs = k3.tree.flatten_with_path(model.compute_output_spec(*symbolic))
        except Exception as e:
            raise BridgeError(f"{model.name!r} ({type(model).__name__}) cannot be traced: {_first_line(e)}") from None
        declared = list(getattr(model, "output_names", None) or [])
        raw = [next((p for p in reversed(path) if isinstance(p, str)), None)
               or (declared[i] if len(declared) == len(outputs) else f"output_{i}" if len(outputs) > 1 else "output")
               for i, (path, _) in enumerate(outputs)]
        self.output_names = _unique([_safe(n, f"output_{i}") for i, n in enumerate(raw)], set(self.input_names))
        self._functions = {}

    def tensor_specs(self, batch: int | None = None) -> list:
        from models.backend import tf  # deferred: models.backend loads TensorFlow

        return [tf.TensorSpec((batch,) + tuple(s.shape[1:]), s.dtype, name=name)
                for s, name in zip(self.specs, self.input_names)]

    def call_flat(self, tensors) -> list:
        """The model's outputs (flat, in ``output_names`` order) for its inputs (flat, in ``input_names`` order)."""
        k3 = keras3()
        args = k3.tree.pack_sequence_as(self._signature, list(tensors))
        return k3.tree.flatten(self.model(*args, training=False))

    def function(self, batch: int | None = None):
        """The traced function (one per batch setting; None: dynamic), outputs in a dict by name."""
        if batch not in self._functions:
            from models.backend import tf  # deferred: models.backend loads TensorFlow

            names = self.output_names

            def serve(*tensors):
                return dict(zip(names, self.call_flat(tensors)))

            self._functions[batch] = tf.function(serve, input_signature=self.tensor_specs(batch), autograph=False)
        return self._functions[batch]

    def write_savedmodel(self, directory: Path, batch: int | None = None) -> None:
        """The function as a SavedModel's ``serving_default`` signature, written as ``model.export`` writes it."""
        archive = keras3().export.ExportArchive()
        archive.track(self.model)
        archive.add_endpoint("serve", self.function(batch))
        archive.write_out(str(directory), verbose=False)


def _called(model):
    """``model``, called once on zeros if it is a subclassed model that was built from its file's shapes but never
    called (Keras 3 reads a subclassed model's input signature from its first call)."""
    import numpy as np  # deferred: only a subclassed model needs it

    shapes = getattr(model, "_build_shapes_dict", None)
    if getattr(model, "_called", True) or not shapes or len(shapes) != 1:
        return model
    (shape,) = shapes.values()
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, (int, type(None))) for d in shape):
        return model
    model(np.zeros([1 if d is None else d for d in shape], getattr(model, "input_dtype", None) or "float32"),
          training=False)
    return model


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {(text.splitlines() or [''])[0][:200]}"


def serving_of(model) -> Serving | None:
    """The Keras 3 function behind a model made by :func:`served_as_tf_keras` (None for any other model)."""
    return getattr(model, "_ct_keras3_serving", None)


def served_as_tf_keras(model, why: str):
    """A one-layer tf_keras model calling the Keras 3 ``model`` (inputs and outputs named as :class:`Serving`
    names them). It predicts and benchmarks like any model; it has no tf_keras weights for tfmot to work on."""
    from models.backend import keras as tfk  # deferred: models.backend loads TensorFlow

    serving = Serving(model, why)

    class Keras3Call(tfk.layers.Layer):
        """Calls a Keras 3 model (its layers and weights stay Keras 3's, out of tf_keras' tracking)."""

        def call(self, inputs):
            return serving.call_flat(inputs if isinstance(inputs, (list, tuple)) else [inputs])

    inputs = [tfk.Input(tuple(s.shape[1:]), dtype=s.dtype, name=name)
              for s, name in zip(serving.specs, serving.input_names)]
    outputs = Keras3Call(name="keras3_call")(inputs if len(inputs) > 1 else inputs[0])
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    outputs = [tfk.layers.Identity(name=name)(o) for o, name in zip(outputs, serving.output_names)]
    wrapper = tfk.Model(inputs if len(inputs) > 1 else inputs[0], outputs if len(outputs) > 1 else outputs[0],
                        name=_safe(model.name, "keras3_model"))
    object.__setattr__(wrapper, "_ct_keras3_serving", serving)  # untracked: tf_keras must not save or clone it
    return wrapper


def savedmodel_dir(serving: Serving, batch: int | None):
    """A temporary directory holding the SavedModel of ``serving`` (the caller cleans it up)."""
    tmp = tempfile.TemporaryDirectory(prefix="ct-keras3-")
    try:
        serving.write_savedmodel(Path(tmp.name), batch)
    except Exception:
        tmp.cleanup()
        raise
    return tmp
