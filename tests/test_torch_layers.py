"""The layers steptrace recomputes a PyTorch run with (model/images.py's convolution and pooling
with any kernel, stride and padding; model/more.py's tanh, GELU, softmax, layer norm, dropout,
average pooling and losses), checked against PyTorch's own forward and backward passes in
float64: an independent autograd, forward and backward asserted separately.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from steptrace.model.images import Conv2d, MaxPool2d
from steptrace.model.layers import Params
from steptrace.model.more import (
    AvgPool2d,
    BceWithLogits,
    CrossEntropy,
    Dropout,
    Gelu,
    LayerNorm,
    MeanSquaredError,
    Softmax,
    Tanh,
)

if os.environ.get("STEPTRACE_REQUIRE_TORCH") == "1":
    import torch
else:
    torch = pytest.importorskip("torch")
from torch import nn
from torch.nn import functional as F

TOL = 1e-12


def _grads(module, x):
    """PyTorch's output, δ of the input and the parameters' gradients for a random δ."""
    x = x.double().detach().requires_grad_()
    o = module(x)
    d = torch.randn_like(o, generator=torch.Generator().manual_seed(7))
    o.backward(d)
    params = [p.grad.numpy() for p in getattr(module, "parameters", list)()]
    return o.detach().numpy(), d.numpy(), x.grad.numpy(), params


def _params(module) -> Params | None:
    if getattr(module, "weight", None) is None:
        return None
    b = module.bias.detach().numpy() if module.bias is not None else None
    return Params(module.weight.detach().numpy(), b)


def _compare(layer, module, x, **kw) -> None:
    o, d, d_in, grads = _grads(module, x)
    p = _params(module)
    xs = x.double().numpy()
    mine = layer.forward(xs, p, **kw)
    np.testing.assert_allclose(mine, o, rtol=TOL, atol=TOL, err_msg="forward")
    back, g = layer.backward(xs, mine, d, p, **kw)
    np.testing.assert_allclose(back, d_in, rtol=TOL, atol=TOL, err_msg="backward")
    if grads:  # each row's gradients add up to PyTorch's
        np.testing.assert_allclose(g.w.sum(axis=0), grads[0], rtol=TOL, atol=TOL)
        if g.b is not None:
            np.testing.assert_allclose(g.b.sum(axis=0), grads[1], rtol=TOL, atol=TOL)


IMAGES = torch.randn(3, 2, 7, 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("kernel", "stride", "padding"),
    [(3, 1, 1), (3, 2, 1), ((2, 3), (2, 1), (0, 1)), (5, 3, 4), (4, 1, 0), (1, 1, 0)],
)
def test_a_convolution_of_any_kernel_stride_and_padding_is_pytorchs(kernel, stride, padding):
    torch.manual_seed(0)
    module = nn.Conv2d(2, 3, kernel, stride=stride, padding=padding).double()
    layer = Conv2d(3, kernel, True, stride=stride, padding=padding)
    assert layer.out_shape((2, 7, 8)) == tuple(module(IMAGES.double()).shape[1:])
    _compare(layer, module, IMAGES)


def test_the_series_convolution_is_its_own_code_and_settings():
    """Defaults give the series' layer: the same settings a model file writes."""
    assert not Conv2d(3, 3, True).general and not Conv2d(3, 3, True, padding=1).general
    assert Conv2d(3, 3, True).settings() == {"type": "conv2d", "out": 3, "kernel": 3,
                                             "bias": True}  # fmt: skip
    assert Conv2d(3, 3, True, stride=2).settings()["stride"] == [2, 2]
    assert not MaxPool2d(2).general and MaxPool2d(2).settings() == {"type": "maxpool2d",
                                                                    "size": 2}  # fmt: skip


@pytest.mark.parametrize(("size", "stride", "padding"), [(2, 2, 0), (3, 2, 1), (3, 1, 1),
                                                         (2, 1, 0)])  # fmt: skip
def test_a_max_pooling_of_any_stride_and_padding_sends_delta_to_each_windows_maximum(
    size, stride, padding
):
    x = IMAGES.clone()
    x[0, 0, 0, :3] = 1.0  # ties: the first maximum in reading order
    x[0, 0, 1, :3] = 1.0
    _compare(MaxPool2d(size, stride=stride, padding=padding), nn.MaxPool2d(size, stride, padding),
             x)  # fmt: skip


@pytest.mark.parametrize(
    ("layer", "module"),
    [
        (AvgPool2d(2), nn.AvgPool2d(2)),
        (AvgPool2d(3, 2, 1), nn.AvgPool2d(3, 2, 1)),
        (AvgPool2d(3, 1, 1, count_include_pad=False), nn.AvgPool2d(3, 1, 1,
                                                                   count_include_pad=False)),
        (AvgPool2d(3, 1, 1, divisor=5), nn.AvgPool2d(3, 1, 1, divisor_override=5)),
    ],
)  # fmt: skip
def test_an_average_pooling(layer, module):
    _compare(layer, module, IMAGES)


@pytest.mark.parametrize(
    ("layer", "module"),
    [
        (Tanh(), nn.Tanh()),
        (Gelu(), nn.GELU()),
        (Gelu("tanh"), nn.GELU(approximate="tanh")),
        (Softmax(1), nn.Softmax(dim=1)),
        (Softmax(-1), nn.Softmax(dim=-1)),
    ],
)
def test_activations(layer, module):
    _compare(layer, module, IMAGES[:, 0] * 3)


@pytest.mark.parametrize("shape", [(8,), (7, 8)])
def test_a_layer_norm_over_the_last_axes_and_each_rows_gradients(shape):
    module = nn.LayerNorm(shape).double()
    with torch.no_grad():
        module.weight.normal_(generator=torch.Generator().manual_seed(2))
        module.bias.normal_(generator=torch.Generator().manual_seed(3))
    _compare(LayerNorm(len(shape), 1e-5), module, IMAGES[:, 0])


def test_dropout_by_its_recorded_mask():
    module = nn.Dropout(0.25)
    torch.manual_seed(5)
    x = IMAGES.double().requires_grad_()
    o = module(x)
    # The mask PyTorch drew, as autograd saved it (freed by the backward pass).
    mask = (o.grad_fn._saved_other != 0).numpy().astype(np.float64)
    d = torch.randn_like(o)
    o.backward(d)
    layer = Dropout(0.25)
    np.testing.assert_array_equal(layer.forward(x.detach().numpy(), None, mask=mask),
                                  o.detach().numpy())  # fmt: skip
    back, _ = layer.backward(x.detach().numpy(), o.detach().numpy(), d.numpy(), None, mask=mask)
    np.testing.assert_array_equal(back, x.grad.numpy())
    # Evaluation: no mask, the input passes.
    assert layer.forward(x.detach().numpy(), None) is not None


def test_losses_and_their_delta_for_a_step_of_six_rows():
    gen = torch.Generator().manual_seed(4)
    o = torch.randn(6, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    classes = torch.randint(0, 5, (6,), generator=gen)
    target = torch.rand(6, 5, dtype=torch.float64, generator=gen)
    cases = [
        (CrossEntropy(), classes.double().reshape(6, 1), F.cross_entropy(o, classes,
                                                                         reduction="none")),
        (CrossEntropy(), target, F.cross_entropy(o, target, reduction="none")),
        (MeanSquaredError(), target, F.mse_loss(o, target, reduction="none").mean(dim=1)),
        (BceWithLogits(), target, F.binary_cross_entropy_with_logits(o, target,
                                                                     reduction="none").mean(1)),
    ]  # fmt: skip
    for loss, y, per_sample in cases:
        o.grad = None
        per_sample.mean().backward()
        values = loss.value(o.detach().numpy(), y.numpy())
        np.testing.assert_allclose(values, per_sample.detach().numpy(), rtol=TOL, atol=TOL)
        delta = loss.delta(o.detach().numpy(), y.numpy(), 6)
        np.testing.assert_allclose(delta, o.grad.numpy(), rtol=TOL, atol=TOL, err_msg=loss.type)
