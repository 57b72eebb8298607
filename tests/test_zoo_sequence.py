"""Model-specific checks for the sequence/tabular/RL zoo models: lstm, lstm_classifier, speech_cnn1d, fraud_dnn, dqn."""
import numpy as np
import pytest

import models
from models.datasets.sequences import WAVEFORMS, keyword_spectrograms, seasonal_windows, waveforms
from models.datasets.tabular import imbalanced_transactions, logistic_baseline


def test_seasonal_windows_are_chronological_and_need_a_nonlinear_forecaster():
    spec = models.get("lstm")
    cfg = spec.resolve_config()
    splits = seasonal_windows(cfg["length"], cfg["window"], cfg["sigma"], 0)
    assert splits.train.x.shape[1:] == (10, 1) and splits.train.y.shape[1:] == (1,)
    # consecutive windows overlap: the first test window continues the last val window
    np.testing.assert_array_equal(splits.val.x[-1, 1:], splits.test.x[0, :-1])
    assert spec.quality_bar == pytest.approx(1.2 * cfg["sigma"])
    # a least-squares linear forecaster on the same 10 values misses the bar (the LSTM has to do better)
    a = np.c_[splits.train.x[..., 0], np.ones(len(splits.train))]
    w = np.linalg.lstsq(a, splits.train.y, rcond=None)[0]
    pred = np.c_[splits.test.x[..., 0], np.ones(len(splits.test))] @ w
    assert spec.metric(splits.test.y, pred) > spec.quality_bar


def test_waveforms_are_balanced_and_deterministic():
    a, b = waveforms(200, 32, seed=3), waveforms(200, 32, seed=3)
    np.testing.assert_array_equal(a.train.x, b.train.x)
    assert a.train.x.shape[1:] == (32, 1) and a.train.x.dtype == np.float32
    counts = np.bincount(np.concatenate([a.train.y, a.val.y, a.test.y]), minlength=len(WAVEFORMS))
    assert counts.min() == counts.max() == 200 // len(WAVEFORMS)


def test_keyword_spectrograms_have_ten_distinct_words():
    splits = keyword_spectrograms(100, seed=0)
    assert splits.train.x.shape[1:] == (100, 40) and np.isfinite(splits.train.x).all()
    assert set(np.concatenate([splits.train.y, splits.val.y, splits.test.y])) == set(range(10))


def test_fraud_bar_is_ninety_percent_of_the_logistic_baseline():
    spec = models.get("fraud_dnn")
    from models.zoo.structured.fraud_dnn import LOGREG_PR_AUC

    splits = imbalanced_transactions(spec.config["samples"], 0)
    assert 0.01 <= splits.train.y.mean() <= 0.02 and splits.train.x.shape[1] == 30
    assert logistic_baseline(splits) == pytest.approx(LOGREG_PR_AUC, abs=5e-5)
    assert spec.quality_bar == pytest.approx(round(0.9 * LOGREG_PR_AUC, 4))


def test_dqn_rollout_scores_a_hand_policy_through_predict_only():
    from models.zoo.structured import dqn

    cfg = models.get("dqn").resolve_config(tiny=False, eval_episodes=3)

    def balance(obs):  # push towards where the pole is falling: Q(right) = angle + angular velocity
        lean = obs[:, 2] + obs[:, 3]
        return np.stack([-lean, lean], axis=1)

    def always_left(obs):
        return np.tile([[1.0, 0.0]], (len(obs), 1))

    assert dqn.score(balance, None, cfg) >= 195
    assert dqn.score(always_left, None, cfg) < 20
    splits = models.get("dqn").load_data(models.get("dqn").resolve_config(tiny=True), 0)
    assert splits.test.x.shape[1:] == (4,) and splits.test.y is None
