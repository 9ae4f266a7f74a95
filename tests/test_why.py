"""``steptrace why`` (trace/why.py): a run's first non-finite value in the order a step computes
them, and what led there from the per-step figures; a line in ``summary``."""

from __future__ import annotations

import json

import numpy as np
import pytest

import steptrace
from steptrace.trace.why import first_nonfinite

from .test_flight import diverging_torch_loop, first_nonfinite_step
from .test_open_run import MLP, NUMPY, mlp_params, numpy_step, seed_arrays

DIVERGES = {"numerics": "float64", "model": MLP, "epochs": 40, "lr": "1e3"}


def test_the_first_non_finite_value_of_a_diverging_stack_and_what_led_there(traces, run_cli):
    run = steptrace.record("seed", out=traces, **DIVERGES)
    step = first_nonfinite_step(run)
    result = run_cli("why", str(run.path))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"first non-finite: step {step}, loss[0] = inf"
    # Every value the step computed before the loss is finite; the loss is not.
    trace = steptrace.open_trace(run.path)
    at = trace.read_table(["step"]).column("step").to_numpy() == step
    for name in ("x", "w2_before", "w4_before", "o1", "o2", "o3", "o4"):
        assert np.isfinite(steptrace.load_tensor(run.path, name)[at]).all(), name
    assert np.isinf(steptrace.load_tensor(run.path, "loss")[at][0])
    # What led there: the largest weight of layer 4 grew about ×1000 a step from the start.
    assert any(line.startswith("layer 4's largest |w| growing ×999 a step since step 0")
               for line in lines[1:])  # fmt: skip
    data = json.loads(run_cli("why", "--json", str(run.path)).output)
    assert {k: data[k] for k in ("step", "layer", "tensor", "index", "value")} == {
        "step": step, "layer": None, "tensor": "loss", "index": [0], "value": "inf"}  # fmt: skip


def test_the_forward_pass_comes_before_the_loss_and_the_backward_pass(traces, run_cli):
    """A loop's own values: at step 3, o4 of row 1 overflows; the loss and δ follow from it."""
    X, Y = seed_arrays()
    params = mlp_params()
    with steptrace.open_run(traces, "np", model=MLP, lr="1e-7", recorded_with=NUMPY) as run:
        for s in range(6):
            rows = [s % 3, (s + 1) % 3]
            values, params = numpy_step(params, X[rows], Y[rows], 1e-7)
            if s == 3:
                values["o4"] = values["o4"].copy()
                values["o4"][1, 0] = np.inf
                values["loss"] = np.array([values["loss"][0], np.inf])
                values["d5"] = values["d5"].copy()
                values["d5"][1, 0] = np.nan
            run.write_step(values)
    found = first_nonfinite(run.path)
    assert found.text().splitlines()[0] == (
        "first non-finite: step 3, layer 4 (linear) output o4[1, 0] = inf")  # fmt: skip
    assert (found.step, found.layer, found.tensor, found.index) == (3, 4, "o4", (1, 0))
    data = json.loads(run_cli("why", "--json", str(run.path)).output)
    assert data["tensor"] == "o4" and data["index"] == [1, 0] and data["layer"] == 4


def test_a_run_without_a_non_finite_value_says_so(traces, run_cli):
    run = steptrace.record("seed", out=traces, **{**DIVERGES, "lr": "0.1", "epochs": 2})
    result = run_cli("why", str(run.path))
    assert result.exit_code == 0
    assert result.output.strip() == f"no non-finite value in {run.path} (6 steps)"
    data = json.loads(run_cli("why", "--json", str(run.path)).output)
    assert data["step"] is None and data["value"] is None


def test_a_step_not_held_is_named_from_the_figures(traces):
    run = steptrace.record("seed", out=traces, every=50, **DIVERGES)
    found = first_nonfinite(run.path)
    step = first_nonfinite_step(run)
    assert found.step == step and not found.held and found.tensor is None
    assert found.headline() == (
        f"first non-finite: step {step} (its values are not recorded: this run holds every "
        "50th step); non-finite values in the loss"
    )


def test_a_diverging_pytorch_loop_flight_recorded_names_its_first_non_finite_value(traces):
    full = diverging_torch_loop(traces, "full")
    rec = diverging_torch_loop(traces, "flight", keep_last=20)
    step = first_nonfinite_step(rec.path)
    found = first_nonfinite(rec.path)
    assert found.step == step == first_nonfinite_step(full.path) and found.held
    # The value it names is the first non-finite one of the full run's step, in the same place.
    values = steptrace.load_tensor(full.path, found.tensor)
    steps = steptrace.open_trace(full.path).read_table(["step"]).column("step").to_numpy()
    rows = values[steps == step]
    assert np.isinf(rows[found.index]) or np.isnan(rows[found.index])
    for earlier in ("x", "o1", "o2"):
        assert np.isfinite(steptrace.load_tensor(full.path, earlier)[steps == step]).all()
    assert found.text().startswith(f"first non-finite: step {step}, ")


def test_summary_has_a_line_for_each_run_that_went_non_finite(traces, run_cli):
    bad = steptrace.record("seed", out=traces, name="bad", **DIVERGES)
    steptrace.record("seed", out=traces, name="good", **{**DIVERGES, "lr": "0.1", "epochs": 2})
    out = run_cli("summary", str(traces)).output
    step = first_nonfinite_step(bad)
    assert f"bad: first non-finite: step {step}, loss[0] = inf" in out.splitlines()
    assert not [line for line in out.splitlines() if line.startswith("good:")]


@pytest.mark.parametrize("name", ["nothing", "missing"])
def test_why_on_a_folder_that_is_no_run_is_one_line(run_cli, tmp_path, name):
    result = run_cli("why", str(tmp_path / name))
    assert result.exit_code != 0
    assert len(result.output.strip().splitlines()) == 1 and "Error:" in result.output
