"""Parameters along a run: the parameter columns found by name, and every layer's weights and
biases in long form, one row per (run, step, parameter), ready to plot.

A linear layer's parameters are indexed as the series numbers them, from 1 (``j``, ``i``); an
image layer's as numpy and :func:`~steptrace.load_tensor` index them, from 0 (a kernel's
``out_channel``, ``in_channel``, ``row``, ``column``; a normalization's ``channel``), the
convention of :mod:`steptrace.trace.names`, which tells the layers apart.
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
from ..trace.names import Shapes, layer_kind
from ..trace.schema import split_column, tensors_from_columns
from .rows import _concat, _held, _runs

Array = npt.NDArray[Any]

#: A parameter column: quantity (w, b), layer, before/after, then its index.
_PARAM = re.compile(r"([wb])(\d+)_(before|after)((?:_\d+)+)")

#: :func:`weights_long`'s columns (of runs whose layers are all 1D).
WEIGHT_COLUMNS = ["step", "run", "layer", "quantity", "j", "i", "value"]
#: The columns image layers' parameters add, before ``value``: a kernel's indices and a
#: normalization's channel, from 0.
IMAGE_WEIGHT_COLUMNS = ["out_channel", "in_channel", "row", "column", "channel"]
#: Which index column holds each position of a parameter's index, by the kind of its layer and
#: quantity; a linear layer's from 1 (as its columns), the others from 0.
_INDEX_COLUMNS = {
    ("linear", "w"): ("j", "i"),
    ("linear", "b"): ("j",),
    ("normalization", "w"): ("j",),  # γ of neuron j
    ("normalization", "b"): ("j",),  # β of neuron j
    ("conv2d", "w"): ("out_channel", "in_channel", "row", "column"),
    ("conv2d", "b"): ("out_channel",),
    ("channel normalization", "w"): ("channel",),
    ("channel normalization", "b"): ("channel",),
}
_FROM_ONE = frozenset({"j", "i"})


@dataclass(frozen=True)
class _Param:
    """One parameter column: ``w4_after_1_2`` is quantity w of layer 4 at index (1, 2), the
    weight of a ``linear`` layer's neuron 1 from its input 2."""

    column: str
    quantity: str
    layer: int
    index: tuple[int, ...]
    kind: str = "linear"

    @property
    def order(self) -> tuple[Any, ...]:
        """As the stack flattens them: by layer, W row by row, then b."""
        return (self.layer, self.quantity == "b", self.index)

    @property
    def image(self) -> bool:
        return self.kind in ("conv2d", "channel normalization")

    def indices(self) -> dict[str, int]:
        """The long form's index columns of this parameter (``{"j": 1, "i": 2}``)."""
        names = _INDEX_COLUMNS.get((self.kind, self.quantity), ())
        return {
            name: i if name in _FROM_ONE else i - 1
            for name, i in zip(names, self.index, strict=False)
        }


def _params(columns: Iterable[Any], which: str, shapes: Shapes | None = None) -> list[_Param]:
    """The parameter columns among ``columns`` (``which``: before or after the step); their
    layers' kinds from ``shapes``, else from the columns' own indices."""
    found = []
    for c in map(str, columns):
        m = _PARAM.fullmatch(c)
        split = split_column(c)
        if m and split and m.group(3) == which:
            q, k, index = m.group(1), int(m.group(2)), split[1]
            kind = layer_kind(k, shapes or {}, len(index) if q == "w" else None)
            found.append(_Param(c, q, k, index, kind))
    return sorted(found, key=lambda p: p.order)


def weights_long(df: pd.DataFrame, which: str = "after") -> pd.DataFrame:
    """Every layer's parameters along the run, in long form, ready to plot: one row per (run,
    step, parameter) with ``step, run, layer, quantity, j, i, value``. ``quantity`` is ``w``
    (weight W[j, i]: neuron j, input i) or ``b`` (bias b[j], ``i`` missing); ``which="before"``
    gives the values each step started from, ``"after"`` (the default) those it ended with.

    Runs with image layers add :data:`IMAGE_WEIGHT_COLUMNS` before ``value``, numbered from 0
    as :func:`~steptrace.load_tensor` indexes the tensors: a convolution's kernel weight
    (``w``) has ``out_channel, in_channel, row, column``, its bias (``b``) ``out_channel``; a
    normalization's γ (``w``) and β (``b``) have ``channel`` on an image, and ``j`` (a neuron,
    from 1) on a 1D input. The index columns a parameter lacks are missing (``<NA>``).

    >>> w = weights_long(df)  # doctest: +SKIP
    >>> w2 = w[(w.layer == 2) & (w.i == 2)]  # doctest: +SKIP
    >>> w2.pivot(index="step", columns="run", values="value").plot()  # doctest: +SKIP
    """
    if which not in ("before", "after"):
        raise TraceError(f"which must be 'before' or 'after', got {which!r}")
    if not _params(df.columns, which):
        raise TraceError(f"these rows have no parameter columns (w{{k}}_{which}_…); load them too")
    runs = [(run, rows, _run_params(rows, which)) for run, rows in _runs(df)]
    images = any(p.image for _, _, params in runs for p in params)
    columns = WEIGHT_COLUMNS[:-1] + (IMAGE_WEIGHT_COLUMNS if images else []) + ["value"]
    out = _concat([_run_weights(run, rows, params, columns) for run, rows, params in runs], columns)
    for name in columns[4:-1]:
        out[name] = out[name].astype("Int64" if images or name != "j" else np.int64)
    return out


def _run_params(rows: pd.DataFrame, which: str) -> list[_Param]:
    """The parameters one run holds, its layers told apart by its own tensors' shapes."""
    held = _held(rows, rows.columns)
    shapes = {t.name: t.shape for t in tensors_from_columns(held)}
    return _params(held, which, shapes)


def _run_weights(
    run: Any, rows: pd.DataFrame, params: list[_Param], columns: list[str]
) -> pd.DataFrame:
    first = rows.drop_duplicates("step")  # every row of a step holds the same parameters
    values = first[[p.column for p in params]].to_numpy(np.float64)
    n_steps, n = values.shape
    indices = [p.indices() for p in params]

    def each(values: list[Any]) -> Array:
        return np.tile(np.array(values, dtype=object), n_steps)

    frame: dict[str, Any] = {
        "step": np.repeat(first["step"].to_numpy(np.int64), n),
        "run": run,
        "layer": each([p.layer for p in params]).astype(np.int64),
        "quantity": each([p.quantity for p in params]).astype(str),
    }
    for name in columns[4:-1]:
        frame[name] = pd.array(each([ix.get(name) for ix in indices]), dtype="Int64")
    frame["value"] = values.reshape(-1)
    return pd.DataFrame(frame)
