"""The series' images chapters: layers on C channels of H × W grids, forward beside backward.

    conv2d         o_c'[i, j] = Σ_{c,a,b} x_c[i − p + a, j − p + b] · K_{c',c}[a, b] + b_c'
                   (cross-correlation: the kernel is not flipped; zero padding p = (k − 1)/2,
                   stride 1, so the output keeps H × W)
                   δ_in,c = Σ_{c'} full correlation of δ_c' with the flipped kernel K_{c',c}
                   ∂Loss/∂K_{c',c}[a, b] = Σ_{i,j} δ_c'[i, j] · x_c[i − p + a, j − p + b]
                   ∂Loss/∂b_c' = Σ_{i,j} δ_c'[i, j]
    maxpool2d      o[i, j] = max of the s × s cell (stride s)
                   δ goes to the cell's maximum, 0 to the others; on a tie, to the first
                   maximum in reading order (row by row, left to right), as PyTorch does
    flatten        o = the image's values row-major (channel, row, column); δ_in = δ reshaped
    normalization  per neuron (a vector) or per channel (an image), over the step's rows:
                   μ = mean, σ = √(mean((x − μ)²) + ε), x' = (x − μ)/σ, o = β + γ·x'
                   δ_in = (γ/σ)(1/N)[N δ − Σ δ − x' Σ δ x'];  ∂Loss/∂γ = Σ δ x';  ∂Loss/∂β = Σ δ
                   (float only: a square root is not rational)

Sums run left to right in reading order (:func:`~.layers.total`), over the terms written
above in the order their indices are written: so every row's numbers are the same whatever
the rows computed beside it. The padded zeros are multiplied like any input (0 · K), as the
im2col kernels of the frameworks do.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..numerics import Number
from .layers import Array, Layer, Params, Shape, _shape_text, total, where, zero_like

__all__ = ["Conv2d", "Flatten", "MaxPool2d", "Normalization"]


def _pad(x: Array, p: int) -> Array:
    """``x`` with ``p`` zeros around each H × W grid (its last two axes)."""
    if p == 0:
        return x
    h, w = x.shape[-2:]
    zero: Any = 0
    if x.dtype == object and x.size:
        zero = zero_like(x.reshape(-1)[:1])[0]  # exact: the rationals' 0
    padded = np.full((*x.shape[:-2], h + 2 * p, w + 2 * p), zero, dtype=x.dtype)
    padded[..., p : h + p, p : w + p] = x
    return padded


@functools.lru_cache(maxsize=64)
def neighbourhoods(h: int, w: int, k: int, p: int) -> Array:
    """Where each output pixel's k × k neighbourhood lies in the grid padded by ``p``: row
    i·W + j holds the flat indices (into the padded grid, row-major) of the neighbourhood of
    pixel (i, j), in reading order."""
    i, j = np.divmod(np.arange(h * w), w)
    a, b = np.divmod(np.arange(k * k), k)
    out: Array = (i[:, None] + a[None, :]) * (w + 2 * p) + (j[:, None] + b[None, :])
    return out


def _patches(x: Array, k: int, p: int) -> Array:
    """Every pixel's neighbourhood: …, C, H·W, k·k (zeros beyond the edges)."""
    h, w = x.shape[-2:]
    padded = _pad(x, p)
    flat = padded.reshape(*padded.shape[:-2], -1)
    out: Array = flat[..., neighbourhoods(h, w, k, p)]
    return out


def _image_error(layer: str, in_shape: Shape) -> str | None:
    if len(in_shape) != 3:
        return (f"a {layer} layer takes images (channels × rows × columns), not a vector of "
                f"{in_shape[0]}; give the input layer a \"shape\": [C, H, W]")  # fmt: skip
    return None


class Conv2d(Layer):
    """C_in → C_out channels, k × k kernels (k odd), stride 1, zero padding (k − 1)/2."""

    type = "conv2d"
    has_params = True
    forward_rule = "{w} ⋆ {x}"  # + bias_rule with a bias
    backward_rule = "Σ_out full({d} ⋆ flipped {w})"
    bias_rule = " + {b}"
    grad_w_rule = "{d} ⋆ {x}"
    grad_b_rule = "Σ_ij {d}"

    def __init__(self, out: int, kernel: int = 3, bias: bool = True) -> None:
        self.out = out
        self.kernel = kernel
        self.bias = bias

    @property
    def padding(self) -> int:
        return (self.kernel - 1) // 2

    def out_shape(self, in_shape: Shape) -> Shape:
        return (self.out, *in_shape[1:])

    def param_shapes(self, in_shape: Shape) -> tuple[Shape, Shape | None]:
        k = self.kernel
        return (self.out, in_shape[0], k, k), (self.out,) if self.bias else None

    def shape_error(self, in_shape: Shape) -> str | None:
        return _image_error("conv2d", in_shape)

    def forward(self, x: Array, p: Params | None) -> Array:
        assert p is not None
        k, (h, w) = self.kernel, x.shape[-2:]
        # patches[…, c, i·W + j, a·k + b] = x_c[i − p + a, j − p + b]: (i, j)'s neighbourhood
        terms = np.swapaxes(_patches(x, k, self.padding), -3, -2)[..., None, :, :, :]
        kernels = p.w.reshape(*p.w.shape[:-2], -1)[..., :, None, :, :]  # …, c', 1, c, a·k + b
        products = terms * kernels  # …, c', pixel, c, a·k + b
        o = total(products.reshape(*products.shape[:-2], -1))  # Σ over (c, a, b)
        o = o.reshape(*o.shape[:-1], h, w)
        return o if p.b is None else o + p.b[..., :, None, None]  # + b_c'

    def backward(
        self, x: Array, o: Array, d: Array, p: Params | None
    ) -> tuple[Array, Params | None]:
        assert p is not None
        k, (h, w) = self.kernel, x.shape[-2:]
        # δ_in,c[y, z] = Σ_{c',a,b} δ_c'[y + p − a, z + p − b] · K_{c',c}[a, b]: the full
        # correlation of δ with the flipped kernel. δ padded by k − 1 − p = p has δ_c'[y + p − a,
        # z + p − b] at (y + k − 1 − a, z + k − 1 − b) of (y, z)'s neighbourhood: reversed.
        flipped = _patches(d, k, k - 1 - self.padding)[..., ::-1]  # …, c', pixel, a·k + b
        terms = np.swapaxes(flipped, -3, -2)[..., None, :, :, :]  # …, 1, pixel, c', a·k + b
        swapped = np.swapaxes(p.w, -4, -3)  # …, c, c', a, b
        kernels = swapped.reshape(*swapped.shape[:-2], -1)[..., :, None, :, :]
        products = terms * kernels  # …, c, pixel, c', a·k + b
        d_in = total(products.reshape(*products.shape[:-2], -1))  # Σ over (c', a, b)
        d_in = d_in.reshape(*d_in.shape[:-1], h, w)
        # ∂Loss/∂K_{c',c}[a, b] = Σ_{i,j} δ_c'[i, j] · x_c[i − p + a, j − p + b]
        shifted = np.swapaxes(_patches(x, k, self.padding), -2, -1)  # …, c, a·k + b, pixel
        deltas = d.reshape(*d.shape[:-2], -1)  # …, c', pixel
        products = deltas[..., :, None, None, :] * shifted[..., None, :, :, :]
        grad_w = total(products)  # Σ over the pixels (i, j): …, c', c, a·k + b
        grad_w = grad_w.reshape(*grad_w.shape[:-1], k, k)
        grad_b = total(deltas) if p.b is not None else None  # ∂Loss/∂b_c' = Σ_ij δ_c'
        return d_in, Params(grad_w, grad_b)

    def settings(self) -> dict[str, Any]:
        return {"type": self.type, "out": self.out, "kernel": self.kernel, "bias": self.bias}


class MaxPool2d(Layer):
    """The maximum of each s × s cell, stride s: H and W shrink s times."""

    type = "maxpool2d"
    forward_rule = "max of each {size} × {size} cell of {x}"
    backward_rule = "{d} to each cell's maximum, 0 elsewhere"

    def __init__(self, size: int = 2) -> None:
        self.size = size

    def out_shape(self, in_shape: Shape) -> Shape:
        c, h, w = in_shape
        return (c, h // self.size, w // self.size)

    def shape_error(self, in_shape: Shape) -> str | None:
        error = _image_error("maxpool2d", in_shape)
        if error is None and (in_shape[1] % self.size or in_shape[2] % self.size):
            return (f'"size" {self.size} does not divide the {_shape_text(in_shape[1:])} '
                    "grids it pools (H and W must be multiples of it)")  # fmt: skip
        return error

    def cells(self, x: Array) -> Array:
        """``x`` as its cells: …, C, H/s, W/s, s·s, each cell's values in reading order."""
        s, (h, w) = self.size, x.shape[-2:]
        grid = x.reshape(*x.shape[:-2], h // s, s, w // s, s)
        return np.swapaxes(grid, -3, -2).reshape(*x.shape[:-2], h // s, w // s, s * s)

    def chosen(self, x: Array) -> Array:
        """Which value of each cell is its maximum: the first one in reading order (argmax
        takes the first; a NaN counts as the maximum, so it propagates)."""
        chosen: Array = np.argmax(self.cells(x), axis=-1)
        return chosen

    def forward(self, x: Array, p: Params | None) -> Array:
        cells = self.cells(x)
        return np.take_along_axis(cells, self.chosen(x)[..., None], axis=-1)[..., 0]

    def backward(
        self, x: Array, o: Array, d: Array, p: Params | None
    ) -> tuple[Array, Params | None]:
        s = self.size
        to_max = np.arange(s * s) == self.chosen(x)[..., None]  # …, C, H/s, W/s, s·s
        spread = np.broadcast_to(d[..., None], to_max.shape)
        cells = where(to_max, spread, zero_like(spread))
        grid = cells.reshape(*cells.shape[:-1], s, s)  # …, C, H/s, W/s, s, s
        return np.swapaxes(grid, -3, -2).reshape(x.shape), None

    def settings(self) -> dict[str, Any]:
        return {"type": self.type, "size": self.size}


class Flatten(Layer):
    """An image's values as one vector, row-major (channel, row, column)."""

    type = "flatten"
    forward_rule = "{x} row by row"
    backward_rule = "{d} as the image"

    def out_shape(self, in_shape: Shape) -> Shape:
        n = 1
        for size in in_shape:
            n *= size
        return (n,)

    def forward(self, x: Array, p: Params | None) -> Array:
        return x.reshape(x.shape[0], -1)

    def backward(
        self, x: Array, o: Array, d: Array, p: Params | None
    ) -> tuple[Array, Params | None]:
        return d.reshape(x.shape), None


class Normalization(Layer):
    """Each neuron (a vector) or channel (an image) rescaled over the step's rows: mean 0,
    deviation 1, then γ and β learnt. γ are the layer's weights, β its biases."""

    type = "normalization"
    rational = False  # σ is a square root
    couples_rows = True
    has_params = True
    bias = True
    forward_rule = "{b} + {w}{times}({x} {minus} μ) / σ"
    backward_rule = "({w}/σ)(1/N)[N{d} {minus} Σ{d} {minus} x' Σ {d} x']"
    grad_w_rule = "Σ {d}{times}x'"
    grad_b_rule = "Σ {d}"

    def __init__(self, eps: Number, eps_text: str = "1/100000") -> None:
        self.eps = eps  # in the run's number system
        self.eps_text = eps_text

    def param_shapes(self, in_shape: Shape) -> tuple[Shape, Shape | None]:
        return (in_shape[0],), (in_shape[0],)

    def groups(self, x: Array) -> Array:
        """``x``'s values by neuron or channel: (n, N), each group's values in the order
        (row, then pixel in reading order)."""
        moved = np.moveaxis(x, 1, 0)
        return moved.reshape(moved.shape[0], -1)

    def ungroup(self, g: Array, like: Array) -> Array:
        shape = (like.shape[1], like.shape[0], *like.shape[2:])
        return np.moveaxis(g.reshape(shape), 0, 1)

    def statistics(self, x: Array) -> tuple[Array, Array, Array]:
        """μ, σ (one per group) and x' = (x − μ)/σ, grouped."""
        g = self.groups(x)
        n = g.shape[1]
        mu = total(g) / n  # μ = mean
        centred = g - mu[:, None]
        sigma = np.sqrt(total(centred * centred) / n + self.eps)  # σ = √(mean((x − μ)²) + ε)
        return mu, sigma, centred / sigma[:, None]  # x' = (x − μ)/σ

    def forward(self, x: Array, p: Params | None) -> Array:
        assert p is not None and p.b is not None and p.w.ndim == 1  # one step's parameters
        _, _, x_hat = self.statistics(x)
        return self.ungroup(p.b[:, None] + p.w[:, None] * x_hat, x)  # o = β + γ·x'

    def backward(
        self, x: Array, o: Array, d: Array, p: Params | None
    ) -> tuple[Array, Params | None]:
        assert p is not None and p.w.ndim == 1
        _, sigma, x_hat = self.statistics(x)
        dg = self.groups(d)
        n = dg.shape[1]
        sum_d, sum_dx = total(dg), total(dg * x_hat)  # Σ δ, Σ δ x'
        # δ_in = (γ/σ)(1/N)[N δ − Σ δ − x' Σ δ x']
        d_in = (p.w / sigma)[:, None] * ((n * dg - sum_d[:, None]) - x_hat * sum_dx[:, None]) / n
        # Each row's gradients: its own terms of ∂Loss/∂γ = Σ δ x' and ∂Loss/∂β = Σ δ.
        per_row = self.ungroup(dg * x_hat, d)
        grad_w = total(per_row.reshape(*per_row.shape[:2], -1)) if x.ndim > 2 else per_row
        grad_b = total(d.reshape(*d.shape[:2], -1)) if x.ndim > 2 else d
        return self.ungroup(d_in, d), Params(grad_w, grad_b)

    def settings(self) -> dict[str, Any]:
        return {"type": self.type, "eps": self.eps_text}
