"""Why a run went wrong: its first non-finite value, and what led there.

A step computes its values in an order: its inputs (the data, the parameters it starts from),
the forward pass layer by layer, the loss, the backward pass from the loss down (each layer's
gradients, then its δ), the update. The *first* non-finite value of a run is the first one in
that order at the first step that has any: the others follow from it. The per-step figures
(:mod:`.scalars`) say which step that is, even in a run that holds only some steps' values;
the step's rows, when held, say which value. What led there is read from the figures of the
steps before: the sizes that grew fastest (the largest parameter, an output, a gradient, the
loss), from where their growth began.

>>> print(first_nonfinite("traces/diverged").text())  # doctest: +SKIP
first non-finite: step 812, layer 4 (linear) output o4[3, 0] = inf
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..errors import TraceError
from .keep import Selection
from .opener import open_trace
from .reader import Trace
from .scalars import layer_of, load_scalars
from .schema import Tensor

__all__ = ["Finding", "first_nonfinite"]

#: How many steps before the first non-finite one the figures are read for what led there.
LOOKBACK = 200
#: A step-to-step factor a size must keep above to count as growing.
GROWING = 1.5

_QUANTITY = {"o": "output", "d": "δ", "grad_w": "weight gradient", "grad_b": "bias gradient",
             "w_after": "weight after the update", "b_after": "bias after the update",
             "w_before": "weight before the update", "b_before": "bias before the update",
             "x": "data input", "y": "target", "loss": "loss", "lr": "learning rate",
             "i": "input"}  # fmt: skip
_FIGURE = {"max": "largest |{p}{k}|", "norm": "‖{p}{k}‖"}


@dataclass(frozen=True)
class Finding:
    """A run's first non-finite value (``step`` None: there is none)."""

    run: Path
    step: int | None = None
    layer: int | None = None
    layer_type: str | None = None
    tensor: str | None = None
    index: tuple[int, ...] | None = None  # the row within the step, then numpy's index
    value: float | None = None
    held: bool = True  # whether the step's values are recorded
    #: Non-finite values per layer at that step, from the figures (when the step is not held).
    counts: dict[int, int] = field(default_factory=dict)
    led_there: tuple[str, ...] = ()
    steps: int = 0
    holds: str = ""

    def headline(self) -> str:
        if self.step is None:
            return f"no non-finite value in {self.run} ({self.steps} steps)"
        if not self.held:
            where = ", ".join(f"layer {k} ({n})" for k, n in sorted(self.counts.items()))
            return (f"first non-finite: step {self.step} (its values are not recorded: this run "
                    f"holds {self.holds}); non-finite values in {where or 'the loss'}")  # fmt: skip
        assert self.tensor is not None and self.index is not None
        name = f"{self.tensor}[{', '.join(map(str, self.index))}]"
        what = _quantity(self.tensor)
        what = "" if what == self.tensor else f"{what} "
        layer = "" if self.layer is None else f"layer {self.layer} ({self.layer_type}) "
        return f"first non-finite: step {self.step}, {layer}{what}{name} = {_show(self.value)}"

    def text(self) -> str:
        return "\n".join([self.headline(), *self.led_there])

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "layer": self.layer,
            "tensor": self.tensor,
            "index": None if self.index is None else list(self.index),
            "value": None if self.value is None else _show(self.value),
            "led_there": list(self.led_there),
        }


def first_nonfinite(run: str | Path | Trace) -> Finding:
    """The first non-finite value of ``run`` in the order its steps compute them, and what
    the figures of the steps before say led there."""
    trace = run if isinstance(run, Trace) else open_trace(run)
    try:
        figures = load_scalars(trace.path)
    except TraceError:
        figures = None  # a run of a steptrace before 2.2: its rows say it
    step = _first_bad_step(trace, figures)
    steps = len(figures) if figures is not None else int(trace.meta.get("steps") or 0)
    if step is None:
        return Finding(trace.path, steps=steps)
    led = _led_there(figures, step) if figures is not None else ()
    rows = trace.read_table(steps=(step, step + 1))
    if not rows.num_rows:
        assert figures is not None
        at = figures[figures["step"] == step].iloc[0]
        counts = {int(str(c).removeprefix("nonfinite")): int(float(at[c])) for c in figures
                  if str(c).startswith("nonfinite") and float(at[c]) > 0}  # fmt: skip
        holds = Selection.from_meta(trace.meta).describe()
        layer = min(counts, default=None)
        return Finding(trace.path, step, layer, _layer_type(trace, layer), held=False,
                       counts=counts, led_there=led, steps=steps, holds=holds)  # fmt: skip
    for tensor in _in_order(trace.tensors):
        values = np.column_stack([rows.column(c).to_numpy() for c in tensor.columns()])
        bad = np.argwhere(~np.isfinite(values))
        if len(bad):
            r, c = (int(i) for i in bad[0])
            within = np.unravel_index(c, tensor.shape) if tensor.shape else ()
            index = (r, *(int(i) for i in within))
            k = layer_of(tensor.name)
            return Finding(trace.path, step, k, _layer_type(trace, k), tensor.name, index,
                           float(values[r, c]), led_there=led, steps=steps)  # fmt: skip
    raise TraceError(f"{trace.path}: step {step} has a non-finite figure but no such value")


def _first_bad_step(trace: Trace, figures: pd.DataFrame | None) -> int | None:
    """The first step with a non-finite value: from the figures, else from the rows."""
    if figures is not None:
        bad = ~np.isfinite(figures["loss"].to_numpy())
        bad |= figures.filter(like="nonfinite").sum(axis=1).to_numpy() > 0
        return int(figures["step"].to_numpy()[bad][0]) if bad.any() else None
    for part in trace.files:  # a part at a time: memory stays bounded
        table = Trace(part, trace.meta, trace.status, files=[part]).read_table()
        step = table.column("step").to_numpy()
        bad = np.zeros(len(step), bool)
        for name in table.column_names:
            if name not in ("step", "epoch", "sample") and pa.types.is_floating(
                table.schema.field(name).type
            ):
                bad |= ~np.isfinite(table.column(name).to_numpy())
        if bad.any():
            return int(step[bad][0])
    return None


def _in_order(tensors: Sequence[Tensor]) -> list[Tensor]:
    """The tensors in the order a step computes them: inputs, forward, loss, backward (from
    the top layer down, each layer's gradients before its δ), update."""

    def key(t: Tensor) -> tuple[int, int, int]:
        k = layer_of(t.name) or 0
        if t.name in ("lr", "x", "y") or t.name.endswith("_before"):
            return (0, k, 0)
        if t.name == "loss":
            return (2, 0, 0)
        if re.fullmatch(r"[oi]\d+", t.name):
            return (1, k, 0 if t.name.startswith("i") else 1)
        if t.name.startswith(("grad_", "step_grad_")) or re.fullmatch(r"d_?o?\d+", t.name):
            return (3, -k, 1 if t.name.startswith("d") else 0)
        return (4, k, 0)  # parameters after, the optimizer's state, masks

    return sorted(tensors, key=key)


def _led_there(figures: pd.DataFrame, step: int) -> tuple[str, ...]:
    """The sizes that grew fastest over the steps before ``step``, largest growth first."""
    before = figures[(figures["step"] < step) & (figures["step"] >= step - LOOKBACK)]
    if len(before) < 2:
        return ("nothing before it to compare: it is the run's first step"
                if step == 0 else f"step {step} is the first step of the figures",)  # fmt: skip
    found = []
    for column in before.columns:
        name = _figure_name(column)
        if name is None:
            continue
        values = before[column].to_numpy(dtype=np.float64)
        grew = _growth(values)
        if grew is not None:
            start, rate, total = grew
            found.append((total, name, int(before["step"].iloc[start]), rate, values, start))
    found.sort(key=lambda f: -f[0])
    lines = []
    for total, name, since, rate, values, start in found[:3]:
        lines.append(
            f"{name} growing ×{rate:.3g} a step since step {since} ({_show(values[start])} → "
            f"{_show(values[-1])} at step {step - 1}, ×{total:.3g})"
        )
    if not lines:
        last = before.iloc[-1]
        lines.append(f"nothing grew before it: at step {step - 1} the loss was "
                     f"{_show(float(last['loss']))}; it went wrong in one step")  # fmt: skip
    return tuple(lines)


def _growth(values: np.ndarray) -> tuple[int, float, float] | None:
    """Where the last run of steady growth (each step ×:data:`GROWING` or more, finite and
    positive) of ``values`` began, its rate a step and its total factor; None if it does not
    end growing."""
    v = np.abs(values)
    ok = np.isfinite(v) & (v > 0)
    end = len(v) - 1
    if not ok[end]:
        return None
    start = end
    while start > 0 and ok[start - 1] and v[start] >= GROWING * v[start - 1]:
        start -= 1
    if end - start < 2:
        return None
    total = float(v[end] / v[start])
    return start, total ** (1 / (end - start)), total


def _figure_name(column: str) -> str | None:
    """A figure in words: ``layer 4's largest |w|``, ``layer 2's largest |o|``, ``the loss``."""
    if column == "loss":
        return "the loss"
    m = re.fullmatch(r"(w|o)(\d+)_max", column)
    if m:
        return f"layer {m.group(2)}'s largest |{m.group(1)}|"
    m = re.fullmatch(r"(grad|dw)(\d+)_norm", column)
    if m:
        what = "gradient ‖Σ grad‖" if m.group(1) == "grad" else "step ‖Δw‖"
        return f"layer {m.group(2)}'s {what}"
    return None


def _layer_type(trace: Trace, k: int | None) -> str | None:
    """Layer ``k``'s type as the model file names it (``linear``, ``conv2d`` …)."""
    if k is None:
        return None
    for source in (trace.meta.get("model"), trace.meta.get("graph")):
        layers = (source or {}).get("layers") if isinstance(source, dict) else None
        if isinstance(layers, list):
            for i, layer in enumerate(layers, 1):
                if isinstance(layer, dict) and layer.get("k", i) == k:
                    kind = layer.get("type") or layer.get("kind")
                    return str(kind) if kind is not None else None
    return None


def _quantity(tensor: str) -> str:
    base = re.sub(r"\d+", "", tensor)
    return _QUANTITY.get(base, _QUANTITY.get(re.sub(r"\d+$", "", tensor), "value of"))


def _show(value: float | None) -> str:
    if value is None:
        return "?"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4g}"
