"""Frames of trace rows: telling runs apart, the columns a question needs, one step's rows.

Every other module of :mod:`steptrace.analysis` reads its frames through these helpers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pandas as pd

from ..errors import TraceError
from ..trace.schema import EXACT_SUFFIX


def run_column(df: pd.DataFrame) -> str:
    """The column telling runs apart: ``run`` if the rows have it, else ``run_id``."""
    for name in ("run", "run_id"):
        if name in df.columns:
            return name
    raise TraceError("these rows have neither a 'run' nor a 'run_id' column to tell runs apart")


def _need(df: pd.DataFrame, *names: str) -> None:
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise TraceError(f"these rows lack column(s) {', '.join(missing)}; load them too")


def _runs(df: pd.DataFrame) -> Iterator[tuple[Any, pd.DataFrame]]:
    """Each run's rows in recording order (by step; samples of a step as recorded)."""
    key = run_column(df)
    _need(df, "step")
    for run, rows in df.groupby(key, sort=False):
        yield run, rows.sort_values("step", kind="stable")


def _held(rows: pd.DataFrame, columns: Iterable[Any]) -> list[str]:
    """The value columns among ``columns`` this run has: ``load_traces`` fills the columns of
    other runs' layers with NaN on every row of a run without them."""
    names = [str(c) for c in columns if not str(c).endswith(EXACT_SUFFIX)]
    return [c for c in names if c in rows.columns and rows[c].notna().any()]


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)


def step_rows(df: pd.DataFrame, step: int) -> pd.DataFrame:
    """The rows of one step, of every run in ``df`` (one row per sample of its batch).

    >>> step_rows(df, 2)[["run", "o2_1", "loss", "d3_1"]]  # doctest: +SKIP
    """
    _need(df, "step")
    return df[df["step"] == step]
