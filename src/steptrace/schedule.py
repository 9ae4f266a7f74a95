"""Which data inputs each step visits: epochs, batches, shuffled orders.

A run's schedule is a function of the dataset's size, the batch size, the epochs and the seed
alone, so the recorder, ``--resume`` and ``steptrace verify`` all work it out the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["ChunkPlan", "EpochOrders", "PlannedStep", "plan", "steps_per_epoch"]

Array = npt.NDArray[Any]


def steps_per_epoch(n_samples: int, batch_size: int) -> int:
    """⌈rows / batch size⌉: the last batch of an epoch may be partial."""
    return -(-n_samples // batch_size)


class EpochOrders:
    """The order in which each epoch visits the dataset's rows.

    Unshuffled: 0, 1, …, n-1. Shuffled: permutations drawn in groups of epochs, the group of
    epoch e from a generator seeded with ``(seed, e // group)``, so any epoch's order can be
    found without drawing the ones before it (that is what makes ``--resume`` exact).
    """

    def __init__(self, n: int, shuffle: bool, seed: int | None) -> None:
        self.n = n
        self.shuffle = shuffle
        self.seed = seed or 0
        self.group = max(1, 65_536 // n)
        self._cached: tuple[int, Array] | None = None

    def _group(self, g: int) -> Array:
        if self._cached is None or self._cached[0] != g:
            rng = np.random.default_rng([self.seed, g])
            self._cached = (g, rng.random((self.group, self.n)).argsort(axis=1, kind="stable"))
        return self._cached[1]

    def order(self, epoch: int) -> Array:
        """The sample indices of one epoch, in visiting order."""
        if not self.shuffle:
            return np.arange(self.n)
        order: Array = self._group(epoch // self.group)[epoch % self.group]
        return order

    def samples(self, epoch: Array, pos: Array) -> Array:
        """Sample index of each (epoch, position) pair of a chunk of rows."""
        if not self.shuffle:
            return pos.copy()
        out = np.empty_like(pos)
        groups = epoch // self.group
        for g in np.unique(groups):
            sel = groups == g
            out[sel] = self._group(int(g))[epoch[sel] % self.group, pos[sel]]
        return out


@dataclass(frozen=True)
class PlannedStep:
    step: int
    epoch: int
    samples: tuple[int, ...]


def plan(
    n_samples: int, epochs: int, batch_size: int, shuffle: bool = False, seed: int | None = None
) -> Iterator[PlannedStep]:
    """Which samples each step uses, epoch after epoch."""
    orders = EpochOrders(n_samples, shuffle, seed)
    step = 0
    for epoch in range(epochs):
        order = orders.order(epoch).tolist()
        for start in range(0, n_samples, batch_size):
            yield PlannedStep(step, epoch, tuple(order[start : start + batch_size]))
            step += 1


class ChunkPlan:
    """The rows of steps ``s0 <= step < s1``: step, epoch and sample of each row, the number
    of samples ``m`` of each row's step (the last batch of an epoch may be partial), and where
    each step's rows start."""

    def __init__(self, n: int, batch_size: int, orders: EpochOrders, s0: int, s1: int) -> None:
        spe = steps_per_epoch(n, batch_size)
        last_m = n - (spe - 1) * batch_size

        def first_row(step: int) -> int:
            return (step // spe) * n + (step % spe) * batch_size

        self.s0, self.s1 = s0, s1
        self.steps_per_epoch = spe
        rows = np.arange(first_row(s0), first_row(s1), dtype=np.int64)
        self.epoch, pos = rows // n, rows % n
        self.sample = orders.samples(self.epoch, pos)
        self.step = self.epoch * spe + pos // batch_size
        self.m = np.where(pos // batch_size == spe - 1, last_m, batch_size)
        self.local = self.step - s0  # row → index of its step in the chunk
        self.starts = np.flatnonzero(np.diff(self.local, prepend=-1))  # first row of each step
        self.sizes = self.m[self.starts]

    def __len__(self) -> int:
        return len(self.step)
