"""Measurement workers: one per (format, threads), and none left holding a big model's memory."""
import sys

import pytest


def test_runtimes_of_one_format_share_a_worker_process():
    from benchmarks.executors.local import worker_group

    assert worker_group("keras") == worker_group("keras-predict") == worker_group("tf-gpu")
    assert worker_group("litert") == worker_group("litert-noxnnpack") != worker_group("onnxruntime-cpu")


@pytest.mark.parametrize("rss_after_mb, replaced", [(50, False), (5000, True)])
def test_a_worker_left_holding_too_much_memory_is_replaced(monkeypatch, tmp_path, rss_after_mb, replaced):
    from benchmarks.executors import local as executor

    child = tmp_path / "child.py"
    child.write_text("import json, os, sys\n"
                     "for line in sys.stdin:\n"
                     f"    print('CT-RESULT ' + json.dumps({{'pid': os.getpid(), 'rss_after_mb': {rss_after_mb}}}),"
                     " flush=True)\n")
    monkeypatch.setattr(executor, "child_command", lambda: [sys.executable, str(child)])
    workers = executor.Workers(timeout=30)
    try:
        pids = [workers.request({"runtime": "litert", "threads": 1})["pid"] for _ in range(2)]
    finally:
        workers.close()
    assert (pids[0] != pids[1]) == replaced


def test_idle_workers_holding_much_memory_make_way_for_a_build(monkeypatch, tmp_path):
    from benchmarks.executors import local as executor

    child = tmp_path / "child.py"  # a worker that keeps 200 MB after answering
    child.write_text("import json, sys\nheld = bytearray(200 << 20)\nfor i in range(0, len(held), 4096): held[i] = 1\n"
                     "for line in sys.stdin:\n    print('CT-RESULT {}', flush=True)\n")
    monkeypatch.setattr(executor, "child_command", lambda: [sys.executable, str(child)])
    workers = executor.Workers(timeout=30)
    try:
        workers.request({"runtime": "litert", "threads": 1})
        assert workers.retire_above(1000) == []
        assert workers.retire_above(150) == [("tflite", 1)]
        assert workers.retire_above(150) == []  # gone; the next request starts a fresh one
    finally:
        workers.close()
