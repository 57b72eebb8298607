"""AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization"; AIMET's
``adaround``).

Round-to-nearest minimizes each weight's own error, not the layer's output error. Per layer, in graph order,
AdaRound learns for every weight whether to round down or up: ``W~ = s * clip(floor(W / s) + h(V), -qmax, qmax)``
with the rectified sigmoid ``h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)``, minimizing
``||W x - W~ x~||^2`` on the calibration data (``x`` the fp32 model's input to the layer, ``x~`` the input in
the model whose upstream layers are already rounded: the paper's asymmetric reconstruction) plus
``lambda * sum(1 - |2 h(V) - 1|^beta)``, with ``beta`` annealed from 20 to 2 after a warm-up so that every
``h`` ends at 0 or 1.

The result is stored on the grid: the kernel becomes ``s * code`` with the scale the converter computes itself
(per output channel, ``max|w| / qmax``). The weight that sets a channel's maximum keeps its code ``+-qmax`` so
that the converter's ``max|w~| / qmax`` gives back the same ``s`` and ``round(w~ / s)`` the learned codes: the
file holds exactly the rounding learned here. A layer whose learned rounding does not lower its output error
on the calibration data below round-to-nearest's keeps round-to-nearest (skipped, with the two errors).
"""
from __future__ import annotations

import numpy as np

from models.backend import keras, tf

from compress.techniques.outcome import Outcome
from compress.techniques.weight_algos import common

ZETA, GAMMA = 1.1, -0.1
STEPS = 400
LEARNING_RATE = 1e-2
#: lambda, relative: the reconstruction loss is divided by round-to-nearest's and the regularizer averaged over the
#: weights, so one value serves every layer (measured on conv, depthwise and dense layers: 10 beats 0.3-3 and equals
#: 30-100)
REGULARIZATION = 10.0
#: learned rounding is kept only where it lowers the calibration output error by at least this fraction
MIN_GAIN = 0.01
BETA = (20.0, 2.0)
WARM_UP = 0.2
BATCH = 32
#: at most this many input values per layer are held for the optimization (samples are dropped beyond it)
MAX_INPUT_VALUES = 8_000_000


def _h(v):
    return tf.clip_by_value(tf.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def _beta(step: int, steps: int) -> float:
    start = int(WARM_UP * steps)
    t = max(0.0, (step - start) / max(steps - start, 1))
    return BETA[1] + 0.5 * (BETA[0] - BETA[1]) * (1 + np.cos(np.pi * t))


def _pinned(kind: str, kernel: np.ndarray, grid: common.Grid) -> np.ndarray:
    """Mask (rest, out layout) of the weights that set each scale: they keep the code +-qmax."""
    mat = np.abs(common.out_matrix(kind, kernel))
    top = mat.max(axis=0, keepdims=True) if grid.per_channel else mat.max(keepdims=True)
    return (mat == top) & (top > 0)


def _learn(op, kind, kernel, grid, x_q, target, steps, seed) -> tuple[np.ndarray, np.ndarray, dict]:
    """(learned codes, scales, figures) for one kernel, codes in the (rest, out) layout."""
    shape = kernel.shape
    nearest, s = common.nearest_codes(kind, kernel, grid)
    scaled = common.out_matrix(kind, kernel).astype(np.float64) / s
    floor = np.floor(scaled)
    rest = np.clip(scaled - floor, 0.0, 1.0)
    pinned = _pinned(kind, kernel, grid)
    sign = np.sign(common.out_matrix(kind, kernel))
    v0 = -np.log((ZETA - GAMMA) / (np.clip(rest, 1e-4, 1 - 1e-4) - GAMMA) - 1)
    v = tf.Variable(v0.astype(np.float32))
    floor_t, s_t = tf.constant(floor, tf.float32), tf.constant(s, tf.float32)
    x_t, target_t = tf.constant(x_q), tf.constant(target)

    def soft(hv):
        return tf.reshape(s_t * tf.clip_by_value(floor_t + hv, -grid.qmax, grid.qmax), shape)

    def error(w, x, t):
        return tf.reduce_mean(tf.square(op(x, w) - t))

    near_w = common.from_codes(kind, nearest, s, shape)
    base = float(error(near_w, x_t, target_t))
    if base == 0.0:
        return nearest, s, {"nearest_error": 0.0, "adaround_error": 0.0, "changed": 0.0}
    optimizer = keras.optimizers.Adam(LEARNING_RATE)
    n = x_q.shape[0]
    rng = np.random.default_rng(seed)

    @tf.function
    def step(idx, beta, reg):
        with tf.GradientTape() as tape:
            hv = _h(v)
            rec = error(soft(hv), tf.gather(x_t, idx), tf.gather(target_t, idx)) / base
            round_loss = tf.reduce_mean(1.0 - tf.pow(tf.abs(2.0 * hv - 1.0), beta))
            loss = rec + reg * REGULARIZATION * round_loss
        optimizer.apply_gradients([(tape.gradient(loss, v), v)])

    warm = int(WARM_UP * steps)
    for i in range(steps):
        idx = rng.choice(n, size=min(BATCH, n), replace=False) if n > BATCH else np.arange(n)
        step(tf.constant(idx), tf.constant(_beta(i, steps), tf.float32), tf.constant(0.0 if i < warm else 1.0))
    codes = floor + (_h(v).numpy() >= 0.5)
    codes = np.clip(np.where(pinned, sign * grid.qmax, codes), -grid.qmax, grid.qmax)
    learned = float(error(common.from_codes(kind, codes, s, shape), x_t, target_t))
    figures = {"nearest_error": base, "adaround_error": learned, "changed": float(np.mean(codes != nearest))}
    return codes, s, figures


def _samples(calibration, model, names) -> int:
    """How many calibration samples the largest layer input allows within MAX_INPUT_VALUES."""
    widest = max(int(np.prod([d or 1 for d in model.get_layer(n).input.shape[1:]])) for n in names)
    return max(8, min(common.n_samples(calibration), MAX_INPUT_VALUES // max(widest, 1)))


def adaround(model, calibration, grid: common.Grid = common.TFLITE_GRID, exclude=(), steps: int = STEPS,
             seed: int = 0) -> tuple[object, Outcome]:
    """(model whose handled kernels lie on ``grid`` with learned rounding, without batch norms; Outcome)."""
    outcome, folded_model, graph, names = common.begin(model, "adaround", exclude, "the rounding is learned on it",
                                                       calibration)
    if folded_model is None:
        return model, outcome
    model = folded_model
    if not names:
        return model, outcome
    data = common.first(calibration, _samples(calibration, model, names))
    working = common.rebuild(model, graph)  # kernels move to the grid here, one layer after the other
    figures = {}
    for i, name in enumerate(names):
        layer = model.get_layer(name)
        kind = common.kind_of(layer)
        kernel, *rest = layer.get_weights()
        (x_fp,) = common.run(common.input_probe(model, [name]), data)
        (x_q,) = common.run(common.input_probe(working, [name]), data)
        op = common.linear_op(layer, kind)
        target = op(x_fp.astype(np.float32), kernel).numpy()
        codes, s, fig = _learn(op, kind, kernel, grid, x_q.astype(np.float32), target, steps, seed + i)
        nearest, _ = common.nearest_codes(kind, kernel, grid)
        if fig["adaround_error"] < (1 - MIN_GAIN) * fig["nearest_error"]:
            outcome.applied.append(name)
            new_kernel = common.from_codes(kind, codes, s, kernel.shape)
        else:
            outcome.skipped[name] = (f"learned rounding did not lower its output error on the calibration data by "
                                     f"{MIN_GAIN:.0%} ({fig['adaround_error']:.3g} vs {fig['nearest_error']:.3g} with "
                                     "round-to-nearest): kept round-to-nearest")
            new_kernel = common.from_codes(kind, nearest, s, kernel.shape)
        working.get_layer(name).set_weights([new_kernel, *rest])
        figures[name] = fig
    outcome.details.update({"grid": str(grid), "steps": steps, "samples": common.n_samples(data),
                            "layers": figures})
    return working, outcome
