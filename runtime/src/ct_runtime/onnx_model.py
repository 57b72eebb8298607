"""``.onnx`` on ONNX Runtime: a GPU execution provider when the installed build has one."""
from __future__ import annotations

import numpy as np

from .base import ExportedModel, as_dict, first_line
from .errors import RuntimeModelError
from .metadata import METADATA_KEY, parse_json

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_DTYPES = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
           "tensor(float16)": np.float16}


class OnnxModel(ExportedModel):
    def __init__(self, path, metadata, providers=None, threads=None):
        super().__init__(path, metadata)
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise RuntimeModelError(f"ONNX Runtime is not installed ({first_line(e)}): "
                                    "pip install onnxruntime (or onnxruntime-gpu)") from None

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
            raise RuntimeModelError(f"ONNX Runtime cannot load {path}: {first_line(e)}") from None
        self.providers = self.session.get_providers()
        self._inputs = {i.name: i for i in self.session.get_inputs()}
        self._output_order = [o.name for o in self.session.get_outputs()]
        leading = [_leading(i.shape) for i in self._inputs.values()]
        self._settle_metadata(metadata, self._embedded, list(self._inputs), self._output_order, leading)
        self.input_names = list(self._inputs)  # the session's order, as before (the names are checked equal)

    def _embedded(self) -> dict:
        """The copy in the file's metadata_props."""
        embedded = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        return parse_json(embedded, f"the ct_metadata inside {self.path}") if embedded else {}

    def _feed(self, inputs) -> dict:
        feed = {}
        for name, value in as_dict(inputs, self.input_names).items():
            dtype = _DTYPES.get(self._inputs[name].type)
            feed[name] = np.asarray(value, dtype=dtype) if dtype else np.asarray(value)
        return feed

    def predict(self, inputs):
        try:
            outs = self.session.run(None, self._feed(inputs))
        except RuntimeModelError:
            raise
        except Exception as e:
            raise RuntimeModelError(f"ONNX Runtime failed: {first_line(e)}") from None
        return self._ordered(dict(zip(self._output_order, outs)))

    def bind(self, inputs):
        """Prepare inputs once; return a zero-argument call that only runs the session (for timing loops)."""
        feed, run = self._feed(inputs), self.session.run
        return lambda: run(None, feed)


def _leading(shape):
    """An input's static leading dimension, None when it is symbolic (dynamic) or the input is a scalar."""
    first = shape[0] if shape else None
    return first if isinstance(first, int) and first >= 0 else None
