"""The user's own data (``--data``, ``--eval-data``): read .npz/.npy/.csv files or image folders, check them
against the model's inputs and outputs, and split off a seeded hold-out for the metric.

Every problem is one line that names the input and what was expected; nothing is written before data loads.
"""
from __future__ import annotations

import csv
import os
import stat
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from models.errors import UserError
from models.spec import Split, TensorSig, n_samples, take

HOLDOUT = 0.2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
IMAGE_FORMATS = {"PNG", "JPEG", "MPO", "BMP", "GIF"}  # what PIL calls the files TensorFlow can decode
#: the most bytes --data may decode to; None: a quarter of this machine's memory (a header can declare terabytes)
MAX_BYTES: int | None = None


def _max_bytes() -> int:
    if MAX_BYTES:
        return MAX_BYTES
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n} bytes" if unit == "bytes" else f"{n:.2f} {unit}"
        n /= 1024


def _fmt(shape) -> str:
    dims = ["?" if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _npy_header(f, what: str, available: int) -> int:
    """Check one .npy header before anything is allocated: numbers only, no pickled objects, and no more data than
    the file holds (``available`` bytes from its start) or than ``MAX_BYTES``; leaves ``f`` past the header."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")
    except (ValueError, EOFError, OSError, SyntaxError) as e:
        raise UserError(f"{what} is not a readable .npy array ({str(e).splitlines()[0][:160]}); save it with "
                        "numpy.save or numpy.savez") from None
    if dtype.hasobject:
        raise UserError(f"{what} holds Python objects (refused: loading them would unpickle code); save numeric "
                        "arrays instead")
    if any(d < 0 for d in shape):
        raise UserError(f"{what} has a corrupt header (shape {shape}); save it again with numpy.save or numpy.savez")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    held = available - f.tell()
    if nbytes > held:
        raise UserError(f"{what} declares a {dtype} array of shape {_fmt(shape)} ({_size(nbytes)}) but holds only "
                        f"{_size(max(held, 0))}: the file is truncated or corrupt; save it again")
    if nbytes > _max_bytes():
        raise UserError(f"{what} holds a {dtype} array of shape {_fmt(shape)} ({_size(nbytes)}), more than the "
                        f"{_size(_max_bytes())} allowed for data on this machine; pass a smaller sample")
    return nbytes


def _read_npy(path: Path) -> np.ndarray:
    """An .npy file, its header checked before its data is read."""
    what = f"data {path}"
    try:
        with open(path, "rb") as f:
            if zipfile.is_zipfile(f):
                raise UserError(f"{what} is a zip archive (an .npz): rename it to .npz")
            f.seek(0)
            _npy_header(f, what, os.fstat(f.fileno()).st_size)
            f.seek(0)
            return np.lib.format.read_array(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"cannot read {what}: {getattr(e, 'strerror', None) or str(e).splitlines()[0][:200]}") \
            from None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz (a zip of .npy members), each member's header checked before its data is read."""
    what = f"data {path}"
    try:
        with open(path, "rb") as f:
            if f.read(6) == b"\x93NUMPY":
                raise UserError(f"{what} is an .npy file, not an .npz archive: rename it to .npy")
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            for m in members:
                if not m.filename.endswith(".npy"):
                    raise UserError(f"{what}: member {m.filename!r} is not a numpy array (.npy); an .npz holds x and "
                                    "y, or one array per input name (numpy.savez)")
            total = 0
            for m in members:
                with archive.open(m) as f:
                    total += _npy_header(f, f"{what} (array {m.filename[:-4]!r})", m.file_size)
            if total > _max_bytes():
                raise UserError(f"{what} holds {_size(total)} of arrays, more than the {_size(_max_bytes())} allowed "
                                "for data on this machine; pass a smaller sample")
            arrays = {}
            for m in members:
                with archive.open(m) as f:
                    arrays[m.filename[:-4]] = np.lib.format.read_array(f, allow_pickle=False)
            return arrays
    except zipfile.BadZipFile as e:
        raise UserError(f"cannot read {what}: not a valid .npz (zip) archive ({e}); save it with numpy.savez") \
            from None
    except (ValueError, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError) as e:
        raise UserError(f"cannot read {what}: {getattr(e, 'strerror', None) or str(e).splitlines()[0][:200]}; "
                        "save it again with numpy.savez") from None


def _npz(path: Path, signature) -> Split:
    arrays = _read_npz(path)
    y = arrays.pop("y", None)
    names = [s.name for s in signature]
    if "x" in arrays and len(arrays) == 1:
        if len(names) > 1:
            raise UserError(f"data {path}: the model takes {len(names)} inputs ({', '.join(names)}); store one array "
                            "per input name (plus y) instead of x")
        return Split(arrays["x"], y)
    unknown = [k for k in arrays if k not in names]
    missing = [n for n in names if n not in arrays]
    if unknown or missing:
        raise UserError(f"data {path}: arrays {', '.join(sorted(arrays)) or '(none)'} do not match the model's inputs "
                        f"{', '.join(names)} (expected x and y, or one array per input name plus y)")
    return Split(arrays[names[0]] if len(names) == 1 else {n: arrays[n] for n in names}, y)


def _csv(path: Path, signature, label: str | None) -> Split:
    if not label:
        raise UserError(f"data {path}: a .csv needs --label COLUMN (the column that holds the labels)")
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read data {path}: {getattr(e, 'strerror', None) or e}") from None
    if not rows:
        raise UserError(f"data {path} is empty")
    header, body = [h.strip() for h in rows[0]], [r for r in rows[1:] if r]
    if label not in header:
        raise UserError(f"data {path} has no label column {label!r}; its columns: {', '.join(header)}")
    if not body:
        raise UserError(f"data {path} has a header but no rows")
    if len(signature) != 1:
        raise UserError(f"data {path}: a .csv feeds one input, but the model takes {len(signature)}; use an .npz")
    col = header.index(label)
    try:
        table = np.asarray([[float(v) for v in r] for r in body], np.float64)
    except ValueError as e:
        raise UserError(f"data {path}: every column must be numeric ({e})") from None
    if table.shape[1] != len(header):
        raise UserError(f"data {path}: rows have {table.shape[1]} values for {len(header)} columns")
    x = np.delete(table, col, axis=1).astype(signature[0].dtype if signature[0].dtype != "float64" else "float32")
    y = table[:, col]
    y = y.astype(np.int64) if np.all(y == np.round(y)) else y.astype(np.float32)
    return Split(x, y)


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _image_files(path: Path) -> tuple[list[str], list[tuple[str, str]], list[int]]:
    """(class names, image files as (real path, the name to show), their class indices) in Keras' order: classes sorted, then each class's folders
    sorted, then their files. Symlinks are followed only where their real path stays inside the folder (one that
    leaves it is refused, named); a link back to a folder already on the way down is not followed again."""
    root = os.path.realpath(path)

    def shown(full: str) -> str:  # as the user spells the folder
        return os.path.join(str(path), os.path.relpath(full, root))

    def real_inside(full: str) -> str:
        real = os.path.realpath(full)
        if not _inside(real, root):
            raise UserError(f"data {path}: {shown(full)} is a symlink to {real}, outside the data folder; copy what "
                            "it points at into the folder (links out of it are not followed)")
        return real

    def unreadable(e: OSError):
        raise UserError(f"data {path}: cannot read {e.filename}: {e.strerror}; fix its permissions") from None

    try:
        entries = sorted(os.listdir(root))
    except OSError as e:
        unreadable(e)
    classes = []
    for name in entries:
        full = os.path.join(root, name)
        if os.path.isdir(real_inside(full)):
            classes.append(name)
    files, labels = [], []
    for index, name in enumerate(classes):
        top = os.path.join(root, name)
        chains = {top: {real_inside(top)}}  # each folder: the real paths on its way down (a link cycle stops)
        found = []
        for folder, dirs, names in os.walk(top, onerror=unreadable, followlinks=True):
            seen = chains.pop(folder)
            keep = []
            for d in sorted(dirs):
                real = real_inside(os.path.join(folder, d))
                if real not in seen:
                    keep.append(d)
                    chains[os.path.join(folder, d)] = seen | {real}
            dirs[:] = keep
            for n in sorted(names):
                full = os.path.join(folder, n)
                if not n.lower().endswith(IMAGE_SUFFIXES):
                    real_inside(full)
                    continue
                real = real_inside(full)
                try:
                    regular = stat.S_ISREG(os.stat(real).st_mode)
                except OSError:
                    regular = False
                if not regular:
                    raise UserError(f"data {path}: {shown(full)} is not a regular file (a broken link, a pipe or a "
                                    "device); remove it or replace it with the image")
                found.append((folder, real, shown(full)))
        found.sort(key=lambda f: f[0])  # Keras sorts the walk by folder path
        files += [(real, name) for _, real, name in found]
        labels += [index] * len(found)
    return classes, files, labels


def _check_image(path: Path, real: str, shown: str) -> None:
    """One image file that TensorFlow can decode: PIL verifies it and names its format."""
    from PIL import Image  # deferred: Pillow, only for image folders

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(real) as img:
                fmt, size = img.format, img.size
                img.verify()
    except Exception as e:  # noqa: BLE001  (PIL raises many kinds for a file that is not an image)
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0][:120] or type(e).__name__
        raise UserError(f"data {path}: {shown} is not a readable image ({reason}); remove it or replace it with a "
                        f"{'/'.join(s.lstrip('.') for s in IMAGE_SUFFIXES)} image") from None
    if fmt not in IMAGE_FORMATS:
        raise UserError(f"data {path}: {shown} is a {fmt} image, which cannot be decoded here; convert it to PNG or "
                        "JPEG, or remove it")
    if size[0] * size[1] > (Image.MAX_IMAGE_PIXELS or 1 << 62):
        raise UserError(f"data {path}: {shown} is {size[0]}x{size[1]} pixels, too large to decode; resize it")


def _images(path: Path, signature) -> Split:
    from models.backend import quiet_stderr, tf  # deferred: models.backend loads TensorFlow

    classes, files, labels = _image_files(path)
    if not files or not classes:
        raise UserError(f"data {path}: no images found (expected one sub-folder per class holding "
                        f"{'/'.join(IMAGE_SUFFIXES)} files)")
    if len(signature) != 1 or len(signature[0].shape) != 3:
        raise UserError(f"data {path}: an image folder feeds one (height, width, channels) input, but the model "
                        f"takes {', '.join(_fmt(s.shape) for s in signature)}")
    h, w, c = signature[0].shape
    if not (h and w):
        raise UserError(f"data {path}: the model's input {_fmt(signature[0].shape)} has no fixed image size to "
                        "resize to; pass an .npz instead")
    if c not in (1, 3, 4):
        raise UserError(f"data {path}: the model's input has {c} channels; images load as 1, 3 or 4")
    nbytes = len(files) * h * w * c * 4
    if nbytes > _max_bytes():
        raise UserError(f"data {path}: {len(files)} images at {h}x{w}x{c} need {_size(nbytes)}, more than the "
                        f"{_size(_max_bytes())} allowed for data on this machine; pass fewer images")
    for real, shown in files:
        _check_image(path, real, shown)

    def load(file):  # as Keras' image_dataset_from_directory loads each file (so the numbers are the same)
        img = tf.image.decode_image(tf.io.read_file(file), channels=c, expand_animations=False)
        return tf.image.resize(img, (h, w), method="bilinear")

    with quiet_stderr():
        try:
            dataset = tf.data.Dataset.from_tensor_slices([real for real, _ in files]).map(load, num_parallel_calls=tf.data.AUTOTUNE)
            x = np.concatenate([b.numpy() for b in dataset.batch(64)])
        except tf.errors.OpError as e:
            for real, shown in files:  # PIL passed them all: find the one TensorFlow cannot decode
                try:
                    load(tf.constant(real))
                except tf.errors.OpError as one:
                    raise UserError(f"data {path}: cannot decode {shown} ({one.message.splitlines()[0][:160]}); "
                                    "remove it or save it again as PNG or JPEG") from None
            raise UserError(f"data {path}: cannot decode the images ({e.message.splitlines()[0][:160]})") from None
    return Split(x.astype(signature[0].dtype), np.asarray(labels, np.int32))


def read(path: str | Path, signature: tuple[TensorSig, ...], label: str | None = None) -> Split:
    """``--data``: an .npz (x and y, or one array per input + y), a .csv with ``label``, an image folder, or an .npy."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"no such data file or folder: {path}")
    if path.is_dir():
        return _images(path, signature)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _npz(path, signature)
    if suffix == ".csv":
        return _csv(path, signature, label)
    if suffix == ".npy":
        if len(signature) != 1:
            raise UserError(f"data {path}: an .npy holds one input, but the model takes {len(signature)}; use an .npz")
        return Split(_read_npy(path), None)
    raise UserError(f"data {path}: expected an .npz, .npy or .csv file or a folder of images (one sub-folder per class)")


def check(split: Split, signature: tuple[TensorSig, ...], output_width: int | None, source: str,
          output_shape: tuple | None = None) -> None:
    """Inputs that fit the model (names, shapes, dtypes, finite values) and labels that fit its output
    (``output_shape``: one sample's, e.g. (3,); without it, (output_width,))."""
    arrays = split.x if isinstance(split.x, dict) else {signature[0].name: split.x}
    n = None
    for sig in signature:
        arr = np.asarray(arrays[sig.name])
        if arr.ndim != len(sig.shape) + 1 or any(want is not None and want != have
                                                  for want, have in zip(sig.shape, arr.shape[1:])):
            raise UserError(f"{source}: input {sig.name!r} expects samples of shape {_fmt(sig.shape)}, got "
                            f"{_fmt(arr.shape[1:])} (array {_fmt(arr.shape)})")
        if len(arr) == 0:
            raise UserError(f"{source}: input {sig.name!r} has no samples")
        if n is not None and len(arr) != n:
            raise UserError(f"{source}: input {sig.name!r} has {len(arr)} samples, the others {n}")
        n = len(arr)
        kind = np.dtype(sig.dtype).kind
        if arr.dtype.kind not in "fiub":
            raise UserError(f"{source}: input {sig.name!r} expects {sig.dtype}, got {arr.dtype}")
        if kind in "iu" and arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
            raise UserError(f"{source}: input {sig.name!r} expects integers ({sig.dtype}), got non-integer floats")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            first = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise UserError(f"{source}: input {sig.name!r} has NaN/Inf values (first at index {first})")
    if split.y is not None:
        _check_labels(np.asarray(split.y), n, output_width, output_shape, source)


def _check_labels(y: np.ndarray, n: int, output_width: int | None, output_shape, source: str) -> None:
    """Labels that fit the model's output ``(?, *out)`` of ``W = out[-1]`` units: the output's own shape (one-hot rows,
    regression targets), or, for W > 1, class ids shaped ``out[:-1]`` (or with a trailing 1) in ``0..W-1``."""
    if y.ndim == 0:
        raise UserError(f"{source}: labels y is a single value; store one label per sample (an array of {n})")
    if y.dtype.kind not in "fiub":
        raise UserError(f"{source}: labels must be numbers, got {y.dtype}; store class ids (integers) or one-hot rows")
    if len(y) != n:
        raise UserError(f"{source}: {len(y)} labels for {n} samples")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise UserError(f"{source}: labels have NaN/Inf values")
    out = tuple(output_shape) if output_shape is not None else (output_width,) if output_width else None
    if out is None:
        return
    width = out[-1] if out else 1

    def fits(want) -> bool:
        return y.ndim == len(want) + 1 and all(w is None or w == h for w, h in zip(want, y.shape[1:]))

    lead = out[:-1]
    as_ids = bool(width and width > 1) and (fits(lead) or fits(lead + (1,)))
    if not (as_ids or fits(out) or (out and width == 1 and fits(lead)) or (not out and fits((1,)))):
        rows = (n,) + tuple(lead)
        if width and width > 1:
            expected = f"{_fmt(rows)} class ids in 0..{width - 1} or {_fmt(rows + (width,))} one-hot rows"
        elif out:
            expected = f"{_fmt(rows + (out[-1],))}" + (f" or {_fmt(rows)}" if width == 1 else "")
        else:
            expected = f"{_fmt((n,))}"
        raise UserError(f"{source}: labels y have shape {_fmt(y.shape)}, but the model's output is "
                        f"{_fmt((None,) + out)}; give y as {expected}")
    if as_ids:
        if y.dtype.kind == "f" and not np.all(y == np.round(y)):
            raise UserError(f"{source}: class labels must be integers in [0, {width}), got fractional values")
        bad = (y < 0) | (y >= width)
        if bad.any():
            raise UserError(f"{source}: label {y[bad][0]:g} is outside the model's {width} output classes "
                            f"(expected 0..{width - 1})")


def cast(split: Split, signature) -> Split:
    """Inputs in the dtypes the model declares."""
    if isinstance(split.x, dict):
        return Split({s.name: np.asarray(split.x[s.name]).astype(s.dtype) for s in signature}, split.y)
    return Split(np.asarray(split.x).astype(signature[0].dtype), split.y)


def holdout(split: Split, seed: int = 0, fraction: float = HOLDOUT) -> tuple[Split, Split]:
    """(calibration/fine-tuning part, evaluation part): a seeded shuffle, ``fraction`` held out (at least one)."""
    n = n_samples(split.x)
    if n < 2:
        raise UserError(f"--data has {n} sample(s): at least 2 are needed to hold some out for the metric "
                        "(or pass --eval-data)")
    order = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(n * fraction)))
    test, train = order[:k], order[k:]
    return (Split(take(split.x, train), take(split.y, train)), Split(take(split.x, test), take(split.y, test)))
