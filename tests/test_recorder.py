"""Recording to disk: the article's example read back from Parquet, crash safety, limits."""

import json
import os
import signal
import time
from fractions import Fraction

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest

from steptrace import load_trace, load_traces, open_trace, record, sweep
from steptrace import verify as steptrace_verify
from steptrace.errors import ExactLimitError
from steptrace.numerics import EXACT_MAX_BITS
from steptrace.trace.writer import read_run_file, write_json_atomic

from .article import STEPS
from .conftest import steptrace_subprocess, wait_for_parts

MOVING = dict(init="0.005,-0.0002,0.0002", lr="1e-9", numerics="float64")


def exact_vector(row, name):
    return tuple(Fraction(row[f"{name}_{k}_exact"]) for k in (1, 2, 3))


#: The article's quantities under the trace's names (its weights are layer 2's, one row).
TRACE_NAME = {"grad": "grad_w2_1", "w_before": "w2_before_1", "w_after": "w2_after_1"}


def test_the_article_example_round_trips_through_parquet_exactly(traces):
    result = record("seed", lr="1", numerics="exact", out=traces)
    assert result.status == "complete"
    df = load_trace(result.path)
    assert list(df["step"]) == [0, 1, 2] and list(df["sample"]) == [0, 1, 2]
    for (_, row), expected in zip(df.iterrows(), STEPS, strict=True):
        for name in ("o2", "o3", "y", "d4", "d3"):
            assert Fraction(row[f"{name}_1_exact"]) == expected[name]
            assert row[f"{name}_1"] == float(Fraction(expected[name]))
        assert Fraction(row["loss_exact"]) == expected["loss"]
        for name in ("x", "o1", "d2", "d1", "grad", "w_before", "w_after"):
            assert exact_vector(row, TRACE_NAME.get(name, name)) == tuple(expected[name])
    last = df.iloc[2]
    assert last["w2_after_1_2_exact"] == "23199997/11600"  # 2000 - 3000/11 600 000
    assert last["w2_after_1_3_exact"] == "17400001/5800"  # 3000 + 1/5800
    value_cols = [c for c in df.columns if c[-2:] in ("_1", "_2", "_3") or c in ("lr", "loss")]
    assert all(df[c].dtype == np.float64 for c in value_cols)
    assert result.summary.final_loss == 0.5 and result.summary.diverged_at is None


def test_plain_pandas_and_pyarrow_read_a_run_folder_and_a_folder_of_runs(traces):
    runs = sweep(["1e-9", "1e-8"], out=traces, epochs=2, init=MOVING["init"], numerics="float64")
    for r in runs:
        assert len(pd.read_parquet(r.path)) == 6
    everything = pd.read_parquet(traces)
    assert len(everything) == 12
    assert sorted(everything["lr"].unique()) == [1e-9, 1e-8]
    assert pads.dataset(traces, format="parquet").count_rows() == 12
    files = {"_run.json", ".lock", "_scalars", "part-000000.parquet"}
    assert set(os.listdir(runs[0].path)) == files


def test_a_diverged_runs_metadata_is_strict_json_that_any_reader_takes(traces, tmp_path):
    """JSON has no NaN or infinity: a diverged run's summary writes them as texts, which
    steptrace reads back as floats (and older files with bare NaN still read)."""
    csv = tmp_path / "boom.csv"
    csv.write_text("a,b,y\n1,1,10\n1,2,12\n", encoding="utf-8")
    run = record(csv, lr="1e200", numerics="float64", init="0.1,0.1", epochs=1, out=traces)
    text = (run.path / "_run.json").read_text(encoding="utf-8")

    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    summary = json.loads(text, parse_constant=refuse)["summary"]  # as JavaScript would
    assert summary["diverged_at"] == 1 and summary["final_loss"] == "Infinity"
    stored = open_trace(run.path).summary
    assert stored is not None and stored["final_loss"] == np.inf
    assert run.summary.final_loss == np.inf
    assert steptrace_verify(run.path).ok
    old = json.loads(text)  # as the first sessions of steptrace 0.1 wrote it: bare Infinity
    (run.path / "_run.json").write_text(json.dumps(old).replace('"Infinity"', "Infinity"), "utf-8")
    assert open_trace(run.path).summary["final_loss"] == np.inf
    assert steptrace_verify(run.path).ok
    # NaN and -inf too; a name that reads "NaN" stays a name.
    info = {"name": "NaN", "summary": {"final_loss": np.nan, "min_loss": -np.inf}}
    write_json_atomic(tmp_path / "_run.json", info)
    strict = json.loads((tmp_path / "_run.json").read_text(), parse_constant=refuse)
    assert strict["summary"] == {"final_loss": "NaN", "min_loss": "-Infinity"}
    back = read_run_file(tmp_path / "_run.json")
    assert back["name"] == "NaN" and np.isnan(back["summary"]["final_loss"])
    assert back["summary"]["min_loss"] == -np.inf


def test_runs_never_overwrite_each_other(traces):
    a = record(out=traces)
    b = record(out=traces)
    c = record(out=traces, name="mine")
    d = record(out=traces, name="mine")
    assert [p.path.name for p in (a, b, c, d)] == [
        "seed-exact-lr1", "seed-exact-lr1-2", "mine", "mine-2",
    ]  # fmt: skip
    assert len({open_trace(p.path).run_id for p in (a, b, c, d)}) == 4


def test_load_traces_adds_each_runs_settings_as_columns(traces):
    record(out=traces, numerics="float32", lr="1/2", batch_size=2)
    record(out=traces, numerics="exact")
    df = load_traces(traces)
    assert set(df["numerics"]) == {"float32", "exact"}
    by_run = df.groupby("run").first()
    assert by_run.loc["seed-float32-lr1_2", "batch_size"] == 2
    assert by_run.loc["seed-float32-lr1_2", "lr_text"] == "1/2"
    assert set(by_run["status"]) == {"complete"}
    assert df["loss"].dtype == np.float64


def test_exact_runs_stop_cleanly_before_python_limits_and_keep_their_steps(traces):
    with pytest.raises(ExactLimitError, match="exact arithmetic stopped at step") as info:
        record(out=traces, lr="1e-7", epochs=400)
    trace = open_trace(traces / "seed-exact-lr1e-7")
    assert trace.status == "incomplete"
    assert str(info.value) == json.loads((trace.path / "_run.json").read_text())["reason"]
    df = trace.read()
    stopped_at = int(str(info.value).split("step ")[1].split(":")[0])
    assert list(df["step"]) == list(range(stopped_at))  # every step before the limit is kept
    last = df.iloc[-1]
    bits = max(Fraction(last[f"w2_after_1_{k}_exact"]).denominator.bit_length() for k in (1, 2, 3))
    assert bits <= EXACT_MAX_BITS


def test_a_recording_killed_with_sigkill_keeps_every_flushed_step(traces):
    proc = steptrace_subprocess(
        "record", "--out", traces, "--name", "killed", "--epochs", "3000000",
        "--numerics", "float64", "--init", MOVING["init"], "--lr", MOVING["lr"],
    )  # fmt: skip
    run = traces / "killed"
    wait_for_parts(proc, run, 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    df = pd.read_parquet(run)  # plain pandas, hidden temporary parts ignored
    assert len(df) > 0 and len(df) % 3 == 0
    assert df["step"].tolist() == list(range(len(df)))  # whole steps, none missing
    trace = open_trace(run)
    assert trace.status == "incomplete"
    assert json.loads((run / "_run.json").read_text())["status"] == "incomplete"
    # The weights chain: each step starts where the previous one ended (the weights before a
    # step are stored once, as the step before's weights after, and read back so).
    full = trace.read()
    assert (full["w2_before_1_1"].to_numpy()[1:] == full["w2_after_1_1"].to_numpy()[:-1]).all()
    assert full[df.columns].equals(df)


def test_a_live_recording_is_reported_running(traces):
    proc = steptrace_subprocess(
        "record", "--out", traces, "--name", "live", "--epochs", "3000000",
        "--numerics", "float64",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (traces / "live" / "_run.json").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.2)
        assert open_trace(traces / "live").status == "running"
    finally:
        proc.kill()
        proc.wait()
    assert open_trace(traces / "live").status == "incomplete"


def test_exact_runs_on_tiny_data_values_stop_cleanly_too(tmp_path, traces):
    # A denominator of 10^600 in the data makes every product grow fast; whatever grows first,
    # the run stops before a step with a value Python could not write as text.
    data = tmp_path / "tiny.csv"
    data.write_text("a,b,c,t\n1e-600,1,1,1\n2,1e-600,3,0\n")
    with pytest.raises(ExactLimitError, match="its values would need"):
        record(data, out=traces, name="tiny", lr="1e-7", epochs=50, init="1,1,1")
    df = load_trace(traces / "tiny")
    exact_cols = [c for c in df.columns if c.endswith("_exact")]
    for col in exact_cols:
        for text in df[col]:
            q = Fraction(text)
            assert max(q.numerator.bit_length(), q.denominator.bit_length()) <= EXACT_MAX_BITS
    assert steptrace_verify(traces / "tiny").problem is None
