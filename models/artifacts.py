"""Where artifacts live and how they are written: one cache directory, atomic writes, content hashes."""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import tempfile
from pathlib import Path

from .errors import UserError

CACHE_ENV = "CT_CACHE_DIR"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The artifact cache: ``--cache-dir``, else ``$CT_CACHE_DIR``, else ``./.cache``."""
    path = Path(override or os.environ.get(CACHE_ENV) or Path.cwd() / ".cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    A failure (including Ctrl-C or a full disk) removes the temporary file, so no
    half-written artifact is ever left under the final name.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise UserError(f"output directory is not writable: {parent}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp", dir=parent)
    os.close(fd)
    os.unlink(tmp)  # writers such as Keras want to create the file themselves
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        with atomic_path(path) as tmp:
            with open(tmp, mode) as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    return Path(path)


def write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def key_of(obj) -> str:
    """Stable short hash of a JSON-able object (cache keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def sizes(path: str | os.PathLike) -> tuple[int, int]:
    """(raw bytes, gzip -9 bytes) of a file: gzip shows what sparsity and clustering buy on the wire."""
    data = Path(path).read_bytes()
    return len(data), len(gzip.compress(data, compresslevel=9, mtime=0))
