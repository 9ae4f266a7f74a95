"""The flight recorder (trace/flight.py): the last N steps kept in memory and written when a
trigger fires (a non-finite value, a loss spike, the user's call, the run's end whatever ends it:
an exception, Ctrl-C, SIGTERM from a real signal to a real process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import steptrace
from steptrace.trace.flight import Flight, Trigger, parse_triggers
from steptrace.trace.run_buffer import RowBuffer

from .conftest import REPO, steptrace_subprocess, wait_for_parts
from .test_keep import assert_same_at_held_steps, held_steps
from .test_open_run import MLP, NUMPY, loop, numpy_step, seed_arrays

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

DIVERGES = {"numerics": "float64", "model": MLP, "epochs": 40, "lr": "1e3"}


def first_nonfinite_step(run) -> int:
    figures = steptrace.load_scalars(run)
    bad = ~np.isfinite(figures["loss"]) | (figures.filter(like="nonfinite").sum(axis=1) > 0)
    return int(figures["step"][bad].iloc[0])


def triggers(run) -> list[dict]:
    path = run.path if hasattr(run, "path") else run
    return json.loads((path / "_run.json").read_text())["triggers"]


# --- checks -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keep_last": 0}, "keep_last 0: keep the last N steps"),
        ({"keep_last": 2.5}, "keep_last 2.5"),
        ({"keep_last": 5, "after": -1}, "after -1"),
        ({"after": 3}, "give keep_last too"),
        ({"trigger": "nonfinite"}, "give keep_last too"),
        ({"keep_last": 5, "trigger": "spike"}, "trigger 'spike': give nonfinite, or loss_spike:K"),
        ({"keep_last": 5, "trigger": "loss_spike:1"}, "loss_spike:K with K > 1"),
        ({"keep_last": 10**12}, "the machine can give"),
    ],
)
def test_a_bad_flight_recorder_is_refused_in_one_line_with_nothing_written(traces, kwargs, message):
    with pytest.raises(steptrace.ConfigError, match=message) as info:
        steptrace.record("seed", out=traces, **kwargs)
    assert "\n" not in str(info.value)
    assert not traces.exists() or not list(traces.iterdir())


def test_triggers_parse():
    assert parse_triggers("nonfinite, loss_spike:10") == (
        Trigger("nonfinite"), Trigger("loss_spike", 10.0))  # fmt: skip
    assert str(Trigger("loss_spike", 10.0)) == "loss_spike:10"


# --- steptrace's own recorder ---------------------------------------------------------------------


def test_the_window_up_to_the_first_non_finite_step_and_the_end_are_written(traces):
    full = steptrace.record("seed", out=traces, name="full", **DIVERGES)
    run = steptrace.record("seed", out=traces, name="flight", keep_last=5, **DIVERGES)
    t = first_nonfinite_step(full)
    last = full.summary.steps - 1
    assert held_steps(run) == [*range(t - 4, t + 1), *range(last - 4, last + 1)]
    assert_same_at_held_steps(run, full)
    fired = triggers(run)
    # Fired once, though every step after it is NaN too; then the end of the run.
    assert [(f["kind"], f["step"], f["window"]) for f in fired] == [
        ("nonfinite", t, [t - 4, t]), ("end", last, [last - 4, last])]  # fmt: skip
    assert fired[0]["reason"].startswith("a non-finite value")
    assert run.status == "complete"
    assert len(steptrace.load_scalars(run)) == full.summary.steps


def test_a_loss_spike_writes_its_window_and_the_steps_after(traces):
    kw = {"numerics": "float64", "model": MLP, "epochs": 6, "lr": "0.1", "batch_size": 1}
    full = steptrace.record("seed", out=traces, name="full", **kw)
    figures = steptrace.load_scalars(full)
    lowest = figures["loss"].cummin().shift(1)
    spikes = figures["step"][figures["loss"] > 5 * lowest]
    assert len(spikes), "the run has a spike to find"
    t = int(spikes.iloc[0])
    run = steptrace.record("seed", out=traces, name="spiky", keep_last=3, after=2,
                           trigger="loss_spike:5", **kw)  # fmt: skip
    fired = triggers(run)
    assert (fired[0]["kind"], fired[0]["step"]) == ("loss_spike", t)
    assert fired[0]["window"] == [max(t - 2, 0), t + 2]
    assert set(range(max(t - 2, 0), t + 3)) <= set(held_steps(run))
    assert "above 5 × its lowest so far" in fired[0]["reason"]
    assert_same_at_held_steps(run, full)


def test_every_beside_keep_last_writes_each_step_once_in_order(traces):
    full = steptrace.record("seed", out=traces, name="full", **DIVERGES)
    run = steptrace.record("seed", out=traces, name="both", keep_last=4, every=10, **DIVERGES)
    t, last = first_nonfinite_step(full), full.summary.steps - 1
    expected = sorted({*range(0, last + 1, 10), *range(t - 3, t + 1), *range(last - 3, last + 1)})
    steps = steptrace.open_trace(run.path).read_table(["step"]).column("step").to_pylist()
    assert steps == sorted(steps)  # in order, each step's rows once
    assert held_steps(run) == expected
    assert_same_at_held_steps(run, full)


def test_the_flight_recorder_passes_each_step_once():
    """Unit: blocks of several steps, a trigger inside one, after reaching into the next."""
    written: list[int] = []

    def cut(block, mask):
        return {"step": block["step"][mask]} if mask.any() else None

    flight = Flight(3, 2, [Trigger("nonfinite")], cut, lambda s: s % 5 == 0)
    losses = {s: (np.nan if s in (7, 8, 13) else 1.0) for s in range(20)}
    for lo in range(0, 20, 4):
        steps = np.arange(lo, lo + 4)
        figures = {"step": steps, "loss": np.array([losses[s] for s in steps])}
        written += [int(s) for b in flight.take({"step": steps}, figures) for s in b["step"]]
    written += [int(s) for b in flight.finish("end", "the run ended") for s in b["step"]]
    # 0 and 5 regular; 5-7 (window of 7) + 8, 9 after; 10 regular; 11-13 + 14, 15; 17-19 the end.
    assert written == [0, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 18, 19]
    assert [f["step"] for f in flight.fired] == [7, 13, 19]


# --- open_run and PyTorch -------------------------------------------------------------------------


def test_an_open_run_fires_on_the_users_call_and_at_an_exception(traces):
    X, Y = seed_arrays()
    opened = {"model": MLP, "lr": "1e-7", "recorded_with": NUMPY}
    with steptrace.open_run(traces, "full", **opened) as full:
        loop(full, [[0, 1, 2]] * 5, X, Y)
    broke = pytest.raises(RuntimeError, match="the loop broke")
    with broke, steptrace.open_run(traces, "user", keep_last=2, **opened) as run:
        params = loop(run, [[0, 1, 2]] * 2, X, Y)  # steps 0-5
        run.trigger("why")  # after step 5
        loop(run, [[0, 1, 2]] * 2, X, Y, params=params)  # steps 6-11
        raise RuntimeError("the loop broke")
    fired = triggers(run)
    assert [(f["kind"], f["step"], f["reason"]) for f in fired] == [
        ("user", 5, "why"),
        ("exception", 11, "stopped by RuntimeError: the loop broke after step 11"),
    ]
    assert held_steps(run) == [4, 5, 10, 11]
    assert_same_at_held_steps(run, full)
    assert run.status == "incomplete"
    refused = pytest.raises(steptrace.ConfigError, match="needs a flight recorder")
    with steptrace.open_run(traces, "plain", **opened) as plain, refused:
        plain.trigger("why")


@pytest.mark.parametrize("full_buffers", [True, False], ids=["held", "copied"])
def test_an_open_runs_windows_are_its_rows_bit_for_bit_though_its_buffers_are_filled_again(
    traces, monkeypatch, full_buffers
):
    """A flight recorder reads each buffer's rows where they lie (a buffer handed over full;
    one mostly empty gives a copy and is filled again at once), and the buffer is filled again
    once its steps left the window: what the windows write is still the full run's."""
    from steptrace.trace import run as run_module

    made = []
    monkeypatch.setattr(run_module, "RowBuffer", lambda *a: made.append(RowBuffer(*a)) or made[-1])
    if full_buffers:  # a buffer of one step's rows (a wide row's are a few steps')
        monkeypatch.setattr(run_module, "buffer_rows", lambda columns: 1)
    X, Y = seed_arrays()
    opened = {"model": MLP, "lr": "1e-7", "recorded_with": NUMPY, "flush_seconds": 0}
    with steptrace.open_run(traces, "full", **opened) as full:
        loop(full, [[0, 1, 2]] * 8, X, Y)
    made.clear()
    with steptrace.open_run(traces, "flight", keep_last=4, **opened) as run:
        params = loop(run, [[0, 1, 2]] * 4, X, Y)  # steps 0-11, a buffer handed over each
        run.trigger("why")
        loop(run, [[0, 1, 2]] * 4, X, Y, params=params)  # steps 12-23
    # 24 buffers handed over, far fewer made (held: the window's, the queue's, the spares; 24
    # if none were filled again).
    assert len(made) <= (14 if full_buffers else 4)
    assert held_steps(run) == [*range(8, 12), *range(20, 24)]
    assert_same_at_held_steps(run, full)


def diverging_torch_loop(out, name, steps=60, **keep):
    """Trains quietly, until a bad schedule raises the learning rate at step 35."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    X = torch.randn(64, 3, dtype=torch.float64) * 10
    Y = torch.randn(64, 1, dtype=torch.float64)
    with steptrace.torch.record(model, opt, out=out, name=name, **keep) as rec:
        for s in range(steps):
            if s == 35:
                opt.param_groups[0]["lr"] = 5.0
            x, y = X[(2 * s) % 64 : (2 * s) % 64 + 2], Y[(2 * s) % 64 : (2 * s) % 64 + 2]
            opt.zero_grad()
            per_sample = ((model(x) - y) ** 2).sum(dim=1) / 2
            per_sample.mean().backward()
            rec.step(x, y, per_sample)
            opt.step()
    return rec


def test_a_diverging_pytorch_loop_holds_the_20_steps_up_to_its_first_non_finite_one(traces):
    full = diverging_torch_loop(traces, "full")
    t = first_nonfinite_step(full.path)
    assert 36 <= t < 45, t
    rec = diverging_torch_loop(traces, "flight", keep_last=20)
    fired = triggers(rec)
    assert (fired[0]["kind"], fired[0]["step"], fired[0]["window"]) == ("nonfinite", t, [t - 19, t])
    assert held_steps(rec) == [*range(t - 19, t + 1), *range(max(t + 1, 40), 60)]  # and the end
    assert_same_at_held_steps(rec, full)


# --- real signals ---------------------------------------------------------------------------------


LOOP = """
import sys, time
import numpy as np
import steptrace
sys.path.insert(0, {repo!r})
from tests.test_open_run import MLP, NUMPY, numpy_step, mlp_params, seed_arrays
X, Y = seed_arrays()
params = mlp_params()
try:
    with steptrace.open_run(sys.argv[1], "long", model=MLP, lr="1e-7", recorded_with=NUMPY,
                            keep_last=10, flush_seconds=0.1) as run:
        for s in range(10**6):
            values, params = numpy_step(params, X[[s % 3]], Y[[s % 3]], 1e-7)
            run.write_step(values)
            time.sleep(0.002)
except steptrace.SteptraceError as exc:
    print(exc, file=sys.stderr)
    sys.exit(exc.exit_code)
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.parametrize(
    ("sig", "kind", "code"), [(signal.SIGTERM, "sigterm", 143), (signal.SIGINT, "interrupted", 130)]
)
def test_sigterm_and_ctrl_c_write_the_window(tmp_path, sig, kind, code):
    script = tmp_path / "loop.py"
    script.write_text(textwrap.dedent(LOOP.format(repo=str(REPO))))
    out = tmp_path / "traces"
    process = subprocess.Popen([sys.executable, str(script), str(out)], stderr=subprocess.PIPE)
    wait_for_parts(process, out / "long" / "_scalars", 1, "scalars-*.parquet")
    assert not list((out / "long").glob("part-*.parquet"))  # nothing written while it goes well
    os.kill(process.pid, sig)
    assert process.wait(timeout=60) == code, process.stderr.read()
    fired = triggers(out / "long")
    assert [f["kind"] for f in fired] == [kind]
    last = fired[0]["step"]
    steps = sorted(set(steptrace.load_trace(out / "long")["step"]))
    assert steps == list(range(last - 9, last + 1))
    info = json.loads((out / "long" / "_run.json").read_text())
    assert info["status"] == "incomplete"
    assert steptrace.load_scalars(out / "long")["step"].iloc[-1] == last


def test_the_cli_flight_recorder_writes_its_window_at_sigterm(tmp_path):
    out = tmp_path / "traces"
    process = steptrace_subprocess(
        "record", "--numerics", "float64", "--lr", "1e-9", "--epochs", "3000000",
        "--keep-last", "7", "--flush-seconds", "0.1", "--out", out,
    )  # fmt: skip
    run = out / "seed-float64-lr1e-9"
    wait_for_parts(process, run / "_scalars", 1, "scalars-*.parquet")
    os.kill(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert err.strip().splitlines() == ["Error: terminated by SIGTERM"]
    fired = triggers(run)
    assert [f["kind"] for f in fired] == ["sigterm"]
    last = fired[0]["step"]
    assert sorted(set(steptrace.load_trace(run)["step"])) == list(range(last - 6, last + 1))
    assert numpy_step  # the loop's helpers stay importable for the subprocess


def test_a_pytorch_loop_fires_on_the_users_call(traces):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    X, Y = torch.randn(40, 3, dtype=torch.float64), torch.randn(40, 1, dtype=torch.float64)
    with steptrace.torch.record(model, opt, out=traces, name="t", keep_last=3) as rec:
        for s in range(20):
            opt.zero_grad()
            per_sample = ((model(X[2 * s : 2 * s + 2]) - Y[2 * s : 2 * s + 2]) ** 2).sum(dim=1)
            per_sample.mean().backward()
            rec.step(X[2 * s : 2 * s + 2], Y[2 * s : 2 * s + 2], per_sample)
            opt.step()
            if s == 9:
                rec.trigger("the validation loss rose")
    assert [(f["kind"], f["step"], f["reason"]) for f in triggers(rec)] == [
        ("user", 9, "the validation loss rose"), ("end", 19, "the run ended")]  # fmt: skip
    assert held_steps(rec) == [7, 8, 9, 17, 18, 19]


def test_a_sigterm_while_a_block_is_taken_waits_until_it_is_written(traces, monkeypatch):
    """SIGTERM arriving while the flight recorder takes a block (here, as it looks for
    triggers in it) waits until the block is written: the window is then the last steps, not
    every row since the steps passed before that block (the ring half updated)."""
    from steptrace.trace import flight

    fired, calls = flight.Watch.fired, []

    def fired_then_sigterm(self, figures):
        calls.append(len(figures["step"]))
        if len(calls) == 3:
            signal.raise_signal(signal.SIGTERM)
        return fired(self, figures)

    monkeypatch.setattr(flight.Watch, "fired", fired_then_sigterm)
    with pytest.raises(steptrace.SteptraceError, match="terminated by SIGTERM"):
        steptrace.record("seed", "1e-9", numerics="float64", epochs=300_000, keep_last=7,
                         out=traces, name="t")  # fmt: skip
    assert len(calls) == 3 and calls[2] > 7  # blocks of many steps
    fired_at = triggers(traces / "t")
    assert [f["kind"] for f in fired_at] == ["sigterm"]
    last = fired_at[0]["step"]
    held = sorted(set(steptrace.load_trace(traces / "t")["step"]))
    assert held == list(range(last - 6, last + 1))
