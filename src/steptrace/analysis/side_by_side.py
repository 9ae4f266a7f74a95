"""Runs side by side at one step: the columns that tell what happened, one row per (run, sample)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ..trace.schema import expand
from .gates import _frame_gates
from .rows import _need, run_column, step_rows
from .weights import _params


def compare_at(df: pd.DataFrame, step: int, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The runs side by side at one step: one row per (run, sample), indexed by run.

    ``columns`` are column names, tensors (``w2_after``) or families (``w_after``: every
    layer's). By default the columns that tell what happened: the sample, its loss, each
    gate's input and the δ it lets through (o2 and δ3 in the article), and every parameter
    before and after the update.

    >>> compare_at(df, 2).T  # doctest: +SKIP
    >>> compare_at(df, 2, ["o2_1", "d3", "w2_after"])  # doctest: +SKIP
    """
    key = run_column(df)
    available = [str(c) for c in df.columns]
    if columns is None:
        chosen = [c for c in ("sample", "loss") if c in df.columns]
        for gate in _frame_gates(df):
            chosen += [*gate.inputs, *expand(f"d{gate.layer}", available)]
        chosen += [p.column for which in ("before", "after") for p in _params(available, which)]
    else:
        chosen = [c for name in columns for c in (expand(name, available) or [name])]
    _need(df, *chosen)
    return step_rows(df, step).set_index(key)[chosen]
