"""Each row's gradients of a PyTorch run: for the layers whose formulas steptrace knows
(linear, conv2d, batch norm 1d and 2d, layer norm), computed from each row's own input and δ, a
chunk at once, they are what autograd gives for that row alone (its δ, the other rows' set to
0); for the others the step's gradient only, as PyTorch summed it.
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

import steptrace.torch
from steptrace.adapters.torch import buffers, values

from .torch_nets import NETS, train


def _autograd_rows(name: str):
    """Each row's gradient of every parameter of each leaf call of the first step, by
    autograd: the call run again on its input (detached: its own share only, not through a
    module called before), backward with only that row's δ."""
    net = NETS[name]()
    calls = []

    def hook(module, args, output):
        output.retain_grad()
        calls.append((module, args[0], output))

    leaves = [m for m in net.model.modules() if not list(m.children())]
    for m in leaves:
        if getattr(m, "inplace", False):
            m.inplace = False
    handles = [m.register_forward_hook(hook) for m in leaves]
    out = net.model(net.x[: net.batch])
    net.per_sample(out, net.y[: net.batch]).mean().backward()
    for h in handles:
        h.remove()
    rows = {}
    for k, (module, inp, output) in enumerate(calls, 2):
        params = dict(module.named_parameters(recurse=False))
        if "weight" not in params:
            continue
        again = module(inp.detach())
        per_row: dict[str, list[np.ndarray]] = {"w": [], "b": []}
        for r in range(net.batch):
            delta = torch.zeros_like(output.grad)
            delta[r] = output.grad[r]
            grads = torch.autograd.grad(again, list(params.values()), delta, retain_graph=True)
            for key, g in zip(params, grads, strict=True):
                per_row[key[0]].append(g.numpy())
        rows[k] = {key: np.stack(v) for key, v in per_row.items() if v}
    return rows, net.batch


@pytest.mark.parametrize("name", ["small-cnn", "zoo", "nesterov", "twice"])
def test_each_rows_gradients_are_autograds_for_that_row_alone(traces, name):
    net = NETS[name]()
    with steptrace.torch.record(net.model, net.optimizer, out=traces, name=name) as rec:
        train(net, epochs=1, rec=rec)
    trace = steptrace.open_trace(rec.path)
    want, m = _autograd_rows(name)
    checked = 0
    for k, grads in want.items():
        for key, per_row in grads.items():
            tensor = f"grad_{key}{k}"
            if tensor not in {t.name for t in trace.tensors}:
                continue  # a module steptrace has no formula for: the step's gradient only
            got = steptrace.load_tensor(trace, tensor)[:m]
            np.testing.assert_allclose(got, per_row, rtol=1e-10, atol=1e-14, err_msg=tensor)
            checked += 1
    assert checked >= 2


def test_a_module_without_formulas_has_the_steps_gradient_only(traces):
    net = NETS["custom"]()
    with steptrace.torch.record(net.model, net.optimizer, out=traces, name="custom") as rec:
        train(net, epochs=1, rec=rec)
    trace = steptrace.open_trace(rec.path)
    names = {t.name for t in trace.tensors}
    assert "grad_p4_scale" not in names and "step_grad_p4_scale" in names
    assert trace.meta["graph"]["layers"][2]["params"] == {"p4_scale": {"rows": False}}


def test_each_rows_gradients_are_computed_for_a_whole_chunk_at_once(traces, monkeypatch):
    """One matrix product per convolution and chunk, whatever its rows: never a row at a time."""
    calls = []
    bmm = torch.bmm
    monkeypatch.setattr(values.torch, "bmm", lambda *a, **k: calls.append(a[0].shape) or bmm(*a))
    monkeypatch.setattr(buffers, "HANDOFF_SECONDS", 1e9)  # chunks by size only
    net = NETS["small-cnn"]()
    with steptrace.torch.record(net.model, net.optimizer, out=traces, name="chunks") as rec:
        train(net, epochs=3, rec=rec)
    # The first step alone (checked at once), then the other 11 steps' 44 rows together.
    assert [shape[0] for shape in calls] == [4, 44]
