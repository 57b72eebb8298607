"""report.html: one self-contained page (plotly.js inlined once, works offline), summary first.

Plots are Plotly figures whose traces carry runtime/batch/threads in ``meta``; two selects per model show the
matching traces. Tables sort on a click on their header; each model and its detail table fold (<details>).
"""
from __future__ import annotations

import html as h

from benchmarks.report import plots
from benchmarks.report import profiles as report_profiles
from benchmarks.report.cells import (BUDGET_NOTE, DETAIL_HEADER, detail_cells, models_of, provenance, reused_notes, selfcheck_line,
                     summary_cells, summary_header)
from benchmarks.report.summary import (budgets, choose, detail_rows, many_hosts, ok_rows, reference_metric, slower_than_fp32,
                             unavailable, verdict)

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222;max-width:1400px}
h1{margin-bottom:.2em} h2{margin-top:1.4em} .meta{color:#666;font-size:12px}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:left} th{background:#f3f3f3;cursor:pointer;user-select:none}
th.sorted-asc::after{content:" ▲"} th.sorted-desc::after{content:" ▼"}
tr.best td{background:#f2fbf2} .verdict li{margin:.25em 0} .warn li{color:#8a5300;margin:.2em 0}
details.model{border-top:1px solid #ddd;margin-top:1em;padding-top:.3em}
details.model>summary{font-size:1.35em;font-weight:600;cursor:pointer}
.filters{margin:.5em 0;font-size:13px} .filters select{margin-right:1em}
.missing li{margin:.2em 0}
"""

SCRIPT = r"""
function ctSortTable(th){
  const table = th.closest('table'), body = table.tBodies[0], index = [...th.parentNode.children].indexOf(th);
  const asc = !th.classList.contains('sorted-asc');
  table.querySelectorAll('th').forEach(x => x.classList.remove('sorted-asc', 'sorted-desc'));
  th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
  const key = tr => { const t = tr.children[index].textContent.trim(), n = parseFloat(t.replace(/[×+]/g, ''));
                      return isNaN(n) ? t.toLowerCase() : n; };
  const rows = [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    if (typeof x !== typeof y) return typeof x === 'number' ? -1 : 1;
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); });
  rows.forEach(r => body.appendChild(r));
}
function ctFilter(section){
  const bt = section.querySelector('select.bt').value, rt = section.querySelector('select.rt').value;
  section.querySelectorAll('.js-plotly-plot').forEach(gd => {
    const visible = gd.data.map(t => !t.meta || ((t.meta.batch + '|' + t.meta.threads) === bt
                                                 && (rt === '*' || t.meta.runtime === '*' || t.meta.runtime === rt)));
    Plotly.restyle(gd, {visible: visible});
  });
}
document.addEventListener('DOMContentLoaded', () => {
  document.querySelectorAll('table.sortable th').forEach(th => th.addEventListener('click', () => ctSortTable(th)));
  document.querySelectorAll('section.model-plots').forEach(s =>
    s.querySelectorAll('select').forEach(sel => sel.addEventListener('change', () => ctFilter(s))));
  document.querySelectorAll('details.model').forEach(d => d.addEventListener('toggle', () =>
    d.querySelectorAll('.js-plotly-plot').forEach(gd => Plotly.Plots.resize(gd))));
});
"""


def _e(text) -> str:
    return h.escape(str(text))


def table(header: list[str], body: list[list[str]], classes: list[str] | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{_e(c)}</th>" for c in header) + "</tr>"
    rows = [f"<tr{' class=' + repr(classes[i]) if classes and classes[i] else ''}>"
            + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>" for i, cells in enumerate(body)]
    return f"<table class='sortable'><thead>{head}</thead><tbody>" + "".join(rows) + "</tbody></table>"


def _md_bold(text: str) -> str:
    """The verdict's **x** as <b>x</b> (the only Markdown the summary uses)."""
    parts = _e(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def _figure_html(fig, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def _model_section(model: str, rows: list[dict], all_rows: list[dict], index: int) -> str:
    mrows = [r for r in rows if r["model"] == model]
    parts = [f"<details class='model' open id='model-{index}'><summary>{_e(model)}</summary>"]
    ok = ok_rows(mrows)
    if ok:
        options = "".join(f"<option value='{b}|{t}'>batch {b}, {t} threads</option>" for b, t in plots.combos(ok))
        runtimes = "".join(f"<option value='{_e(r)}'>{_e(r)}</option>" for r in sorted({r["runtime"] for r in ok}))
        parts.append(f"<section class='model-plots'><div class='filters'>show <select class='bt'>{options}</select>"
                     f"runtime <select class='rt'><option value='*'>all runtimes</option>{runtimes}</select></div>")
        for j, make in enumerate((plots.pareto_figure, plots.speedup_figure, plots.hosts_figure)):
            fig = make(model, mrows)
            if fig is not None:
                parts.append(_figure_html(fig, f"fig-{index}-{j}"))
        parts.append("</section>")
    else:
        parts.append("<p>No successful measurement to plot.</p>")
    detail = [r for r in detail_rows(mrows)]
    if detail:
        ref = reference_metric(all_rows, model)
        header = [c.format(metric=detail[0]["metric_name"]) for c in DETAIL_HEADER]
        parts.append(f"<details><summary>All {len(detail)} rows of {_e(model)}</summary>"
                     + table(header, [detail_cells(r, ref) for r in detail]) + "</details>")
        notes = reused_notes(detail)
        if notes:
            parts.append("<p class='meta'>† metric not recomputed in this row: the same file's score on the same "
                         "runtime (export validation) or, with --quick, on another runtime whose outputs agree:<br>" + "<br>".join(_e(n) for n in notes) + "</p>")
    parts.append("</details>")
    return "\n".join(parts)


def page(rows: list[dict], profiles: dict, cache=None) -> str:
    from plotly.offline import get_plotlyjs  # deferred: plotly

    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Benchmark report</title>",
             f"<style>{STYLE}</style><script>{get_plotlyjs()}</script><script>{SCRIPT}</script></head><body>",
             "<h1>Benchmark report</h1>"]
    parts += [f"<div class='meta'>{_e(line)}</div>" for line in provenance(rows)]
    for budget in budgets(rows):
        choices = choose(rows, budget)
        parts.append(f"<h2 id='summary'>Summary (budget: {_e(budget.name)})</h2><ul class='verdict'>")
        for model in models_of(rows):
            mine = [c for c in choices if c.model == model]
            if mine:
                parts.append(f"<li><b>{_e(model)}</b>: {_md_bold(verdict(mine))}</li>")
        parts.append("</ul>")
        parts.append(table(summary_header(rows), [summary_cells(c, many_hosts(rows)) for c in choices],
                           ["best" if c.best is not None and c.best is not c.baseline else "" for c in choices]))
        parts.append(f"<p class='meta'>{_e(BUDGET_NOTE)}</p>")
    missing = unavailable(rows)
    if missing:
        parts.append("<h2>Not available here</h2><ul class='missing'>")
        parts += [f"<li><b>{_e(m.runtime)}</b>: {_e(m.reason)}" + (f". To enable: {_e(m.how)}" if m.how else "")
                  + f" <span class='meta'>({m.rows} row(s) not measured)</span></li>" for m in missing]
        parts.append("</ul>")
    warnings = slower_than_fp32(rows, cache, profiles)
    if warnings:
        parts.append("<h2>Warnings</h2>")
        for model in dict.fromkeys(w.model for w in warnings):
            mine = [w for w in warnings if w.model == model]
            parts.append(f"<details class='warn' open><summary>{_e(model)}: {len(mine)} warning(s)</summary><ul>"
                         + "".join(f"<li>{_e(w.text)}</li>" for w in mine) + "</ul></details>")
    check = selfcheck_line(rows)
    if check:
        parts.append(f"<p class='meta'>{_e(check)}</p>")
    if profiles:
        parts.append(profiles_html(rows, profiles))
    parts.append("<h2>Per model</h2>")
    parts += [_model_section(model, rows, rows, i) for i, model in enumerate(models_of(rows))]
    parts.append("</body></html>")
    return "\n".join(parts)


def profiles_html(rows: list[dict], profiles: dict) -> str:
    parts = ["<h2>Per-layer profiles</h2>"]
    for fp32, int8 in report_profiles.pairs(rows, profiles):
        note = report_profiles.footnote(fp32, int8)
        parts.append(f"<p>{h.escape(report_profiles.caption(fp32, int8))}</p>" + table(report_profiles.header(fp32, int8), report_profiles.side_by_side(fp32, int8))
                     + (f"<p class='meta'>{h.escape(note)}</p>" if note else ""))
    return "\n".join(parts)
