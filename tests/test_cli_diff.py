"""``steptrace diff``: exit 0 same, 1 different, 2 error; text for people, JSON for machines."""

import json
from fractions import Fraction

import pyarrow.parquet as pq
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
        "First divergence: step 0, sample 0, column o2_1 (layer 2's output, neuron 1): A 0, "
        "B -3.469446951953614e-17 (B - A = -3.469446951953614e-17)",
    ]
    assert "  numerics: A 'exact', B 'float64'" in lines
    assert "Values that differ (exact equality): 12 of 29 columns, 3 rows compared" in lines


@pytest.fixture
def nudged_pair(traces):
    """A float64 run, and a copy of it as a file with one weight moved by 1e-13 (relative)."""
    a = steptrace.record("seed", numerics="float64", out=traces, name="a").path
    df = steptrace.load_trace(a)
    df.loc[2, "w2_after_1_3"] *= 1 + 1e-13
    nudged = traces / "nudged.parquet"
    write_trace_file(Side("nudged", load_side(a).meta, dataframe=df), nudged)
    return a, nudged


def test_tolerance_and_selection_options(run_cli, nudged_pair):
    a, nudged = nudged_pair
    assert run_cli("diff", a, nudged).exit_code == 1
    assert run_cli("diff", a, nudged, "--rtol", "1e-12").exit_code == 0
    assert run_cli("diff", a, nudged, "--atol", "1e-9").exit_code == 0
    assert run_cli("diff", a, nudged, "--ignore", "w2_after_1_3").exit_code == 0
    assert run_cli("diff", a, nudged, "--ignore", "w2_after").exit_code == 0
    assert run_cli("diff", a, nudged, "--columns", "o2_1, loss,w_before").exit_code == 0
    assert run_cli("diff", a, nudged, "--columns", "o2_1, loss,w2_before").exit_code == 0
    assert run_cli("diff", a, nudged, "--columns", "w_after").exit_code == 1
    assert run_cli("diff", a, nudged, "--columns", "w2_after").exit_code == 1


def test_per_column_tolerances(run_cli, nudged_pair):
    a, nudged = nudged_pair
    same = run_cli("diff", a, nudged, "--tol", "w_after=1e-12", "--tol", "loss=0,1e-3")
    assert same.exit_code == 0
    assert same.output.splitlines()[0] == (
        "Traces are identical (29 columns × 3 rows, exact equality; loss: rtol 0, atol 0.001; "
        "w2_after_1_1, w2_after_1_2, w2_after_1_3: rtol 1e-12, atol 0)."
    )
    by_tensor = run_cli("diff", a, nudged, "--tol", "w2_after=1e-12", "--tol", "loss=0,1e-3")
    assert by_tensor.output == same.output
    # A column's own tolerance wins over the global one, both ways.
    tight = run_cli("diff", a, nudged, "--rtol", "1e-12", "--tol", "w2_after_1_3=1e-14")
    assert tight.exit_code == 1
    assert (
        "Values that differ (rtol 1e-12, atol 0; w2_after_1_3: rtol 1e-14, atol 0)" in tight.output
    )
    data = json.loads(run_cli("diff", a, nudged, "--tol", "w2_after_1_3=1e-12", "--json").output)
    assert data["identical"] is True
    assert data["column_tolerances"] == {"w2_after_1_3": {"rtol": 1e-12, "atol": 0.0}}


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
    for empty in ("", ",", " , "):  # an unset variable in a CI script compares nothing: refused
        nothing = run_cli("diff", EXACT, FLOAT64, "--columns", empty)
        assert (nothing.exit_code, nothing.output) == (
            2, f"Error: --columns {empty!r} names no column: give some, or leave it out\n"
        )  # fmt: skip


def test_the_readmes_examples_on_a_version_1_golden_and_a_version_2_run(run_cli, exact_run):
    # traces/golden/ is trace format 1: its weights are read under version 2's names.
    selected = run_cli("diff", EXACT, exact_run, "--rtol", "1e-12", "--columns", "loss,w_after",
                       "--json")  # fmt: skip
    assert selected.exit_code == 0
    data = json.loads(selected.output)
    assert data["identical"] is True
    assert data["columns"] == ["loss", "w2_after_1_1", "w2_after_1_2", "w2_after_1_3"]
    tolerated = run_cli("diff", EXACT, exact_run, "--tol", "loss=1e-9", "--tol", "w_after=0,1e-15")
    assert tolerated.exit_code == 0
    assert tolerated.output.splitlines()[0] == (
        "Traces are identical (29 columns × 3 rows, exact equality; loss: rtol 1e-09, atol 0; "
        "w2_after_1_1, w2_after_1_2, w2_after_1_3: rtol 0, atol 1e-15)."
    )


def test_a_newer_format_is_an_error(run_cli, tmp_path):
    meta = {**load_side(EXACT).meta, "format_version": "3.0"}
    newer = tmp_path / "newer.parquet"
    pq.write_table(
        load_side(EXACT).read_table().replace_schema_metadata({"steptrace": json.dumps(meta)}),
        newer,
    )
    result = run_cli("diff", EXACT, newer)
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {newer} uses trace format 3.0 (written by steptrace ")
    assert result.output.endswith("upgrade with 'pip install -U steptrace'\n")
    assert result.output.count("\n") == 1


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


def test_the_stack_example_in_docs_golden_md_is_the_real_output(run_cli, monkeypatch, tmp_path):
    doc = (REPO / "docs" / "golden.md").read_text(encoding="utf-8")
    section = doc.split("### A stack of layers\n", 1)[1]
    recordings = section.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    command = section.split("```\n$ ", 1)[1].split("\n", 1)[0]
    shown = section.split(command + "\n", 1)[1].split("```", 1)[0]
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "two-layer.json").write_bytes(
        (REPO / "examples" / "two-layer.json").read_bytes()
    )
    monkeypatch.chdir(tmp_path)
    assert len(recordings) == 2
    for line in recordings:
        assert run_cli(*line.split()[1:]).exit_code == 0
    result = run_cli(*command.split()[1:])
    assert result.exit_code == 1
    assert result.output == shown
    assert "column o2_1 (layer 2's output, neuron 1)" in result.output


def test_two_layer_runs_that_differ_in_one_weight_name_it(run_cli, traces):
    model = json.loads((REPO / "examples" / "two-layer.json").read_text())
    a = steptrace.record(lr="1/10", epochs=2, model=model, out=traces, name="a").path
    df = steptrace.load_trace(a)
    row = df.index[(df.step == 3) & (df["sample"] == 0)][0]
    original = Fraction(df.loc[row, "w4_after_1_2_exact"])
    nudged = original + Fraction(1, 10**20)  # below float64's resolution at this size
    df.loc[row, "w4_after_1_2_exact"] = str(nudged)
    changed = traces / "changed.parquet"
    write_trace_file(Side("changed", load_side(a).meta, dataframe=df), changed)
    result = run_cli("diff", a, changed)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[3] == (
        "First divergence: step 3, sample 0, column w4_after_1_2 (layer 4's weight W[1,2] after "
        f"the update): A {original}, B {nudged} (B - A = 1e-20)"
    )
    assert lines[6].split()[:4] == ["w4_after_1_2", "1/6", "3", "0"]
    assert run_cli("diff", a, changed, "--ignore", "w4_after").exit_code == 0
    assert run_cli("diff", a, changed, "--columns", "w_before,b_after,o,d").exit_code == 0
    assert run_cli("diff", a, changed, "--tol", "w4_after_1_2=0,1e-19").exit_code == 0
    assert run_cli("diff", a, changed, "--tol", "w_after=0,1e-19").exit_code == 0
    assert run_cli("diff", a, changed, "--tol", "w_after=0,1e-21").exit_code == 1


def test_runs_that_agree_within_the_tolerance_say_only_their_settings_differ(run_cli, traces):
    # The same run, exact and in float64: α = 1e-9 keeps every value within 1e-9 of the
    # exact one, so only the numerics setting tells them apart.
    settings = dict(lr="1e-9", init="0.005,-0.0002,0.0002", epochs=3, out=traces)
    exact = steptrace.record("seed", numerics="exact", name="exact", **settings).path
    f64 = steptrace.record("seed", numerics="float64", name="f64", **settings).path
    result = run_cli("diff", exact, f64, "--rtol", "1e-9")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "Traces differ.",
        f"A: {exact} (exact, α=1e-9, 9 rows)",
        f"B: {f64} (float64, α=1e-9, 9 rows)",
        "Every value agreed (29 columns × 9 rows, rtol 1e-09, atol 0): only the settings differ.",
        "Settings that differ:",
        "  numerics: A 'exact', B 'float64'",
    ]
    # Where values differ too, nothing says they agreed.
    tight = run_cli("diff", exact, f64, "--rtol", "1e-12").output
    assert "Every value agreed" not in tight and "Values that differ (rtol 1e-12" in tight
