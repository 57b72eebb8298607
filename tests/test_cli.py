"""Every command line (in-process through the real error wrapper; a few in a real subprocess), including the bad-input contract: one line, non-zero exit, no traceback, no file left."""
import numpy as np
import pytest
from hostile import assert_one_line_error


def test_prune_cli_reports_sparsity_and_metric(cli, tmp_path):
    out = tmp_path / "mlp-pruned.keras"
    # the tiny mlp is scored on 30 test samples: one is 3.3 points, over the default 1-point gate
    res = cli("compress", "prune", "mlp", "--sparsity", "0.5", "--epochs", "2", "-o", out, "--tiny", "--max-drop", "0.5")
    assert res.returncode == 0, res.stderr
    assert out.exists()
    assert "sparsity per layer" in res.stdout and "50.0%" in res.stdout
    assert "accuracy: before" in res.stdout and "gzip" in res.stdout
    text = " ".join(res.stdout.split())
    assert "sparsity schedule ends at step" in text and "then the lr decays along a cosine" in text  # the recipe


@pytest.mark.parametrize("fmt,mode", [("tflite", "int8"), ("onnx", "dynamic")])
def test_quantize_cli(cli, tmp_path, fmt, mode):
    out = tmp_path / f"cnn.{fmt}"
    # the tiny cnn is scored on 45 test images: one flipped prediction is 2.2 points, over the default 1-point gate
    res = cli("compress", "quantize", "cnn", "--tiny", "--format", fmt, "--mode", mode, "-o", out, "--max-drop", "0.05")
    assert res.returncode == 0, res.stderr
    assert out.exists() and (tmp_path / f"cnn.{fmt}.json").exists()
    assert "accuracy: keras fp32" in res.stdout and "top-1 agreement" in res.stdout


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_export_cli_prints_parity_and_runs(run_cli, tmp_path, fmt):
    out = tmp_path / f"mlp.{fmt}"
    res = run_cli("export", fmt, "mlp", "--tiny", "-o", out)
    assert res.returncode == 0, res.stderr
    assert "max abs error" in res.stdout and "wrote" in res.stdout
    np.save(tmp_path / "x.npy", np.zeros((2, 4), np.float32))
    res = run_cli("export", "run", out, "--input", tmp_path / "x.npy")
    assert res.returncode == 0, res.stderr
    assert "(2, 3)" in res.stdout and "argmax" in res.stdout


def test_export_cli_user_keras_file(cli, tmp_path):
    """A path to the user's own .keras file goes through the same pipeline (synthetic inputs: no data)."""
    from conftest import tiny_trained

    src = tiny_trained("mlp").path
    user = tmp_path / "mine.keras"
    user.write_bytes(src.read_bytes())
    res = cli("export", "onnx", user, "-o", tmp_path / "mine.onnx")
    assert res.returncode == 0, res.stderr
    assert "synthetic inputs" in res.stdout and (tmp_path / "mine.onnx").exists()


def _bad_files(tmp_path):
    (tmp_path / "empty.keras").write_bytes(b"")
    (tmp_path / "corrupt.keras").write_bytes(b"PK\x03\x04 this is not a zip")
    (tmp_path / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    (tmp_path / "model.txt").write_text("hello")
    return tmp_path


BAD = [
    (["nope"], ["unknown model 'nope'", "valid:", "mlp"]),
    (["missing.keras"], ["no such file"]),
    (["empty.keras"], ["is empty"]),
    (["corrupt.keras"], ["cannot load"]),
    (["corrupt.h5"], ["cannot load"]),
    (["model.txt"], ["not a Keras model file"]),
]


@pytest.mark.parametrize("command", [["export", "onnx"], ["export", "tflite"], ["compress", "prune"],
                                     ["compress", "quantize", "--format", "tflite", "--mode", "int8"]])
@pytest.mark.parametrize("model,fragments", BAD, ids=[b[0][0] for b in BAD])
def test_bad_model_argument(cli, tmp_path, command, model, fragments):
    _bad_files(tmp_path)
    module, sub, *rest = command
    out = tmp_path / ("out.keras" if sub == "prune" else "out." + ("onnx" if "onnx" in command else "tflite"))
    res = cli(module, sub, *model, *rest, "-o", out, cwd=tmp_path)
    assert_one_line_error(res, *fragments)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "temporary file left behind"


@pytest.mark.parametrize("args,fragments", [
    (["compress", "quantize", "mlp", "--format", "tflite", "--mode", "int4"], ["mode 'int4'", "valid: fp32"]),
    (["compress", "quantize", "mlp", "--format", "onnx", "--mode", "16x8"], ["not available for onnx"]),
    (["compress", "quantize", "mlp", "--format", "coreml", "--mode", "int8"], ["unknown format 'coreml'"]),
    (["export", "onnx", "mlp", "--quantize", "int3"], ["mode 'int3'"]),
    (["compress", "prune", "mlp", "--sparsity", "1.5"], ["--sparsity must be in [0, 1)"]),
    (["compress", "prune", "mlp", "--schedule", "cosine"], ["unknown schedule 'cosine'"]),
    (["benchmarks", "run", "--models", "nope"], ["unknown model 'nope'"]),
    (["benchmarks", "run", "--models", "mlp", "--runtimes", "tensorrt-x"], ["unknown runtime 'tensorrt-x'"]),
    (["benchmarks", "run", "--models", "mlp", "--variants", "int2"], ["unknown variant 'int2'"]),
    (["benchmarks", "run", "--models", "mlp", "--batch", "-1"], ["positive integer"]),
    (["export", "run", "missing.onnx", "--input", "x.npy"], ["no such file"]),
    (["models", "train", "nope"], ["unknown model 'nope'"]),
])
def test_bad_options(cli, tmp_path, args, fragments):
    res = cli(*args, cwd=tmp_path)
    assert_one_line_error(res, *fragments)
    assert not list(tmp_path.iterdir()), "a failed command left files behind"


def test_output_directory_not_writable(cli, tmp_path):
    res = cli("export", "onnx", "mlp", "--tiny", "-o", tmp_path / "no" / "such" / "dir" / "m.onnx")
    assert_one_line_error(res, "output directory does not exist")


def test_benchmarks_cli_end_to_end(run_cli, tmp_path):
    """--quick: fp32 and int8 of each format on the main runtimes, and the output says what it left out."""
    from benchmarks.store import Store

    res = run_cli("benchmarks", "run", "--models", "mlp", "--tiny", "--quick", "--out", tmp_path,
                  "--cache-dir", tmp_path / "cache")
    assert res.returncode == 0, res.stderr
    assert ("--quick leaves out pruned, tflite-dynamic, tflite-float16, onnx-float16, pruned-tflite-int8, "
            "keras-predict, litert-noxnnpack") in " ".join(res.stdout.split()), res.stdout
    rows = {(r["variant"], r["runtime"]): r["status"] for r in Store(tmp_path / "results.db").rows()}
    assert {k for k, status in rows.items() if status == "ok"} == {
        ("fp32", "keras"), ("tflite-fp32", "litert"), ("tflite-int8", "litert"), ("onnx-fp32", "onnxruntime-cpu"),
        ("onnx-int8", "onnxruntime-cpu")}, rows
    report = (tmp_path / "report.md").read_text()
    for variant in ("fp32", "tflite-int8", "onnx-int8"):
        assert f"| {variant} |" in report
    assert "p50 ms" in report and "| ok |" in report
    import json

    phases = json.loads((tmp_path / "phases.json").read_text())  # each variant built with its own time
    built = phases["build_per_variant_s"]["mlp"]
    assert set(built) == {"tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8"} and all(
        s > 0 for s in built.values()), built
    assert sum(built.values()) <= phases["per_model_s"]["mlp"]["build"]
    assert "slowest builds: mlp/" in res.stdout, res.stdout
    res = run_cli("benchmarks", "report", "--out", tmp_path)
    assert res.returncode == 0, res.stderr


def test_real_process_bad_input_has_no_traceback(run_cli, tmp_path):
    (tmp_path / "corrupt.keras").write_bytes(b"garbage")
    res = run_cli("export", "onnx", tmp_path / "corrupt.keras", "-o", tmp_path / "x.onnx")
    assert_one_line_error(res, "cannot load")
    assert not (tmp_path / "x.onnx").exists()
