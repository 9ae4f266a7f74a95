"""The house keeps its shape (docs/architecture.md): the import-linter contracts of
pyproject.toml hold, a broken one fails with the import named, no module imports itself back
through others, and every module is one readable concern."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "steptrace"
#: A module a reader can take in one sitting (the issue that set this said "about 600").
MAX_LINES = 600


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the checkout at ``root`` (its own src/ and dashboard/ imported)."""
    env = {"PYTHONPATH": f"{root / 'src'}:{root}", "PATH": str(Path(sys.executable).parent)}
    return subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
         "--no-cache"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_every_contract_is_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout


@pytest.mark.slow
def test_an_import_pointing_up_fails_naming_it(tmp_path):
    copy = tmp_path / "checkout"
    copy.mkdir()
    shutil.copy(ROOT / "pyproject.toml", copy)
    shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "dashboard", copy / "dashboard",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    layers = copy / "src" / "steptrace" / "model" / "layers.py"
    text = layers.read_text(encoding="utf-8")
    layers.write_text(text.replace("import numpy as np\n", "import numpy as np\n\n"
                                   "from ..trace import schema  # noqa: F401\n", 1))  # fmt: skip
    result = lint_imports(copy)
    assert result.returncode == 1
    assert "Data flows one way: each layer imports only the layers below it BROKEN" in result.stdout
    assert "steptrace.model.layers -> steptrace.trace.schema" in result.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each an import cycle."""
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & graph.modules) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for m in modules:
        if m not in index:
            visit(m)
    return found


def test_no_import_cycle_between_modules():
    graph = grimp.build_graph("steptrace", exclude_type_checking_imports=True)
    # A package's __init__ re-exporting its modules is not a cycle of concerns: leave the
    # packages' own modules out, keep every module of code.
    for package in [m for m in graph.modules if (SRC.parent / m.replace(".", "/")).is_dir()]:
        graph.remove_module(package)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_one():
    graph = grimp.ImportGraph()
    for a, b in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        graph.add_import(importer=a, imported=b)
    assert _cycles(graph) == [["p.a", "p.b", "p.c"]]


def _modules() -> list[Path]:
    return sorted([*SRC.rglob("*.py"), *(ROOT / "dashboard").rglob("*.py")])


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_module_is_one_readable_concern(path):
    text = path.read_text(encoding="utf-8")
    lines = text.count("\n")
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it by concern"
    if path.stat().st_size:
        docstring = ast.get_docstring(ast.parse(text))
        assert docstring, f"{path.relative_to(ROOT)} does not open by saying its concern"
