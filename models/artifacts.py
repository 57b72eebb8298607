"""Where artifacts live and how they are written: one cache directory, atomic writes, content hashes."""
from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

from models.errors import UserError

CACHE_ENV = "CT_CACHE_DIR"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The artifact cache: ``--cache-dir``, else ``$CT_CACHE_DIR``, else ``./.cache``."""
    path = Path(override or os.environ.get(CACHE_ENV) or Path.cwd() / ".cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


# Errors that mean "this location cannot take the file", as opposed to a bug in the code writing it.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO,
                errno.ENOTDIR, errno.ENAMETOOLONG}
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:4]
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{4})-(?P<pid>\d+)-[^.]+\.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temps(directory: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove temporary files that a killed writer (SIGKILL, power loss) left in ``directory``.

    Only this module's temporaries (``.<name>.<host>-<pid>-<random>.tmp...``) of this host whose process
    is gone are touched; ``name`` limits it to the temporaries of one final file name.
    """
    removed = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry.name)
        if not m or m["host"] != _HOST or (name is not None and m["name"] != name) or _pid_alive(int(m["pid"])):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


def _remove(path: str | os.PathLike) -> None:
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _cannot_write(path, e: OSError) -> UserError:
    return UserError(f"cannot write {path}: {e.strerror or e}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    A failure (including Ctrl-C or a full disk) removes the temporary file, so no half-written
    artifact is ever left under the final name; a write that the location refuses (disk full,
    read-only, permission) becomes a one-line UserError. Temporaries of killed writers are removed
    the next time the same file is written.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise UserError(f"output directory is not writable: {parent}")
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a directory")
    remove_stale_temps(parent, path.name)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}-{os.getpid()}-",
                                   suffix=".tmp" + (suffix or path.suffix or ""), dir=parent)
    except OSError as e:
        raise _cannot_write(path, e) from None
    os.close(fd)
    os.unlink(tmp)  # writers such as Keras want to create the file themselves
    try:
        yield Path(tmp)
        if not os.path.exists(tmp):
            raise UserError(f"cannot write {path}: the writer produced no file")
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        if e.errno in WRITE_ERRNOS:
            raise _cannot_write(path, e) from None
        raise
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename: all of it or nothing."""
    return atomic_write_many({path: data})[0]


def atomic_write_many(files: dict) -> list[Path]:
    """Write several files that belong together (a model and its sidecar): every one of them, or none.

    All temporaries are written first; only then are they renamed into place, and a failure before
    that leaves none of the final names touched.
    """
    stack = contextlib.ExitStack()
    temps = []
    try:
        with stack:
            for path, data in files.items():
                tmp = stack.enter_context(atomic_path(path))
                payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                try:
                    _write_all(fd, payload)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                temps.append(Path(path))
    except OSError as e:
        raise _cannot_write(next(iter(files)), e) from None
    return temps


def write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def files_of(path: str | os.PathLike) -> list[tuple[str, Path]]:
    """(relative name, path) of every file a model or data path consists of, in sorted relative-path order: a file
    is itself (named ""), a directory (a SavedModel, an image folder) is every file under it."""
    path = Path(path)
    if not path.is_dir():
        return [("", path)]
    return sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file())


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes; of a directory, every file's relative name and bytes in sorted order (a file
    renamed or moved to another class folder is other content)."""
    h = hashlib.sha256()
    path = Path(path)
    for name, p in files_of(path):
        if path.is_dir():
            h.update(f"{name}\0{p.stat().st_size}\0".encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def stamp(path: str | os.PathLike) -> tuple:
    """What says a file or directory may have changed, cheaply: every file's name, size and mtime (memo keys; a
    directory's own mtime misses a file rewritten inside it)."""
    stats = [(name, p.stat()) for name, p in files_of(path)]
    return (str(Path(path).resolve()),) + tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats)


def disk_size(path: str | os.PathLike) -> int:
    """Bytes of a file, or of every file of a directory."""
    return sum(p.stat().st_size for _, p in files_of(path))


def key_of(obj) -> str:
    """Stable short hash of a JSON-able object (cache keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


GZIP_LEVEL = 6  # gzip's own default; -9 took 41 s on a 100 MB model for a 2% smaller figure


def sizes_of(data: bytes) -> tuple[int, int]:
    """(raw bytes, gzip bytes): gzip shows what sparsity and clustering buy on the wire."""
    return len(data), len(gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0))


_SIZES: dict[tuple, tuple[int, int]] = {}


def sizes(path: str | os.PathLike) -> tuple[int, int]:
    """:func:`sizes_of` a file (of a directory, the sum over its files), remembered per :func:`stamp`: a sweep asks
    once per runtime."""
    key = stamp(path)
    if key not in _SIZES:
        each = [sizes_of(p.read_bytes()) for _, p in files_of(path)]
        _SIZES[key] = (sum(raw for raw, _ in each), sum(gz for _, gz in each))
    return _SIZES[key]
