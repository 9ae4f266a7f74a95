"""The vectorised recorder for float runs: bit-identical to :func:`trainer.iter_events`.

The only state carried from step to step is the weight vector w. So a chunk of steps is
recorded in two passes: a tight sequential loop computes the chunk's weights (nothing else),
then every other column — o1, o2, o3, loss, δ4 … δ1, grad — is computed for the whole chunk at
once by :mod:`steptrace.model`'s column functions, which perform the same floating-point
operations in the same order as the scalar maths. ``tests/test_fast.py`` checks bit-identity.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from . import model
from .data import Dataset
from .numerics import Number
from .schema import vector

__all__ = ["EpochOrders", "float_blocks"]

Array = npt.NDArray[Any]


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


def _weights_path(
    w: tuple[Number, ...],
    lr: Number,
    xs: Sequence[tuple[Number, ...]],
    ys: Sequence[Number],
    sample: Sequence[int],
    step_starts: Sequence[int],
) -> tuple[list[tuple[Number, ...]], tuple[Number, ...]]:
    """The weights before each step of a chunk, and after its last: the sequential part.

    Same operations, same order as :func:`model.forward`/:func:`model.backward`/
    :func:`model.update`, written out without building the values no one reads here.
    """
    before = []
    ends = [*step_starts[1:], len(sample)]
    for start, end in zip(step_starts, ends, strict=True):
        before.append(w)
        m = end - start
        grads = []
        for i in sample[start:end]:
            fw = model.forward(w, xs[i])
            grads.append(model.backward(fw, w, ys[i], m).grad)
        w = model.update(w, lr, model.sum_gradients(grads))
    return before, w


def float_blocks(
    dataset: Dataset,
    settings: Any,
    start_step: int = 0,
    w: Sequence[Number] | None = None,
    max_rows: int = 65_536,
) -> Iterator[dict[str, Any]]:
    """Trace rows of a float32/float64 run as column blocks (see :func:`trainer.iter_blocks`)."""
    num = settings.numerics
    X, Y = dataset.as_arrays(num)
    xs, ys = dataset.in_numerics(num)
    n, b, k = len(dataset), settings.batch_size, dataset.n_features
    spe = -(-n // b)
    last_m = n - (spe - 1) * b
    total_steps = spe * settings.epochs
    lr = num.make(settings.lr)
    weights = tuple(num.make(q) for q in settings.init) if w is None else tuple(w)
    orders = EpochOrders(n, settings.shuffle, settings.seed)
    steps_per_chunk = max(1, max_rows // b)

    def first_row(step: int) -> int:
        return int((step // spe) * n + (step % spe) * b)

    for s0 in range(start_step, total_steps, steps_per_chunk):
        s1 = min(s0 + steps_per_chunk, total_steps)
        rows = np.arange(first_row(s0), first_row(s1), dtype=np.int64)
        epoch, pos = rows // n, rows % n
        sample = orders.samples(epoch, pos)
        step = epoch * spe + pos // b
        m = np.where(pos // b == spe - 1, last_m, b)
        local = step - s0
        starts = np.flatnonzero(np.diff(local, prepend=-1)).tolist()
        with np.errstate(all="ignore"):
            before, weights = _weights_path(weights, lr, xs, ys, sample.tolist(), starts)
            w_steps = np.array([*before, weights], dtype=num.dtype).reshape(-1, k)
            W, W_after = w_steps[local], w_steps[local + 1]
            x, y = X[sample], Y[sample]
            o1, o2, o3 = model.forward_columns(W, x)
            loss = model.loss_columns(o3, y)
            d4, d3, d2, d1, grad = model.backward_columns(o1, o2, o3, W, y, m.astype(num.dtype))
        block: dict[str, Any] = {"step": step, "epoch": epoch, "sample": sample}
        block["lr"] = np.full(len(rows), num.to_float(lr))
        for name, value in (("y", y), ("o2", o2), ("o3", o3), ("d4", d4), ("d3", d3)):
            block[f"{name}_1"] = value.astype(np.float64)
        block["loss"] = loss.astype(np.float64)
        for name, matrix in (
            ("x", x), ("o1", o1), ("d2", d2), ("d1", d1), ("grad", grad),
            ("w_before", W), ("w_after", W_after),
        ):  # fmt: skip
            for col, values in zip(vector(name, k), matrix.T, strict=True):
                block[col] = values.astype(np.float64)
        yield block
