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

The frameworks' convolutions and poolings take any kernel, stride and padding: ``Conv2d(out,
kernel, bias, stride=s, padding=p)`` and ``MaxPool2d(size, stride=s, padding=p)`` compute the
same sums over each window ``x[i·s − p + a, j·s − p + b]`` (δ goes back to every position a
window read, added in the order of the windows). Their defaults are the series' layers above,
computed by the series' own code.

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


def _pad2(x: Array, top: int, bottom: int, left: int, right: int, fill: Any = None) -> Array:
    """``x``'s H × W grids (its last two axes) with rows and columns of ``fill`` (default 0)
    added around them; a negative count takes rows or columns away."""
    h, w = x.shape[-2:]
    if fill is None:
        fill = zero_like(x.reshape(-1)[:1])[0] if x.dtype == object and x.size else 0
    x = x[..., max(-top, 0) : h - max(-bottom, 0), max(-left, 0) : w - max(-right, 0)]
    top, bottom, left, right = (max(n, 0) for n in (top, bottom, left, right))
    h, w = x.shape[-2:]
    padded = np.full((*x.shape[:-2], h + top + bottom, w + left + right), fill, dtype=x.dtype)
    padded[..., top : top + h, left : left + w] = x
    return padded


@functools.lru_cache(maxsize=64)
def windows(out_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
            width: int) -> Array:  # fmt: skip
    """Where each output pixel's window lies in a grid ``width`` columns wide: row i·W_out + j
    holds the flat indices of x[i·s + a, j·s + b], the window in reading order (a, b)."""
    (ho, wo), (kh, kw), (sh, sw) = out_hw, kernel, stride
    i, j = np.divmod(np.arange(ho * wo), wo)
    a, b = np.divmod(np.arange(kh * kw), kw)
    out: Array = (i[:, None] * sh + a[None, :]) * width + (j[:, None] * sw + b[None, :])
    return out


def _window_values(padded: Array, out_hw: tuple[int, int], kernel: tuple[int, int],
                   stride: tuple[int, int]) -> Array:  # fmt: skip
    """Every output pixel's window of an already padded grid: …, C, H_out·W_out, kh·kw."""
    flat = padded.reshape(*padded.shape[:-2], -1)
    out: Array = flat[..., windows(out_hw, kernel, stride, padded.shape[-1])]
    return out


def _scatter(values: Array, shape: tuple[int, ...], out_hw: tuple[int, int],
             kernel: tuple[int, int], stride: tuple[int, int]) -> Array:  # fmt: skip
    """Windows' values (…, C, H_out·W_out, kh·kw) added back into a grid of ``shape`` (…, C,
    H_p, W_p), window after window in reading order: the backward pass of a window gather."""
    lead = values.shape[:-2]
    flat = np.zeros((int(np.prod(lead, dtype=np.int64)), shape[-2] * shape[-1]),
                    dtype=values.dtype)  # fmt: skip
    if values.dtype == object:
        flat[...] = zero_like(values.reshape(-1)[:1])[0] if values.size else 0
    index = windows(out_hw, kernel, stride, shape[-1]).reshape(-1)
    # np.add.at adds a repeated index's values one after the other, in the windows' order.
    rows = np.arange(len(flat))[:, None]
    np.add.at(flat, (rows, index[None, :]), values.reshape(len(flat), -1))
    return flat.reshape(*lead, shape[-2], shape[-1])


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


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

    def __init__(
        self,
        out: int,
        kernel: int | tuple[int, int] = 3,
        bias: bool = True,
        *,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | None = None,
    ) -> None:
        self.out = out
        self.kh, self.kw = _pair(kernel)
        self.kernel: Any = self.kh if self.kh == self.kw else (self.kh, self.kw)
        self.bias = bias
        self.stride = _pair(stride)
        # The series' padding keeps H × W: (k − 1)/2 (k odd).
        self.pad = _pair(padding) if padding is not None else ((self.kh - 1) // 2,
                                                               (self.kw - 1) // 2)  # fmt: skip
        #: Any other kernel, stride or padding than the series' (odd k, stride 1, (k − 1)/2).
        self.general = (
            self.kh != self.kw or self.kh % 2 == 0 or self.stride != (1, 1)
            or self.pad != ((self.kh - 1) // 2,) * 2
        )  # fmt: skip

    @property
    def padding(self) -> int:
        return (self.kernel - 1) // 2 if not self.general else self.pad[0]

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        """H_out × W_out: ⌊(H + 2p − k)/s⌋ + 1 (H × W itself for the series' convolutions)."""
        (ph, pw), (sh, sw) = self.pad, self.stride
        return (h + 2 * ph - self.kh) // sh + 1, (w + 2 * pw - self.kw) // sw + 1

    def out_shape(self, in_shape: Shape) -> Shape:
        if self.general:
            return (self.out, *self.out_hw(in_shape[1], in_shape[2]))
        return (self.out, *in_shape[1:])

    def param_shapes(self, in_shape: Shape) -> tuple[Shape, Shape | None]:
        return (self.out, in_shape[0], self.kh, self.kw), (self.out,) if self.bias else None

    def shape_error(self, in_shape: Shape) -> str | None:
        return _image_error("conv2d", in_shape)

    def forward(self, x: Array, p: Params | None) -> Array:
        assert p is not None
        if self.general:
            return self._forward_any(x, p)
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
        if self.general:
            return self._backward_any(x, d, p)
        return self._input_delta(x, d, p), self.param_grads(x, o, d, p)

    def param_grads(self, x: Array, o: Array, d: Array, p: Params | None) -> Params:
        """The kernels' and biases' gradients alone: δ to the input, a correlation with the
        flipped kernels, costs as much again."""
        assert p is not None
        if self.general:
            return self._backward_any(x, d, p)[1]
        k = self.kernel
        # ∂Loss/∂K_{c',c}[a, b] = Σ_{i,j} δ_c'[i, j] · x_c[i − p + a, j − p + b]
        shifted = np.swapaxes(_patches(x, k, self.padding), -2, -1)  # …, c, a·k + b, pixel
        deltas = d.reshape(*d.shape[:-2], -1)  # …, c', pixel
        products = deltas[..., :, None, None, :] * shifted[..., None, :, :, :]
        grad_w = total(products)  # Σ over the pixels (i, j): …, c', c, a·k + b
        grad_w = grad_w.reshape(*grad_w.shape[:-1], k, k)
        grad_b = total(deltas) if p.b is not None else None  # ∂Loss/∂b_c' = Σ_ij δ_c'
        return Params(grad_w, grad_b)

    def _input_delta(self, x: Array, d: Array, p: Params) -> Array:
        """δ_in,c[y, z] = Σ_{c',a,b} δ_c'[y + p − a, z + p − b] · K_{c',c}[a, b]: the full
        correlation of δ with the flipped kernel (the series' convolutions)."""
        k, (h, w) = self.kernel, x.shape[-2:]
        # δ padded by k − 1 − p = p has δ_c'[y + p − a, z + p − b] at (y + k − 1 − a,
        # z + k − 1 − b) of (y, z)'s neighbourhood: reversed.
        flipped = _patches(d, k, k - 1 - self.padding)[..., ::-1]  # …, c', pixel, a·k + b
        terms = np.swapaxes(flipped, -3, -2)[..., None, :, :, :]  # …, 1, pixel, c', a·k + b
        swapped = np.swapaxes(p.w, -4, -3)  # …, c, c', a, b
        kernels = swapped.reshape(*swapped.shape[:-2], -1)[..., :, None, :, :]
        products = terms * kernels  # …, c, pixel, c', a·k + b
        d_in = total(products.reshape(*products.shape[:-2], -1))  # Σ over (c', a, b)
        return d_in.reshape(*d_in.shape[:-1], h, w)

    # -- any kernel, stride and padding (the frameworks' convolutions) --------------------------

    def _forward_any(self, x: Array, p: Params) -> Array:
        """o_c'[i, j] = Σ_{c,a,b} x_c[i·s − p + a, j·s − p + b] · K_{c',c}[a, b] + b_c'"""
        hw = self.out_hw(*x.shape[-2:])
        (ph, pw), kernel = self.pad, (self.kh, self.kw)
        padded = _pad2(x, ph, ph, pw, pw)
        terms = np.swapaxes(_window_values(padded, hw, kernel, self.stride), -3, -2)
        kernels = p.w.reshape(*p.w.shape[:-2], -1)[..., :, None, :, :]  # …, c', 1, c, a·kw + b
        products = terms[..., None, :, :, :] * kernels  # …, c', pixel, c, a·kw + b
        o = total(products.reshape(*products.shape[:-2], -1)).reshape(*products.shape[:-3], *hw)
        return o if p.b is None else o + p.b[..., :, None, None]

    def _backward_any(self, x: Array, d: Array, p: Params) -> tuple[Array, Params]:
        """δ_in: each window's δ_c'·K_{c',c} added back where the window read x (the windows
        in reading order); ∂Loss/∂K_{c',c}[a, b] = Σ_{i,j} δ_c'[i, j] · x_c[i·s − p + a, …]."""
        (h, w), hw = x.shape[-2:], d.shape[-2:]
        (ph, pw), kernel = self.pad, (self.kh, self.kw)
        deltas = d.reshape(*d.shape[:-2], -1)  # …, c', pixel
        # Each window's terms δ_c'[pixel] · K_{c',c}[a, b], summed over c' in order.
        products = deltas[..., :, None, :, None] * p.w.reshape(*p.w.shape[:-2], -1)[
            ..., :, :, None, :]  # fmt: skip
        back = total(np.moveaxis(products, -4, -1))  # …, c, pixel, a·kw + b
        grid = (*x.shape[:-2], h + 2 * ph, w + 2 * pw)
        d_in = _scatter(back, grid, tuple(hw), kernel, self.stride)[..., ph : ph + h, pw : pw + w]
        padded = _pad2(x, ph, ph, pw, pw)
        shifted = np.swapaxes(_window_values(padded, tuple(hw), kernel, self.stride), -2, -1)
        grads = deltas[..., :, None, None, :] * shifted[..., None, :, :, :]
        grad_w = total(grads).reshape(*grads.shape[:-2], self.kh, self.kw)
        grad_b = total(deltas) if p.b is not None else None
        return d_in, Params(grad_w, grad_b)

    def settings(self) -> dict[str, Any]:
        out = {"type": self.type, "out": self.out, "kernel": self.kernel, "bias": self.bias}
        if self.general:
            out["kernel"] = [self.kh, self.kw]
            out.update(stride=list(self.stride), padding=list(self.pad))
        return out


class MaxPool2d(Layer):
    """The maximum of each s × s cell, stride s: H and W shrink s times."""

    type = "maxpool2d"
    forward_rule = "max of each {size} × {size} cell of {x}"
    backward_rule = "{d} to each cell's maximum, 0 elsewhere"

    def __init__(self, size: int = 2, *, stride: int | None = None, padding: int = 0) -> None:
        self.size = size
        self.stride = size if stride is None else stride
        self.pad = padding
        #: Windows that overlap, skip or reach beyond the grid (the frameworks' poolings).
        self.general = self.stride != size or padding != 0

    def out_shape(self, in_shape: Shape) -> Shape:
        c, h, w = in_shape
        if self.general or h % self.size or w % self.size:
            k, s, p = self.size, self.stride, self.pad
            return (c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        return (c, h // self.size, w // self.size)

    def shape_error(self, in_shape: Shape) -> str | None:
        error = _image_error("maxpool2d", in_shape)
        if error is None and not self.general and (in_shape[1] % self.size
                                                   or in_shape[2] % self.size):  # fmt: skip
            return (f'"size" {self.size} does not divide the {_shape_text(in_shape[1:])} '
                    "grids it pools (H and W must be multiples of it)")  # fmt: skip
        return error

    def cells(self, x: Array) -> Array:
        """``x`` as its cells: …, C, H/s, W/s, s·s, each cell's values in reading order."""
        if self.windowed(x):  # every window, beyond the grid -∞ (never a maximum)
            k, p, (h, w) = self.size, self.pad, x.shape[-2:]
            hw = self.out_shape((1, h, w))[1:]
            padded = _pad2(x, p, p, p, p, fill=-np.inf) if p else x
            values = _window_values(padded, (hw[0], hw[1]), (k, k), (self.stride,) * 2)
            return values.reshape(*x.shape[:-2], hw[0], hw[1], k * k)
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
        chosen = np.argmax(cells, axis=-1)  # as chosen(x), on the cells already at hand
        # Each cell's chosen value by one flat gather (take_along_axis costs ~10 µs a call).
        flat = cells.reshape(-1, cells.shape[-1])
        out: Array = flat[np.arange(len(flat)), chosen.reshape(-1)]
        return out.reshape(chosen.shape)

    def backward(
        self, x: Array, o: Array, d: Array, p: Params | None
    ) -> tuple[Array, Params | None]:
        if self.windowed(x):
            return self._backward_any(x, d), None
        s, chosen = self.size, self.chosen(x)
        if d.dtype == object:  # exact or traced: each cell's zeros in the number system
            to_max = np.arange(s * s) == chosen[..., None]  # …, C, H/s, W/s, s·s
            spread = np.broadcast_to(d[..., None], to_max.shape)
            cells = where(to_max, spread, zero_like(spread))
        else:  # floats: δ written into a grid of zeros at each cell's maximum (the same bits)
            cells = np.zeros((*chosen.shape, s * s), dtype=d.dtype)
            flat = cells.reshape(-1, s * s)
            flat[np.arange(len(flat)), chosen.reshape(-1)] = d.reshape(-1)
        grid = cells.reshape(*cells.shape[:-1], s, s)  # …, C, H/s, W/s, s, s
        return np.swapaxes(grid, -3, -2).reshape(x.shape), None

    def windowed(self, x: Array) -> bool:
        """Whether ``x`` is pooled window by window: the frameworks' settings, or a grid the
        size does not divide (its last rows and columns left out, as the frameworks do)."""
        return self.general or bool(x.shape[-2] % self.size or x.shape[-1] % self.size)

    def _backward_any(self, x: Array, d: Array) -> Array:
        """δ to each window's maximum, added up where windows overlap (window after window)."""
        k, p, (h, w) = self.size, self.pad, x.shape[-2:]
        to_max = np.arange(k * k) == self.chosen(x)[..., None]  # …, C, H_out, W_out, k·k
        spread = np.broadcast_to(d[..., None], to_max.shape)
        cells = where(to_max, spread, zero_like(spread))
        hw = (to_max.shape[-3], to_max.shape[-2])
        values = cells.reshape(*cells.shape[:-3], hw[0] * hw[1], k * k)
        grid = (*x.shape[:-2], h + 2 * p, w + 2 * p)
        return _scatter(values, grid, hw, (k, k), (self.stride,) * 2)[..., p : p + h, p : p + w]

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "size": self.size}
        if self.general:
            out.update(stride=self.stride, padding=self.pad)
        return out


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
