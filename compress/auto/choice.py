"""``compress auto``'s choice among the scored candidates: verdicts, the Pareto front, the chosen file per runtime
and the line that says what was chosen (the search itself is compress.auto.search)."""
from __future__ import annotations

from models import verdict as gate
from benchmarks.report.plots import pareto

from compress.auto import evaluator as auto_eval
from compress.auto.candidates import TIE, Candidate, RuntimeChoice


def _kib(n) -> str:
    return "-" if n is None else f"{n / 1024:.1f} KiB"


def choose(search) -> dict:
    """Per runtime: each candidate's verdict, the Pareto flags, and the chosen candidate (fastest or smallest
    within the budget; else the one that loses least)."""
    choices = {}
    order = (lambda c: (c.size, c.p50_ms)) if search.spec.target == "size" else (lambda c: (c.p50_ms, c.size))
    pick = smallest if search.spec.target == "size" else fastest
    bound_name = "the drop's 95% upper bound" if search.spec.strict else "the drop"
    for rt in search.formats:
        mine = [c for c in search.candidates if c.runtime == rt]
        scored = [c for c in mine if c.status == "scored"]
        for c in mine:
            if c.status != "scored":
                c.verdict = f"{c.status}: {c.reason}"
                continue
            c.within_budget = search.passes(c)
            if c.within_budget:
                c.verdict = f"within budget ({bound_name} {bound(search, c):+.4f} <= {search.budget:.4g})"
            elif search.spec.strict and c.ci_high is None:
                c.verdict = f"refused by --strict: no interval ({c.ci_note})"
            else:
                c.verdict = f"over budget: {bound_name} {bound(search, c):+.4f} > {search.budget:.4g}"
        points = [{"metric": c.metric, "p50_ms": c.p50_ms, "size": c.size} for c in scored]
        for i in pareto(points, search.ref.higher_is_better):
            scored[i].pareto = True
        ok = [c for c in scored if c.within_budget]
        fp32 = search.fp32.get(rt)
        if fp32 in ok:  # fp32 itself is the answer unless a candidate is smaller or faster than it
            for c in ok:
                why = None if c is fp32 else no_gain(c, fp32)
                if why:
                    c.verdict = f"within budget, not chosen: {why}"
            ok = [c for c in ok if c is fp32 or not no_gain(c, fp32)]
        # timed side by side at the end: the others were slower when timed alone, minutes apart
        ok = [c for c in ok if c.finalist] or ok
        if ok:
            best = pick(ok)
            reachable = True
            message = ""
            best.verdict = f"chosen: the {'smallest' if search.spec.target == 'size' else 'fastest'} within budget"
        elif scored:
            best = min(scored, key=lambda c: (c.drop if not search.spec.strict or c.ci_high is None
                                              else c.ci_high,) + order(c))
            reachable = False
            message = ""
            best.verdict = f"chosen although {best.verdict}: the smallest drop of all candidates"
        else:
            best, reachable = None, False
            message = f"{rt}: no candidate could be built and scored, nothing to write (" + "; ".join(
                f"{c.label}: {c.reason}" for c in mine[:3]) + ")"
        if best is not None:
            best.chosen = True
        choices[rt] = RuntimeChoice(rt, best, search.fp32.get(rt), reachable, message)
        if best is not None:
            describe(search, choices[rt], len(scored))
    return choices

def describe(search, choice: RuntimeChoice, n_scored: int) -> None:
    """The runtime's one line: what was chosen, its size/latency vs fp32 and its drop; or that the budget
    was unreachable (and what was written instead)."""
    best, rt = choice.candidate, choice.runtime
    bound_name = "the drop's 95% upper bound" if search.spec.strict else "the drop"
    choice.verdict = verdict_of(search, best)
    if choice.reachable:
        ratio = ratio_text(best, choice.fp32)
        choice.message = (f"{rt}: {best.label}: {_kib(best.size)}, {best.p50_ms:.4g} ms{ratio}, "
                          f"{search.ref.metric_name} {best.metric:.4f}, drop {best.drop_text()} within the budget "
                          f"{search.budget:.4g}")
    else:
        written = "written anyway (--no-validate)" if search.spec.write_unreachable else gate.NOTHING_WRITTEN
        choice.message = (f"{rt}: the budget of {search.budget:.4g} ({bound_name}) is unreachable: no candidate "
                          f"of {n_scored} keeps it; the one that loses least is {best.label}, drop "
                          f"{best.drop_text()}: {written}")


def verdict_of(search, c: Candidate) -> gate.Verdict:
    """The gate's verdict on a scored candidate (what every compress command prints about its result)."""
    ref = search.ref
    return gate.Verdict(ref.metric_name, ref.higher_is_better, ref.value, c.metric, ref.n, search.budget, c.ci_low,
                        c.ci_high, c.ci_note, search.spec.strict, before_label="keras fp32", after_label=c.label,
                        holdout_of_data=search.subject.holdout_of_data)

#: a size ratio to fp32 this close to 1 is 1 (the "1.00x smaller" the choice line prints)
SIZE_ROUNDING = 0.005


def no_gain(c: Candidate, fp32: Candidate) -> str | None:
    """Why ``c`` is no gain over the fp32 file (neither smaller beyond rounding nor faster beyond the timing's
    noise: the median's 95% CI of either, at least TIE), else None. Such a candidate is never chosen over fp32."""
    if fp32.status != "scored" or not c.size or not c.p50_ms:
        return None
    size, speed = fp32.size / c.size, fp32.p50_ms / c.p50_ms
    noise = max(TIE, c.p50_ci or 0.0, fp32.p50_ci or 0.0)
    if size > 1 + SIZE_ROUNDING or speed > 1 + noise:
        return None
    return (f"neither smaller nor faster than fp32 ({size:.2f}x the size, {speed:.2f}x the speed, within the timing's "
            f"noise of {noise:.0%}): fp32 itself is the answer")


def fastest(cands: list[Candidate]) -> Candidate:
    """The fastest, where latencies within the timing's noise (the median's 95% CI, at least TIE) count as
    a tie that the smaller file wins (then the smaller drop)."""
    top = min(cands, key=lambda c: c.p50_ms)
    tol = max(TIE, top.p50_ci or 0.0)
    tied = [c for c in cands if c.p50_ms <= top.p50_ms * (1 + tol)]
    return min(tied, key=lambda c: (c.size, c.drop, c.p50_ms))

def smallest(cands: list[Candidate]) -> Candidate:
    return min(cands, key=lambda c: (c.size, c.p50_ms, c.drop))

def bound(search, c: Candidate) -> float:
    """What the budget is judged on: the drop, or with --strict its 95% upper bound."""
    return c.ci_high if search.spec.strict else c.drop

def ratio_text(c: Candidate, fp32: Candidate | None) -> str:
    if fp32 is None or fp32.status != "scored" or c is fp32:
        return ""
    return f" ({fp32.size / c.size:.2f}x smaller, {fp32.p50_ms / c.p50_ms:.2f}x faster than fp32)"


def retime_finalists(search) -> None:
    """Time the fastest candidates inside the budget (and fp32) again, interleaved in fresh sessions; the
    choice is then made among them (choose).

    Each was timed alone when it was scored, minutes apart; at µs scale this host drifts between states
    (one file: 3.1 µs in some runs of sessions, 4.6-5.5 µs in others), so the choice and its ratio to fp32
    are made from timings taken side by side. The new figures go to the search log, so a resumed search
    chooses as this one did.
    """
    for rt in search.formats:
        if search.time_up():
            return
        inside = sorted((c for c in search.candidates if c.runtime == rt and c.key in search.kept and
                         search.passes(c) and not c.resumed), key=lambda c: c.p50_ms)
        finalists = inside[:auto_eval.FINALISTS]
        fp32 = search.fp32.get(rt)
        if fp32 is not None and fp32 in inside and fp32 not in finalists:
            finalists.append(fp32)
        if len(finalists) < 2:
            continue
        timed = auto_eval.interleaved_p50s({c.key: search.kept[c.key] for c in finalists}, rt,
                                           search.subject.splits.test.x)
        for c in finalists:
            p50s = sorted(timed[c.key])
            median = p50s[len(p50s) // 2]
            c.notes.append(f"timed again beside {len(finalists) - 1} other finalist(s), interleaved in "
                           f"{len(p50s)} fresh sessions each: {', '.join(f'{v:.4g}' for v in timed[c.key])} ms "
                           f"(was {c.p50_ms:.4g} ms timed alone)")
            c.p50_ms, c.p50_ci = median, (p50s[-1] - p50s[0]) / 2 / median if median > 0 else c.p50_ci
            c.finalist = True
            search.log.put(c.key, c.logged())
