"""A stack of layers and its loss: the model a run trains.

Layers are numbered from 1 as the series numbers them (L1 is the input layer); the loss comes
next. For the data inputs x of a step (one row each) with expectations y:

    forward    o1 = L1(x), o2 = L2(o1), …, oK = LK(o_{K−1});   loss = Loss(oK, y)
    backward   d_{K+1} = ∂Loss/∂oK = (oK − y) / m
               d_k = ∂Loss/∂(input of layer k), from d_{k+1} by layer k's backward rule,
               and each row's gradients of layer k's parameters beside it
    update     ŵ = w − α · Σ grad   over the step's rows, in the order the step visits them

The article's model is the stack input → linear(1 neuron, no bias) → relu: o1 = x,
o2 = w · o1, o3 = ReLU(o2), δ4 = o3 − y, δ3, δ2 = δ3 · w, δ1 = δ2.

Every value is an array whose first axis is the rows (see :mod:`.layers`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..numerics import Number
from .layers import Array, Layer, Params, Shape, SquaredError, total

__all__ = ["Backward", "ParamSet", "Stack"]

ParamSet = dict[int, Params]
"""Parameters of every layer that has some, by layer number."""


@dataclass(frozen=True)
class Backward:
    """The learning flux of a step's rows: ``d[k]`` is δ of layer k's input (k = 1 … K + 1,
    K + 1 being the loss), and ``grads[k]`` each row's gradients of layer k's parameters."""

    d: dict[int, Array]
    grads: ParamSet


def _rows_sum(g: Array) -> Array:
    """Σ over the rows (axis 0), left to right; one row's is that row itself."""
    return g[0] if len(g) == 1 else total(g, axis=0)


def _size(shape: Shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


@dataclass(frozen=True, eq=False)
class Stack:
    """Layers (numbered from 1) and a loss, with the number of features going in."""

    layers: tuple[Layer, ...]
    loss: SquaredError
    n_in: int

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stack) and (self.layers, self.loss, self.n_in) == (
            other.layers,
            other.loss,
            other.n_in,
        )

    def __hash__(self) -> int:
        return hash((self.layers, self.n_in))

    @property
    def loss_number(self) -> int:
        """The loss's layer number: one after the last layer (4 in the article)."""
        return len(self.layers) + 1

    def layer(self, k: int) -> Layer:
        return self.layers[k - 1]

    @property
    def in_shape(self) -> Shape:
        """The shape of a data input: the input layer's image shape, or the features."""
        shape = getattr(self.layers[0], "shape", None)
        return tuple(shape) if shape else (self.n_in,)

    @property
    def shapes(self) -> list[Shape]:
        """Shape of each layer's output, ``shapes[k - 1]`` for layer k."""
        return list(self._shapes)

    @functools.cached_property
    def _shapes(self) -> tuple[Shape, ...]:
        # Worked out once: the walk asks for them (through param_shapes) every step.
        out, shape = [], self.in_shape
        for layer in self.layers:
            shape = layer.out_shape(shape)
            out.append(shape)
        return tuple(out)

    def in_shape_of(self, k: int) -> Shape:
        """Shape of layer k's input (k may be the loss)."""
        return self.in_shape if k == 1 else self._shapes[k - 2]

    @property
    def sizes(self) -> list[int]:
        """Number of values of each layer's output, ``sizes[k - 1]`` for layer k."""
        return [_size(s) for s in self.shapes]

    def in_size(self, k: int) -> int:
        """Number of values of layer k's input (k may be the loss)."""
        return _size(self.in_shape_of(k))

    @property
    def n_out(self) -> int:
        return self.sizes[-1]

    @property
    def images(self) -> bool:
        """Whether some layer sees images."""
        return len(self.in_shape) > 1

    @property
    def couples_rows(self) -> bool:
        """Whether a row's values depend on the other rows of its step (normalization)."""
        return any(layer.couples_rows for layer in self.layers)

    @property
    def param_layers(self) -> list[int]:
        """Numbers of the layers with parameters, in order."""
        return [k for k, layer in enumerate(self.layers, 1) if layer.has_params]

    def param_shapes(self, k: int) -> tuple[Shape, Shape | None]:
        """The shapes of layer k's weights and biases (None: no bias)."""
        return self.layer(k).param_shapes(self.in_shape_of(k))

    def forward(self, params: ParamSet, x: Array) -> list[Array]:
        """Every layer's output, ``[o1, o2, …, oK]``, for the rows of ``x``."""
        outs = []
        for k, layer in enumerate(self.layers, 1):
            x = layer.forward(x, params.get(k))
            outs.append(x)
        return outs

    def backward(
        self, params: ParamSet, x: Array, outs: list[Array], y: Array, m: Any,
        every_delta: bool = True,
    ) -> Backward:  # fmt: skip
        """δ of every layer's input, from the loss back to L1, and the gradients on the way.
        With ``every_delta`` false it stops at the lowest layer with parameters: all that
        learning needs (the recorder's walk along the weights' path): that layer gives its
        gradients alone (:meth:`Layer.param_grads`), and ``d`` has no δ of its input."""
        top = self.loss_number
        d = {top: self.loss.delta(outs[-1], y, m)}  # δ at the loss = (oK − y) / m
        grads: ParamSet = {}
        bottom = 1 if every_delta else min(self.param_layers, default=1)
        for k in range(top - 1, bottom - 1, -1):
            inp = x if k == 1 else outs[k - 2]
            layer = self.layer(k)
            if not every_delta and k == bottom:  # nothing below needs δ_k: gradients alone
                grad = layer.param_grads(inp, outs[k - 1], d[k + 1], params.get(k))
                if grad is not None:
                    grads[k] = grad
                break
            d[k], grad = layer.backward(inp, outs[k - 1], d[k + 1], params.get(k))
            if grad is not None:
                grads[k] = grad
        return Backward(d, grads)

    def summed(self, grads: ParamSet) -> ParamSet:
        """A step's gradients: its rows' gradients added in the order it visits them."""
        return {k: Params(_rows_sum(g.w), None if g.b is None else _rows_sum(g.b))
                for k, g in grads.items()}  # fmt: skip

    def update(self, params: ParamSet, lr: Number, grads: ParamSet) -> ParamSet:
        """ŵ = w − α·grad for every layer with parameters."""
        return {k: p.step(lr, grads[k]) for k, p in params.items()}

    # -- parameters as one flat vector (the weights' path is stored that way) -------------------

    def flat(self, params: ParamSet) -> Array:
        """Every parameter in a fixed order, along the last axis: by layer, W row-major, then
        b (any leading rows axis kept)."""
        parts = []
        for k in self.param_layers:
            w_shape, _ = self.param_shapes(k)
            p = params[k]
            lead = p.w.shape[: p.w.ndim - len(w_shape)]
            parts.append(p.w.reshape(*lead, -1))
            if p.b is not None:
                parts.append(p.b.reshape(*lead, -1))
        if not parts:
            return np.empty(0)
        return np.concatenate(parts, axis=-1)

    def unflat(self, values: Any) -> ParamSet:
        """:meth:`flat` undone: ``values`` has the parameters along its last axis (numbers, or
        a leading rows axis of columns)."""
        values = np.asarray(values) if not isinstance(values, np.ndarray) else values
        if values.dtype.kind not in "fO":
            values = values.astype(object)
        lead = values.shape[:-1]
        params: ParamSet = {}
        pos = 0
        for k in self.param_layers:
            w_shape, b_shape = self.param_shapes(k)
            n = _size(w_shape)
            w = values[..., pos : pos + n].reshape(*lead, *w_shape)
            pos += n
            b = None
            if b_shape is not None:
                b = values[..., pos : pos + _size(b_shape)].reshape(*lead, *b_shape)
                pos += _size(b_shape)
            params[k] = Params(w, b)
        return params

    @property
    def n_params(self) -> int:
        total_ = 0
        for k in self.param_layers:
            w_shape, b_shape = self.param_shapes(k)
            total_ += _size(w_shape) + (_size(b_shape) if b_shape is not None else 0)
        return total_
