"""The work a source model's exports share is done once (one SavedModel per batch setting, one source metric),
without changing the files, and the export's own metric is kept in the sidecar for the sweep to reuse."""
import hashlib
import json

import pytest

from export.quantize.ptq import QuantRecipe
from conftest import tiny_trained
from export import exporter
from export import tflite as tflite_export
from models.subject import Subject
from models.spec import n_samples
from models.subject import Subject as SubjectClass


def subject_of(name):
    t = tiny_trained(name)
    return Subject(name, t.load(), t.path, t.spec, t.config, t.splits(), t.seed)


@pytest.fixture
def counted(monkeypatch):
    """Counts of the expensive calls: SavedModel writes and source-metric scorings."""
    counts = {"save": 0, "score": 0}
    tf = tflite_export.tf
    real_save, real_score = tf.saved_model.save, SubjectClass.score

    def save(*a, **k):
        counts["save"] += 1
        return real_save(*a, **k)

    def score(self, model):
        counts["score"] += 1
        return real_score(self, model)

    monkeypatch.setattr(tf.saved_model, "save", save)
    monkeypatch.setattr(SubjectClass, "score", score)
    tflite_export._SAVED.clear()
    exporter._SOURCE.clear()
    return counts


def test_every_tflite_mode_converts_from_one_saved_graph_with_the_same_bytes(counted):
    subject = subject_of("cnn")
    calibration = subject.calibration(20)
    modes = ["fp32", "dynamic", "float16", "int8"]
    memo = {m: tflite_export.convert(subject.model, QuantRecipe("tflite", m), calibration if m == "int8" else None)
            for m in modes}
    assert counted["save"] == 1
    tflite_export.convert(subject.model, QuantRecipe("tflite"), batch=1)  # a static batch is another graph
    assert counted["save"] == 2
    for mode in ("fp32", "int8"):  # the old path: from_keras_model traces and saves on every call
        converter = tflite_export.tf.lite.TFLiteConverter.from_keras_model(subject.model)
        tflite_export.configure_tflite(converter, QuantRecipe("tflite", mode), calibration if mode == "int8" else None,
                                       tflite_export.input_names(subject.model))
        with tflite_export.quiet_stderr():
            direct = converter.convert()
        assert memo[mode] == direct, f"{mode}: the saved-graph conversion wrote a different file"


def test_changed_weights_are_saved_again(counted):
    subject = subject_of("mlp")
    first = tflite_export.convert(subject.model)
    subject.model.set_weights([w * 0.5 for w in subject.model.get_weights()])
    second = tflite_export.convert(subject.model)
    assert counted["save"] == 2 and first != second


def test_source_metric_is_scored_once_per_model_and_sidecar_keeps_the_exports_metric(counted, tmp_path):
    subject = subject_of("cnn")
    results = [exporter.export(subject, QuantRecipe(fmt, mode), tmp_path / f"{fmt}-{mode}.{fmt}")
               for fmt, mode in [("tflite", "fp32"), ("tflite", "int8"), ("onnx", "fp32")]]
    assert counted["score"] == 1
    assert len({r.validation.metric_source for r in results}) == 1
    n_test = n_samples(subject.splits.test.x)
    for r in results:
        meta = json.loads((tmp_path / (r.path.name + ".json")).read_text())
        v = meta["validation"]
        assert v["metric_export"] == pytest.approx(r.validation.metric_export)
        assert v["metric_name"] == "accuracy" and v["metric_n_samples"] == n_test
        assert v["file_sha256"] == hashlib.sha256(r.path.read_bytes()).hexdigest()
        expected = {"litert"} if r.path.suffix == ".tflite" else {"onnxruntime-cpu", "onnxruntime-cuda"}
        assert v["runtime"] in expected


def test_source_metric_does_not_leak_to_another_model(counted):
    subject = subject_of("mlp")
    before = exporter.source_metric(subject)
    other = subject.model.__class__.from_config(subject.model.get_config())  # untrained weights
    after = exporter.source_metric(subject.with_model(other))
    assert counted["score"] == 2 and before != after
    subject.model.set_weights([w * 0.0 for w in subject.model.get_weights()])  # same object, changed in place
    assert exporter.source_metric(subject) != before and counted["score"] == 3


def test_sweep_variant_files_record_the_recipe_they_were_made_with(tmp_path):
    """The file's chain names the pruning recipe (fine-tuning schedule) and the ONNX int8 flavour picked."""
    from benchmarks import variants
    from export.quantize.int8_choice import CHOICES

    subject = subject_of("mlp")
    pruned = variants.build(variants.by_name("pruned-tflite-int8"), subject, tmp_path)
    chain = json.loads(pruned.with_name(pruned.name + ".json").read_text())["chain"]
    assert chain[0] == "train" and chain[-1] == "tflite(int8)", chain
    assert chain[1].startswith("prune(0.5; fine-tuning: ") and "sparsity schedule ends at step" in chain[1], chain
    assert "achieved: " in chain[1]
    onnx_int8 = variants.build(variants.by_name("onnx-int8"), subject, tmp_path)
    chain = json.loads(onnx_int8.with_name(onnx_int8.name + ".json").read_text())["chain"]
    flavour = chain[-1].removeprefix("onnx(int8, ").removesuffix(")")
    assert chain[-1].startswith("onnx(int8, ") and flavour in CHOICES, chain
