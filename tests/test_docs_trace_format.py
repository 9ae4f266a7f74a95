"""docs/trace-format.md's "Reading with other tools" runs: its pandas, Polars and DuckDB
examples, on real runs of two models and two number systems, give what steptrace reads."""

from __future__ import annotations

import os
import re
from pathlib import Path

import duckdb
import numpy as np
import pytest

import steptrace
from tests.test_docs_analysis import python_blocks

DOC = Path(__file__).resolve().parent.parent / "docs" / "trace-format.md"
EXAMPLES = DOC.parent.parent / "examples"
SQL = re.compile(r"^```sql\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The runs the examples name, and a float run beside them (other columns)."""
    traces = tmp_path / "traces"
    made = [
        steptrace.record("seed", lr="1", numerics="exact", out=traces),
        steptrace.record(
            "seed", model=EXAMPLES / "two-layer.json", lr="1/10", numerics="exact", out=traces
        ),
        steptrace.record("seed", lr="1e-7", numerics="float64", epochs=2, out=traces),
    ]
    names = [r.path.name for r in made]
    assert names[:2] == ["seed-exact-lr1", "seed-two-layer-exact-lr1_10"], names
    return tmp_path


def test_the_other_tools_examples_read_every_run_by_name(folder: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Reading with other tools") :]
    blocks = python_blocks(section)
    assert len(blocks) == 3  # pandas, Polars, the stored-once columns (Spark is not run here)
    namespace: dict[str, object] = {}
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        for block in blocks:
            exec(compile(block.code, f"{DOC.name}:{block.line}", "exec"), namespace)
        results = [duckdb.sql(q).fetchall() for q in _statements(section)]
    finally:
        os.chdir(cwd)
    every, every_pl = namespace["every"], namespace["every_pl"]
    rows = 3 + 3 + 6
    assert len(every) == len(every_pl) == rows  # type: ignore[arg-type]
    assert {"o4_1", "w2_after_1_1_exact", "b2_after_2"} <= set(every.columns)  # type: ignore[attr-defined]
    assert set(every.columns) == set(every_pl.columns)  # type: ignore[attr-defined]
    loss, weight, before, footer = results
    assert len({r[0] for r in loss}) == 3 and len(loss) == 3 + 3 + 6
    assert [r[0] for r in weight] == [0, 1, 2] and weight[2][1] == pytest.approx(17400001 / 5800)
    assert before[0][1] is None and before[1][1] == weight[0][1]
    assert '"w2_before_1_1"' in footer[0][0]
    # The stored-once columns put back by hand equal steptrace's own reading.
    df = namespace["df"]
    run = folder / "traces" / "seed-two-layer-exact-lr1_10"
    w_before = steptrace.load_tensor(run, "w2_before")[:, 0, 2]
    assert np.array_equal(df["w2_before_1_3"].to_numpy(), w_before)  # type: ignore[index]
    assert np.array_equal(df["d1_1"], steptrace.load_tensor(run, "d1")[:, 0])  # type: ignore[index]


def _statements(section: str) -> list[str]:
    """The DuckDB statements of the section, each without its comment lines."""
    (block,) = SQL.findall(section)
    lines = [line for line in block.splitlines() if not line.startswith("--")]
    return [q.strip() for q in "\n".join(lines).split(";") if q.strip()]
