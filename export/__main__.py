"""python -m export {onnx,tflite,run}"""
from __future__ import annotations

from pathlib import Path

from models.cli import ArgumentParser, console, run
from models.errors import UserError


def _export(args):
    from export.quantize.ptq import QuantRecipe  # deferred: only this subcommand needs it (CLI start-up)
    from models.subject import Source, resolve  # deferred: only this subcommand needs it (CLI start-up)

    # deferred: only this subcommand needs it (CLI start-up)
    from export.cli_common import claim_export, default_output, describe_subject, parse_batch, report
    from export.exporter import export  # deferred: export.exporter loads TensorFlow
    from export.onnx import int8_flavour  # deferred: export.onnx loads onnx

    try:
        recipe = QuantRecipe(args.command, args.quantize, onnx_int8=getattr(args, "onnx_int8", "auto"),
                             weight_algos=args.weight_algos)
    except ValueError as e:
        raise UserError(str(e)) from None
    batch = parse_batch(args.batch)
    claim = claim_export(args.output, args) if args.output else None  # before anything is loaded
    out = console()
    with out.status(f"preparing {args.model}..."):
        subject = resolve(Source.from_args(args))
    describe_subject(out, subject)
    path = Path(args.output or default_output(subject.name, args.command, args.quantize))
    claim = claim or claim_export(path, args)
    with out.status("choosing the ONNX int8 flavour for this host (measured once per model family)..."):
        recipe, notes = int8_flavour(subject, recipe, getattr(args, "opset", None), batch, args.cache_dir)
    with out.status(f"converting to {recipe} and validating..."):
        result = export(subject, recipe, path, opset=getattr(args, "opset", None), batch=batch,
                        allow_flex=args.allow_flex, enforce=not args.no_validate, max_drop=args.max_drop)
    claim.record()
    result.notes[:0] = notes
    report(out, result, subject)



def _read_inputs(specs: list[str]) -> dict:
    """``[NAME=]FILE.npy`` arguments -> {name or "": array}; one-line errors for unreadable files."""
    import numpy as np  # deferred: only this subcommand needs it (CLI start-up)

    arrays = {}
    for spec in specs:
        name, sep, file = spec.partition("=") if "=" in spec and not Path(spec).exists() else ("", "", spec)
        if sep and not file:
            raise UserError(f"--input {spec!r}: expected NAME=FILE.npy")
        if name in arrays:
            raise UserError(f"--input given twice for {('input ' + repr(name)) if name else 'the model input'}")
        path = Path(file)
        if not path.is_file():
            raise UserError(f"cannot read input {file}: " + ("it is a directory" if path.is_dir() else "no such file"))
        try:
            with open(path, "rb") as f:
                head = f.read(6)
        except OSError as e:
            raise UserError(f"cannot read input {file}: {e.strerror or e}") from None
        if not head:
            raise UserError(f"cannot read input {file}: it is empty")
        if head != b"\x93NUMPY" and not head.startswith(b"PK\x03\x04"):
            raise UserError(f"cannot read input {file}: not a .npy file (save arrays with numpy.save)")
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            reason = "it holds Python objects (refused: loading them would unpickle code)" \
                if "allow_pickle" in str(e) else f"not a valid .npy file ({str(e).splitlines()[0][:200]})"
            raise UserError(f"cannot read input {file}: {reason}") from None
        except (OSError, EOFError) as e:
            raise UserError(f"cannot read input {file}: {getattr(e, 'strerror', None) or e}") from None
        if not isinstance(arr, np.ndarray):  # an .npz archive
            arr.close()
            raise UserError(f"cannot read input {file}: it is an .npz archive; pass one .npy file per input "
                            "(--input NAME=FILE.npy)")
        arrays[name] = arr
    return arrays


def _fmt_shape(shape) -> str:
    dims = ["?" if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _dims(n: int) -> str:
    return f"{n} dimension{'' if n == 1 else 's'}"


def _compatible_dtype(expected: str, got) -> bool:
    """May an array of dtype ``got`` be fed to an input of dtype ``expected`` (as the runtime casts)?"""
    kind = got.kind
    if expected in ("float32", "float16", "float64"):
        return kind in "fiu"
    if expected in ("int8", "uint8"):  # a quantized TFLite input: floats are quantized for you
        return kind in "fiu"
    if expected.startswith(("int", "uint")):
        return kind in "iu"
    if expected == "bool":
        return kind == "b"
    if expected == "str":
        return kind in "US"
    return True


def _match_inputs(arrays: dict, specs: list[dict]) -> dict:
    """Name every array after a model input and check its rank, static dimensions and dtype (one line each)."""
    names = [s["name"] for s in specs]
    by_name = {s["name"]: s for s in specs}
    if "" in arrays:
        if len(specs) != 1 or len(arrays) != 1:
            raise UserError(f"the model takes {len(specs)} inputs ({', '.join(names)}): pass each as "
                            "--input NAME=FILE.npy")
        arrays = {names[0]: arrays[""]}
    unknown = [n for n in arrays if n not in by_name]
    if unknown:
        raise UserError(f"unknown input {unknown[0]!r}; the model's inputs: {', '.join(names)}")
    missing = [n for n in names if n not in arrays]
    if missing:
        raise UserError(f"missing input {missing[0]!r}; the model's inputs: {', '.join(names)} "
                        "(pass each as --input NAME=FILE.npy)")
    for name, arr in arrays.items():
        spec = by_name[name]
        shape = spec["shape"]
        if not _compatible_dtype(spec["dtype"], arr.dtype):
            raise UserError(f"input {name!r}: expected dtype {spec['dtype']} (shape {_fmt_shape(shape)}), got "
                            f"{arr.dtype.name} (shape {_fmt_shape(arr.shape)})")
        if arr.ndim != len(shape):
            raise UserError(f"input {name!r}: expected shape {_fmt_shape(shape)} ({_dims(len(shape))}), "
                            f"got {_fmt_shape(arr.shape)} ({_dims(arr.ndim)})")
        if arr.ndim and arr.shape[0] == 0:
            raise UserError(f"input {name!r}: the batch is empty (shape {_fmt_shape(arr.shape)})")
        for axis, (want, have) in enumerate(zip(shape, arr.shape)):
            if want is None or (axis == 0 and spec.get("batch_flexible")):
                continue
            if want != have:
                raise UserError(f"input {name!r}: expected shape {_fmt_shape(shape)}, got {_fmt_shape(arr.shape)} "
                                f"(dimension {axis} must be {want})")
    return arrays


def _warn_non_finite(kind: str, name: str, arr) -> None:
    import sys  # deferred: only this subcommand needs it (CLI start-up)

    import numpy as np  # deferred: only this subcommand needs it (CLI start-up)

    if arr.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(arr)
    count = int(bad.sum())
    if count:
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        nan = int(np.isnan(arr).sum())
        print(f"warning: {kind} {name!r} has {count} non-finite value(s) ({nan} NaN, {count - nan} Inf) of "
              f"{arr.size}, first at index {first}; results may be meaningless", file=sys.stderr)


def _check_output(path: Path) -> None:
    import os  # deferred: only this subcommand needs it (CLI start-up)

    if path.suffix.lower() != ".npz":
        raise UserError(f"output {path} must end in .npz")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise UserError(f"output directory is not writable: {parent}")


def _check_provider(provider: str | None, path: Path) -> list[str] | None:
    if provider is None:
        return None
    if path.suffix.lower() != ".onnx":
        raise UserError(f"--provider applies to .onnx files only (ONNX Runtime execution providers), not {path.name}")
    import onnxruntime as ort  # deferred: ONNX Runtime

    known = ort.get_all_providers()
    available = ort.get_available_providers()
    if provider not in known:
        raise UserError(f"unknown provider {provider!r}; valid: {', '.join(available)} (available here)")
    if provider not in available:
        raise UserError(f"provider {provider!r} is not available here; valid: {', '.join(available)}")
    return [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]


def _run(args):
    import io  # deferred: only this subcommand needs it (CLI start-up)
    import sys  # deferred: only this subcommand needs it (CLI start-up)

    import numpy as np  # deferred: only this subcommand needs it (CLI start-up)

    # deferred: only this subcommand needs it (CLI start-up)
    from models.artifacts import atomic_write, claim_output_file

    from export import runtime  # deferred: only this subcommand needs it (CLI start-up)
    from export.probe import probe  # deferred: only this subcommand needs it (CLI start-up)

    path = Path(args.path)
    output = Path(args.output) if args.output else None
    if output is not None:
        _check_output(output)
        claim = claim_output_file(output, [path, *(spec.rpartition("=")[2] for spec in args.input)])
    providers = _check_provider(args.provider, path)
    arrays = _read_inputs(args.input)
    # A corrupt or hostile file can crash the native runtime: load it in a child first, then here.
    probed = probe([path], providers=providers)[0]
    if not probed.ok:
        raise UserError(probed.error)
    try:
        model = runtime.load(path, providers=providers)
    except runtime.RuntimeModelError as e:
        raise UserError(str(e)) from None
    from export.probe_child import describe_inputs  # deferred: only this subcommand needs it (CLI start-up)

    feed = _match_inputs(arrays, describe_inputs(model))
    for name, arr in feed.items():
        _warn_non_finite("input", name, arr)
    try:
        outputs = model.predict(feed if len(feed) > 1 else next(iter(feed.values())))
    except runtime.RuntimeModelError as e:
        raise UserError(str(e)) from None
    outputs = outputs if isinstance(outputs, list) else [outputs]
    named = dict(zip(model.output_names, outputs))
    for name, value in named.items():
        _warn_non_finite("output", name, np.asarray(value))
    if output is not None:
        buffer = io.BytesIO()
        np.savez(buffer, **named)
        atomic_write(output, buffer.getvalue())
        claim.record()
    np.set_printoptions(precision=5, suppress=True, threshold=200)
    for name, value in named.items():
        print(f"{name} {tuple(value.shape)}:\n{value}")
        if value.ndim == 2 and value.shape[1] > 1:
            print(f"{name} argmax: {value.argmax(-1)}")
    if output is not None:
        print(f"wrote {output}")
    sys.stdout.flush()


def main(argv=None):
    # deferred: only this subcommand needs it (CLI start-up)
    from export.cli_common import add_model_args, add_weight_algos_arg

    parser = ArgumentParser(prog="python -m export", description="Export to ONNX/TFLite with a parity check.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("onnx", help="export to ONNX (tf2onnx) and validate against Keras")
    add_model_args(p)
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    p.add_argument("--quantize", default="fp32", help="fp32 | float16 | dynamic | int8 (ONNX Runtime quantization)")
    p.add_argument("--onnx-int8", default="auto", metavar="FLAVOUR",
                   help="int8 flavour: auto (the fastest accurate one, measured once per host and model family) | "
                        "qdq-s8s8 | qdq-u8s8 | qop-s8s8 | qop-u8s8")
    add_weight_algos_arg(p)
    p.set_defaults(fn=_export)
    p = sub.add_parser("tflite", help="export to TFLite and validate against Keras")
    add_model_args(p)
    p.add_argument("--quantize", default="fp32", help="fp32 | dynamic | float16 | int8")
    add_weight_algos_arg(p)
    p.set_defaults(fn=_export)
    p = sub.add_parser("run", help="run an exported .onnx/.tflite file on inputs from .npy files")
    p.add_argument("path", help="exported .onnx or .tflite file")
    p.add_argument("--input", action="append", required=True, metavar="[NAME=]FILE.npy",
                   help="input array (repeat with NAME= for multi-input models)")
    p.add_argument("-o", "--output", default=None, metavar="OUT.npz", help="also write the outputs to an .npz file")
    p.add_argument("--provider", default=None,
                   help="ONNX Runtime execution provider, e.g. CPUExecutionProvider (default: a GPU one if present)")
    p.set_defaults(fn=_run)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(run(main))
