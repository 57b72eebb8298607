"""The layout in ARCHITECTURE.md, checked: imports point down the layers, no cycles, small folders, and every import
left inside a function says why. Read from the code with ast (as ../shared/tools/layers.py does), so it runs on a
clean clone that has no ../shared."""
import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "export", "compress", "benchmarks")
LAYERS = ("models", "compress.techniques", "export", "benchmarks", "compress.auto", "compress")  # bottom to top
MAX_MODULES_PER_FOLDER = 15


def _modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, known: dict) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _layer(module: str) -> int | None:
    hits = [i for i, unit in enumerate(LAYERS) if module == unit or module.startswith(unit + ".")]
    return max(hits, key=lambda i: len(LAYERS[i])) if hits else None


@pytest.fixture(scope="module")
def graph():
    known = _modules()
    g = nx.DiGraph()
    g.add_nodes_from(known)
    for name, path in known.items():
        g.add_edges_from((name, dep) for dep in _imports(name, path, known))
    return g


def test_no_import_cycles(graph):
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert cycles == []


def test_imports_point_down_the_layers(graph):
    upward = [f"{a} ({LAYERS[_layer(a)]}) imports {b} ({LAYERS[_layer(b)]})" for a, b in graph.edges
              if _layer(a) is not None and _layer(b) is not None and _layer(b) > _layer(a)]
    assert upward == []


def test_every_module_has_a_layer(graph):
    assert [m for m in graph if _layer(m) is None] == []


def test_folders_stay_small():
    big = {str(d.relative_to(ROOT)): n for pkg in PACKAGES for d in [ROOT / pkg, *(ROOT / pkg).rglob("*/")]
           if d.is_dir() and (n := len(list(d.glob("*.py")))) > MAX_MODULES_PER_FOLDER}
    assert big == {}


def test_function_local_imports_say_why():
    """An import inside a function is there for start-up time or an optional library, and says so."""
    silent = []
    for name, path in _modules().items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        own = lines[node.end_lineno - 1]
                        above = lines[node.lineno - 2].strip()
                        if "#" not in own and not above.startswith("#"):
                            silent.append(f"{path.relative_to(ROOT)}:{node.lineno}: {own.strip()}")
    assert silent == []


def test_the_shared_layer_tool_agrees():
    """The workspace's own checker, where this checkout sits beside ../shared (a clean CI clone has none: the tests
    above are the same check)."""
    tool = ROOT.parent / "shared" / "tools" / "layers.py"
    if not tool.exists():
        pytest.skip(f"{tool} is not beside this checkout; test_no_import_cycles and "
                    "test_imports_point_down_the_layers check the same")
    r = subprocess.run([sys.executable, str(tool), *PACKAGES, "--layers", *LAYERS], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("0 problem(s)")
