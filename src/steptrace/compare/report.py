"""Reports of a :class:`~steptrace.compare.traces.Comparison`: text for people, plain JSON for
machines.

Only formatting lives here; what differs is decided in :mod:`steptrace.compare.traces`.

>>> print(format_comparison(compare_traces("golden.parquet", "traces/my-run")))  # doctest: +SKIP
Traces differ.
A: golden.parquet (float64, α=1e-7, 3 rows)
…
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from ..trace.names import Shapes, place

if TYPE_CHECKING:
    from .traces import Comparison, Divergence, Tolerance

__all__ = ["comparison_dict", "describe_divergence", "format_comparison"]

#: Rows found on one side only listed in JSON (all of them are counted).
JSON_ROWS = 100
NOT_COMPARED = "Settings not compared: a DataFrame carries no run metadata."
#: Longest value text shown in the table (exact rationals can run to thousands of digits).
CELL_WIDTH = 24
#: Longest value text shown in the first divergence line.
LINE_WIDTH = 80


# --- JSON ---------------------------------------------------------------------------------


def comparison_dict(r: Comparison) -> dict[str, Any]:
    """``r`` as plain JSON types; non-finite floats become "inf", "-inf", "nan".

    >>> json.dumps(comparison_dict(result))  # doctest: +SKIP
    """
    data = _jsonable(asdict(r))
    assert isinstance(data, dict)
    del data["shapes"]  # what names the values in text; JSON keeps the columns' own names
    for key in ("only_a", "only_b"):  # a long list of missing rows says no more than this
        rows = data[key]
        data[key] = {"count": len(rows), "first": rows[:JSON_ROWS]}
    return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        v = float(value)
        return v if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    return value


# --- text ---------------------------------------------------------------------------------


def describe_divergence(
    d: Divergence, a_name: str = "A", b_name: str = "B", shapes: Shapes | None = None
) -> str:
    """Where the traces part, the value named by layer, quantity and index (see
    :mod:`steptrace.trace.names`; ``shapes``, the traces' tensors, tell what each is):
    ``step 3, sample 1, column w4_after_1_2 (layer 4's weight W[1,2] after the update): A 1/2,
    B …``, or for an image ``step 0, sample 1, o2[1, 3, 0] (layer 2's output, channel 1,
    row 3, column 0): A …``"""
    where = f"step {d.step}, sample {d.sample}"
    if d.kind == "only_a":
        return f"{where}: row in {a_name} only"
    if d.kind == "only_b":
        return f"{where}: row in {b_name} only"
    diff = "" if d.difference is None else f" ({b_name} - {a_name} = {d.difference!r})"
    a, b = _short(d.a, LINE_WIDTH), _short(d.b, LINE_WIDTH)
    return f"{where}, {_named(d.column, shapes)}: {a_name} {a}, {b_name} {b}{diff}"


def _named(column: str | None, shapes: Shapes | None) -> str:
    """``column w4_after_1_2 (layer 4's weight W[1,2] after the update)``, an image's value
    as numpy indexes it, ``o2[1, 3, 0] (layer 2's output, …)``; a column steptrace does not
    describe (a DataFrame's own) by its name alone."""
    found = place(column or "", shapes)
    if found is None:
        return f"column {column}"
    return str(found) if found.image else f"column {found}"


def format_comparison(
    r: Comparison, a_name: str = "A", b_name: str = "B", max_rows: int = 20, title: str = ""
) -> str:
    """The report people read: verdict, first divergence, metadata, a per-column table
    (columns in order of their first difference), rows on one side only.

    >>> print(format_comparison(result, "golden", "obtained"))  # doctest: +SKIP
    """
    rule = _rule(r.tolerance)
    by_tolerance: dict[Tolerance, list[str]] = {}
    for column, tol in r.column_tolerances.items():
        by_tolerance.setdefault(tol, []).append(column)
    for tol, columns in by_tolerance.items():
        rule += f"; {', '.join(columns)}: {_rule(tol)}"
    head = [f"{a_name}: {r.a.describe()}", f"{b_name}: {r.b.describe()}"]
    if r.steps_held is not None:
        both, in_a, in_b = r.steps_held
        head.append(
            f"Compared the {both} steps both runs hold ({a_name} holds {in_a}, {b_name} "
            f"{in_b}), in the {len(r.columns)} columns both hold."
        )
    note = [] if r.metadata_compared else [NOT_COMPARED]
    if r.identical:
        size = f"{len(r.columns)} columns × {r.rows_compared} rows"
        return "\n".join([f"Traces are identical ({size}, {rule}).", *head, *note])
    out = [title or "Traces differ.", *head]
    if _settings_only(r):
        size = f"{len(r.columns)} columns × {r.rows_compared} rows"
        out.append(f"Every value agreed ({size}, {rule}): only the settings differ.")
    if r.first is not None:
        first = describe_divergence(r.first, a_name, b_name, r.shapes)
        out.append("First divergence: " + first)
    if r.metadata:
        out.append("Settings that differ:")
        out += [f"  {m.key}: {a_name} {m.a!r}, {b_name} {m.b!r}" for m in r.metadata]
    if r.column_diffs:
        out.append(
            f"Values that differ ({rule}): {len(r.column_diffs)} of {len(r.columns)} columns, "
            f"{r.rows_compared} rows compared"
        )
        out += _column_table(r, a_name, b_name, max_rows)
    for keys, name in ((r.only_a, a_name), (r.only_b, b_name)):
        if keys:
            out.append(f"Rows in {name} only: {len(keys)} ({_steps(keys)})")
    return "\n".join(out + note)


def _settings_only(r: Comparison) -> bool:
    """Whether the traces differ only in their settings (an exact run and a float64 run that
    agree within the tolerance): every row on both sides, every value agreeing."""
    return bool(r.metadata) and not (r.column_diffs or r.only_a or r.only_b or r.first)


def _rule(tol: Tolerance) -> str:
    exact = tol.rtol == 0 and tol.atol == 0
    return "exact equality" if exact else f"rtol {tol.rtol:g}, atol {tol.atol:g}"


def _column_table(r: Comparison, a_name: str, b_name: str, max_rows: int) -> list[str]:
    """One line per differing column, at most ``max_rows`` of them; an image's values named
    as the first divergence names them (``o2[1, 3, 0]``)."""
    header = ["column", "cells", "first step", "sample", a_name, b_name, "max abs", "max rel"]
    rows = [
        [
            _short_name(d.column, r.shapes),
            f"{d.differing}/{d.compared}",
            str(d.first_step),
            str(d.first_sample),
            _short(d.a, CELL_WIDTH),
            _short(d.b, CELL_WIDTH),
            _num(d.max_abs),
            _num(d.max_rel),
        ]
        for d in r.column_diffs[:max_rows]
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    if len(r.column_diffs) > max_rows:
        lines.append(f"  … and {len(r.column_diffs) - max_rows} more columns")
    return lines


def _short_name(column: str, shapes: Shapes) -> str:
    found = place(column, shapes)
    return column if found is None else found.name


def _short(text: str | None, width: int) -> str:
    text = "" if text is None else text
    return text if len(text) <= width else text[: width - 1] + "…"


def _num(value: float) -> str:
    if math.isnan(value):
        return "-"
    return "inf" if math.isinf(value) else f"{value:.3g}"


def _steps(rows: list[tuple[int, int]]) -> str:
    first, last = rows[0], rows[-1]
    if len(rows) == 1:
        return f"step {first[0]} sample {first[1]}"
    return f"step {first[0]} sample {first[1]} … step {last[0]} sample {last[1]}"
