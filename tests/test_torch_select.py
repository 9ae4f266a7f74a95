"""A PyTorch loop recorded with ``every`` or ``steps``: the steps the run does not hold are not
copied (adapters/torch/figures.py), yet its values at the steps it holds and its per-step
figures at every step are the full run's, bit for bit, a run that goes non-finite included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import steptrace
from steptrace.trace.why import first_nonfinite

from .test_flight import first_nonfinite_step, triggers
from .test_keep import assert_same_at_held_steps, held_steps

torch = pytest.importorskip("torch")
from steptrace.adapters.torch import recorder  # noqa: E402
from steptrace.adapters.torch.buffers import Layout  # noqa: E402

from . import torch_nets  # noqa: E402


def cnn_loop(
    out, name, *, dtype=None, epochs=5, blow_up_at=None, nan_grad_at=None, call_at=None, **keep
):
    """The issue's CNN, narrower (16 images, batches of 4, Adam); at ``blow_up_at`` Adam's
    learning rate becomes 1e30 (float32: NaN and ±inf a few steps later); at ``nan_grad_at``
    one gradient is NaN (the new weights are, under a finite loss); after step ``call_at`` the
    loop fires its flight recorder (``rec.trigger``)."""
    net = torch_nets.small_cnn()
    net.model.to(dtype or torch.float32)  # the same parameters, which Adam holds
    net.x = net.x.to(dtype or torch.float32)
    with steptrace.torch.record(net.model, net.optimizer, out=out, name=name, loss=net.loss,
                                **keep) as rec:  # fmt: skip
        step = 0
        for _ in range(epochs):
            for i in range(0, len(net.x), net.batch):
                if step == blow_up_at:
                    net.optimizer.param_groups[0]["lr"] = 1e30
                xb, yb = net.x[i : i + net.batch], net.y[i : i + net.batch]
                net.optimizer.zero_grad()
                per_sample = net.per_sample(net.model(xb), yb)
                per_sample.mean().backward()
                if step == nan_grad_at:
                    net.model[0].weight.grad.view(-1)[0] = float("nan")
                rec.step(xb, yb, per_sample)
                net.optimizer.step()
                if step == call_at:
                    rec.trigger("the validation loss rose")
                step += 1
    return rec


@pytest.fixture
def light_steps(monkeypatch):
    """How many steps were not captured whole (the checks vouched for their figures)."""
    seen = {"light": 0, "refused": 0}
    light = Layout._light

    def counted(self, flat, m):
        done = light(self, flat, m)
        seen["light" if done else "refused"] += 1
        return done

    monkeypatch.setattr(Layout, "_light", counted)
    return seen


def assert_same_figures(sampled, full) -> None:
    pd.testing.assert_frame_equal(steptrace.load_scalars(sampled.path),
                                  steptrace.load_scalars(full.path), check_exact=True)  # fmt: skip


@pytest.mark.parametrize(
    ("dtype", "keep", "held"),
    [
        ("float32", {"every": 3}, [0, 3, 6, 9, 12, 15, 18]),
        ("float64", {"steps": "2-4,11"}, [2, 3, 4, 11]),
        ("float32", {"every": 7, "steps": "5", "tensors": ["loss", "o*", "w*_after"]},
         [0, 5, 7, 14]),
    ],
)  # fmt: skip
def test_the_steps_not_held_are_not_copied_and_every_figure_is_the_full_runs(
    traces, light_steps, dtype, keep, held
):
    full = cnn_loop(traces, "full", dtype=getattr(torch, dtype))
    assert light_steps["light"] == 0  # everything recorded: every step captured whole
    sampled = cnn_loop(traces, "sampled", dtype=getattr(torch, dtype), **keep)
    assert light_steps == {"light": 20 - len(held), "refused": 0}
    assert held_steps(sampled) == held
    assert_same_at_held_steps(sampled, full)
    assert_same_figures(sampled, full)
    assert steptrace.verify(sampled.path).ok
    # The run's summary is of every step.
    assert sampled.summary.steps == full.summary.steps == 20
    assert sampled.summary.final_loss == full.summary.final_loss


def test_a_run_that_goes_non_finite_counts_its_values_and_why_names_the_step(traces, light_steps):
    full = cnn_loop(traces, "full", blow_up_at=9)
    step = first_nonfinite_step(full.path)
    assert 9 <= step < 19, step
    sampled = cnn_loop(traces, "sampled", blow_up_at=9, every=4)
    # The steps whose values are not all finite (or may overflow) are captured whole.
    assert light_steps["refused"] >= 1 and light_steps["light"] >= 5
    figures = steptrace.load_scalars(sampled.path)
    counts = figures.filter(like="nonfinite").to_numpy().sum(axis=1)
    assert counts[:step].sum() == 0 and counts[step] > 0
    assert_same_figures(sampled, full)
    assert_same_at_held_steps(sampled, full)
    found = first_nonfinite(sampled.path)
    assert found.step == step == first_nonfinite_step(sampled.path)
    assert found.held == (step % 4 == 0)
    assert sampled.summary.diverged_at == full.summary.diverged_at
    assert sampled.summary.diverged_why == full.summary.diverged_why


def test_a_plain_stack_still_captures_every_step(traces, light_steps):
    torch_nets_loop = torch_nets.series_cnn()  # plain SGD on the series' layers: no step_grad
    with steptrace.torch.record(torch_nets_loop.model, torch_nets_loop.optimizer, out=traces,
                                name="plain", every=2) as rec:  # fmt: skip
        torch_nets.train(torch_nets_loop, 2, rec)
    assert light_steps == {"light": 0, "refused": 0}
    assert np.array_equal(held_steps(rec), np.arange(0, rec.run.steps, 2))


@pytest.fixture
def made(monkeypatch):
    """The steps whose trace values the recorder made, chunk by chunk."""
    steps: list[int] = []
    make = recorder.chunk_values

    def counted(graph, optimizer, tensors, chunk):
        steps.append(len(chunk.m))
        return make(graph, optimizer, tensors, chunk)

    monkeypatch.setattr(recorder, "chunk_values", counted)
    return steps


@pytest.mark.parametrize(
    ("dtype", "keep", "held"),
    [
        ("float32", {"keep_last": 3}, [17, 18, 19]),
        ("float64", {"keep_last": 4, "every": 6}, [0, 6, 12, 16, 17, 18, 19]),
        ("float32", {"keep_last": 2, "trigger": "loss_spike:1.0001"}, None),
        ("float64", {"keep_last": 3, "call_at": 8}, [6, 7, 8, 17, 18, 19]),
        (
            "float32",
            {"keep_last": 4, "tensors": ["loss", "o*", "w*_after"], "layers": [2, 8]},
            [16, 17, 18, 19],
        ),
    ],
)
def test_a_flight_recorder_makes_the_values_of_the_steps_it_writes_alone(
    traces, light_steps, made, dtype, keep, held
):
    full = cnn_loop(traces, "full", dtype=getattr(torch, dtype))
    made.clear()
    flight = cnn_loop(traces, "flight", dtype=getattr(torch, dtype), **keep)
    # Every step is copied (a window may come) and known by its figures ...
    assert light_steps == {"light": 20, "refused": 0}
    # ... and only the steps written are made the trace's values (in the writer's thread).
    kept = held_steps(flight)
    assert sum(made) == len(kept)
    if held is not None:
        assert kept == held
    else:  # a loss spike fires whenever the loss tops its lowest so far by 0.01 %
        fired = [f for f in triggers(flight) if f["kind"] == "loss_spike"]
        assert fired and len(kept) < 20
        assert {f["step"] for f in fired} <= set(kept)
    assert_same_at_held_steps(flight, full)
    assert_same_figures(flight, full)
    assert steptrace.verify(flight.path).ok


def test_a_flight_recorder_of_a_run_gone_non_finite_writes_the_steps_up_to_it(
    traces, monkeypatch, made
):
    full = cnn_loop(traces, "full", blow_up_at=9)
    step = first_nonfinite_step(full.path)
    refused: list[int] = []  # the steps the checks cannot vouch for
    light = Layout._light

    def watched(self, parts, m):
        done = light(self, parts, m)
        if not done:
            refused.append(self.written_steps)
        return done

    monkeypatch.setattr(Layout, "_light", watched)
    made.clear()
    flight = cnn_loop(traces, "flight", blow_up_at=9, keep_last=5)
    fired = triggers(flight)
    assert (fired[0]["kind"], fired[0]["step"]) == ("nonfinite", step)
    kept = held_steps(flight)
    assert kept[:5] == list(range(step - 4, step + 1)) and kept[-1] == 19
    # The steps the checks cannot vouch for are made the trace's values at once (their
    # figures are their rows'), the others only if a window writes them: each step once.
    assert refused and min(refused) <= step
    assert sum(made) == len(set(refused) | set(kept))
    assert_same_at_held_steps(flight, full)
    assert_same_figures(flight, full)
    found = first_nonfinite(flight.path)
    assert found.step == step and found.held


@pytest.mark.parametrize("keep", [{"every": 4}, {"keep_last": 3}], ids=str)
def test_weights_gone_non_finite_on_a_step_known_by_its_figures_are_the_summarys_divergence(
    traces, keep
):
    run = cnn_loop(traces, "nan", nan_grad_at=5, **keep)
    assert np.isfinite(steptrace.load_scalars(run.path)["loss"][:6]).all()
    assert (run.summary.diverged_at, run.summary.diverged_why) == (5, "weights are not finite")


def test_a_declared_plan_places_the_steps_not_held(traces, light_steps):
    runs = []
    for name, keep in (("full", {}), ("sampled", {"every": 5})):
        net = torch_nets.small_cnn()
        plan = {"dataset": (net.x, net.y), "epochs": 3, "batch_size": net.batch}
        with steptrace.torch.record(net.model, net.optimizer, out=traces, name=name,
                                    loss=net.loss, **plan, **keep) as rec:  # fmt: skip
            torch_nets.train(net, 3, rec)
        runs.append(rec)
    full, sampled = runs
    assert light_steps == {"light": 9, "refused": 0}
    assert sampled.status == "complete" and held_steps(sampled) == [0, 5, 10]
    assert_same_at_held_steps(sampled, full)
    assert_same_figures(sampled, full)
    assert sampled.summary == full.summary


@pytest.mark.parametrize(
    ("keep", "wanted"),
    [({"every": 3}, [s % 3 == 0 for s in range(1, 8)]), ({"keep_last": 3}, [False] * 7)],
    ids=str,
)
def test_the_steps_not_held_go_without_autograds_gradient_to_the_image(
    traces, monkeypatch, keep, wanted
):
    """The convolution reads x alone: a step the run does not hold leaves ∂Loss/∂x out of the
    backward pass (a transposed convolution to the image); the steps held keep autograd's. A
    flight recorder's steps all go without it: a window's are given it by the formula."""
    asked: list[bool] = []
    wants = Layout.wants_x_grad

    def seen(self):
        asked.append(wants(self))
        return asked[-1]

    monkeypatch.setattr(Layout, "wants_x_grad", seen)
    sampled = cnn_loop(traces, "sampled", epochs=2, **keep)
    # Step 0's pass comes before the run is opened (it always has ∂Loss/∂x).
    assert asked == wanted
    full = cnn_loop(traces, "full", epochs=2)
    assert_same_at_held_steps(sampled, full)
    assert_same_figures(sampled, full)


@pytest.mark.parametrize("kind", ["conv", "strided conv", "linear"])
def test_the_first_layers_formula_gives_autograds_gradient_to_x_bit_for_bit(kind):
    """A step refused by the checks after going without ∂Loss/∂x is given it by the first
    layer's formula: autograd's own numbers (the rows then count its non-finite values)."""
    from types import SimpleNamespace

    from steptrace.adapters.torch.figures import FirstLayer

    torch.manual_seed(4)
    first = {"conv": torch.nn.Conv2d(2, 3, 3, padding=1),
             "strided conv": torch.nn.Conv2d(2, 3, 3, stride=2, padding=2, dilation=2),
             "linear": torch.nn.Linear(5, 4)}[kind]  # fmt: skip
    x = (torch.randn(6, 2, 7, 7) if kind != "linear" else torch.randn(6, 5)).requires_grad_()
    o = first(x)
    o.retain_grad()
    (torch.tanh(o) * torch.randn(o.shape)).sum().backward()
    formula = FirstLayer(SimpleNamespace(module=first), first.weight, 0, 0)  # type: ignore[arg-type]
    assert torch.equal(formula.d1(o.grad, x.shape), x.grad)


def test_a_flight_recorder_the_machine_cannot_hold_is_refused_in_one_line_with_nothing_written(
    traces, monkeypatch
):
    from steptrace.trace import flight

    # What the machine can give, made small: the CNN's step is ~15 kB of rows (4 rows).
    monkeypatch.setattr(flight, "available_memory", lambda: 4 * 1_000_000)
    with pytest.raises(steptrace.ConfigError, match="the machine can give") as info:
        cnn_loop(traces, "flight", keep_last=1_000)
    assert "\n" not in str(info.value) and "keep at most" in str(info.value)
    assert not traces.exists() or not list(traces.iterdir())
    assert cnn_loop(traces, "fits", keep_last=20).summary.steps == 20


def test_a_step_not_held_captured_whole_for_its_checks_has_its_statistics_before(
    traces, monkeypatch
):
    """A step the selection leaves out copies no batch norm statistics before its pass (when
    their versions say nothing changed them since the step before's after); when its checks
    then fail (its outputs NaN) it is captured whole, with the statistics it started from: the
    full run's, bit for bit, not whatever its buffer held (NaN here, as an empty one may)."""
    init, take = Layout.__init__, Layout.take
    seen: dict[str, dict[int, np.ndarray]] = {}

    def filled(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.steps.fill_(float("nan"))

    def taken(self):
        first = self.written()
        chunk = take(self)
        if chunk is not None:
            whole = chunk.full if chunk.full is not None else np.ones(len(chunk.m), bool)
            for i in np.flatnonzero(whole & ~(chunk.known if chunk.known is not None else 0)):
                seen[name][first + int(i)] = chunk.steps["bn3_before"][i].copy()
        return chunk

    monkeypatch.setattr(Layout, "__init__", filled)
    monkeypatch.setattr(Layout, "take", taken)
    for name, keep in (("full", {}), ("sampled", {"every": 4})):
        seen[name] = {}
        cnn_loop(traces, name, blow_up_at=5, epochs=3, **keep)
    full, sampled = seen["full"], seen["sampled"]
    whole_not_held = [s for s in sampled if s % 4]
    assert whole_not_held and whole_not_held[0] <= 7  # the steps gone NaN are captured whole
    for s in sampled:
        np.testing.assert_array_equal(sampled[s], full[s], err_msg=f"step {s}")
