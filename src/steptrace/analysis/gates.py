"""Gates and dead units: which layers switch at 0 on their input, how often their units were
closed, and which ReLU units stayed closed for good.

A gate's units are its input's neurons, or on an image its channels: a channel is closed on a
row when every one of its pixels is (then its kernel learns nothing from that row), open when
one is not.

On disk (:func:`~steptrace.analysis.trace_summaries`) the gates are the model's, from the run's
metadata. A frame of rows has no metadata, so there a layer k counts as a gate when its rows
show one: o{k} has the shape of o{k−1} and, on every row where both are numbers, o{k} =
o{k−1} (or 1, for a Heaviside) where o{k−1} ≥ 0, and where o{k−1} < 0 it is 0 or pulled towards
0 without changing sign (a leaky ReLU with a slope between 0 and 1). A layer that passes its
input unchanged and never sees a negative one is taken for a ReLU, which changes no count: its
units are never closed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..trace.reader import Trace
from ..trace.schema import tensors_from_columns
from ..trace.summary import group_starts
from .rows import _held, _runs

Array = npt.NDArray[Any]

#: Layers that switch at 0 on their input: the series' gates.
GATE_TYPES = ("relu", "leaky_relu", "heaviside")


@dataclass(frozen=True, repr=False)
class Gate:
    """A gate layer (:data:`GATE_TYPES`) and the columns of its input, one per neuron: layer
    3 of the article is ``Gate(3, "relu", ("o2_1",))``. On an image, ``channels`` is its
    channels' count, each a unit of its pixels' columns (channel by channel, as the trace
    orders them); 0 for a 1D input, whose neurons are its units."""

    layer: int
    type: str
    inputs: tuple[str, ...]
    channels: int = 0

    def __repr__(self) -> str:
        image = f", channels={self.channels}" if self.channels else ""  # 1D gates as before
        return f"Gate(layer={self.layer}, type={self.type!r}, inputs={self.inputs!r}{image})"

    @property
    def can_die(self) -> bool:
        """Whether a unit closed for good stops all learning through it (a ReLU's)."""
        return self.type == "relu"

    @property
    def units(self) -> int:
        return self.channels or len(self.inputs)

    def unit_names(self) -> list[str]:
        """``L3[2]`` (layer 3, neuron 2, from 1), ``L3[channel 0]`` (numbered as numpy does)."""
        if self.channels:
            return [f"L{self.layer}[channel {c}]" for c in range(self.channels)]
        return [f"L{self.layer}[{j}]" for j in range(1, len(self.inputs) + 1)]

    def closed(self, x: Array) -> Array:
        """Which units are closed on each row, from the rows of its inputs ``x``: x ≥ 0 fails
        (NaN fails it too); a channel when it fails for every pixel."""
        shut: Array = ~(x >= 0)
        if self.channels:
            return np.asarray(shut.reshape(len(x), self.channels, -1).all(axis=2))
        return shut


def trace_gates(trace: Trace) -> list[Gate]:
    """The gates of a run's model, from its metadata (version 1 traces: the article's ReLU)."""
    layers = (trace.meta.get("model") or {}).get("layers") or []
    return [
        Gate(k, spec["type"], tuple(trace.columns_of(f"o{k - 1}")),
             _channels(trace.tensor(f"o{k - 1}").shape))
        for k, spec in enumerate(layers, 1)
        if isinstance(spec, dict) and spec.get("type") in GATE_TYPES and k > 1
    ]  # fmt: skip


def _channels(shape: tuple[int, ...]) -> int:
    """An image's channels (C of C × H × W), 0 for a 1D shape."""
    return shape[0] if len(shape) == 3 else 0


def find_gates(rows: pd.DataFrame) -> list[Gate]:
    """The gates the rows of one run show, by the rule in this module's docstring.

    >>> find_gates(load_trace("traces/golden/article-exact.parquet"))  # doctest: +SKIP
    [Gate(layer=3, type='relu', inputs=('o2_1',))]
    """
    outputs = {
        int(t.name[1:]): t
        for t in tensors_from_columns(_held(rows, rows.columns))
        if re.fullmatch(r"o\d+", t.name)
    }
    gates = []
    for k, out in sorted(outputs.items()):
        below = outputs.get(k - 1)
        if below is None or below.shape != out.shape:
            continue
        inputs = below.columns()
        x, o = (rows[c].to_numpy(np.float64) for c in (inputs, out.columns()))
        kind = _gate_kind(x, o)
        if kind is not None:
            gates.append(Gate(k, kind, tuple(inputs), _channels(below.shape)))
    return gates


def _gate_kind(x: Array, o: Array) -> str | None:
    """Which gate maps inputs ``x`` to outputs ``o`` (rows where both are numbers), if any."""
    seen = ~(np.isnan(x) | np.isnan(o))
    if not seen.any():
        return None
    up, down = seen & (x >= 0), seen & (x < 0)
    passes, ones = bool((o[up] == x[up]).all()), bool((o[up] == 1).all())
    zero = bool((o[down] == 0).all())
    shrunk = bool(((o[down] <= 0) & (o[down] > x[down])).all())  # x < a·x ≤ 0 for 0 < a < 1
    if passes and zero:
        return "relu"
    if passes and shrunk:
        return "leaky_relu"
    return "heaviside" if ones and zero else None


def _frame_gates(df: pd.DataFrame) -> list[Gate]:
    """A gate of each layer that is one in some run of ``df`` (for the columns they show)."""
    found: dict[int, Gate] = {}
    for _, rows in _runs(df):
        for gate in find_gates(rows):
            found.setdefault(gate.layer, gate)
    return [found[k] for k in sorted(found)]


class _Gates:
    """How often each gate was closed, and which ReLU units stayed closed in the last epoch,
    from chunks of whole steps in recording order."""

    def __init__(self, gates: Sequence[Gate]) -> None:
        self.gates = list(gates)
        self.names = [n for g in self.gates for n in g.unit_names()]
        self.mortal = np.array([g.can_die for g in self.gates for _ in range(g.units)], dtype=bool)
        self.closed_steps = 0
        self.closed_pairs = 0
        self.pairs = 0
        self.epoch: int | None = None
        self.opened = np.zeros(len(self.names), dtype=bool)  # open on some row of the epoch

    def update(self, rows: pd.DataFrame, step: Array, epoch: Array) -> None:
        if not self.gates:
            return
        closed = np.hstack(
            [g.closed(rows[list(g.inputs)].to_numpy(np.float64)) for g in self.gates]
        )
        self.closed_steps += len(np.unique(step[closed.any(axis=1)]))
        self.closed_pairs += int(closed.sum())
        self.pairs += closed.size
        starts = group_starts(epoch)
        for lo, hi in zip(starts, [*starts[1:], len(epoch)], strict=True):
            if epoch[lo] != self.epoch:
                self.epoch, self.opened = int(epoch[lo]), np.zeros_like(self.opened)
            self.opened |= (~closed[lo:hi]).any(axis=0)

    def result(self) -> dict[str, Any]:
        dead = [n for n, d in zip(self.names, self.mortal & ~self.opened, strict=True) if d]
        return {
            "gate_closed_steps": self.closed_steps,
            "gate_closed_share": self.closed_pairs / self.pairs if self.pairs else None,
            "dead_units": len(dead) if self.epoch is not None else 0,
            "dead_neurons": ", ".join(dead) if self.epoch is not None else "",
        }
