"""compress auto: the search writes real files whose recorded scores hold, resumes from its log, says when the
budget is unreachable, --strict judges the interval, --time-budget stops early, and bad input is one line."""
import json
import shutil

import numpy as np
import pytest

from compress.auto.search import LOG_NAME, AutoSpec, auto
from compress.auto.evaluator import Reference, paired_interval
from compress.auto.log import AutoLog
from models.artifacts import MARKER
from models.metrics import ACCURACY

# the module-scoped search is done once: under xdist (make test) the whole module runs on one worker
pytestmark = pytest.mark.xdist_group("auto")
FAST = {"techniques": ("prune50",), "resamples": 200}


@pytest.fixture(scope="module")
def mlp():
    from models.subject import resolve

    return resolve("mlp", tiny=True)


@pytest.fixture(scope="module")
def searched(mlp, tmp_path_factory):
    out = tmp_path_factory.mktemp("auto-mlp")
    return auto(mlp, AutoSpec(out, max_drop=0.05, **FAST))


@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    """A user's own tf_keras classifier saved as .keras, with its data as an .npz (x, y)."""
    from models.backend import keras

    d = tmp_path_factory.mktemp("user")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int64") + (x[:, 2] > 1).astype("int64")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((6,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=20, verbose=0)
    model.save(d / "user.keras")
    np.savez(d / "user.npz", x=x, y=y)
    return d / "user.keras", d / "user.npz"


def test_paired_interval_is_paired_and_centred_on_the_drop():
    y = np.arange(200) % 3
    onehot = np.eye(3)[y]
    rng = np.random.default_rng(0)
    ref = Reference("accuracy", True, 1.0, 200, rng.integers(0, 200, (500, 200)))
    ref.boot = np.array([ACCURACY(y[i], onehot[i]) for i in ref.indices])
    assert paired_interval(ref, ACCURACY, y, onehot)[:2] == (0.0, 0.0)  # identical predictions: no noise at all
    worse = onehot.copy()
    worse[:20] = np.roll(worse[:20], 1, axis=1)  # 20 of 200 wrong: a drop of 0.1
    low, high, note = paired_interval(ref, ACCURACY, y, worse)
    assert note is None and 0.05 < low < 0.1 < high < 0.15


def test_best_files_load_and_their_recorded_metric_matches_a_rescore(searched, mlp):
    from export import runtime

    assert set(searched.choices) == {"litert", "onnxruntime-cpu"}
    for rt, choice in searched.choices.items():
        c = choice.candidate
        assert choice.path.name == f"best-{rt}.{'tflite' if rt == 'litert' else 'onnx'}"
        assert choice.path.with_name(choice.path.name + ".json").exists()
        loaded = runtime.load(choice.path)
        assert mlp.score_predict(loaded.predict) == pytest.approx(c.metric, abs=1e-9)
        assert c.chosen and c.status == "scored" and c.drop <= searched.budget
        assert loaded.metadata["chain"] == c.chain
    stages = {c.stage for c in searched.candidates}
    assert {"baseline", "ptq", "technique"} <= stages
    labels = {c.label for c in searched.candidates}
    assert {"tflite(int8)", "tflite(16x8)", "onnx(float16)", "prune(0.5) → tflite(int8)"} <= labels
    assert any(lab.startswith("prune(0.5) → onnx(int8") for lab in labels)
    data = json.loads((searched.out / "auto.json").read_text())
    assert len(data["candidates"]) == len(searched.candidates)
    for row in data["candidates"]:
        assert row["verdict"] and {"chain", "size", "p50_ms", "metric", "drop", "ci_low", "ci_high", "pareto"} <= set(row)
    assert any(row["pareto"] for row in data["candidates"])
    md = (searched.out / "report.md").read_text()
    assert "## Chosen file per runtime" in md and "Per-layer sensitivity" in md
    page = (searched.out / "report.html").read_text()
    assert "Plotly.newPlot" in page and "best-litert.tflite" in page and "<script src=" not in page
    assert not (searched.out / "candidates").exists()  # scored candidate files do not pile up


def test_a_rerun_scores_no_new_candidate(searched, mlp):
    log = AutoLog(searched.out / LOG_NAME)
    before = log.keys()
    assert len(before) == searched.new > 0
    again = auto(mlp, AutoSpec(searched.out, max_drop=0.05, **FAST))
    assert again.new == 0 and log.keys() == before
    assert all(c.resumed for c in again.candidates)
    assert {rt: c.candidate.key for rt, c in again.choices.items()} == \
        {rt: c.candidate.key for rt, c in searched.choices.items()}


def test_strict_rejects_a_candidate_whose_upper_bound_exceeds_the_budget(searched, mlp, tmp_path):
    wide = [c for c in searched.candidates if c.status == "scored" and c.ci_high is not None and c.ci_high > c.drop]
    assert wide, "no candidate with a non-zero interval to test --strict on"
    target = wide[0]
    budget = (target.drop + target.ci_high) / 2
    shutil.copy(searched.out / LOG_NAME, tmp_path / LOG_NAME)  # resume the scores: only the verdicts change
    shutil.copytree(searched.out / "techniques", tmp_path / "techniques")
    shutil.copy(searched.out / MARKER, tmp_path / MARKER)  # the folder of an earlier search, as auto took it
    loose = auto(mlp, AutoSpec(tmp_path, max_drop=budget, **FAST))
    strict = auto(mlp, AutoSpec(tmp_path, max_drop=budget, strict=True, **FAST))
    assert loose.new == 0  # strict may add candidates: fallbacks are tried when int8 fails the stricter test
    by_key = {c.key: c for c in strict.candidates}
    assert next(c for c in loose.candidates if c.key == target.key).within_budget
    assert not by_key[target.key].within_budget and "95% upper bound" in by_key[target.key].verdict
    for choice in strict.choices.values():
        if choice.reachable:
            assert choice.candidate.ci_high <= budget


def test_strict_refuses_scores_without_an_interval(mlp, tmp_path):
    custom = mlp.with_model(mlp.model)
    custom.spec = mlp.spec.replace(score_fn=lambda predict, split, config: ACCURACY(split.y, predict(split.x)))
    result = auto(custom, AutoSpec(tmp_path, max_drop=0.5, strict=True, runtimes=("litert",), techniques=(),
                                   mixed_precision=False, resamples=200))
    scored = [c for c in result.candidates if c.status == "scored"]
    assert scored and all(c.ci_high is None and "refused by --strict: no interval" in c.verdict for c in scored)
    assert all("score_fn" in c.ci_note for c in scored)
    choice = result.choices["litert"]
    assert not choice.reachable and choice.path is None  # the gate: nothing outside the budget is written


def test_unreachable_budget_is_the_gate_refusing_exit_1_and_nothing_written(cli, tmp_path):
    """As every compress command: no candidate within --max-drop -> exit 1, no best file (the search's record,
    auto.json and the reports, is still written); --no-validate writes the one that loses least."""
    r = cli("compress", "auto", "mlp", "--tiny", "--max-drop", "-1", "--runtime", "litert", "-o", tmp_path)
    assert r.returncode == 1, r.stderr
    assert "unreachable" in r.stdout and not (tmp_path / "best-litert.tflite").exists()
    assert "dropped from" in r.stderr and "nothing written" in r.stderr
    data = json.loads((tmp_path / "auto.json").read_text())
    choice = data["choices"]["litert"]
    assert choice["reachable"] is False and "unreachable" in choice["message"] and choice["file"] is None
    assert choice["verdict"]["passed"] is False and choice["verdict"]["budget"] == -1
    chosen = next(c for c in data["candidates"] if c["key"] == choice["chosen_key"])
    assert chosen["drop"] is not None and chosen["drop"] > -1
    assert f"drop {chosen['drop']:+.4f}" in choice["message"]
    r = cli("compress", "auto", "mlp", "--tiny", "--max-drop", "-1", "--runtime", "litert", "--no-validate", "-o",
            tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "best-litert.tflite").exists() and "written anyway (--no-validate)" in " ".join(r.stdout.split())


def test_time_budget_zero_stops_after_the_baselines(cli, tmp_path):
    r = cli("compress", "auto", "mlp", "--tiny", "--max-drop", "0.05", "--time-budget", "0", "--runtime", "litert",
            "-o", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "stopped early" in r.stdout
    data = json.loads((tmp_path / "auto.json").read_text())
    assert data["stopped_early"]
    scored = [c for c in data["candidates"] if c["status"] == "scored"]
    assert [c["stage"] for c in scored] == ["baseline"]
    assert all("--time-budget" in c["reason"] for c in data["candidates"] if c["status"] == "not scored")
    assert (tmp_path / "best-litert.tflite").exists()


def test_a_model_without_labels_is_refused_in_one_line(cli, user_model, tmp_path):
    r = cli("compress", "auto", user_model[0], "--max-drop", "0.01", "-o", tmp_path / "out")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "--data" in r.stderr and "labels" in r.stderr


@pytest.mark.parametrize("runtime, says", [("tensorrt", "unknown --runtime"), ("keras", "runs Keras models")])
def test_bad_runtime_is_one_line(cli, tmp_path, runtime, says):
    r = cli("compress", "auto", "mlp", "--max-drop", "0.01", "--runtime", runtime, "-o", tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and says in r.stderr


def test_user_file_through_the_cli(run_cli, user_model, tmp_path):
    from export import runtime

    path, data = user_model
    r = run_cli("compress", "auto", path, "--data", data, "--max-drop", "0.02", "--runtime", "litert", "-o", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "tensorflow" not in r.stderr.lower()
    result = json.loads((tmp_path / "auto.json").read_text())
    assert result["metric"] == "accuracy" and result["model"] == "user"
    chains = [c["chain"] for c in result["candidates"]]
    assert all(chain[0] == "user.keras" for chain in chains)
    assert any("channels(0.5)" in chain for chain in chains)
    choice = result["choices"]["litert"]
    assert choice["message"] in r.stdout.replace("\n", "") or choice["message"][:60] in r.stdout
    loaded = runtime.load(tmp_path / "best-litert.tflite")
    assert loaded.predict(np.zeros((2, 6), "float32")).shape == (2, 3)


def test_relative_budget_is_a_fraction_of_the_fp32_metric(mlp, tmp_path):
    result = auto(mlp, AutoSpec(tmp_path, max_drop=0.1, relative=True, runtimes=("litert",), time_budget_min=0,
                                resamples=200))
    assert result.budget == pytest.approx(0.1 * result.baseline)
    assert "0.1 of the fp32 metric" in (tmp_path / "report.md").read_text()


def test_mixed_precision_keeps_layers_float_through_the_helpers_interface(mlp, tmp_path, monkeypatch):
    """int8 over budget -> export.quantize.sensitivity.rank and export.quantize.mixed_precision.keep_in_float are called with a
    drop_of that builds and scores the real file with those layers excluded; the report explains each layer."""
    import types
    from dataclasses import dataclass

    from compress.auto import search

    @dataclass
    class LayerSensitivity:
        layer: str
        error: float
        measure: str
        ops: tuple

    @dataclass
    class Step:
        kept_float: tuple
        drop: float
        accepted: bool
        why: str

    @dataclass
    class MixedPrecision:
        kept_float: tuple
        drop: float
        within_budget: bool
        steps: list

    calls = {}
    dense = [layer.name for layer in mlp.model.layers if layer.weights]

    def rank(subject, recipe, calibration=None):
        calls["rank"] = str(recipe)
        return [LayerSensitivity(name, 1.0 / (i + 1), "fake", ("FULLY_CONNECTED",)) for i, name in enumerate(dense)]

    def keep_in_float(ranking, drop_of, budget, max_layers=None):
        kept, steps = (), []
        for r in ranking[:2]:
            drop = drop_of(kept + (r.layer,))
            kept += (r.layer,)
            steps.append(Step(kept, drop, True, f"reverting {r.layer} gives drop {drop:+.4f}"))
        return MixedPrecision(kept, steps[-1].drop, steps[-1].drop <= budget, steps)

    for name, fns in (("sensitivity", {"rank": rank}), ("mixed_precision", {"keep_in_float": keep_in_float})):
        module = types.ModuleType(f"export.quantize.{name}")
        module.__dict__.update(fns)
        monkeypatch.setattr(search, name, module)  # the search's own reference to the helper
    result = auto(mlp, AutoSpec(tmp_path, max_drop=-1, runtimes=("litert",), techniques=(), resamples=200))
    assert calls["rank"] == "tflite(int8)"
    mixed = [c for c in result.candidates if c.stage == "mixed"]
    assert [c.quant_recipe().exclude for c in mixed] == [tuple(dense[:1]), tuple(dense[:2])]
    assert all(c.status == "scored" and "float: " in c.label for c in mixed)
    entry = result.sensitivity["litert"]
    assert entry["kept_float"] == dense[:2] and entry["drop"] == mixed[-1].drop
    md = (tmp_path / "report.md").read_text()
    assert f"reverting {dense[0]} gives drop" in md and "| 1 | " in md


def test_a_technique_that_does_not_apply_is_rejected_with_its_reason(tmp_path):
    """2:4 sparsity needs >= 4 input channels per layer: on a 3-feature model it is recorded as rejected (on both
    runtimes, from one attempt cached in DIR/techniques), never silently dropped."""
    from models.backend import keras
    from models.subject import resolve

    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 3)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = keras.Sequential([keras.layers.Input((3,)), keras.layers.Dense(3, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save(tmp_path / "narrow.keras")
    np.savez(tmp_path / "narrow.npz", x=x, y=y)
    subject = resolve(str(tmp_path / "narrow.keras"), data=str(tmp_path / "narrow.npz"))
    result = auto(subject, AutoSpec(tmp_path / "out", max_drop=0.5, techniques=("prune2x4",), resamples=200))
    rejected = [c for c in result.candidates if c.technique == "prune2x4"]
    assert len(rejected) == 4 and all(c.status == "rejected" and "2:4" in c.reason for c in rejected)
    assert all(c.verdict.startswith("rejected: ") for c in rejected)
    assert "2:4" in json.loads((tmp_path / "out" / "techniques" / "prune2x4.json").read_text())["reason"]
    assert "rejected: " in (tmp_path / "out" / "report.md").read_text()


def test_real_mixed_precision_ranks_keras_layers_and_lists_each_candidate_once(mlp, tmp_path):
    result = auto(mlp, AutoSpec(tmp_path, max_drop=-1, runtimes=("litert",), techniques=(), resamples=200))
    entry = result.sensitivity["litert"]
    layers = {layer.name for layer in mlp.model.layers}
    assert entry["ranking"] and {r["layer"] for r in entry["ranking"]} <= layers
    assert len(entry["steps"]) > 1 and not entry["within_budget"]
    keys = [c.key for c in result.candidates]
    assert len(keys) == len(set(keys))
    assert any(c.stage == "mixed" for c in result.candidates)


def test_latency_is_the_median_of_several_sessions(searched, mlp, monkeypatch):
    """One runtime session of a file can be far slower than the next for its whole life: the score takes the
    median session, loading the file once per session."""
    from benchmarks.runner import stats
    from compress.auto import evaluator as auto_eval
    from export import runtime

    path = searched.choices["litert"].path
    real_load, loads = runtime.load, []
    monkeypatch.setattr(runtime, "load", lambda p, **kwargs: loads.append(p) or real_load(p, **kwargs))
    session_ms = iter([5.0, 1.0, 2.0])
    monkeypatch.setattr(auto_eval, "latency", lambda loaded, x, method=None: stats([next(session_ms)] * 4))
    score = auto_eval.score_file(mlp, auto_eval.reference(mlp, 200), path, "litert")
    assert len(loads) == auto_eval.SESSIONS == 3
    assert score.p50_ms == 2.0 and score.runs == 12


def test_finalists_are_timed_again_side_by_side_and_the_choice_follows(mlp, tmp_path, monkeypatch):
    """Timings taken minutes apart are re-taken interleaved at the end; the choice, its notes and the search log
    (so a resumed search) all use the side-by-side figures."""
    from compress.auto import evaluator as auto_eval

    spec = AutoSpec(tmp_path, max_drop=0.5, runtimes=("litert",), techniques=(), mixed_precision=False,
                    resamples=200)
    asked = {}

    def side_by_side(files, runtime, x, rounds=3, method=None):
        asked.update(files)
        assert all(p.exists() for p in files.values())
        order = sorted(files)  # make the last finalist (by key) the fastest, whatever it measured alone
        return {k: [1.0 + order[::-1].index(k)] * rounds for k in files}

    monkeypatch.setattr(auto_eval, "interleaved_p50s", side_by_side)
    result = auto(mlp, spec)
    finalists = [c for c in result.candidates if c.key in asked]
    assert len(finalists) >= 2 and all(any("timed again beside" in n for n in c.notes) for c in finalists)
    fastest = max(asked)
    assert result.choices["litert"].candidate.key == fastest
    assert next(c for c in finalists if c.key == fastest).p50_ms == 1.0
    assert AutoLog(tmp_path / LOG_NAME).get(fastest)["p50_ms"] == 1.0
    again = auto(mlp, spec)  # resumed: no files to time again, the logged side-by-side figures decide
    assert again.new == 0 and again.choices["litert"].candidate.key == fastest


def test_interleaved_timing_rotates_the_order_and_uses_fresh_sessions(searched, monkeypatch):
    from compress.auto import evaluator as auto_eval
    from export import runtime

    path = searched.choices["litert"].path
    real_load, loads = runtime.load, []
    monkeypatch.setattr(runtime, "load", lambda p, **kwargs: loads.append(p) or real_load(p, **kwargs))
    files = {"a": path, "b": path, "c": path}
    timed = auto_eval.interleaved_p50s(files, "litert", np.zeros((4, 4), "float32"), rounds=3)
    assert {k: len(v) for k, v in timed.items()} == {"a": 3, "b": 3, "c": 3} and len(loads) == 9
    assert all(v > 0 for vs in timed.values() for v in vs)
