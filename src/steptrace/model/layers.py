"""The series' layers, one class each, forward beside backward as the series writes them.

    input        o = x                         δ_in = δ
    identity     o = x                         δ_in = δ
    linear       o_j = Σ_i W_{j,i} x_i + b_j   δ_in,i = Σ_j δ_j W_{j,i}
                                               ∂Loss/∂W_{j,i} = δ_j x_i;  ∂Loss/∂b_j = δ_j
    relu         o = x if x ≥ 0 else 0         δ_in = δ if x ≥ 0 else 0        (ReLU'(0) = 1)
    leaky_relu   o = x if x ≥ 0 else a·x       δ_in = δ if x ≥ 0 else a·δ
    heaviside    o = 1 if x ≥ 0 else 0         δ_in = 0
    logistic     o = 1 / (1 + e^−x)            δ_in = δ · o · (1 − o)          (float only)

and the images chapters' (:mod:`.images`): conv2d, maxpool2d, flatten, normalization.

A tensor is a numpy array whose first axis is the rows (data inputs) it holds values for: one
row in the weights' walk, a step's rows, or a whole chunk of steps; the other axes are the
layer's shape (neurons, or channels × rows × columns of an image). Parameters have the layer's
shape, with a leading rows axis too when each row has its own (a chunk of many steps). The
arrays hold float64, float32, exact ``Fraction`` objects, or the symbols of
:mod:`steptrace.train.compiled`, which records every operation into straight-line code.

Every sum runs left to right in reading order, ``((a1 + a2) + a3) + …`` as the article adds
(:func:`total`), and every other operation is element by element: so a row's numbers do not
depend on how many rows are computed beside it, and the walk, the recorder's columns and
``steptrace verify`` agree bit for bit.

Maths only: no I/O, no knowledge of traces.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from ..numerics import Number

__all__ = [
    "Heaviside",
    "Identity",
    "Input",
    "Layer",
    "LeakyRelu",
    "Linear",
    "Logistic",
    "Params",
    "Relu",
    "Shape",
    "total",
]

Array = npt.NDArray[Any]
Shape = tuple[int, ...]
"""The shape of one row's value: ``(n,)`` for n neurons, ``(C, H, W)`` for an image."""


# --- the few operations that differ between numbers, exact objects and traced symbols -----------


def _where1(condition: Any, a: Any, b: Any) -> Any:
    if isinstance(condition, bool | np.bool_):
        return a if condition else b
    return condition.where(a, b)  # a traced value (steptrace.train.compiled)


def _zero1(v: Any) -> Any:
    return type(v)(0) if isinstance(v, _NUMBERS) else v.zero_like()


def _one1(v: Any) -> Any:
    return type(v)(1) if isinstance(v, _NUMBERS) else v.one_like()


def _exp1(v: Any) -> Any:
    return float(np.exp(v)) if type(v) is float else v.exp()


_NUMBERS = (int, float, Fraction, np.floating)
_ELEMENTWISE = {
    "where": np.frompyfunc(_where1, 3, 1),
    "ge": np.frompyfunc(operator.ge, 2, 1),
    "zero": np.frompyfunc(_zero1, 1, 1),
    "one": np.frompyfunc(_one1, 1, 1),
    "exp": np.frompyfunc(_exp1, 1, 1),
}


def _objects(a: Any) -> bool:
    return isinstance(a, np.ndarray) and a.dtype == object


def _as_objects(a: Any) -> Array:
    return np.asarray(a, dtype=object)


def where(condition: Array, a: Any, b: Any) -> Array:
    """``a if condition else b``, element by element."""
    if _objects(condition):
        return _as_objects(_ELEMENTWISE["where"](condition, a, b))
    out: Array = np.where(condition, a, b)
    return out


def at_least_zero(x: Array) -> Array:
    """``x ≥ 0`` element by element (a traced test for symbols, written once and reused)."""
    if _objects(x):
        return _as_objects(_ELEMENTWISE["ge"](x, 0))
    return x >= 0


def zero_like(x: Array) -> Array:
    """0 in the number system of ``x``, in its shape."""
    return _as_objects(_ELEMENTWISE["zero"](x)) if _objects(x) else np.zeros_like(x)


def one_like(x: Array) -> Array:
    return _as_objects(_ELEMENTWISE["one"](x)) if _objects(x) else np.ones_like(x)


def exp(x: Array) -> Array:
    """e^x by numpy's exp, for floats and traced symbols alike, so both round the same way."""
    return _as_objects(_ELEMENTWISE["exp"](x)) if _objects(x) else np.exp(x)


#: Up to this many terms a sum is written as additions, beyond it as numpy's accumulate: the
#: same additions in the same order (the same bits), at the speed each is fastest.
SHORT_SUM = 16


def total(a: Array, axis: int = -1) -> Array:
    """Σ along ``axis``, left to right: ``((a1 + a2) + a3) + …``, as the article adds (numpy's
    own sum pairs its terms differently, and differently for different lengths)."""
    n = a.shape[axis]
    if n <= SHORT_SUM:
        # A few terms: added one by one, each addition over every other axis at once (numpy's
        # accumulate steps through the other axes one element at a time).
        last = axis in (-1, a.ndim - 1)
        terms = a if last else np.moveaxis(a, axis, -1)
        out: Array = terms[..., 0]
        for i in range(1, n):
            out = out + terms[..., i]
        return out
    running = np.add.accumulate(a, axis=axis)
    out = running[..., -1] if axis == -1 else np.take(running, -1, axis=axis)
    return out


@dataclass(frozen=True, eq=False)
class Params:
    """A layer's parameters, or their gradients: weights W and biases b (or None), each an
    array in the layer's parameter shape (with a leading rows axis when rows have their own)."""

    w: Array
    b: Array | None = None

    def __add__(self, other: Params) -> Params:
        """Gradients of two rows added, element by element (a step's sum)."""
        w = self.w + other.w  # W first, then b: the order parameters are stored in
        return Params(w, None if self.b is None or other.b is None else self.b + other.b)

    def step(self, lr: Number, grad: Params) -> Params:
        """The update ŵ = w − α·grad (and the same for b)."""
        w = self.w - lr * grad.w
        return Params(w, None if self.b is None or grad.b is None else self.b - lr * grad.b)

    def flat(self) -> list[Any]:
        """W row-major, then b: the order parameters are stored in."""
        return [
            *self.w.reshape(-1).tolist(),
            *([] if self.b is None else self.b.reshape(-1).tolist()),
        ]

    def row(self, r: int) -> Params:
        """Row ``r``'s parameters, of parameters that have a rows axis."""
        return Params(self.w[r], None if self.b is None else self.b[r])


# --- the layers ----------------------------------------------------------------------------------


class Layer:
    """A layer of the stack. ``forward(x, p)`` gives its output; ``backward(x, o, d, p)`` takes
    δ of its output and gives δ of its input and each row's gradients of its parameters (or
    None). ``x``, ``o`` and ``d`` hold one or more rows (first axis)."""

    type: ClassVar[str]
    #: Whether the layer's maths stays within the rationals (exact runs can run it).
    rational: ClassVar[bool] = True
    #: Whether a row's values depend on the other rows of its step (normalization): such a
    #: layer sees a step's rows together, and only them.
    couples_rows: ClassVar[bool] = False
    #: The layer's formulas, once for every place that writes them (replay, the dashboard,
    #: verify's messages): templates of ``{x}`` (its input), ``{o}`` (its output), ``{d}`` (the
    #: δ it receives), ``{w}``/``{b}`` (its parameters) and the typography ``{ge}``,
    #: ``{minus}``, ``{dot}``, ``{times}``. ``forward_rule`` gives o, ``backward_rule`` δ_in.
    forward_rule: ClassVar[str]
    backward_rule: ClassVar[str]
    has_params: ClassVar[bool] = False
    bias: bool = False
    #: A layer with parameters: what its bias adds to ``forward_rule`` (with a bias), and its
    #: gradients' formulas.
    bias_rule: ClassVar[str] = ""
    grad_w_rule: ClassVar[str] = ""
    grad_b_rule: ClassVar[str] = ""

    def out_shape(self, in_shape: Shape) -> Shape:
        return in_shape

    def param_shapes(self, in_shape: Shape) -> tuple[Shape, Shape | None]:
        """The shapes of W and b (None without a bias), for a layer with parameters."""
        raise NotImplementedError

    def shape_error(self, in_shape: Shape) -> str | None:
        """Why the layer cannot take inputs of this shape, or None."""
        return None

    def forward(self, x: Array, p: Params | None) -> Array:
        raise NotImplementedError

    def backward(
        self, x: Array, o: Array, d: Array, p: Params | None
    ) -> tuple[Array, Params | None]:
        raise NotImplementedError

    def param_grads(self, x: Array, o: Array, d: Array, p: Params | None) -> Params | None:
        """The parameters' gradients alone, without δ to the layer's input: what a walk along
        the weights' path needs of the lowest layer with parameters (a layer whose δ to its
        input costs much computes less here)."""
        return self.backward(x, o, d, p)[1]

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
    """L1: the data input as it is, a vector, or with ``shape`` an image of C channels of
    H × W values (the data's features row-major: channel, row, column)."""

    type = "input"
    forward_rule = "{x}"
    backward_rule = "{d}"

    def __init__(self, shape: Shape | None = None) -> None:
        self.shape = shape

    def forward(self, x: Array, p: Params | None) -> Array:
        return x  # L(x) = x

    def backward(
        self, x: Array, o: Array, d: Array, p: Params | None
    ) -> tuple[Array, Params | None]:
        return d, None  # δ passes through

    def settings(self) -> dict[str, Any]:
        if self.shape is None:
            return {"type": self.type}
        return {"type": self.type, "shape": list(self.shape)}


class Identity(Input):
    type = "identity"

    def __init__(self) -> None:
        super().__init__(None)


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

    def out_shape(self, in_shape: Shape) -> Shape:
        return (self.out,)

    def param_shapes(self, in_shape: Shape) -> tuple[Shape, Shape | None]:
        return (self.out, in_shape[0]), (self.out,) if self.bias else None

    def shape_error(self, in_shape: Shape) -> str | None:
        if len(in_shape) != 1:
            return (f"a linear layer takes a vector, not a {_shape_text(in_shape)} image; put a "
                    '{"type": "flatten"} layer before it')  # fmt: skip
        return None

    def forward(self, x: Array, p: Params | None) -> Array:
        assert p is not None
        o = total(p.w * x[..., None, :])  # o_j = Σ_i W_{j,i} x_i
        return o if p.b is None else o + p.b  # + b_j

    def backward(
        self, x: Array, o: Array, d: Array, p: Params | None
    ) -> tuple[Array, Params | None]:
        assert p is not None
        d_in = total(d[..., :, None] * p.w, axis=-2)  # δ_in,i = Σ_j δ_j W_{j,i}
        grad_w = d[..., :, None] * x[..., None, :]  # ∂Loss/∂W_{j,i} = δ_j x_i
        grad_b = d if p.b is not None else None  # ∂Loss/∂b_j = δ_j
        return d_in, Params(grad_w, grad_b)

    def settings(self) -> dict[str, Any]:
        return {"type": self.type, "out": self.out, "bias": self.bias}


class Relu(Layer):
    type = "relu"
    forward_rule = "{x} if {x} {ge} 0 else 0"
    backward_rule = "{d} if {x} {ge} 0 else 0"

    def forward(self, x: Array, p: Params | None) -> Array:
        return where(at_least_zero(x), x, zero_like(x))

    def backward(
        self, x: Array, o: Array, d: Array, p: Params | None
    ) -> tuple[Array, Params | None]:
        return where(at_least_zero(x), d, zero_like(d)), None


class LeakyRelu(Layer):
    type = "leaky_relu"
    forward_rule = "{x} if {x} {ge} 0 else {slope}{times}{x}"
    backward_rule = "{d} if {x} {ge} 0 else {slope}{times}{d}"

    def __init__(self, slope: Number, slope_text: str = "1/100") -> None:
        self.slope = slope  # in the run's number system
        self.slope_text = slope_text

    def forward(self, x: Array, p: Params | None) -> Array:
        return where(at_least_zero(x), x, self.slope * x)

    def backward(
        self, x: Array, o: Array, d: Array, p: Params | None
    ) -> tuple[Array, Params | None]:
        return where(at_least_zero(x), d, self.slope * d), None

    def settings(self) -> dict[str, Any]:
        return {"type": self.type, "slope": self.slope_text}


class Heaviside(Layer):
    type = "heaviside"
    forward_rule = "1 if {x} {ge} 0 else 0"
    backward_rule = "0"

    def forward(self, x: Array, p: Params | None) -> Array:
        return where(at_least_zero(x), one_like(x), zero_like(x))

    def backward(
        self, x: Array, o: Array, d: Array, p: Params | None
    ) -> tuple[Array, Params | None]:
        return zero_like(d), None  # its derivative is 0 wherever it has one


class Logistic(Layer):
    type = "logistic"
    rational = False  # e^x
    forward_rule = "1 / (1 + e^{minus}{x})"
    backward_rule = "{d}{times}{o}{times}(1 {minus} {o})"

    def forward(self, x: Array, p: Params | None) -> Array:
        o: Array = one_like(x) / (one_like(x) + exp(-x))
        return o

    def backward(
        self, x: Array, o: Array, d: Array, p: Params | None
    ) -> tuple[Array, Params | None]:
        return d * o * (one_like(o) - o), None


def _shape_text(shape: Shape) -> str:
    return " × ".join(str(n) for n in shape)


# --- the loss ------------------------------------------------------------------------------------


class SquaredError:
    """Loss(o, y) = ½ Σ_j (o_j − y_j)², per data input; δ = (o − y) / m for a step of m rows
    (the step's loss is the mean of its rows')."""

    type = "squared_error"

    def value(self, o: Array, y: Array) -> Array:
        e = o - y
        return total(e * e) / 2  # ½ Σ_j (o_j − y_j)²

    def delta(self, o: Array, y: Array, m: Any) -> Array:
        if isinstance(m, np.ndarray):
            m = m[..., None]  # each row's own step size
        d: Array = (o - y) / m  # δ = (o − y) / m
        return d

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SquaredError)

    def __hash__(self) -> int:
        return hash(self.type)
