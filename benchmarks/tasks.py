"""A timed measurement as data: what decides its result (hashed), and where its bytes are on the driver.

The spec names the artifact and the inputs by content hash, so any node can run it: the local executor
hands the worker the driver's paths, the Ray executor ships the bytes through the object store once per
hash (see benchmarks.executors.ray_cluster). Row keys stay the sweep's own (benchmarks.sweep), so resuming is
"keys not yet stored" whichever executor measured them.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from models.artifacts import atomic_path, key_of, sha256_file, stamp

from benchmarks.runner import Method

HARNESS_VERSION = 2  # bump when benchmarks.child measures differently (2: pinned to its cores)


@dataclass(frozen=True)
class MeasureTask:
    """Everything that decides a measurement's figures; ``key`` hashes it."""

    artifact: str  # sha256 of the artifact (file, or every file of a directory)
    artifact_name: str  # its file name: runtimes pick their loader by the suffix
    artifact_is_dir: bool  # a SavedModel directory (shipped as a tar)
    inputs: str  # sha256 of the inputs .npz (the first max(batches) test inputs)
    variant: str
    runtime: str
    provider: str | None
    batches: tuple[int, ...]
    threads: int
    method: Method
    selfcheck: bool
    harness: int = HARNESS_VERSION

    @property
    def key(self) -> str:
        return key_of(dataclasses.asdict(self))

    def request(self, artifact_path: Path, inputs_path: Path) -> dict:
        """The JSON request benchmarks.child answers."""
        return {"runtime": self.runtime, "path": str(artifact_path), "inputs": str(inputs_path),
                "batches": list(self.batches), "threads": self.threads, "method": dataclasses.asdict(self.method),
                "selfcheck": self.selfcheck}


@dataclass(frozen=True)
class Job:
    """A task, the driver-side files it needs, and what the sweep needs to turn its answer into rows."""

    task: MeasureTask
    artifact_path: Path
    inputs_path: Path
    context: object = dataclasses.field(default=None, compare=False, hash=False)


@functools.lru_cache(maxsize=256)
def _hash(stamped: tuple) -> str:
    return sha256_file(stamped[0])


def content_hash(path: Path) -> str:
    """sha256 of a file or directory, remembered per stamp (every file's name, size and mtime): a sweep asks once
    per runtime, and a SavedModel rewritten inside the same directory is hashed again."""
    return _hash(stamp(path))


def pack(path: Path) -> bytes:
    """The bytes that travel to a remote node: a file as it is, a directory (SavedModel) as a tar."""
    path = Path(path)
    if not path.is_dir():
        return path.read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(path, arcname=path.name)
    return buf.getvalue()


def unpack(data: bytes, directory: Path, name: str, is_dir: bool) -> Path:
    """Write shipped bytes as ``directory/name`` (atomically; reused when already there); a packed directory
    is extracted. ``directory`` is per content hash, so two artifacts never share a path."""
    target = Path(directory) / name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if not is_dir:
        with atomic_path(target) as tmp:
            Path(tmp).write_bytes(data)
        return target
    staging = target.parent / f".unpack-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(staging, filter="data")
    next(staging.iterdir()).rename(target)
    staging.rmdir()
    return target
