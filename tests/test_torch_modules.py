"""steptrace.torch records every leaf module, whatever its type, in call order, and networks
that are not chains: residual blocks, a module called twice, functional calls between modules.

Each recorded value of the first step is checked against PyTorch itself: the same network
(same seeds) run again with hooks of the test's own, its outputs and autograd's gradients of
every layer's input.
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

from .torch_nets import NETS, Net, train


def _record(traces, name: str, epochs: int = 1):
    net = NETS[name]()
    with steptrace.torch.record(net.model, net.optimizer, out=traces, name=name) as rec:
        train(net, epochs=epochs, rec=rec)
    return rec, steptrace.open_trace(rec.path)


def _pytorch_first_step(net: Net):
    """Every leaf module call of the first step, in call order: its input, its output (as the
    call made it) and the output tensor (which keeps its gradient); and the step's input x
    (which keeps its own)."""
    inputs, values, outputs = [], [], []

    def hook(module, args, output):
        inputs.append(args[0])
        values.append(output.detach().clone())
        outputs.append(output)
        for t in (args[0], output):
            if t.requires_grad and t.grad_fn is not None:
                t.retain_grad()

    leaves = [m for m in net.model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    for m in leaves:  # as the recording ran them: out of place
        if getattr(m, "inplace", False):
            m.inplace = False
    x = net.x[: net.batch].clone().requires_grad_()
    out = net.model(x)
    net.per_sample(out, net.y[: net.batch]).mean().backward()
    for h in handles:
        h.remove()
    return inputs, values, x, outputs


@pytest.mark.parametrize("name", ["cnn", "residual", "twice", "zoo", "custom", "nesterov"])
def test_every_layers_output_and_delta_of_the_first_step_is_pytorchs(traces, name):
    _, trace = _record(traces, name)
    inputs, values, x, _ = _pytorch_first_step(NETS[name]())
    graph = trace.meta["graph"]
    assert [layer["k"] for layer in graph["layers"]] == list(range(2, len(values) + 2))
    m = len(x)
    for layer, value, inp in zip(graph["layers"], values, inputs, strict=True):
        k = layer["k"]
        np.testing.assert_array_equal(steptrace.load_tensor(trace, f"o{k}")[:m], value.numpy())
        # δ of the layer's input: autograd's gradient of the tensor it reads
        grad = x.grad if inp is x else inp.grad
        if grad is not None:
            np.testing.assert_array_equal(steptrace.load_tensor(trace, f"d{k}")[:m], grad.numpy(),
                                          err_msg=f"d{k}")  # fmt: skip
        if layer["input"].startswith("i"):
            np.testing.assert_array_equal(
                steptrace.load_tensor(trace, layer["input"])[:m], inp.detach().numpy()
            )
    np.testing.assert_array_equal(steptrace.load_tensor(trace, "d1")[:m], x.grad.numpy())
    np.testing.assert_array_equal(steptrace.load_tensor(trace, "x")[:m], x.detach().numpy())


def test_the_issues_cnn_is_recorded_module_by_module(traces):
    _, trace = _record(traces, "cnn")
    graph = trace.meta["graph"]
    kinds = [(layer["class"], layer["type"], layer["input"]) for layer in graph["layers"]]
    assert kinds == [
        ("Conv2d", "conv2d", "o1"), ("BatchNorm2d", "batch_norm", "o2"), ("ReLU", "relu", "o3"),
        ("MaxPool2d", "maxpool2d", "o4"), ("Dropout", "dropout", "o5"),
        ("Flatten", "flatten", "o6"), ("Linear", "linear", "o7"),
    ]  # fmt: skip
    assert graph["layers"][0]["settings"] == {"out": 8, "kernel": [3, 3], "stride": [1, 1],
                                              "padding": [1, 1], "bias": True}  # fmt: skip
    assert graph["layers"][4]["mask"] == "mask6"
    assert graph["layers"][1]["state"] == ["running_mean", "running_var", "num_batches_tracked"]
    assert graph["loss"] == {"type": "cross_entropy", "input": "o8", "targets": "classes"}
    shapes = {t.name: t.shape for t in trace.tensors}
    assert shapes["x"] == (1, 8, 8) and shapes["o2"] == (8, 8, 8) and shapes["o5"] == (8, 4, 4)
    assert shapes["w2_before"] == (8, 1, 3, 3) and shapes["grad_w8"] == (10, 128)
    assert shapes["y"] == (1,) and shapes["d9"] == (10,)
    # The mask PyTorch drew: where the dropout's output is 0 and its input is not.
    mask, o5, o6 = (steptrace.load_tensor(trace, n) for n in ("mask6", "o5", "o6"))
    assert set(np.unique(mask)) == {0.0, 1.0}
    np.testing.assert_array_equal(o6, o5 * (mask / 0.75))  # x · (mask / (1 − p))
    # Class numbers are stored as they are: whole numbers.
    y = steptrace.load_tensor(trace, "y")
    np.testing.assert_array_equal(y[:, 0], NETS["cnn"]().y.numpy().astype(float).tolist() * 1)


def test_a_residual_block_records_the_sum_that_feeds_its_last_relu(traces):
    _, trace = _record(traces, "residual")
    graph = trace.meta["graph"]
    relu2 = graph["layers"][6]
    assert (relu2["k"], relu2["module"], relu2["input"]) == (8, "block.relu", "i8")
    assert graph["ops"] == [{"name": "i8", "op": "add", "inputs": ["o7", "o2"]}]
    # The first call of block.relu owns no parameters; neither does its second call.
    assert graph["layers"][3]["input"] == "o4" and "shares" not in graph["layers"][3]
    i8, o7, o2 = (steptrace.load_tensor(trace, n) for n in ("i8", "o7", "o2"))
    np.testing.assert_array_equal(i8, o7 + o2)  # `out += x` in place, recorded as it was
    # o2 feeds layer 3 and the sum: its gradient is d3, the sum's is d8.
    assert graph["gradients"]["o2"] == "d3" and graph["gradients"]["i8"] == "d8"
    assert graph["gradients"]["o7"] == "d_o7"
    np.testing.assert_array_equal(steptrace.load_tensor(trace, "d_o7"),
                                  steptrace.load_tensor(trace, "d8"))  # fmt: skip


def test_a_module_called_twice_is_two_layers_sharing_its_parameters(traces):
    _, trace = _record(traces, "twice")
    graph = trace.meta["graph"]
    assert [(layer["module"], layer["input"]) for layer in graph["layers"]] == [
        ("inp", "o1"),
        ("shared", "i3"),
        ("shared", "i4"),
        ("out", "o4"),
    ]
    assert graph["layers"][2]["shares"] == 3
    assert {op["name"]: (op["op"], op["inputs"]) for op in graph["ops"]} == {
        "i3": ("tanh", ["o2"]), "i4": ("add", ["o3", "i3"]),
    }  # fmt: skip
    names = {t.name for t in trace.tensors}
    assert {"w3_before", "grad_w3", "grad_w4", "grad_b4"} <= names
    assert "w4_before" not in names  # one module, one set of parameters
    # Both calls' shares of the gradient add up to what the optimizer used.
    grads = steptrace.load_tensor(trace, "grad_w3") + steptrace.load_tensor(trace, "grad_w4")
    step_grad = steptrace.load_tensor(trace, "step_grad_w3")
    m = NETS["twice"]().batch
    np.testing.assert_allclose(grads[:m].sum(axis=0), step_grad[0], rtol=1e-12, atol=1e-15)


def test_modules_of_the_users_own_and_parameters_of_no_leaf_are_recorded(traces):
    _, trace = _record(traces, "custom")
    graph = trace.meta["graph"]
    scale = graph["layers"][2]
    assert (scale["class"], scale["type"]) == ("Scale", "module")
    assert scale["params"] == {"p4_scale": {"rows": False}}
    assert graph["free"] == ["p_gate"]
    assert graph["ops"] == [{"name": "i7", "op": "function", "inputs": ["o6"]}]
    assert graph["loss"]["type"] == "custom"
    names = {t.name for t in trace.tensors}
    assert {"p4_scale_before", "step_grad_p4_scale", "p_gate_after", "step_grad_p_gate"} <= names
    assert "grad_p4_scale" not in names  # no formula: the step's gradient only
    net = NETS["custom"]()
    train(net, epochs=1)
    np.testing.assert_array_equal(steptrace.load_tensor(trace, "p_gate_after")[-1],
                                  net.model.gate.detach().numpy())  # fmt: skip
    np.testing.assert_array_equal(steptrace.load_tensor(trace, "p4_scale_after")[-1],
                                  net.model.body[2].scale.detach().numpy())  # fmt: skip


def test_each_rows_gradients_add_up_to_what_the_optimizer_used(traces):
    _, trace = _record(traces, "zoo")
    m = NETS["zoo"]().batch
    for base in ("w2", "b2", "w6", "b6", "w7", "b7"):
        rows = steptrace.load_tensor(trace, f"grad_{base}")[:m].sum(axis=0)
        np.testing.assert_allclose(rows, steptrace.load_tensor(trace, f"step_grad_{base}")[0],
                                   rtol=1e-10, atol=1e-14, err_msg=base)  # fmt: skip


def three_steps(model, optimizer, rec) -> None:
    """Three steps of SGD on one batch of two rows toward 1."""
    x = torch.rand(2, 3, dtype=torch.float64)
    for _ in range(3):
        optimizer.zero_grad()
        per_sample = ((model(x) - 1) ** 2).sum(dim=1) / 2
        per_sample.mean().backward()
        rec.step(x, torch.ones(2, 1, dtype=torch.float64), per_sample)
        optimizer.step()


def test_a_model_whose_later_step_takes_another_path_is_stopped_saying_so(traces):
    class Branch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 1), nn.Linear(3, 1)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return self.a(x) if self.calls < 3 else self.b(x)

    model = Branch().double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with (
        pytest.raises(steptrace.ModelError, match="the forward pass of step 2 calls its modules"),
        steptrace.torch.record(model, optimizer, out=traces, name="branch") as rec,
    ):
        three_steps(model, optimizer, rec)
    trace = steptrace.open_trace(rec.path)
    assert trace.status == "incomplete" and trace.num_rows == 4


def test_a_layer_that_reads_another_tensor_in_a_later_step_is_stopped_saying_so(traces):
    class Rescaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 1)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            h = self.a(x)
            return self.b(h if self.calls < 3 else h * 2)  # the same modules, b reads anew

    model = Rescaled().double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with (
        pytest.raises(steptrace.ModelError, match=r"in step 2, layer 3 \(b: Linear\) does not "
                      r"read o2 as it did in the first step"),
        steptrace.torch.record(model, optimizer, out=traces, name="rescaled") as rec,
    ):  # fmt: skip
        three_steps(model, optimizer, rec)
