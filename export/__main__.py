"""python -m export {onnx,tflite,run}"""
from __future__ import annotations

from pathlib import Path

from models.cli import ArgumentParser, console, run
from models.errors import UserError


def _export(args):
    from compress.ptq import QuantRecipe
    from models.loading import resolve

    from .cli_common import default_output, parse_batch, report
    from .exporter import export

    try:
        recipe = QuantRecipe(args.command, args.quantize)
    except ValueError as e:
        raise UserError(str(e)) from None
    batch = parse_batch(args.batch)
    out = console()
    with out.status(f"preparing {args.model}..."):
        subject = resolve(args.model, tiny=args.tiny, cache=args.cache_dir, unsafe=args.unsafe)
    path = Path(args.output or default_output(subject.name, args.command, args.quantize))
    with out.status(f"converting to {recipe} and validating..."):
        result = export(subject, recipe, path, opset=getattr(args, "opset", None), batch=batch,
                        allow_flex=args.allow_flex, enforce=not args.no_validate)
    report(out, result, subject)


def _run(args):
    import numpy as np

    from . import runtime

    path = Path(args.path)
    try:
        model = runtime.load(path)
    except runtime.RuntimeModelError as e:
        raise UserError(str(e)) from None
    inputs = {}
    for spec in args.input:
        name, _, file = spec.rpartition("=")
        try:
            arr = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read input {file}: {e}") from None
        inputs[name or model.input_names[0]] = arr
    try:
        outputs = model.predict(inputs if len(inputs) > 1 or model.input_names[0] in inputs else next(iter(inputs.values())))
    except runtime.RuntimeModelError as e:
        raise UserError(str(e)) from None
    outputs = outputs if isinstance(outputs, list) else [outputs]
    np.set_printoptions(precision=5, suppress=True, threshold=200)
    for name, value in zip(model.output_names, outputs):
        print(f"{name} {tuple(value.shape)}:\n{value}")
        if value.ndim == 2 and value.shape[1] > 1:
            print(f"{name} argmax: {value.argmax(-1)}")


def main(argv=None):
    from .cli_common import add_model_args

    parser = ArgumentParser(prog="python -m export", description="Export to ONNX/TFLite with a parity check.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("onnx", help="export to ONNX (tf2onnx) and validate against Keras")
    add_model_args(p)
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    p.add_argument("--quantize", default="fp32", help="fp32 | float16 | dynamic | int8 (ONNX Runtime quantization)")
    p.set_defaults(fn=_export)
    p = sub.add_parser("tflite", help="export to TFLite and validate against Keras")
    add_model_args(p)
    p.add_argument("--quantize", default="fp32", help="fp32 | dynamic | float16 | int8")
    p.set_defaults(fn=_export)
    p = sub.add_parser("run", help="run an exported .onnx/.tflite file on inputs from .npy files")
    p.add_argument("path", help="exported .onnx or .tflite file")
    p.add_argument("--input", action="append", required=True, metavar="[NAME=]FILE.npy",
                   help="input array (repeat with NAME= for multi-input models)")
    p.set_defaults(fn=_run)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(run(main))
