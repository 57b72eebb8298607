"""A converter output that aborts LiteRT is a reason, never a dead process; LayerNormalization runs in 16x8.

LiteRT aborts (SIGABRT, no message) preparing tf_keras' fused LayerNormalization quantized 16x8; the exporter
converts it from its moments instead (export/rewrites.py), and runs every file it has not yet run in the
probe's child process, so an abort it does not know of becomes an error line or a rejected candidate.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import user_models
from export.quantize.ptq import QuantRecipe

MOMENTS_NOTE = "LayerNormalization computed from its moments"


@pytest.fixture(scope="module")
def tf_keras_ln(tmp_path_factory):
    return user_models.layer_norm_mlp(tmp_path_factory.mktemp("ln"), "tf_keras", n=600, epochs=6)


def test_moments_layer_norm_matches_keras():
    from models.backend import keras
    from export.rewrites import moments_forms, moments_forms_needed

    rng = np.random.default_rng(0)
    inputs = keras.Input((5, 12))
    layer = keras.layers.LayerNormalization(epsilon=1e-3)
    model = keras.Model(inputs, layer(keras.layers.Dense(12)(inputs)))
    layer.set_weights([rng.normal(1, 0.3, 12).astype("float32"), rng.normal(0, 0.3, 12).astype("float32")])
    rewritten = moments_forms(model, "16x8")
    assert [type(x).__name__ for x in rewritten.layers][-1] == "MomentsLayerNormalization"
    x = rng.normal(3, 5, (4, 5, 12)).astype("float32")
    np.testing.assert_allclose(rewritten(x).numpy(), model(x).numpy(), atol=2e-5)
    over_two_axes = keras.Model(inputs, keras.layers.LayerNormalization(axis=[1, 2])(inputs))
    assert moments_forms_needed(model, "16x8") == ["LayerNormalization"]
    assert moments_forms_needed(over_two_axes, "16x8") == []  # the moments form takes the last axis only


def test_16x8_layer_norm_file_runs_batched_in_litert(tf_keras_ln):
    from export.exporter import _tflite_batch_problem, convert
    from models.subject import resolve

    path, data = tf_keras_ln
    subject = resolve(str(path), data=str(data))
    converted = convert(subject, QuantRecipe("tflite", "16x8"))
    assert converted.batch is None  # the dynamic-batch graph: it resized and matched one sample at a time
    assert any(MOMENTS_NOTE in n for n in converted.notes)
    assert any("stays int16" in n and "normalization" in n for n in converted.notes)  # raw features: said why
    assert _tflite_batch_problem(converted.data) is None


def test_a_file_that_aborts_litert_is_an_error_line_not_a_dead_process(tf_keras_ln, monkeypatch, tmp_path, cli):
    """The probe's child stands in for LiteRT aborting on every file: export says so, writes nothing."""
    import sys

    from export import probe

    monkeypatch.setattr(probe, "child_command", lambda: [sys.executable, "-c", "import os; os.abort()"])
    path, data = tf_keras_ln
    out = tmp_path / "m.tflite"
    r = cli("export", "tflite", path, "--data", data, "-o", out)
    assert r.returncode != 0
    assert "LiteRT cannot run the tflite(fp32) file the converter wrote" in r.stderr
    assert "the LiteRT runtime crashed loading it (signal 6)" in r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_auto_on_a_tf_keras_layer_norm_model_scores_16x8(tf_keras_ln, tmp_path):
    from compress.auto.search import AutoSpec, auto
    from models.subject import resolve

    path, data = tf_keras_ln
    result = auto(resolve(str(path), data=str(data)),
                  AutoSpec(tmp_path, max_drop=0.01, runtimes=("litert",), techniques=(), resamples=200))
    (c16,) = [c for c in result.candidates if c.recipe["mode"] == "16x8"]
    assert c16.status == "scored" and c16.metric is not None, c16.reason
    assert any(MOMENTS_NOTE in n for n in c16.notes)
    assert result.choices["litert"].path.exists()


def test_auto_on_the_keras3_model_that_aborted_litert_finishes(cli, tmp_path, monkeypatch):
    """The command that died with SIGABRT, on the same Keras 3 model (PTQ candidates only, to keep it short)."""
    from compress.auto import search as auto

    monkeypatch.setattr(auto, "TECHNIQUES", ())
    path, data = user_models.layer_norm_mlp(tmp_path, "keras3", n=600, epochs=6)
    out = tmp_path / "auto"
    r = cli("compress", "auto", path, "--data", data, "--max-drop", "0.01", "--runtime", "litert", "-o", out)
    assert r.returncode == 0, r.stderr
    result = json.loads((out / "auto.json").read_text())
    (c16,) = [c for c in result["candidates"] if c["recipe"]["mode"] == "16x8"]
    assert c16["status"] == "scored", c16["reason"]
    assert any(MOMENTS_NOTE in n for n in c16["notes"]) and any("stays int16" in n for n in c16["notes"])
    assert (out / "best-litert.tflite").exists()
    # the raw incomes share one int16 input scale with a 0..1 ratio: 16x8 loses, and the console says why
    assert c16["within_budget"] is False and "stays int16" in r.stdout.replace("\n", "")
