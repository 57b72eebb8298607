"""python -m compress {prune,cluster,qat,quantize,channel-prune,preflight,auto}"""
from __future__ import annotations

from pathlib import Path

from models.artifacts import claim_output_file
from models.cli import ArgumentParser, console, input_paths, run
from models.errors import CheckFailed, UserError
from models.verdict import DEFAULT_MAX_DROP, NOTHING_WRITTEN
from compress.techniques.saving import save_keras, save_result

from compress import cli_common as common

# -------------------------------------------------------------------------------------------------- commands


def _prune(args):
    from rich.table import Table  # deferred: only this subcommand needs it (CLI start-up)

    # deferred: the pruning modules load TensorFlow
    from compress.techniques import magnitude
    from compress.techniques.pruning import prune, sparsity_report, verify_m_by_n  # deferred: loads TensorFlow

    m_by_n = tuple(int(v) for v in args.structure.split(":")) if args.structure else None
    tag = f"{m_by_n[0]}x{m_by_n[1]}" if m_by_n else f"{int(args.sparsity * 100)}"
    out_path = Path(args.output or f"{Path(args.model).stem}-pruned{tag}.keras")
    claim = claim_output_file(out_path, input_paths(args))  # before anything is loaded or trained
    out = console()
    what = f"{m_by_n[0]}:{m_by_n[1]} structured sparsity" if m_by_n else f"{args.sparsity:.0%} sparsity"
    subject, plan, pruned, outcome = common.apply_technique(
        args, out, f"pruning to {what}",
        lambda model, plan: prune(model, plan, sparsity=args.sparsity, schedule=args.schedule, m_by_n=m_by_n),
        native=lambda model, plan: magnitude.prune(
            model, plan.data if plan.enabled else None, sparsity=args.sparsity, epochs=plan.epochs,
            batch_size=plan.batch_size, lr=plan.lr, m_by_n=m_by_n, loss=plan.loss, seed=args.tune_seed))
    native = subject.keras == "keras3_native"
    table = Table(title=f"{subject.name}: sparsity per layer")
    for col in ("layer", "weights", "zeros", "sparsity"):
        table.add_column(col)
    for row in (magnitude.sparsity_report(pruned) if native else sparsity_report(pruned)):
        table.add_row(row.layer, str(row.weights), str(row.zeros), f"{row.sparsity:.1%}")
    out.print(table)
    common.print_outcome(out, outcome, plan)
    out.print(f"sparsity of the pruned layers: {outcome.details['achieved_sparsity']:.1%}")
    common.gate(args, out, subject, pruned)
    save_result(subject, pruned, out_path)
    claim.record()
    if m_by_n and native:
        out.print(f"{m_by_n[0]}:{m_by_n[1]} pattern: "
                  + ("verified" if magnitude.m_by_n_holds(pruned, m_by_n) else "BROKEN") + " on the pruned kernels")
    elif m_by_n:
        saved = verify_m_by_n(out_path, m_by_n, outcome.applied)
        bad = [k for k, ok in saved.items() if not ok]
        if bad:
            raise UserError(f"the saved weights break the {m_by_n[0]}:{m_by_n[1]} pattern in {', '.join(bad)}")
        out.print(f"{m_by_n[0]}:{m_by_n[1]} pattern verified on the saved weights of {len(saved)} layer(s)")
    common.print_result(out, subject, out_path)


def _cluster(args):
    # deferred: compress.techniques.clustering loads TensorFlow
    from compress.techniques.clustering import cluster, distinct_values

    out_path = Path(args.output or f"{Path(args.model).stem}-clustered{args.clusters}.keras")
    claim = claim_output_file(out_path, input_paths(args))
    out = console()
    subject, plan, clustered, outcome = common.apply_technique(
        args, out, f"clustering into {args.clusters} centroids",
        lambda model, plan: cluster(model, plan, clusters=args.clusters, init=args.init,
                                    preserve_sparsity=args.preserve_sparsity))
    common.print_outcome(out, outcome, plan)
    counts = distinct_values(clustered, outcome.applied)
    out.print("distinct values per clustered kernel: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    common.gate(args, out, subject, clustered)
    save_result(subject, clustered, out_path)
    claim.record()
    common.print_result(out, subject, out_path)


def _qat(args):
    from export.rewrites import has_rnn, unrolled  # deferred: export.rewrites loads TensorFlow
    from models.training import keras_predict, seed_everything  # deferred: models.training loads TensorFlow

    from compress.techniques import qat as qat_mod  # deferred: compress.techniques.qat loads LiteRT

    default = {"default": "qat", "pqat": "pqat", "cqat": "cqat"}[args.scheme]
    out_path = Path(args.output or f"{Path(args.model).stem}-{default}.tflite")
    claim = claim_output_file(out_path, input_paths(args), also=[f"{out_path}.json"] if out_path.suffix == ".tflite"
                              else [])
    out = console()
    with out.status(f"preparing {args.model}..."):
        subject = common.load_subject(args)
        common.refuse_techniques(subject)
        plan = common.finetune_plan(args, subject)
    for line in subject.describe():
        out.print(line)
    if out_path.suffix == ".keras" and subject.keras == "keras3":
        raise UserError("a QAT .keras result holds tfmot's fake-quant wrappers, which exist only in tf_keras, so it "
                        "cannot be written back as a Keras 3 file; write the int8 model with -o FILE.tflite")
    source = subject.model
    if out_path.suffix == ".tflite" and has_rnn(source):
        source = unrolled(source)  # TFLite needs plain ops for a wrapped RNN (same math in Keras)
        out.print("recurrent layers unrolled over their static time axis for TFLite (same results in Keras)")
    seed_everything(args.tune_seed)  # the same command and --seed give the same model (and file)
    with out.status(f"quantization-aware training ({args.scheme}; {plan.describe()})..."):
        if args.scheme == "pqat":
            qmodel, outcome = qat_mod.pqat(source, plan, sparsity=args.sparsity, qat_lr=args.lr)
        elif args.scheme == "cqat":
            qmodel, outcome = qat_mod.cqat(source, plan, clusters=args.clusters, init=args.init, qat_lr=args.lr)
        else:
            qmodel, outcome = qat_mod.qat(source, plan)
    if not outcome.ran:
        raise UserError(outcome.reason())
    common.print_outcome(out, outcome, plan)
    for key in ("mode", "whole_model_error", "pruning", "clustering", "calibration"):
        if outcome.details.get(key):
            out.print(f"{key.replace('_', ' ')}: {outcome.details[key]}")
    if out_path.suffix == ".keras":
        common.gate(args, out, subject, qmodel, label="QAT (fake-quant)")
        with qat_mod.custom.quantize_scope():
            save_keras(qmodel, out_path)
        claim.record()
        out.print("note: load it inside compress.techniques.custom.quantize_scope() (tfmot's quantize wrappers)")
        common.print_result(out, subject, out_path)
        return
    from export.quantize.ptq import QuantRecipe  # deferred: only this subcommand needs it (CLI start-up)
    from export.cli_common import report  # deferred: only this subcommand needs it (CLI start-up)
    from export.exporter import export  # deferred: export.exporter loads TensorFlow

    if subject.metric is not None and subject.spec.score_fn is None:
        out.print(f"{subject.metric.name} of the QAT (fake-quant) Keras model: "
                  f"{subject.score_predict(keras_predict(qmodel)):.4f}")
    qsubject = subject.with_model(qmodel)
    with out.status("converting the QAT model to an int8 TFLite model and validating..."), \
            qat_mod.custom.quantize_scope():  # the exporter may clone the model (static batch for RNNs)
        # the gate judges the int8 file against the model you gave, not against the fake-quant one
        result = export(qsubject, QuantRecipe("tflite", "dynamic"), out_path, chain=["train", args.scheme],
                        max_drop=args.max_drop, baseline=subject.model, enforce=not args.no_validate)
    claim.record()
    if result.written:
        stats = qat_mod.tflite_weight_stats(result.path.read_bytes())
        if stats:
            zeros = sum(s["zeros"] for s in stats.values()) / sum(s["size"] for s in stats.values())
            distinct = max(s["distinct"] for s in stats.values())
            out.print(f"tflite weights: {len(stats)} tensor(s), {zeros:.1%} zeros, at most {distinct} distinct values")
    report(out, result, qsubject)
    from models.artifacts import sizes  # deferred: only this subcommand needs it (CLI start-up)

    src_raw, src_gz = sizes(subject.path) if subject.path.is_file() else (0, 0)
    out.print(f"size: {src_raw / 1024:.1f} KiB (.keras) -> {result.size / 1024:.1f} KiB raw; gzip "
              f"{src_gz / 1024:.1f} KiB -> {result.size_gzip / 1024:.1f} KiB")


def _channel_prune(args):
    from compress.techniques.channels import channel_prune  # deferred: compress.techniques.channels loads TensorFlow

    out_path = Path(args.output or f"{Path(args.model).stem}-channels{int(args.ratio * 100)}.keras")
    claim = claim_output_file(out_path, input_paths(args))
    out = console()
    subject, plan, smaller, outcome = common.apply_technique(
        args, out, f"removing {args.ratio:.0%} of the channels",
        lambda model, plan: channel_prune(model, plan, ratio=args.ratio, criterion=args.criterion))
    common.print_outcome(out, outcome, plan)
    out.print("widths: " + ", ".join(f"{k} {v}" for k, v in outcome.details["widths"].items()))
    out.print(f"parameters: {outcome.details['params']} ({outcome.details['param_reduction']:.1%} fewer)")
    common.gate(args, out, subject, smaller)
    save_result(subject, smaller, out_path)
    claim.record()
    if args.measure:
        from benchmarks.measure import fp32_tflite, litert_latency_ms  # deferred: benchmarks.measure loads LiteRT

        sample = subject.splits.test.head(1).x
        with out.status("timing batch-1 LiteRT latency..."):
            base = litert_latency_ms(fp32_tflite(subject.model), sample)
            new = litert_latency_ms(fp32_tflite(smaller), sample)
        out.print(f"batch-1 LiteRT latency (fp32, 1 thread): {base:.3f} ms -> {new:.3f} ms ({base / new:.2f}x faster)")
    common.print_result(out, subject, out_path)


def _quantize(args):
    """Post-training quantization produces an exported file, so this runs the export pipeline with a recipe."""
    # deferred: only this subcommand needs it (CLI start-up)
    from export.cli_common import claim_export, default_output, report
    from export.exporter import export  # deferred: export.exporter loads TensorFlow
    from export.onnx import int8_flavour  # deferred: export.onnx loads onnx

    from export.quantize.ptq import QuantRecipe  # deferred: only this subcommand needs it (CLI start-up)

    exclude = tuple(e for spec in (args.exclude or []) for e in spec.split(",") if e)
    try:
        recipe = QuantRecipe(args.format, args.mode, int8_io=args.int8_io, per_channel=not args.per_tensor,
                             calibration=args.calibration, exclude=exclude, onnx_int8=args.onnx_int8,
                             weight_algos=args.weight_algos)
    except ValueError as e:
        raise UserError(str(e)) from None
    claim = claim_export(args.output, args) if args.output else None  # before anything is loaded
    out = console()
    with out.status(f"preparing {args.model}..."):
        subject = common.load_subject(args)
    for line in subject.describe():
        out.print(line)
    path = Path(args.output or default_output(subject.name, args.format, args.mode))
    claim = claim or claim_export(path, args)
    try:
        with out.status("choosing the ONNX int8 flavour for this host (measured once per model family)..."):
            recipe, notes = int8_flavour(subject, recipe, cache=args.cache_dir)
        with out.status(f"quantizing to {recipe}..."):
            result = export(subject, recipe, path, enforce=not args.no_validate, max_drop=args.max_drop)
    except ValueError as e:
        if "nothing to exclude" in str(e):
            raise UserError(str(e)) from None
        raise
    claim.record()
    result.notes[:0] = notes
    report(out, result, subject)


def _preflight(args):
    from rich.table import Table  # deferred: only this subcommand needs it (CLI start-up)

    from models import registry  # deferred: only this subcommand needs it (CLI start-up)

    from compress.techniques.finetune import for_spec  # deferred: compress.techniques.finetune loads TensorFlow
    # deferred: compress.techniques.preflight loads TensorFlow
    from compress.techniques.preflight import TECHNIQUES, preflight, summary

    out = console()
    if args.model in registry.names():  # structure only: build the untrained model, train nothing
        spec = registry.get(args.model)
        config = spec.resolve_config(args.tiny)
        model = spec.build(config)
        if spec.trainable and spec.train_fn is None:
            tuning = "fit() on the training split"
        else:
            # deferred: compress.techniques.finetune loads TensorFlow
            from compress.techniques.finetune import FIT_EQUIVALENT

            tuning = (FIT_EQUIVALENT[spec.name][0] if spec.name in FIT_EQUIVALENT else
                      "none: " + ("not trained (trainable=False)" if not spec.trainable else
                                  "trained by a custom loop (train_fn); techniques run one-shot"))
        name = spec.name
    else:
        subject = common.load_subject(args)
        model, name = subject.model, subject.name
        refused = subject.techniques_refused()
        if refused:  # nothing per layer to tell: the model has no tf_keras layers
            for line in subject.describe():
                out.print(line)
            out.print(f"no technique applies: {refused}")
            return
        tuning = for_spec(subject.spec, {}, subject.splits).describe()
    rows = preflight(model, clusters=args.clusters)
    notes: dict[str, int] = {}
    table = Table(title=f"{name}: which technique applies to which layer (nothing was run)")
    table.add_column("layer", overflow="fold")
    table.add_column("type", overflow="fold")
    for col in TECHNIQUES:
        table.add_column(col, no_wrap=True)
    for row in rows:
        cells = []
        for t in TECHNIQUES:
            reason = row.verdicts.get(t)
            cells.append("applies" if reason is None else f"skipped [{notes.setdefault(reason, len(notes) + 1)}]")
        table.add_row(row.layer, row.kind, *cells)
    out.print(table)
    for reason, number in notes.items():
        out.print(f"[{number}] {reason}")
    counts = summary(rows)
    out.print("layers per technique: " + ", ".join(f"{t} {counts[t]}" for t in TECHNIQUES))
    out.print(f"fine-tuning: {tuning}")


def _auto(args):
    # deferred: only this subcommand needs it (CLI start-up)
    from compress.auto.search import DEFAULT_RUNTIMES, AutoSpec, auto, claim_output

    spec = AutoSpec(Path(args.output), max_drop=args.max_drop, relative=args.relative, target=args.target,
                    runtimes=tuple(args.runtime or DEFAULT_RUNTIMES), time_budget_min=args.time_budget,
                    strict=args.strict, cache=args.cache_dir, tune_seed=args.tune_seed,
                    write_unreachable=args.no_validate)  # option checks before anything is loaded
    claim_output(spec, input_paths(args), take=False)  # a folder of the user's is refused before anything is loaded
    out = console()
    with out.status(f"preparing {args.model}..."):
        subject = common.load_subject(args)
    for line in subject.describe():
        out.print(line)

    def progress(c):
        if c.status != "scored":
            out.print(f"{c.runtime:<16} {c.label:<44} {c.status}: {c.reason}")
            return
        verdict = "ok" if c.within_budget else "over budget" + (" (--strict)" if spec.strict else "")
        out.print(f"{c.runtime:<16} {c.label:<44} {c.size / 1024:9.1f} KiB {c.p50_ms:9.4g} ms  "
                  f"{subject.metric.name} {c.metric:.4f}  drop {c.drop_text()}  {verdict}"
                  + ("  (from the search log)" if c.resumed else ""))
        for note in c.notes:
            if note.startswith("warning: ") and not c.within_budget:  # the likely why of a loss (all in auto.json)
                out.print(f"{'':<17}{note}")

    result = auto(subject, spec, progress, say=out.print)
    for note in result.notes:
        out.print(note)
    refused = []
    for choice in result.choices.values():
        out.print(choice.message + (f" -> {choice.path}" if choice.path else ""))
        if choice.verdict is not None:  # the gate's lines, as every compress command prints them
            for line in choice.verdict.lines():
                out.print(f"  {line}")
            if not choice.reachable:
                refused.append(f"{choice.runtime}: {choice.verdict.failure()}")
    out.print(f"search: {result.seconds:.0f} s, {result.new} new candidate(s); wrote {spec.out / 'auto.json'}, "
              f"{spec.out / 'report.md'}, {spec.out / 'report.html'}")
    if refused and not args.no_validate:
        raise CheckFailed(f"{'; '.join(refused)}; {NOTHING_WRITTEN}")


# ------------------------------------------------------------------------------------------------ the parser


def _common(p, output=True, gate=False):
    """MODEL and its data; with ``gate`` (every command that writes a compressed model) the accuracy gate's options."""
    from models.cli import add_max_drop, add_subject_args  # deferred: only this subcommand needs it (CLI start-up)

    p.add_argument("model", metavar="MODEL", help="path to your .keras/.h5 file or SavedModel (tf_keras or Keras 3), "
                                                  "or a zoo name (trained on demand)")
    add_subject_args(p)
    if gate:
        add_max_drop(p, no_validate=True)
    if output:
        p.add_argument("-o", "--output", default=None)
    p.add_argument("--tiny", action="store_true", help="use the zoo model's tiny configuration")
    p.add_argument("--unsafe", action="store_true", help="allow Lambda layers / serialized code in the model file")
    p.add_argument("--cache-dir", default=None)


def _tuning(p, epochs: int | None, lr: float | None):
    p.add_argument("--epochs", type=int, default=epochs,
                   help="fine-tuning epochs (0: one-shot; default " + (str(epochs) if epochs is not None else
                                                                       "25%% of the model's training, at least 2") + ")")
    p.add_argument("--lr", type=float, default=lr, help="fine-tuning learning rate (default " + (
        f"{lr:g}" if lr is not None else "the model's own training rate, 1e-3 when it set none") + ")")
    p.add_argument("--limit", type=int, default=None, help="fine-tune on the first N training samples only")
    p.add_argument("--seed", type=int, default=0, dest="tune_seed",
                   help="seed of the fine-tuning (shuffles, dropout, initial centroids), run with deterministic ops: "
                        "the same inputs and seed write the same file (default 0; the evaluation hold-out and a "
                        "zoo model's training keep seed 0)")


def main(argv=None):
    parser = ArgumentParser(prog="python -m compress", description="Compression techniques for tf.keras models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prune", help="magnitude pruning (tfmot, per layer) or M:N structured sparsity, fine-tuned, "
                                     "stripped before saving")
    _common(p, gate=True)
    p.add_argument("--sparsity", type=float, default=0.5, help="target fraction of zero weights, in [0, 1)")
    p.add_argument("--schedule", default="polynomial", help="polynomial | constant")
    p.add_argument("--structure", default=None, metavar="M:N",
                   help="structured sparsity instead of --sparsity: M zeros in every N weights (e.g. 2:4)")
    _tuning(p, None, None)
    p.set_defaults(fn=_prune)

    p = sub.add_parser("cluster", help="weight clustering (tfmot, per layer): k shared values per kernel")
    _common(p, gate=True)
    p.add_argument("--clusters", type=int, default=16, help="centroids per kernel (>= 2)")
    p.add_argument("--init", default="kmeans++", help="centroid init: kmeans++ | linear | density | random")
    p.add_argument("--preserve-sparsity", action="store_true", help="keep the zeros of an already pruned model")
    _tuning(p, 1, 1e-4)
    p.set_defaults(fn=_cluster)

    p = sub.add_parser("qat", help="quantization-aware training (whole model or selective), written as int8 TFLite")
    _common(p, gate=True)
    p.add_argument("--scheme", default="default",
                   help="default | pqat (prune, then sparsity-preserving QAT) | cqat (cluster, then "
                        "cluster-preserving QAT)")
    p.add_argument("--sparsity", type=float, default=0.5, help="pqat: sparsity to prune to (0: keep the model's)")
    p.add_argument("--clusters", type=int, default=16, help="cqat: clusters per kernel (0: keep the model's)")
    p.add_argument("--init", default="kmeans++", help="cqat: centroid init")
    _tuning(p, 1, 1e-5)
    p.set_defaults(fn=_qat)

    p = sub.add_parser("quantize", help="post-training quantization to TFLite or ONNX")
    _common(p, gate=True)
    p.add_argument("--format", required=True, help="tflite | onnx")
    p.add_argument("--mode", required=True, help="tflite: fp32 | dynamic | float16 | int8 | 16x8; "
                                                 "onnx: fp32 | dynamic | int8 (static, see --onnx-int8)")
    p.add_argument("--int8-io", action="store_true", help="tflite int8: int8 input and output tensors")
    p.add_argument("--per-tensor", action="store_true", help="onnx: per-tensor instead of per-channel weight scales")
    p.add_argument("--calibration", default="minmax", help="onnx int8: minmax | entropy | percentile")
    p.add_argument("--onnx-int8", default="auto", metavar="FLAVOUR",
                   help="onnx int8 flavour: auto (the fastest accurate one, measured once per host and model family) "
                        "| qdq-s8s8 | qdq-u8s8 | qop-s8s8 | qop-u8s8")
    p.add_argument("--exclude", action="append", metavar="LAYER[,LAYER]",
                   help="keep these layers (or op types, e.g. FULLY_CONNECTED / MatMul) in float")
    from export.cli_common import add_weight_algos_arg  # deferred: only this subcommand needs it (CLI start-up)

    add_weight_algos_arg(p)
    p.set_defaults(fn=_quantize)

    p = sub.add_parser("channel-prune", help="remove whole filters/units by L1 norm, rebuild a smaller model, "
                                             "fine-tune (a real speedup)")
    _common(p, gate=True)
    p.add_argument("--ratio", type=float, default=0.5, help="fraction of each prunable layer's channels to remove")
    p.add_argument("--criterion", default="l1", help="filter importance: l1 | l2")
    p.add_argument("--measure", action="store_true", help="time batch-1 LiteRT latency before and after")
    _tuning(p, 2, 1e-3)
    p.set_defaults(fn=_channel_prune)

    p = sub.add_parser("preflight", help="layer x technique table (applies / skipped: reason); runs nothing")
    _common(p, output=False)
    p.add_argument("--clusters", type=int, default=16, help="clusters to check kernels against")
    p.set_defaults(fn=_preflight)

    p = sub.add_parser("auto", help="search the smallest/fastest exported file within an accuracy budget, per "
                                    "runtime (PTQ, mixed precision, pruning, clustering, channel pruning)")
    p.add_argument("model", metavar="MODEL", help="path to your .keras/.h5 file or SavedModel, or a zoo name")
    from models.cli import add_subject_args  # deferred: only this subcommand needs it (CLI start-up)

    add_subject_args(p)
    p.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP, metavar="DROP",
                   help="the accuracy gate: the largest metric drop allowed vs fp32 Keras, in the metric's units "
                        "(inclusive; default 0.01: one point of accuracy), or a fraction of the fp32 metric with "
                        "--relative; when no candidate keeps it: exit 1, nothing written for that runtime")
    p.add_argument("--no-validate", action="store_true",
                   help="when no candidate keeps the budget, write the one that loses least anyway")
    p.add_argument("--seed", type=int, default=0, dest="tune_seed",
                   help="seed of the techniques' fine-tuning, run with deterministic ops (default 0)")
    p.add_argument("--relative", action="store_true", help="--max-drop is a fraction of the fp32 metric")
    p.add_argument("--target", default="latency", help="latency (default: the fastest within budget) | size")
    p.add_argument("--runtime", nargs="+", default=None, metavar="RUNTIME",
                   help="runtimes to search for (default: litert onnxruntime-cpu)")
    p.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                   help="stop scoring new candidates after MIN minutes and choose among those scored")
    p.add_argument("--strict", action="store_true", help="require the drop's 95%% upper bound within the budget")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="directory for best-<runtime>.<ext>, auto.json, report.md/html and the search log")
    p.add_argument("--tiny", action="store_true", help="use the zoo model's tiny configuration")
    p.add_argument("--unsafe", action="store_true", help="allow Lambda layers / serialized code in the model file")
    p.add_argument("--cache-dir", default=None)
    p.set_defaults(fn=_auto)

    args = parser.parse_args(argv)
    common.validate(args)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(run(main))
