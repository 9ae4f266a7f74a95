"""The images chapters' layers: a convolution, a pooling and a normalization worked out by hand,
every number written out; gradients against central differences in every number system; a
pooling's ties; a normalization over a batch of one."""

from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import pytest

from steptrace.model import load_model
from steptrace.model.images import Conv2d, Flatten, MaxPool2d, Normalization
from steptrace.model.layers import Params
from steptrace.numerics import get_numerics

X = [[1, 2, 0],
     [0, 1, 3],
     [2, 0, 1]]  # fmt: skip


def image(*channels):
    """One row (a rows axis of one) of an image of exact values."""
    return np.array([[[[F(v) for v in row] for row in grid] for grid in channels]], dtype=object)


def kernels(*per_output):
    """Conv weights out × in × k × k, exact."""
    return np.array([[[[F(v) for v in row] for row in k] for k in ks] for ks in per_output],
                    dtype=object)  # fmt: skip


def values(a):
    return np.asarray(a)[0].tolist()


def test_a_convolution_is_the_neighbourhood_times_the_kernel_plus_the_bias():
    # A cross: out[i, j] = up + left − centre + right + down + 1/2, zero beyond the edges.
    k = kernels([[[0, 1, 0], [1, -1, 1], [0, 1, 0]]])
    o = Conv2d(1, 3).forward(image(X), Params(k, np.array([F(1, 2)], dtype=object)))
    assert values(o) == [[[F(3, 2), F(1, 2), F(11, 2)],
                          [F(9, 2), F(9, 2), F(-1, 2)],
                          [F(-3, 2), F(9, 2), F(5, 2)]]]  # fmt: skip


def test_the_kernel_is_not_flipped_cross_correlation_as_the_series_writes_it():
    # Only the kernel's top row: out[i, j] = x[i − 1, j − 1] + 2 x[i − 1, j]. A convolution
    # with a flipped kernel would read the row below instead.
    k = kernels([[[1, 2, 0], [0, 0, 0], [0, 0, 0]]])
    o = Conv2d(1, 3, bias=False).forward(image(X), Params(k))
    assert values(o) == [[[0, 0, 0], [2, 5, 2], [0, 2, 7]]]


def test_a_convolutions_backward_pass_by_hand():
    k = kernels([[[1, 2, 0], [0, 0, 0], [0, 0, 0]]])
    layer, p = Conv2d(1, 3), Params(k, np.array([F(0)], dtype=object))
    x = image(X)
    d = image([[1, 1, 1], [1, 1, 1], [1, 1, 1]])
    d_in, grads = layer.backward(x, layer.forward(x, p), d, p)
    # δ_in[y, z] = Σ_{a,b} δ[y + 1 − a, z + 1 − b] · K[a, b] = 1·δ[y+1, z+1] + 2·δ[y+1, z]
    assert values(d_in) == [[[3, 3, 2], [3, 3, 2], [0, 0, 0]]]
    # ∂Loss/∂K[a, b] = Σ_{i,j} δ[i, j] · x[i − 1 + a, j − 1 + b]: sums of x over shifted windows
    assert values(grads.w) == [[[[4, 7, 6], [6, 10, 7], [3, 7, 5]]]]
    assert values(grads.b) == [9]  # ∂Loss/∂b = Σ δ


def test_two_channels_in_and_out_add_over_the_input_channels():
    k = kernels([[[0, 0, 0], [0, 1, 0], [0, 0, 0]], [[0, 0, 0], [0, 2, 0], [0, 0, 0]]],
                [[[0, 0, 0], [0, 0, 1], [0, 0, 0]], [[0, 0, 0], [0, 0, 0], [0, 0, 0]]])  # fmt: skip
    x = image(X, [[1, 1, 1], [1, 1, 1], [1, 1, 1]])
    o = Conv2d(2, 3, bias=False).forward(x, Params(k))
    # out channel 0: x0 + 2·x1 (centre taps); out channel 1: x0 one to the right
    assert values(o)[0] == [[3, 4, 2], [2, 3, 5], [4, 2, 3]]
    assert values(o)[1] == [[2, 0, 0], [1, 3, 0], [0, 1, 0]]


def test_max_pooling_keeps_each_cells_maximum_and_sends_delta_to_the_first_one():
    x = image([[1, 3, 5, 5], [3, 2, 5, 1]])
    pool = MaxPool2d(2)
    assert values(pool.forward(x, None)) == [[[3, 5]]]
    # Ties (3 twice in the first cell, 5 three times in the second): δ goes to the first
    # maximum in reading order, row by row, left to right, as PyTorch does.
    d_in, _ = pool.backward(x, pool.forward(x, None), image([[7, 9]]), None)
    assert values(d_in) == [[[0, 7, 9, 0], [0, 0, 0, 0]]]


def test_a_nan_in_a_cell_is_its_maximum_so_it_propagates():
    x = np.array([[[[1.0, np.nan], [3.0, 2.0]]]])
    o = MaxPool2d(2).forward(x, None)
    assert np.isnan(o[0, 0, 0, 0])


def test_flatten_is_row_major_and_its_backward_puts_delta_back_in_place():
    x = image([[1, 2], [3, 4]], [[5, 6], [7, 8]])
    o = Flatten().forward(x, None)
    assert values(o) == [1, 2, 3, 4, 5, 6, 7, 8]
    d_in, _ = Flatten().backward(x, o, o * 10, None)
    assert values(d_in) == [[[10, 20], [30, 40]], [[50, 60], [70, 80]]]


def test_normalization_of_a_batch_of_two_by_hand():
    # Two rows, one neuron: μ = 2, mean((x − μ)²) = 1, σ = √(1 + ε), x' = ∓1/σ.
    eps = 1e-5
    layer = Normalization(eps)
    p = Params(np.array([2.0]), np.array([0.5]))
    x = np.array([[1.0], [3.0]])
    sigma = np.sqrt(1 + eps)
    o = layer.forward(x, p)
    assert o[:, 0].tolist() == pytest.approx([0.5 - 2 / sigma, 0.5 + 2 / sigma], rel=1e-15)
    d = np.array([[1.0], [0.0]])
    d_in, grads = layer.backward(x, o, d, p)
    # δ_in = (γ/σ)(1/N)[N δ − Σδ − x' Σ δ x'] with N = 2, Σδ = 1, Σ δ x' = −1/σ
    x_hat = np.array([-1, 1]) / sigma
    want = (2 / sigma) / 2 * (2 * d[:, 0] - 1 - x_hat * (-1 / sigma))
    assert d_in[:, 0] == pytest.approx(want, rel=1e-14)
    assert grads.w[:, 0] == pytest.approx([-1 / sigma, 0.0])  # each row's δ x'
    assert grads.b[:, 0].tolist() == [1.0, 0.0]  # each row's δ


def test_normalization_of_a_batch_of_one_gives_beta_and_passes_no_delta():
    # σ = √(0 + ε) = √ε and x' = 0: the output is β whatever x, and δ_in is 0 (documented in
    # docs/numerics.md: per-sample learning makes a normalization layer learn only β).
    layer = Normalization(1e-5)
    p = Params(np.array([3.0, 3.0]), np.array([0.25, -1.0]))
    x = np.array([[7.0, -2.0]])
    o = layer.forward(x, p)
    assert o.tolist() == [[0.25, -1.0]]
    d_in, grads = layer.backward(x, o, np.array([[1.0, 2.0]]), p)
    assert d_in.tolist() == [[0.0, 0.0]] and grads.w.tolist() == [[0.0, 0.0]]
    assert grads.b.tolist() == [[1.0, 2.0]]


def test_normalization_of_an_image_works_per_channel_over_rows_and_pixels():
    layer = Normalization(0.0)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 2, 2, 2))
    o = layer.forward(x, Params(np.ones(2), np.zeros(2)))
    for c in range(2):
        assert o[:, c].mean() == pytest.approx(0, abs=1e-12)
        assert o[:, c].std() == pytest.approx(1, rel=1e-12)


# --- gradients against central differences, every 2D layer, every number system ------------

IMAGE_STACK = {
    "layers": [
        {"type": "input", "shape": [2, 4, 4]},
        {"type": "conv2d", "out": 2, "kernel": 3, "bias": True},
        {"type": "leaky_relu"},
        {"type": "maxpool2d", "size": 2},
        {"type": "flatten"},
        {"type": "linear", "out": 2, "bias": True},
    ],
    "loss": "squared_error",
}
NORMALIZED = {
    "layers": [
        {"type": "input", "shape": [1, 4, 4]},
        {"type": "conv2d", "out": 2, "kernel": 3, "bias": False},
        {"type": "normalization", "gamma": ["3/2", "1/2"], "beta": ["1/10", "-1/5"]},
        {"type": "logistic"},
        {"type": "maxpool2d", "size": 2},
        {"type": "flatten"},
        {"type": "linear", "out": 1, "bias": True},
    ],
    "loss": "squared_error",
}


def _loss(stack, params, x, y, m):
    outs = stack.forward(params, x)
    return np.add.reduce(stack.loss.value(outs[-1], y)) / m


# A normalization is not rational: exact runs refuse it (tests/test_model_files.py).
@pytest.mark.parametrize(("numerics", "spec"), [
    ("exact", IMAGE_STACK), ("float64", IMAGE_STACK), ("float32", IMAGE_STACK),
    ("float64", NORMALIZED), ("float32", NORMALIZED),
], ids=["exact", "float64", "float32", "float64-normalized", "float32-normalized"])  # fmt: skip
def test_image_gradients_match_central_differences(numerics, spec):
    n_in = int(np.prod(spec["layers"][0]["shape"]))
    model = load_model(spec, n_in, seed=5)
    system = get_numerics(numerics)
    stack, params = model.stack(system), model.params(system)
    rng = np.random.default_rng(11)
    m = 3
    x = system.array(F(int(v), 4) for v in rng.integers(-8, 9, m * n_in))
    x = x.reshape(m, *stack.in_shape)
    y = system.array(F(int(v), 2) for v in rng.integers(-2, 3, m * stack.n_out)).reshape(m, -1)
    ms = system.array([F(m)] * m)
    grads = stack.summed(stack.backward(params, x, stack.forward(params, x), y, ms).grads)
    flat = stack.flat(params)
    analytic = stack.flat(grads)
    h = F(1, 10**6) if numerics == "exact" else {"float64": 1e-6, "float32": 1e-2}[numerics]
    tol = {"exact": 0, "float64": 1e-6, "float32": 5e-2}[numerics]
    checked = 0
    for i in range(len(flat)):
        up, down = flat.copy(), flat.copy()
        up[i] = up[i] + system.make(F(h)) if numerics == "exact" else up[i] + h
        down[i] = down[i] - system.make(F(h)) if numerics == "exact" else down[i] - h
        pieces = [_pattern(stack, stack.unflat(v), x) for v in (up, down, flat)]
        if not pieces[0] == pieces[1] == pieces[2]:
            continue  # a kink (ReLU gate, pooling choice) between the two sides
        numeric = (_loss(stack, stack.unflat(up), x, y, m)
                   - _loss(stack, stack.unflat(down), x, y, m)) / (2 * h)  # fmt: skip
        if tol == 0:
            # Within one smooth piece the loss is a quadratic in any one weight: exact.
            assert analytic[i] == numeric, i
        else:
            assert abs(float(analytic[i]) - float(numeric)) <= tol * (1 + abs(float(numeric))), i
        checked += 1
    assert checked >= len(flat) // 2


def _pattern(stack, params, x):
    """Which piece of each piecewise layer every value is on: gates and pooling choices."""
    pattern = []
    value = x
    for layer, out in zip(stack.layers, stack.forward(params, x), strict=True):
        if isinstance(layer, MaxPool2d):
            pattern.append(layer.chosen(value).tobytes())
        elif layer.type in ("relu", "leaky_relu"):
            pattern.append(np.array([v >= 0 for v in value.reshape(-1)]).tobytes())
        value = out
    return pattern
