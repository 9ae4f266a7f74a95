"""The learning phase, step after step: the weights' path through a chunk of steps.

For every step: pick its data inputs, run the forward pass, the backward pass, add the
gradients in the order the step visits its rows, and update the weights. Only the parameters
carry over from one step to the next, so this walk keeps only them, one flat vector per step
(:meth:`Stack.flat`); every other value of every row is then computed a chunk at a time, on
columns, by :mod:`steptrace.train.columns`, with the same layer code.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..model.stack import ParamSet, Stack
from ..numerics import EXACT_MAX_BITS, Number, Numerics
from ..schedule import ChunkPlan

__all__ = ["walk"]


def walk(
    stack: Stack,
    params: ParamSet,
    lr: Number,
    xs: Sequence[list[Number]],
    ys: Sequence[list[Number]],
    plan: ChunkPlan,
    numerics: Numerics,
    max_seconds: float | None = None,
) -> list[Sequence[Number]]:
    """The parameters before each step of ``plan`` and after the last one walked, flat.

    ``xs[i]`` and ``ys[i]`` are sample i in the run's numbers. The walk may end early — after
    ``max_seconds``, or in exact runs once a parameter outgrows the exact limit — so that the
    recorder can flush (or stop) in time; it always walks at least one step.
    """
    path: list[Sequence[Number]] = [stack.flat(params)]
    samples = plan.sample.tolist()
    started = time.monotonic()
    for start, m in zip(plan.starts.tolist(), plan.sizes.tolist(), strict=True):
        total: ParamSet | None = None
        for i in samples[start : start + m]:
            x = xs[i]
            outs = stack.forward(params, x)
            grads = stack.backward(params, x, outs, ys[i], m, every_delta=False).grads
            total = grads if total is None else {k: total[k] + g for k, g in grads.items()}
        if total is not None:
            params = stack.update(params, lr, total)  # ŵ = w − α · Σ grad
        flat = stack.flat(params)
        path.append(flat)
        if max_seconds is not None and time.monotonic() - started >= max_seconds:
            break
        if numerics.is_exact and _too_big(flat):
            break
    return path


def _too_big(values: list[Any]) -> bool:
    """Whether an exact parameter needs more bits than the exact limit allows."""
    return any(
        q.numerator.bit_length() > EXACT_MAX_BITS or q.denominator.bit_length() > EXACT_MAX_BITS
        for q in values
    )
