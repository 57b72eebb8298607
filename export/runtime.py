"""Run an exported model without TensorFlow: ``load(path).predict(inputs)``.

This is the module an app embeds. It imports numpy, onnxruntime and the LiteRT
interpreter only. ``.onnx`` runs on ONNX Runtime (a GPU provider when one is
available), ``.tflite`` on LiteRT; int8/uint8 inputs and outputs are
(de)quantized with the scale and zero point stored in the model.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import numpy as np

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


@contextlib.contextmanager
def _quiet_native_stderr():
    """Runtimes print start-up notes from C++ straight to fd 2; keep them out of the app's stderr."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class RuntimeModelError(Exception):
    """The file cannot be loaded or run by its runtime."""


def _clean_metadata(meta) -> dict:
    """Metadata comes from files the app did not write: keep only well-formed fields ({} if none)."""
    if not isinstance(meta, dict):
        return {}
    meta = dict(meta)
    batch = meta.get("batch")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        meta["batch"] = None
    for key in ("inputs", "outputs"):
        part = meta.get(key)
        if part is None:
            continue
        names = part.get("names") if isinstance(part, dict) else None
        if not isinstance(part, dict) or not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            meta[key] = {**part, "names": []} if isinstance(part, dict) else {}
    return meta


def read_metadata(path: str | os.PathLike) -> dict:
    """The toolkit's metadata: from the JSON sidecar (``model.onnx.json``) or from inside the file, else {}."""
    sidecar = Path(str(path) + ".json")
    if sidecar.exists():
        try:
            return _clean_metadata(json.loads(sidecar.read_text()))
        except (OSError, ValueError, RecursionError):
            pass
    try:
        data = Path(path).read_bytes()
    except OSError:
        return {}
    if str(path).lower().endswith(".tflite"):
        at = data.find(b"CT-METADATA{")
        if at >= 0:
            try:
                text = data[at + len(b"CT-METADATA"):].decode("utf-8", errors="ignore")
                return _clean_metadata(json.JSONDecoder().raw_decode(text)[0])
            except (ValueError, RecursionError):
                return {}
    return {}


def _as_dict(inputs, names):
    if isinstance(inputs, dict):
        missing = [n for n in names if n not in inputs]
        if missing:
            raise RuntimeModelError(f"missing input(s) {missing}; the model takes {names}")
        return inputs
    if len(names) != 1:
        raise RuntimeModelError(f"the model takes {len(names)} inputs {names}: pass a dict")
    return {names[0]: inputs}


class _Base:
    input_names: list[str]
    output_names: list[str]

    def __init__(self, path, metadata):
        self.path = Path(path)
        self.metadata = metadata

    def _ordered(self, outputs: dict):
        order = [n for n in self.metadata.get("outputs", {}).get("names", []) if n in outputs] or list(outputs)
        values = [outputs[n] for n in order]
        self.output_names = order
        return values[0] if len(values) == 1 else values


class OnnxModel(_Base):
    def __init__(self, path, metadata, providers=None, threads=None):
        super().__init__(path, metadata)
        import onnxruntime as ort

        ort.set_default_logger_severity(3)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in GPU_PROVIDERS if p in available] + ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))
        except Exception as e:
            raise RuntimeModelError(f"ONNX Runtime cannot load {path}: {str(e).splitlines()[0][:300]}") from None
        self.providers = self.session.get_providers()
        if not self.metadata:
            embedded = self.session.get_modelmeta().custom_metadata_map.get("ct_metadata")
            if embedded:
                try:
                    self.metadata = _clean_metadata(json.loads(embedded))
                except (ValueError, RecursionError):
                    pass
        self._inputs = {i.name: i for i in self.session.get_inputs()}
        self.input_names = list(self._inputs)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _feed(self, inputs) -> dict:
        feed = {}
        for name, value in _as_dict(inputs, self.input_names).items():
            kind = self._inputs[name].type
            dtype = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
                     "tensor(float16)": np.float16}.get(kind, None)
            feed[name] = np.asarray(value, dtype=dtype) if dtype else np.asarray(value)
        return feed

    def predict(self, inputs):
        try:
            outs = self.session.run(None, self._feed(inputs))
        except RuntimeModelError:
            raise
        except Exception as e:
            raise RuntimeModelError(f"ONNX Runtime failed: {str(e).splitlines()[0][:300]}") from None
        return self._ordered(dict(zip([o.name for o in self.session.get_outputs()], outs)))

    def bind(self, inputs):
        """Prepare inputs once; return a zero-argument call that only runs the session (for timing loops)."""
        feed, run = self._feed(inputs), self.session.run
        return lambda: run(None, feed)


class TFLiteModel(_Base):
    def __init__(self, path, metadata, threads=None, xnnpack=True):
        super().__init__(path, metadata)
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        kwargs = {"num_threads": threads} if threads else {}
        if not xnnpack:
            kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            with _quiet_native_stderr():  # "Created TensorFlow Lite XNNPACK delegate" etc.
                self.interpreter = Interpreter(model_path=str(path), **kwargs)
                runner = self.interpreter.get_signature_runner()
                self._in = runner.get_input_details()
                self._out = runner.get_output_details()
                del runner  # it holds references that block allocate_tensors/resize
                self.interpreter.allocate_tensors()
        except Exception as e:
            raise RuntimeModelError(f"LiteRT cannot load {path}: {str(e).splitlines()[0][:300]}") from None
        self.input_names = list(self.metadata.get("inputs", {}).get("names", [])) or list(self._in)
        self.input_names = [n for n in self.input_names if n in self._in] or list(self._in)
        self.output_names = list(self._out)

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
        feed = _as_dict(inputs, self.input_names)
        static = self.metadata.get("batch")
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
        feed = _as_dict(inputs, self.input_names)
        static = self.metadata.get("batch")
        n = len(next(iter(feed.values())))
        if static and n != static:  # a static-batch model (e.g. an LSTM): run it chunk by chunk
            return self._predict_in_chunks(feed, static, n)
        try:
            self._set_all(feed)
            self.interpreter.invoke()
        except RuntimeModelError:
            raise
        except Exception as e:
            raise RuntimeModelError(f"LiteRT failed: {str(e).splitlines()[0][:300]}") from None
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


def load(path: str | os.PathLike, *, providers=None, threads: int | None = None, xnnpack: bool = True):
    """Load ``.onnx`` or ``.tflite`` for inference; raises RuntimeModelError with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise RuntimeModelError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise RuntimeModelError(f"{path} is empty")
    metadata = read_metadata(path)
    suffix = path.suffix.lower()
    if suffix not in (".onnx", ".tflite"):
        raise RuntimeModelError(f"{path}: unknown model format {suffix or '(no suffix)'}; expected .onnx or .tflite")
    try:
        if suffix == ".onnx":
            return OnnxModel(path, metadata, providers=providers, threads=threads)
        return TFLiteModel(path, metadata, threads=threads, xnnpack=xnnpack)
    except RuntimeModelError:
        raise
    except Exception as e:  # a malformed file can trip the bindings themselves (bad UTF-8 names, ...)
        runtime = "ONNX Runtime" if suffix == ".onnx" else "LiteRT"
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise RuntimeModelError(f"{runtime} cannot load {path}: {type(e).__name__}: {first}") from None
