"""Losses along a run: each step's batch loss and each epoch's loss, per run.

A step's batch loss is the mean of its samples' losses; an epoch's, the mean of its steps'
batch losses or of its samples' losses. NaN and ±inf are never skipped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..errors import TraceError
from ..trace.summary import group_means, group_starts
from .rows import _concat, _need, _runs, run_column


def batch_loss(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, step): ``run, step, epoch, loss`` with the step's batch loss.

    >>> batch_loss(df).pivot(index="step", columns="run", values="loss")  # doctest: +SKIP
    """
    _need(df, "step", "epoch", "loss")
    return _mean_loss(df, run_column(df), "step", "epoch")


def epoch_loss(df: pd.DataFrame, per: str = "step") -> pd.DataFrame:
    """One row per (run, epoch): ``run, epoch, loss``, the mean of the epoch's batch losses
    (``per="step"``) or of its samples' losses (``per="sample"``).

    >>> epoch_loss(df).pivot(index="epoch", columns="run", values="loss")  # doctest: +SKIP
    """
    if per not in ("step", "sample"):
        raise TraceError(f"per must be 'step' or 'sample', got {per!r}")
    _need(df, "step", "epoch", "loss")
    source = batch_loss(df) if per == "step" else df
    return _mean_loss(source, run_column(df), "epoch")


def _mean_loss(rows_of: pd.DataFrame, key: str, by: str, *carried: str) -> pd.DataFrame:
    """Per run, the mean loss of each group of consecutive rows with the same ``by``, and the
    ``carried`` columns of each group's first row: ``key, by, *carried, loss``."""
    frames = []
    for run, rows in _runs(rows_of):
        groups = rows[by].to_numpy(np.int64)
        starts = group_starts(groups)
        columns: dict[str, Any] = {key: run, by: groups[starts]}
        columns.update({c: rows[c].to_numpy(np.int64)[starts] for c in carried})
        columns["loss"] = group_means(rows["loss"].to_numpy(np.float64), starts)
        frames.append(pd.DataFrame(columns))
    return _concat(frames, [key, by, *carried, "loss"])
