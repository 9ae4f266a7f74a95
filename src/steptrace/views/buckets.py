"""The smallest and the largest value of each bucket of steps: what a long curve draws, and
what a followed run keeps of every step (so its memory stays bounded however long it runs).

Buckets are aligned on the step numbers and their width is a power of two: bucket ``k`` of
width ``w`` holds steps ``k·w … (k+1)·w − 1``. So buckets of width ``w`` merge into buckets of
any wider power of two, and the result is the same as bucketing every step at that width
directly: the min (and the max) of a bucket is the first step, in step order, that reaches it.
Non-finite values are in no min or max (divergence is marked apart); a bucket of non-finite
values only still counts its steps.

>>> b = MinMax.of(np.arange(10), np.array([0, 9, 1, 1, 1, 1, 1, -5, 1, 1.0]), 8)
>>> b.points()
(array([1, 7, 8]), array([ 9., -5.,  1.]))
>>> MinMax.of(np.arange(10), np.arange(10.0), 2).coarsen(8).points()
(array([0, 7, 8, 9]), array([0., 7., 8., 9.]))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["MinMax", "bucket_width"]

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


def bucket_width(lo: int, hi: int, steps: int, max_points: int) -> int:
    """Steps per bucket for a curve of ``steps`` steps between ``lo`` and ``hi``: 1 (every
    step) when they fit in ``max_points``, else the smallest power of two whose buckets over
    ``[lo, hi]`` number at most ``max_points // 2`` (two points each: its min and its max).

    >>> bucket_width(0, 2999, 3000, 2000), bucket_width(0, 1999, 2000, 2000)
    (4, 1)
    """
    if steps <= max_points:
        return 1
    half = max(max_points // 2, 1)
    width = 2
    while hi // width - lo // width + 1 > half:
        width *= 2
    return width


@dataclass(frozen=True)
class MinMax:
    """Buckets of one value per step, in step order: bucket ``key[i]`` covers ``count[i]``
    recorded steps, its smallest finite value is ``min_value[i]`` at step ``min_step[i]``
    (``inf`` if none is finite) and its largest ``max_value[i]`` at ``max_step[i]``."""

    width: int
    key: Ints
    count: Ints
    min_step: Ints
    min_value: Floats
    max_step: Ints
    max_value: Floats

    @classmethod
    def empty(cls, width: int = 1) -> MinMax:
        i, f = np.zeros(0, np.int64), np.zeros(0, np.float64)
        return cls(width, i, i, i, f, i, f)

    @classmethod
    def of(cls, steps: Ints, values: Floats, width: int) -> MinMax:
        """Buckets of ``width`` steps of one value per step (``steps`` ascending)."""
        steps = np.asarray(steps, np.int64)
        values = np.asarray(values, np.float64)
        finite = np.isfinite(values)
        low = np.where(finite, values, np.inf)
        high = np.where(finite, values, -np.inf)
        n = len(steps)
        if n == 0 or width == 1 or int(steps[-1]) - int(steps[0]) + 1 != n:
            return _group(width, np.ones(n, np.int64), steps, low, steps, high)
        return _consecutive(int(steps[0]), low, high, width)

    @classmethod
    def join(cls, parts: Sequence[MinMax], width: int) -> MinMax:
        """``parts`` (in step order, none wider than ``width``) as buckets of ``width``."""
        joined = [np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS]
        return _group(width, *joined)

    def coarsen(self, width: int) -> MinMax:
        """The same steps in buckets of ``width`` (a power of two, at least this width)."""
        return MinMax.join([self], width)

    def __len__(self) -> int:
        return len(self.key)

    def tail(self, start: int) -> MinMax:
        """Buckets ``start`` on (a view)."""
        return MinMax(self.width, *(getattr(self, f)[start:] for f in ("key", *_FIELDS)))

    def head(self, end: int) -> MinMax:
        """Buckets before ``end`` (a view)."""
        return MinMax(self.width, *(getattr(self, f)[:end] for f in ("key", *_FIELDS)))

    def steps(self) -> int:
        return int(self.count.sum())

    def points(self) -> tuple[Ints, Floats]:
        """Each bucket's min and max at their own steps, in step order (one point when they
        are the same step); buckets with no finite value give none."""
        keep = np.isfinite(self.min_value)
        steps = np.concatenate([self.min_step[keep], self.max_step[keep]])
        values = np.concatenate([self.min_value[keep], self.max_value[keep]])
        order = np.argsort(steps, kind="stable")
        steps, values = steps[order], values[order]
        first = np.diff(steps, prepend=steps[:1] - 1) != 0
        return steps[first], values[first]


_FIELDS = ("count", "min_step", "min_value", "max_step", "max_value")


def _group(width: int, count: Ints, min_step: Ints, min_value: Floats,
           max_step: Ints, max_value: Floats) -> MinMax:  # fmt: skip
    """Merge entries (in step order, each inside one bucket of ``width``) bucket by bucket."""
    if len(count) == 0:
        return MinMax.empty(width)
    key = min_step // width  # every entry has steps, and all of them are in one bucket
    starts = np.flatnonzero(np.diff(key, prepend=key[0] - 1))
    if len(starts) == len(key):  # nothing to merge
        return MinMax(width, key, count, min_step, min_value, max_step, max_value)
    group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(key))))
    low = np.minimum.reduceat(min_value, starts)
    high = np.maximum.reduceat(max_value, starts)
    i_low = _first(min_value == low[group], group)
    i_high = _first(max_value == high[group], group)
    return MinMax(
        width, key[starts], np.add.reduceat(count, starts),
        min_step[i_low], min_value[i_low], max_step[i_high], max_value[i_high],
    )  # fmt: skip


def _consecutive(first: int, low: Floats, high: Floats, width: int) -> MinMax:
    """:meth:`MinMax.of` for the steps ``first, first + 1, …`` (a run's steps are): a table
    of a bucket a row, whose ``argmin`` and ``argmax`` are the first to reach the min and max."""
    lead = first % width  # the steps of the first bucket before the first step
    rows = -(-(lead + len(low)) // width)
    tail = rows * width - lead - len(low)
    low = np.pad(low, (lead, tail), constant_values=np.inf).reshape(rows, width)
    high = np.pad(high, (lead, tail), constant_values=-np.inf).reshape(rows, width)
    row = np.arange(rows)
    start = (first - lead) + row * width  # each bucket's first step
    i_low, i_high = low.argmin(axis=1), high.argmax(axis=1)
    min_value, max_value = low[row, i_low], high[row, i_high]
    # A bucket of non-finite values only: both at its first step, as _group puts them.
    opening = np.maximum(start, first)
    min_step = np.where(min_value == np.inf, opening, start + i_low)
    max_step = np.where(max_value == -np.inf, opening, start + i_high)
    count = np.full(rows, width, np.int64)
    count[0] -= lead
    count[-1] -= tail
    return MinMax(width, start // width, count, min_step, min_value, max_step, max_value)


def _first(hit: npt.NDArray[np.bool_], group: Ints) -> Ints:
    """The first entry of each group where ``hit`` holds (every group has one)."""
    where = np.flatnonzero(hit)
    first: Ints = where[np.diff(group[where], prepend=-1) != 0]
    return first
