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

try:
    import fcntl
except ImportError:  # not POSIX: a folder's marker is then written without the lock
    fcntl = None

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


# ------------------------------------------------------------------------------------ the user's files and folders
#
# Nothing the toolkit did not write is ever replaced or deleted. Each folder the toolkit writes an output into
# keeps a small marker, MARKER, that lists what it wrote there: a file written by a command that takes one output
# file is listed with its sha256 (so a file the user changed or put there since is theirs again), and a folder a
# command made its output folder (`compress auto -o DIR`, `benchmarks run --out DIR`) is marked as that command's,
# with the names the command writes in it. An output that is an input, a non-empty folder without the marker, and
# an existing file the marker does not list are refused in one line that says what to do; rerunning a command onto
# its own earlier output works. The marker lives beside the outputs (not in the cache) so that it holds whatever
# the cache folder or the working directory of the next run.

MARKER = ".ct-outputs.json"
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]")


def safe_name(text, what: str = "name") -> str:
    """``text`` as one path component, or a one-line UserError: a name the user chose (a variant, a model name)
    never becomes a path outside the folder it is written into."""
    text = str(text)
    if (not text or _UNSAFE_CHARS.search(text) or ".." in text or text.startswith(".") or text != text.strip()
            or len(text.encode("utf-8", "replace")) > 200):
        raise UserError(f"{what} {text!r} cannot be part of a file name: use letters, digits, '-', '_' and '.' "
                        "(no '/', '\\', '..', control characters or leading '.')")
    return text


def _stat(path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except (OSError, ValueError):
        return None


def same_file(a, b) -> bool:
    """Are ``a`` and ``b`` the same file or folder (also through a symlink or a hard link)?"""
    sa, sb = _stat(a), _stat(b)
    return sa is not None and sb is not None and (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except (ValueError, OSError):
        return False


def _refuse_inputs(path: Path, inputs, holds: bool = True) -> None:
    """An output must not be an input (the same file by any name), inside an input folder (a SavedModel), or
    (``holds``) a folder holding an input."""
    for given in inputs or ():
        if not given or not os.path.exists(given):
            continue
        if same_file(path, given):
            raise UserError(f"output {path} is the input {given}: choose another output path")
        if os.path.isdir(given) and _inside(path, Path(given)):
            raise UserError(f"output {path} is inside the input folder {given}: choose a path outside it")
        if holds and os.path.isdir(path) and _inside(Path(given), path):
            raise UserError(f"output {path} holds the input {given}: choose another output path")


def _read_marker(folder: Path) -> dict:
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return {}
    return data


@contextlib.contextmanager
def _marker_lock(folder: Path):
    """Serialise read-modify-write of a folder's marker between processes (flock on the folder itself)."""
    fd = None
    try:
        fd = os.open(folder, os.O_RDONLY)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        pass
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _update_marker(folder: Path, change) -> None:
    with _marker_lock(folder):
        marker = _read_marker(folder)
        marker.setdefault("files", {})
        marker["toolkit"] = "keras-compress-toolkit"
        change(marker)
        write_json(folder / MARKER, marker)


def _is_ours(path: Path, marker: dict) -> bool:
    """Did the toolkit write ``path`` (as it is now)? Listed by name in a command's output folder, or listed with
    the sha256 it had when the toolkit wrote it."""
    if path.name not in marker.get("files", {}):
        return False
    recorded = marker["files"][path.name]
    if recorded is None:
        return bool(marker.get("command"))
    return not path.is_symlink() and path.is_file() and sha256_file(path) == recorded


class OutputFiles:
    """Files a command is allowed to write (see :func:`claim_output_file`); ``record()`` once they are written."""

    def __init__(self, paths: list[Path]):
        self.paths = paths

    @property
    def path(self) -> Path:
        return self.paths[0]

    def record(self) -> None:
        """List the written files in their folder's marker with their sha256: a rerun may replace them."""
        by_folder: dict[Path, list[Path]] = {}
        for p in self.paths:
            if p.is_file() and not p.is_symlink():
                by_folder.setdefault(p.parent if str(p.parent) else Path("."), []).append(p)
        for folder, paths in by_folder.items():
            hashes = {p.name: sha256_file(p) for p in paths}
            try:
                _update_marker(folder, lambda m: m["files"].update(hashes))
            except (OSError, UserError):
                pass  # the output is written; unlisted, a rerun refuses to replace it (the safe side)


def claim_output_file(path, inputs=(), also=(), create: bool = False) -> OutputFiles:
    """Check that a command may write ``path`` (and the files ``also`` written with it, e.g. its sidecar), before
    it loads or trains anything: refuse an output that is one of ``inputs``, and an existing file the toolkit did
    not write. ``create`` makes the folder (else a missing folder is refused in one line)."""
    paths = [Path(p) for p in (path, *also)]
    for p in paths:
        _refuse_inputs(p, inputs)
        parent = p.parent if str(p.parent) else Path(".")
        if create:
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise _cannot_write(p, e) from None
        elif not parent.is_dir():
            raise UserError(f"output directory does not exist: {parent}")
        if p.is_dir() and not p.is_symlink():
            raise UserError(f"cannot write {p}: it is a directory")
        if os.path.lexists(p) and not _is_ours(p, _read_marker(parent)):
            raise UserError(f"{p} exists and was not written by this toolkit (or was changed since): choose another "
                            "output name, or move that file away first")
    return OutputFiles(paths)


def claim_output_dir(path, names, command: str, inputs=(), take: bool = True) -> Path:
    """Make ``path`` the output folder of ``command``, which writes the entries ``names`` in it (files or folders).

    A new or empty folder becomes the command's; a folder of an earlier run of the same command is taken again.
    Refused in one line: a non-empty folder without the marker (the user's), one that another command owns, an
    existing entry among ``names`` the marker does not list, and an output that is, holds or lies in an input.
    The command only replaces or deletes what ``names`` lists. ``take=False`` checks only (a command that
    checks before its slow work makes no folder when that work then fails).
    """
    path = Path(path)
    names = [safe_name(n, "output name") for n in names]
    if os.path.lexists(path) and not path.is_dir():
        raise UserError(f"cannot create the output folder {path}: it is a file, not a directory; choose a new or "
                        "empty folder")
    _refuse_inputs(path, inputs, holds=False)  # an input the user keeps in the folder is not among ``names``
    for name in names:
        _refuse_inputs(path / name, inputs)
    if path.is_dir():
        marker = _read_marker(path)
        owner = marker.get("command")
        entries = [e for e in path.iterdir() if e.name != MARKER and not _TEMP.match(e.name)]
        if owner and owner != command:
            raise UserError(f"output folder {path} holds the output of `{owner}`, not of `{command}`: choose a new "
                            "or empty folder")
        if entries and not owner and not all(_is_ours(e, marker) for e in entries):
            raise UserError(f"output folder {path} is not empty and is not the output of an earlier run of "
                            f"`{command}`: choose a new or empty folder, or pass the folder of an earlier run of "
                            "this command")
        for name in names:
            entry = path / name
            if os.path.lexists(entry) and not _is_ours(entry, marker):
                raise UserError(f"{entry} was not written by `{command}`: move it out of {path}, or choose a new "
                                "or empty folder")
    if not take:
        return path
    if not path.is_dir():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create the output folder {path}: {e.strerror or e}") from None

    def own(marker):
        marker["command"] = command
        for name in names:
            marker["files"][name] = None

    _update_marker(path, own)
    return path


def scratch_dir(parent) -> Path:
    """A new, private folder inside ``parent`` for files a command deletes when it is done: it holds only what the
    command put there, so removing it removes nothing of the user's. A killed command's scratch folder is removed
    by the next :func:`remove_stale_temps` of ``parent``."""
    parent = Path(parent)
    return Path(tempfile.mkdtemp(prefix=f".scratch.{_HOST}-{os.getpid()}-", suffix=".tmp", dir=parent))
