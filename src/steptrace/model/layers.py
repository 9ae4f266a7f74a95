"""The series' layers, one class each, forward beside backward as the series writes them.

    input        o = x                         δ_in = δ
    identity     o = x                         δ_in = δ
    linear       o_j = Σ_i W_{j,i} x_i + b_j   δ_in,i = Σ_j δ_j W_{j,i}
                                               ∂Loss/∂W_{j,i} = δ_j x_i;  ∂Loss/∂b_j = δ_j
    relu         o = x if x ≥ 0 else 0         δ_in = δ if x ≥ 0 else 0        (ReLU'(0) = 1)
    leaky_relu   o = x if x ≥ 0 else a·x       δ_in = δ if x ≥ 0 else a·δ
    heaviside    o = 1 if x ≥ 0 else 0         δ_in = 0
    logistic     o = 1 / (1 + e^−x)            δ_in = δ · o · (1 − o)          (float only)

A vector is a list of its components. A component is one number (a ``Fraction``, a ``float``,
a ``numpy.float32``) or a numpy column holding that component for many rows at once. The same
lines run on both, operation for operation in the same order, so a step computed on numbers and
the same step recomputed on columns agree bit for bit: the recorder walks the weights' path on
numbers, then fills every column of a chunk of steps at once (:mod:`steptrace.train.columns`).

Maths only: no I/O, no knowledge of traces.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from ..numerics import Number

__all__ = [
    "LAYERS",
    "Heaviside",
    "Identity",
    "Input",
    "Layer",
    "LeakyRelu",
    "Linear",
    "Logistic",
    "Params",
    "Relu",
    "dot",
]

Vec = list[Any]
"""A vector: one component (a number, or a column of numbers) per neuron."""
Matrix = list[Vec]
"""A weight matrix, row j = output neuron j, column i = input i (the series' W_{j,i})."""


# --- the few operations that differ between numbers and columns ----------------------------------


def where(condition: Any, a: Any, b: Any) -> Any:
    """``a if condition else b``, component by component on columns."""
    if isinstance(condition, bool | np.bool_):
        return a if condition else b
    if isinstance(condition, np.ndarray):
        return np.where(condition, a, b)
    return condition.where(a, b)  # a traced value (steptrace.train.compiled)


def zero_like(v: Any) -> Any:
    """0 in the number system of ``v`` (a column of zeros for a column)."""
    if isinstance(v, np.ndarray):
        return np.zeros_like(v)
    return type(v)(0) if isinstance(v, _NUMBERS) else v.zero_like()


def one_like(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return np.ones_like(v)
    return type(v)(1) if isinstance(v, _NUMBERS) else v.one_like()


def exp(v: Any) -> Any:
    """e^v by numpy's exp for numbers and columns alike, so both round the same way."""
    if type(v) is float:
        return float(np.exp(v))
    if isinstance(v, np.ndarray | np.floating):
        return np.exp(v)
    return v.exp()


_NUMBERS = (int, float, Fraction, np.floating)


def dot(w: Vec, x: Vec) -> Number:
    """w · x summed left to right: ((w1*x1 + w2*x2) + w3*x3), as the article adds."""
    total = w[0] * x[0]
    for wi, xi in zip(w[1:], x[1:], strict=True):
        total = total + wi * xi
    return total


@dataclass(frozen=True)
class Params:
    """A layer's parameters, or their gradients: weights W (out × in) and biases b (or None)."""

    w: Matrix
    b: Vec | None = None

    def __add__(self, other: Params) -> Params:
        """Gradients of two samples added, component by component (a batch's sum)."""
        w = [
            [a + b for a, b in zip(ra, rb, strict=True)]
            for ra, rb in zip(self.w, other.w, strict=True)
        ]
        b = (
            None
            if self.b is None or other.b is None
            else [a + c for a, c in zip(self.b, other.b, strict=True)]
        )
        return Params(w, b)

    def step(self, lr: Number, grad: Params) -> Params:
        """The update ŵ = w − α·grad (and the same for b)."""
        w = [
            [wi - lr * gi for wi, gi in zip(rw, rg, strict=True)]
            for rw, rg in zip(self.w, grad.w, strict=True)
        ]
        b = (
            None
            if self.b is None or grad.b is None
            else [bj - lr * gj for bj, gj in zip(self.b, grad.b, strict=True)]
        )
        return Params(w, b)

    def flat(self) -> Vec:
        """W row by row, then b: the order parameters are stored in."""
        return [v for row in self.w for v in row] + (list(self.b) if self.b is not None else [])


# --- the layers ----------------------------------------------------------------------------------


class Layer:
    """A layer of the stack. ``forward(x, p)`` gives its output; ``backward(x, o, d, p)`` takes
    δ of its output and gives δ of its input and the gradients of its parameters (or None)."""

    type: ClassVar[str]
    #: Whether the layer's maths stays within the rationals (exact runs can run it).
    rational: ClassVar[bool] = True
    #: The layer's formulas, once for every place that writes them (replay, the dashboard,
    #: verify's messages): templates of ``{x}`` (its input), ``{o}`` (its output), ``{d}`` (the
    #: δ it receives), ``{w}``/``{b}`` (its parameters) and the typography ``{ge}``,
    #: ``{minus}``, ``{dot}``, ``{times}``. ``forward_rule`` gives o, ``backward_rule`` δ_in.
    forward_rule: ClassVar[str]
    backward_rule: ClassVar[str]
    has_params: ClassVar[bool] = False

    def out_size(self, n_in: int) -> int:
        return n_in

    def forward(self, x: Vec, p: Params | None) -> Vec:
        raise NotImplementedError

    def backward(self, x: Vec, o: Vec, d: Vec, p: Params | None) -> tuple[Vec, Params | None]:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """The layer as a model file writes it (parameters apart)."""
        return {"type": self.type}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layer) and self.settings() == other.settings()

    def __hash__(self) -> int:
        return hash(repr(self))


class Input(Layer):
    type = "input"
    forward_rule = "{x}"
    backward_rule = "{d}"

    def forward(self, x: Vec, p: Params | None) -> Vec:
        return list(x)  # L(x) = x

    def backward(self, x: Vec, o: Vec, d: Vec, p: Params | None) -> tuple[Vec, Params | None]:
        return list(d), None  # δ passes through


class Identity(Input):
    type = "identity"


class Linear(Layer):
    type = "linear"
    has_params = True
    forward_rule = "{w}{dot}{x}"  # + bias_rule with a bias
    backward_rule = "{d}{dot}{w}"
    bias_rule = " + {b}"
    grad_w_rule = "{d}{times}{x}"  # ∂Loss/∂W = δ ⊗ x
    grad_b_rule = "{d}"  # ∂Loss/∂b = δ

    def __init__(self, out: int, bias: bool = True) -> None:
        self.out = out
        self.bias = bias

    def out_size(self, n_in: int) -> int:
        return self.out

    def forward(self, x: Vec, p: Params | None) -> Vec:
        assert p is not None
        o = [dot(row, x) for row in p.w]  # o_j = Σ_i W_{j,i} x_i
        if p.b is not None:
            o = [oj + bj for oj, bj in zip(o, p.b, strict=True)]  # + b_j
        return o

    def backward(self, x: Vec, o: Vec, d: Vec, p: Params | None) -> tuple[Vec, Params | None]:
        assert p is not None
        d_in = [dot(d, [row[i] for row in p.w]) for i in range(len(x))]  # δ_in,i = Σ_j δ_j W_{j,i}
        grad_w = [[dj * xi for xi in x] for dj in d]  # ∂Loss/∂W_{j,i} = δ_j x_i
        grad_b = list(d) if p.b is not None else None  # ∂Loss/∂b_j = δ_j
        return d_in, Params(grad_w, grad_b)

    def settings(self) -> dict[str, Any]:
        return {"type": self.type, "out": self.out, "bias": self.bias}


class Relu(Layer):
    type = "relu"
    forward_rule = "{x} if {x} {ge} 0 else 0"
    backward_rule = "{d} if {x} {ge} 0 else 0"

    def forward(self, x: Vec, p: Params | None) -> Vec:
        return [where(xi >= 0, xi, zero_like(xi)) for xi in x]

    def backward(self, x: Vec, o: Vec, d: Vec, p: Params | None) -> tuple[Vec, Params | None]:
        return [where(xi >= 0, di, zero_like(di)) for xi, di in zip(x, d, strict=True)], None


class LeakyRelu(Layer):
    type = "leaky_relu"
    forward_rule = "{x} if {x} {ge} 0 else {slope}{times}{x}"
    backward_rule = "{d} if {x} {ge} 0 else {slope}{times}{d}"

    def __init__(self, slope: Number, slope_text: str = "1/100") -> None:
        self.slope = slope  # in the run's number system
        self.slope_text = slope_text

    def forward(self, x: Vec, p: Params | None) -> Vec:
        a = self.slope
        return [where(xi >= 0, xi, a * xi) for xi in x]

    def backward(self, x: Vec, o: Vec, d: Vec, p: Params | None) -> tuple[Vec, Params | None]:
        a = self.slope
        return [where(xi >= 0, di, a * di) for xi, di in zip(x, d, strict=True)], None

    def settings(self) -> dict[str, Any]:
        return {"type": self.type, "slope": self.slope_text}


class Heaviside(Layer):
    type = "heaviside"
    forward_rule = "1 if {x} {ge} 0 else 0"
    backward_rule = "0"

    def forward(self, x: Vec, p: Params | None) -> Vec:
        return [where(xi >= 0, one_like(xi), zero_like(xi)) for xi in x]

    def backward(self, x: Vec, o: Vec, d: Vec, p: Params | None) -> tuple[Vec, Params | None]:
        return [zero_like(di) for di in d], None  # its derivative is 0 wherever it has one


class Logistic(Layer):
    type = "logistic"
    rational = False  # e^x
    forward_rule = "1 / (1 + e^{minus}{x})"
    backward_rule = "{d}{times}{o}{times}(1 {minus} {o})"

    def forward(self, x: Vec, p: Params | None) -> Vec:
        return [one_like(xi) / (one_like(xi) + exp(-xi)) for xi in x]

    def backward(self, x: Vec, o: Vec, d: Vec, p: Params | None) -> tuple[Vec, Params | None]:
        return [di * oi * (one_like(oi) - oi) for oi, di in zip(o, d, strict=True)], None


#: Every layer type a model file may name.
LAYERS: dict[str, type[Layer]] = {
    cls.type: cls for cls in (Input, Identity, Linear, Relu, LeakyRelu, Heaviside, Logistic)
}


# --- the loss ------------------------------------------------------------------------------------


class SquaredError:
    """Loss(o, y) = ½ Σ_j (o_j − y_j)², per data input; δ = (o − y) / m for a step of m rows
    (the step's loss is the mean of its rows')."""

    type = "squared_error"

    def value(self, o: Vec, y: Vec) -> Number:
        total = (o[0] - y[0]) * (o[0] - y[0])
        for oj, yj in zip(o[1:], y[1:], strict=True):
            total = total + (oj - yj) * (oj - yj)
        return total / 2  # ½ Σ_j (o_j − y_j)²

    def delta(self, o: Vec, y: Vec, m: Any) -> Vec:
        return [(oj - yj) / m for oj, yj in zip(o, y, strict=True)]  # δ = (o − y) / m

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SquaredError)

    def __hash__(self) -> int:
        return hash(self.type)


LOSSES: dict[str, type[SquaredError]] = {SquaredError.type: SquaredError}
