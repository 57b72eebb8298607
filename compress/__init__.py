"""Compression techniques, each a plain function ``model (+ data) -> (model, Outcome)``.

- ``pruning.prune``: magnitude pruning (constant/polynomial schedules) and m:n structured sparsity (2:4)
- ``channels.channel_prune``: remove whole filters/units by L1/L2 norm and rebuild a smaller model
- ``clustering.cluster``: weight clustering (k centroids, centroid init choice)
- ``qat.qat`` / ``qat.pqat`` / ``qat.cqat``: quantization-aware training, plain or pruning/cluster-preserving
- ``ptq.QuantRecipe``: post-training quantization recipes for TFLite and ONNX Runtime (used by ``export``)
- ``preflight.preflight``: which technique applies to which layer, and why not, without running anything

Every technique wraps only the layers it supports (``selective``), records each layer it leaves unchanged
with the reason (``outcome.Outcome``), and fine-tunes with ``finetune.FineTune`` or says why it runs one-shot.
Modules import TensorFlow; import them, not this package, for what you need.
"""
