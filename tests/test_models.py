"""The zoo, tested through the registry: a model is covered by being registered."""
import math

import numpy as np
import pytest

import models
from models.spec import ModelSpec, n_samples
from models.training import keras_predict
from conftest import ZOO, tiny_trained


@pytest.mark.parametrize("name", ZOO)
def test_spec_is_complete(name):
    spec = models.get(name)
    assert isinstance(spec, ModelSpec)
    assert spec.tiny, f"{name} has no tiny config"
    assert spec.metric is not None and spec.metric.name
    assert spec.quality_bar is not None and math.isfinite(spec.quality_bar)
    assert spec.task and spec.seed_doc
    assert spec.notes and spec.notes.strip(), f"{name} does not say how it differs from its seed"


@pytest.mark.parametrize("name", ZOO)
def test_tiny_model_trains_evaluates_and_reloads(name):
    trained = tiny_trained(name)
    assert trained.path.exists() and trained.path.with_suffix(".json").exists()
    assert math.isfinite(trained.metric)
    splits = trained.splits()
    for split in (splits.train, splits.val, splits.test):
        assert n_samples(split.x) > 0
    model = trained.load()
    spec = trained.spec
    # the reloaded model scores exactly what training reported
    again = spec.score(keras_predict(model), splits.test, trained.config)
    assert again == pytest.approx(trained.metric, rel=1e-5, abs=1e-6)
    sig = spec.input_signature(trained.config)
    assert [s.name for s in sig] == [t.name.split(":")[0] for t in model.inputs]
    calib = spec.calibration(splits, 8)
    assert n_samples(calib) == min(8, n_samples(splits.train.x))


@pytest.mark.parametrize("name", ZOO)
def test_training_is_cached(name):
    first = tiny_trained(name)
    second = models.training.train(models.get(name), tiny=True, seed=0)
    assert second.from_cache and second.path == first.path and second.metric == first.metric


def test_unknown_model_lists_valid_names():
    with pytest.raises(models.UserError, match="unknown model 'nope'; valid: .*mlp"):
        models.get("nope")


def test_cli_list_shows_every_model(run_cli):
    res = run_cli("models", "list")
    assert res.returncode == 0, res.stderr
    for name in ZOO:
        assert name in res.stdout


def test_cli_train_unknown_name_is_one_line(run_cli):
    res = run_cli("models", "train", "nope")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "unknown model 'nope'" in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_train_tiny(run_cli, cache_dir):
    res = run_cli("models", "train", "mlp", "--tiny")
    assert res.returncode == 0, res.stderr
    assert "mlp: accuracy =" in res.stdout


def test_splits_are_deterministic():
    spec = models.get("mlp")
    a = spec.load_data(spec.resolve_config(tiny=True), 0)
    b = spec.load_data(spec.resolve_config(tiny=True), 0)
    np.testing.assert_array_equal(a.test.x, b.test.x)
