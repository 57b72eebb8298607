"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias
Correction", section 4.1; AIMET's ``cross_layer_equalization``).

Two layers joined through a positively homogeneous function (ReLU, LeakyReLU, linear, and per-channel
pass-throughs such as pooling and zero padding: ``f(x / s) = f(x) / s`` for ``s > 0``) compute the same function
when output channel ``i`` of the first is divided by ``s_i`` and input channel ``i`` of the second multiplied by
``s_i``. With ``r1_i`` the range of the first kernel's output channel and ``r2_i`` that of the second's input
channel, ``s_i = sqrt(r1_i * r2_i) / r2_i`` makes both ranges ``sqrt(r1_i * r2_i)``: no channel is left with a
sliver of the int8 range, and the activation between the layers gets channels of similar size (one int8 scale
for all of them). Chains (conv -> depthwise -> conv) are equalized pair by pair over a few rounds until the
scales settle. Batch norms are folded into their conv first (the result has none).

ReLU6 is not equalized: it clips at 6, so ``relu6(x / s) != relu6(x) / s`` and scaling would move the clip (the
paper replaces ReLU6 with ReLU for MobileNetV2, which changes the model; here the pair is skipped with that
reason).
"""
from __future__ import annotations

import numpy as np

from compress.techniques.outcome import Outcome
from compress.techniques.weight_algos import common

ROUNDS = 20
SETTLED = 1e-6  # max |log s| of a round below which the scales have converged
FUNCTION_RTOL = 1e-3  # a larger fp32 change than this is a bug: the result is refused

#: layers between a pair that scale with their input channel by channel (f(x / s) = f(x) / s, s > 0)
_PASS = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianDropout", "AlphaDropout", "ZeroPadding1D",
         "ZeroPadding2D", "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
         "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D"}
_HOMOGENEOUS = {"linear", "relu", "leaky_relu"}
_RELU6 = ("ReLU6 clips at 6: scaling its input channels by 1/s would move the clip (relu6(x/s) != relu6(x)/s), "
          "so the pair is not equalized (the CLE paper swaps ReLU6 for ReLU in MobileNetV2, which changes the model)")


def _activation_problem(what: str, name: str, config: dict | None = None) -> str | None:
    """Why an activation breaks equalization, or None when it commutes with positive per-channel scaling."""
    if what == "relu" and config is not None:
        if config.get("max_value") is not None:
            return _RELU6 if float(config["max_value"]) == 6.0 else \
                f"{name} clips at {config['max_value']}: scaling a channel would move the clip"
        if float(config.get("threshold") or 0.0) != 0.0:
            return f"{name} has a threshold of {config['threshold']}: scaling a channel would move it"
        return None
    if what == "relu6":
        return _RELU6
    if what in _HOMOGENEOUS:
        return None
    return (f"{name} applies {what}, which does not commute with per-channel scaling ({what}(x/s) != {what}(x)/s); "
            "only ReLU, LeakyReLU and linear do")


def _layer_problem(layer) -> str | None:
    cls, config = type(layer).__name__, layer.get_config()
    if cls == "ReLU":
        return _activation_problem("relu", layer.name, config)
    if cls == "LeakyReLU":
        return None
    if cls == "Activation":
        what = config.get("activation")
        what = what if isinstance(what, str) else common.activation_name(layer)
        return _activation_problem(what, layer.name)
    if cls in _PASS:
        return None
    if cls == "Flatten":
        return (f"{layer.name} (Flatten) interleaves the channels with the positions: the next layer's rows would need "
                "each scale repeated per position (not done here)")
    return f"{layer.name} ({cls}) does not commute with per-channel scaling"


def _partner(model, graph, name: str) -> tuple[str | None, str | None, list[str]]:
    """(the layer equalized with ``name``, None, layers between) or (None, why there is none, [])."""
    layer = model.get_layer(name)
    problem = _activation_problem(common.activation_name(layer), "its own activation")
    if problem:
        return None, problem, []
    cur, between = name, []
    while True:
        if cur in graph.outputs:
            return None, ("its output is a model output: there is no next layer to take the scales" if cur == name
                          else f"{cur}'s output is a model output before any conv/dense"), []
        consumers = graph.consumers.get(cur, [])
        if len(consumers) != 1:
            return None, (f"{cur}'s output feeds {len(consumers)} layers ({', '.join(consumers)}): equalizing needs "
                          "one path to one conv/dense layer"), []
        nxt = model.get_layer(consumers[0])
        if len(graph.producers.get(nxt.name, [])) != 1:
            return None, (f"{nxt.name} ({type(nxt).__name__}) merges it with other inputs: scaling its channels "
                          "would scale one side of the merge only"), []
        if common.kind_of(nxt) is not None:
            reason = common.support(nxt, calls=graph.calls.get(nxt.name, 1))
            if reason:
                return None, f"the next layer {nxt.name} is not handled: {reason}", []
            return nxt.name, None, between
        problem = _layer_problem(nxt)
        if problem:
            return None, problem + f" between {name} and the next conv/dense", []
        between.append(nxt.name)
        cur = nxt.name


def _ranges_out(kind, kernel) -> np.ndarray:
    return np.abs(common.out_matrix(kind, kernel)).max(axis=0)


def _ranges_in(kind, kernel) -> np.ndarray:
    axis = common.in_axis(kind, kernel)
    return np.abs(np.moveaxis(kernel, axis, -1).reshape(-1, kernel.shape[axis])).max(axis=0)


def _spread(kind, kernel) -> float:
    """Largest over smallest output-channel range of a kernel (1: all channels alike)."""
    r = _ranges_out(kind, kernel)
    r = r[r > 0]
    return float(r.max() / r.min()) if r.size else 1.0


def _equalize(kinds: dict, weights: dict, pairs: list, rounds: int) -> tuple[int, dict]:
    """Rescale ``weights`` (name -> [kernel, bias?], float64) in place; (rounds run, {pair: final spread ratio})."""
    done = 0
    for done in range(1, rounds + 1):
        worst = 0.0
        for a, b in pairs:
            ka, kb = weights[a][0], weights[b][0]
            r1, r2 = _ranges_out(kinds[a], ka), _ranges_in(kinds[b], kb)
            ok = (r1 > 0) & (r2 > 0)
            s = np.where(ok, np.sqrt(np.where(ok, r1 * r2, 1.0)) / np.where(ok, r2, 1.0), 1.0)
            weights[a][0] = (common.out_matrix(kinds[a], ka) / s).reshape(ka.shape)
            if len(weights[a]) > 1:
                weights[a][1] = weights[a][1] / s
            axis = common.in_axis(kinds[b], kb)
            weights[b][0] = np.moveaxis(np.moveaxis(kb, axis, -1) * s, -1, axis)
            worst = max(worst, float(np.abs(np.log(s)).max()) if s.size else 0.0)
        if worst < SETTLED:
            break
    return done, {f"{a}->{b}": _spread(kinds[a], weights[a][0]) for a, b in pairs}


def _pairs(model, graph, names) -> tuple[list, dict, dict]:
    """(pairs to equalize, {layer: why it has no partner}, {pair: layers between})."""
    pairs, reasons, via = [], {}, {}
    for name in names:
        partner, reason, between = _partner(model, graph, name)
        if partner is None:
            reasons[name] = f"not equalized: {reason}"
        else:
            pairs.append((name, partner))
            via[f"{name}->{partner}"] = between
    return pairs, reasons, via


def verdicts(model) -> dict:
    """{layer with weights: None where CLE rescales it (a batch norm: folds it), else why not}; nothing is run."""
    problem = common.graph_problem(model)
    if problem:
        return {layer.name: problem for layer in model.layers if layer.weights}
    folded_model, folded, stayed = common.fold_batchnorms(model)
    graph = common.graph_of(folded_model)
    names, skipped = common.quantizable(folded_model, graph)
    pairs, reasons, _ = _pairs(folded_model, graph, names)
    in_pair = {n for pair in pairs for n in pair}
    return {**skipped, **stayed, **dict.fromkeys(folded), **{n: None if n in in_pair else reasons[n] for n in names}}


def cle(model, calibration=None, rounds: int = ROUNDS) -> tuple[object, Outcome]:
    """(equalized model without batch norms, Outcome). ``calibration`` (optional; CLE needs no data) checks that
    the fp32 outputs did not change."""
    outcome, folded_model, graph, names = common.begin(model, "cle")
    if folded_model is None:
        return model, outcome
    pairs, reasons, via = _pairs(folded_model, graph, names)
    in_pair = {n for pair in pairs for n in pair}
    outcome.applied = [n for n in names if n in in_pair]
    outcome.skipped.update({n: r for n, r in reasons.items() if n not in in_pair})
    if not pairs:
        outcome.details["pairs"] = []
        return folded_model, outcome
    kinds = {n: common.kind_of(folded_model.get_layer(n)) for n in in_pair}
    weights = {n: [w.astype(np.float64) for w in folded_model.get_layer(n).get_weights()] for n in in_pair}
    before = {f"{a}->{b}": _spread(kinds[a], weights[a][0]) for a, b in pairs}
    done, spread = _equalize(kinds, weights, pairs, rounds)
    new = common.rebuild(folded_model, graph, weights={n: [w.astype(np.float32) for w in ws]
                                                        for n, ws in weights.items()})
    outcome.details.update({"pairs": [list(p) for p in pairs], "between": via, "rounds": done,
                            "range_ratio_before": before,
                            "range_ratio_after": spread})
    if calibration is not None:
        sample = common.first(calibration, 64)
        diff = common.max_relative_difference(common.run(model, sample), common.run(new, sample))
        outcome.details["fp32_max_relative_change"] = diff
        if diff > FUNCTION_RTOL:
            outcome.blocked = (f"the equalized model's fp32 outputs moved by {diff:.2g} (relative): it is not the same "
                               "function, so the original is kept")
            return model, outcome
    return new, outcome
