"""Building variants in child processes: a crash or hang costs one variant, one child serves model after model,
a killed builder stops (benchmarks.build)."""
import sys

import pytest

from benchmarks.store import Store
from benchmarks.sweep import Sweep

from test_benchmarks import _tiny_cfg

# the build timeout the hang test runs under: the window also covers starting each child interpreter (0.1 s on an
# idle machine, seconds on a loaded one), and a child that has not started a variant when it ends fails them all
HANG_S = 10

_FAKE_BUILDER = """
import json, os, sys, time
request = json.loads(sys.stdin.readline())
for name in request["variants"]:
    print("CT-BUILDING " + name, flush=True)
    if name == "tflite-int8":
        os.abort()
    if name == "onnx-int8":
        time.sleep(600)  # a hang: killed at the build timeout
    answer = {"variant": name, "path": "/built/" + name}
    if name == "onnx-float16":
        answer = {"variant": name, "error": "no space left on /cache", "fatal": True}
    print("CT-BUILT " + json.dumps(answer), flush=True)
"""


@pytest.fixture
def fake_builder(monkeypatch):
    from benchmarks import build

    monkeypatch.setattr(build, "child_command", lambda: [sys.executable, "-c", _FAKE_BUILDER])
    return build


def test_a_build_that_crashes_or_hangs_costs_one_variant(fake_builder):
    from pathlib import Path

    got = fake_builder.build_all({"model": "mlp", "variants": ["tflite-fp32", "tflite-int8", "onnx-int8",
                                                               "onnx-fp32"]}, timeout=HANG_S)
    assert got["tflite-fp32"].path == Path("/built/tflite-fp32") and got["onnx-fp32"].path == Path("/built/onnx-fp32")
    assert got["tflite-int8"].error == "building tflite-int8: the build process crashed (signal 6)"
    assert got["onnx-int8"].error == f"building onnx-int8: timed out after {HANG_S} s"


_LASTING_BUILDER = """
import json, sys
for line in sys.stdin:
    request = json.loads(line)
    for i, name in enumerate(request["variants"]):
        print("CT-BUILDING " + name, flush=True)
        print("CT-BUILT " + json.dumps({"variant": name, "path": "/built/" + name, "seconds": 0.5}), flush=True)
        if name == "tflite-int8" and len(request["variants"]) > i + 1:  # "grown too big": the rest elsewhere
            print("CT-RETIRE", flush=True)
            raise SystemExit(0)
    rss = 5000 if request["model"] == "big" else 100
    print("CT-DONE " + json.dumps({"rss_mb": rss}), flush=True)
"""


def test_one_build_child_serves_model_after_model_and_hands_over_when_too_big(monkeypatch):
    from pathlib import Path

    from benchmarks import build

    monkeypatch.setattr(build, "child_command", lambda: [sys.executable, "-c", _LASTING_BUILDER])
    builder = build.Builder(keep_idle_mb=1500)
    try:
        for model in ("a", "b"):
            got = builder.build({"model": model, "variants": ["tflite-fp32", "onnx-fp32"]})
            assert {v: b.path for v, b in got.items()} == {"tflite-fp32": Path("/built/tflite-fp32"),
                                                           "onnx-fp32": Path("/built/onnx-fp32")}
        assert builder.started == 1  # the second model reused the first model's child
        got = builder.build({"model": "c", "variants": ["tflite-int8", "onnx-int8"]})  # retires after the first
        assert all(b.path is not None and b.error is None and b.seconds == 0.5 for b in got.values()), got
        assert builder.started == 2
        builder.build({"model": "big", "variants": ["onnx-fp32"]})  # keeps 5000 MB: stopped, not kept idle
        builder.build({"model": "a", "variants": ["onnx-fp32"]})
        assert builder.started == 3
    finally:
        builder.close()


_SLOW_BUILDER = """
import json, sys, time
for line in sys.stdin:
    for name in json.loads(line)["variants"]:
        print("CT-BUILDING " + name, flush=True)
        time.sleep(3)  # a build that lasts a minute: the test kills it after 1 s
        print("CT-BUILT " + json.dumps({"variant": name, "path": "/built/" + name}), flush=True)
    print("CT-DONE {}", flush=True)
"""


def test_a_killed_builder_builds_nothing_more(monkeypatch):
    """Ctrl-C during a build: the child is killed and no fresh child picks up the model's other variants."""
    import threading
    import time

    from benchmarks import build

    monkeypatch.setattr(build, "child_command", lambda: [sys.executable, "-c", _SLOW_BUILDER])
    builder, outcome = build.Builder(), {}

    def run():
        try:
            outcome["got"] = builder.build({"model": "m", "variants": [f"v{i}" for i in range(20)]})
        except KeyboardInterrupt:
            outcome["interrupted"] = True

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(1.0)
    builder.kill()
    thread.join(timeout=120)  # a guard against a hang: the build stops within a second of the kill
    assert not thread.is_alive() and outcome == {"interrupted": True}
    assert builder.started == 1


def test_a_sweep_builds_each_chain_in_a_child_kept_from_model_to_model(tmp_path):
    from benchmarks.build import BuildPool

    cfg = _tiny_cfg(tmp_path, models=["mlp", "fraud_dnn"], variants=["tflite-fp32", "pruned-tflite-int8"],
                    runtimes=["litert"], batches=[1], cache=str(tmp_path / "cache"))
    steps = []
    sweep = Sweep(cfg, Store(tmp_path / "results.db"), on_step=steps.append)
    sweep.builders = BuildPool(2)  # as on a 2-core host: the pruned chain beside the fp32 one
    sweep.run()
    # the next model trains while this one's variants build, before this one is measured
    ahead = steps.index("fraud_dnn: training (cached) while mlp's variants build")
    assert ahead < steps.index("mlp / tflite-fp32 / litert"), steps
    ok = {(r["model"], r["variant"]) for r in sweep.store.rows() if r["status"] == "ok"}
    assert ok == {(m, v) for m in ("mlp", "fraud_dnn") for v in ("tflite-fp32", "pruned-tflite-int8")}, ok
    assert sweep.builders.started == 2  # two children for the two chains, both reused by the second model
    assert {m: set(v) for m, v in sweep.phases.variants.items()} == {
        m: {"tflite-fp32", "pruned-tflite-int8"} for m in ("mlp", "fraud_dnn")}


def test_a_fatal_build_error_stops_the_sweep_with_its_line(fake_builder, tmp_path):
    from models.errors import UserError

    cfg = _tiny_cfg(tmp_path, variants=["onnx-float16"], runtimes=["onnxruntime-cpu"], batches=[1],
                    cache=str(tmp_path / "cache"))
    with pytest.raises(UserError, match="no space left on /cache"):
        Sweep(cfg, Store(tmp_path / "results.db")).run()
