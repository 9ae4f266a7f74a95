"""Grouping a sweep's runs: the settings that vary among them, each run's group and its label,
runs in order of α within each group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..numerics import parse_exact

#: The settings a sweep's grid varies, in the order runs are grouped by them: α last, since a
#: sweep is read as loss against α, one line per value of the others.
GRID_SETTINGS = ("model", "numerics", "batch_size", "seed", "lr_text")


def varying_settings(table: pd.DataFrame) -> list[str]:
    """The settings of :data:`GRID_SETTINGS` that take more than one value among ``table``'s
    runs (one row per run, like :func:`trace_summaries`'), in that order.

    >>> varying_settings(trace_summaries(runs))  # doctest: +SKIP
    ['batch_size', 'lr_text']
    """
    return [c for c in GRID_SETTINGS if c in table.columns and table[c].nunique(dropna=False) > 1]


def group_label(run: Any, settings: Sequence[str]) -> str:
    """What sets a run's group apart: its value of each of ``settings`` other than α
    (``batch 2, float32``); ``""`` when there are none. ``run`` maps setting names to values
    (a row of :func:`trace_summaries`, a dict)."""
    names = {"batch_size": "batch {}", "seed": "seed {}", "model": "model {}", "numerics": "{}"}
    return ", ".join(names[k].format(_plain_value(run.get(k))) for k in settings if k in names)


def _plain_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return value.item() if hasattr(value, "item") else value


def group_runs(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (one row per run) with its runs grouped by every setting that varies and in
    order of α within each group, and a ``group`` column labelling each run's group
    (:func:`group_label`; ``""`` when only α varies).

    >>> group_runs(trace_summaries(runs))[["group", "lr_text", "final_loss"]]  # doctest: +SKIP
    """
    if table.empty:
        return table.assign(group=pd.Series(dtype=str))
    varying = [k for k in varying_settings(table) if k != "lr_text"]

    def key(i: int) -> tuple[Any, ...]:
        row = table.iloc[i]
        # Missing values (a run without a seed) first; numbers as numbers, α by its value.
        values = [(_plain_value(row[k]) != "-", _plain_value(row[k])) for k in varying]
        lr = float(parse_exact(str(row["lr_text"]))) if "lr_text" in table.columns else 0.0
        return (*values, lr, str(table.index[i]))

    order = sorted(range(len(table)), key=key)
    grouped = table.iloc[order].copy()
    grouped["group"] = [group_label(row, varying) for _, row in grouped.iterrows()]
    return grouped
