"""steptrace.torch and the loop's loss: any per-sample loss is recorded (its values, and δ at
the loss as autograd computed it); the losses steptrace knows (squared_error, mse,
cross_entropy on class numbers or probabilities, bce_with_logits) are named, given as an ``nn``
loss module or recognised from the first step, and a per-sample loss that is not the mean's
gradient is refused at the first step, saying by how much.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import steptrace

if os.environ.get("STEPTRACE_REQUIRE_TORCH") == "1":
    import torch
else:
    torch = pytest.importorskip("torch")
from torch import nn
from torch.nn import functional as F

import steptrace.torch
from steptrace.model.more import LOSSES


def _net(n_out: int = 3) -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, n_out)).double()
    x = torch.rand(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return model, torch.optim.SGD(model.parameters(), lr=0.1), x


def _run(traces, y, per_sample_of, loss=None, name="loss", n_out=3):
    model, optimizer, x = _net(n_out)
    grads = []
    with steptrace.torch.record(model, optimizer, out=traces, name=name, loss=loss) as rec:
        for i in range(0, 6, 3):
            optimizer.zero_grad()
            out = model(x[i : i + 3])
            out.retain_grad()
            per_sample = per_sample_of(out, y[i : i + 3])
            per_sample.mean().backward()
            grads.append(out.grad.clone())
            rec.step(x[i : i + 3], y[i : i + 3], per_sample)
            optimizer.step()
    return rec, steptrace.open_trace(rec.path), torch.cat(grads)


CLASSES = torch.tensor([0, 2, 1, 1, 0, 2])


def test_cross_entropy_on_class_numbers_records_them_as_whole_numbers(traces):
    _, trace, grads = _run(traces, CLASSES, lambda o, y: F.cross_entropy(o, y, reduction="none"))
    assert trace.meta["graph"]["loss"] == {"type": "cross_entropy", "input": "o4",
                                           "targets": "classes"}  # fmt: skip
    assert trace.tensor("y").shape == (1,)
    y = steptrace.load_tensor(trace, "y")
    np.testing.assert_array_equal(y[:, 0], CLASSES.numpy())
    assert y.dtype == np.float64 and (y == np.round(y)).all()
    # δ at the loss is autograd's, bit for bit; and the formula's within rounding.
    d = steptrace.load_tensor(trace, "d5")
    np.testing.assert_array_equal(d, grads.numpy())
    o = steptrace.load_tensor(trace, "o4")
    ce = LOSSES["cross_entropy"]()
    np.testing.assert_allclose(d, ce.delta(o, y, 3), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(steptrace.load_tensor(trace, "loss"), ce.value(o, y), rtol=1e-12)


@pytest.mark.parametrize(
    ("given", "per_sample", "targets", "kind"),
    [
        ("cross_entropy", lambda o, y: F.cross_entropy(o, y, reduction="none"), "probs",
         "cross_entropy"),
        (nn.CrossEntropyLoss(), lambda o, y: F.cross_entropy(o, y, reduction="none"), "classes",
         "cross_entropy"),
        (None, lambda o, y: F.mse_loss(o, y, reduction="none").mean(dim=1), "values", "mse"),
        (nn.MSELoss(), lambda o, y: F.mse_loss(o, y, reduction="none").mean(dim=1), "values",
         "mse"),
        (None, lambda o, y: F.binary_cross_entropy_with_logits(o, y, reduction="none")
         .mean(dim=1), "binary", "bce_with_logits"),
        (nn.BCEWithLogitsLoss(), lambda o, y: F.binary_cross_entropy_with_logits(
            o, y, reduction="none").mean(dim=1), "binary", "bce_with_logits"),
        (None, lambda o, y: ((o - y) ** 2).sum(dim=1) / 2, "values", "squared_error"),
        (None, lambda o, y: (o - y).abs().sum(dim=1), "values", "custom"),
        (nn.CrossEntropyLoss(label_smoothing=0.1), lambda o, y: F.cross_entropy(
            o, y, reduction="none", label_smoothing=0.1), "classes", "custom"),
    ],
)  # fmt: skip
def test_a_loss_is_named_given_as_a_module_or_recognised(traces, given, per_sample, targets, kind):
    gen = torch.Generator().manual_seed(2)
    y = {
        "classes": CLASSES,
        "probs": torch.softmax(torch.rand(6, 3, generator=gen, dtype=torch.float64), dim=1),
        "values": torch.rand(6, 3, generator=gen, dtype=torch.float64),
        "binary": (torch.rand(6, 3, generator=gen) > 0.5).double(),
    }[targets]
    _, trace, grads = _run(traces, y, per_sample, loss=given)
    loss = trace.meta["graph"]["loss"]
    assert loss["type"] == kind
    assert loss["targets"] == ("classes" if targets == "classes" else "values")
    np.testing.assert_array_equal(steptrace.load_tensor(trace, "d5"), grads.numpy())
    per_row = steptrace.load_tensor(trace, "loss")
    o, recorded_y = steptrace.load_tensor(trace, "o4"), steptrace.load_tensor(trace, "y")
    if kind != "custom":  # the formula's loss and δ
        rule = LOSSES[kind]()
        np.testing.assert_allclose(per_row, rule.value(o, recorded_y), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(grads.numpy(), rule.delta(o, recorded_y, 3), rtol=1e-12,
                                   atol=1e-15)  # fmt: skip


@pytest.mark.parametrize(
    ("given", "per_sample", "message"),
    [
        # per_sample is the mean squared error, the loop backpropagated their sum
        (None, lambda o, y: F.mse_loss(o, y, reduction="none").mean(dim=1),
         "the gradient at the model's output is 3 × 2 (o − y)/(n m)"),
        ("cross_entropy", lambda o, y: ((o - y) ** 2).sum(dim=1) / 2,
         "per_sample is not each row's cross_entropy loss"),
    ],
)  # fmt: skip
def test_a_loss_whose_delta_is_not_its_means_gradient_is_refused_at_the_first_step(
    traces, given, per_sample, message
):
    model, optimizer, x = _net()
    y = torch.rand(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with (
        pytest.raises(steptrace.ConfigError) as info,
        steptrace.torch.record(model, optimizer, out=traces, name="bad", loss=given) as rec,
    ):
        optimizer.zero_grad()
        out = model(x[:3])
        values = per_sample(out, y[:3])
        values.sum().backward()
        rec.step(x[:3], y[:3], values)
        optimizer.step()
    assert message in str(info.value) and "\n" not in str(info.value)
    assert steptrace.open_trace(rec.path).status == "incomplete"


def test_an_unknown_loss_name_is_refused_before_anything_is_written(traces):
    model, optimizer, _ = _net()
    with pytest.raises(steptrace.ConfigError, match="loss='hinge': choose one of squared_error"):
        steptrace.torch.record(model, optimizer, out=traces, loss="hinge")
    assert not list(traces.iterdir())
