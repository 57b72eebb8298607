"""Empirical bias correction (Nagel et al. 2019, section 4.2; AIMET's ``bias_correction``).

Rounding a kernel to the int8 grid shifts the expected pre-activation output of each channel: for
``y = W x + b``, ``E[W~ x~] != E[W x]`` when the rounding errors of a channel do not cancel (a few large weights
set the scale and the small ones all round the same way). On the calibration data, layer by layer in graph
order, the correction measures ``E[y]`` of the fp32 reference model and ``E[y~]`` of the model whose kernels are
on the int8 grid (its upstream layers already corrected, so the correction also takes the error that arrives
from them) and adds ``E[y] - E[y~]`` to the bias. Both expectations are linear in the layer's input, so only the
mean input per layer is kept (``E[conv(x)] = conv(E[x])``), not the activations.

The kernels themselves are left as they are: the converter rounds them to the same grid (per-channel symmetric,
scale max|w| / 127, as TFLite and ONNX Runtime compute it), which is what the correction was measured for. Layers
without a bias are skipped with the reason unless ``add_bias`` (the layer is rebuilt with one).
"""
from __future__ import annotations

import numpy as np

from compress.techniques.outcome import Outcome
from compress.techniques.weight_algos import common


def _mean_output(layer, kind: str, mean_x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """E[W x] per output channel from E[x] (the layer's op is linear in x)."""
    y = common.linear_op(layer, kind)(np.asarray(mean_x, np.float32)[None], np.asarray(kernel, np.float32))
    return common.channel_mean(y)


def bias_correction(model, calibration, reference=None, grid: common.Grid = common.TFLITE_GRID, exclude=(),
                    add_bias: bool = False) -> tuple[object, Outcome]:
    """(model with corrected biases and no batch norms, Outcome). ``reference``: the fp32 model whose outputs are
    the target, with the same layer names and no batch norms (default: ``model`` itself, folded)."""
    outcome, folded_model, graph, names = common.begin(model, "bias-correction", exclude,
                                                       "the mean outputs are measured on it", calibration)
    if folded_model is None:
        return model, outcome
    model = folded_model
    reference = model if reference is None else reference
    targets, updates = [], {}
    for name in names:
        if model.get_layer(name).get_config().get("use_bias", True):
            targets.append(name)
        elif add_bias:
            targets.append(name)
            updates[name] = {"use_bias": True}
        else:
            outcome.skipped[name] = ("it has no bias to correct (use_bias=False): the int8 weights' mean shift stays "
                                     "(rebuild the layer with a bias, or pass add_bias)")
    if not targets:
        return model, outcome
    kinds = {n: common.kind_of(model.get_layer(n)) for n in targets}
    weights = {}
    for n in targets:
        kernel, *rest = model.get_layer(n).get_weights()
        weights[n] = [kernel, rest[0] if rest else np.zeros(common.n_out(kinds[n], kernel), np.float32)]
    # the reference's E[y] for every layer at once (its inputs do not change)
    ref_inputs = common.mean_inputs(common.input_probe(reference, targets), calibration)
    expected = {}
    for n, mean_x in zip(targets, ref_inputs):
        ref_kernel, *ref_rest = reference.get_layer(n).get_weights()
        ref_bias = ref_rest[0] if ref_rest else 0.0
        expected[n] = _mean_output(reference.get_layer(n), kinds[n], mean_x, ref_kernel) + ref_bias
    # the quantized model, corrected layer by layer: each layer sees its upstream layers' corrections
    quantized = {n: common.fake_quant(kinds[n], w[0], grid) for n, w in weights.items()}
    working = common.rebuild(model, graph, config_updates=updates,
                             weights={n: [quantized[n], weights[n][1]] for n in targets})
    shifts = {}
    probe = common.input_probe(working, targets)  # reads the working model's weights as they are corrected
    for i, n in enumerate(targets):
        mean_x = common.mean_inputs(probe, calibration)[i]
        layer = working.get_layer(n)
        got = _mean_output(layer, kinds[n], mean_x, quantized[n]) + weights[n][1]
        delta = expected[n] - got
        weights[n][1] = (weights[n][1] + delta).astype(np.float32)
        layer.set_weights([quantized[n], weights[n][1]])
        spread = float(np.abs(expected[n]).max()) or 1.0
        shifts[n] = float(np.abs(delta).max() / spread)
        outcome.applied.append(n)
    outcome.details.update({"grid": str(grid), "max_shift_relative": shifts, "biases_added": sorted(updates)})
    new = common.rebuild(model, graph, config_updates=updates, weights={n: list(w) for n, w in weights.items()})
    return new, outcome
