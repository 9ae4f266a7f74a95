"""steptrace.open_run: the framework-neutral writer, driven by plain NumPy loops.

docs/recording-other-frameworks.md runs here too: every ``python`` block in order, each
followed by a ``text`` block printing exactly that.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import steptrace

from .conftest import REPO, wait_for_parts

DOC = REPO / "docs" / "recording-other-frameworks.md"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
MLP = REPO / "examples" / "mlp-3-2-1.json"
NUMPY = {"framework": "numpy", "version": np.__version__}


# --- the document ------------------------------------------------------------------------------


def test_the_document_runs_and_prints_what_it_says(tmp_path, monkeypatch):
    text = DOC.read_text(encoding="utf-8")
    fences = list(FENCE.finditer(text))
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__doc__"}
    ran = 0
    for i, fence in enumerate(fences):
        if fence.group(1).strip() != "python" or "steptrace.torch" in fence.group(2):
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(fence.group(2), f"{DOC.name}:{i}", "exec"), namespace)
        following = fences[i + 1] if i + 1 < len(fences) else None
        between = text[fence.end() : following.start()] if following else ""
        if following is not None and following.group(1) == "text" and not between.strip():
            assert out.getvalue() == following.group(2)
        ran += 1
    assert ran == 2
    run = steptrace.open_trace(tmp_path / "traces" / "numpy-mlp")
    assert run.meta["recorded_with"]["framework"] == "numpy"
    assert run.meta["shuffle"] is True and run.meta["seed"] == 1


# --- a NumPy loop -------------------------------------------------------------------------------


def mlp_params() -> list[np.ndarray]:
    spec = json.loads(MLP.read_text())
    from fractions import Fraction

    def arr(values):
        return np.array(values, dtype=object).astype(str)

    out = []
    for k in (1, 3):
        layer = spec["layers"][k]
        for part in ("weights", "biases"):
            out.append(np.vectorize(lambda t: float(Fraction(t)))(arr(layer[part])))
    return out


def numpy_step(params: list[np.ndarray], x: np.ndarray, y: np.ndarray, lr: float):
    """One step of the 3-2-1 network, every value steptrace records; the new parameters."""
    W2, b2, W4, b4 = params
    o2 = x @ W2.T + b2
    o3 = np.where(o2 >= 0, o2, 0.0)
    o4 = o3 @ W4.T + b4
    d5 = (o4 - y) / len(x)
    d4 = d5 @ W4
    d3 = np.where(o2 >= 0, d4, 0.0)
    d2 = d3 @ W2
    gw4, gw2 = d5[:, :, None] * o3[:, None, :], d3[:, :, None] * x[:, None, :]
    new = [W2 - lr * gw2.sum(0), b2 - lr * d3.sum(0), W4 - lr * gw4.sum(0), b4 - lr * d5.sum(0)]
    values = {
        "x": x, "y": y, "o1": x, "o2": o2, "o3": o3, "o4": o4,
        "loss": ((o4 - y) ** 2).sum(axis=1) / 2, "d5": d5, "d4": d4, "d3": d3, "d2": d2,
        "d1": d2, "grad_w2": gw2, "w2_before": W2, "w2_after": new[0], "grad_b2": d3,
        "b2_before": b2, "b2_after": new[1], "grad_w4": gw4, "w4_before": W4,
        "w4_after": new[2], "grad_b4": d5, "b4_before": b4, "b4_after": new[3],
    }  # fmt: skip
    return values, new


def seed_arrays() -> tuple[np.ndarray, np.ndarray]:
    ds = steptrace.seed_dataset()
    return np.array(ds.inputs, dtype=float), np.array(ds.outputs, dtype=float)


def loop(run, orders, X, Y, lr=1e-7, batch_size=1, params=None):
    """Steps over ``orders`` (one list of dataset rows per epoch) in batches."""
    params = params or mlp_params()
    for order in orders:
        for i in range(0, len(order), batch_size):
            rows = order[i : i + batch_size]
            values, params = numpy_step(params, X[rows], Y[rows], lr)
            run.write_step(values)
    return params


def open_mlp(out: Path, name: str, **kw):
    return steptrace.open_run(out, name, model=MLP, lr="1e-7", recorded_with=NUMPY, **kw)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_a_learned_plan_is_the_plan_steptrace_record_follows(traces, batch_size):
    X, Y = seed_arrays()
    with open_mlp(traces, "np") as run:
        loop(run, [[0, 1, 2]] * 4, X, Y, batch_size=batch_size)
    ref = steptrace.record("seed", lr="1e-7", numerics="float64", model=MLP, epochs=4,
                           batch_size=batch_size, out=traces, name="ref")  # fmt: skip
    ours, theirs = steptrace.open_trace(run.path), steptrace.open_trace(ref.path)
    for key in ("epochs", "batch_size", "steps", "steps_per_epoch", "shuffle"):
        assert ours.meta[key] == theirs.meta[key], key
    # The same tensors; the loop's are all stored, steptrace's own stores each value once.
    assert [(t.name, t.shape) for t in ours.tensors] == [(t.name, t.shape) for t in theirs.tensors]
    assert all(t.stored for t in ours.tensors) and not all(t.stored for t in theirs.tensors)
    assert ours.meta["dataset"]["rows"] == 3
    # Every part says the same: the plan was written into all of them when the run closed.
    import pyarrow.parquet as pq

    for part in run.path.glob("part-*.parquet"):
        footer = json.loads(pq.read_schema(part).metadata[b"steptrace"])
        assert footer["epochs"] == 4 and footer["dataset"] == ours.meta["dataset"]
    # The same data under its own names hashes the same.
    named = steptrace.Dataset("loop", ("x1", "x2", "x3"), ("y1",), ref_inputs(), ref_outputs())
    assert ours.meta["dataset"]["sha256"] == named.sha256
    keys = ["step", "epoch", "sample"]
    pd.testing.assert_frame_equal(ours.read(columns=keys), theirs.read(columns=keys))
    assert steptrace.compare_traces(ref, run, rtol=1e-12, ignore=["dataset"]).identical
    report = steptrace.verify(run.path)
    assert report.ok, str(report)
    assert f"(recorded with numpy {np.__version__})" in str(report)


def ref_inputs():
    return steptrace.seed_dataset().inputs


def ref_outputs():
    return steptrace.seed_dataset().outputs


def test_a_shuffle_of_its_own_is_recorded_as_one_epoch_of_the_inputs_fed(traces):
    X, Y = seed_arrays()
    orders = [[0, 1, 2], [2, 0, 1], [1, 2, 0]]
    with open_mlp(traces, "shuffled") as run:
        loop(run, orders, X, Y)
    trace = steptrace.open_trace(run.path)
    assert (trace.meta["epochs"], trace.meta["dataset"]["rows"]) == (1, 9)
    frame = trace.read(columns=["step", "epoch", "sample", "x_1"])
    assert frame["sample"].tolist() == list(range(9))
    assert frame["epoch"].tolist() == [0] * 9
    np.testing.assert_array_equal(frame["x_1"], X[[row for order in orders for row in order]][:, 0])
    assert steptrace.verify(run.path).ok


def test_a_loop_that_stops_inside_an_epoch_is_one_epoch_of_its_inputs(traces):
    X, Y = seed_arrays()
    with open_mlp(traces, "short") as run:
        loop(run, [[0, 1, 2], [0, 1]], X, Y)
    trace = steptrace.open_trace(run.path)
    assert (trace.meta["epochs"], trace.meta["dataset"]["rows"], trace.status) == (1, 5, "complete")
    assert steptrace.verify(run.path).ok


def test_a_given_dataset_names_the_rows(traces):
    X, Y = seed_arrays()
    with open_mlp(traces, "named", dataset=steptrace.seed_dataset()) as run:
        loop(run, [[0, 1, 2]] * 2, X, Y)
    meta = steptrace.open_trace(run.path).meta
    assert meta["dataset"]["features"] == ["broccoli", "tagada_strawberries", "workout_hours"]
    assert meta["dataset"]["sha256"] == steptrace.seed_dataset().sha256
    assert meta["epochs"] == 2
    stranger = r"data input x = \[1.0, 2.0, 3.0\], y = \[0.0\] is not a row of the dataset 'seed'"
    with (
        open_mlp(traces, "stranger", dataset=steptrace.seed_dataset()) as run,
        pytest.raises(steptrace.ConfigError, match=stranger),
    ):
        run.write_step(numpy_step(mlp_params(), np.array([[1.0, 2, 3]]), Y[:1], 1e-7)[0])


def test_a_given_dataset_keeps_its_exact_hash(traces):
    from fractions import Fraction

    tenths = [[Fraction(i, 10), Fraction(1, 10), Fraction(3, 10)] for i in range(3)]
    ds = steptrace.Dataset("tenths", ("a", "b", "c"), ("t",), tuple(map(tuple, tenths)),
                           ((Fraction(1, 10),),) * 3)  # fmt: skip
    X = np.array(tenths, dtype=float)
    Y = np.full((3, 1), 0.1)
    with open_mlp(traces, "tenths", dataset=ds) as run:
        loop(run, [[0, 1, 2]] * 2, X, Y)
    meta = steptrace.open_trace(run.path).meta
    # 1/10 is no float: the hash is the dataset's own, over its exact values.
    assert meta["dataset"]["sha256"] == ds.sha256
    assert (meta["epochs"], meta["dataset"]["rows"]) == (2, 3)


def test_a_dataset_holding_the_same_row_twice_keeps_its_rows_apart(traces):
    X, Y = seed_arrays()
    X, Y = X[[0, 1, 0]], Y[[0, 1, 0]]  # rows 0 and 2 alike
    with open_mlp(traces, "twice", dataset=(X, Y)) as run:
        loop(run, [[0, 1, 2]] * 2, X, Y)
    trace = steptrace.open_trace(run.path)
    assert (trace.meta["epochs"], trace.meta["dataset"]["rows"]) == (2, 3)
    assert trace.read(columns=["sample"])["sample"].tolist() == [0, 1, 2, 0, 1, 2]
    assert steptrace.verify(run.path).ok


# --- a plan given in advance ----------------------------------------------------------------------


def test_a_given_plan_is_followed_and_checked(traces):
    X, Y = seed_arrays()
    with open_mlp(traces, "planned", dataset=(X, Y), epochs=2, batch_size=2, shuffle=True,
                  seed=3) as run:  # fmt: skip
        plan = list(run.plan())
        params = mlp_params()
        for planned in plan:
            rows = list(planned.samples)
            values, params = numpy_step(params, X[rows], Y[rows], 1e-7)
            run.write_step(values, samples=rows)
    assert [len(p.samples) for p in plan] == [2, 1, 2, 1]
    ref = steptrace.record(steptrace.Dataset("data", ("x1", "x2", "x3"), ("y1",), ref_inputs(),
                                             ref_outputs()),
                           lr="1e-7", numerics="float64", model=MLP, epochs=2, batch_size=2,
                           shuffle=True, seed=3, out=traces, name="ref")  # fmt: skip
    assert steptrace.compare_traces(ref, run, rtol=1e-12, ignore=["dataset.source"]).identical
    assert steptrace.verify(run.path).ok


def test_a_step_off_the_plan_is_refused_saying_why(traces):
    X, Y = seed_arrays()
    params = mlp_params()
    run = open_mlp(traces, "strict", dataset=(X, Y), epochs=1, batch_size=2)
    with pytest.raises(steptrace.ConfigError, match="step 0 has 1 data input.*plan gives it 2"):
        run.write_step(numpy_step(params, X[:1], Y[:1], 1e-7)[0])
    with pytest.raises(
        steptrace.ConfigError,
        match=r"step 0: its data input x = \[200.0, 0.0, 0.0\], y = \[1.0\] is not dataset "
        r"row 0 \(x = \[100.0, 2000.0, 100.0\], y = \[0.0\]\)",
    ):
        run.write_step(numpy_step(params, X[[1, 0]], Y[[1, 0]], 1e-7)[0])
    with pytest.raises(steptrace.ConfigError, match="visits dataset row 1 where the run's plan"):
        run.write_step(numpy_step(params, X[:2], Y[:2], 1e-7)[0], samples=[1, 0])
    run.write_step(numpy_step(params, X[:2], Y[:2], 1e-7)[0])
    run.write_step(numpy_step(params, X[2:], Y[2:], 1e-7)[0])
    with pytest.raises(steptrace.ConfigError, match="step 2 is past the run's plan: 2 steps"):
        run.write_step(numpy_step(params, X[:2], Y[:2], 1e-7)[0])
    run.close()
    assert steptrace.open_trace(run.path).status == "complete"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda v: v.pop("d3"), "write_step: tensor 'd3' is missing"),
        (lambda v: v.update(o9=v["o2"]), "write_step: 'o9' is not a tensor this model records"),
        (lambda v: v.update(o2=v["o2"][:, :1]),
         r"write_step: o2 has shape \(1, 1\), expected \(1, 2\): 2 values per data input"),
        (lambda v: v.update(w2_after=v["w2_after"].T),
         r"w2_after has shape \(3, 2\), expected \(1, 2, 3\): 2×3 values per data input "
         r"\(or once for the step\)"),
    ],
)  # fmt: skip
def test_a_wrong_tensor_is_named_and_nothing_of_the_step_written(traces, change, message):
    X, Y = seed_arrays()
    values, _ = numpy_step(mlp_params(), X[:1], Y[:1], 1e-7)
    change(values)
    with open_mlp(traces, "wrong") as run:
        with pytest.raises(steptrace.ConfigError, match=message):
            run.write_step(values)
        assert run.steps == 0


def test_write_rows_writes_many_steps_as_write_step_writes_one(traces):
    X, Y = seed_arrays()
    with open_mlp(traces, "one-by-one") as one:
        loop(one, [[0, 1, 2]] * 2, X, Y, batch_size=2)
    steps, params = [], mlp_params()
    for rows in ([0, 1], [2], [0, 1], [2]):
        values, params = numpy_step(params, X[rows], Y[rows], 1e-7)
        steps.append({k: np.broadcast_to(v, (len(rows), *np.shape(v))) if k.endswith(
            ("_before", "_after")) else v for k, v in values.items()})  # fmt: skip
    flat = {k: np.concatenate([np.reshape(s[k], (len(s["x"]), -1)) for s in steps])
            for k in steps[0]}  # fmt: skip
    with open_mlp(traces, "at-once") as many:
        many.write_rows(flat, [2, 1, 2, 1])
    assert steptrace.compare_traces(one, many).identical


def test_float32_runs_hold_float32_values(traces):
    X, Y = seed_arrays()
    with open_mlp(traces, "f32", numerics="float32") as run:
        params = [p.astype(np.float32) for p in mlp_params()]
        loop(run, [[0, 1, 2]], X.astype(np.float32), Y.astype(np.float32), params=params)
    w = steptrace.load_tensor(run, "w2_after")
    assert w.dtype == np.float32
    assert steptrace.verify(run.path).ok


def test_what_open_run_refuses(traces):
    with pytest.raises(steptrace.ConfigError, match="exact runs are recorded by steptrace.record"):
        steptrace.open_run(traces, model=MLP, lr="0.1", numerics="exact")
    drawn = json.loads(MLP.read_text())
    del drawn["layers"][1]["weights"]
    with pytest.raises(steptrace.ConfigError, match="leaves some weights out"):
        steptrace.open_run(traces, model=drawn, lr="0.1", features=3)
    with pytest.raises(steptrace.ConfigError, match="shuffle=True needs the plan"):
        steptrace.open_run(traces, model=MLP, lr="0.1", shuffle=True)
    assert not list(traces.iterdir())


# --- nothing lost -------------------------------------------------------------------------------


def test_an_exception_marks_the_run_incomplete_with_the_reason_and_goes_on(traces):
    X, Y = seed_arrays()
    with pytest.raises(ZeroDivisionError), open_mlp(traces, "broken") as run:
        loop(run, [[0, 1, 2]], X, Y)
        1 / 0  # noqa: B018
    trace = steptrace.open_trace(run.path)
    assert trace.status == "incomplete"
    assert trace.reason == "stopped by ZeroDivisionError: division by zero after step 2"
    assert trace.num_rows == 3


def test_ctrl_c_marks_the_run_incomplete_and_the_handler_comes_back(traces):
    X, Y = seed_arrays()
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), open_mlp(traces, "ctrl-c") as run:
        loop(run, [[0, 1, 2]], X, Y)
        signal.raise_signal(signal.SIGINT)
        loop(run, [[0, 1, 2]], X, Y)  # never reached
    trace = steptrace.open_trace(run.path)
    assert (trace.status, trace.reason) == ("incomplete", "interrupted by Ctrl-C after step 2")
    assert signal.getsignal(signal.SIGINT) is handler


def test_ctrl_c_while_rows_are_placed_waits_for_them(traces, monkeypatch):
    X, Y = seed_arrays()
    from steptrace.trace import run_buffer

    put = run_buffer.RowBuffer.put

    def put_after_ctrl_c(self, *args):
        signal.raise_signal(signal.SIGINT)  # arrives in the middle of taking a step's rows
        put(self, *args)

    monkeypatch.setattr(run_buffer.RowBuffer, "put", put_after_ctrl_c)
    with pytest.raises(KeyboardInterrupt), open_mlp(traces, "held") as run:
        loop(run, [[0, 1, 2]] * 100, X, Y)
    trace = steptrace.open_trace(run.path)
    assert trace.status == "incomplete"
    # The step in hand was taken whole, then the loop stopped: every step taken is written.
    assert trace.num_rows == run.steps == 1
    assert trace.reason == "interrupted by Ctrl-C after step 0"


def test_a_write_error_in_the_writer_thread_stops_the_loop_and_keeps_the_flushed_steps(
    traces, monkeypatch
):
    X, Y = seed_arrays()
    from steptrace.trace import writer

    write, calls = writer.TraceWriter.write, []

    def disk_full_on_the_third(self, block):
        calls.append(1)
        if len(calls) == 3:
            raise steptrace.WriteError("cannot write trace: No space left on device")
        write(self, block)
        self.flush()

    monkeypatch.setattr(writer.TraceWriter, "write", disk_full_on_the_third)
    # flush_seconds=0: each step goes to the writer's thread as soon as it is taken.
    with (
        pytest.raises(steptrace.WriteError, match="No space left"),
        open_mlp(traces, "full", flush_seconds=0) as run,
    ):
        loop(run, [[0, 1, 2]] * 100, X, Y)
    trace = steptrace.open_trace(run.path)
    assert trace.status == "incomplete"
    assert "No space left on device" in (trace.reason or "")
    assert trace.num_rows == 2  # the two blocks written before it
    assert run.steps < 300  # the loop stopped, soon after


def test_a_run_without_steps_is_incomplete(traces):
    with open_mlp(traces, "empty") as run:
        pass
    trace = steptrace.open_trace(run.path)
    assert (trace.status, trace.reason, trace.num_rows) == (
        "incomplete", "no steps were recorded", 0,
    )  # fmt: skip


KILLED = """
import sys, json, numpy as np
sys.path.insert(0, {repo!r})
from tests.test_open_run import numpy_step, mlp_params, seed_arrays, NUMPY, MLP
import steptrace

X, Y = seed_arrays()
run = steptrace.open_run(sys.argv[1], "killed", model=MLP, lr="1e-7", recorded_with=NUMPY,
                         dataset=(X, Y), epochs=10**6, batch_size=2, flush_seconds=0.05)
params = mlp_params()
for planned in run.plan():
    rows = list(planned.samples)
    values, params = numpy_step(params, X[rows], Y[rows], 1e-7)
    run.write_step(values)
"""


def test_sigkill_mid_loop_leaves_every_flushed_step_readable(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(KILLED.format(repo=str(REPO)))
    out = tmp_path / "traces"
    process = subprocess.Popen([sys.executable, str(script), str(out)], stderr=subprocess.PIPE)
    run = out / "killed"
    wait_for_parts(process, run, 3)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    trace = steptrace.open_trace(run)
    assert trace.status == "incomplete"
    frame = pd.read_parquet(run)
    sizes = frame.groupby("step").size().to_numpy()
    np.testing.assert_array_equal(sizes, np.tile([2, 1], len(sizes))[: len(sizes)])
    report = steptrace.verify(run)
    assert report.ok and "incomplete" in str(report), str(report)


def test_a_run_of_another_framework_is_not_resumed_by_steptrace(traces):
    X, Y = seed_arrays()
    with pytest.raises(RuntimeError), open_mlp(traces, "np") as run:
        loop(run, [[0, 1, 2]], X, Y)
        raise RuntimeError("the loop broke")
    assert steptrace.open_trace(run.path).status == "incomplete"
    with pytest.raises(steptrace.ConfigError, match="recorded from a numpy training loop"):
        steptrace.resume(run.path)


def test_the_other_frameworks_version_is_not_a_difference_its_numbers_are(traces, run_cli):
    X, Y = seed_arrays()
    paths = []
    for name, version in (("old", "1.0"), ("new", "2.0")):
        with steptrace.open_run(traces, name, model=MLP, lr="1e-7",
                                recorded_with={**NUMPY, "version": version}) as run:  # fmt: skip
            loop(run, [[0, 1, 2]], X, Y)
        paths.append(run.path)
    assert steptrace.compare_traces(*paths).identical
    ok = run_cli("verify", paths[0], "--rtol", "1e-12", "--atol", "0")
    assert ok.exit_code == 0 and "within rtol 1e-12" in ok.output, ok.output


@pytest.mark.parametrize("keep", [{}, {"every": 2}, {"keep_last": 2}], ids=str)
def test_weights_gone_non_finite_under_a_finite_loss_are_the_summarys_divergence(traces, keep):
    """The summary sees new weights holding a NaN though the loss is finite, whatever the run
    keeps (its blocks' weights checked finite at once, or column by column)."""
    X, Y = seed_arrays()
    params = mlp_params()
    with open_mlp(traces, "np", **keep) as run:
        for s in range(6):
            values, params = numpy_step(params, X[[s % 3]], Y[[s % 3]], 1e-7)
            if s == 3:
                values["w2_after"] = values["w2_after"].copy()
                values["w2_after"].flat[1] = np.nan
            run.write_step(values)
    assert np.isfinite(steptrace.load_scalars(run)["loss"]).all()
    assert (run.summary.diverged_at, run.summary.diverged_why) == (3, "weights are not finite")


@pytest.mark.parametrize("wide", [True, False], ids=["wide", "narrow"])
def test_a_wide_runs_flushes_are_spaced_by_what_the_last_one_took(tmp_path, monkeypatch, wide):
    """A flush of a wide row (a footer naming every column, a row group cut short) costs much:
    the next comes no sooner than FLUSH_COST_RATIO times the last one's duration; a narrow
    run's flushes keep the run's pace."""
    import time

    from steptrace.trace import writer as writer_module

    monkeypatch.setattr(writer_module, "WIDE_COLUMNS", 10 if wide else 10**9)
    close_part = writer_module.TraceWriter._close_part

    def slow_close(self):
        time.sleep(0.05)  # a part of thousands of columns closing
        close_part(self)

    monkeypatch.setattr(writer_module.TraceWriter, "_close_part", slow_close)
    X, Y = seed_arrays()
    run = open_mlp(tmp_path, "paced", flush_seconds=0.01)
    deadline = time.monotonic() + 10
    while run._writer is None or run._writer.parts == 0:  # a flush, in the writer's thread
        assert time.monotonic() < deadline
        loop(run, [[0, 1, 2]], X, Y)  # a block, written once its flush is due
        run._hand_off()
        time.sleep(0.02)
    every = run._writer._flush_every
    run.close()
    if wide:
        assert every >= writer_module.FLUSH_COST_RATIO * 0.05
    else:
        assert every == 0.01
