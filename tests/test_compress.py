"""Compression techniques x every registered model (tiny configs), plus fine-tuning, PTQ recipes and the CLI.

The matrix runs each technique one-shot (no fine-tuning: the fine-tuning path is tested separately on a few
models, which keeps the suite fast) and asserts that it either ran, with every layer that has weights
accounted for, or said why not, with the reason text checked. A model that does not run a technique must
have a reason for every one of its weighted layers: "unsupported" is never the answer for a model with a
layer that could take it.
"""
import numpy as np
import pytest

from compress.techniques import channels
from compress.techniques import clustering
from compress.techniques import finetune
from compress.techniques import pruning
from compress.techniques import qat
from export.quantize.ptq import QuantRecipe
from compress.techniques.selective import kernel_weights
from conftest import ZOO, tiny_trained

TECHNIQUES = ("prune", "2:4", "channel", "cluster", "qat", "pqat", "cqat")

#: (model, technique) that cannot run, with the text their reason must contain. Everything else must run.
CANNOT_RUN = {
    ("word2vec", "channel"): "reach the model's output",  # its one Embedding is the deployed vector
}
#: reasons that may stop any technique on any model (a zoo model whose tiny training diverged)
ANY_MODEL = ("weights are not finite",)


def _apply(technique, model, tune):
    if technique == "prune":
        return pruning.prune(model, tune, sparsity=0.5)
    if technique == "2:4":
        return pruning.prune(model, tune, m_by_n=(2, 4))
    if technique == "channel":
        return channels.channel_prune(model, tune, ratio=0.5)
    if technique == "cluster":
        return clustering.cluster(model, tune, clusters=4, init="linear")
    if technique == "qat":
        return qat.qat(model, tune)
    if technique == "pqat":
        return qat.pqat(model, tune, sparsity=0.5)
    return qat.cqat(model, tune, clusters=4, init="linear")


def _one_shot(trained):
    plan = finetune.for_spec(trained.spec, trained.config, trained.splits(), limit=32)
    return plan.without("one-shot in the matrix test")


def _kernels(model, names):
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if inner.name in names:
            yield inner.name, [w.numpy() for w in kernel_weights(inner)]


def _check_ran(technique, source, result, outcome):
    if technique == "prune":
        assert outcome.details["achieved_sparsity"] == pytest.approx(0.5, abs=0.02)
    elif technique == "2:4":
        assert all(pruning.verify_m_by_n(result, (2, 4), outcome.applied).values())
    elif technique == "channel":
        assert result.count_params() < source.count_params()
        assert [tuple(o.shape) for o in result.outputs] == [tuple(o.shape) for o in source.outputs]
    elif technique == "cluster":
        assert max(clustering.distinct_values(result, outcome.applied).values()) <= 4
    else:
        assert [tuple(o.shape) for o in result.outputs] == [tuple(o.shape) for o in source.outputs]
        if technique == "pqat":
            for name, kernels in _kernels(result, set(outcome.details["pruned_layers"])):
                assert all((k == 0).mean() >= 0.45 for k in kernels), name
        if technique == "cqat":
            for name, kernels in _kernels(result, set(outcome.details["clustered_layers"])):
                assert all(len(np.unique(k)) <= 4 for k in kernels), name


@pytest.mark.parametrize("technique", TECHNIQUES)
@pytest.mark.parametrize("name", ZOO)
def test_technique_runs_or_says_why(name, technique):
    trained = tiny_trained(name)
    model = trained.load()
    result, outcome = _apply(technique, model, _one_shot(trained))
    weighted = {layer.name for layer in model.layers if layer.weights}
    # never a silent skip: every layer with weights was applied or left with a reason
    for layer, reason in outcome.skipped.items():
        assert isinstance(reason, str) and len(reason) > 10, (layer, reason)
    if outcome.ran:
        accounted = set(outcome.applied) | set(outcome.skipped) | set(outcome.details.get("inputs_cut", []))
        assert weighted <= accounted, f"silently skipped: {sorted(weighted - accounted)}"
        _check_ran(technique, model, result, outcome)
        return
    reason = outcome.reason()
    expected = CANNOT_RUN.get((name, technique))
    if any(text in reason for text in ANY_MODEL):
        return
    assert expected is not None, f"{name} x {technique} did not run: {reason}"
    assert expected in reason, reason
    assert outcome.blocked or weighted <= set(outcome.skipped), "a layer without a reason"


# ---------------------------------------------------------------------------------------------- fine-tuning


def _plan(name, **kw):
    t = tiny_trained(name)
    return t, finetune.for_spec(t.spec, t.config, t.splits(), limit=64, **kw)


def test_prune_fine_tunes_on_the_train_split_and_strips():
    t, plan = _plan("mlp", epochs=1)
    assert plan.enabled and "fit()" in plan.describe()
    pruned, outcome = pruning.prune(t.load(), plan, sparsity=0.5, schedule="constant")
    assert outcome.ran and "fit()" in outcome.details["fine_tuning"]
    assert not any("prune_low_magnitude" in layer.name for layer in pruned.layers)
    assert outcome.details["achieved_sparsity"] == pytest.approx(0.5, abs=0.01)


def test_legacy_prune_signature_still_works():
    t = tiny_trained("mlp")
    pruned, outcome = pruning.prune(t.load(), t.splits().train.head(32), t.spec.loss, sparsity=0.25, epochs=1)
    assert outcome.ran and outcome.details["achieved_sparsity"] == pytest.approx(0.25, abs=0.02)


def test_masked_graph_labels_and_custom_layers_fine_tune():
    t, plan = _plan("gnn", epochs=1)
    assert plan.enabled and "masked" in plan.how
    pruned, outcome = pruning.prune(t.load(), plan, sparsity=0.5)
    assert {"gc1", "gc2"} <= set(outcome.applied)  # the zoo's custom GraphConv has a prune config
    qmodel, q_outcome = qat.qat(t.load(), plan)
    assert q_outcome.ran and {"gc1", "gc2"} <= set(q_outcome.details["explicit_configs"])


def test_custom_training_loops_run_one_shot_with_the_reason():
    t, plan = _plan("gan")
    assert not plan.enabled and "custom loop" in plan.reason
    pruned, outcome = pruning.prune(t.load(), plan, sparsity=0.5)
    assert outcome.ran and "custom loop" in outcome.details["fine_tuning"]
    assert outcome.details["schedule"] == "constant (one-shot)"


def test_untrained_models_are_not_fine_tuned():
    t, plan = _plan("resnet50")
    assert not plan.enabled and "not trained" in plan.reason


def test_attention_and_embedding_qat_reach_the_int8_tflite():
    t = tiny_trained("transformer")
    qmodel, outcome = qat.qat(t.load(), _one_shot(t))
    stats = qat.tflite_weight_stats(qat.to_tflite(qmodel))
    int8 = [name for name, s in stats.items() if s["dtype"] == "int8"]
    assert any("enc0_mha/query" in n for n in int8) and any("token_embedding" in n for n in int8), stats


def test_qat_is_selective_where_tfmot_refuses_layers():
    t = tiny_trained("transformer")
    qmodel, outcome = qat.qat(t.load(), _one_shot(t))
    assert outcome.ran and outcome.details["mode"].startswith("selective")
    assert "MultiHeadAttention" in outcome.details["whole_model_error"]
    assert {"enc0_ffn1", "enc0_mha", "token_embedding"} <= set(outcome.applied)  # tfmot refuses the last two
    assert {"enc0_mha", "token_embedding"} <= set(outcome.details["explicit_configs"])
    assert "no LayerNormalization config" in outcome.skipped["enc0_ln1"]
    t = tiny_trained("lstm_classifier")
    qmodel, outcome = qat.qat(t.load(), _one_shot(t))
    assert outcome.ran and any("lstm" in n for n in outcome.details["explicit_configs"])


def test_pqat_keeps_zeros_in_the_int8_tflite():
    t, plan = _plan("mlp", epochs=1)
    qmodel, outcome = qat.pqat(t.load(), plan, sparsity=0.5)
    stats = qat.tflite_weight_stats(qat.to_tflite(qmodel))
    assert stats and all(s["zeros"] / s["size"] >= 0.45 for s in stats.values())


def test_cqat_keeps_clusters_in_the_int8_tflite():
    t, plan = _plan("mlp", epochs=1)
    qmodel, outcome = qat.cqat(t.load(), plan, clusters=4, init="linear")
    stats = qat.tflite_weight_stats(qat.to_tflite(qmodel))
    assert stats and all(s["distinct"] <= 4 for s in stats.values())


def test_channel_pruning_removes_exactly_the_weakest_filters():
    """Zero half the filters of every prunable layer: pruning 50% by L1 removes those and changes nothing."""
    t = tiny_trained("cnn")
    model = t.load()
    hidden = [layer for layer in model.layers[:-1] if type(layer).__name__ in ("Conv2D", "Dense")]
    for layer in hidden:
        kernel, bias = layer.get_weights()
        kernel[..., ::2] = 0.0
        bias[::2] = 0.0
        layer.set_weights([kernel, bias])
    x = t.splits().test.head(16).x
    smaller, outcome = channels.channel_prune(model, None, ratio=0.5)
    assert set(outcome.applied) == {layer.name for layer in hidden}
    np.testing.assert_allclose(smaller.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_channel_pruning_names_residual_adds():
    t = tiny_trained("resnet")
    smaller, outcome = channels.channel_prune(t.load(), None, ratio=0.5)
    assert outcome.ran
    assert any("residual add" in reason for reason in outcome.skipped.values())


# ------------------------------------------------------------------------------------------------------- PTQ


@pytest.mark.parametrize("kwargs,message", [
    ({"format": "onnx", "mode": "int8", "int8_io": True}, "needs tflite int8"),
    ({"format": "tflite", "mode": "int8", "calibration": "entropy"}, "applies to onnx int8 only"),
    ({"format": "onnx", "mode": "int8", "calibration": "kl"}, "unknown calibration method"),
    ({"format": "tflite", "mode": "float16", "exclude": ("dense",)}, "excluding layers needs"),
    ({"format": "tflite", "mode": "16x8", "exclude": ("dense",)}, "non-zero zero point"),
])
def test_recipe_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuantRecipe(**kwargs)


def _first_dense(trained) -> str:
    """The cnn's hidden Dense layer (layer names depend on what the process built before)."""
    return next(layer.name for layer in trained.load().layers if type(layer).__name__ == "Dense")


@pytest.mark.parametrize("fmt,mode,options", [
    ("tflite", "16x8", {}), ("tflite", "int8", {"int8_io": True}), ("tflite", "int8", {"exclude": "dense"}),
    ("onnx", "int8", {"calibration": "entropy"}), ("onnx", "int8", {"calibration": "percentile", "per_channel": False}),
    ("onnx", "dynamic", {"exclude": "dense"}),
], ids=lambda v: str(v) if not isinstance(v, dict) else ",".join(f"{k}={w}" for k, w in v.items()) or "default")
def test_ptq_recipes_export_and_validate(fmt, mode, options, tmp_path):
    from export.exporter import export
    from models.subject import Subject

    t = tiny_trained("cnn")
    if "exclude" in options:
        options = {**options, "exclude": (_first_dense(t),)}
    recipe = QuantRecipe(fmt, mode, **options)
    subject = Subject("cnn", t.load(), t.path, t.spec, t.config, t.splits(), t.seed)
    result = export(subject, recipe, tmp_path / f"cnn.{fmt}")
    assert result.written and result.validation.top1_agreement > 0.9
    if recipe.exclude:  # the excluded layer's kernel stays float: the file is much larger than plain int8
        plain = export(subject, QuantRecipe(fmt, mode), tmp_path / f"plain.{fmt}")
        assert result.size > 1.5 * plain.size


def test_exclude_names_must_match():
    from export.quantize.ptq import match_names

    with pytest.raises(ValueError, match="nothing to exclude for nope"):
        match_names(["cnn/dense_2/MatMul"], ["nope"], "op")
    assert match_names(["cnn/dense_2/MatMul;cnn/dense_2/Relu", "cnn/dense_3/MatMul"], ["dense_2"], "op") == [
        "cnn/dense_2/MatMul;cnn/dense_2/Relu"]


# ------------------------------------------------------------------------------------------------------- CLI


def _one_line_error(res, *fragments):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    err = res.stderr.strip()
    assert "Traceback" not in res.stderr and "\n" not in err, err
    for f in fragments:
        assert f in err, err


@pytest.mark.parametrize("command", ["prune", "cluster", "qat", "quantize", "channel-prune", "preflight"])
def test_every_subcommand_has_help(cli, command):
    res = cli("compress", command, "--help")
    assert res.returncode == 0 and "usage:" in res.stdout


@pytest.mark.parametrize("args,fragments", [
    (["prune", "mlp", "--structure", "4:2"], ["--structure must be M:N"]),
    (["prune", "mlp", "--epochs", "-1"], ["--epochs must be >= 0"]),
    (["prune", "mlp", "-o", "x.h5"], ["must end in .keras"]),
    (["cluster", "mlp", "--clusters", "1"], ["--clusters must be >= 2"]),
    (["cluster", "mlp", "--init", "best"], ["unknown centroid init 'best'"]),
    (["qat", "mlp", "--scheme", "fancy"], ["unknown scheme 'fancy'"]),
    (["qat", "mlp", "-o", "x.onnx"], ["must end in .tflite or .keras"]),
    (["channel-prune", "mlp", "--ratio", "1"], ["--ratio must be in (0, 1)"]),
    (["channel-prune", "mlp", "--criterion", "taylor"], ["unknown criterion 'taylor'"]),
    (["quantize", "mlp", "--format", "onnx", "--mode", "int8", "--int8-io"], ["needs tflite int8"]),
    (["quantize", "mlp", "--format", "onnx", "--mode", "int8", "--calibration", "kl"], ["unknown calibration"]),
    (["preflight", "nope"], ["unknown model 'nope'"]),
])
def test_bad_options_are_one_line(cli, tmp_path, args, fragments):
    res = cli("compress", *args, cwd=tmp_path)
    _one_line_error(res, *fragments)
    assert not list(tmp_path.iterdir())


def test_preflight_table_without_running(cli):
    res = cli("compress", "preflight", "transformer", "--tiny")
    assert res.returncode == 0, res.stderr
    out = " ".join(res.stdout.split())
    assert "nothing was run" in out and "applies" in out and "skipped [" in out
    assert "residual add" in out and "no LayerNormalization config" in out


def test_cli_structured_sparsity_is_verified_on_the_saved_file(cli, tmp_path):
    out = tmp_path / "cnn24.keras"
    res = cli("compress", "prune", "cnn", "--tiny", "--structure", "2:4", "--epochs", "1", "--limit", "64", "-o", out,
              "--max-drop", "1")  # the mechanism, not the tiny model's score (the gate: test_accuracy_gate.py)
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.split())
    assert "2:4 pattern verified on the saved weights" in text and "gzip" in text and "accuracy: before" in text
    assert all(pruning.verify_m_by_n(out, (2, 4)).values())


def test_cli_cluster_and_channel_prune(cli, tmp_path):
    res = cli("compress", "cluster", "cnn", "--tiny", "--clusters", "8", "--epochs", "0", "-o", tmp_path / "c.keras",
              "--max-drop", "1")
    assert res.returncode == 0, res.stderr
    assert "distinct values per clustered kernel" in res.stdout and "one-shot" in res.stdout
    res = cli("compress", "channel-prune", "cnn", "--tiny", "--epochs", "1", "--limit", "64", "-o",
              tmp_path / "s.keras", "--max-drop", "1")
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.split())
    assert "parameters:" in text and "model's contract" in text and "accuracy: before" in text


def test_cli_qat_writes_int8_tflite(cli, tmp_path):
    out = tmp_path / "q.tflite"
    res = cli("compress", "qat", "speech_cnn1d", "--tiny", "--epochs", "1", "--limit", "64", "-o", out,
              "--max-drop", "1")
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.split())
    assert out.exists() and "selective" in text and "Conv1D" in text and "top-1 agreement" in text


def test_cli_quantize_with_excluded_layer(cli, tmp_path):
    out = tmp_path / "x.onnx"
    dense = _first_dense(tiny_trained("cnn"))
    res = cli("compress", "quantize", "cnn", "--tiny", "--format", "onnx", "--mode", "int8", "--exclude", dense,
              "--calibration", "percentile", "--max-drop", "1", "-o", out)  # the mechanism, not the tiny model's score
    assert res.returncode == 0, res.stderr
    assert out.exists() and f"float: {dense}" in res.stdout
    res = cli("compress", "quantize", "cnn", "--tiny", "--format", "onnx", "--mode", "int8", "--exclude", "nope",
              "-o", tmp_path / "y.onnx")
    _one_line_error(res, "nothing to exclude for nope")


def test_cli_user_model_without_data_runs_one_shot(cli, tmp_path):
    user = tmp_path / "mine.keras"
    user.write_bytes(tiny_trained("mlp").path.read_bytes())
    res = cli("compress", "prune", user, "-o", tmp_path / "p.keras")
    assert res.returncode == 0, res.stderr
    assert "no labelled training data (pass --data with labels" in " ".join(res.stdout.split())


@pytest.mark.parametrize("technique", ["prune", "2:4", "channel", "cluster"])
@pytest.mark.parametrize("name", ["transformer", "gnn", "lstm_classifier"])
def test_compressed_models_save_and_reload(name, technique, tmp_path):
    """Attention, custom layers and RNNs come back from .keras with the same predictions."""
    from models.loading import load_keras

    trained = tiny_trained(name)
    result, outcome = _apply(technique, trained.load(), _one_shot(trained))
    assert outcome.ran, outcome.reason()
    path = tmp_path / "m.keras"
    result.save(path)
    x = trained.splits().test.head(8).x
    np.testing.assert_allclose(load_keras(path).predict(x, verbose=0), result.predict(x, verbose=0), atol=1e-6)
