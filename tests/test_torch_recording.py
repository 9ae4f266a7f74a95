"""steptrace.torch leaves the loop it records alone, and says the truth about how it ended.

- Recording changes nothing: the same loop with the same seeds ends with parameters, buffers
  (batch norm's running statistics), the optimizer's state, every step's loss and the random
  numbers' state bit for bit what it ends with unrecorded, for every network, module, loss and
  optimizer the adapter knows (tests/torch_nets.py) and modules of the user's own.
- A run that ends early is incomplete, with the reason and the steps it holds; a total of
  steps is stated only where the loop declared one.
- Nothing is written before the first step is understood.
- No step waits for the device: nothing is read back to the host between two hand-overs.
"""

from __future__ import annotations

import os
import sys

import pytest

import steptrace

if os.environ.get("STEPTRACE_REQUIRE_TORCH") == "1":
    import torch
else:
    torch = pytest.importorskip("torch")
from torch import nn

import steptrace.torch
from steptrace.adapters.torch import buffers

from .torch_nets import NETS, mlp, nesterov, state_of, train


@pytest.mark.parametrize("name", list(NETS))
def test_recording_leaves_training_bit_for_bit_unchanged(traces, name):
    plain = NETS[name]()
    plain_losses = train(plain, epochs=3)
    plain_state = state_of(plain)

    recorded = NETS[name]()
    with steptrace.torch.record(recorded.model, recorded.optimizer, out=traces, name=name) as rec:
        losses = train(recorded, epochs=3, rec=rec)
    state = state_of(recorded)

    assert losses == plain_losses
    assert state.keys() == plain_state.keys()
    for key, value in plain_state.items():
        assert torch.equal(state[key], value), key
    assert rec.status == "complete"
    assert steptrace.open_trace(rec.path).num_rows == 3 * len(recorded.x)


@pytest.mark.parametrize("name", list(NETS))
def test_recording_some_steps_leaves_training_bit_for_bit_unchanged(traces, name):
    """The steps a run does not hold go another way through the hooks (no ∂Loss/∂x asked of
    autograd, no batch-norm statistics before the pass, their extremes reduced): the training
    is still the same, bit for bit."""
    plain = NETS[name]()
    plain_losses = train(plain, epochs=3)
    plain_state = state_of(plain)

    recorded = NETS[name]()
    with steptrace.torch.record(recorded.model, recorded.optimizer, out=traces, name=name,
                                every=3) as rec:  # fmt: skip
        losses = train(recorded, epochs=3, rec=rec)
    state = state_of(recorded)

    assert losses == plain_losses
    for key, value in plain_state.items():
        assert torch.equal(state[key], value), key
    assert rec.status == "complete"
    assert len(steptrace.load_scalars(rec.path)) == rec.run.steps


def test_in_place_modules_are_put_back_and_the_input_is_the_loops(traces):
    net = NETS["custom"]()
    relu = net.model.body[3]
    x = net.x[:4]
    with steptrace.torch.record(net.model, net.optimizer, out=traces) as rec:
        assert relu.inplace is False  # run out of place while recording: the same numbers
        net.optimizer.zero_grad()
        per_sample = net.per_sample(net.model(x), net.y[:4])
        per_sample.mean().backward()
        rec.step(x, net.y[:4], per_sample)
        net.optimizer.step()
    assert relu.inplace is True
    assert not x.requires_grad and x.grad is None  # the model read a tensor of its own


# --- the truth about how a run ended -----------------------------------------------------------


def _seed_loop(rec_kw, traces, stop_at=None, steps=None):
    """The 3-2-1 network over 3 data inputs, batch 1, 3 epochs (9 steps), or ``steps``."""
    net = mlp()
    rec = steptrace.torch.record(net.model, net.optimizer, out=traces, name="ends", **rec_kw)
    with rec:
        if steps is None:
            train(net, epochs=3, rec=rec, stop_at=stop_at)
        else:
            for s in range(steps):  # the same loop, cut short
                xb, yb = net.x[s % 3 : s % 3 + 1], net.y[s % 3 : s % 3 + 1]
                net.optimizer.zero_grad()
                per_sample = net.per_sample(net.model(xb), yb)
                per_sample.mean().backward()
                rec.step(xb, yb, per_sample)
                net.optimizer.step()
    return rec, net


def test_a_loop_that_raises_is_incomplete_and_states_no_total_it_did_not_declare(traces):
    with pytest.raises(RuntimeError, match="the loop broke"):
        _seed_loop({}, traces, stop_at=7)  # in the third epoch of a loop written for 9 steps
    run = traces / "ends"
    trace = steptrace.open_trace(run)
    assert trace.status == "incomplete"
    assert trace.reason == "stopped by RuntimeError: the loop broke after step 6"
    assert trace.num_rows == 7
    assert "steps" not in trace.meta  # no total: the loop declared none
    report = steptrace.verify(run)
    assert report.ok, str(report)
    assert f"OK {run}: 7 steps, 7 rows, float64, incomplete;" in str(report)
    assert " of " not in str(report).split(";")[0]


def test_a_block_that_ends_before_its_declared_plan_is_incomplete(traces):
    net = mlp()
    plan = {"dataset": (net.x, net.y), "epochs": 3, "batch_size": 1}
    rec, _ = _seed_loop(plan, traces, steps=4)
    trace = steptrace.open_trace(rec.path)
    assert trace.status == "incomplete"
    assert trace.reason == "the recording ended after step 3 of the plan's 9"
    assert trace.meta["steps"] == 9
    report = steptrace.verify(rec.path)
    assert report.ok and f"OK {rec.path}: 4 of 9 steps, 4 rows" in str(report), str(report)


def test_a_loop_that_ends_as_it_likes_is_complete_with_the_steps_it_took(traces):
    rec, _ = _seed_loop({}, traces, steps=9)
    trace = steptrace.open_trace(rec.path)
    assert (trace.status, trace.meta["steps"], trace.meta["epochs"]) == ("complete", 9, 3)


# --- nothing before the first step ------------------------------------------------------------


def test_nothing_is_written_before_the_first_step(traces):
    net = nesterov()
    with (
        pytest.raises(ValueError, match="before any step"),
        steptrace.torch.record(net.model, net.optimizer, out=traces) as rec,
    ):
        net.model(net.x)  # a forward pass, then the loop fails
        raise ValueError("before any step")
    assert rec.path is None and rec.status == "empty"
    assert not list(traces.iterdir())
    assert not [h for m in net.model.modules() for h in m._forward_hooks.values()]


def test_a_model_that_cannot_be_recorded_writes_nothing(traces):
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 2)

        def forward(self, x):
            return self.a(x), x

    model = Pair().double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with (
        pytest.raises(steptrace.ModelError, match="returns a tuple: steptrace records models") as e,
        steptrace.torch.record(model, optimizer, out=traces),
    ):
        model(torch.rand(2, 3, dtype=torch.float64))
    assert "\n" not in str(e.value)
    assert not list(traces.iterdir())


# --- the device ----------------------------------------------------------------------------------

#: What makes the host wait for the device: a value read back, a comparison decided on the host.
_SYNCS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__")


def test_no_step_reads_anything_back_from_the_device(traces, monkeypatch):
    """On a GPU each of these would wait for the device; the adapter calls none of them
    between hand-overs (checked on the CPU: every call from steptrace's code is counted)."""
    calls: list[str] = []

    def counted(name, original):
        def wrapper(*args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if "steptrace" in caller and "tests" not in caller:
                calls.append(name)
            return original(*args, **kwargs)

        return wrapper

    net = NETS["cnn"]()
    monkeypatch.setattr(buffers, "HANDOFF_SECONDS", 1e9)  # one hand-over: the first step
    with steptrace.torch.record(net.model, net.optimizer, out=traces, name="sync") as rec:
        train(net, epochs=1, rec=rec)  # the first step handed over, checked
        for name in _SYNCS:
            monkeypatch.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
        monkeypatch.setattr(torch, "equal", counted("equal", torch.equal))
        steps = rec.capture.step_number()
        train(net, epochs=2, rec=rec)
        assert rec.capture.step_number() == steps + 8
        assert calls == []
        monkeypatch.undo()
    assert steptrace.open_trace(rec.path).num_rows == 3 * 16
