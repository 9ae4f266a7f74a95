"""Loss or any parameter (a weight or a bias of any layer) per step of a run, downsampled (the
min and max of each bucket of steps) when long, every step when zoomed in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..errors import TraceError
from ..trace.keep import RECORD_KEY
from ..trace.reader import Trace
from ..trace.scalars import load_scalars
from ..trace.schema import after_columns
from ..trace.summary import batch_losses
from .buckets import MinMax, bucket_width

#: Points per curve above which it is downsampled (min and max of each bucket of steps).
MAX_POINTS = 2_000

_ZOOM_HINT = f"zoom into {MAX_POINTS:,} steps or fewer to see every step"


def minmax_downsample(
    steps: npt.NDArray[np.int64], values: npt.NDArray[np.float64], max_points: int = MAX_POINTS
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], int]:
    """Keep the smallest and the largest value of each bucket of steps, at their own steps, so
    spikes survive; returns ``(steps, values, steps per bucket)``.

    Buckets are aligned on step numbers and as wide as a power of two (see
    :mod:`.buckets`: a followed run keeps its curves that way). Non-finite values are left out
    of the min/max (divergence is marked separately). With ``len(steps) <= max_points``
    nothing is dropped and the bucket size is 1.

    >>> s, v, b = minmax_downsample(np.arange(10), np.array([0, 9, 1, 1, 1, 1, 1, -5, 1, 1.0]), 4)
    >>> s.tolist(), v.tolist(), b
    ([1, 7, 8], [9.0, -5.0, 1.0], 8)
    """
    n = len(steps)
    width = bucket_width(int(steps[0]), int(steps[-1]), n, max_points) if n else 1
    if width == 1:
        return steps, values, 1
    return (*MinMax.of(steps, values, width).points(), width)


@dataclass(frozen=True)
class Curve:
    """One quantity per step of one run, possibly downsampled; ``frame`` has columns
    ``step`` and ``value`` (non-finite values as NaN)."""

    frame: pd.DataFrame
    steps: int  # steps in the range asked for
    bucket: int  # steps per bucket; 1 = every step
    lo: int
    hi: int

    @property
    def downsampled(self) -> bool:
        return self.bucket > 1

    def note(self) -> str:
        """Says whether the curve shows every step or a downsampled view."""
        if not self.downsampled:
            return f"every step shown (steps {self.lo} to {self.hi})"
        return (
            f"downsampled: the min and max of every {self.bucket:,} steps "
            f"({len(self.frame):,} points for {self.steps:,} steps); {_ZOOM_HINT}"
        )


def curves_note(curves: Mapping[str, Curve]) -> str:
    """One line for a chart of several runs: every step shown, or which runs are downsampled
    and how."""
    down = {run: c for run, c in curves.items() if c.downsampled}
    if not down:
        return "every step shown"
    buckets = " or ".join(f"{b:,}" for b in sorted({c.bucket for c in down.values()}))
    return (
        f"downsampled: the min and max of every {buckets} steps for {len(down)} of "
        f"{len(curves)} runs ({', '.join(down)}); {_ZOOM_HINT}"
    )


def read_per_step(
    trace: Trace, column: str, lo: int | None, hi: int | None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Each step's value of ``column`` for steps ``[lo, hi]`` (either end open when None)."""
    table = trace.read_table(["step", column], steps=(lo, None if hi is None else hi + 1))
    return per_step(column, table["step"].to_numpy(), table[column].to_numpy().astype(np.float64))


def per_step(column: str, steps: npt.NDArray[np.int64], values: npt.NDArray[np.float64]
             ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:  # fmt: skip
    """Each step's value from rows (``steps`` ascending): the batch loss (the mean of the
    step's rows), or a parameter (the same on every row of a step)."""
    if len(steps) == 0:
        return steps, values
    if column == "loss":
        return batch_losses(steps, values)
    starts = np.flatnonzero(np.diff(steps, prepend=steps[0] - 1))
    return steps[starts], values[starts]


def check_curve_column(trace: Trace, column: str) -> None:
    """Refuse a column that is not a curve: ``loss``, or a parameter before or after a step."""
    params = after_columns(trace.tensors)
    before = [c.replace("_after", "_before", 1) for c in params]
    if column not in ("loss", *params, *before):
        raise TraceError(f"no curve for {column!r}: use loss or one of {', '.join(params)}")


def curve_of(
    steps: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    lo: int | None = None,
    hi: int | None = None,
    max_points: int = MAX_POINTS,
) -> Curve:
    """A :class:`Curve` of one value per step (``steps`` ascending, already cut to
    ``[lo, hi]``), downsampled when longer than ``max_points``."""
    s, v, bucket = minmax_downsample(steps, values, max_points)
    first = int(steps[0]) if len(steps) else (lo or 0)
    last = int(steps[-1]) if len(steps) else (hi if hi is not None else -1)
    return points_curve(s, v, len(steps), bucket, first, last)


def points_curve(steps: npt.NDArray[np.int64], values: npt.NDArray[np.float64], count: int,
                 bucket: int, lo: int, hi: int) -> Curve:  # fmt: skip
    """The :class:`Curve` of points already chosen (every step, or buckets' min and max)."""
    frame = pd.DataFrame({"step": steps, "value": np.where(np.isfinite(values), values, np.nan)})
    return Curve(frame, count, bucket, lo, hi)


def curve(
    trace: Trace,
    column: str,
    lo: int | None = None,
    hi: int | None = None,
    max_points: int = MAX_POINTS,
) -> Curve:
    """``loss`` (the batch loss) or a parameter column before or after the step
    (``w2_after_1_2``, ``b2_before_1``) per step in ``[lo, hi]``, reading just those two
    columns and the row groups of that range.

    >>> c = curve(trace, "loss")  # doctest: +SKIP
    >>> c.downsampled, c.note()  # doctest: +SKIP
    (True, 'downsampled: the min and max of every 1,024 steps (…)')
    """
    check_curve_column(trace, column)
    if column == "loss" and RECORD_KEY in trace.meta:
        return figures_curve(trace, lo, hi, max_points)
    steps, values = read_per_step(trace, column, lo, hi)
    return curve_of(steps, values, lo, hi, max_points)


def figures_curve(
    trace: Trace, lo: int | None = None, hi: int | None = None, max_points: int = MAX_POINTS
) -> Curve:
    """The batch loss of every step in ``[lo, hi]`` from the run's per-step figures: whole
    for a run that keeps only some steps' values (docs/trace-format.md, "Per-step
    figures")."""
    figures = load_scalars(trace.path)
    steps = figures["step"].to_numpy(dtype=np.int64)
    loss = figures["loss"].to_numpy(dtype=np.float64)
    keep = np.ones(len(steps), dtype=bool)
    if lo is not None:
        keep &= steps >= lo
    if hi is not None:
        keep &= steps <= hi
    return curve_of(steps[keep], loss[keep], lo, hi, max_points)
