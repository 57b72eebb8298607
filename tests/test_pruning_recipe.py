"""The pruning fine-tuning recipe: the model's own learning rate, epochs relative to its training, the schedule end
and the decaying rate after it recorded, small layers kept dense; technique outputs saved without optimizer state;
and the zoo check (benchmarks.studies.prune_check) that measures it."""
import json

import numpy as np
import pytest
from conftest import tiny_trained

from benchmarks.studies import prune_check
from compress.techniques import finetune, pruning
from models.backend import keras
from models.errors import UserError
from models.spec import Split


def test_defaults_follow_the_models_own_training():
    assert finetune.default_lr({"lr": 3e-3}) == (3e-3, "its training learning rate")
    assert finetune.default_lr({})[0] == finetune.DEFAULT_LR == 1e-3
    assert finetune.default_epochs({"epochs": 12})[0] == 3 and finetune.default_epochs({"epochs": 20})[0] == 5
    assert finetune.default_epochs({"epochs": 1})[0] == finetune.MIN_EPOCHS
    # a user's file, whose training epochs are unknown: MIN_STEPS steps, within [MIN_EPOCHS, MAX_EPOCHS]
    assert finetune.default_epochs({}, 32)[0] == 16 and "500 steps of 32" in finetune.default_epochs({}, 32)[1]
    assert finetune.default_epochs({}, 1)[0] == finetune.MAX_EPOCHS
    assert finetune.default_epochs({}, 1000)[0] == finetune.default_epochs({})[0] == finetune.MIN_EPOCHS


def test_a_user_models_plan_starts_from_its_own_adam_learning_rate(tmp_path):
    from models.subject import resolve

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 4)).astype("float32"), rng.integers(0, 2, 200)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    for optimizer, lr in ((keras.optimizers.Adam(3e-4), 3e-4), (keras.optimizers.SGD(0.1), finetune.DEFAULT_LR)):
        model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        model.compile(optimizer, "sparse_categorical_crossentropy")
        model.save(tmp_path / "m.keras")
        subject = resolve(str(tmp_path / "m.keras"), data=str(tmp_path / "d.npz"))
        plan = finetune.for_spec(subject.spec, subject.config, subject.splits)
        assert plan.lr == lr  # an SGD rate means something else to Adam: not reused
        assert plan.epochs == 20 and "training epochs are unknown" in plan.describe()  # 160 samples: 5 steps an epoch


def test_cosine_fit_models_fine_tune_instead_of_one_shot():
    t = tiny_trained("vqa_fusion")
    plan = finetune.for_spec(t.spec, t.config, t.splits(), limit=16)
    assert plan.enabled and "cosine" in plan.how


def test_plan_and_outcome_record_the_recipe():
    t = tiny_trained("mlp")
    plan = finetune.for_spec(t.spec, t.config, t.splits(), limit=32)
    assert plan.lr == t.config["lr"] and plan.epochs == finetune.default_epochs(t.config)[0]
    assert "its training learning rate" in plan.describe() and "training epochs" in plan.describe()
    explicit = finetune.for_spec(t.spec, t.config, t.splits(), epochs=1, lr=1e-4, limit=32)
    assert (explicit.epochs, explicit.lr) == (1, 1e-4) and "(" not in explicit.describe().split("samples")[1]
    _, outcome = pruning.prune(t.load(), plan, sparsity=0.5)
    steps, end = plan.steps(), int(plan.steps() * plan.schedule_end)
    assert plan.schedule_end == 0.6
    assert (f"sparsity schedule ends at step {end} of {steps} (60%), then the lr decays along a cosine to 0.02x by "
            f"step {steps}") in outcome.details["fine_tuning"]


def test_learning_rate_is_held_while_sparsity_ramps_then_decays():
    schedule = finetune.HoldThenCosine(1e-2, hold=6, total=10)
    rates = [schedule.rate(step) for step in range(12)]
    assert rates[:6] == [1e-2] * 6
    assert all(a > b for a, b in zip(rates[5:9], rates[6:10]))  # strictly decaying after the hold
    assert rates[9] == rates[11] == pytest.approx(1e-2 * finetune.RECOVERY_LR_FLOOR)  # the last step at the floor
    # and fit() really runs at it: after the last of 10 steps the optimizer holds the last step's rate
    model = keras.Sequential([keras.layers.Input((3,)), keras.layers.Dense(2)])
    plan = finetune.FineTune(Split(np.zeros((40, 3), "float32"), np.zeros((40, 2), "float32")), "mse", epochs=2,
                             batch_size=8, lr=1e-2, schedule_end=0.6)
    assert (plan.steps(), plan.schedule_end_step()) == (10, 6)
    plan.fit(model, callbacks=[plan.recovery_schedule()])
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(schedule.rate(9), rel=1e-5)


def _model(widths, inputs=64):
    layers = [keras.layers.Input((inputs,))] + [keras.layers.Dense(w, name=f"d{i}") for i, w in enumerate(widths)]
    return keras.Sequential(layers)


def test_small_layers_stay_dense_and_the_others_make_up_the_sparsity():
    model = _model([256, 256, 2], inputs=4)  # kernels: 1024 (first), 65536, 512 (output head)
    dense, share = pruning.small_layers(model)
    assert set(dense) == {"d0", "d2"} and share == pytest.approx((1024 + 512) / (1024 + 65536 + 512))
    assert "kept dense: a small layer (512 weights" in dense["d2"]
    pruned, outcome = pruning.prune(model, None, sparsity=0.5)  # one-shot: the same rule
    assert outcome.applied == ["d1"] and "kept dense" in outcome.skipped["d0"]
    assert "2 small layer(s) (d0, d2" in outcome.details["kept_dense"]
    assert outcome.details["achieved_sparsity"] == pytest.approx(0.5, abs=0.002)
    zeros = {r.layer: r.sparsity for r in pruning.sparsity_report(pruned)}
    assert zeros["d0"] == zeros["d2"] == 0.0 and zeros["d1"] == pytest.approx(0.5 / (1 - share), abs=0.002)
    # at 97% the others could not make up for 2.3% kept dense (0.97 / 0.977 > 99%): only the output head is kept
    assert list(pruning.small_layers(model, sparsity=0.97)[0]) == ["d2"]
    assert pruning.small_layers(model, sparsity=0.99) == ({}, 0.0)
    _, every = pruning.prune(model, None, sparsity=0.5, keep_small=False)
    assert every.applied == ["d0", "d1", "d2"] and "kept_dense" not in every.details


def test_layers_kept_dense_hold_at_most_the_budget():
    model = _model([64] * 40)  # 40 equal layers of 4096 weights: each 2.5% > the per-layer share
    assert pruning.small_layers(model) == ({}, 0.0)
    model = _model([64] * 60)  # each 1.7%: only as many as fit in 5% in all (3 layers), not all 60
    dense, share = pruning.small_layers(model)
    assert len(dense) == 3 and share <= pruning.SMALL_LAYERS_BUDGET + 1e-9


def test_prune_check_reports_baseline_pruned_drop_and_recipe(tmp_path, capsys):
    out = tmp_path / "check.jsonl"
    assert prune_check.main(["--tiny", "--models", "mlp", "gan", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["model"] for r in rows] == ["mlp", "gan"]
    mlp, gan = rows
    assert mlp["fine_tuned"] and "lr 0.01 (its training learning rate)" in mlp["recipe"]
    assert mlp["drop"] == pytest.approx(mlp["baseline"] - mlp["pruned"]) and mlp["ok"] == (mlp["drop"] <= 0.01)
    assert not gan["fine_tuned"] and "custom loop" in gan["recipe"] and "constant (one-shot)" in gan["schedule"]
    printed = capsys.readouterr().out
    assert "| mlp | accuracy |" in printed and "| gan |" in printed


def test_prune_check_rejects_bad_input_in_one_line():
    with pytest.raises(UserError, match="unknown model"):
        prune_check.main(["--models", "nope"])
    with pytest.raises(UserError, match="--sparsity"):
        prune_check.main(["--sparsity", "1.5"])
