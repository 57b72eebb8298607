"""Graph rewrites for ops tf2onnx emits that ONNX Runtime does not implement.

tf2onnx passes some TensorFlow ops through under their own names; ONNX Runtime then refuses the whole file
("No Op registered for Erfc"). Each such op has an exact expression in standard ONNX ops, so it is rewritten
in the graph rather than refused: ``Erfc(x) = 1 - Erf(x)`` (what exact ``gelu`` lowers to).
"""
from __future__ import annotations

import numpy as np


def _erfc(node, graph, helper, numpy_helper) -> list:
    x, y = node.input[0], node.output[0]
    one = f"{y}__one"
    erf = f"{y}__erf"
    graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), one))
    return [helper.make_node("Erf", [x], [erf], name=f"{node.name}__erf"),
            helper.make_node("Sub", [one, erf], [y], name=f"{node.name}__one_minus")]


REWRITES = {"Erfc": _erfc}


def rewrite(data: bytes) -> tuple[bytes, list[str]]:
    """The model with every op in REWRITES replaced by standard ops, and a note per op type rewritten."""
    import onnx  # deferred: onnx
    from onnx import helper, numpy_helper  # deferred: onnx

    proto = onnx.load_from_string(data)
    graph = proto.graph
    if not any(n.op_type in REWRITES and n.domain in ("", "ai.onnx") for n in graph.node):
        return data, []
    nodes, counts = [], {}
    for node in graph.node:
        fn = REWRITES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if fn is None:
            nodes.append(node)
            continue
        nodes.extend(fn(node, graph, helper, numpy_helper))
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    del graph.node[:]
    graph.node.extend(nodes)
    notes = [f"ONNX: {n} {op} node(s) rewritten in standard ops (ONNX Runtime has no {op} kernel)"
             for op, n in counts.items()]
    return proto.SerializeToString(), notes
