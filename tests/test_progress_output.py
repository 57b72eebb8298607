"""`benchmarks run` with its output in a file or a pipe (`make bench > log`, CI): a line per finished model with the
time so far and the time left, and the answer last (the summary and the warnings counted; report.md lists them)."""
import io
import re

from rich.console import Console

from benchmarks import host
from benchmarks.store import Store

from test_benchmarks import _row

SWEEP = ["--models", "mlp", "fraud_dnn", "--tiny", "--quick", "--variants", "tflite-fp32", "--runtimes", "litert",
         "--batch", "1", "--threads", "1"]
DURATION = r"\d+ (s|min \d\d s|h \d\d min)"


def _seed_slow_int8(db):
    """Rows a sweep stored earlier for mlp (the same model: its content key): ONNX int8 slower than ONNX fp32 beyond
    noise at two batches (two warnings); this sweep measures other rows of mlp, and its report covers all of the
    model's rows."""
    from benchmarks.sweep import SweepConfig
    from benchmarks.units import make_unit

    model_key = make_unit("mlp", SweepConfig(["mlp"], tiny=True)).key  # the tiny mlp, trained (cached) here
    store, here = Store(db), host.host()
    for batch in (1, 2):
        store.put(_row(key=f"seed-fp32-{batch}", model="mlp", model_key=model_key, variant="onnx-fp32",
                       runtime="onnxruntime-cpu", batch=batch, p50_ms=1.0, p90_ms=1.05, host=here))
        store.put(_row(key=f"seed-int8-{batch}", model="mlp", model_key=model_key, variant="onnx-int8",
                       runtime="onnxruntime-cpu", batch=batch, p50_ms=2.0, p90_ms=2.1, host=here))


def test_piped_run_prints_a_line_per_model_and_ends_with_the_answer(run_cli, tmp_path):
    from benchmarks.__main__ import RUN_OUTPUTS
    from models.artifacts import claim_output_dir

    claim_output_dir(tmp_path, RUN_OUTPUTS, "benchmarks run")  # the earlier sweep's folder, as its own run left it
    _seed_slow_int8(tmp_path / "results.db")
    res = run_cli("benchmarks", "run", *SWEEP, "--out", tmp_path)  # stdout is a pipe, not a terminal
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    progress = [i for i, line in enumerate(lines) if line.startswith("[")]
    assert [lines[i].split(":")[0] for i in progress] == ["[1/2] mlp", "[2/2] fraud_dnn"], res.stdout
    for i in progress:
        assert re.fullmatch(rf"\[\d/2\] \w+: done in {DURATION}; elapsed {DURATION}, about {DURATION} left",
                            lines[i]), lines[i]
    assert lines[progress[-1]].endswith("about 0 s left")
    assert "sweep done" not in res.stdout  # no rich bar drawn into the log at the end

    # the end: the summary (best variant per runtime, speedup, metric change), then the warnings counted
    heading = next(i for i, line in enumerate(lines) if line.startswith("Summary (budget: 1 point)"))
    assert heading > progress[-1] and heading > next(i for i, line in enumerate(lines) if line.startswith("report:"))
    table = "\n".join(lines[heading:])
    for column in ("best variant", "speedup", "metric change"):
        assert column in table
    assert re.search(r"fraud_dnn .* litert .* tflite-fp32 .* 1\.00×", table), table
    assert re.search(r"mlp .* onnxruntime-cpu .* onnx-fp32 .* 1\.00×", table), table  # int8 is slower: fp32 it is
    assert any(line.startswith("fraud_dnn: tflite-fp32 on litert") for line in lines[heading:]), table
    assert lines[-1] == (f"2 warning(s) (a quantized variant slower than its fp32 at some batch and thread count: "
                         f"onnx-int8 2): see {tmp_path / 'report.md'}"), res.stdout
    assert "WARNING" not in res.stdout and "is slower than" not in res.stdout  # listed in the report, not here
    report = (tmp_path / "report.md").read_text()
    assert report.count("- WARNING: onnx-int8 is slower than onnx-fp32 on onnxruntime-cpu") == 2


def test_the_estimate_comes_from_the_models_that_measured_something():
    from benchmarks.__main__ import ModelLines, duration

    assert [duration(s) for s in (0.4, 42, 60, 725, 3720)] == ["0 s", "42 s", "1 min 00 s", "12 min 05 s",
                                                                "1 h 02 min"]
    now = [0.0]
    text = io.StringIO()
    lines = ModelLines(Console(file=text, width=60), ["a", "b", "c", "d"], clock=lambda: now[0])
    with lines:
        for took, stored in ((2, 0), (100, 3), (140, 5)):  # "a" was whole in the store: nothing measured
            now[0] += took
            lines.model_done("abcd"[len(lines.spent)], stored)
    assert text.getvalue().splitlines() == [
        "sweep: 4 model(s); a line as each one finishes",
        "[1/4] a: done in 2 s; elapsed 2 s, about 6 s left",
        "[2/4] b: done in 1 min 40 s; elapsed 1 min 42 s, about 3 min 20 s left",
        "[3/4] c: done in 2 min 20 s; elapsed 4 min 02 s, about 2 min 00 s left"]
