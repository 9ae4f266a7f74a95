"""Every value of a chunk of steps, computed on columns, and the run's rows as blocks.

Once :func:`steptrace.train.compiled.walk` knows the parameters before each step, nothing else
carries over between rows: each row's forward pass, loss and backward pass depend on its own
data input and its step's parameters. So a chunk is computed in one go, each component of each
vector a numpy column over the chunk's rows (object columns of ``Fraction`` in exact runs), by
the very layer code the walk ran on numbers — same operations, same order, same bits.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..data import Dataset
from ..errors import SteptraceError
from ..model.images import Conv2d
from ..model.stack import ParamSet, Stack
from ..model.values import tensor_values
from ..numerics import EXACT_MAX_BITS, Number, Numerics
from ..schedule import ChunkPlan, EpochOrders, steps_per_epoch
from ..trace.schema import EXACT_SUFFIX, Tensor, stack_tensors
from ..trace.writer import START
from .compiled import walk
from .prefetch import prefetch
from .settings import Settings
from .stepwalk import lean_walk, step_walk, walks_by_step

__all__ = ["Block", "chunk_columns", "compute_blocks", "iter_blocks", "to_block"]

Array = npt.NDArray[Any]
Block = dict[str, Any]
"""A chunk of trace rows: column name → numpy array (or list of exact texts), for the columns
the trace stores; under :data:`START`, the values stored once as the step before's
(``w2_before_1_1`` …) on the block's first step, by column (a new part's footer holds them)."""


def chunk_columns(
    stack: Stack,
    tensors: Sequence[Tensor],
    plan: ChunkPlan,
    path: Array,
    X: Array,
    Y: Array,
    lr: Number,
    numerics: Numerics,
) -> dict[str, Array]:
    """Every value column of a chunk's rows, in the run's numbers, from the parameters'
    ``path`` (steps + 1 rows of flat parameters: before each step, and after the last)."""
    # Each row's step's parameters, and its data: column-major, so that every value's column
    # (a tensor's component over the rows) lies contiguous, from the inputs to the trace.
    before = stack.unflat(np.asfortranarray(path[plan.local]))
    after = stack.unflat(np.asfortranarray(path[plan.local + 1]))
    x = np.asfortranarray(X[plan.sample]).reshape(len(plan), *stack.in_shape)
    m = plan.m.astype(numerics.dtype if numerics.dtype is not None else object)
    with np.errstate(all="ignore"):
        values = tensor_values(stack, before, after, x, Y[plan.sample], m, lr)
    return value_columns(tensors, values, len(plan))


def value_columns(tensors: Sequence[Tensor], values: dict[str, Any], rows: int) -> dict[str, Array]:
    """Each tensor's values (arrays, rows first; or one value for every row) as the trace's
    columns, one per component."""
    columns = {}
    for t in tensors:
        v = np.asarray(values[t.name])
        if v.ndim == 0:
            flat = np.broadcast_to(v, (1, rows))
        else:  # one copy of the tensor, column by column: each column then lies contiguous
            flat = np.ascontiguousarray(v.reshape(rows, -1).T)
        for i, name in enumerate(t.columns()):
            columns[name] = flat[i]
    return columns


def to_block(
    plan: ChunkPlan,
    columns: dict[str, Array],
    numerics: Numerics,
    rows: int,
    starts: Collection[str] = (),
) -> Block:
    """The first ``rows`` rows as the writer takes them: float64 columns, and the exact
    rational texts beside them in exact runs; the columns ``starts`` (stored once, as the step
    before's) only on the first row, under :data:`START`."""
    block: Block = {"step": plan.step[:rows], "epoch": plan.epoch[:rows],
                    "sample": plan.sample[:rows], START: {}}  # fmt: skip
    for name, column in columns.items():
        if name in starts:
            q = column[0]
            block[START][name] = numerics.to_float(q)
            if numerics.is_exact:
                block[START][name + EXACT_SUFFIX] = str(q)
            continue
        column = column[:rows]
        if numerics.is_exact:
            block[name] = np.array([numerics.to_float(q) for q in column], dtype=np.float64)
            block[name + EXACT_SUFFIX] = [str(q) for q in column]
        else:
            block[name] = np.ascontiguousarray(column, dtype=np.float64)
    return block


def iter_blocks(
    dataset: Dataset,
    settings: Settings,
    start_step: int = 0,
    params: ParamSet | None = None,
    max_rows: int = 65_536,
    max_seconds: float = 0.25,
) -> Iterator[Block]:
    """The run's rows as column blocks of whole steps, from ``start_step`` on (with
    ``params`` the parameters before it; default the model's initial ones).

    A block closes after ``max_rows`` rows or ``max_seconds`` of walking, whichever comes
    first, so that the writer can flush often even when steps are slow. Blocks are computed
    one ahead in a thread: the writer's Parquet encoding releases the GIL, so on two cores
    writing block i overlaps computing block i + 1.
    """
    return prefetch(compute_blocks(dataset, settings, start_step, params, max_rows, max_seconds))


def compute_blocks(
    dataset: Dataset,
    settings: Settings,
    start_step: int = 0,
    params: ParamSet | None = None,
    max_rows: int = 65_536,
    max_seconds: float = 0.25,
) -> Iterator[Block]:
    """:func:`iter_blocks`, computed in the calling thread."""
    num = settings.numerics
    stack = settings.model.stack(num)
    # The values stored once are not computed again, but for the parameters before the
    # block's first step (its part's footer may need them).
    every = stack_tensors(stack, len(dataset.targets))
    tensors = [t for t in every if t.stored or t.previous_step]
    starts = {c for t in every if t.previous_step for c in t.columns()}
    X, Y = dataset.as_arrays(num)
    by_step = walks_by_step(stack)
    xs = [] if by_step else [list(_numbers(row, num)) for row in X]
    ys = [] if by_step else [list(_numbers(row, num)) for row in Y]
    n, b = len(dataset), settings.batch_size
    spe = steps_per_epoch(n, b)
    total_steps = spe * settings.epochs
    lr = num.make(settings.lr)
    current = settings.model.params(num) if params is None else params
    orders = EpochOrders(n, settings.shuffle, settings.seed)
    steps_per_chunk = max(1, _rows_per_chunk(stack, max_rows) // b)
    if spe <= steps_per_chunk:
        # Whole epochs per chunk when one fits, so that flushed parts hold whole epochs; rounded
        # up, so that a chunk still fills a row group (the writer writes one per 65 536 rows).
        steps_per_chunk = -(-steps_per_chunk // spe) * spe
    s0 = start_step
    while s0 < total_steps:
        plan = ChunkPlan(n, b, orders, s0, min(s0 + steps_per_chunk, total_steps))
        with np.errstate(all="ignore"):
            if by_step and stack.couples_rows:
                flat, values = step_walk(stack, current, lr, X, Y, plan, num, tensors,
                                         max_seconds)  # fmt: skip
            elif by_step:
                flat = lean_walk(stack, current, lr, X, Y, plan, num, max_seconds)
            else:
                flat = walk(stack, current, lr, xs, ys, plan, num, max_seconds)
        walked = len(flat) - 1
        if walked < plan.s1 - s0:
            plan = ChunkPlan(n, b, orders, s0, s0 + walked)
        if by_step and stack.couples_rows:
            columns = value_columns(tensors, values, len(plan))
        else:
            columns = chunk_columns(stack, tensors, plan, flat, X, Y, lr, num)
        error = _exact_limit(columns, plan, num) if num.is_exact else None
        if error is not None:
            rows, exc = error
            if rows:
                yield to_block(plan, columns, num, rows, starts)
            raise exc
        yield to_block(plan, columns, num, len(plan), starts)
        current = stack.unflat(flat[-1])
        s0 += walked


def _rows_per_chunk(stack: Stack, max_rows: int) -> int:
    """Rows a chunk holds: ``max_rows``, fewer when rows are wide, so that a chunk's columns,
    and a convolution's products on the way to them (each output pixel's neighbourhood times
    its kernel), stay within about 256 MB."""
    products = [
        stack.sizes[k - 1] * stack.in_shape_of(k)[0] * layer.kh * layer.kw
        for k, layer in enumerate(stack.layers, 1)
        if isinstance(layer, Conv2d)
    ]
    values = sum(stack.sizes) * 3 + stack.n_params * 3 + stack.n_in + max(products, default=0)
    return max(1, min(max_rows, (256 << 20) // (8 * values)))


def _numbers(row: Array, num: Numerics) -> list[Number]:
    """A row of an array as the walk's numbers: Python floats for float64 (the same IEEE
    doubles, and far faster), numpy scalars for float32 (every operation rounds to float32),
    Fractions for exact."""
    if num.dtype == np.float64:
        return list(row.tolist())
    return list(row)


def _exact_limit(
    columns: dict[str, Array], plan: ChunkPlan, num: Numerics
) -> tuple[int, SteptraceError] | None:
    """The rows before the first step any of whose values outgrows the exact limit, and the
    error to raise after them; None if every step fits. Checked before any value is turned
    into text (Python refuses to write integers of more than 4300 digits)."""
    bits = np.zeros(len(plan), dtype=np.int64)
    for column in columns.values():
        sizes = [max(q.numerator.bit_length(), q.denominator.bit_length()) for q in column]
        np.maximum(bits, sizes, out=bits)
    over = np.flatnonzero(bits > EXACT_MAX_BITS)
    if not len(over):
        return None
    step = int(plan.step[over[0]])
    rows = np.flatnonzero(plan.step == step)
    try:
        num.check_size([q for c in columns.values() for q in c[rows]], step)
    except SteptraceError as exc:
        return int(rows[0]), exc
    return None  # pragma: no cover - check_size agrees with the bit count above
