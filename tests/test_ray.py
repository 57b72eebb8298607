"""The Ray executor on a real local Ray: same rows as the local executor, one measuring actor per node, `--on`,
and a node removed mid-sweep (its job measured elsewhere, nothing lost or stored twice). Ray stays on 127.0.0.1."""
import os
import sqlite3
import sys

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read by Ray at import: loopback only
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
import ray  # noqa: E402  (the test extra installs it)

from benchmarks.executors.local import LocalExecutor  # noqa: E402
from benchmarks.executors.ray_cluster import RayExecutor  # noqa: E402
from benchmarks.runner import Method  # noqa: E402
from benchmarks.store import Store  # noqa: E402
from benchmarks.sweep import Sweep, SweepConfig  # noqa: E402
from models.errors import UserError  # noqa: E402

# one Ray at a time on this machine: under xdist (make test) every Ray test runs on the same worker
pytestmark = pytest.mark.xdist_group("ray")


def _cfg(tmp_path):
    return SweepConfig(models=["mlp"], variants=["tflite-fp32", "onnx-fp32"], runtimes=["litert", "onnxruntime-cpu"],
                       batches=[1], threads=[1, 2], method=Method(warmup_s=0.02, warmup_runs=2, min_s=0.05,
                                                                  min_runs=5, max_s=2.0), tiny=True, out=tmp_path)


def _rows(store: Store) -> dict:
    return {r["key"]: r for r in store.rows()}


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory):
    """The reference: the same tiny sweep on the local executor."""
    tmp = tmp_path_factory.mktemp("local")
    store = Store(tmp / "results.db")
    Sweep(_cfg(tmp), store, executor=LocalExecutor()).run()
    rows = _rows(store)
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows.values()), rows
    return rows


def _same_rows(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)  # the same row keys
    for key, row in got.items():
        ref = expected[key]
        assert (row["status"], row["metric"], row["size"], row["provider"]) == \
               (ref["status"], ref["metric"], ref["size"], ref["provider"])
        assert row["p50_ms"] > 0 and row["runs"] >= 5 and row["host"]


def _nodes_ips():
    return {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}


def test_ray_sweep_gives_the_local_rows_and_listens_on_loopback(local_rows, tmp_path):
    # address="local": a new Ray, never the last cluster started here (the file Ray leaves names it even after
    # that cluster shut down, e.g. the two-node test run before this one on the same xdist worker)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert _nodes_ips() == {"127.0.0.1"}
        with pytest.raises(UserError, match="no Ray node to measure on with resource or label 'arm-board'"):
            RayExecutor(on="arm-board")
        store = Store(tmp_path / "results.db")
        executor = RayExecutor()
        assert len(executor.actors) == 1  # one measuring actor per node

        def interrupt(row):  # Ctrl-C right after the first stored row
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            Sweep(_cfg(tmp_path), store, executor=executor, on_row=interrupt).run()
        assert len(store.rows()) == 1 and not executor.actors  # the measuring actor was stopped
        assert Sweep(_cfg(tmp_path), store, executor=RayExecutor()).run() == 3  # resume: keys not yet stored
        _same_rows(_rows(store), local_rows)
        assert Sweep(_cfg(tmp_path), store, executor=RayExecutor()).run() == 0
    finally:
        ray.shutdown()


def test_a_node_removed_mid_sweep_costs_nothing(local_rows, tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1, resources={"edge": 1})
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        cluster.wait_for_nodes()
        assert _nodes_ips() == {"127.0.0.1"} and len(ray.nodes()) == 2
        edge = RayExecutor(on="edge")
        assert list(edge.actors) == [worker.node_id]  # --on: only the node with that resource
        edge.close()

        store = Store(tmp_path / "results.db")
        executor = RayExecutor()
        assert len(executor.actors) == 2
        removed = []

        def remove_worker_after_first_row(row):
            if not removed:
                cluster.remove_node(worker)
                removed.append(row["key"])

        assert Sweep(_cfg(tmp_path), store, executor=executor, on_row=remove_worker_after_first_row).run() == 4
        assert removed and executor.resubmitted  # the dead node's job was measured elsewhere
        assert worker.node_id in executor.dead and list(executor.actors) != [worker.node_id]
        _same_rows(_rows(store), local_rows)
        with sqlite3.connect(store.path) as con:
            assert con.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM results").fetchone() == (4, 4)
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_ray_executor_without_ray_is_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    res = cli("benchmarks", "run", "--models", "mlp", "--tiny", "--executor", "ray", "--out", tmp_path)
    assert res.returncode == 2 and "pip install '.[ray]'" in res.stderr and len(res.stderr.splitlines()) == 1
    assert not (tmp_path / "results.db").exists()
    res = cli("benchmarks", "run", "--models", "mlp", "--tiny", "--on", "gpu", "--out", tmp_path)
    assert res.returncode == 2 and "--on needs --executor ray" in res.stderr
