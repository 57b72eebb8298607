"""The bad-input matrix, walked for every command that takes the input: one line, the right exit code,
no traceback, no partial output."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field

import numpy as np
import pytest
from hostile import assert_one_line_error, fail_writes_under, listing, make_read_only

from export import runtime

# ---------------------------------------------------------------------------------------- the input matrix


@dataclass
class Case:
    id: str
    argv: list[str]  # {A}: the assets directory, {O}: this case's (empty) output directory
    fragments: list[str] = field(default_factory=list)
    code: int = 2
    patch: str | None = None  # "disk-full" | "read-only"
    warns: list[str] | None = None  # the command succeeds with these fragments in a warning line on stderr


KERAS_COMMANDS = {
    "export-onnx": (["export", "onnx", "{M}", "-o", "{O}/out.onnx"], "out.onnx"),
    "export-tflite": (["export", "tflite", "{M}", "-o", "{O}/out.tflite"], "out.tflite"),
    "prune": (["compress", "prune", "{M}", "--epochs", "0", "-o", "{O}/out.keras"], "out.keras"),
    "cluster": (["compress", "cluster", "{M}", "--epochs", "0", "-o", "{O}/out.keras"], "out.keras"),
    "qat": (["compress", "qat", "{M}", "--epochs", "0", "-o", "{O}/out.tflite"], "out.tflite"),
    "quantize": (["compress", "quantize", "{M}", "--format", "tflite", "--mode", "int8", "-o", "{O}/out.tflite"],
                 "out.tflite"),
    "channel-prune": (["compress", "channel-prune", "{M}", "--epochs", "0", "-o", "{O}/out.keras"], "out.keras"),
    "preflight": (["compress", "preflight", "{M}"], None),
}

# (case, model argument, fragments of the error)
KERAS_INPUTS = [
    ("missing", "{A}/missing.keras", ["no such file"]),
    ("empty-keras", "{A}/empty.keras", ["is empty"]),
    ("empty-h5", "{A}/empty.h5", ["is empty"]),
    ("truncated-keras", "{A}/truncated.keras", ["cannot load"]),
    ("corrupt-keras", "{A}/corrupt.keras", ["cannot load"]),
    ("garbage-keras", "{A}/garbage.keras", ["cannot load", "neither a .keras (zip) archive nor an HDF5 file"]),
    ("truncated-h5", "{A}/truncated.h5", ["cannot load"]),
    ("corrupt-h5", "{A}/corrupt.h5", ["cannot load"]),
    ("weights-only-h5", "{A}/weights.h5", ["cannot load", "no model config"]),
    ("directory", "{A}/adir", ["not a SavedModel"]),
    ("onnx-file", "{A}/mlp.onnx", ["exported ONNX model, not a Keras model", "export run"]),
    ("tflite-file", "{A}/mlp.tflite", ["exported TFLite model, not a Keras model"]),
    ("text-file", "{A}/notes.txt", ["not a Keras model file"]),
    ("tflite-named-keras", "{A}/tflite.keras", ["cannot load", "a TFLite model"]),
    ("zip-named-h5", "{A}/zip.h5", ["rename it to .keras"]),
    ("lambda-keras", "{A}/lambda.keras", ["Lambda layer", "--unsafe"]),
    ("lambda-h5", "{A}/lambda.h5", ["Lambda layer", "--unsafe"]),
    ("lambda-savedmodel", "{A}/lambda_savedmodel", ["Lambda layer", "--unsafe"]),
    ("foreign-code", "{A}/evil.keras", ["os.system", "--unsafe"]),
]

# where the output cannot be written (the command does its work first, then must leave nothing behind)
OUTPUT_PROBLEMS = {
    "disk-full": (["No space left on device"], "disk-full"),
    "read-only": (["not writable"], "read-only"),
    "no-dir": (["output directory does not exist"], None),
}
OUTPUT_CASES = {  # command -> output problems checked for it (each one costs a real conversion or pruning)
    "export-onnx": ["disk-full", "read-only", "no-dir"], "export-tflite": ["disk-full"],
    "prune": ["disk-full", "read-only", "no-dir"], "cluster": ["disk-full"], "qat": ["disk-full"],
    "quantize": ["disk-full"], "channel-prune": ["disk-full"],
}


def _cases() -> list[Case]:
    cases = []
    for command, (argv, out_name) in KERAS_COMMANDS.items():
        for case, model, fragments in KERAS_INPUTS:
            cases.append(Case(f"{command}:{case}", [a.replace("{M}", model) for a in argv], fragments))
        for problem in OUTPUT_CASES.get(command, []):
            fragments, patch = OUTPUT_PROBLEMS[problem]
            where = {"read-only": "{O}/ro", "no-dir": "{O}/no/such"}.get(problem, "{O}")
            cases.append(Case(f"{command}:output-{problem}",
                              [a.replace("{M}", "{A}/mlp.keras").replace("{O}", where) for a in argv], fragments,
                              patch=patch))

    run = ["export", "run"]
    for fmt in ("onnx", "tflite"):
        valid = f"{{A}}/mlp.{fmt}"
        for case, argv, fragments in [
            ("missing", [f"{{A}}/missing.{fmt}", "--input", "{A}/x.npy"], ["no such file"]),
            ("empty", [f"{{A}}/empty.{fmt}", "--input", "{A}/x.npy"], ["is empty"]),
            ("truncated", [f"{{A}}/truncated.{fmt}", "--input", "{A}/x.npy"], ["cannot load"]),
            ("corrupt", [f"{{A}}/corrupt.{fmt}", "--input", "{A}/x.npy"], ["cannot load"]),
            ("keras-archive", [f"{{A}}/zip.{fmt}", "--input", "{A}/x.npy"], ["is a zip archive"]),
            ("other-runtime-format", [f"{{A}}/{'tflite' if fmt == 'onnx' else 'onnx'}.{fmt}", "--input",
                                      "{A}/x.npy"], ["TFLite model, not an ONNX" if fmt == "onnx" else "cannot load"]),
            ("wrong-shape", [valid, "--input", "{A}/x5.npy"], ["input 'features'", "expected shape (?, 4)",
                                                               "got (2, 5)"]),
            ("wrong-rank", [valid, "--input", "{A}/x1.npy"], ["input 'features'", "2 dimensions", "got (4,)"]),
            ("wrong-dtype", [valid, "--input", "{A}/xs.npy"], ["input 'features'", "expected dtype float32",
                                                               "got str"]),
            ("empty-batch", [valid, "--input", "{A}/x0.npy"], ["input 'features'", "batch is empty"]),
            ("unknown-input-name", [valid, "--input", "pixels={A}/x.npy"], ["unknown input 'pixels'", "features"]),
            ("input-missing", [valid, "--input", "{A}/nope.npy"], ["cannot read input", "no such file"]),
            ("input-empty", [valid, "--input", "{A}/empty.npy"], ["cannot read input", "empty"]),
            ("input-not-npy", [valid, "--input", "{A}/notes.txt"], ["cannot read input", "not a .npy file"]),
            ("input-pickled-objects", [valid, "--input", "{A}/xobj.npy"], ["cannot read input", "Python objects"]),
            ("provider-unknown", [valid, "--input", "{A}/x.npy", "--provider", "QuantumExecutionProvider"],
             ["unknown provider 'QuantumExecutionProvider'", "CPUExecutionProvider"] if fmt == "onnx"
             else ["applies to .onnx files only"]),
            ("output-suffix", [valid, "--input", "{A}/x.npy", "-o", "{O}/out.txt"], ["must end in .npz"]),
            ("output-no-dir", [valid, "--input", "{A}/x.npy", "-o", "{O}/no/such/out.npz"],
             ["output directory does not exist"]),
        ]:
            cases.append(Case(f"export-run-{fmt}:{case}", run + argv, fragments))
        cases.append(Case(f"export-run-{fmt}:output-disk-full", run + [valid, "--input", "{A}/x.npy", "-o",
                                                                       "{O}/out.npz"],
                          ["No space left on device"], patch="disk-full"))
        cases.append(Case(f"export-run-{fmt}:output-read-only", run + [valid, "--input", "{A}/x.npy", "-o",
                                                                       "{O}/ro/out.npz"],
                          ["not writable"], patch="read-only"))
        cases.append(Case(f"export-run-{fmt}:nan-inf", run + [valid, "--input", "{A}/xnan.npy"], code=0,
                          warns=["input 'features'", "2 non-finite", "1 NaN, 1 Inf", "first at index (0, 3)"]))
    cases.append(Case("export-run:keras-file", run + ["{A}/mlp.keras", "--input", "{A}/x.npy"],
                      ["Keras model, not an exported one"]))
    cases.append(Case("export-run:directory", run + ["{A}/dir.onnx", "--input", "{A}/x.npy"], ["is a directory"]))

    for case, store, fragments in [
        ("missing", "{A}/missing.db", ["no results store"]),
        ("empty", "{A}/empty.db", ["is empty"]),
        ("garbage", "{A}/garbage.db", ["not a results store"]),
        ("keras-file", "{A}/mlp.keras", ["not a results store"]),
        ("foreign-sqlite", "{A}/foreign.db", ["without a results table"]),
    ]:
        cases.append(Case(f"benchmarks-compare:{case}", ["benchmarks", "compare", store, "{A}/store"], fragments))
        cases.append(Case(f"benchmarks-compare-new:{case}", ["benchmarks", "compare", "{A}/store", store],
                          fragments))
    cases += [
        Case("benchmarks-report:missing", ["benchmarks", "report", "--out", "{O}/nothing"], ["no results store"]),
        Case("benchmarks-report:garbage", ["benchmarks", "report", "--out", "{A}/garbage_store"],
             ["not a results store"]),
        Case("benchmarks-report:output-disk-full", ["benchmarks", "report", "--out", "{O}"],
             ["No space left on device"], patch="disk-full+store"),
        Case("benchmarks-report:output-read-only", ["benchmarks", "report", "--out", "{O}/ro"], ["not writable"],
             patch="read-only+store"),
        Case("benchmarks-run:out-is-a-file", ["benchmarks", "run", "--models", "mlp", "--tiny", "--out",
                                              "{A}/notes.txt"], ["cannot create", "not a directory"]),
    ]

    # unknown names (the message lists the valid ones) and impossible options
    cases += [Case(f"names:{i}:{argv[0]}-{argv[1]}", argv, fragments) for i, (argv, fragments) in enumerate([
        (["export", "onnx", "resnet9000", "-o", "{O}/x.onnx"], ["unknown model 'resnet9000'", "valid:", "mlp"]),
        (["compress", "prune", "resnet9000", "-o", "{O}/x.keras"], ["unknown model 'resnet9000'", "valid:"]),
        (["models", "train", "resnet9000"], ["unknown model 'resnet9000'", "valid:"]),
        (["benchmarks", "run", "--models", "resnet9000"], ["unknown model 'resnet9000'", "valid:"]),
        (["compress", "sparsify", "mlp"], ["invalid choice: 'sparsify'", "prune", "quantize"]),
        (["compress", "quantize", "mlp", "--format", "tflite", "--mode", "int4"], ["mode 'int4'", "valid:"]),
        (["compress", "quantize", "mlp", "--format", "coreml", "--mode", "int8"], ["unknown format 'coreml'",
                                                                                    "valid:"]),
        (["export", "tflite", "mlp", "--quantize", "int3"], ["mode 'int3'", "valid:"]),
        (["compress", "prune", "mlp", "--schedule", "cosine"], ["unknown schedule 'cosine'", "valid:"]),
        (["compress", "cluster", "mlp", "--init", "psychic"], ["unknown centroid init 'psychic'", "valid:"]),
        (["benchmarks", "run", "--models", "mlp", "--runtimes", "tensorrt-x"], ["unknown runtime 'tensorrt-x'",
                                                                                "valid:", "litert"]),
        (["benchmarks", "run", "--models", "mlp", "--variants", "int2"], ["unknown variant 'int2'", "valid:"]),
        (["export", "run", "{A}/mlp.onnx", "--input", "{A}/x.npy", "--provider", "Nope"],
         ["unknown provider 'Nope'", "valid:"]),
        (["compress", "prune", "mlp", "--sparsity", "1.0"], ["--sparsity must be in [0, 1)"]),
        (["compress", "prune", "mlp", "--sparsity", "-0.1"], ["--sparsity must be in [0, 1)"]),
        (["compress", "cluster", "mlp", "--clusters", "0"], ["--clusters must be >= 2"]),
        (["compress", "channel-prune", "mlp", "--ratio", "1.5"], ["--ratio must be in (0, 1)"]),
        (["compress", "prune", "mlp", "--epochs", "-1"], ["--epochs must be >= 0"]),
        (["export", "onnx", "mlp", "--batch", "-1"], ["--batch must be a positive integer"]),
        (["export", "tflite", "mlp", "--batch", "0"], ["--batch must be a positive integer"]),
        (["benchmarks", "run", "--models", "mlp", "--batch", "-1"], ["positive integer"]),
        (["benchmarks", "run", "--models", "mlp", "--threads", "0"], ["positive integer"]),
    ])]
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_matrix(case, assets, cli, tmp_path, monkeypatch):
    """Every bad input x every command that takes it: one line naming the problem, exit 2, nothing written."""
    before = listing(assets)
    argv = [a.replace("{A}", str(assets)).replace("{O}", str(tmp_path)) for a in case.argv]
    if case.patch and case.patch.endswith("+store"):
        shutil.copytree(assets / "store", tmp_path, dirs_exist_ok=True)
        if case.patch.startswith("read-only"):
            shutil.copytree(assets / "store", tmp_path / "ro")
    expected_files = listing(tmp_path)
    if case.patch and case.patch.startswith("disk-full"):
        fail_writes_under(monkeypatch, tmp_path)
    if case.patch and case.patch.startswith("read-only"):
        make_read_only(monkeypatch, tmp_path / "ro")
        expected_files = listing(tmp_path)
    try:
        res = cli(*argv, cwd=tmp_path)
    finally:
        if (tmp_path / "ro").exists():
            (tmp_path / "ro").chmod(0o755)
    if case.warns is not None:
        assert res.returncode == 0, res.stderr
        warnings = res.stderr.strip().splitlines()
        assert warnings and all(w.startswith("warning:") for w in warnings), res.stderr
        assert any(all(f in w for f in case.warns) for w in warnings), res.stderr
    else:
        assert_one_line_error(res, *case.fragments, code=case.code)
    assert listing(tmp_path) == expected_files, "a failed command left files behind"
    assert listing(assets) == before, "a command changed its input directory"


def test_matrix_covers_every_command_that_takes_a_model():
    commands = {c.id.split(":")[0] for c in CASES}
    assert set(KERAS_COMMANDS) <= commands
    assert {"export-run-onnx", "export-run-tflite", "benchmarks-compare", "benchmarks-report"} <= commands
    assert len(CASES) >= 200


def test_real_processes_report_bad_input_in_one_line(assets, run_cli, tmp_path):
    """The same contract through `python -m` (the real interpreter start-up and exit path)."""
    res = run_cli("export", "run", assets / "corrupt.tflite", "--input", assets / "x.npy")
    assert_one_line_error(res, "cannot load")
    res = run_cli("compress", "prune", assets / "lambda.h5", "-o", tmp_path / "p.keras")
    assert_one_line_error(res, "Lambda layer", "--unsafe")
    res = run_cli("benchmarks", "compare", assets / "garbage.db", assets / "store")
    assert_one_line_error(res, "not a results store")
    assert not list(tmp_path.iterdir())


def test_export_run_output_file_and_warnings(assets, cli, tmp_path):
    res = cli("export", "run", assets / "mlp.tflite", "--input", f"features={assets / 'xnan.npy'}", "-o",
              tmp_path / "y.npz")
    assert res.returncode == 0, res.stderr
    (output,) = runtime.load(assets / "mlp.tflite").output_names  # Keras numbers layers per process: read it
    assert "input 'features' has 2 non-finite" in res.stderr and f"output '{output}'" in res.stderr
    with np.load(tmp_path / "y.npz") as y:
        assert y[output].shape == (3, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ct-outputs.json", "y.npz"]  # and what wrote it
