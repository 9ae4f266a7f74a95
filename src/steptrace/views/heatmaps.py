"""Images as heatmaps: what a chart needs to draw a step's feature maps, δ maps and kernels.

Each channel of an image tensor (C × H × W), and each kernel of a convolution (out × in × k × k),
is one grid: every cell's recorded value as display text (shown on hover; exact fractions in exact
runs), the value as a float for the colour, a short text to write in the cell when the grid is
small, and the cells to mark: the maxima a max pooling keeps, found by the pooling layer's own
code (:meth:`steptrace.model.images.MaxPool2d.chosen`: the first maximum in reading order).
Derived grids (a kernel's gradient summed over a step's data inputs, the change ``ŵ − w`` an
update made, one run's map minus another's) are computed here from the recorded values, exactly
in exact runs. Cells are named as :func:`~steptrace.load_tensor` indexes them, from 0:
``o2[1, 3, 0]``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property

import numpy as np
import pandas as pd

from ..model.images import MaxPool2d
from ..numerics import format_value
from .sample import SampleValues
from .text import abbreviate

__all__ = [
    "TEXT_CELLS",
    "Heatmap",
    "Heatmaps",
    "cell_label",
    "difference",
    "grid_maps",
    "pooled_cells",
    "span",
    "summed_maps",
    "tensor_values",
    "value_maps",
]

#: Grids whose sides are at most this many cells have their values written in the cells.
TEXT_CELLS = 10
#: Significant digits of a value written in a cell (the whole value is shown on hover).
LABEL_DIGITS = 3

Number = Fraction | float


def _float(n: Number) -> float:
    """A value as a float for the colour scale: NaN where it has none (an overflow, ±∞, NaN)."""
    try:
        f = float(n)
    except OverflowError:  # an exact run's value beyond any float
        return math.nan
    return f if math.isfinite(f) else math.nan


def _number(text: str) -> Number:
    """A display text as a number: a float's text (``0.29``, ``1e-05``, ``nan``, ``-inf``) as
    that float, an exact one (``-3/11600``, ``2``) as a Fraction. Exact texts never hold a
    point, an exponent or a letter, and are the slow ones to read."""
    return Fraction(text) if _number_is_exact(text) else float(text)


def cell_label(text: str, value: float | None = None) -> str:
    """What a cell of a small grid says: a short fraction or integer as it is (``0``, ``1/4``,
    ``-2``), anything else to :data:`LABEL_DIGITS` significant digits, one fewer when that is
    longer than 6 characters (``0.29030000000000006`` → ``0.29``, ``1.0`` → ``1``,
    ``-3/11600`` → ``-0.00026``); a value beyond any float (an exact run's, its text shortened)
    ``huge`` or ``-huge``. ``value``: the number as a float, when it is known (NaN: none).

    >>> cell_label("1/4"), cell_label("0.29030000000000006"), cell_label("1.0")
    ('1/4', '0.29', '1')
    """
    if len(text) <= 5 and "." not in text and "e" not in text:
        return text
    if value is None:
        try:
            value = _float(_number(text))
        except ValueError:  # a huge exact value, shortened: 12345…67890 (30 digits)/7
            value = math.nan
    if math.isnan(value):
        return ("-" if text.startswith("-") else "") + "huge"
    short = f"{value:.{LABEL_DIGITS}g}"
    return short if len(short) <= 6 else f"{value:.{LABEL_DIGITS - 1}g}"


@dataclass(frozen=True)
class Heatmap:
    """One grid: a channel of an image, or one kernel (from one input channel to one output
    channel). ``lead`` is its place in the tensor (``(channel,)`` or ``(out, in)``)."""

    title: str  # "channel 0", "out 1 ← in 0"
    lead: tuple[int, ...]
    texts: tuple[tuple[str, ...], ...]  # each cell's value as display text, row by row
    values: tuple[tuple[float, ...], ...]  # the same as floats, for the colour (NaN: none)
    marked: frozenset[tuple[int, int]] = frozenset()  # (row, column) of the marked cells

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.texts), len(self.texts[0]) if self.texts else 0


@dataclass(frozen=True)
class Heatmaps:
    """A tensor drawn as heatmaps: its grids side by side on one colour scale, centred on 0."""

    tensor: str  # "o2", "d4", "w2_before", "w2_change"
    name: str  # how a cell is named: "o2" → "o2[0, 3, 3]"
    title: str  # "o2 = w2 ⋆ o1 + b2"
    shape: tuple[int, ...]  # the tensor's, (C, H, W) or (out, in, k, k)
    maps: tuple[Heatmap, ...]
    note: str = ""  # what the marked cells are
    mark: str = ""  # a marked cell's words on hover: "kept by L4's pooling"
    kind: str = field(default="image")  # "image" or "kernels"
    per_row: int = 0  # grids in a row of the drawing (0: as :attr:`columns` says)

    @property
    def shape_text(self) -> str:
        """``2 × 8 × 8``"""
        return " × ".join(str(n) for n in self.shape)

    @property
    def written(self) -> bool:
        """Whether the values are written in the cells: grids of at most :data:`TEXT_CELLS`
        cells a side."""
        return max(self.shape[-2:]) <= TEXT_CELLS

    @cached_property
    def limit(self) -> float:
        """Half the colour scale's width: the largest size of a value (1 when all are 0)."""
        sizes = [abs(v) for m in self.maps for row in m.values for v in row if not math.isnan(v)]
        return max(sizes, default=0.0) or 1.0

    def cell(self, lead: tuple[int, ...], i: int, j: int) -> str:
        """``o2[1, 3, 0]``: a cell's name, as ``load_tensor`` indexes it."""
        return f"{self.name}[{', '.join(str(n) for n in (*lead, i, j))}]"

    @property
    def columns(self) -> int:
        """Grids a row of the drawing holds: a kernel tensor's input channels (the kernels of
        one output channel side by side; all of them when each reads one input channel),
        else up to 8 channels."""
        if self.per_row:
            return self.per_row
        if self.kind == "kernels" and self.shape[1] > 1:
            return self.shape[1]
        return min(len(self.maps), 8)

    def frame(self) -> pd.DataFrame:
        """A row per cell, for a chart: ``map`` (its grid's title), ``order`` (the grid's
        place), ``row``, ``column``, ``cell`` (its name), ``text`` (the value), ``label``
        (written in the cell, or empty), ``value`` (float, NaN for none), ``marked``,
        ``dark`` (a strong colour: the label is written in white), ``mark`` (what a marked
        cell is, in words; empty for the others)."""
        rows = []
        for order, m in enumerate(self.maps):
            for i, j in itertools.product(range(m.shape[0]), range(m.shape[1])):
                text, value = m.texts[i][j], m.values[i][j]
                rows.append(
                    {
                        "map": m.title,
                        "order": order,
                        "row": i,
                        "column": j,
                        "cell": self.cell(m.lead, i, j),
                        "text": text,
                        "label": cell_label(text, value) if self.written else "",
                        "value": value,
                        "marked": (i, j) in m.marked,
                        "mark": self.mark if (i, j) in m.marked else "",
                        "dark": not math.isnan(value) and abs(value) > 0.55 * self.limit,
                    }
                )
        return pd.DataFrame(rows)


# -- grids from a step's recorded values ---------------------------------------------------------


def _leads(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every grid's place in a tensor: each channel, or each (out, in) pair of kernels."""
    return list(itertools.product(*(range(n) for n in shape[:-2])))


def _title(lead: tuple[int, ...]) -> str:
    return f"channel {lead[0]}" if len(lead) == 1 else f"out {lead[0]} ← in {lead[1]}"


def _column(tensor: str, lead: tuple[int, ...], i: int, j: int) -> str:
    """The trace's column of a cell (its indices from 1)."""
    return tensor + "".join(f"_{n + 1}" for n in (*lead, i, j))


def grid_maps(
    v: SampleValues,
    tensor: str,
    title: str,
    marks: dict[tuple[int, ...], frozenset[tuple[int, int]]] | None = None,
    note: str = "",
    mark: str = "",
) -> Heatmaps:
    """A recorded image (C × H × W) or kernel tensor (out × in × k × k) of one data input as
    heatmaps, a grid per channel or kernel, each cell's display text as the tables show it.
    ``marks``: the cells to mark in each grid, by its place (``(channel,)``)."""
    shape = v.shapes[tensor]
    h, w = shape[-2:]
    maps = []
    for lead in _leads(shape):
        columns = [[_column(tensor, lead, i, j) for j in range(w)] for i in range(h)]
        maps.append(
            Heatmap(
                _title(lead),
                lead,
                tuple(tuple(v.show(c) for c in row) for row in columns),
                tuple(tuple(_float(_number(v.text[c])) for c in row) for row in columns),
                (marks or {}).get(lead, frozenset()),
            )
        )
    return Heatmaps(tensor, tensor, title, shape, tuple(maps), note, mark, _kind(shape))


def _kind(shape: tuple[int, ...]) -> str:
    return "kernels" if len(shape) == 4 else "image"


def value_maps(numbers: np.ndarray, name: str, title: str, short: bool = True) -> Heatmaps:
    """Heatmaps of computed values, an array in a tensor's shape (:func:`tensor_values`):
    exact Fractions written exactly (huge integers abbreviated unless ``short`` is off),
    floats as the shortest text of their float64. Cells are named ``name``."""
    shape = tuple(int(n) for n in numbers.shape)
    maps = []
    for lead in _leads(shape):
        grid = numbers[lead]
        maps.append(
            Heatmap(
                _title(lead),
                lead,
                tuple(tuple(_show(n, short) for n in row) for row in grid),
                tuple(tuple(_float(n) for n in row) for row in grid),
            )
        )
    return Heatmaps(name, name, title, shape, tuple(maps), kind=_kind(shape))


def _exact(text: str) -> bool:
    """Whether a value's text is an exact rational (``nan`` and ``inf`` are not)."""
    return "n" not in text


def _show(n: Number, short: bool) -> str:
    if isinstance(n, Fraction):
        return abbreviate(str(n)) if short else str(n)
    return format_value(float(n), None, "float64")


def _numbers(v: SampleValues, tensor: str) -> np.ndarray:
    """A tensor's recorded values as an array of numbers (Fractions; NaN and ±∞ as floats)."""
    values = [Fraction(v.text[c]) if _exact(v.text[c]) else float(v.text[c])
              for c in v.columns(tensor)]  # fmt: skip
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out.reshape(v.shapes[tensor])


def _floats(v: SampleValues, tensor: str, numerics: str) -> np.ndarray:
    """A tensor's recorded floats, in float64 (a float32 run's own float32 values)."""
    kind = np.float32 if numerics == "float32" else np.float64
    values = [kind(v.text[c]) for c in v.columns(tensor)]
    return np.array(values, dtype=np.float64).reshape(v.shapes[tensor])


def tensor_values(samples: Sequence[SampleValues], tensor: str, numerics: str) -> np.ndarray:
    """A tensor's values added up over the given data inputs of a step (one data input: its
    values; a kernel's gradient over a mini-batch: the sum the update follows): Fractions in
    exact runs, added exactly; otherwise the recorded floats added up in float64."""
    if numerics == "exact":
        return sum((_numbers(s, tensor) for s in samples[1:]), _numbers(samples[0], tensor))
    floats = [_floats(s, tensor, numerics) for s in samples]
    total: np.ndarray = sum(floats[1:], floats[0])
    return total


def summed_maps(
    samples: Sequence[SampleValues], tensor: str, title: str, numerics: str
) -> Heatmaps:
    """A tensor added up over a step's data inputs (:func:`tensor_values`) as heatmaps; for
    one data input, its recorded values as :func:`grid_maps` shows them."""
    if len(samples) == 1:
        return grid_maps(samples[0], tensor, title)
    return value_maps(tensor_values(samples, tensor, numerics), tensor, title, samples[0].short)


def difference(
    before: np.ndarray, after: np.ndarray, name: str, title: str, short: bool = True
) -> Heatmaps:
    """``after − before`` as heatmaps (two :func:`tensor_values` of one shape: ``ŵ − w`` of
    one step, one run's map minus another's): exactly when both are exact, else in float64.
    Cells are named ``name``."""
    if before.dtype == object and after.dtype == object:
        return value_maps(after - before, name, title, short)
    as_float = np.vectorize(_float, otypes=[np.float64])
    diff = as_float(after) - as_float(before)
    return value_maps(diff, name, title, short)


def span(v: SampleValues, tensor: str) -> str:
    """A tensor's values in a few words: ``from -0.544 to 0.815`` (exact runs: ``from -99/256 to
    0``); ``all 0``."""
    texts = [v.text[c] for c in v.columns(tensor)]
    numbers = [_number(t) for t in texts]
    finite = [(n, t) for n, t in zip(numbers, texts, strict=True) if not _nan(n)]
    if not finite:
        return "no finite value"
    lo, hi = (_brief(min(finite, key=lambda p: p[0])[1]),
              _brief(max(finite, key=lambda p: p[0])[1]))  # fmt: skip
    if lo == hi:
        return f"all {lo}"
    text = f"from {lo} to {hi}"
    left = len(numbers) - len(finite)
    return text + (f" ({left} not finite)" if left else "")


def _brief(text: str) -> str:
    """A value in a few characters: an exact one exactly (huge integers abbreviated), a float
    as a cell writes it."""
    return abbreviate(text) if _number_is_exact(text) else cell_label(text)


def _number_is_exact(text: str) -> bool:
    return "/" in text or text.lstrip("-").isdigit()


def _nan(n: Number) -> bool:
    return isinstance(n, float) and not math.isfinite(n)


# -- max pooling ---------------------------------------------------------------------------------


def pooled_cells(
    v: SampleValues, tensor: str, size: int, numerics: str
) -> dict[tuple[int, ...], frozenset[tuple[int, int]]]:
    """The cells of an image (C × H × W) that a max pooling of ``size`` keeps, per channel:
    each window's maximum, the first in reading order on ties (the layer's own choice)."""
    c, h, w = v.shapes[tensor]
    x = _numbers(v, tensor) if numerics == "exact" else _floats(v, tensor, numerics)
    pool = MaxPool2d(size)
    chosen = pool.chosen(x[None])[0]  # C, H_out, W_out: the index in each window
    k, stride, pad = pool.size, pool.stride, pool.pad
    out: dict[tuple[int, ...], frozenset[tuple[int, int]]] = {}
    for ch in range(c):
        cells = set()
        for (i, j), q in np.ndenumerate(chosen[ch]):
            cells.add((i * stride - pad + int(q) // k, j * stride - pad + int(q) % k))
        out[(ch,)] = frozenset((i, j) for i, j in cells if 0 <= i < h and 0 <= j < w)
    return out
