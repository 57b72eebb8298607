"""Measurements spread over a Ray cluster (``python -m benchmarks run --executor ray [--address ADDR] [--on LABEL]``).

Fair timing: Ray isolates neither cores nor memory, so the toolkit places its own work: one measuring actor per
node (hard node affinity), each running one measurement at a time in the same worker processes as the local
executor (benchmarks.child, which pins itself to its cores and sets the runtime's thread count). Artifacts and
inputs travel through the object store, put once per content hash, so a remote node needs no shared filesystem.
A node that dies takes its actor with it: the driver resubmits that actor's job to another node, and since only
the driver stores rows, nothing is lost or stored twice.

Security: a Ray cluster runs any code it is sent. A cluster started here (no address) listens on 127.0.0.1 only,
without dashboard; a remote cluster (``--address`` / ``RAY_ADDRESS``) relies on its own token authentication.
"""
from __future__ import annotations

import os
import tempfile
from collections import deque
from pathlib import Path

from models.errors import UserError

from benchmarks import host
from benchmarks.executors.local import Workers
from benchmarks.tasks import Job, pack, unpack

INSTALL_HINT = "--executor ray needs Ray, which is not installed: pip install '.[ray]'"
WAIT_S = 60  # between checks that the in-flight measurements' nodes are still alive


def import_ray(local: bool):
    """Ray, imported for a cluster started here (``local``: loopback only) or joined at an address."""
    if local:  # read by Ray at import: with it, every node and the driver use 127.0.0.1, not the network address
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray  # optional dependency (the ray extra)
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return ray


def connect(address: str | None = None):
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), or start a private one on loopback; reuse a
    connection the caller already made (tests)."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    ray = import_ray(local=address is None)
    if ray.is_initialized():
        return ray
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        else:
            # address="local": a private Ray of our own, never a cluster already running here (plain ray.init()
            # joins the last one started on this machine, and one that has since stopped is an error)
            ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")
    except ConnectionError as e:
        raise UserError(f"cannot connect to the Ray cluster at {address}: {str(e).splitlines()[0][:200]}") from None
    return ray


def matches(node: dict, label: str | None) -> bool:
    """``--on LABEL``: a custom resource named LABEL (``ray start --resources '{"LABEL": 1}'``), a node label
    LABEL, or a node label ``key=value``."""
    if label is None:
        return True
    labels = node.get("Labels") or {}
    key, _, value = label.partition("=")
    return label in (node.get("Resources") or {}) or (labels.get(key) == value if value else key in labels)


class NodeMeasurer:
    """Runs on one node (as a Ray actor): writes shipped bytes to a local directory once per content hash,
    then measures in benchmarks.child worker processes, one request at a time."""

    def __init__(self):
        self.workers = Workers()
        self.directory = Path(tempfile.mkdtemp(prefix="ct-ray-"))

    def measure(self, request: dict, artifact: bytes, artifact_hash: str, artifact_name: str, is_dir: bool,
                inputs: bytes, inputs_hash: str) -> dict:
        path = unpack(artifact, self.directory / artifact_hash, artifact_name, is_dir)
        inputs_path = unpack(inputs, self.directory / inputs_hash, "inputs.npz", False)
        answer = self.workers.request({**request, "path": str(path), "inputs": str(inputs_path)})
        answer["host"] = host.host()
        return answer

    def close(self) -> None:
        self.workers.close()


class RayExecutor:
    """One measuring actor per (matching) node; jobs go to whichever actor is free, one at a time each."""

    def __init__(self, address: str | None = None, on: str | None = None):
        self.ray = connect(address)
        self.on = on
        self.dead: set[str] = set()  # node ids whose actor died
        self.resubmitted: list[str] = []  # task keys sent again after their node died (tests read it)
        self.last_death = ""
        self.actors: dict[str, object] = {}
        self._objects: dict[str, object] = {}  # content hash -> ObjectRef
        self._start_actors()

    def _start_actors(self) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # optional dependency (the ray extra)

        nodes = [n for n in self.ray.nodes() if n.get("Alive") and n["NodeID"] not in self.dead]
        chosen = [n for n in nodes if matches(n, self.on)]
        if not chosen:
            have = "; ".join(f"{n['NodeManagerAddress']}: resources {sorted(n.get('Resources') or {})}, labels "
                             f"{n.get('Labels') or {}}" for n in nodes) or "no live node"
            raise UserError("no Ray node to measure on" + (f" with resource or label {self.on!r}" if self.on else "")
                            + f" ({have})" + (f"; the last one died: {self.last_death}" if self.last_death else ""))
        remote = self.ray.remote(num_cpus=0, max_restarts=0, max_concurrency=1)(NodeMeasurer)
        for n in chosen:
            if n["NodeID"] not in self.actors:
                strategy = NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
                self.actors[n["NodeID"]] = remote.options(scheduling_strategy=strategy).remote()

    def _object(self, digest: str, make) -> object:
        if digest not in self._objects:
            self._objects[digest] = self.ray.put(make())
        return self._objects[digest]

    def run(self, jobs):
        from ray.exceptions import RayActorError  # optional dependency (the ray extra)

        queue, inflight = deque(jobs), {}
        idle = list(self.actors)
        try:
            while queue or inflight:
                while queue and idle:
                    node = idle.pop(0)
                    job = queue.popleft()
                    inflight[self._submit(node, job)] = (node, job)
                if not inflight:  # every node we measured on died: look again (new or surviving nodes)
                    self._start_actors()
                    idle = list(self.actors)
                    continue
                ready, _ = self.ray.wait(list(inflight), num_returns=1, timeout=WAIT_S)
                for ref in ready:
                    node, job = inflight.pop(ref)
                    try:
                        answer = self.ray.get(ref)
                    except RayActorError as e:  # the node (or its actor) died: the job goes to another node
                        self.last_death = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                        self.dead.add(node)
                        self.actors.pop(node, None)
                        idle = [n for n in idle if n != node]
                        self.resubmitted.append(job.task.key)
                        queue.appendleft(job)
                        continue
                    idle.append(node)
                    yield job, answer
        finally:
            self._objects.clear()  # a model's artifacts leave the object store once its jobs are done

    def _submit(self, node: str, job: Job):
        task = job.task
        artifact = self._object(task.artifact, lambda: pack(job.artifact_path))
        inputs = self._object(task.inputs, lambda: job.inputs_path.read_bytes())
        request = task.request(Path(task.artifact_name), Path("inputs.npz"))
        return self.actors[node].measure.remote(request, artifact, task.artifact, task.artifact_name,
                                                task.artifact_is_dir, inputs, task.inputs)

    def before_build(self) -> None:
        """Builds run on the driver's machine; the measuring actors are elsewhere or share nothing with them."""

    def kill_all(self) -> None:
        for actor in self.actors.values():
            self.ray.kill(actor)
        self.actors.clear()

    def close(self) -> None:
        refs = [actor.close.remote() for actor in self.actors.values()]
        try:
            self.ray.get(refs, timeout=30)
        except Exception:  # a node already gone: nothing to close there
            pass
        self.kill_all()
