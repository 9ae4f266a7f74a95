"""Images in the terminal, as the series draws them: a tensor of channels as grids side by side,
a convolution's kernels as grids, one convolution worked out for one pixel.

Formatting only: every number is a recorded value's display text (:class:`.sample.SampleValues`);
the worked convolution's sums are the recorded inputs and kernel multiplied out, exactly in
exact runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from fractions import Fraction

from .sample import SampleValues
from .text import pad, width

__all__ = ["conv_worked", "grid_lines", "side_by_side", "tensor_grids"]

#: Grids side by side fill at most this many columns before the next band starts.
LINE_WIDTH = 100
GAP = "   "
#: A float in a grid is written to this many significant digits (every digit with ``--full``):
#: a grid is for seeing a map, and 0.037099999999999994 beside 0.0 hides it.
GRID_DIGITS = 6


def cell(v: SampleValues, column: str) -> str:
    """One value as a grid shows it: an exact fraction as the tables show it, a float to
    :data:`GRID_DIGITS` significant digits (unless the replay is asked for in full)."""
    text = v.show(column)
    if not v.short or "/" in text:
        return text
    try:
        return f"{float(text):.{GRID_DIGITS}g}"
    except ValueError:
        return text


def grid_lines(rows: Sequence[Sequence[str]]) -> list[str]:
    """A grid of texts, its columns aligned right (numbers line up by their last digit):

    >>> print("\\n".join(grid_lines([["1", "-1/2"], ["10", "0"]])))
    |  1 | -1/2 |
    | 10 |    0 |
    """
    widths = [max(width(r[c]) for r in rows) for c in range(len(rows[0]))]
    return ["| " + " | ".join(" " * (w - width(v)) + v for v, w in zip(r, widths, strict=True))
            + " |" for r in rows]  # fmt: skip


def side_by_side(blocks: Sequence[tuple[str, list[str]]], indent: str = "") -> list[str]:
    """Titled blocks of lines next to each other, in bands no wider than :data:`LINE_WIDTH`."""
    out: list[str] = []
    band: list[tuple[str, list[str]]] = []
    used = len(indent)
    for title, lines in blocks:
        w = max(width(title), *(width(line) for line in lines))
        if band and used + w > LINE_WIDTH:
            out += _band(band, indent)
            band, used = [], len(indent)
        band.append((title, lines))
        used += w + len(GAP)
    if band:
        out += _band(band, indent)
    return out


def _band(band: list[tuple[str, list[str]]], indent: str) -> list[str]:
    widths = [max(width(t), *(width(line) for line in lines)) for t, lines in band]
    height = max(len(lines) for _, lines in band)
    rows = [indent + GAP.join(pad(t, w) for (t, _), w in zip(band, widths, strict=True))]
    for i in range(height):
        cells = [pad(lines[i] if i < len(lines) else "", w)
                 for (_, lines), w in zip(band, widths, strict=True)]  # fmt: skip
        rows.append(indent + GAP.join(cells))
    return [r.rstrip() for r in rows]


def _grid(v: SampleValues, tensor: str, lead: tuple[int, ...]) -> list[list[str]]:
    """The H × W grid of ``tensor`` at the leading (0-based) indices ``lead``."""
    shape = v.shapes[tensor]
    h, w = shape[-2:]
    prefix = tensor + "".join(f"_{i + 1}" for i in lead)
    return [[cell(v, f"{prefix}_{i}_{j}") for j in range(1, w + 1)] for i in range(1, h + 1)]


def tensor_grids(v: SampleValues, tensor: str, indent: str = "") -> list[str]:
    """An image tensor (C × H × W) as its channels' grids side by side, titled ``channel 1`` …;
    a kernel tensor (out × in × k × k) as a grid per kernel, titled ``out 1 ← in 2``."""
    shape = v.shapes[tensor]
    if len(shape) == 3:
        blocks = [(f"channel {c + 1}", grid_lines(_grid(v, tensor, (c,)))) for c in range(shape[0])]
    else:
        blocks = [(f"out {o + 1} ← in {c + 1}", grid_lines(_grid(v, tensor, (o, c))))
                  for o, c in itertools.product(range(shape[0]), range(shape[1]))]  # fmt: skip
    return side_by_side(blocks, indent)


def _number(text: str) -> Fraction | float:
    try:
        return Fraction(text)
    except ValueError:  # nan, inf
        return float(text)


def conv_worked(
    v: SampleValues, layer: int, numerics: str, pixel: tuple[int, int, int] | None = None
) -> list[str]:
    """One output of a convolution worked out as the series does: each input channel's
    neighbourhood of the pixel ⋆ its kernel, their sum, plus the bias, = the recorded output.
    ``pixel`` is (channel, row, column), 0-based; by default the first channel's pixel nearest
    the centre (its neighbourhood lies inside the image)."""
    out_t, in_t = f"o{layer}", (f"o{layer - 1}" if layer > 1 else "x")
    weights = f"w{layer}_before"
    _, h, w = v.shapes[out_t]
    c_in = v.shapes[in_t][0]
    k = v.shapes[weights][-1]
    o, i, j = pixel if pixel is not None else (0, (h - 1) // 2, (w - 1) // 2)
    p = (k - 1) // 2
    name = f"{out_t}[{o}, {i}, {j}]"
    lines = [f"one convolution, {name} = Σ over input channels (neighbourhood ⋆ kernel) + b:"]
    exact = numerics == "exact"
    total: Fraction | float = 0
    for c in range(c_in):
        hood: list[list[str | None]] = []  # the neighbourhood's columns (None beyond the edge)
        for a in range(k):
            hood.append([])
            for b in range(k):
                y, z = i - p + a, j - p + b
                inside = 0 <= y < h and 0 <= z < w
                hood[-1].append(f"{in_t}_{c + 1}_{y + 1}_{z + 1}" if inside else None)
        kernel = [[f"{weights}_{o + 1}_{c + 1}_{a + 1}_{b + 1}" for b in range(k)]
                  for a in range(k)]  # fmt: skip
        # Multiplied out from the recorded values themselves (the grids may round them).
        pairs = [(x, y) for hr, kr in zip(hood, kernel, strict=True)
                 for x, y in zip(hr, kr, strict=True) if x is not None]  # fmt: skip
        part = sum((_number(v.text[x]) * _number(v.text[y]) for x, y in pairs), Fraction(0))
        total += part
        shown_hood = [[cell(v, x) if x is not None else "0" for x in r] for r in hood]
        shown_kernel = [[cell(v, x) for x in r] for r in kernel]
        lines += side_by_side([(f"input channel {c + 1}", grid_lines(shown_hood)), ("⋆", ["⋆"]),
                               (f"kernel {o + 1} ← {c + 1}", grid_lines(shown_kernel)),
                               ("", ["= " + _shown(part, exact, numerics)])], "   ")  # fmt: skip
    bias = f"b{layer}_before_{o + 1}"
    if bias in v.text:
        total += _number(v.text[bias])
        lines.append(f"   + b = {v.show(bias)}")
    recorded = v.show(f"{out_t}_{o + 1}_{i + 1}_{j + 1}")
    sign = "=" if exact else "≈"
    lines.append(f"   {name} {sign} {_shown(total, exact, numerics)}   (recorded: {recorded})")
    return lines


def _shown(value: Fraction | float, exact: bool, numerics: str) -> str:
    if exact and isinstance(value, Fraction):
        return str(value)
    return f"{float(value):.{GRID_DIGITS}g}"
