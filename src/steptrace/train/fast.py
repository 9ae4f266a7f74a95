"""The vectorised recorder for float runs: bit-identical to :func:`trainer.iter_events`.

The only state carried from step to step is the weight vector w. So a chunk of steps is
recorded in two passes:

1. a tight sequential loop (:func:`step_loop`) runs the model through the chunk and keeps one
   number per row, δ3 — everything the weights' path depends on;
2. everything else is computed a whole chunk at a time with numpy: the gradients δ3 * o1, the
   batch sums, the weights' path ŵ = w - α * Σ grad (``np.subtract.accumulate`` subtracts in
   order, one step after the other, exactly as the loop does), then o1, o2, o3, loss, δ4 … δ1 by
   :mod:`steptrace.model.article`'s column functions.

Each floating-point operation happens on the same operands, in the same order, as in the scalar
maths, so the result is the same bit for bit; ``tests/test_fast.py`` checks it against
:func:`trainer.iter_events` for float64 and float32, batches, shuffling, NaN and infinities.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

from ..data import Dataset
from ..model import article as model
from ..numerics import Number
from ..trace.schema import vector

if TYPE_CHECKING:  # trainer imports this module at run time
    from .trainer import Settings

__all__ = ["ChunkPlan", "EpochOrders", "compute_blocks", "float_blocks", "prefetch", "step_loop"]

Array = npt.NDArray[Any]
T = TypeVar("T")


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


# --- pass 1: the sequential loop ------------------------------------------------------------
# Python cannot unroll a loop over the features, and a loop over tuples costs about three times
# the arithmetic itself; so the loop is written out once per feature count, with one local
# variable per weight. The lines mirror model.forward / backward / update operation for
# operation: o2 = ((w1*x1 + w2*x2) + w3*x3), o3 = o2 if o2 >= 0 else 0, δ4 = (o3 - y) / m,
# δ3 = δ4 if o2 >= 0 else 0, grad = δ3 * x summed in batch order, ŵ = w - α * grad.
# With one sample per step δ4 = (o3 - y) / 1 is left out: dividing by one returns its operand
# unchanged in IEEE 754 (NaN payloads included).

_SINGLE = """
def loop(w, lr, zero, rows, order, sizes, out):
    {ws}, = w
    put = out.append
    for {xs}, y in map(rows.__getitem__, order):
        o2 = {dot}
        d3 = o2 - y if o2 >= 0 else zero
        put(d3)
{update_single}
    return ({ws},)
"""

_BATCHED = """
def loop(w, lr, zero, rows, order, sizes, out):
    {ws}, = w
    put = out.append
    pos = 0
    for m in sizes:
        {xs}, y = rows[order[pos]]
        o2 = {dot}
        d3 = (o2 - y) / m if o2 >= 0 else zero
        put(d3)
{grad_first}
        for {xs}, y in map(rows.__getitem__, order[pos + 1 : pos + m]):
            o2 = {dot}
            d3 = (o2 - y) / m if o2 >= 0 else zero
            put(d3)
{grad_add}
        pos += m
{update_batched}
    return ({ws},)
"""

Loop = Callable[
    [tuple[Number, ...], Number, Number, Sequence[tuple[Number, ...]], Sequence[int],
     Sequence[int], list[Number]],
    tuple[Number, ...],
]  # fmt: skip


@cache
def step_loop(k: int, batched: bool) -> Loop:
    """The sequential loop for ``k`` features, compiled once.

    ``loop(w, lr, zero, rows, order, sizes, out)`` runs the steps of one chunk from weights
    ``w``: ``rows[i]`` is sample i as ``(x1, …, xk, y)``, ``order`` the samples visited, and
    ``sizes`` the number of samples of each step (ignored when not ``batched``: one each). It
    appends each row's δ3 to ``out`` and returns the weights after the last step. ``zero`` is
    the number system's 0 (``0.0`` or ``numpy.float32(0)``).

    >>> loop = step_loop(1, batched=False)
    >>> d3 = []
    >>> loop((0.5,), 0.1, 0.0, [(2.0, 0.0)], [0, 0], [], d3)
    (0.18,)
    >>> d3
    [1.0, 0.6]
    """
    ks = range(1, k + 1)
    fields = {
        "ws": ", ".join(f"w{j}" for j in ks),
        "xs": ", ".join(f"x{j}" for j in ks),
        "dot": " + ".join(f"w{j} * x{j}" for j in ks),
        "update_single": "\n".join(f"        w{j} = w{j} - lr * (d3 * x{j})" for j in ks),
        "grad_first": "\n".join(f"        g{j} = d3 * x{j}" for j in ks),
        "grad_add": "\n".join(f"            g{j} = g{j} + d3 * x{j}" for j in ks),
        "update_batched": "\n".join(f"        w{j} = w{j} - lr * g{j}" for j in ks),
    }
    source = (_BATCHED if batched else _SINGLE).format(**fields)
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<steptrace step loop k={k}>", "exec"), namespace)
    loop: Loop = namespace["loop"]
    return loop


# --- pass 2: a chunk by columns -------------------------------------------------------------


class ChunkPlan:
    """Which rows a chunk of steps holds: step, epoch and sample of each row, and the number
    of samples ``m`` of each row's step (the last batch of an epoch may be partial)."""

    def __init__(self, n: int, batch_size: int, orders: EpochOrders, s0: int, s1: int) -> None:
        spe = -(-n // batch_size)
        last_m = n - (spe - 1) * batch_size

        def first_row(step: int) -> int:
            return (step // spe) * n + (step % spe) * batch_size

        rows = np.arange(first_row(s0), first_row(s1), dtype=np.int64)
        self.epoch, pos = rows // n, rows % n
        self.sample = orders.samples(self.epoch, pos)
        self.step = self.epoch * spe + pos // batch_size
        self.m = np.where(pos // batch_size == spe - 1, last_m, batch_size)
        self.local = self.step - s0  # row → index of its step in the chunk
        self.starts = np.flatnonzero(np.diff(self.local, prepend=-1))  # first row of each step
        self.sizes = self.m[self.starts]


def weights_path(w0: Array, lr: Number, d3: Array, x: Array, plan: ChunkPlan) -> Array:
    """The weights before each step of the chunk and after its last, ``(steps + 1) × k``, from
    each row's δ3: grad = δ3 * o1, summed in batch order, then w - α * Σ grad step after step
    (the loop's sequential state, recomputed by columns)."""
    grad = d3[:, None] * x
    total = grad[plan.starts]
    for j in range(1, int(plan.sizes.max())):
        # The j-th sample of every step that has one, added in batch order.
        has = plan.sizes > j
        total[has] = total[has] + grad[plan.starts[has] + j]
    deltas = np.empty((len(plan.starts) + 1, x.shape[1]), dtype=x.dtype)
    deltas[0] = w0
    deltas[1:] = lr * total
    path: Array = np.subtract.accumulate(deltas, axis=0)
    return path


def float_blocks(
    dataset: Dataset,
    settings: Settings,
    start_step: int = 0,
    w: Sequence[Number] | None = None,
    max_rows: int = 65_536,
) -> Iterator[dict[str, Any]]:
    """Trace rows of a float32/float64 run as column blocks (see :func:`trainer.iter_blocks`).

    The blocks are computed one ahead in a thread: the consumer's Parquet writing releases the
    GIL, so on two cores the writing of block i overlaps the loop of block i + 1.
    """
    return prefetch(compute_blocks(dataset, settings, start_step, w, max_rows))


def compute_blocks(
    dataset: Dataset,
    settings: Settings,
    start_step: int = 0,
    w: Sequence[Number] | None = None,
    max_rows: int = 65_536,
) -> Iterator[dict[str, Any]]:
    """:func:`float_blocks`, computed in the calling thread."""
    num = settings.numerics
    if num.dtype is None:
        raise ValueError("the vectorised recorder is for float runs; exact runs use iter_events")
    X, Y = dataset.as_arrays(num)
    n, b, k = len(dataset), settings.batch_size, dataset.n_features
    spe = -(-n // b)
    total_steps = spe * settings.epochs
    lr = num.make(settings.lr)
    w0 = np.array([num.make(q) for q in settings.init] if w is None else list(w), num.dtype)
    scalars = _scalars(num.dtype)
    rows = [tuple(scalars(r)) for r in np.column_stack([X, Y])]
    zero = scalars(np.zeros(1, num.dtype))[0]
    loop = step_loop(k, b > 1)
    orders = EpochOrders(n, settings.shuffle, settings.seed)
    steps_per_chunk = max(1, max_rows // b)
    if spe <= steps_per_chunk:
        # Whole epochs per chunk when one fits, so that flushed parts hold whole epochs; rounded
        # up, so that a chunk still fills a row group (the writer writes one per 65 536 rows).
        steps_per_chunk = -(-steps_per_chunk // spe) * spe
    for s0 in range(start_step, total_steps, steps_per_chunk):
        plan = ChunkPlan(n, b, orders, s0, min(s0 + steps_per_chunk, total_steps))
        d3_rows: list[Number] = []
        with np.errstate(all="ignore"):
            loop(tuple(scalars(w0)), lr, zero, rows,
                 plan.sample.tolist(), plan.sizes.tolist(), d3_rows)  # fmt: skip
            x, y = _rows_of(X, plan.sample), Y[plan.sample]
            path = weights_path(w0, lr, np.array(d3_rows, dtype=num.dtype), x, plan)
            block = _columns(plan, path, x, y, num.to_float(lr), k)
        w0 = path[-1]
        yield block


def _scalars(dtype: np.dtype[Any]) -> Callable[[Array], list[Number]]:
    """How the loop receives numbers: Python floats for float64 (the same IEEE doubles, and
    far faster), numpy scalars for float32 (so every operation rounds to float32)."""
    if dtype == np.float64:
        return lambda a: list(a.tolist())
    return list


def _rows_of(matrix: Array, index: Array) -> Array:
    """``matrix[index]``, laid out column by column (Fortran order): each feature's values are
    then contiguous, and so are those of every array computed from them, ready for Arrow."""
    rows: Array = np.take(matrix.T, index, axis=1).T
    return rows


def _columns(plan: ChunkPlan, path: Array, x: Array, y: Array, lr: float, k: int) -> dict[str, Any]:
    """Every column of a chunk, by :mod:`steptrace.model.article`'s column functions."""
    W, W_after = _rows_of(path, plan.local), _rows_of(path, plan.local + 1)
    o1, o2, o3 = model.forward_columns(W, x)
    loss = model.loss_columns(o3, y)
    d4, d3, d2, d1, grad = model.backward_columns(o1, o2, o3, W, y, plan.m.astype(x.dtype))
    block: dict[str, Any] = {"step": plan.step, "epoch": plan.epoch, "sample": plan.sample}
    block["lr"] = np.full(len(plan.step), lr)
    for name, value in (("y", y), ("o2", o2), ("o3", o3), ("d4", d4), ("d3", d3)):
        block[f"{name}_1"] = value.astype(np.float64, copy=False)
    block["loss"] = loss.astype(np.float64, copy=False)
    for name, matrix in (
        ("x", x), ("o1", o1), ("d2", d2), ("d1", d1), ("grad", grad),
        ("w_before", W), ("w_after", W_after),
    ):  # fmt: skip
        for col, values in zip(vector(name, k), matrix.T, strict=True):
            block[col] = np.ascontiguousarray(values, dtype=np.float64)
    return block


_DONE = object()


class _Raised:
    """An exception of the producer, on its way to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(items: Iterator[T], depth: int = 1) -> Generator[T, None, None]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead of the consumer.

    Exceptions raised by ``items`` are raised here, in the consumer; closing this iterator
    early (``break``, an error while writing) stops the thread after its current item.

    >>> list(prefetch(iter(range(3))))
    [0, 1, 2]
    """
    ready: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(ready, item, stop):
                    return
            _put(ready, _DONE, stop)
        except BaseException as exc:  # handed to the consumer, which raises it
            _put(ready, _Raised(exc), stop)

    thread = threading.Thread(target=produce, name="steptrace-blocks", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join()


def _put(ready: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Queue ``item`` unless the consumer has gone; whether it was queued."""
    while not stop.is_set():
        try:
            ready.put(item, timeout=0.05)
        except queue.Full:
            continue
        return True
    return False
