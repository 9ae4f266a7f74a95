"""The learning phase a step at a time, every value kept: for stacks of images or of layers
that couple a step's rows.

The compiled walk (:mod:`.compiled`) writes a stack's maths out one number at a time, which
is what makes the series' small models fast; a convolution has thousands of numbers a row, and
a normalization needs a step's rows together. Such a stack is walked with the same layer code
on numpy arrays of a step's rows: its forward pass, loss and backward pass, each row's
gradients, their sum in the order the step visits its rows, and the update. Everything the
step computed is kept, so no second pass is needed to fill the chunk's columns.

The layers' sums run left to right and every other operation is element by element, so a row's
numbers are what ``steptrace verify`` recomputes from its recorded inputs, bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..model.stack import ParamSet, Stack
from ..model.values import param_values, row_values
from ..numerics import EXACT_MAX_BITS, Number, Numerics
from ..schedule import ChunkPlan
from ..trace.schema import Tensor

__all__ = ["lean_walk", "step_walk", "walks_by_step"]

Array = npt.NDArray[Any]

#: Steps between two looks at the clock.
CLOCK_EVERY = 16
#: A stack whose rows hold more values than this is walked a step at a time even without
#: images: written out one number at a time, its walk would be long to compile and slow.
MAX_COMPILED_VALUES = 4_096


def walks_by_step(stack: Stack) -> bool:
    """Whether ``stack`` is walked a step at a time (see the module's docstring)."""
    values = sum(stack.sizes) + stack.n_params
    return stack.images or stack.couples_rows or values > MAX_COMPILED_VALUES


def step_walk(
    stack: Stack,
    params: ParamSet,
    lr: Number,
    X: Array,
    Y: Array,
    plan: ChunkPlan,
    numerics: Numerics,
    tensors: Sequence[Tensor],
    max_seconds: float | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Walk the steps of ``plan`` from ``params``: the flat parameters before the first step
    and after each step walked (a row each), and the value of every tensor of ``tensors`` on
    each row walked. The walk may end early — after ``max_seconds``, or in exact runs after a
    step whose parameters outgrow the exact limit — and always walks one step."""
    deadline = float("inf") if max_seconds is None else time.monotonic() + max_seconds
    path = [stack.flat(params)]
    kept: dict[str, list[Array]] = {t.name: [] for t in tensors}
    dtype = numerics.dtype if numerics.dtype is not None else object
    for s, (start, m) in enumerate(zip(plan.starts.tolist(), plan.sizes.tolist(), strict=True)):
        rows = plan.sample[start : start + m]
        x = X[rows].reshape(m, *stack.in_shape)
        sizes = np.full(m, m).astype(dtype)  # each row's m: δ at the loss is (o − y) / m
        values, grads = row_values(stack, params, x, Y[rows], sizes)
        after = stack.update(params, lr, stack.summed(grads))  # ŵ = w − α · Σ grad
        # What is the same for every row of the step, given to each.
        shared = {"lr": lr, **param_values(stack, params, "before"),
                  **param_values(stack, after, "after")}  # fmt: skip
        for t in tensors:
            if t.name in shared:
                v = np.asarray(shared[t.name])
                kept[t.name].append(np.broadcast_to(v, (m, *v.shape)))
            else:
                kept[t.name].append(values[t.name])
        params = after
        path.append(stack.flat(params))
        if numerics.is_exact and _too_big(path[-1]):
            break
        if not (s + 1) % CLOCK_EVERY and time.monotonic() >= deadline:
            break
    columns = {name: np.concatenate(parts) for name, parts in kept.items()}
    return np.stack(path), columns


def lean_walk(
    stack: Stack,
    params: ParamSet,
    lr: Number,
    X: Array,
    Y: Array,
    plan: ChunkPlan,
    numerics: Numerics,
    max_seconds: float | None = None,
) -> Array:
    """The weights' path alone, a step at a time (the flat parameters before the first step and
    after each step walked): each step's forward pass, its backward pass down to the lowest
    layer with parameters, the rows' gradients summed, the update. For a stack whose rows do not
    depend on each other, every other value of a chunk is then computed at once on its columns
    (:func:`steptrace.train.columns.chunk_columns`), by the same layer code: the same bits."""
    deadline = float("inf") if max_seconds is None else time.monotonic() + max_seconds
    path = [stack.flat(params)]
    dtype = numerics.dtype if numerics.dtype is not None else object
    # The chunk's rows gathered once, and each step size's m once: a step then takes views (a
    # gather and a new array a step cost as much as a small layer).
    xs = X[plan.sample].reshape(len(plan), *stack.in_shape)
    ys = Y[plan.sample]
    ms = {m: np.full(m, m).astype(dtype) for m in set(plan.sizes.tolist())}
    for s, (start, m) in enumerate(zip(plan.starts.tolist(), plan.sizes.tolist(), strict=True)):
        x, y = xs[start : start + m], ys[start : start + m]
        outs = stack.forward(params, x)
        grads = stack.backward(params, x, outs, y, ms[m], every_delta=False).grads
        params = stack.update(params, lr, stack.summed(grads))  # ŵ = w − α · Σ grad
        path.append(stack.flat(params))
        if numerics.is_exact and _too_big(path[-1]):
            break
        if not (s + 1) % CLOCK_EVERY and time.monotonic() >= deadline:
            break
    return np.stack(path)


def _too_big(values: Array) -> bool:
    return any(
        q.numerator.bit_length() > EXACT_MAX_BITS or q.denominator.bit_length() > EXACT_MAX_BITS
        for q in values.tolist()
    )
