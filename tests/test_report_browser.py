"""report.html in a real browser: Debian's headless Chromium renders it offline, without script errors, with the
summary and the Plotly figures drawn, and its selects and sortable tables working."""
import json
import re
import subprocess
from pathlib import Path

import pytest

from benchmarks.report import markdown as report

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=8000"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no browser: {CHROMIUM} is not installed "
                                                              "(apt-get install chromium; .ci/run does)")

# runs after the page loaded: switch the first model's plots to the second batch/threads choice, sort the summary
# by speedup, and log what the page shows
CHECK = """<script>
window.addEventListener('load', () => setTimeout(() => {
  try {
    const s = document.querySelector('section.model-plots'), bt = s.querySelector('select.bt');
    bt.value = bt.options[1].value; bt.dispatchEvent(new Event('change'));
    const gd = s.querySelector('.js-plotly-plot');
    const shown = gd.data.filter(t => t.visible !== false).map(t => t.meta.batch + '|' + t.meta.threads);
    const th = [...document.querySelectorAll('table.sortable')[0].tHead.rows[0].cells]
      .find(c => c.textContent === 'speedup');
    th.click();
    const first = document.querySelectorAll('table.sortable')[0].tBodies[0].rows[0].cells[th.cellIndex].textContent;
    console.log('CT-CHECK ' + JSON.stringify({shown: [...new Set(shown)], option: bt.value, sorted: th.className,
                                               first: first, svgs: document.querySelectorAll('svg.main-svg').length}));
  } catch (e) { console.log('CT-CHECK-ERROR ' + e); }
}, 200));
</script></body>"""


def _row(variant, runtime, p50, metric=0.9, size=4000, batch=1, threads=2, host="hostA | Xeon | 2 cores | avx2", **kw):
    base = dict(key=f"{variant}-{runtime}-{batch}-{threads}-{host}", model="cnn", model_key="cnn-1", variant=variant,
                runtime=runtime, provider="cpu", batch=batch, threads=threads, status="ok", reason=None,
                metric_name="accuracy", higher_is_better=1, metric=metric, size=size, size_gzip=size // 2,
                init_ms=1.0, first_ms=1.0, runs=50, min_ms=p50, mean_ms=p50, std_ms=0.01, p50_ms=p50,
                p90_ms=p50 * 1.02, p99_ms=p50 * 1.05, max_ms=p50 * 2, throughput=batch / p50 * 1000,
                peak_rss_mb=100, host=host, versions={"tf": "x"}, git_rev="abc", created="now")
    base.update(kw)
    return base


def _rows():
    rows = []
    for host, slow in (("hostA | Xeon | 2 cores | avx2", 1.0), ("hostB | EPYC | 8 cores | avx2 avx512_vnni", 0.5)):
        for batch, threads, scale in ((1, 2, 1.0), (1, 1, 1.6), (32, 2, 12.0)):
            k = dict(batch=batch, threads=threads, host=host)
            rows += [_row("fp32", "keras", 3.0 * slow * scale, **k),
                     _row("tflite-fp32", "litert", 1.0 * slow * scale, **k),
                     _row("tflite-int8", "litert", 0.4 * slow * scale, 0.895, size=1000, **k),
                     _row("onnx-fp32", "onnxruntime-cpu", 0.9 * slow * scale, **k),
                     _row("onnx-int8", "onnxruntime-cpu", 1.5 * slow * scale, 0.9, size=1100, **k)]
    missing = _row("onnx-fp32", "onnxruntime-cuda", 1.0, status="unavailable",
                   reason="CUDAExecutionProvider is not in this onnxruntime build's providers")
    rows.append({**missing, **{k: None for k in ("p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "metric")}})
    return rows


def _chromium(tmp_path, *args):
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=180)


def test_report_renders_in_headless_chromium(tmp_path):
    page = report.write(_rows(), tmp_path)[1]
    check = tmp_path / "check.html"
    check.write_text(page.read_text().replace("</body>", CHECK))
    res = _chromium(tmp_path, "--dump-dom", check.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    console = [line for line in res.stderr.splitlines() if ":CONSOLE" in line]
    errors = [line for line in console if "Uncaught" in line or "CT-CHECK-ERROR" in line or "Error" in line]
    assert not errors, errors
    (found,) = [json.loads(re.search(r"CT-CHECK (\{.*?\})\"", line).group(1)) for line in console if "CT-CHECK" in line]
    assert found["shown"] == [found["option"]] and found["option"] != "1|2"  # only the chosen batch/threads
    assert found["sorted"] == "sorted-asc" and found["first"] == "1.00×"  # ascending: no speedup first
    assert found["svgs"] >= 6  # 3 figures drawn (2 svg layers each)
    dom = res.stdout
    assert "Summary (budget: 1 point)" in dom and "<b>tflite-int8 on litert</b>" in dom
    assert dom.count("CUDAExecutionProvider is not in") == 1 and "p50 latency per host" in dom

    shot = tmp_path / "report.png"
    res = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1300,1800", page.as_uri())
    assert res.returncode == 0 and shot.stat().st_size > 20_000, res.stderr[-2000:]
