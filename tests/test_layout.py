"""The package's folders show the flow, and imports only go one way (docs: README, "How the
code is laid out"): numerics → model → data/schedule → trace → train, compare → analysis,
views → cli, dashboard."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "steptrace"

#: What each part of the package may import from steptrace (besides itself, errors and
#: _version, which everything may use).
MAY_IMPORT = {
    "numerics": set(),
    "model": {"numerics"},
    "data": {"numerics"},
    "schedule": set(),
    "trace": {"numerics", "model", "schedule", "data"},
    "train": {"numerics", "model", "data", "schedule", "trace"},
    "compare": {"numerics", "trace", "model"},
    "analysis": {"numerics", "trace", "model", "schedule"},
    "views": {"numerics", "trace", "compare", "model", "schedule", "analysis"},
}


def part_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def imported_parts(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = list(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    parts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = [*base, *(node.module.split(".") if node.module else [])]
                if len(module) == 1 and node.module is None:  # from . import x
                    module += [alias.name for alias in node.names][:1]
            elif node.module and node.module.startswith("steptrace"):
                module = node.module.split(".")
            else:
                continue
            if len(module) > 1:
                parts.add(module[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("steptrace."):
                    parts.add(alias.name.split(".")[1])
    return parts - {"errors", "_version"}


@pytest.mark.parametrize("part", sorted(MAY_IMPORT))
def test_imports_only_go_one_way(part):
    files = (
        [SRC / f"{part}.py"]
        if (SRC / f"{part}.py").exists()
        else sorted((SRC / part).rglob("*.py"))
    )
    assert files
    for path in files:
        wrong = imported_parts(path) - MAY_IMPORT[part] - {part}
        assert not wrong, f"{path.relative_to(SRC)} imports {sorted(wrong)}"
