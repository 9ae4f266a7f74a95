"""Several runs side by side at one step: one column per run, one row per quantity."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from ..errors import TraceError
from ..trace.reader import Trace
from .divergence import Divergence
from .folder import last_step
from .step import StepView, step_view

#: The recorded fields shown, one row each: (row label, field).
_FIELD_ROWS: list[tuple[str, str]] = [
    ("x", "x"),
    ("o2", "o2"),
    ("o3", "o3"),
    ("loss", "loss"),
    ("δ4", "d4"),
    ("δ3", "d3"),
    ("grad", "grad"),
    ("w", "w_before"),
    ("ŵ", "w_after"),
]

#: The table's rows: (row label, field or ``None`` for a row about the run or the step).
COMPARE_ROWS: list[tuple[str, str | None]] = [
    ("α", None),
    ("numerics", None),
    ("data input", None),
    ("dataset row", None),
    *_FIELD_ROWS,
    ("first divergence", None),
]


def _step_column(view: StepView) -> list[str]:
    """A run's column, from α to ŵ, at a step it recorded."""
    column = [view.lr, view.numerics, view.inputs, ", ".join(str(s.row) for s in view.samples)]
    for _, name in _FIELD_ROWS:
        if name in ("w_before", "w_after"):  # the same on every row of a step
            column.append(view.samples[0].vec(name, view.n))
        else:  # one value per data input of the step
            column.append("; ".join(s.vec(name, view.n) for s in view.samples))
    return column


def compare_at(
    runs: Mapping[str, Trace],
    step: int,
    divergence: Mapping[str, Divergence | None] | None = None,
) -> pd.DataFrame:
    """A side-by-side table of several runs at one step: one column per run, one row per
    quantity (α, x, o2, o3, loss, δ4, δ3, grad, w, ŵ, first divergence). A run that has no such
    step says so in its column.

    >>> compare_at({"lr1": a, "lr0.1": b}, 2).loc["ŵ"]  # doctest: +SKIP
    """
    table: dict[str, list[str]] = {}
    for key, trace in runs.items():
        div = (divergence or {}).get(key)
        div_text = f"{div.step} ({div.why})" if div else "none"
        try:
            view = step_view(trace, step, key)
        except TraceError:
            missing = f"no step {step} (last: {last_step(trace)})"
            column = [trace.lr_text, trace.numerics, *[missing] * (len(COMPARE_ROWS) - 3)]
        else:
            column = _step_column(view)
        table[key] = [*column, div_text]
    return pd.DataFrame(table, index=[label for label, _ in COMPARE_ROWS])
