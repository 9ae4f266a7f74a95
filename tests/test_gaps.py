"""Traces with gaps (a run of every N-th step, of ranges, a flight recorder's windows, some
tensors) in every tool: replay, diff, verify, export, summary."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import steptrace

from .test_keep import torch_loop
from .test_open_run import MLP

RUN = {"numerics": "float64", "model": MLP, "lr": "0.1", "batch_size": 1}


@pytest.fixture
def runs(traces):
    return {
        "full": steptrace.record("seed", out=traces, name="full", epochs=100, **RUN),
        "every": steptrace.record("seed", out=traces, name="every", epochs=100, every=100, **RUN),
        "ranges": steptrace.record(
            "seed", out=traces, name="ranges", epochs=100, steps="5-9,120-121", **RUN
        ),
        "tensors": steptrace.record(
            "seed", out=traces, name="tensors", epochs=100, tensors=["loss", "o*"], **RUN
        ),
    }


def tamper(run, step: int, column: str, value: float) -> None:
    """Change one recorded value of ``step`` in the part holding it (footer kept)."""
    for part in sorted(run.path.glob("part-*.parquet")):
        table = pq.read_table(part)
        steps = table.column("step").to_numpy()
        if step not in steps:
            continue
        values = table.column(column).to_numpy().copy()
        values[np.flatnonzero(steps == step)[0]] = value
        i = table.schema.get_field_index(column)
        table = table.set_column(i, table.schema.field(i), pa.array(values))
        pq.write_table(table, part)
        return
    raise AssertionError(f"no step {step}")


def test_replay_moves_over_the_steps_held_and_names_the_ones_it_lacks(runs, run_cli):
    result = run_cli("replay", str(runs["every"].path), "--step", "101")
    assert result.exit_code != 0
    assert result.output.strip() == (
        "Error: step 101 is not recorded: this run holds every 100th step (the nearest: 100, 200)"
    )
    shown = run_cli("replay", str(runs["every"].path), "--from", "0", "--to", "250")
    assert shown.exit_code == 0, shown.output
    headers = [line for line in shown.output.splitlines() if line.startswith("Step ")]
    assert [h.split(" · ")[0] for h in headers] == ["Step 0", "Step 100", "Step 200"]
    ranges = run_cli("replay", str(runs["ranges"].path), "--step", "50")
    assert "this run holds steps 5-9, 120-121 (the nearest: 9, 120)" in ranges.output


def test_diff_compares_the_steps_both_runs_hold_and_says_how_many(runs, run_cli):
    same = steptrace.compare_traces(runs["every"].path, runs["full"].path)
    assert same.identical and same.steps_held == (3, 3, 300)
    assert same.rows_compared == 3
    text = run_cli("diff", str(runs["every"].path), str(runs["full"].path)).output
    assert "Compared the 3 steps both runs hold (A holds 3, B holds 300)" not in text
    assert "Compared the 3 steps both runs hold (A holds 3, B 300)" in text
    both = steptrace.compare_traces(runs["every"].path, runs["ranges"].path)
    assert both.steps_held == (0, 3, 7) and both.rows_compared == 0
    some = steptrace.compare_traces(runs["tensors"].path, runs["full"].path)
    assert some.identical and len(some.columns) == 10
    other = steptrace.record("seed", out=runs["full"].path.parent, name="other", epochs=100,
                             **{**RUN, "lr": "0.2"})  # fmt: skip
    differs = steptrace.compare_traces(runs["every"].path, other.path, ignore=["lr", "lr_exact"])
    assert not differs.identical and differs.first.step == 0 and not differs.only_b
    data = json.loads(run_cli("diff", "--json", str(runs["every"].path),
                              str(runs["full"].path)).output)  # fmt: skip
    assert data["steps_held"] == [3, 3, 300]


def test_verify_checks_every_step_held_and_finds_a_changed_value(runs):
    for name in ("every", "ranges"):
        report = steptrace.verify(runs[name].path)
        assert report.ok, str(report)
        assert "not recomputed: the steps it does not hold" in str(report)
    assert steptrace.verify(runs["every"].path).steps == 3
    # A value of a held step changed: the recomputation finds it.
    tamper(runs["ranges"], 121, "o4_1", 12.5)
    report = steptrace.verify(runs["ranges"].path)
    assert not report.ok and report.problem.step == 121 and report.problem.column == "o4_1"
    # A held step's update: w_after changed.
    tamper(runs["every"], 200, "w4_after_1_2", 3.0)
    report = steptrace.verify(runs["every"].path)
    assert not report.ok and report.problem.step == 200


def test_verify_finds_a_step_the_selection_does_not_hold_and_a_wrong_figure(runs, traces):
    run = runs["ranges"]
    tamper(run, 8, "step", 11)  # step 8's row says 11: not where the plan puts it
    report = steptrace.verify(run.path)
    assert not report.ok and "the plan puts" in str(report.problem)
    again = steptrace.record("seed", out=traces, name="again", epochs=100, steps="5-9", **RUN)
    figures = next((again.path / "_scalars").glob("*.parquet"))
    table = pq.read_table(figures)
    loss = table.column("loss").to_numpy().copy()
    loss[7] += 1.0
    table = table.set_column(1, table.schema.field(1), pa.array(loss))
    pq.write_table(table, figures)
    report = steptrace.verify(again.path)
    assert not report.ok and report.problem.step == 7 and "per-step figures" in str(report)


def test_verify_of_some_tensors_places_the_rows_and_says_the_values_are_not_recomputed(runs):
    report = steptrace.verify(runs["tensors"].path)
    assert report.ok, str(report)
    assert "not recomputed: its values (it holds only some tensors)" in str(report)
    assert "the steps it does not hold" not in str(report)


def test_a_flight_recorders_run_and_an_exact_sampled_run_verify(traces):
    flight = steptrace.record("seed", out=traces, name="f", keep_last=4,
                              **{**RUN, "lr": "1e3", "epochs": 40})  # fmt: skip
    assert steptrace.verify(flight.path).ok, str(steptrace.verify(flight.path))
    exact = steptrace.record("seed", lr="1", epochs=4, out=traces, name="x", every=3)
    report = steptrace.verify(exact.path)
    assert report.ok and report.tolerance is None, str(report)


def test_a_sampled_pytorch_run_verifies(traces, monkeypatch):
    rec = torch_loop(traces, "t", every=2)  # a stack of the series' layers: recomputed
    report = steptrace.verify(rec.path)
    assert report.ok and report.steps == 3 and report.tolerance is not None, str(report)
    assert "its values" not in str(report)
    tamper(rec, 2, "o2_1", 0.5)
    assert not steptrace.verify(rec.path).ok
    # Adam: the optimizer's state makes it a network of its own, whose held steps are placed.
    import torch

    real_sgd = torch.optim.SGD
    monkeypatch.setattr(torch.optim, "SGD", lambda params, lr: torch.optim.Adam(params, lr=lr))
    adam = torch_loop(traces, "adam", every=2)
    monkeypatch.setattr(torch.optim, "SGD", real_sgd)
    report = steptrace.verify(adam.path)
    assert report.ok, str(report)
    assert "its values (it holds a network of its own)" in str(report)


def test_export_and_summary_work_on_a_run_with_gaps(runs, run_cli, tmp_path):
    out = tmp_path / "every.html"
    result = run_cli("export", str(runs["every"].path), "--html", str(out))
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10_000
    summary = json.loads(run_cli("summary", "--json", str(runs["full"].path.parent)).output)
    by_run = {r["run"]: r for r in summary}
    for name in ("every", "ranges", "tensors"):
        assert by_run[name]["steps"] == by_run["full"]["steps"] == 300, name
        assert by_run[name]["final_loss"] == by_run["full"]["final_loss"], name
        assert by_run[name]["min_loss_step"] == by_run["full"]["min_loss_step"], name


def test_the_dashboards_curves_are_every_steps_and_a_step_not_held_is_named(runs):
    from steptrace import views

    every, full = steptrace.open_trace(runs["every"].path), steptrace.open_trace(runs["full"].path)
    ours, theirs = views.curve(every, "loss"), views.curve(full, "loss")
    assert ours.steps == theirs.steps == 300
    assert ours.frame.equals(theirs.frame)
    live = views.LiveRun(runs["every"].path).curve("loss", 10, 60)
    assert list(live.frame["step"]) == list(range(10, 61))
    assert live.frame["value"].equals(views.curve(full, "loss", 10, 60).frame["value"])
    with pytest.raises(steptrace.TraceError, match="step 101 is not recorded: this run holds "
                       "every 100th step"):  # fmt: skip
        views.step_view(every, 101)
    assert views.step_view(every, 100).step == 100
