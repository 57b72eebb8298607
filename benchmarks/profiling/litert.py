"""LiteRT's own op profiler, reached through libLiteRt.so's C API (ctypes): the Python CompiledModel and
Interpreter expose no profiler, but the C API does (``LiteRtCompiledModelGetProfiler``, enabled by the runtime
options' ``enable_profiling``).

What it measures: the TFLite profiler's per-op events of each run. With XNNPACK (``litert``) these are XNNPACK's
own operator timings (``DELEGATE_PROFILED_OPERATOR_INVOKE_EVENT``, whole µs) plus the builtin events of ops
XNNPACK did not take; with builtin kernels (``litert-noxnnpack``, ``kernel_mode = "builtin"``) one event per
TFLite node. XNNPACK's operators do not name their TFLite node, so they are matched to the delegated nodes in
execution order by operator family (a "Convolution" to the next CONV_2D, ...); glue operators XNNPACK adds
(reshapes before a fully connected) go to the node they feed. An operator no node matches is reported as such,
never guessed. Each TFLite node's layer is the Keras layer its output tensor names ("cnn/conv2d/Relu;...").
"""
from __future__ import annotations

import ctypes as C
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ct_runtime.base import quiet_native_stderr
from models.errors import CheckFailed

from benchmarks.profiling.layers import layer_of

P = C.c_void_p
RUNTIME_OPTIONS = b"runtime_options_string"  # LrtGetRuntimeOptionsIdentifier() in ai-edge-litert 2.x
CPU_OPTIONS = b"xnnpack"  # LrtGetCpuOptionsIdentifier()
HW_CPU = 1
LOCK_WRITE = 1
OPERATOR_INVOKE_EVENT, DELEGATE_PROFILED_OPERATOR_INVOKE_EVENT = 1 << 1, 1 << 3
DTYPES = {1: np.float32, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16, 9: np.int8, 10: np.float16}

# XNNPACK operator family (its name before " (") -> the TFLite builtins that produce it as their main operator
FAMILIES = {
    "Convolution": {"CONV_2D", "DEPTHWISE_CONV_2D", "CONV_3D"},
    "Deconvolution": {"TRANSPOSE_CONV"},
    "Fully Connected": {"FULLY_CONNECTED", "BATCH_MATMUL"},
    "Batch Matrix Multiply": {"BATCH_MATMUL", "FULLY_CONNECTED"},
    "Max Pooling": {"MAX_POOL_2D"}, "Average Pooling": {"AVERAGE_POOL_2D"}, "Argmax Pooling": {"MAX_POOL_2D"},
    "Global Average Pooling": {"MEAN"}, "Mean": {"MEAN"}, "Sum": {"SUM"}, "Max": {"REDUCE_MAX"},
    "Softmax": {"SOFTMAX"}, "Log Softmax": {"LOG_SOFTMAX"},
    "Convert": {"QUANTIZE", "DEQUANTIZE", "CAST"},
    "Add": {"ADD"}, "Subtract": {"SUB"}, "Multiply": {"MUL"}, "Divide": {"DIV"}, "Maximum": {"MAXIMUM"},
    "Minimum": {"MINIMUM"}, "Squared Difference": {"SQUARED_DIFFERENCE"},
    "Clamp": {"RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1"}, "Leaky ReLU": {"LEAKY_RELU", "PRELU"},
    "PReLU": {"PRELU"}, "Sigmoid": {"LOGISTIC"}, "Tanh": {"TANH"}, "HardSwish": {"HARD_SWISH"}, "ELU": {"ELU"},
    "GELU": {"GELU"}, "Square Root": {"SQRT"}, "Reciprocal Square Root": {"RSQRT"}, "Square": {"SQUARE"},
    "Exp": {"EXP"}, "Log": {"LOG"}, "Negate": {"NEG"}, "Abs": {"ABS"},
    "Concatenate": {"CONCATENATION"}, "Constant Pad": {"PAD", "PADV2"}, "Slice": {"SLICE", "STRIDED_SLICE"},
    "Transpose": {"TRANSPOSE"}, "Resize Bilinear": {"RESIZE_BILINEAR"}, "Depth To Space": {"DEPTH_TO_SPACE"},
    "Space To Depth": {"SPACE_TO_DEPTH"}, "Even Split": {"SPLIT", "SPLIT_V", "UNPACK"},
}
# operators XNNPACK also inserts around others: matched to a node of these types only when it is the next one
GLUE = {"Static Reshape": {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}, "Copy": {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"},
        "Static Transpose": {"TRANSPOSE"}}


def family(op_name: str) -> str:
    return op_name.split(" (")[0].strip()


@dataclass
class Node:
    index: int
    op: str  # TFLite builtin name, e.g. CONV_2D
    layer: str | None  # Keras layer, None: its tensors name none


def _lib():
    import ai_edge_litert  # deferred: LiteRT

    path = Path(ai_edge_litert.__file__).parent / "libLiteRt.so"
    if not path.is_file():
        raise CheckFailed(f"no LiteRT profile: {path} is missing from this ai-edge-litert install")
    lib = C.CDLL(str(path))
    lib.LiteRtCreateOpaqueOptions.argtypes = [C.c_char_p, P, P, C.POINTER(P)]
    lib.LiteRtCreateModelFromFile.argtypes = [P, C.c_char_p, C.POINTER(P)]
    lib.LiteRtGetProfilerEvents.argtypes = [P, C.c_int, P]
    for name in ("LiteRtDestroyCompiledModel", "LiteRtDestroyModel", "LiteRtDestroyOptions",
                 "LiteRtDestroyEnvironment", "LiteRtDestroyTensorBuffer"):
        getattr(lib, name).restype = None
    return lib


class _Mem(C.Structure):
    _fields_ = [("total", C.c_size_t), ("in_use", C.c_size_t), ("private", C.c_size_t)]


class _Event(C.Structure):  # ProfiledEventData (litert/c/litert_profiler_event.h)
    _fields_ = [("tag", C.c_char_p), ("event_type", C.c_int), ("start_us", C.c_uint64), ("elapsed_us", C.c_uint64),
                ("begin_mem", _Mem), ("end_mem", _Mem), ("metadata1", C.c_uint64), ("metadata2", C.c_uint64),
                ("source", C.c_int)]


def read_tflite(path: Path):
    """The file as flatbuffer_utils' object model, from bytes read here: its own ``read_model`` mmaps the file and
    never closes the descriptor it opened for that (one leaked fd per call; a full sweep reached select()'s 1024)."""
    from ai_edge_litert.tools import flatbuffer_utils  # deferred: LiteRT

    return flatbuffer_utils.read_model_from_bytearray(bytearray(Path(path).read_bytes()))


def tflite_nodes(path: Path, layers: set[str] | None) -> list[list[Node]]:
    """Each subgraph's nodes (the main one first, loop bodies after) with their Keras layer, from the output
    tensors' names; an activation or other op whose tensors name no layer takes the layer of the node producing
    its first input, except QUANTIZE/DEQUANTIZE, which stay unattributed: they belong to no layer."""
    from ai_edge_litert import schema_py_generated as schema  # deferred: LiteRT

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = read_tflite(path)
    return [_graph_nodes(model, graph, names, layers) for graph in model.subgraphs]


def _graph_nodes(model, graph, names, layers) -> list[Node]:
    from ai_edge_litert.tools import flatbuffer_utils  # deferred: LiteRT

    producer: dict[int, Node] = {}
    out = []
    for i, op in enumerate(graph.operators):
        code = flatbuffer_utils.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
        kind = names.get(code, str(code))
        layer = None
        for t in op.outputs:
            for part in graph.tensors[t].name.decode(errors="replace").split(";"):
                layer = layer or layer_of(part, layers)
        if layer is None and kind not in ("QUANTIZE", "DEQUANTIZE"):
            first = next((t for t in op.inputs if t in producer), None)
            layer = producer[first].layer if first is not None else None
        node = Node(i, kind, layer)
        out.append(node)
        for t in op.outputs:
            producer[t] = node
    return out


def assign(ops: list[str], nodes: list[Node]) -> list[Node | None]:
    """Match the XNNPACK operators of one delegate partition (in order) to its TFLite nodes (in order)."""
    out: list[Node | None] = []
    pending: list[int] = []
    p = 0
    for k, name in enumerate(ops):
        fam = family(name)
        glue = GLUE.get(fam)
        if glue is not None:
            if p < len(nodes) and nodes[p].op in glue:
                out.append(nodes[p])
                p += 1
            else:
                out.append(None)
                pending.append(k)
            continue
        kinds = FAMILIES.get(fam)
        q = next((j for j in range(p, len(nodes)) if kinds and nodes[j].op in kinds), None)
        if q is None:
            out.append(None)
            continue
        out.append(nodes[q])
        for j in pending:
            out[j] = nodes[q]
        pending, p = [], q + 1
    last = next((n for n in reversed(out) if n is not None), None)
    return [n if n is not None or k not in pending else last for k, n in enumerate(out)]


def run_events(events: list[tuple], nodes: list[Node], subgraphs: list[list[Node]] | None = None
               ) -> list[tuple[str, str, float]]:
    """One run's op events (tag, type, µs, node index[, subgraph]) -> (op key, op type, µs), the key naming its
    layer. XNNPACK partitions are matched within the main subgraph; builtin ops of a loop body by their own
    subgraph's node."""
    builtin = {e[3] for e in events if e[1] == OPERATOR_INVOKE_EVENT and (e[4:] or (0,))[0] == 0}
    delegated = [n for n in nodes if n.index not in builtin]
    out, segment, last_builtin = [], [], -1

    def flush(next_builtin: int):
        if not segment:
            return
        part = [n for n in delegated if last_builtin < n.index < next_builtin]
        for (tag, us, idx), node in zip(segment, assign([s[0] for s in segment], part)):
            out.append((_key(node, f"xnnpack:{last_builtin}:{idx}", tag), tag, float(us)))
        segment.clear()

    for tag, kind, us, meta, *sub in events:
        sub = sub[0] if sub else 0
        if kind == DELEGATE_PROFILED_OPERATOR_INVOKE_EVENT:
            segment.append((tag, us, meta))
        elif kind == OPERATOR_INVOKE_EVENT and sub:
            graph = (subgraphs or [])[sub] if sub < len(subgraphs or []) else []
            node = graph[meta] if meta < len(graph) else None
            out.append((_key(node, f"subgraph:{sub}:node:{meta}", tag), tag, float(us)))
        elif kind == OPERATOR_INVOKE_EVENT:
            flush(meta)
            last_builtin = meta
            node = nodes[meta] if meta < len(nodes) else None
            out.append((_key(node, f"node:{meta}", tag), tag, float(us)))
    flush(len(nodes) + 1)
    return out


def _key(node: Node | None, where: str, tag: str) -> str:
    """The op's name for ``profile.aggregate``: layer path first, so ``layer_of`` finds the layer; an operator
    no node matched is its own row, named as such."""
    if node is None:
        return f"(unmatched XNNPACK operator) {tag} @{where}"
    return f"{node.layer}/{where}" if node.layer else f"{node.op} {where}"


class Session:
    """A CompiledModel built with profiling on, its input and output buffers, and its profiler."""

    def __init__(self, path: Path, threads: int, xnnpack: bool, batch: int):
        self.lib = lib = _lib()
        self.handles: list[tuple[str, P]] = []
        env, model, opts, cm = P(), P(), P(), P()
        with quiet_native_stderr():
            self._ok(lib.LiteRtCreateEnvironment(0, None, C.byref(env)), "LiteRtCreateEnvironment")
            self.handles.append(("LiteRtDestroyEnvironment", env))
            self._ok(lib.LiteRtCreateModelFromFile(env, str(path).encode(), C.byref(model)), "loading the model")
            self.handles.append(("LiteRtDestroyModel", model))
            self._ok(lib.LiteRtCreateOptions(C.byref(opts)), "LiteRtCreateOptions")
            self.handles.append(("LiteRtDestroyOptions", opts))
            self._ok(lib.LiteRtSetOptionsHardwareAccelerators(opts, HW_CPU), "selecting the CPU")
            self._opaque(opts, RUNTIME_OPTIONS, "enable_profiling = true\n")
            cpu = f"num_threads = {threads}\n" + ("" if xnnpack else 'kernel_mode = "builtin"\n')
            self._opaque(opts, CPU_OPTIONS, cpu)
            self._ok(lib.LiteRtCreateCompiledModel(env, model, opts, C.byref(cm)), "compiling the model")
            self.handles.append(("LiteRtDestroyCompiledModel", cm))
        self.env, self.model, self.cm = env, model, cm
        sig = P()
        self._ok(lib.LiteRtGetModelSignature(model, C.c_size_t(0), C.byref(sig)), "reading the signature")
        self.inputs = self._buffers(sig, "Input", batch)
        self.outputs = self._buffers(sig, "Output", batch)
        self.profiler = P()
        self._ok(lib.LiteRtCompiledModelGetProfiler(cm, C.byref(self.profiler)), "LiteRtCompiledModelGetProfiler")
        if not self.profiler:
            raise CheckFailed("LiteRT returned no profiler although enable_profiling was set")

    def _ok(self, status: int, what: str):
        if status != 0:
            self.close()
            raise CheckFailed(f"no LiteRT profile: {what} failed in libLiteRt.so (LiteRtStatus {status})")

    def _opaque(self, opts, ident: bytes, toml: str):
        libc = C.CDLL(None)
        libc.malloc.restype = P
        data = toml.encode() + b"\0"
        buf = libc.malloc(len(data))  # freed by LiteRT with free() when the options go
        C.memmove(buf, data, len(data))
        handle = P()
        self._ok(self.lib.LiteRtCreateOpaqueOptions(ident, buf, C.cast(libc.free, P), C.byref(handle)),
                 f"creating {ident.decode()} options")
        self._ok(self.lib.LiteRtAddOpaqueOptions(opts, handle), f"adding {ident.decode()} options")

    def _buffers(self, sig, kind: str, batch: int) -> list[tuple[P, tuple, type]]:
        n = C.c_size_t()
        self._ok(getattr(self.lib, f"LiteRtGetNumSignature{kind}s")(sig, C.byref(n)), f"counting {kind}s")
        out = []
        for i in range(n.value):
            tensor, req, buf = P(), P(), P()
            self._ok(getattr(self.lib, f"LiteRtGetSignature{kind}TensorByIndex")(sig, C.c_size_t(i),
                                                                                  C.byref(tensor)), "tensor")
            ttype = (C.c_ubyte * 128)()  # LiteRtRankedTensorType: element type, LiteRtLayout (72 bytes)
            self._ok(self.lib.LiteRtGetRankedTensorType(tensor, ttype), f"{kind} {i} is not a ranked tensor")
            etype, rank = struct.unpack_from("<iI", ttype, 0)
            dims = [d if d >= 0 else batch for d in struct.unpack_from("<8i", ttype, 8)[: rank & 127]]
            struct.pack_into(f"<{len(dims)}i", ttype, 8, *dims)
            if kind == "Input":
                arr = (C.c_int * len(dims))(*dims)
                self._ok(self.lib.LiteRtCompiledModelResizeInputTensor(self.cm, C.c_size_t(0), C.c_size_t(i), arr,
                                                                       C.c_size_t(len(dims))), "resizing an input")
            self._ok(getattr(self.lib, f"LiteRtGetCompiledModel{kind}BufferRequirements")(
                self.cm, C.c_size_t(0), C.c_size_t(i), C.byref(req)), "buffer requirements")
            self._ok(self.lib.LiteRtCreateManagedTensorBufferFromRequirements(self.env, ttype, req, C.byref(buf)),
                     "creating a tensor buffer")
            self.handles.append(("LiteRtDestroyTensorBuffer", buf))
            out.append((buf, tuple(dims), DTYPES.get(etype)))
        return out

    def feed(self, arrays: list[np.ndarray] | None):
        """Write ``arrays`` (or seeded normal floats / zeros) into the input buffers."""
        rng = np.random.default_rng(0)
        for i, (buf, dims, dtype) in enumerate(self.inputs):
            if dtype is None:
                raise CheckFailed("no LiteRT profile: an input has an element type this profiler cannot fill")
            a = arrays[i] if arrays is not None and i < len(arrays) else (
                rng.standard_normal(dims) if np.issubdtype(dtype, np.floating) else np.zeros(dims))
            a = np.ascontiguousarray(np.asarray(a).reshape(dims), dtype=dtype)
            addr = P()
            self._ok(self.lib.LiteRtLockTensorBuffer(buf, C.byref(addr), LOCK_WRITE), "locking an input")
            C.memmove(addr, a.ctypes.data, a.nbytes)
            self.lib.LiteRtUnlockTensorBuffer(buf)

    def run(self):
        ins = (P * len(self.inputs))(*[b for b, _, _ in self.inputs])
        outs = (P * len(self.outputs))(*[b for b, _, _ in self.outputs])
        self._ok(self.lib.LiteRtRunCompiledModel(self.cm, C.c_size_t(0), C.c_size_t(len(ins)), ins,
                                                 C.c_size_t(len(outs)), outs), "running the model")

    def events(self) -> list[tuple[str, int, int, int]]:
        """The op events recorded since the last start (tag, type, µs, node index, subgraph), in execution order."""
        n = C.c_int()
        self._ok(self.lib.LiteRtGetNumProfilerEvents(self.profiler, C.byref(n)), "LiteRtGetNumProfilerEvents")
        evs = (_Event * n.value)()
        if n.value:
            self._ok(self.lib.LiteRtGetProfilerEvents(self.profiler, n, evs), "LiteRtGetProfilerEvents")
        ops = (OPERATOR_INVOKE_EVENT, DELEGATE_PROFILED_OPERATOR_INVOKE_EVENT)
        return [(e.tag.decode(errors="replace"), e.event_type, int(e.elapsed_us), int(e.metadata1),
                 int(e.metadata2) if e.event_type == OPERATOR_INVOKE_EVENT else 0)
                for e in evs if e.event_type in ops]

    def close(self):
        while self.handles:
            name, h = self.handles.pop()
            getattr(self.lib, name)(h)


def inputs_list(feed) -> list[np.ndarray] | None:
    if feed is None:
        return None
    if isinstance(feed, dict):
        return list(feed.values())
    if isinstance(feed, (list, tuple)):
        return list(feed)
    return [feed]


def litert_ops(path: Path, feed, runs: int, warmup: int, threads: int, xnnpack: bool, batch: int,
               layers: set[str] | None) -> list[tuple[str, str, float]]:
    """Profile ``runs`` runs after ``warmup``; profiling starts (which clears the buffer) and stops around each
    run and its events are read in between, so runs never mix."""
    subgraphs = tflite_nodes(path, layers)
    session = Session(path, threads, xnnpack, batch)
    try:
        session.feed(inputs_list(feed))
        for _ in range(warmup):
            session.run()
        ops = []
        for _ in range(runs):
            session._ok(session.lib.LiteRtStartProfiler(session.profiler), "LiteRtStartProfiler")
            session.run()
            session._ok(session.lib.LiteRtStopProfiler(session.profiler), "LiteRtStopProfiler")
            events = session.events()
            if not events:
                raise CheckFailed("no LiteRT profile: the profiler recorded no op events for a run")
            ops += run_events(events, subgraphs[0], subgraphs)
        return ops
    finally:
        with quiet_native_stderr():  # destroying the environment logs "INFO: ... DestroyAccelerator" on fd 2
            session.close()
