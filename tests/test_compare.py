"""Comparing traces: alignment, exact texts, NaN, tolerances, selections, refusals, reports."""

import json
import math
from fractions import Fraction
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import steptrace
from steptrace import NewerFormatError, TraceError
from steptrace.compare.traces import (
    Tolerance,
    compare_traces,
    load_side,
    write_trace_file,
)

from .conftest import REPO

GOLDEN = REPO / "traces" / "golden"
MOVING = dict(numerics="float64", init="0.005,-0.0002,0.0002", lr="1e-7")


@pytest.fixture
def exact_run(traces: Path) -> Path:
    return steptrace.record("seed", numerics="exact", out=traces).path


@pytest.fixture
def float64_run(traces: Path) -> Path:
    return steptrace.record("seed", numerics="float64", out=traces).path


@pytest.fixture
def moving(traces: Path) -> Path:
    """Float64, three epochs, weights that change at every step."""
    return steptrace.record("seed", epochs=3, out=traces, name="moving", **MOVING).path


def test_exact_and_float64_part_at_step_0_in_o2(exact_run, float64_run):
    r = compare_traces(exact_run, float64_run)
    assert not r.identical
    assert (r.first.step, r.first.sample, r.first.column) == (0, 0, "o2_1")
    assert (r.first.a, r.first.b) == ("0", "-3.469446951953614e-17")
    assert r.first.difference == -3.469446951953614e-17
    assert [(m.key, m.a, m.b) for m in r.metadata] == [("numerics", "exact", "float64")]
    o2 = r.column_diffs[0]
    assert (o2.column, o2.differing, o2.compared) == ("o2_1", 2, 3)
    assert o2.max_abs == pytest.approx(1.1102230246251565e-16)
    assert o2.max_rel == math.inf  # exact 0 against a float that is not
    # At step 2 the float gate is closed, so nothing is learned: w2_after_1_2 parts there.
    w2 = next(d for d in r.column_diffs if d.column == "w2_after_1_2")
    assert (w2.first_step, w2.a, w2.b) == (2, "23199997/11600", "-0.0002586206896551724")


def test_two_recordings_of_the_same_run_are_identical(traces):
    a = steptrace.record("seed", out=traces, name="a", **MOVING).path
    b = steptrace.record("seed", out=traces, name="b", **MOVING).path
    r = compare_traces(a, b)  # run ids, names and creation times differ, and do not count
    assert r.identical
    assert r.first is None and r.column_diffs == [] and r.metadata == []
    assert r.rows_compared == 3 and len(r.columns) == 29
    assert (
        r.format().splitlines()[0] == "Traces are identical (29 columns × 3 rows, exact equality)."
    )


def test_exact_runs_compare_their_rational_text(exact_run):
    df = steptrace.load_trace(exact_run)
    changed = df.copy()
    # A change far below float64 resolution: only the exact text shows it.
    nudged = str(Fraction(23199997, 11600) + Fraction(1, 10**30))
    changed.loc[2, "w2_after_1_2_exact"] = nudged
    assert changed.loc[2, "w2_after_1_2"] == df.loc[2, "w2_after_1_2"]
    r = compare_traces(df, changed)
    assert [d.column for d in r.column_diffs] == ["w2_after_1_2"]
    assert (r.first.step, r.first.a, r.first.b) == (2, "23199997/11600", nudged)
    assert r.first.difference == 1e-30
    assert compare_traces(df, changed, atol=1e-29).identical


def test_exact_text_of_the_same_number_in_another_spelling_is_equal(exact_run):
    df = steptrace.load_trace(exact_run)
    other = df.copy()
    other.loc[2, "loss_exact"] = "2/4"
    assert compare_traces(df, other).identical


def test_nan_equals_nan_only_in_the_same_cell(moving):
    df = steptrace.load_trace(moving)
    a, b = df.copy(), df.copy()
    a.loc[4, "loss"] = b.loc[4, "loss"] = math.nan
    assert compare_traces(a, b).identical
    b.loc[5, "loss"] = math.nan
    r = compare_traces(a, b)
    loss = r.column_diffs[0]
    assert (loss.column, loss.differing, loss.first_step) == ("loss", 1, 5)
    assert loss.b == "nan" and loss.max_abs == math.inf


def test_tolerances_global_and_per_column(moving):
    df = steptrace.load_trace(moving)
    other = df.copy()
    other["o2_1"] = other["o2_1"] * (1 + 1e-12)
    other["loss"] = other["loss"] + 1e-9
    assert {d.column for d in compare_traces(df, other).column_diffs} == {"o2_1", "loss"}
    assert [d.column for d in compare_traces(df, other, rtol=1e-11).column_diffs] == ["loss"]
    assert compare_traces(df, other, rtol=1e-11, atol=1e-8).identical
    per_column = compare_traces(df, other, rtol=1e-11, tolerances={"loss": (0.0, 1e-8)})
    assert per_column.identical
    only_loss = compare_traces(df, other, tolerances={"loss": Tolerance(atol=1e-8)})
    assert [d.column for d in only_loss.column_diffs] == ["o2_1"]


def test_tolerance_for_a_column_not_compared_is_an_error(moving):
    with pytest.raises(TraceError, match="tolerance is given for 'nope'"):
        compare_traces(moving, moving, tolerances={"nope": (0.1, 0.0)})
    with pytest.raises(TraceError, match="rtol must be a finite number >= 0"):
        compare_traces(moving, moving, rtol=-1.0)


def test_columns_and_ignore_select_columns_tensors_families_and_settings(exact_run, float64_run):
    r = compare_traces(exact_run, float64_run, columns=["w_after", "loss"])
    assert r.columns == ["w2_after_1_1", "w2_after_1_2", "w2_after_1_3", "loss"]
    assert [d.column for d in r.column_diffs] == ["w2_after_1_2", "w2_after_1_3"]
    by_tensor = compare_traces(exact_run, float64_run, columns=["w2_after", "loss"])
    assert by_tensor.columns == r.columns
    assert compare_traces(exact_run, float64_run, columns=["w2_after_1_3"]).columns == [
        "w2_after_1_3"
    ]
    ignored = compare_traces(exact_run, float64_run, ignore=["o2_1", "d3", "numerics"])
    assert "o2_1" not in ignored.columns and "d3_1" not in ignored.columns
    assert ignored.metadata == []
    assert ignored.first.column == "d2_1"
    same = compare_traces(exact_run, float64_run, columns=["x", "y", "o1"], ignore=["numerics"])
    assert same.identical
    with pytest.raises(TraceError, match="no column 'o9_1' in either trace"):
        compare_traces(exact_run, float64_run, columns=["o9_1"])
    with pytest.raises(TraceError, match="nothing named 'o9_1' to ignore"):
        compare_traces(exact_run, float64_run, ignore=["o9_1"])


def test_rows_on_one_side_only(traces, moving):
    short = steptrace.record("seed", epochs=2, out=traces, name="short", **MOVING).path
    r = compare_traces(moving, short)
    assert r.column_diffs == []
    assert r.only_a == [(6, 0), (7, 1), (8, 2)] and r.only_b == []
    assert (r.first.step, r.first.kind) == (6, "only_a")
    assert [(m.key, m.a, m.b) for m in r.metadata] == [("epochs", 3, 2), ("steps", 9, 6)]
    assert "Rows in A only: 3 (step 6 sample 0 … step 8 sample 2)" in r.format()
    reverse = compare_traces(short, moving)
    assert reverse.only_b == [(6, 0), (7, 1), (8, 2)]


def test_first_divergence_is_the_earliest_row_then_the_first_column(moving):
    df = steptrace.load_trace(moving)
    other = df.copy()
    other.loc[4, "w2_after_1_3"] += 1.0
    other.loc[4, "loss"] += 1.0
    other.loc[7, "x_1"] += 1.0
    r = compare_traces(df, other)
    assert (r.first.step, r.first.column) == (4, "loss")
    assert [d.column for d in r.column_diffs] == ["loss", "w2_after_1_3", "x_1"]


def test_at_one_row_what_the_step_starts_from_comes_before_what_it_computes(moving):
    df = steptrace.load_trace(moving)
    other = df.copy()
    other.loc[4, "o2_1"] += 1.0
    other.loc[4, "w2_before_1_2"] += 1.0  # recorded after o2 in the file, but read before it
    r = compare_traces(df, other)
    assert (r.first.step, r.first.column) == (4, "w2_before_1_2")
    assert [d.column for d in r.column_diffs] == ["w2_before_1_2", "o2_1"]


def test_a_folder_of_several_runs_is_refused(traces, exact_run, float64_run):
    with pytest.raises(TraceError, match=r"is a folder of 2 runs \(seed-exact-lr1, seed-float64"):
        compare_traces(traces, exact_run)


def test_a_file_that_is_not_a_trace_is_refused(tmp_path, exact_run):
    text = tmp_path / "notes.parquet"
    text.write_text("not parquet")
    with pytest.raises(TraceError, match="not a readable Parquet file"):
        compare_traces(exact_run, text)
    with pytest.raises(TraceError, match="no trace at"):
        compare_traces(exact_run, tmp_path / "missing")
    with pytest.raises(TraceError, match="cannot compare a int as a trace"):
        compare_traces(exact_run, 3)


def test_a_version_1_golden_compares_with_a_version_2_run_under_version_2_names(exact_run):
    golden = GOLDEN / "article-exact.parquet"
    assert steptrace.open_trace(golden).v1 and not steptrace.open_trace(exact_run).v1
    r = compare_traces(golden, exact_run, columns=["w_after", "loss"])
    assert r.identical and r.columns == ["w2_after_1_1", "w2_after_1_2", "w2_after_1_3", "loss"]
    assert compare_traces(golden, exact_run).identical


def test_a_trace_in_a_newer_format_is_refused(tmp_path, exact_run):
    table = load_side(exact_run).read_table()
    meta = {**load_side(exact_run).meta, "format_version": "3.0"}
    newer = tmp_path / "newer.parquet"
    pq.write_table(table.replace_schema_metadata({"steptrace": json.dumps(meta)}), newer)
    with pytest.raises(NewerFormatError, match=r"newer.parquet uses trace format 3.0 .*upgrade"):
        compare_traces(exact_run, newer)


def test_missing_columns_are_refused(traces, tmp_path):
    csv = tmp_path / "two.csv"
    csv.write_text("a,b,y\n1,2,0\n3,4,1\n5,6,1\n")
    two = steptrace.record(csv, numerics="float64", init="0.1,0.1", out=traces).path
    three = steptrace.record("seed", numerics="float64", out=traces).path
    with pytest.raises(
        TraceError, match=r"column\(s\) x_3, o1_3, d2_3, d1_3, grad_w2_1_3, w2_before_1_3 …"
    ):
        compare_traces(three, two)
    with pytest.raises(TraceError, match="needs the columns step, sample"):
        compare_traces(three, steptrace.load_trace(three).drop(columns="sample"))


def test_duplicate_rows_are_refused(moving):
    df = steptrace.load_trace(moving)
    doubled = df.iloc[[0, 0, 1]]
    with pytest.raises(TraceError, match="several rows for step 0, sample 0"):
        compare_traces(df, doubled)


def test_result_is_jsonable(exact_run, float64_run):
    data = json.loads(json.dumps(compare_traces(exact_run, float64_run).to_dict()))
    assert data["identical"] is False
    assert data["first"]["column"] == "o2_1"
    assert data["column_diffs"][0]["max_rel"] == "inf"
    assert data["a"]["numerics"] == "exact" and data["b"]["rows"] == 3
    assert data["only_a"] == {"count": 0, "first": []}
    assert data["tolerance"] == {"rtol": 0.0, "atol": 0.0}


def test_a_run_written_as_one_file_reads_back_identical(tmp_path, exact_run):
    golden = tmp_path / "golden" / "article.parquet"
    write_trace_file(load_side(exact_run), golden)
    trace = steptrace.open_trace(golden)
    assert (trace.numerics, trace.num_rows, trace.is_exact) == ("exact", 3, True)
    assert compare_traces(golden, exact_run).identical
    assert list(golden.parent.iterdir()) == [golden]  # nothing left aside


def test_a_dataframe_written_as_one_file_is_a_readable_trace(tmp_path, moving):
    df = steptrace.load_trace(moving)
    path = tmp_path / "frame.parquet"
    write_trace_file(load_side(df), path)
    trace = steptrace.open_trace(path)
    assert (trace.numerics, trace.lr_text, trace.n_features) == ("float64", "1e-07", 3)
    r = compare_traces(path, df)
    assert r.identical and not r.metadata_compared
    assert r.format().splitlines()[-1] == (
        "Settings not compared: a DataFrame carries no run metadata."
    )


def test_report_text(exact_run, float64_run):
    text = compare_traces(exact_run, float64_run).format("exact", "float64", max_rows=3)
    lines = text.splitlines()
    assert lines[0] == "Traces differ."
    assert lines[1] == f"exact: {exact_run} (exact, α=1, 3 rows)"
    assert lines[2] == f"float64: {float64_run} (float64, α=1, 3 rows)"
    assert lines[3:] == [
        "First divergence: step 0, sample 0, column o2_1 (layer 2's output, neuron 1): "
        "exact 0, float64 -3.469446951953614e-17 (float64 - exact = -3.469446951953614e-17)",
        "Settings that differ:",
        "  numerics: exact 'exact', float64 'float64'",
        "Values that differ (exact equality): 12 of 29 columns, 3 rows compared",
        "  column  cells  first step  sample  exact   float64                 max abs   max rel",
        "  o2_1    2/3    0           0       0       -3.469446951953614e-17  1.11e-16  inf",
        "  d3_1    1/3    2           2       -1      0.0                     1         1",
        "  d2_1    1/3    2           2       -1/200  0.0                     0.005     1",
        "  … and 9 more columns",
    ]


def test_a_broken_exact_text_is_an_error(exact_run):
    df = steptrace.load_trace(exact_run)
    broken = df.copy()
    broken.loc[1, "o2_1_exact"] = "one"
    with pytest.raises(TraceError, match="an exact value column holds 'one', which is not a rat"):
        compare_traces(df, broken)


# --- stacks of layers ------------------------------------------------------------------------

TWO_LAYER = REPO / "examples" / "two-layer.json"


def two_layer(traces: Path, name: str, w4: list[str] | None = None, **options) -> Path:
    """A run of the two-layer example (input → linear(2, bias) → relu → linear(1) → leaky
    relu), its layer 4 starting from ``w4`` if given."""
    model = json.loads(TWO_LAYER.read_text())
    if w4 is not None:
        model["layers"][3]["weights"] = [w4]
    settings = dict(lr="1/10", numerics="exact", epochs=2) | options
    return steptrace.record("seed", model=model, out=traces, name=name, **settings).path


def test_two_layer_runs_from_another_weight_part_at_that_weight_named_by_layer(traces):
    a = two_layer(traces, "a")
    b = two_layer(traces, "b", w4=["1/2", "-1/4"])
    r = compare_traces(a, b)
    assert (r.first.step, r.first.sample, r.first.column) == (0, 0, "w4_before_1_2")
    assert (r.first.a, r.first.b) == ("-1/3", "-1/4")
    assert [(m.key, m.a, m.b) for m in r.metadata] == [
        ("model.layers[4].weights", [["1/2", "-1/3"]], [["1/2", "-1/4"]])
    ]
    assert r.format().splitlines()[3] == (
        "First divergence: step 0, sample 0, column w4_before_1_2 (layer 4's weight W[1,2] "
        "before the update): A -1/3, B -1/4 (B - A = 0.08333333333333333)"
    )
    firsts = {d.column: (d.first_step, d.first_sample) for d in r.column_diffs}
    assert firsts["o4_1"] == (0, 0) and "o2_1" in firsts  # layer 4 at once, layer 2 later:
    assert firsts["o2_1"] == (1, 1)  # through its weights, learned from layer 4's δ
    assert "w4_before_1_1" in firsts and firsts["w4_before_1_1"] > (0, 0)
    assert "o1_1" not in firsts and "x_1" not in firsts
    assert compare_traces(a, b, ignore=["model.layers[4]"]).metadata == []


def test_a_stored_weight_of_a_two_layer_run_is_found_and_named(traces):
    a = two_layer(traces, "a", numerics="float64")
    df = steptrace.load_trace(a)
    row = df.index[(df.step == 3) & (df["sample"] == 0)][0]
    before = float(df.loc[row, "w4_after_1_2"])
    df.loc[row, "w4_after_1_2"] = after = before + 1e-9
    r = compare_traces(a, df)
    assert [d.column for d in r.column_diffs] == ["w4_after_1_2"]
    line = r.format().splitlines()[3]
    assert line == (
        "First divergence: step 3, sample 0, column w4_after_1_2 (layer 4's weight W[1,2] "
        f"after the update): A {before!r}, B {after!r} (B - A = {after - before!r})"
    )
    assert compare_traces(a, df, tolerances={"w4_after": (0.0, 1e-8)}).identical
    assert compare_traces(a, df, columns=["w2_after", "b_after", "o"]).identical
    assert not compare_traces(a, df, columns=["w_after"]).identical


def test_families_and_tensors_select_every_layer_or_one(traces):
    a = two_layer(traces, "a", numerics="float64")
    r = compare_traces(a, a, columns=["w_after", "b2_after", "d5"])
    assert r.columns == [
        "w2_after_1_1", "w2_after_1_2", "w2_after_1_3", "w2_after_2_1", "w2_after_2_2",
        "w2_after_2_3", "w4_after_1_1", "w4_after_1_2", "b2_after_1", "b2_after_2", "d5_1",
    ]  # fmt: skip
    ignored = compare_traces(a, a, ignore=["grad_w", "grad_b", "d", "o"]).columns
    assert not [c for c in ignored if c.startswith(("grad", "d", "o"))]
    assert "w4_before_1_2" in ignored and "loss" in ignored


def test_runs_of_different_stacks_say_their_models_differ(traces, exact_run):
    stacked = two_layer(traces, "stacked", lr="1")
    with pytest.raises(TraceError) as refused:
        compare_traces(exact_run, stacked)
    assert str(refused.value) == (
        f"column(s) o2_2, o3_2, o4_1, o5_1, d6_1, d5_1 … are in {stacked} but not in "
        f"{exact_run} (their models differ: {exact_run} input → linear(bias=False, out=1) → "
        f"relu, {stacked} input → linear(bias=True, out=2) → relu → linear(bias=False, out=1) "
        "→ leaky_relu(slope=1/100)); compare the common columns with --columns, or --ignore "
        "these"
    )
    r = compare_traces(exact_run, stacked, columns=["loss"])
    assert [m.key for m in r.metadata] == [
        "epochs", "model.layers", "model.layers[2].weights", "steps",
    ]  # fmt: skip
