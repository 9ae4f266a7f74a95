"""Parameters along a run: the parameter columns found by name, and every layer's weights and
biases in long form, one row per (run, step, parameter), ready to plot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..errors import TraceError
from .rows import _concat, _held, _runs

Array = npt.NDArray[Any]

#: A parameter column: quantity (w, b), layer, before/after, neuron j, input i (weights only).
_PARAM = re.compile(r"([wb])(\d+)_(before|after)_(\d+)(?:_(\d+))?")

#: :func:`weights_long`'s columns.
WEIGHT_COLUMNS = ["step", "run", "layer", "quantity", "j", "i", "value"]


@dataclass(frozen=True)
class _Param:
    """One parameter column: ``w4_after_1_2`` is quantity w of layer 4, j = 1, i = 2."""

    column: str
    quantity: str
    layer: int
    j: int
    i: int | None

    @property
    def order(self) -> tuple[int, int, int, int]:
        """As the stack flattens them: by layer, W row by row, then b."""
        return (self.layer, self.quantity == "b", self.j, self.i or 0)


def _params(columns: Iterable[Any], which: str) -> list[_Param]:
    found = []
    for c in map(str, columns):
        m = _PARAM.fullmatch(c)
        if m and m.group(3) == which:
            i = int(m.group(5)) if m.group(5) else None
            found.append(_Param(c, m.group(1), int(m.group(2)), int(m.group(4)), i))
    return sorted(found, key=lambda p: p.order)


def weights_long(df: pd.DataFrame, which: str = "after") -> pd.DataFrame:
    """Every layer's parameters along the run, in long form, ready to plot: one row per (run,
    step, parameter) with ``step, run, layer, quantity, j, i, value``. ``quantity`` is ``w``
    (weight W[j, i]: neuron j, input i) or ``b`` (bias b[j], ``i`` missing); ``which="before"``
    gives the values each step started from, ``"after"`` (the default) those it ended with.

    >>> w = weights_long(df)  # doctest: +SKIP
    >>> w2 = w[(w.layer == 2) & (w.i == 2)]  # doctest: +SKIP
    >>> w2.pivot(index="step", columns="run", values="value").plot()  # doctest: +SKIP
    """
    if which not in ("before", "after"):
        raise TraceError(f"which must be 'before' or 'after', got {which!r}")
    if not _params(df.columns, which):
        raise TraceError(f"these rows have no parameter columns (w{{k}}_{which}_…); load them too")
    frames = [_run_weights(run, rows, which) for run, rows in _runs(df)]
    out = _concat(frames, WEIGHT_COLUMNS)
    out["i"] = out["i"].astype("Int64")
    return out


def _run_weights(run: Any, rows: pd.DataFrame, which: str) -> pd.DataFrame:
    params = [p for p in _params(rows.columns, which) if p.column in _held(rows, [p.column])]
    first = rows.drop_duplicates("step")  # every row of a step holds the same parameters
    values = first[[p.column for p in params]].to_numpy(np.float64)
    n_steps, n = values.shape

    def each(field: str) -> Array:
        return np.tile(np.array([getattr(p, field) for p in params], dtype=object), n_steps)

    return pd.DataFrame(
        {
            "step": np.repeat(first["step"].to_numpy(np.int64), n),
            "run": run,
            "layer": each("layer").astype(np.int64),
            "quantity": each("quantity").astype(str),
            "j": each("j").astype(np.int64),
            "i": pd.array(each("i"), dtype="Int64"),
            "value": values.reshape(-1),
        }
    )
