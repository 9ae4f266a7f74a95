"""load_tensor: any recorded value as an array, for people and for tests; and a stack's trace
read without steptrace by pandas, DuckDB and Polars."""

from __future__ import annotations

import json
from fractions import Fraction

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pytest

import steptrace
from steptrace import TraceError, load_tensor

from .conftest import REPO

GOLDEN = REPO / "traces" / "golden"
TWO_LAYER = REPO / "examples" / "two-layer.json"


@pytest.fixture
def two_layer(traces):
    return steptrace.record("seed", lr="1/1000", model=TWO_LAYER, epochs=2, batch_size=2,
                            out=traces)  # fmt: skip


def test_shapes_follow_the_layers(two_layer):
    rows = 6  # 2 epochs × 3 data inputs
    shapes = {
        "x": (rows, 3), "y": (rows, 1), "loss": (rows,), "lr": (rows,),
        "o1": (rows, 3), "o2": (rows, 2), "o3": (rows, 2), "o4": (rows, 1), "o5": (rows, 1),
        "d6": (rows, 1), "d5": (rows, 1), "d4": (rows, 2), "d3": (rows, 2), "d2": (rows, 3),
        "d1": (rows, 3), "w2_before": (rows, 2, 3), "w2_after": (rows, 2, 3),
        "grad_w2": (rows, 2, 3), "b2_before": (rows, 2), "b2_after": (rows, 2),
        "grad_b2": (rows, 2), "w4_after": (rows, 1, 2), "grad_w4": (rows, 1, 2),
    }  # fmt: skip
    for name, shape in shapes.items():
        assert load_tensor(two_layer, name).shape == shape, name


def test_exact_values_come_back_as_fractions_in_step_and_sample_order(two_layer):
    w = load_tensor(two_layer.path, "w2_before", exact=True)
    assert w.dtype == object and isinstance(w[0, 1, 2], Fraction)
    F = Fraction
    assert w[0].tolist() == [[F(1, 200), F(-3, 11600), F(1, 5800)],
                             [F(-1, 1000), F(1, 2000), F(-1, 4000)]]  # fmt: skip
    after = load_tensor(two_layer.path, "w2_after", exact=True)
    assert (after[1] == after[0]).all() and (after[1] == w[2]).all()  # a batch of two, then on
    floats = load_tensor(two_layer.path, "w2_after")
    assert floats.dtype == np.float64
    assert floats[0, 1, 2] == float(after[0, 1, 2])


def test_steps_read_only_what_is_asked(two_layer):
    assert load_tensor(two_layer, "loss", steps=(0, 1)).shape == (2,)  # a batch of two
    assert load_tensor(two_layer, "loss", steps=(1, 2)).shape == (1,)  # the epoch's last row


def test_version_1_traces_read_under_version_2_names():
    path = GOLDEN / "article-exact.parquet"
    assert load_tensor(path, "w2_after").shape == (3, 1, 3)
    assert load_tensor(path, "d4").shape == (3, 1)
    w = load_tensor(path, "w2_after", exact=True)[2, 0]
    assert w.tolist() == [Fraction(1, 200), Fraction(23199997, 11600), Fraction(17400001, 5800)]


def test_float32_runs_give_the_runs_own_numbers(traces):
    run = steptrace.record("seed", numerics="float32", out=traces)
    o2 = load_tensor(run, "o2")
    assert o2.dtype == np.float32 and o2[0, 0] == np.float32(float.fromhex("0x1.6p-26"))


def test_unknown_names_and_exact_from_a_float_run_are_refused_clearly(two_layer, traces):
    with pytest.raises(TraceError, match="no tensor 'w3_after' in this trace \\(it has: lr, x"):
        load_tensor(two_layer, "w3_after")
    run = steptrace.record("seed", numerics="float64", out=traces)
    with pytest.raises(TraceError, match="is a float64 run: it has no exact values"):
        load_tensor(run, "x", exact=True)


def test_pandas_duckdb_and_polars_read_a_stack_without_steptrace(two_layer):
    folder = two_layer.path
    frame = pd.read_parquet(folder)
    assert len(frame) == 6 and "w4_after_1_2" in frame and "b2_after_2_exact" in frame
    # Each value stored once (docs/trace-format.md): δ1 is δ2, grad_b2 is δ3, and the
    # parameters before a step are the ones after the step before.
    assert not {"d1_1", "grad_b2_1", "w4_before_1_2"} & set(frame.columns)
    full = steptrace.load_trace(folder)
    assert (full["d1_1"] == frame["d2_1"]).all() and (full["grad_b2_1"] == frame["d3_1"]).all()
    parts = str(folder / "*.parquet")
    got = duckdb.sql(
        "SELECT step, w, lag(w) OVER (ORDER BY step) AS before FROM ("
        f"SELECT step, first(w4_after_1_2) AS w FROM read_parquet('{parts}') GROUP BY step) "
        "ORDER BY step"
    ).fetchall()
    assert [s for s, _, _ in got] == [0, 1, 2, 3]
    assert got[-1][1] == frame["w4_after_1_2"].iloc[-1]
    befores = full.groupby("step")["w4_before_1_2"].first().tolist()
    assert [b for _, _, b in got][1:] == befores[1:]
    # Step 0's come from the first part's footer, which DuckDB reads too.
    ((entry,),) = duckdb.sql(
        f"SELECT value FROM parquet_kv_metadata('{folder / 'part-000000.parquet'}') "
        "WHERE key = 'steptrace.before'"
    ).fetchall()
    assert json.loads(entry)["values"]["w4_before_1_2"] == befores[0]
    polars = pl.read_parquet(parts)
    assert polars.shape == frame.shape
    assert polars["o2_2"].to_list() == frame["o2_2"].tolist()
