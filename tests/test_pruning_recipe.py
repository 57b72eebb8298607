"""The pruning fine-tuning recipe: the model's own learning rate, epochs relative to its training, the schedule end
recorded; and technique outputs saved without optimizer state."""
import zipfile

import numpy as np

from compress import finetune, pruning
from compress.cli_common import save_keras
from conftest import tiny_trained
from models.backend import keras


def test_defaults_follow_the_models_own_training():
    assert finetune.default_lr({"lr": 3e-3}) == (3e-3, "its training learning rate")
    assert finetune.default_lr({})[0] == finetune.DEFAULT_LR == 1e-3
    assert finetune.default_epochs({"epochs": 12})[0] == 3 and finetune.default_epochs({"epochs": 20})[0] == 5
    assert finetune.default_epochs({"epochs": 1})[0] == finetune.MIN_EPOCHS


def test_plan_and_outcome_record_the_recipe():
    t = tiny_trained("mlp")
    plan = finetune.for_spec(t.spec, t.config, t.splits(), limit=32)
    assert plan.lr == t.config["lr"] and plan.epochs == finetune.default_epochs(t.config)[0]
    assert "its training learning rate" in plan.describe() and "training epochs" in plan.describe()
    explicit = finetune.for_spec(t.spec, t.config, t.splits(), epochs=1, lr=1e-4, limit=32)
    assert (explicit.epochs, explicit.lr) == (1, 1e-4) and "(" not in explicit.describe().split("samples")[1]
    _, outcome = pruning.prune(t.load(), plan, sparsity=0.5)
    steps = plan.steps()
    assert f"sparsity schedule ends at step {int(steps * 0.8)} of {steps} (80%)" in outcome.details["fine_tuning"]


def test_saved_keras_file_carries_no_optimizer_state(tmp_path):
    model = keras.Sequential([keras.layers.Input((256,)), keras.layers.Dense(256), keras.layers.Dense(4)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.zeros((8, 256), "float32"), np.zeros((8, 4), "float32"), epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    save_keras(model, path)
    weight_bytes = sum(w.size * 4 for w in model.get_weights())
    with zipfile.ZipFile(path) as z:
        stored = sum(i.file_size for i in z.infolist() if i.filename.endswith(".h5"))
    assert stored < 1.3 * weight_bytes  # Adam's two slots per weight would make it about 3x
    np.testing.assert_array_equal(keras.models.load_model(path).get_weights()[0], model.get_weights()[0])
