"""Layers the frameworks have beside the series', forward beside backward, and their losses.

    tanh         o = tanh(x)                          δ_in = δ · (1 − o²)
    gelu         o = x · Φ(x)                         δ_in = δ · (Φ(x) + x · φ(x))
                 (Φ the normal distribution, φ its density; "tanh": Φ(x) ≈ ½(1 + tanh(u)),
                 u = √(2/π)(x + 0.044715 x³))
    softmax      o = e^(x − max x) / Σ e^(x − max x)  δ_in = o · (δ − Σ δ·o)   (along one axis)
    layer_norm   over each row's last axes: μ = mean, σ = √(mean((x − μ)²) + ε),
                 x' = (x − μ)/σ, o = β + γ·x'         δ_in = (1/σ)[g − mean g − x'·mean(g x')],
                 g = γ·δ;  ∂Loss/∂γ = δ x';  ∂Loss/∂β = δ
    dropout      o = x · mask / (1 − p)              δ_in = δ · mask / (1 − p)
                 (mask: which values the framework kept, 1 or 0, recorded with the step)
    avgpool2d    o[i, j] = Σ of the window / its count   δ_in: δ / count to each of the
                 window's positions, added where windows overlap

and the losses, per data input, with δ at the loss for a step of m rows (the step's loss is the
mean of its rows'):

    mse              Loss = Σ_j (o_j − y_j)² / n           δ = 2 (o − y) / (n m)
    cross_entropy    Loss = −log softmax(o)_y              δ = (softmax(o) − onehot(y)) / m
                     (y a class number; or class probabilities: −Σ_j y_j log softmax(o)_j,
                     δ = (softmax(o) Σ y − y) / m)
    bce_with_logits  Loss = Σ_j [max(o_j, 0) − o_j y_j + log(1 + e^−|o_j|)] / n
                                                           δ = (σ(o) − y) / (n m)

Float only (e^x, erf and square roots are not rational), on numpy arrays whose first axis is
the rows, like the series' layers (:mod:`.layers`); sums run left to right (:func:`total`).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

from .images import _pad2, _scatter, _window_values
from .layers import Array, Layer, Params, Shape, SquaredError, exp, total, where

__all__ = [
    "LOSSES",
    "AvgPool2d",
    "BceWithLogits",
    "CrossEntropy",
    "Dropout",
    "Gelu",
    "LayerNorm",
    "Loss",
    "MeanSquaredError",
    "Softmax",
    "Tanh",
]

_erf = np.vectorize(math.erf, otypes=[np.float64])


class Tanh(Layer):
    type = "tanh"
    rational = False
    forward_rule = "tanh({x})"
    backward_rule = "{d}{times}(1 {minus} {o}²)"

    def forward(self, x: Array, p: Params | None) -> Array:
        out: Array = np.tanh(x)
        return out

    def backward(
        self, x: Array, o: Array, d: Array, p: Params | None
    ) -> tuple[Array, Params | None]:
        return d * (1 - o * o), None  # δ_in = δ · (1 − o²)


class Gelu(Layer):
    type = "gelu"
    rational = False
    forward_rule = "{x}{times}Φ({x})"
    backward_rule = "{d}{times}(Φ({x}) + {x}{times}φ({x}))"

    def __init__(self, approximate: str = "none") -> None:
        self.approximate = approximate

    def _cdf(self, x: Array) -> tuple[Array, Array]:
        """Φ(x) and its derivative φ(x) (or the tanh approximation's)."""
        if self.approximate == "tanh":
            c = math.sqrt(2 / math.pi)
            t = np.tanh(c * (x + 0.044715 * x * x * x))
            return 0.5 * (1 + t), 0.5 * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
        cdf = 0.5 * (1 + _erf(x / math.sqrt(2)))
        return cdf, np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)

    def forward(self, x: Array, p: Params | None) -> Array:
        return x * self._cdf(x)[0]  # o = x · Φ(x)

    def backward(
        self, x: Array, o: Array, d: Array, p: Params | None
    ) -> tuple[Array, Params | None]:
        cdf, pdf = self._cdf(x)
        return d * (cdf + x * pdf), None  # δ_in = δ · (Φ(x) + x · φ(x))

    def settings(self) -> dict[str, Any]:
        return {"type": self.type, "approximate": self.approximate}


class Softmax(Layer):
    """Along ``axis`` of the rows' array (1: the first axis of a row's value)."""

    type = "softmax"
    rational = False
    forward_rule = "e^{x} / Σ e^{x}"
    backward_rule = "{o}{times}({d} {minus} Σ {d}{times}{o})"

    def __init__(self, axis: int = 1) -> None:
        self.axis = axis

    def forward(self, x: Array, p: Params | None) -> Array:
        e = exp(x - np.max(x, axis=self.axis, keepdims=True))  # e^(x − max x)
        o: Array = e / np.expand_dims(total(e, axis=self.axis), self.axis)
        return o

    def backward(
        self, x: Array, o: Array, d: Array, p: Params | None
    ) -> tuple[Array, Params | None]:
        dot = np.expand_dims(total(d * o, axis=self.axis), self.axis)  # Σ δ·o
        return o * (d - dot), None

    def settings(self) -> dict[str, Any]:
        return {"type": self.type, "axis": self.axis}


class LayerNorm(Layer):
    """Each row normalised over its last ``dims`` axes, then γ and β (the weights and biases,
    of those axes' shape) learnt; or none with ``affine`` false."""

    type = "layer_norm"
    rational = False
    has_params = True
    forward_rule = "{b} + {w}{times}({x} {minus} μ) / σ"
    backward_rule = "(1/σ)[g {minus} mean g {minus} x' mean(g x')], g = {w}{times}{d}"
    grad_w_rule = "{d}{times}x'"
    grad_b_rule = "{d}"

    def __init__(self, dims: int, eps: float = 1e-5, affine: bool = True) -> None:
        self.dims, self.eps, self.affine = dims, eps, affine
        self.bias = affine
        self.has_params = affine  # type: ignore[misc]

    def param_shapes(self, in_shape: Shape) -> tuple[Shape, Shape | None]:
        shape = in_shape[len(in_shape) - self.dims :]
        return shape, shape

    def _axes(self, x: Array) -> tuple[int, ...]:
        return tuple(range(x.ndim - self.dims, x.ndim))

    def statistics(self, x: Array) -> tuple[Array, Array]:
        """σ and x' = (x − μ)/σ, σ with the normalised axes kept (length 1)."""
        flat = x.reshape(*x.shape[: x.ndim - self.dims], -1)
        n = flat.shape[-1]
        mu = total(flat) / n
        centred = flat - mu[..., None]
        sigma = np.sqrt(total(centred * centred) / n + self.eps)
        shape = (*sigma.shape, *([1] * self.dims))
        return sigma.reshape(shape), (centred / sigma[..., None]).reshape(x.shape)

    def forward(self, x: Array, p: Params | None) -> Array:
        _, x_hat = self.statistics(x)
        if p is None:
            return x_hat
        assert p.b is not None
        o: Array = p.b + p.w * x_hat  # o = β + γ·x'
        return o

    def backward(
        self, x: Array, o: Array, d: Array, p: Params | None
    ) -> tuple[Array, Params | None]:
        sigma, x_hat = self.statistics(x)
        g = d if p is None else p.w * d  # g = γ·δ
        axes = self._axes(x)
        lead = x.shape[: x.ndim - self.dims]

        def mean(a: Array) -> Array:
            s = total(a.reshape(*lead, -1)) / (a.size // max(int(np.prod(lead)), 1))
            return s.reshape(*lead, *([1] * len(axes)))

        d_in = (g - mean(g) - x_hat * mean(g * x_hat)) / sigma
        if p is None:
            return d_in, None
        # Each row's gradients: its own δ x' and δ, summed over its axes γ does not have.
        grad_w, grad_b = d * x_hat, d
        extra = x.ndim - 1 - self.dims
        if extra:
            grad_w = total(np.moveaxis(grad_w.reshape(x.shape[0], -1, *x.shape[-self.dims :]),
                                       1, -1))  # fmt: skip
            grad_b = total(np.moveaxis(grad_b.reshape(x.shape[0], -1, *x.shape[-self.dims :]),
                                       1, -1))  # fmt: skip
        return d_in, Params(grad_w, grad_b)

    def settings(self) -> dict[str, Any]:
        return {"type": self.type, "dims": self.dims, "eps": self.eps, "affine": self.affine}


class Dropout(Layer):
    """Values dropped where ``mask`` is 0, the others scaled by 1/(1 − p). The mask is the one
    the framework drew for the step (recorded beside it); without one, the layer passes its
    input on (evaluation)."""

    type = "dropout"
    rational = False
    forward_rule = "{x}{times}mask / (1 {minus} p)"
    backward_rule = "{d}{times}mask / (1 {minus} p)"

    def __init__(self, p: float) -> None:
        self.p = p

    def scale(self, mask: Array) -> Array:
        """mask / (1 − p): what each value is multiplied by, as the frameworks compute it."""
        out: Array = mask / (1 - self.p)
        return out

    def forward(self, x: Array, p: Params | None, mask: Array | None = None) -> Array:
        return x if mask is None else x * self.scale(mask).astype(x.dtype)

    def backward(
        self, x: Array, o: Array, d: Array, p: Params | None, mask: Array | None = None
    ) -> tuple[Array, Params | None]:
        return (d if mask is None else d * self.scale(mask).astype(d.dtype)), None

    def settings(self) -> dict[str, Any]:
        return {"type": self.type, "p": self.p}


class AvgPool2d(Layer):
    """The mean of each k × k window (stride s, zero padding p): its sum divided by k·k, by
    the values inside the grid (``count_include_pad`` false), or by ``divisor``."""

    type = "avgpool2d"
    rational = True
    forward_rule = "mean of each {size} × {size} window of {x}"
    backward_rule = "{d} / count to each window's values"

    def __init__(
        self, size: int, stride: int | None = None, padding: int = 0,
        count_include_pad: bool = True, divisor: int | None = None,
    ) -> None:  # fmt: skip
        self.size, self.stride, self.pad = size, size if stride is None else stride, padding
        self.count_include_pad, self.divisor = count_include_pad, divisor

    def out_shape(self, in_shape: Shape) -> Shape:
        c, h, w = in_shape
        k, s, p = self.size, self.stride, self.pad
        return (c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)

    def _hw(self, x: Array) -> tuple[int, int]:
        shape = self.out_shape((1, x.shape[-2], x.shape[-1]))
        return shape[1], shape[2]

    def counts(self, x: Array) -> Array:
        """What each window's sum is divided by: per output pixel (H_out·W_out)."""
        k, p = self.size, self.pad
        if self.divisor is not None:
            return np.full(self._hw(x)[0] * self._hw(x)[1], float(self.divisor))
        inside = _pad2(np.ones((1, *x.shape[-2:])), p, p, p, p)
        window = _window_values(inside, self._hw(x), (k, k), (self.stride,) * 2)[0]
        if self.count_include_pad:
            return np.full(len(window), float(k * k))
        return total(window)

    def forward(self, x: Array, p: Params | None) -> Array:
        k, pad, hw = self.size, self.pad, self._hw(x)
        values = _window_values(_pad2(x, pad, pad, pad, pad), hw, (k, k), (self.stride,) * 2)
        o = total(values) / self.counts(x)  # Σ of the window / its count
        return o.reshape(*x.shape[:-2], *hw)

    def backward(
        self, x: Array, o: Array, d: Array, p: Params | None
    ) -> tuple[Array, Params | None]:
        k, pad, hw = self.size, self.pad, self._hw(x)
        share = d.reshape(*d.shape[:-2], -1) / self.counts(x)  # δ / count, per window
        spread = np.broadcast_to(share[..., None], (*share.shape, k * k))
        h, w = x.shape[-2:]
        grid = (*x.shape[:-2], h + 2 * pad, w + 2 * pad)
        back = _scatter(np.ascontiguousarray(spread), grid, hw, (k, k), (self.stride,) * 2)
        return back[..., pad : pad + h, pad : pad + w], None

    def settings(self) -> dict[str, Any]:
        return {"type": self.type, "size": self.size, "stride": self.stride,
                "padding": self.pad, "count_include_pad": self.count_include_pad,
                "divisor": self.divisor}  # fmt: skip


# --- losses ----------------------------------------------------------------------------------


def _width(o: Array) -> int:
    return int(np.prod(o.shape[1:], dtype=np.int64))


def _per_row(m: Any, like: Array) -> Any:
    """The step size m of each row, broadcast over a row's values."""
    if isinstance(m, np.ndarray):
        return m.reshape(-1, *([1] * (like.ndim - 1)))
    return m


class Loss(Protocol):
    """A loss per data input, and δ at the loss (its gradient, of the mean over m rows)."""

    type: str

    def value(self, o: Array, y: Array) -> Array: ...

    def delta(self, o: Array, y: Array, m: Any) -> Array: ...


class MeanSquaredError:
    type = "mse"

    def value(self, o: Array, y: Array) -> Array:
        e = (o - y).reshape(len(o), -1)
        return total(e * e) / e.shape[1]  # Σ_j (o_j − y_j)² / n

    def delta(self, o: Array, y: Array, m: Any) -> Array:
        d: Array = 2 * (o - y) / (_width(o) * _per_row(m, o))  # δ = 2 (o − y) / (n m)
        return d


class CrossEntropy:
    """Softmax inside: ``o`` the logits (one row's value: the classes), ``y`` a class number
    (one value) or the classes' probabilities (o's shape)."""

    type = "cross_entropy"

    def log_softmax(self, o: Array) -> Array:
        shifted = o - np.max(o, axis=1, keepdims=True)
        out: Array = shifted - np.log(total(np.exp(shifted), axis=1))[:, None]
        return out

    def _onehot(self, o: Array, y: Array) -> Array:
        if y.shape == o.shape:
            return y
        classes = y.reshape(len(y)).astype(np.int64)
        onehot: Array = (np.arange(o.shape[1]) == classes[:, None]).astype(o.dtype)
        return onehot

    def value(self, o: Array, y: Array) -> Array:
        logp = self.log_softmax(o)
        if y.shape == o.shape:  # class probabilities
            return -total(y * logp)
        classes = y.reshape(len(y)).astype(np.int64)
        return -np.take_along_axis(logp, classes[:, None], axis=1)[:, 0]  # −log softmax(o)_y

    def delta(self, o: Array, y: Array, m: Any) -> Array:
        target = self._onehot(o, y)
        p = np.exp(self.log_softmax(o))
        total_y = total(target)[:, None] if y.shape == o.shape else 1
        d: Array = (p * total_y - target) / _per_row(m, o)  # δ = (softmax(o) − y) / m
        return d


class BceWithLogits:
    type = "bce_with_logits"

    def value(self, o: Array, y: Array) -> Array:
        o2, y2 = o.reshape(len(o), -1), y.reshape(len(y), -1)
        each = np.maximum(o2, 0) - o2 * y2 + np.log1p(np.exp(-np.abs(o2)))
        return total(each) / o2.shape[1]

    def delta(self, o: Array, y: Array, m: Any) -> Array:
        sigma = where(o >= 0, 1 / (1 + np.exp(-o)), np.exp(o) / (1 + np.exp(o)))
        d: Array = (sigma - y.reshape(o.shape)) / (_width(o) * _per_row(m, o))
        return d


#: Every loss a framework's run may name, by name (steptrace's own squared error included).
LOSSES: dict[str, type[Loss]] = {
    cls.type: cls for cls in (SquaredError, MeanSquaredError, CrossEntropy, BceWithLogits)
}
