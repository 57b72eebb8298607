"""``.tflite`` on LiteRT (ai-edge-litert, the ``litert`` extra); int8/uint8 I/O (de)quantized with the file's scales."""
from __future__ import annotations

import numpy as np

from .base import ExportedModel, as_dict, first_line, quiet_native_stderr
from .errors import RuntimeModelError
from .metadata import tflite_file_metadata

LITERT_MISSING = "LiteRT is not installed ({}): pip install 'keras-compress-runtime[litert]' (or ai-edge-litert)"


class TFLiteModel(ExportedModel):
    def __init__(self, path, metadata, threads=None, xnnpack=True):
        super().__init__(path, metadata)
        try:
            from ai_edge_litert.interpreter import Interpreter, OpResolverType
        except ImportError as e:
            raise RuntimeModelError(LITERT_MISSING.format(first_line(e))) from None

        kwargs = {"num_threads": threads} if threads else {}
        if not xnnpack:
            kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            with quiet_native_stderr():  # "Created TensorFlow Lite XNNPACK delegate" etc.
                self.interpreter = Interpreter(model_path=str(path), **kwargs)
                runner = self.interpreter.get_signature_runner()
                self._in = runner.get_input_details()
                self._out = runner.get_output_details()
                del runner  # it holds references that block allocate_tensors/resize
                self.interpreter.allocate_tensors()
        except Exception as e:
            raise RuntimeModelError(f"LiteRT cannot load {path}: {first_line(e)}") from None
        leading = [_leading(d) for d in self._in.values()]
        self._settle_metadata(metadata, lambda: tflite_file_metadata(path), list(self._in), list(self._out), leading)

    def _set_all(self, feed) -> None:
        """Quantize if needed, resize every input first (one allocation), then set the tensors.

        Setting a tensor and then re-allocating for the next input's new shape would discard it.
        """
        values = {}
        for name in self.input_names:
            d = self._in[name]
            value = np.asarray(feed[name])
            if d["dtype"] in (np.int8, np.uint8) and value.dtype.kind == "f":
                scale, zero = d["quantization"]
                value = np.clip(np.round(value / scale + zero), np.iinfo(d["dtype"]).min, np.iinfo(d["dtype"]).max)
            values[name] = value.astype(d["dtype"])
        resized = False
        for name, value in values.items():
            d = self._in[name]
            if tuple(self._shape(d["index"])) != value.shape:
                self.interpreter.resize_tensor_input(d["index"], value.shape, strict=False)
                resized = True
        if resized:
            self.interpreter.allocate_tensors()
        for name, value in values.items():
            self.interpreter.set_tensor(self._in[name]["index"], value)

    def _shape(self, index):
        for d in self.interpreter.get_input_details():
            if d["index"] == index:
                return d["shape"]
        return ()

    def bind(self, inputs):
        """Set the inputs once; return a zero-argument call that only invokes and reads the outputs."""
        feed = as_dict(inputs, self.input_names)
        static = self.metadata.get("batch")  # checked at load: the file's own static leading dimension
        if static and len(next(iter(feed.values()))) != static:
            return lambda: self.predict(feed)  # chunked: what an app would do with a static-batch model
        self._set_all(feed)
        invoke, get = self.interpreter.invoke, self.interpreter.get_tensor
        indices = [d["index"] for d in self._out.values()]

        def call():
            invoke()
            return [get(i) for i in indices]

        return call

    def predict(self, inputs):
        feed = as_dict(inputs, self.input_names)
        static = self.metadata.get("batch")  # checked at load: the file's own static leading dimension
        n = len(next(iter(feed.values())))
        if static and n != static:  # a static-batch model (e.g. an LSTM): run it chunk by chunk
            return self._predict_in_chunks(feed, static, n)
        try:
            self._set_all(feed)
            self.interpreter.invoke()
        except RuntimeModelError:
            raise
        except Exception as e:
            raise RuntimeModelError(f"LiteRT failed: {first_line(e)}") from None
        outs = {}
        for name, d in self._out.items():
            value = self.interpreter.get_tensor(d["index"])
            if d["dtype"] in (np.int8, np.uint8):
                scale, zero = d["quantization"]
                value = (value.astype(np.float32) - zero) * scale
            outs[name] = value
        return self._ordered(outs)

    def _predict_in_chunks(self, feed, static, n):
        parts = []
        for start in range(0, n, static):
            chunk = {k: np.asarray(v[start:start + static]) for k, v in feed.items()}
            short = static - len(next(iter(chunk.values())))
            if short:  # pad the last chunk, drop the padding from the outputs
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], short, axis=0)]) for k, v in chunk.items()}
            out = self.predict(chunk)
            parts.append([o[:static - short] for o in out] if isinstance(out, list) else out[:static - short])
        return _concat(parts)


def _concat(parts):
    if isinstance(parts[0], list):
        return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]
    return np.concatenate(parts)


def _leading(details):
    """An input's static leading dimension (its shape signature's, -1 there: dynamic), None when dynamic."""
    sig = details.get("shape_signature")
    dims = sig if sig is not None and len(sig) == len(details["shape"]) else details["shape"]
    return int(dims[0]) if len(dims) and int(dims[0]) >= 0 else None
