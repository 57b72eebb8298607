"""DIR/report.md and DIR/report.html for ``compress auto``: the chosen file per runtime first, then the Pareto
front (size and latency against the metric; Plotly with plotly.js inlined, so the page works offline), the
per-layer sensitivity table with the layers kept in float and why, and every candidate with its verdict."""
from __future__ import annotations

import html as h

from models.artifacts import atomic_write_many

CHOSEN_HEADER = ["runtime", "file", "recipe chain", "size", "size vs fp32", "p50 ms", "faster than fp32", "{metric}",
                 "drop [95% CI]", "verdict"]
CANDIDATE_HEADER = ["runtime", "recipe chain", "stage", "size", "p50 ms", "{metric}", "drop [95% CI]", "Pareto",
                    "verdict"]
SENSITIVITY_HEADER = ["rank", "layer", "error", "measure", "ops", "kept in float", "why"]


def _kib(n) -> str:
    return "-" if n is None else f"{n / 1024:.1f} KiB"


def _num(v, fmt=".4f") -> str:
    return "-" if v is None else format(v, fmt)


def summary_lines(result) -> list[str]:
    spec = result.spec
    budget = (f"{spec.max_drop:g} of the fp32 metric ({result.budget:.4g})" if spec.relative
              else f"{result.budget:.4g}")
    lines = [f"metric: {result.metric_name} ({'higher' if result.higher_is_better else 'lower'} is better); "
             f"fp32 Keras on the test split: {result.baseline:.4f}",
             f"budget: drop at most {budget}" + (" at the 95% upper bound (--strict)" if spec.strict else "")
             + f"; target: {spec.target}",
             f"fine-tuning for techniques: {result.fine_tuning}",
             f"search: {result.seconds:.0f} s, {result.new} candidate(s) scored in this run, "
             f"{sum(c.resumed for c in result.candidates)} from the search log",
             "latency: batch 1, 1 thread, benchmarks.runner.measure (Method.quick) on this host; drop: fp32 Keras "
             f"minus the file's metric on the real runtime, paired bootstrap over {spec.resamples} resamples"]
    return lines + list(result.notes)


def chosen_rows(result) -> list[list[str]]:
    rows = []
    for rt, choice in result.choices.items():
        c = choice.candidate
        size_ratio, lat_ratio = choice.ratios()
        if c is None:
            rows.append([rt, "-", "-", "-", "-", "-", "-", "-", "-", choice.message])
            continue
        rows.append([rt, choice.path.name if choice.path else "-", c.label, _kib(c.size),
                     "-" if size_ratio is None else f"{size_ratio:.2f}x", _num(c.p50_ms, ".4g"),
                     "-" if lat_ratio is None else f"{lat_ratio:.2f}x", _num(c.metric), c.drop_text(),
                     ("" if choice.reachable else "BUDGET UNREACHABLE: ") + c.verdict])
    return rows


def candidate_rows(result) -> list[list[str]]:
    return [[c.runtime, c.label, c.stage, _kib(c.size), _num(c.p50_ms, ".4g"), _num(c.metric), c.drop_text(),
             "yes" if c.pareto else "", c.verdict + (" (from the search log)" if c.resumed else "")]
            for c in result.candidates]


def sensitivity_rows(entry: dict) -> list[list[str]]:
    """One row per ranked layer: kept in float or not, and the step of the greedy search that decided it."""
    kept = set(entry.get("kept_float") or [])
    why = {}
    for step in entry.get("steps") or []:
        for layer in step.get("kept_float") or []:
            why.setdefault(layer, step.get("why", ""))
    rows = []
    for i, r in enumerate(entry.get("ranking") or [], 1):
        layer = r.get("layer")
        rows.append([str(i), str(layer), _num(r.get("error"), ".4g"), str(r.get("measure", "")),
                     ", ".join(map(str, r.get("ops") or [])), "yes" if layer in kept else "no",
                     why.get(layer, "not tried: the budget was met first" if entry.get("within_budget")
                             else "not tried")])
    return rows


# -------------------------------------------------------------------------------------------------- markdown

def _md_table(header, rows) -> list[str]:
    esc = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    return ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(map(esc, r)) + " |" for r in rows]


def markdown(result) -> str:
    metric = result.metric_name
    out = [f"# compress auto: {result.subject}", ""] + [f"- {line}" for line in summary_lines(result)]
    out += ["", "## Chosen file per runtime", ""]
    out += _md_table([c.format(metric=metric) for c in CHOSEN_HEADER], chosen_rows(result))
    out += [""] + [f"- {c.message}" for c in result.choices.values()]
    out += ["", "## Pareto front (size, latency, metric)", ""]
    front = [r for r, c in zip(candidate_rows(result), result.candidates) if c.pareto]
    out += _md_table([c.format(metric=metric) for c in CANDIDATE_HEADER], front) if front else ["(none scored)"]
    out += ["", "## Per-layer sensitivity (mixed precision)", ""]
    if not result.sensitivity:
        out.append("Not needed: int8 was within the budget on every runtime (or was not reached).")
    for rt, entry in result.sensitivity.items():
        out += [f"### {rt}", ""]
        if entry.get("skipped"):
            out.append(entry["skipped"])
        else:
            out += _md_table(SENSITIVITY_HEADER, sensitivity_rows(entry))
            if "kept_float" in entry:
                out += ["", f"kept in float: {', '.join(entry['kept_float']) or 'none'}; drop {entry['drop']:+.4f} "
                            f"({'within' if entry['within_budget'] else 'over'} the budget)"]
            if entry.get("stopped"):
                out += ["", entry["stopped"]]
        out.append("")
    out += ["", "## Every candidate", ""]
    out += _md_table([c.format(metric=metric) for c in CANDIDATE_HEADER], candidate_rows(result))
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------------ html

def _e(v) -> str:
    return h.escape(str(v))


def _html_table(header, rows, classes=None) -> str:
    head = "<tr>" + "".join(f"<th>{_e(c)}</th>" for c in header) + "</tr>"
    body = "".join(f"<tr{' class=' + repr(classes[i]) if classes and classes[i] else ''}>"
                   + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for i, r in enumerate(rows))
    return f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"


def figure(result, runtime: str):
    """Size and latency against the metric for one runtime's scored candidates; the front and the choice stand out."""
    import plotly.graph_objects as go  # deferred: plotly
    from plotly.subplots import make_subplots  # deferred: plotly

    scored = [c for c in result.candidates if c.runtime == runtime and c.status == "scored"]
    if not scored:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("size vs metric", "latency vs metric"), horizontal_spacing=0.1)
    groups = [("other", "#9e9e9e", lambda c: not c.pareto and not c.chosen),
              ("Pareto front", "#1f77b4", lambda c: c.pareto and not c.chosen), ("chosen", "#d62728", lambda c: c.chosen)]
    for name, color, keep in groups:
        mine = [c for c in scored if keep(c)]
        if not mine:
            continue
        text = [f"<b>{_e(c.label)}</b><br>{_kib(c.size)}, {c.p50_ms:.4g} ms<br>{result.metric_name} {c.metric:.4f}"
                f"<br>drop {_e(c.drop_text())}" for c in mine]
        for col, x in ((1, [c.size / 1024 for c in mine]), (2, [c.p50_ms for c in mine])):
            fig.add_trace(go.Scatter(x=x, y=[c.metric for c in mine], mode="markers", name=name,
                                     legendgroup=name, showlegend=col == 1, hovertext=text, hoverinfo="text",
                                     marker={"color": color, "size": 11 if name != "other" else 8}), row=1, col=col)
    fig.update_xaxes(title_text="size (KiB)", type="log", row=1, col=1)
    fig.update_xaxes(title_text="p50 latency, batch 1, 1 thread (ms)", type="log", row=1, col=2)
    fig.update_yaxes(title_text=result.metric_name)
    fig.update_layout(height=420, title=f"{result.subject} on {runtime}", margin={"t": 70})
    return fig


STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222;max-width:1400px}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#f3f3f3} tr.chosen td{background:#fde8e8} tr.pareto td{background:#eef5fc} .meta{color:#555}"""


def html(result) -> str:
    from plotly.offline import get_plotlyjs  # deferred: plotly

    metric = result.metric_name
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>compress auto: {_e(result.subject)}</title><style>{STYLE}</style>",
             f"<script>{get_plotlyjs()}</script></head><body>", f"<h1>compress auto: {_e(result.subject)}</h1>",
             "<ul class='meta'>" + "".join(f"<li>{_e(line)}</li>" for line in summary_lines(result)) + "</ul>",
             "<h2>Chosen file per runtime</h2>",
             _html_table([c.format(metric=metric) for c in CHOSEN_HEADER], chosen_rows(result)),
             "<ul>" + "".join(f"<li>{_e(c.message)}</li>" for c in result.choices.values()) + "</ul>",
             "<h2>Pareto front: size and latency against the metric</h2>"]
    for i, rt in enumerate(result.choices):
        fig = figure(result, rt)
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"pareto-{i}",
                                 config={"displaylogo": False, "responsive": True}) if fig is not None
                     else f"<p>{_e(rt)}: no scored candidate to plot.</p>")
    parts.append("<h2>Per-layer sensitivity (mixed precision)</h2>")
    if not result.sensitivity:
        parts.append("<p>Not needed: int8 was within the budget on every runtime (or was not reached).</p>")
    for rt, entry in result.sensitivity.items():
        parts.append(f"<h3>{_e(rt)}</h3>")
        if entry.get("skipped"):
            parts.append(f"<p>{_e(entry['skipped'])}</p>")
            continue
        parts.append(_html_table(SENSITIVITY_HEADER, sensitivity_rows(entry)))
        if "kept_float" in entry:
            parts.append(f"<p>kept in float: {_e(', '.join(entry['kept_float']) or 'none')}; drop "
                         f"{entry['drop']:+.4f} ({'within' if entry['within_budget'] else 'over'} the budget)</p>")
        if entry.get("stopped"):
            parts.append(f"<p>{_e(entry['stopped'])}</p>")
    parts.append("<h2>Every candidate</h2>")
    parts.append(_html_table([c.format(metric=metric) for c in CANDIDATE_HEADER], candidate_rows(result),
                             ["chosen" if c.chosen else "pareto" if c.pareto else "" for c in result.candidates]))
    parts.append("</body></html>")
    return "\n".join(parts)


def write(result) -> None:
    """Both reports together, atomically."""
    atomic_write_many({result.out / "report.md": markdown(result), result.out / "report.html": html(result)})
