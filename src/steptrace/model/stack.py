"""A stack of layers and its loss: the model a run trains.

Layers are numbered from 1 as the series numbers them (L1 is the input layer); the loss comes
next. For one data input x with expectation y:

    forward    o1 = L1(x), o2 = L2(o1), …, oK = LK(o_{K−1});   loss = Loss(oK, y)
    backward   d_{K+1} = ∂Loss/∂oK = (oK − y) / m
               d_k = ∂Loss/∂(input of layer k), from d_{k+1} by layer k's backward rule,
               and the gradients of layer k's parameters beside it
    update     ŵ = w − α · Σ grad   over the step's rows, in the order the step visits them

The article's model is the stack input → linear(1 neuron, no bias) → relu: o1 = x,
o2 = w · o1, o3 = ReLU(o2), δ4 = o3 − y, δ3, δ2 = δ3 · w, δ1 = δ2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..numerics import Number
from .layers import Layer, Params, SquaredError, Vec

__all__ = ["Backward", "Stack"]

ParamSet = dict[int, Params]
"""Parameters of every layer that has some, by layer number."""


@dataclass(frozen=True)
class Backward:
    """The learning flux of one data input: ``d[k]`` is δ of layer k's input (k = 1 … K + 1,
    K + 1 being the loss), and ``grads[k]`` the gradients of layer k's parameters."""

    d: dict[int, Vec]
    grads: ParamSet


@dataclass(frozen=True, eq=False)
class Stack:
    """Layers (numbered from 1) and a loss, with the width of the data going in."""

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
    def sizes(self) -> list[int]:
        """Width of each layer's output, ``sizes[k - 1]`` for layer k."""
        out, n = [], self.n_in
        for layer in self.layers:
            n = layer.out_size(n)
            out.append(n)
        return out

    def in_size(self, k: int) -> int:
        """Width of layer k's input (k may be the loss)."""
        return self.n_in if k == 1 else self.sizes[k - 2]

    @property
    def n_out(self) -> int:
        return self.sizes[-1]

    @property
    def param_layers(self) -> list[int]:
        """Numbers of the layers with parameters, in order."""
        return [k for k, layer in enumerate(self.layers, 1) if layer.has_params]

    def forward(self, params: ParamSet, x: Vec) -> list[Vec]:
        """Every layer's output, ``[o1, o2, …, oK]``."""
        outs = []
        for k, layer in enumerate(self.layers, 1):
            x = layer.forward(x, params.get(k))
            outs.append(x)
        return outs

    def backward(
        self, params: ParamSet, x: Vec, outs: list[Vec], y: Vec, m: Any, every_delta: bool = True
    ) -> Backward:
        """δ of every layer's input, from the loss back to L1, and the gradients on the way.
        With ``every_delta`` false it stops at the lowest layer with parameters: all that
        learning needs (the recorder's walk along the weights' path)."""
        top = self.loss_number
        d = {top: self.loss.delta(outs[-1], y, m)}  # δ at the loss = (oK − y) / m
        grads: ParamSet = {}
        bottom = 1 if every_delta else min(self.param_layers, default=1)
        for k in range(top - 1, bottom - 1, -1):
            inp = x if k == 1 else outs[k - 2]
            d[k], grad = self.layer(k).backward(inp, outs[k - 1], d[k + 1], params.get(k))
            if grad is not None:
                grads[k] = grad
        return Backward(d, grads)

    def update(self, params: ParamSet, lr: Number, grads: ParamSet) -> ParamSet:
        """ŵ = w − α·grad for every layer with parameters."""
        return {k: p.step(lr, grads[k]) for k, p in params.items()}

    # -- parameters as one flat vector (the weights' path is stored that way) -------------------

    def flat(self, params: ParamSet) -> list[Number]:
        """Every parameter in a fixed order: by layer, W row by row, then b."""
        return [v for k in self.param_layers for v in params[k].flat()]

    def unflat(self, values: Sequence[Any]) -> ParamSet:
        """:meth:`flat` undone; ``values`` may hold numbers or columns."""
        params: ParamSet = {}
        pos = 0
        for k in self.param_layers:
            layer = self.layer(k)
            n_in, n_out = self.in_size(k), layer.out_size(self.in_size(k))
            w = [list(values[pos + j * n_in : pos + (j + 1) * n_in]) for j in range(n_out)]
            pos += n_out * n_in
            b = None
            if getattr(layer, "bias", False):
                b = list(values[pos : pos + n_out])
                pos += n_out
            params[k] = Params(w, b)
        return params

    @property
    def n_params(self) -> int:
        return sum(
            self.layer(k).out_size(self.in_size(k))
            * (self.in_size(k) + int(getattr(self.layer(k), "bias", False)))
            for k in self.param_layers
        )
