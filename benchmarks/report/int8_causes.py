"""Why an int8 variant is slower than its fp32: facts counted in the artifact itself (and in stored profiles),
not the usual suspects. Used by the report's and `benchmarks run`'s "slower than fp32" warnings.

- TFLite: ops whose outputs stay float (kernels LiteRT runs in float, with (de)quantization around them) and the
  number of QUANTIZE/DEQUANTIZE ops beyond the input/output pair.
- ONNX: the activation flavour of the QDQ model (S8S8 signed activations, or U8S8) against the host's VNNI flag,
  the Q/DQ node count against the compute nodes, and the compute nodes left in float (no DequantizeLinear input).
- A µs-scale fp32 graph, where the input quantize / output dequantize cost what the int8 arithmetic saves.
- When both variants were profiled (`benchmarks profile`), the layers int8 made slower, with their times.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from models.artifacts import CACHE_ENV, safe_name
from models.errors import UserError

from benchmarks.profiling.litert import read_tflite

TINY_MS = 0.1
QDQ_TFLITE = {"QUANTIZE", "DEQUANTIZE"}
SHAPE_TFLITE = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "SHAPE", "PACK", "UNPACK", "GATHER", "STRIDED_SLICE", "SLICE",
                "CONCATENATION", "TRANSPOSE"}
QDQ_ONNX = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
SHAPE_ONNX = {"Reshape", "Flatten", "Shape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Concat", "Gather",
              "Constant", "Slice", "Cast", "Split", "Expand"}
TFLITE_FLOAT = 0  # schema TensorType.FLOAT32
ONNX_UINT8, ONNX_INT8 = 2, 3


def artifact(row: dict, cache: str | os.PathLike | None = None) -> Path | None:
    """The variant's file where the sweep keeps it (<cache>/variants/<model key>/<variant>.<format>), or None."""
    try:  # a store is the user's input too: names in its rows never lead outside the cache
        key, variant = safe_name(row.get("model_key")), safe_name(row["variant"])
    except UserError:
        return None
    root = Path(cache or os.environ.get(CACHE_ENV) or Path.cwd() / ".cache") / "variants" / key
    for ext in ("tflite", "onnx"):
        path = root / f"{variant}.{ext}"
        if path.is_file():
            return path
    return None


def tflite_facts(path: Path) -> list[str]:
    from ai_edge_litert import schema_py_generated as schema  # deferred: LiteRT
    from ai_edge_litert.tools import flatbuffer_utils  # deferred: LiteRT

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = read_tflite(path)
    graph = model.subgraphs[0]
    ops = [(names.get(c, str(c)), op) for c, op in
           ((flatbuffer_utils.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex]), op)
            for op in graph.operators)]
    compute = [(k, op) for k, op in ops if k not in QDQ_TFLITE | SHAPE_TFLITE]
    floats = Counter(k for k, op in compute if op.outputs and graph.tensors[op.outputs[0]].type == TFLITE_FLOAT)
    qdq = sum(k in QDQ_TFLITE for k, _ in ops)
    facts = []
    if floats:
        facts.append(f"{sum(floats.values())} of its {len(compute)} compute ops run in float "
                     f"({', '.join(f'{k} ×{n}' for k, n in floats.most_common())})")
    inner = qdq - len(graph.inputs) - len(graph.outputs)
    if inner > 0:
        facts.append(f"{qdq} QUANTIZE/DEQUANTIZE ops, {inner} beyond the model's inputs and outputs: "
                     "activations go back and forth between int8 and float inside the graph")
    return facts


def onnx_facts(path: Path, host: str) -> list[str]:
    import onnx  # deferred: onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    inits = {i.name: i.data_type for i in graph.initializer}
    producer = {o: n.op_type for n in graph.node for o in n.output}
    kinds = Counter(n.op_type for n in graph.node)
    qdq = sum(kinds[k] for k in QDQ_ONNX)
    compute = [n for n in graph.node if n.op_type not in QDQ_ONNX | SHAPE_ONNX]
    integer = [n for n in compute if n.op_type.startswith("QLinear") or n.op_type.endswith("Integer")]
    in_qdq = [n for n in compute if n not in integer and n.input and producer.get(n.input[0]) == "DequantizeLinear"]
    floats = Counter(n.op_type for n in compute if n not in integer and n not in in_qdq)
    zps = Counter(inits.get(n.input[2]) for n in graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2)
    facts = []
    flags = host.split(" | ")[-1] if " | " in host else host
    vnni = "vnni" in flags.lower()
    if zps.get(ONNX_INT8):
        facts.append("S8S8 QDQ (signed int8 activations): "
                     + ("this host reports VNNI, yet ONNX Runtime's S8S8 path is the slower flavour; U8S8 uses VNNI"
                        if vnni else f"the host flags ({flags.strip() or 'none recorded'}) show no VNNI, and "
                                     "ONNX Runtime runs S8S8 int8 GEMMs no faster than fp32 there"))
    elif zps.get(ONNX_UINT8) and not vnni:
        facts.append(f"U8S8 QDQ on a host without a VNNI flag ({flags.strip() or 'none recorded'}): int8 GEMMs "
                     "gain little over fp32 there")
    if qdq:
        facts.append(f"{qdq} QuantizeLinear/DequantizeLinear nodes around {len(compute)} compute nodes "
                     f"({len(in_qdq) + len(integer)} of them quantized)")
    if floats:
        facts.append(f"{sum(floats.values())} compute nodes left in float "
                     f"({', '.join(f'{k} ×{n}' for k, n in floats.most_common())})")
    return facts


def profile_facts(row: dict, base: dict, profiles: dict | None) -> list[str]:
    """The layers int8 made slower, from stored profiles of both variants on this runtime."""
    if not profiles:
        return []
    q = profiles.get((row["model"], row["variant"], row["runtime"]))
    f = profiles.get((row["model"], base["variant"], row["runtime"]))
    if q is None or f is None:
        return []
    fp = {x["layer"]: x["ms"] for x in f["layers"]}
    slower = sorted(((x["ms"] - fp[x["layer"]], x) for x in q["layers"]
                     if x["layer"] in fp and x["ms"] > fp[x["layer"]] + 1e-4), key=lambda t: -t[0])
    if not slower:
        return []
    return ["profiled: int8 is slower in " + ", ".join(f"{x['layer']} ({x['ms']:.4f} vs {fp[x['layer']]:.4f} ms)"
                                                       for _, x in slower[:3])]


def facts(row: dict, base: dict, cache=None, profiles: dict | None = None) -> tuple[list[str], Path | None]:
    """Everything counted about why ``row`` (int8) is slower than ``base`` (its fp32); the artifact it read."""
    out = []
    if base["p50_ms"] < TINY_MS:
        out.append(f"a µs-scale graph (fp32 p50 {base['p50_ms'] * 1000:.0f} µs): the quantize/dequantize at its "
                   "inputs and outputs cost about as much as the int8 arithmetic saves")
    path = artifact(row, cache)
    if path is not None:
        try:
            out += tflite_facts(path) if path.suffix == ".tflite" else onnx_facts(path, row.get("host") or "")
        except Exception as e:  # a diagnostic must not break the report: say it could not be read
            out.append(f"{path.name} could not be inspected ({type(e).__name__}: {e})")
    out += profile_facts(row, base, profiles)
    return out, path
