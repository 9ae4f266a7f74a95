"""``steptrace diff``: exit 0 same, 1 different, 2 error; text for people, JSON for machines."""

import json

import pytest

import steptrace
from steptrace.compare.traces import Side, load_side, write_trace_file

from .conftest import REPO

GOLDEN = REPO / "traces" / "golden"
EXACT = GOLDEN / "article-exact.parquet"
FLOAT64 = GOLDEN / "article-float64.parquet"


@pytest.fixture
def exact_run(traces):
    return steptrace.record("seed", numerics="exact", out=traces).path


def test_identical_traces_exit_0(run_cli, exact_run):
    result = run_cli("diff", EXACT, exact_run)
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "Traces are identical (29 columns × 3 rows, exact equality).",
        f"A: {EXACT} (exact, α=1, 3 rows)",
        f"B: {exact_run} (exact, α=1, 3 rows)",
    ]


def test_exact_against_float64_names_step_column_and_both_values(run_cli):
    result = run_cli("diff", EXACT, FLOAT64)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[:4] == [
        "Traces differ.",
        f"A: {EXACT} (exact, α=1, 3 rows)",
        f"B: {FLOAT64} (float64, α=1, 3 rows)",
        "First divergence: step 0, sample 0, column o2_1: A 0, B -3.469446951953614e-17 "
        "(B - A = -3.469446951953614e-17)",
    ]
    assert "  numerics: A 'exact', B 'float64'" in lines
    assert "Values that differ (exact equality): 12 of 29 columns, 3 rows compared" in lines


@pytest.fixture
def nudged_pair(traces):
    """A float64 run, and a copy of it as a file with one weight moved by 1e-13 (relative)."""
    a = steptrace.record("seed", numerics="float64", out=traces, name="a").path
    df = steptrace.load_trace(a)
    df.loc[2, "w_after_3"] *= 1 + 1e-13
    nudged = traces / "nudged.parquet"
    write_trace_file(Side("nudged", load_side(a).meta, dataframe=df), nudged)
    return a, nudged


def test_tolerance_and_selection_options(run_cli, nudged_pair):
    a, nudged = nudged_pair
    assert run_cli("diff", a, nudged).exit_code == 1
    assert run_cli("diff", a, nudged, "--rtol", "1e-12").exit_code == 0
    assert run_cli("diff", a, nudged, "--atol", "1e-9").exit_code == 0
    assert run_cli("diff", a, nudged, "--ignore", "w_after_3").exit_code == 0
    assert run_cli("diff", a, nudged, "--columns", "o2_1, loss,w_before").exit_code == 0
    assert run_cli("diff", a, nudged, "--columns", "w_after").exit_code == 1


def test_per_column_tolerances(run_cli, nudged_pair):
    a, nudged = nudged_pair
    same = run_cli("diff", a, nudged, "--tol", "w_after=1e-12", "--tol", "loss=0,1e-3")
    assert same.exit_code == 0
    assert same.output.splitlines()[0] == (
        "Traces are identical (29 columns × 3 rows, exact equality; loss: rtol 0, atol 0.001; "
        "w_after_1, w_after_2, w_after_3: rtol 1e-12, atol 0)."
    )
    # A column's own tolerance wins over the global one, both ways.
    tight = run_cli("diff", a, nudged, "--rtol", "1e-12", "--tol", "w_after_3=1e-14")
    assert tight.exit_code == 1
    assert "Values that differ (rtol 1e-12, atol 0; w_after_3: rtol 1e-14, atol 0)" in tight.output
    data = json.loads(run_cli("diff", a, nudged, "--tol", "w_after_3=1e-12", "--json").output)
    assert data["identical"] is True
    assert data["column_tolerances"] == {"w_after_3": {"rtol": 1e-12, "atol": 0.0}}


@pytest.mark.parametrize("value", ["o2=abc", "o2", "=1e-3", "o2=1,-1", "o2=nan", "o2=1,2,3"])
def test_bad_per_column_tolerance_is_a_one_line_error(run_cli, value):
    result = run_cli("diff", EXACT, FLOAT64, "--tol", value)
    assert result.exit_code == 2
    assert result.output == (
        f"Error: Invalid value for '--tol': {value!r} is not NAME=RTOL or NAME=RTOL,ATOL with "
        "finite tolerances >= 0 (e.g. --tol w_after=1e-12 or --tol loss=0,1e-15) "
        "(see 'steptrace diff -h')\n"
    )


def test_tolerance_for_a_column_not_compared_is_an_error(run_cli):
    result = run_cli("diff", EXACT, FLOAT64, "--tol", "o7=1e-3")
    assert (result.exit_code, result.output) == (
        2,
        "Error: a tolerance is given for 'o7', which is not compared\n",
    )


def test_json_output(run_cli):
    result = run_cli("diff", EXACT, FLOAT64, "--json")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["identical"] is False
    assert data["first"] == {
        "step": 0,
        "sample": 0,
        "column": "o2_1",
        "a": "0",
        "b": "-3.469446951953614e-17",
        "difference": -3.469446951953614e-17,
        "kind": "value",
    }
    assert data["metadata"] == [{"key": "numerics", "a": "exact", "b": "float64"}]
    assert [d["column"] for d in data["column_diffs"]][:2] == ["o2_1", "d3_1"]


def test_one_run_against_a_folder_of_runs_is_an_error(run_cli, traces, exact_run):
    steptrace.record("seed", numerics="float32", out=traces)
    result = run_cli("diff", exact_run, traces)
    assert result.exit_code == 2
    assert result.output == (
        f"Error: '{traces}' is a folder of 2 runs (seed-exact-lr1, seed-float32-lr1); "
        "compare one run with one run, or two folders of runs\n"
    )


def test_not_a_trace_is_an_error(run_cli, tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n1,2\n")
    result = run_cli("diff", EXACT, csv)
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {csv}: not a readable Parquet file")
    assert result.output.count("\n") == 1


def test_missing_columns_and_unknown_names_are_errors(run_cli, traces):
    csv = traces.parent / "two.csv"
    csv.write_text("a,b,y\n1,2,0\n3,4,1\n")
    two = steptrace.record(csv, numerics="float64", init="1,1", out=traces).path
    result = run_cli("diff", FLOAT64, two)
    assert result.exit_code == 2
    assert result.output.startswith("Error: column(s) x_3, o1_3")
    assert result.output.endswith("compare the common columns with --columns, or --ignore these\n")
    unknown = run_cli("diff", EXACT, FLOAT64, "--columns", "o7_1")
    assert (unknown.exit_code, unknown.output) == (2, "Error: no column 'o7_1' in either trace\n")


def test_different_format_versions_are_an_error(run_cli, tmp_path):
    side = load_side(EXACT)
    side.meta["format_version"] = "0.3"
    old = tmp_path / "old.parquet"
    write_trace_file(side, old)
    result = run_cli("diff", old, EXACT)
    assert result.exit_code == 2
    assert result.output == (
        f"Error: {old} is in trace format 0.3 and {EXACT} in 1.0; traces of different format "
        "versions cannot be compared: record both with the same steptrace\n"
    )


def test_help_has_an_example(run_cli):
    result = run_cli("diff", "-h")
    assert result.exit_code == 0
    assert "Example:" in result.output and "--rtol" in result.output


def test_the_example_in_docs_golden_md_is_the_real_output(run_cli, monkeypatch):
    doc = (REPO / "docs" / "golden.md").read_text(encoding="utf-8")
    command = (
        "$ steptrace diff traces/golden/article-exact.parquet traces/golden/article-float64.parquet"
    )
    shown = doc.split(command + "\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(REPO)
    result = run_cli(*command.split()[2:])
    assert result.exit_code == 1
    assert result.output == shown
