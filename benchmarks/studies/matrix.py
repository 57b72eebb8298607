"""Every technique on every zoo model: metric before/after, gzip size ratio, layers skipped (for notes).

    python -m benchmarks.studies.matrix [--tiny] [--models ...] [--limit N]

Fine-tuning follows each model's plan (compress.techniques.finetune.for_spec: one epoch, at most ``--limit``
training samples); models trained by custom loops run one-shot, as the plan says.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from models import registry
from models.artifacts import sizes
from models.cli import ArgumentParser, run
from models.training import evaluate, train
from compress.techniques import channels
from compress.techniques import clustering
from compress.techniques import finetune
from compress.techniques import pruning
from compress.techniques import qat

TECHNIQUES = {
    "prune": lambda m, t: pruning.prune(m, t, sparsity=0.5),
    "2:4": lambda m, t: pruning.prune(m, t, m_by_n=(2, 4)),
    "channel": lambda m, t: channels.channel_prune(m, t, ratio=0.5),
    "cluster": lambda m, t: clustering.cluster(m, t, clusters=16, init="kmeans++"),
    "qat": lambda m, t: qat.qat(m, t),
    "pqat": lambda m, t: qat.pqat(m, t, sparsity=0.5),
    "cqat": lambda m, t: qat.cqat(m, t, clusters=16, init="kmeans++"),
}


def _gzip_size(model) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.keras"
        model.save(path)
        return sizes(path)[1]


def main(argv=None):
    parser = ArgumentParser(prog="python -m benchmarks.studies.matrix")
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--limit", type=int, default=512)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    print("| model | technique | metric before | after | gzip size ratio | applied/weighted layers | skipped (reason) |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models or registry.names():
        trained = train(registry.get(name), tiny=args.tiny, cache=args.cache_dir)
        splits, spec = trained.splits(), trained.spec
        source = trained.load()
        before, base = trained.metric, _gzip_size(source)
        plan = finetune.for_spec(spec, trained.config, splits, epochs=1, limit=args.limit)
        for technique, apply in TECHNIQUES.items():
            try:
                model, outcome = apply(trained.load(), plan)
            except Exception as e:  # a technique that cannot run says why
                print(f"| {name} | {technique} | {before:.4f} | | | | error: {str(e).splitlines()[0][:120]} |",
                      flush=True)
                continue
            if not outcome.ran:
                print(f"| {name} | {technique} | {before:.4f} | | | 0 | {outcome.reason()[:160]} |", flush=True)
                continue
            after = evaluate(spec, model, splits, trained.config)
            weighted = len(outcome.applied) + len(outcome.skipped)
            skipped = "; ".join(f"{k}: {v}" for k, v in list(outcome.skipped.items())[:3])
            more = f" (+{len(outcome.skipped) - 3} more)" if len(outcome.skipped) > 3 else ""
            print(f"| {name} | {technique} | {before:.4f} | {after:.4f} | {_gzip_size(model) / base:.2f} "
                  f"| {len(outcome.applied)}/{weighted} | {skipped[:200]}{more} |", flush=True)


if __name__ == "__main__":
    raise SystemExit(run(main))
