"""The toolkit's metadata of an exported file: from its JSON sidecar, or from inside the file.

Inside the file it lives where each format keeps metadata: ONNX ``metadata_props`` (read from the ONNX Runtime
session, see :mod:`ct_runtime.onnx_model`) and the TFLite model's metadata table, an entry named ``ct_metadata``
whose buffer holds the JSON (read here through the TFLite flatbuffer schema that ai-edge-litert ships).

Files and sidecars come from anywhere, so metadata is checked before anything uses it. Nothing in it is needed to
run a file (the file itself declares its inputs, outputs and batch axis), so bad metadata never fails ``load``: it
is ignored with a :class:`~ct_runtime.MetadataWarning` (one line: what was ignored and why) and the model uses what
the file declares. Per source:

* The sidecar (``model.onnx.json``) is a copy of the file's own metadata plus the export's ``validation`` record,
  so it is used whole or not at all; when ignored, the copy inside the file is used. It is ignored when it is not
  a regular file (a FIFO, a device such as ``/dev/zero``, a directory, a broken link: ``os.stat`` is checked before
  it is opened, and again on the descriptor, opened with ``O_NONBLOCK`` so nothing blocks), is larger than
  ``MAX_METADATA_BYTES``, cannot be read, is not UTF-8 JSON, is not a JSON object, has a malformed field (below),
  records a ``validation.file_sha256`` that is not the file's SHA-256 (a stale sidecar of an earlier export), or
  names inputs/outputs or a batch that are not the file's (checked when the model is loaded:
  ``ExportedModel._settle_metadata``).
* The file's own copy (it cannot be stale) is ignored whole when it is over the size limit, not JSON or not an
  object; otherwise each malformed field, and each field the file contradicts, is dropped and the rest kept.

Fields (the toolkit's ``export.metadata.describe``) and what is well-formed; a field that is absent is fine, an
unknown field is kept as it is (newer toolkits may add fields):

* ``model``, ``format``, ``quantization``, ``toolkit_version``, ``source_sha256``: a string;
  ``task``, ``preprocessing``: a string or null; ``labels``: a list of strings or null; ``chain``, ``notes``: a
  list of strings.
* ``inputs``, ``outputs``: an object whose ``names`` are distinct strings, with optional ``shapes`` (one list of
  dimensions, each null or an integer in [0, 2**31), per name) and ``dtypes`` (one string per name). The names
  must be exactly the file's (in any order: they give the Keras model's order).
* ``batch``: null (dynamic) or an integer in [1, ``MAX_BATCH``], and equal to every input's leading dimension in
  the file (a static batch the runtime chunks by).
* ``quantization_params``: ``{"inputs"|"outputs": {name: {"scale": finite number, "zero_point": integer,
  "dtype": string}}}`` (informational: the runtime (de)quantizes with the file's own scales).
* ``validation`` (sidecar only): an object; its ``file_sha256``, when present, a 64-digit hex string.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import warnings
from pathlib import Path

from .errors import MetadataWarning, first_line

METADATA_KEY = "ct_metadata"  # ONNX metadata_props key and TFLite metadata table entry name
# Toolkit versions before the runtime had its own distribution wrote this before the JSON in the TFLite entry.
LEGACY_TFLITE_PREFIX = b"CT-METADATA"
_MAX_TFLITE_ENTRIES = 1024  # a corrupt table length must not mean a billion iterations
MAX_METADATA_BYTES = 1 << 20  # a sidecar or embedded JSON larger than this is not read
MAX_BATCH = 1 << 20
_MAX_DIM = 1 << 31

_STRINGS = ("model", "format", "quantization", "toolkit_version", "source_sha256")
_OPTIONAL_STRINGS = ("task", "preprocessing")
_STRING_LISTS = ("chain", "notes")


class Unusable(Exception):
    """Metadata that cannot be used at all; the message (one line) says why."""


def warn(message: str) -> None:
    warnings.warn(f"ct_runtime: {message}", MetadataWarning, stacklevel=3)


# ------------------------------------------------------------------------------------------------ field checks

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_str_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _io_problem(part) -> str | None:
    if not isinstance(part, dict):
        return "not an object"
    names = part.get("names")
    if not _is_str_list(names):
        return "names is not a list of strings"
    if len(set(names)) != len(names):
        return "names repeat"
    shapes = part.get("shapes")
    if shapes is not None and not (
            isinstance(shapes, list) and len(shapes) == len(names)
            and all(isinstance(s, list) and all(d is None or (_is_int(d) and 0 <= d < _MAX_DIM) for d in s)
                    for s in shapes)):
        return "shapes is not one list of dimensions (null or 0 <= int < 2**31) per name"
    dtypes = part.get("dtypes")
    if dtypes is not None and not (_is_str_list(dtypes) and len(dtypes) == len(names)):
        return "dtypes is not one string per name"
    return None


def _quantization_problem(v) -> str | None:
    if not isinstance(v, dict):
        return "not an object"
    for kind, table in v.items():
        if kind not in ("inputs", "outputs") or not isinstance(table, dict):
            return f"{kind!r} is not 'inputs' or 'outputs' with an object"
        for entry in table.values():
            if not (isinstance(entry, dict) and isinstance(entry.get("scale"), (int, float))
                    and not isinstance(entry.get("scale"), bool) and math.isfinite(entry["scale"])
                    and _is_int(entry.get("zero_point")) and isinstance(entry.get("dtype"), str)):
                return "an entry is not {scale: finite number, zero_point: int, dtype: string}"
    return None


def _validation_problem(v) -> str | None:
    if not isinstance(v, dict):
        return "not an object"
    digest = v.get("file_sha256")
    if digest is not None and not (isinstance(digest, str) and len(digest) == 64
                                   and all(c in "0123456789abcdef" for c in digest)):
        return "file_sha256 is not a 64-digit hex string"
    return None


def field_problem(key: str, value) -> str | None:
    """Why a known field's value is malformed (None: well-formed, or a field this module does not know)."""
    if key in _STRINGS:
        return None if isinstance(value, str) else "not a string"
    if key in _OPTIONAL_STRINGS:
        return None if value is None or isinstance(value, str) else "not a string or null"
    if key in _STRING_LISTS:
        return None if _is_str_list(value) else "not a list of strings"
    if key == "labels":
        return None if value is None or _is_str_list(value) else "not a list of strings or null"
    if key == "batch":
        return None if value is None or (_is_int(value) and 1 <= value <= MAX_BATCH) else \
            f"not null or an integer in [1, {MAX_BATCH}]"
    if key in ("inputs", "outputs"):
        return _io_problem(value)
    if key == "quantization_params":
        return _quantization_problem(value)
    if key == "validation":
        return _validation_problem(value)
    return None


def check_fields(meta: dict) -> tuple[dict, list[str]]:
    """The metadata without its malformed fields, and one ``"field: why"`` per field dropped."""
    kept, problems = {}, []
    for key, value in meta.items():
        problem = field_problem(key, value)
        if problem:
            problems.append(f"{key}: {problem}")
        else:
            kept[key] = value
    return kept, problems


def file_problems(meta: dict, inputs: list[str], outputs: list[str], leading: list) -> dict[str, str]:
    """Fields of ``meta`` that contradict the file: {field: why}.

    ``inputs``/``outputs``: the file's names; ``leading``: each input's leading dimension in the file (an int, or
    None where it is dynamic or the input has no dimensions).
    """
    problems = {}
    for key, names in (("inputs", inputs), ("outputs", outputs)):
        part = meta.get(key)
        if isinstance(part, dict) and sorted(part.get("names", [])) != sorted(names):
            problems[key] = f"names {_short(part.get('names'))}, the file's are {_short(names)}"
    batch = meta.get("batch")
    if batch is not None and any(d != batch for d in leading):
        problems["batch"] = f"{batch}, the file's inputs lead with {_short(leading)}"
    return problems


def _short(value, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --------------------------------------------------------------------------------------------------- reading

def decode(raw: bytes | str) -> dict:
    """A JSON object from ``raw`` (bytes may carry the legacy TFLite prefix); raises Unusable."""
    if len(raw) > MAX_METADATA_BYTES:
        raise Unusable(f"{len(raw)} bytes, over the {MAX_METADATA_BYTES}-byte limit")
    if isinstance(raw, bytes):
        try:
            raw = raw.removeprefix(LEGACY_TFLITE_PREFIX).decode("utf-8")
        except UnicodeDecodeError:
            raise Unusable("not UTF-8") from None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise Unusable(f"not JSON ({type(e).__name__}: {first_line(e)[:80]})") from None
    if not isinstance(doc, dict):
        raise Unusable(f"a JSON {type(doc).__name__}, not an object")
    return doc


def parse_json(raw: bytes | str, where: str = "the file's metadata") -> dict:
    """The file's own metadata JSON, malformed fields dropped; {} when unusable (both with a MetadataWarning)."""
    try:
        meta, problems = check_fields(decode(raw))
    except Unusable as e:
        warn(f"{where} ignored: {e}")
        return {}
    if problems:
        warn(f"{where}: malformed field(s) ignored: {'; '.join(problems)}")
    return meta


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_regular_file(path: str | os.PathLike, limit: int | None = None) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; raises Unusable (FileNotFoundError when absent).

    The type is checked with ``os.stat`` before opening (opening some devices has effects), and again on the
    descriptor (the path may have changed in between), which is opened non-blocking: a FIFO never blocks.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise Unusable("a broken link") from None
        raise
    except OSError as e:
        raise Unusable(f"cannot be read ({e.strerror or type(e).__name__})") from None
    if not stat.S_ISREG(st.st_mode):
        raise Unusable(f"{_kind(st.st_mode)}, not a regular file")
    if limit is not None and st.st_size > limit:
        raise Unusable(f"{st.st_size} bytes, over the {limit}-byte limit")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise Unusable(f"cannot be read ({e.strerror or type(e).__name__})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unusable(f"{_kind(st.st_mode)}, not a regular file")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read() if limit is None else f.read(limit + 1)
    except OSError as e:
        raise Unusable(f"cannot be read ({e.strerror or type(e).__name__})") from None
    finally:
        os.close(fd)
    if limit is not None and len(data) > limit:
        raise Unusable(f"over the {limit}-byte limit")
    return data


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a regular file; raises Unusable."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise Unusable(f"the model file is {_kind(st.st_mode)}")
        with os.fdopen(os.open(path, flags), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise Unusable("the model file is not a regular file")
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        raise Unusable(f"the model file cannot be read ({e.strerror or type(e).__name__})") from None


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + ".json")


def read_sidecar(path: str | os.PathLike) -> dict | None:
    """The sidecar of the model file ``path``: None when there is none, or (with a MetadataWarning) when it is
    unusable: not a regular file, too large, unreadable, not a JSON object, a malformed field, or stale (its
    recorded ``validation.file_sha256`` is not the file's)."""
    sidecar = sidecar_path(path)
    try:
        meta, problems = check_fields(decode(read_regular_file(sidecar, MAX_METADATA_BYTES)))
        if problems:
            raise Unusable(f"malformed field(s): {'; '.join(problems)}")
        recorded = (meta.get("validation") or {}).get("file_sha256")
        if recorded is not None:
            actual = file_sha256(path)
            if recorded != actual:
                raise Unusable(f"it records file SHA-256 {recorded[:12]}..., the file's is {actual[:12]}... "
                               "(a stale sidecar of another export)")
    except FileNotFoundError:
        return None
    except Unusable as e:
        warn(f"sidecar {sidecar} ignored, using the file's own metadata: {e}")
        return None
    return meta


def tflite_metadata(data) -> dict:
    """The ``ct_metadata`` entry of a TFLite model's metadata table ({} if absent, unreadable or no schema)."""
    try:
        from ai_edge_litert.schema_py_generated import Model
    except ImportError:  # an ONNX-only install: it cannot run the file either
        return {}
    where = "the file's ct_metadata entry"
    try:
        if not Model.ModelBufferHasIdentifier(data, 0):
            return {}
        model = Model.GetRootAs(data, 0)
        for i in range(min(model.MetadataLength(), _MAX_TFLITE_ENTRIES)):
            entry = model.Metadata(i)
            if entry.Name() != METADATA_KEY.encode():
                continue
            if not 0 <= entry.Buffer() < model.BuffersLength():
                warn(f"{where} ignored: it points outside the file's buffers")
                return {}
            buffer = model.Buffers(entry.Buffer())
            if buffer.Offset() > 1:  # large models keep buffers after the flatbuffer: (offset, size) in the file
                if buffer.Size() > MAX_METADATA_BYTES:
                    warn(f"{where} ignored: {buffer.Size()} bytes, over the {MAX_METADATA_BYTES}-byte limit")
                    return {}
                return parse_json(bytes(data[buffer.Offset():buffer.Offset() + buffer.Size()]), where)
            if buffer.DataLength():
                if buffer.DataLength() > MAX_METADATA_BYTES:
                    warn(f"{where} ignored: {buffer.DataLength()} bytes, over the {MAX_METADATA_BYTES}-byte limit")
                    return {}
                return parse_json(buffer.DataAsNumpy().tobytes(), where)
    except Exception:  # noqa: BLE001  (a corrupt flatbuffer raises whatever its offsets lead to)
        return {}
    return {}


def tflite_file_metadata(path: str | os.PathLike) -> dict:
    """The metadata inside a ``.tflite`` file ({} when it has none or the file cannot be read)."""
    try:
        return tflite_metadata(read_regular_file(path))
    except (OSError, Unusable):
        return {}


def read_metadata(path: str | os.PathLike) -> dict:
    """From the JSON sidecar (``model.tflite.json``) when it is usable, else from inside a ``.tflite`` file, else {}.

    An ``.onnx`` file's own metadata is read when its session is created (ONNX Runtime parses the file anyway).
    The names and batch are checked against the file when it is loaded (:func:`ct_runtime.load`).
    """
    meta = read_sidecar(path)
    if meta is not None:
        return meta
    if str(path).lower().endswith(".tflite"):
        return tflite_file_metadata(path)
    return {}
