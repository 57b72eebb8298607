"""The user's files and folders: nothing the toolkit did not write is replaced or deleted, an output is never an
input, a name the user chose never becomes a path outside the output, and a command rerun onto its own earlier
output still works (models.artifacts: claim_output_file, claim_output_dir, safe_name)."""
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_trained
from hostile import assert_one_line_error

from models.artifacts import MARKER, claim_output_dir, safe_name
from models.cli import run
from models.errors import UserError


def snapshot(root: Path) -> dict:
    """Every file under ``root`` with its sha256 (the marker aside): the user's files, byte for byte."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != MARKER}


@pytest.fixture
def mine(tmp_path):
    """The user's own model file (the tiny zoo mlp, copied)."""
    path = tmp_path / "mine.keras"
    shutil.copy(tiny_trained("mlp").path, path)
    return path


# --------------------------------------------------------------------------------------- an output is an input

@pytest.mark.parametrize("how", ["same", "spelled-otherwise", "symlink", "hardlink"])
def test_prune_refuses_an_output_that_is_its_input(cli, mine, tmp_path, how):
    out = {"same": mine, "spelled-otherwise": tmp_path / "." / "mine.keras"}.get(how, tmp_path / "link.keras")
    if how == "symlink":
        out.symlink_to(mine)
    elif how == "hardlink":
        os.link(mine, out)
    before = snapshot(tmp_path)
    res = cli("compress", "prune", mine, "--epochs", "0", "-o", out)
    assert_one_line_error(res, "is the input", "choose another output path")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("argv", [
    ["export", "onnx", "{M}", "-o", "{M}"],
    ["compress", "quantize", "{M}", "--format", "tflite", "--mode", "dynamic", "-o", "{M}"],
    ["compress", "cluster", "{M}", "--epochs", "0", "-o", "{M}"],
    ["compress", "channel-prune", "{M}", "--epochs", "0", "-o", "{M}"],
    ["compress", "qat", "{M}", "--epochs", "0", "-o", "{M}"],
])
def test_every_model_command_refuses_its_input_as_output(cli, mine, tmp_path, argv):
    before = snapshot(tmp_path)
    res = cli(*[a.replace("{M}", str(mine)) for a in argv])
    assert_one_line_error(res, "is the input")
    assert snapshot(tmp_path) == before


def test_an_output_inside_an_input_savedmodel_folder_is_refused(cli, tmp_path):
    saved = tmp_path / "saved"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"the user's graph")
    before = snapshot(tmp_path)
    res = cli("export", "onnx", saved, "-o", saved / "m.onnx")
    assert_one_line_error(res, "inside the input folder")
    res = cli("export", "onnx", saved, "-o", saved / "saved_model.pb")
    assert_one_line_error(res, "inside the input folder")
    assert snapshot(tmp_path) == before


def test_the_data_is_an_input_too(cli, tmp_path):
    data = tmp_path / "mine.onnx"
    data.write_bytes(b"the user's data")
    res = cli("export", "onnx", "mlp", "--tiny", "--data", data, "-o", data)
    assert_one_line_error(res, "is the input")
    assert data.read_bytes() == b"the user's data"


# ---------------------------------------------------------------------------- a file the toolkit did not write

@pytest.mark.parametrize("argv, names", [
    (["export", "onnx", "mlp", "--tiny", "-o", "{O}/out.onnx"], ["out.onnx"]),
    (["export", "onnx", "mlp", "--tiny", "-o", "{O}/out.onnx"], ["out.onnx.json"]),  # the sidecar is the user's
    (["export", "tflite", "mlp", "--tiny", "-o", "{O}/out.tflite"], ["out.tflite"]),
    (["export", "onnx", "mlp", "--tiny"], ["mlp.onnx"]),  # the default name, in the working folder
    (["compress", "prune", "mlp", "--tiny", "--epochs", "0", "-o", "{O}/out.keras"], ["out.keras"]),
    (["compress", "prune", "mlp", "--tiny", "--epochs", "0"], ["mlp-pruned50.keras"]),
    (["compress", "cluster", "mlp", "--tiny", "--epochs", "0", "-o", "{O}/out.keras"], ["out.keras"]),
    (["compress", "channel-prune", "mlp", "--tiny", "--epochs", "0", "-o", "{O}/out.keras"], ["out.keras"]),
    (["compress", "qat", "mlp", "--tiny", "--epochs", "0", "-o", "{O}/out.tflite"], ["out.tflite"]),
    (["compress", "quantize", "mlp", "--tiny", "--format", "onnx", "--mode", "dynamic", "-o", "{O}/out.onnx"],
     ["out.onnx"]),
    (["export", "run", "{O}/m.tflite", "--input", "{O}/x.npy", "-o", "{O}/out.npz"], ["out.npz"]),
])
def test_an_existing_file_of_the_users_is_never_replaced(cli, tmp_path, argv, names):
    for name in names:
        (tmp_path / name).write_bytes(b"the user's own " + name.encode())
    before = snapshot(tmp_path)
    res = cli(*[a.replace("{O}", str(tmp_path)) for a in argv], cwd=tmp_path)
    assert_one_line_error(res, "exists and was not written by this toolkit", "choose another output name")
    assert snapshot(tmp_path) == before


def test_benchmarks_report_keeps_the_users_report(cli, tmp_path):
    from benchmarks.store import Store

    Store(tmp_path / "results.db")
    (tmp_path / "report.md").write_text("my notes on the sweep")
    before = snapshot(tmp_path)
    res = cli("benchmarks", "report", "--out", tmp_path)
    assert_one_line_error(res, "report.md exists and was not written by this toolkit")
    assert snapshot(tmp_path) == before


def test_a_study_does_not_append_to_a_file_of_the_users(tmp_path, capsys):
    from benchmarks.studies import prune_check

    notes = tmp_path / "notes.jsonl"
    notes.write_text("my own line\n")
    assert run(prune_check.main, ["--tiny", "--models", "mlp", "--out", str(notes)]) == 2
    assert "was not written by this toolkit" in capsys.readouterr().err
    assert notes.read_text() == "my own line\n"


# ------------------------------------------------------------------------------------- a folder of the user's

def _users_folder(root: Path) -> Path:
    """The folder of the issue: the user's candidates/ and report.md."""
    (root / "candidates").mkdir(parents=True)
    (root / "candidates" / "keep.txt").write_text("the user's candidates")
    (root / "report.md").write_text("the user's report")
    return root


def test_auto_refuses_a_non_empty_folder_of_the_users(cli, tmp_path):
    out = _users_folder(tmp_path / "mine")
    before = snapshot(out)
    res = cli("compress", "auto", "mlp", "--tiny", "--max-drop", "0.05", "--runtime", "litert", "-o", out)
    assert_one_line_error(res, "is not empty", "choose a new or empty folder",
                          "or pass the folder of an earlier run of this command")
    assert snapshot(out) == before and not (out / MARKER).exists()


def test_benchmarks_run_refuses_a_non_empty_folder_of_the_users(cli, tmp_path):
    out = _users_folder(tmp_path / "mine")
    before = snapshot(out)
    res = cli("benchmarks", "run", "--models", "mlp", "--tiny", "--quick", "--out", out)
    assert_one_line_error(res, "is not empty", "choose a new or empty folder")
    assert snapshot(out) == before and not (out / "results.db").exists()


def test_profile_refuses_a_non_empty_folder_of_the_users(cli, tmp_path):
    out = _users_folder(tmp_path / "mine")
    before = snapshot(out)
    res = cli("benchmarks", "profile", "mlp", "--tiny", "--variant", "onnx-fp32", "--out", out)
    assert_one_line_error(res, "is not empty", "choose a new or empty folder")
    assert snapshot(out) == before and not (out / "profiles").exists()


def test_auto_zoo_refuses_a_non_empty_folder_of_the_users(tmp_path, capsys):
    from compress.auto import zoo

    out = _users_folder(tmp_path / "mine")
    before = snapshot(out)
    assert run(zoo.main, ["--models", "mlp", "--tiny", "-o", str(out)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert snapshot(out) == before


def test_a_folder_of_another_command_is_refused(tmp_path):
    claim_output_dir(tmp_path / "a", ["auto.json"], "compress auto")
    (tmp_path / "a" / "auto.json").write_text("{}")
    with pytest.raises(UserError, match="holds the output of `compress auto`"):
        claim_output_dir(tmp_path / "a", ["results.db"], "benchmarks run")
    (tmp_path / "b").write_text("a file")
    with pytest.raises(UserError, match="not a directory"):
        claim_output_dir(tmp_path / "b", ["results.db"], "benchmarks run")


# ------------------------------------------------------------------------------- rerunning onto its own output

def test_auto_reruns_onto_its_folder_and_leaves_the_users_files_there_alone(cli, tmp_path):
    out = tmp_path / "auto"
    argv = ["compress", "auto", "mlp", "--tiny", "--max-drop", "0.05", "--time-budget", "0", "--runtime", "litert",
            "-o", out]
    res = cli(*argv)
    assert res.returncode == 0, res.stderr
    # the user adds their own things to the folder, among them a candidates/ folder (auto's old scratch name)
    (out / "candidates").mkdir()
    (out / "candidates" / "keep.txt").write_text("the user's candidates")
    (out / "notes.md").write_text("the user's notes")
    res = cli(*argv)
    assert res.returncode == 0, res.stderr
    assert (out / "candidates" / "keep.txt").read_text() == "the user's candidates"
    assert (out / "notes.md").read_text() == "the user's notes"
    assert (out / "best-litert.tflite").exists() and (out / "report.md").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != MARKER]  # no scratch left


def test_export_and_prune_rerun_onto_their_own_file(cli, tmp_path):
    """The same command twice onto its own output works (as before); a file the user changed since is theirs and
    refused (new)."""
    for argv, out in [(["export", "onnx", "mlp", "--tiny"], tmp_path / "m.onnx"),
                      (["compress", "prune", "mlp", "--tiny", "--epochs", "0", "--max-drop", "1"], tmp_path / "p.keras")]:
        for _ in range(2):
            res = cli(*argv, "-o", out)
            assert res.returncode == 0, res.stderr
        out.write_bytes(out.read_bytes() + b"the user's edit")
        before = snapshot(tmp_path)
        res = cli(*argv, "-o", out)
        assert_one_line_error(res, "was not written by this toolkit (or was changed since)")
        assert snapshot(tmp_path) == before


def test_export_run_and_benchmarks_report_rerun_onto_their_own_files(cli, tmp_path):
    """Guard (passes before the change too)."""
    from benchmarks.store import Store

    res = cli("export", "tflite", "mlp", "--tiny", "-o", tmp_path / "m.tflite")
    assert res.returncode == 0, res.stderr
    np.save(tmp_path / "x.npy", np.zeros((2, 4), np.float32))
    for _ in range(2):
        res = cli("export", "run", tmp_path / "m.tflite", "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npz")
        assert res.returncode == 0, res.stderr
    Store(tmp_path / "res" / "results.db")
    for _ in range(2):
        res = cli("benchmarks", "report", "--out", tmp_path / "res")
        assert res.returncode == 0, res.stderr


# --------------------------------------------------------------------------------------- names become paths

def test_a_variant_name_never_leaves_the_profiles_folder(cli, tmp_path):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    res = cli("export", "onnx", "mlp", "--tiny", "-o", work / "m.onnx")
    assert res.returncode == 0, res.stderr
    before = snapshot(tmp_path)
    res = cli("benchmarks", "profile", work / "m.onnx", "--variant", "x/../../..", "--runs", "2", "--out", work / "res")
    assert_one_line_error(res, "--variant 'x/../../..'", "cannot be part of a file name")
    assert snapshot(tmp_path) == before


def test_profile_reruns_onto_its_own_file(cli, tmp_path):
    """Guard (passes before the change too)."""
    res = cli("export", "onnx", "mlp", "--tiny", "-o", tmp_path / "m.onnx")
    assert res.returncode == 0, res.stderr
    for _ in range(2):
        res = cli("benchmarks", "profile", tmp_path / "m.onnx", "--variant", "mine-v2", "--runs", "2", "--out",
                  tmp_path / "res")
        assert res.returncode == 0, res.stderr
    assert (tmp_path / "res" / "profiles" / "m--mine-v2--onnxruntime-cpu.json").exists()
    claim_output_dir(tmp_path / "res", ["results.db"], "benchmarks run", take=False)  # a sweep may follow there


@pytest.mark.parametrize("name", ["x/../../..", "..", ".", ".hidden", "a/b", "a\\b", "a\x00b", "", " x", "x\n",
                                  "a..b", "x" * 300])
def test_safe_name_refuses_what_is_not_one_plain_path_component(name):
    with pytest.raises(UserError, match="cannot be part of a file name"):
        safe_name(name, "--variant")


@pytest.mark.parametrize("name", ["onnx-int8", "mine_v2", "mlp--tflite-int8--litert.json", "résumé"])
def test_safe_name_keeps_plain_names(name):
    assert safe_name(name) == name
