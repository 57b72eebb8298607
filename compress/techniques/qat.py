"""Quantization-aware training with tfmot: whole-model where tfmot takes every layer, selective otherwise.

Selective QAT annotates each layer tfmot's 8-bit registry supports, gives the layers it refuses a config
where that is sound (compress.techniques.custom: Conv1D, MaxPooling1D, the zoo's GraphConv and PositionEmbedding;
LSTM/GRU weights-only, below), runs ``quantize_apply``, then wraps MultiHeadAttention and Embedding
weights-only (compress.techniques.qat_layers: tfmot cannot annotate them), and leaves the rest (LayerNormalization,
unfoldable BatchNormalization, unknown custom layers) in float, with the reason.

The collaborative schemes (tfmot's experimental ones) keep what an earlier technique made:
pruning-preserving QAT (PQAT) keeps the zeros, cluster-preserving QAT (CQAT) the shared values. Layers the
preserving quantizers do not cover are frozen during fine-tuning, so their zeros/clusters survive too.

Without fine-tuning data, QAT runs one-shot: the quantizers' ranges are calibrated by forward passes in
training mode (BatchNormalization frozen, dropout off) and the weights are left as they are.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from models.backend import keras, quiet_stderr, tf
from models.spec import n_samples, take

from compress.techniques import custom
from compress.techniques.clustering import cluster
from compress.techniques.finetune import FineTune, as_finetune
from compress.techniques.outcome import Outcome
from compress.techniques.pruning import overall_sparsity, prune
from compress.techniques.qat_layers import wrap_after_apply
from compress.techniques.selective import copy_model, has_weights, start_outcome

with quiet_stderr():
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (
        default_8bit_cluster_preserve_quantize_scheme as cqat_scheme,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (
        default_8bit_prune_preserve_quantize_scheme as pqat_scheme,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as q8,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_wrapper import QuantizeWrapper

PRESERVE = ("sparsity", "clusters")
#: the "config" of MultiHeadAttention and Embedding: wrapped after quantize_apply by compress.techniques.qat_layers
AFTER_APPLY = "after quantize_apply"

#: tf_keras built-ins tfmot's 8-bit registry refuses, and why they stay in float (verified, see module notes)
FLOAT_REASONS = {
    "LayerNormalization": "tfmot's 8-bit scheme has no LayerNormalization config (TFLite runs it as float "
                          "mean/variance ops); left in float",
    "BatchNormalization": "a BatchNormalization that does not directly follow a Conv2D cannot be folded, and tfmot "
                          "has no standalone config; left in float",
}


def _rnn_config(layer):
    """Weights-only 8-bit config for LSTM/GRU/SimpleRNN kernels (tfmot lists these cells but keeps them disabled).

    It simulates what TFLite's dynamic-range RNN kernels deploy: int8 kernel and recurrent kernel, float
    activations inside the recurrence.
    """
    cells = layer.cell.cells if isinstance(layer.cell, keras.layers.StackedRNNCells) else [layer.cell]
    return q8.Default8BitQuantizeConfigRNN([["kernel", "recurrent_kernel"] for _ in cells], [[] for _ in cells],
                                           False)


def qat_support(layer, registry=None):
    """(reason, config): reason None if the layer can be quantized; config None means tfmot's own."""
    registry = registry or q8.Default8BitQuantizeRegistry()
    name = type(layer).__name__
    if registry.supports(layer):
        return None, None
    cfg = custom.quantize_config(layer)
    if cfg is not None:
        return None, cfg
    cfg_entry = custom.config_for(layer)
    if cfg_entry is not None and cfg_entry.no_qat_reason:
        return cfg_entry.no_qat_reason, None
    if isinstance(layer, (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN)):
        return None, _rnn_config(layer)
    if type(layer) in (keras.layers.MultiHeadAttention, keras.layers.Embedding):
        return None, AFTER_APPLY  # weights-only, wrapped after quantize_apply (compress.techniques.qat_layers)
    if name in FLOAT_REASONS:
        return FLOAT_REASONS[name], None
    if custom.is_custom(layer):
        return (f"custom layer {name} has no quantize config (register one with compress.techniques.custom.register); "
                "left in float"), None
    return f"tfmot's 8-bit scheme has no config for {name}; left in float", None


def _follows_annotated_conv(layer, annotated: set) -> bool:
    nodes = getattr(layer, "_inbound_nodes", [])
    if len(nodes) != 1:
        return False
    inbound = tf.nest.flatten(nodes[0].inbound_layers)
    return (len(inbound) == 1 and inbound[0].name in annotated
            and isinstance(inbound[0], (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)))


def _selective(model, outcome: Outcome, explicit: set):
    """Annotate every layer that can take QAT (explicit configs recorded in ``explicit``); the rest stay float."""
    registry = q8.Default8BitQuantizeRegistry()
    annotate = tfmot.quantization.keras.quantize_annotate_layer
    base = copy_model(model)
    annotated: set = set()
    for layer in base.layers:  # decide first: BN folding needs to know its conv's decision
        if isinstance(layer, keras.layers.InputLayer):
            continue
        reason, cfg = qat_support(layer, registry)
        if reason is not None and isinstance(layer, keras.layers.BatchNormalization) and \
                _follows_annotated_conv(layer, annotated):
            reason = None  # folded into the conv by tfmot's Conv2D+BatchNorm transform
        if reason is None:
            annotated.add(layer.name)
            if cfg is not None:
                explicit.add(layer.name)
    configs = {layer.name: qat_support(layer, registry)[1] for layer in base.layers}

    def fn(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return layer.__class__.from_config(layer.get_config())
        if layer.name in annotated:
            if has_weights(layer):
                outcome.applied.append(layer.name)
            cfg = configs[layer.name]
            if cfg is AFTER_APPLY:
                return layer  # wrapped after quantize_apply (compress.techniques.qat_layers)
            return annotate(layer, quantize_config=cfg) if cfg is not None else annotate(layer)
        outcome.skipped[layer.name] = qat_support(layer, registry)[0]
        return layer

    return keras.models.clone_model(base, clone_function=fn)


def _scheme(preserve: str | None):
    if preserve == "sparsity":
        return pqat_scheme.Default8BitPrunePreserveQuantizeScheme()
    if preserve == "clusters":
        return cqat_scheme.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)
    return tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()


def _technique(preserve: str | None) -> str:
    return {"sparsity": "PQAT", "clusters": "CQAT"}.get(preserve, "qat")


def quantize_wrapped(model, preserve: str | None = None):
    """(QAT model, Outcome) without training: whole-model ``quantize_model`` if tfmot takes it, else selective."""
    outcome = Outcome(_technique(preserve))
    explicit: set = set()
    registry = q8.Default8BitQuantizeRegistry()
    # tfmot's own registry takes every layer (BatchNormalization is folded into its conv by tfmot's transforms)
    every = all(isinstance(layer, (keras.layers.InputLayer, keras.layers.BatchNormalization))
                or qat_support(layer, registry) == (None, None) for layer in model.layers)
    whole_error = None
    if every:
        try:
            with quiet_stderr(), custom.quantize_scope():
                annotated = tfmot.quantization.keras.quantize_annotate_model(copy_model(model))
                qmodel = tfmot.quantization.keras.quantize_apply(annotated, _scheme(preserve))
            outcome.applied = [layer.name for layer in model.layers if has_weights(layer)]
            outcome.details["mode"] = "whole model (tfmot quantize_model)"
            outcome.details["explicit_configs"] = []
            return qmodel, outcome
        except (RuntimeError, ValueError, TypeError, KeyError) as e:
            whole_error = str(e).strip().splitlines()[0][:200]
    annotated = _selective(model, outcome, explicit)
    if not outcome.applied:
        return None, outcome
    later = {layer.name for layer in model.layers if qat_support(layer, registry)[1] is AFTER_APPLY}
    if later >= set(outcome.applied):  # quantize_apply needs an annotated layer; these alone go straight in
        qmodel = copy_model(model)
    else:
        with quiet_stderr(), custom.quantize_scope():
            qmodel = tfmot.quantization.keras.quantize_apply(annotated, _scheme(preserve))
    if later:
        qmodel = wrap_after_apply(qmodel, later)
    outcome.details["mode"] = "selective (per-layer annotation)"
    if whole_error:
        outcome.details["whole_model_error"] = whole_error
    else:
        unsupported = sorted({type(model.get_layer(n)).__name__ for n in outcome.skipped} |
                             {type(model.get_layer(n)).__name__ for n in explicit})
        outcome.details["whole_model_error"] = f"tfmot's quantize_model refuses {', '.join(unsupported)}"
    outcome.details["explicit_configs"] = sorted(explicit)
    return qmodel, outcome


def _inner_name(layer) -> str:
    return layer.layer.name if isinstance(layer, QuantizeWrapper) else layer.name


def _freeze_unpreserved(qmodel, outcome: Outcome) -> list[str]:
    """For PQAT/CQAT: freeze layers with weights the preserving quantizers do not cover (explicit configs, float)."""
    explicit = set(outcome.details.get("explicit_configs", []))
    frozen = []
    for layer in qmodel.layers:
        name = _inner_name(layer)
        if layer.trainable_weights and (name in explicit or not isinstance(layer, QuantizeWrapper)):
            layer.trainable = False
            frozen.append(name)
    return frozen


def calibrate(qmodel, inputs, batch_size: int = 32) -> int:
    """One-shot QAT: learn the activation ranges from forward passes in training mode, weights untouched."""
    if inputs is None:
        return 0
    saved = []
    for layer in _all_layers(qmodel):
        if isinstance(layer, keras.layers.BatchNormalization):
            saved.append((layer, "trainable", layer.trainable))
            layer.trainable = False  # inference-mode statistics even under training=True
        if isinstance(layer, keras.layers.Dropout):
            saved.append((layer, "rate", layer.rate))
            layer.rate = 0.0
    n = n_samples(inputs)
    try:
        for start in range(0, n, batch_size):
            qmodel(take(inputs, slice(start, start + batch_size)), training=True)
    finally:
        for layer, attr, value in saved:
            setattr(layer, attr, value)
    return n


def _all_layers(model):
    for layer in model.layers:
        yield layer
        inner = getattr(layer, "layer", None)
        if inner is not None:
            yield inner


def qat(model, train=None, loss=None, *, epochs: int = 1, batch_size: int = 32, lr: float = 1e-5,
        preserve: str | None = None):
    """Quantization-aware model (fake-quant wrappers) + Outcome; fine-tuned on ``train`` or calibrated one-shot.

    ``preserve``: None, "sparsity" (PQAT: the input is a pruned model) or "clusters" (CQAT: a clustered one).
    The returned model converts to an int8 TFLite model with :func:`to_tflite`.
    """
    if preserve not in (None,) + PRESERVE:
        raise ValueError(f"unknown preserve {preserve!r}; valid: {', '.join(PRESERVE)}")
    tune: FineTune = as_finetune(train, loss, epochs=epochs, batch_size=batch_size, lr=lr)
    outcome = start_outcome(model, _technique(preserve))
    if outcome.blocked:
        return model, outcome
    qmodel, outcome = quantize_wrapped(model, preserve)
    if qmodel is None:
        return model, outcome
    if preserve:
        outcome.details["frozen_for_preservation"] = _freeze_unpreserved(qmodel, outcome)
    if tune.enabled:
        tune.fit(qmodel)
        outcome.details["fine_tuning"] = tune.describe()
    else:
        n = calibrate(qmodel, tune.calibration, batch_size)
        outcome.details["fine_tuning"] = tune.describe()
        outcome.details["calibration"] = (f"activation ranges from {n} sample(s) (one-shot)" if n else
                                          "none: no inputs to calibrate ranges (tfmot's initial ranges)")
    return qmodel, outcome


def to_tflite(qmodel) -> bytes:
    """Convert a QAT model to TFLite: fake-quantized layers become int8 kernels, float layers stay float."""
    converter = tf.lite.TFLiteConverter.from_keras_model(qmodel)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    with quiet_stderr():
        return converter.convert()


def tflite_weight_stats(data: bytes, min_size: int = 16) -> dict[str, dict]:
    """Constant weight tensors of a TFLite model: size, zeros and distinct values (what PQAT/CQAT must keep)."""
    interp = Interpreter(model_content=data)
    interp.allocate_tensors()
    produced = {i for op in interp._get_ops_details() for i in op["outputs"]}
    produced |= {d["index"] for d in interp.get_input_details()}
    stats = {}
    for d in interp.get_tensor_details():
        if d["index"] in produced or len(d["shape"]) < 2 or int(np.prod(d["shape"])) < min_size:
            continue
        if d["dtype"] not in (np.int8, np.float32, np.float16):
            continue
        try:
            value = interp.get_tensor(d["index"])
        except ValueError:
            continue
        stats[d["name"]] = {"size": int(value.size), "zeros": int((value == 0).sum()),
                            "distinct": int(len(np.unique(value))), "dtype": np.dtype(d["dtype"]).name}
    return stats


_FIRST_STEP = {"sparsity": ("pruning", "pruned"), "clusters": ("clustering", "clustered")}


def _preserving_qat(model, first, first_outcome, q_tune, preserve: str):
    """QAT of ``first`` (``model`` pruned or clustered) that keeps what that step did; blocked, with the step's
    reason, when it did not run. Layers the step skipped are listed as "not pruned/clustered: why"."""
    step, done = _FIRST_STEP[preserve]
    if not first_outcome.ran:
        return model, Outcome(_technique(preserve), skipped=dict(first_outcome.skipped),
                              blocked=first_outcome.blocked or f"{step} did not run ({first_outcome.reason()})")
    qmodel, outcome = qat(first, q_tune, preserve=preserve)
    for name, reason in first_outcome.skipped.items():
        outcome.skipped.setdefault(name, f"not {done}: {reason}")
    return qmodel, outcome


def pqat(model, train=None, loss=None, *, sparsity: float = 0.5, epochs: int = 1, batch_size: int = 32,
         lr: float = 1e-4, qat_lr: float = 1e-5):
    """Pruning-preserving QAT: prune (fine-tuned at ``lr`` when there is data), then QAT (at ``qat_lr``) that keeps
    the zeros. ``sparsity=0``: the model is already pruned; only its zeros are preserved."""
    tune = as_finetune(train, loss, epochs=epochs, batch_size=batch_size, lr=lr)
    if sparsity == 0:  # the model is already pruned: only preserve its zeros
        pruned, p_outcome = model, Outcome("prune", applied=["(the model's own zeros)"],
                                           details={"achieved_sparsity": _zeros(model)})
    else:
        pruned, p_outcome = prune(model, dataclasses.replace(tune, lr=lr), sparsity=sparsity, schedule="polynomial")
    qmodel, outcome = _preserving_qat(model, pruned, p_outcome, dataclasses.replace(tune, lr=qat_lr), "sparsity")
    if p_outcome.ran:
        outcome.details["pruning"] = (p_outcome.summary() if sparsity else "none: the model's own zeros are "
                                      "preserved") + f" (sparsity {p_outcome.details['achieved_sparsity']:.1%})"
        outcome.details["pruned_layers"] = [n for n in p_outcome.applied if not n.startswith("(")]
    return qmodel, outcome


def cqat(model, train=None, loss=None, *, clusters: int = 16, init: str = "kmeans++", epochs: int = 1,
         batch_size: int = 32, lr: float = 1e-4, qat_lr: float = 1e-5):
    """Cluster-preserving QAT: cluster (fine-tuned at ``lr`` when there is data), then QAT (at ``qat_lr``) that keeps
    the shared values. ``clusters=0``: the model is already clustered; only its values are preserved."""
    tune = as_finetune(train, loss, epochs=epochs, batch_size=batch_size, lr=lr)
    if clusters == 0:  # the model is already clustered: only preserve its shared values
        clustered, c_outcome = model, Outcome("cluster", applied=["(the model's own clusters)"])
    else:
        clustered, c_outcome = cluster(model, dataclasses.replace(tune, lr=lr), clusters=clusters, init=init)
    qmodel, outcome = _preserving_qat(model, clustered, c_outcome, dataclasses.replace(tune, lr=qat_lr), "clusters")
    if c_outcome.ran:
        outcome.details["clustering"] = (c_outcome.summary() + f" ({clusters} clusters)" if clusters else
                                         "none: the model's own clusters are preserved")
        outcome.details["clustered_layers"] = [n for n in c_outcome.applied if not n.startswith("(")]
    return qmodel, outcome


def _zeros(model) -> float:
    return overall_sparsity(model)
