"""The article's model, written the way the article writes it.

    L1(x)  = x                      δ1 = δ2
    L2(o1) = w . o1                 δ2 = δ3 . w          ∂Loss/∂W2 = δ3 * o1
    L3(o2) = o2 if o2 >= 0 else 0   δ3 = δ4 if o2 >= 0 else 0
    Loss(o3, y) = 1/2 (o3 - y)^2    δ4 = o3 - y          (divided by n for a batch of n)
    update: ŵ = w - α * ∂Loss/∂W2

The same formulas appear twice: once on scalars (any number system: ``Fraction``, ``float``,
``numpy.float32``), which is what a learner reads, and once on numpy columns, which is what the
fast recorder runs. Each operation happens in the same order in both, so their results are
bit-identical; ``tests/test_model.py`` proves it.

Maths only: no I/O, no knowledge of traces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..numerics import Number

__all__ = ["Backward", "Forward", "backward", "dot", "forward", "loss", "sum_gradients", "update"]

Vector = tuple[Number, ...]
Array = npt.NDArray[Any]


def dot(w: Sequence[Number], x: Sequence[Number]) -> Number:
    """w . x, summed left to right: ((w1*x1 + w2*x2) + w3*x3)."""
    total = w[0] * x[0]
    for wk, xk in zip(w[1:], x[1:], strict=True):
        total = total + wk * xk
    return total


@dataclass(frozen=True)
class Forward:
    """What flows forward through L1 → L2 → L3 for one data input."""

    o1: Vector
    o2: Number
    o3: Number


@dataclass(frozen=True)
class Backward:
    """The learning flux δ4 … δ1 and this sample's gradient ∂Loss/∂W2."""

    d4: Number
    d3: Number
    d2: Vector
    d1: Vector
    grad: Vector


def forward(w: Sequence[Number], x: Sequence[Number]) -> Forward:
    o1 = tuple(x)  # L1(x) = x
    o2 = dot(w, o1)  # L2(o1) = w . o1
    o3 = o2 if o2 >= 0 else type(o2)(0)  # L3(o2) = o2 if o2 >= 0 else 0
    return Forward(o1, o2, o3)


def loss(o3: Number, y: Number) -> Number:
    return (o3 - y) * (o3 - y) / 2  # Loss(o3, y) = 1/2 (o3 - y)^2


def backward(fw: Forward, w: Sequence[Number], y: Number, n: int = 1) -> Backward:
    """Backward pass for one sample of a batch of ``n`` (the batch loss is the mean)."""
    d4 = (fw.o3 - y) / n  # δ4 = o3 - y   (÷ n: mean over the batch)
    d3 = d4 if fw.o2 >= 0 else type(d4)(0)  # δ3 = δ4 if o2 >= 0 else 0
    d2 = tuple(d3 * wk for wk in w)  # δ2 = δ3 . w
    grad = tuple(d3 * o1k for o1k in fw.o1)  # ∂Loss/∂W2 = δ3 * o1
    d1 = d2  # δ1 = δ2
    return Backward(d4, d3, d2, d1, grad)


def sum_gradients(grads: Sequence[Vector]) -> Vector:
    """The batch's gradient: the samples' gradients added in batch order."""
    total = grads[0]
    for g in grads[1:]:
        total = tuple(a + b for a, b in zip(total, g, strict=True))
    return total


def update(w: Sequence[Number], lr: Number, grad: Sequence[Number]) -> Vector:
    return tuple(wk - lr * gk for wk, gk in zip(w, grad, strict=True))  # ŵ = w - α * grad


# --- the same maths on columns -------------------------------------------------------------
# One row per (step, sample); W holds each row's weights before its step. Used by the fast
# recorder once the sequence of weights is known.


def forward_columns(w: Array, x: Array) -> tuple[Array, Array, Array]:
    """Columnar :func:`forward`: returns (o1, o2, o3) for rows of weights ``w`` and inputs ``x``."""
    o1 = x
    o2 = w[:, 0] * o1[:, 0]
    for k in range(1, w.shape[1]):
        o2 = o2 + w[:, k] * o1[:, k]
    o3 = np.where(o2 >= 0, o2, np.zeros_like(o2))
    return o1, o2, o3


def loss_columns(o3: Array, y: Array) -> Array:
    out: Array = (o3 - y) * (o3 - y) / o3.dtype.type(2)
    return out


def backward_columns(
    o1: Array, o2: Array, o3: Array, w: Array, y: Array, n: Array
) -> tuple[Array, Array, Array, Array, Array]:
    """Columnar :func:`backward`: returns (d4, d3, d2, d1, grad); ``n`` is each row's batch size."""
    d4 = (o3 - y) / n
    d3 = np.where(o2 >= 0, d4, np.zeros_like(d4))
    d2 = d3[:, None] * w
    grad = d3[:, None] * o1
    d1 = d2
    return d4, d3, d2, d1, grad
