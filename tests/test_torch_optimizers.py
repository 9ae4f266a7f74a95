"""steptrace.torch and the optimizer: each parameter's optimizer state before and after every
step as tensors ``load_tensor`` reads (``exp_avg_w2_after`` …, PyTorch's names), the gradient
the optimizer used (``step_grad_…``), and the learning rate each step used (a scheduler's).
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

import steptrace.torch

OPTIMIZERS = {
    "sgd-momentum": (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.2,
                                               weight_decay=0.01), ["momentum_buffer"]),
    "sgd-nesterov": (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
                     ["momentum_buffer"]),
    "adam": (lambda p: torch.optim.Adam(p, lr=0.01), ["step", "exp_avg", "exp_avg_sq"]),
    "adam-amsgrad": (lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True, weight_decay=0.1),
                     ["step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"]),
    "adamw": (lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
              ["step", "exp_avg", "exp_avg_sq"]),
    "rmsprop": (lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5, centered=True),
                ["step", "square_avg", "momentum_buffer", "grad_avg"]),
}  # fmt: skip


def _train(traces, make, steps: int = 6, scheduler=None, name: str = "opt"):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    optimizer = make(model.parameters())
    sched = scheduler(optimizer) if scheduler is not None else None
    x = torch.rand(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.rand(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    lrs = []
    with steptrace.torch.record(model, optimizer, out=traces, name=name) as rec:
        for s in range(steps):
            xb, yb = x[(s % 2) * 2 : (s % 2) * 2 + 2], y[(s % 2) * 2 : (s % 2) * 2 + 2]
            optimizer.zero_grad()
            per_sample = ((model(xb) - yb) ** 2).sum(dim=1) / 2
            per_sample.mean().backward()
            rec.step(xb, yb, per_sample)
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if sched is not None:
                sched.step()
    return rec, model, optimizer, lrs


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_each_parameters_optimizer_state_before_and_after_every_step(traces, kind):
    make, keys = OPTIMIZERS[kind]
    rec, model, optimizer, _ = _train(traces, make, name=kind)
    trace = steptrace.open_trace(rec.path)
    graph = trace.meta["graph"]
    assert graph["optimizer"]["state"] == keys and graph["optimizer"]["checked"]
    assert trace.meta["recorded_with"]["update"] == "optimizer"
    params = {"w2": model[0].weight, "b2": model[0].bias, "w4": model[2].weight,
              "b4": model[2].bias}  # fmt: skip
    for base, p in params.items():
        for key in keys:
            after = steptrace.load_tensor(trace, f"{key}_{base}_after")
            before = steptrace.load_tensor(trace, f"{key}_{base}_before")
            state = optimizer.state[p][key]
            # The last step's state is the optimizer's now, bit for bit.
            np.testing.assert_array_equal(after[-1], state.numpy(), err_msg=f"{key}_{base}")
            # Each step starts from the state the step before left (2 rows a step).
            np.testing.assert_array_equal(before[2::2], after[1:-1:2])
            first = before[0]
            if key == "momentum_buffer" and kind.startswith("sgd"):
                assert np.isnan(first).all()  # SGD has none before its first step
            else:
                assert (first == 0).all(), f"{key}_{base}"
        # The parameters after each step, and the gradient the optimizer used.
        np.testing.assert_array_equal(steptrace.load_tensor(trace, f"{base}_after")[-1],
                                      p.detach().numpy())  # fmt: skip
        np.testing.assert_array_equal(steptrace.load_tensor(trace, f"step_grad_{base}")[-1],
                                      p.grad.numpy())  # fmt: skip


def test_the_learning_rate_each_step_used_is_recorded(traces):
    def scheduler(optimizer):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)

    rec, _, _, lrs = _train(traces, OPTIMIZERS["adam"][0], scheduler=scheduler)
    lr = steptrace.load_tensor(rec, "lr")
    np.testing.assert_array_equal(lr[::2], lrs)
    assert lrs == [0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025]


def test_another_optimizer_is_recorded_as_it_left_the_parameters(traces):
    rec, model, _, _ = _train(traces, lambda p: torch.optim.Adagrad(p, lr=0.1))
    trace = steptrace.open_trace(rec.path)
    opt = trace.meta["graph"]["optimizer"]
    assert (opt["type"], opt["state"], opt["checked"]) == ("Adagrad", [], False)
    np.testing.assert_array_equal(steptrace.load_tensor(trace, "w4_after")[-1],
                                  model[2].weight.detach().numpy())  # fmt: skip
    assert not any(t.name.startswith("sum_") for t in trace.tensors)
