"""verify: traces that follow the maths pass; any single changed value is found and located."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path
from unittest import mock

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import steptrace
from steptrace import Dataset, TraceError, verify

#: Pairs of columns that only each other can tell apart when nothing else in the row depends
#: on the difference (see steptrace.trace.verifier's module docstring).
TWINS = [{f"o1_{k}", f"x_{k}"} for k in (1, 2, 3)] + [{"d4_1", "y_1"}]
TWINS += [{a + "_exact" for a in pair} for pair in TWINS]

#: _run.json keys every copy of the metadata must agree on, and how to change each.
META_KEYS = [
    ("run_id",), ("numerics",), ("lr",), ("lr_exact",), ("epochs",), ("batch_size",),
    ("shuffle",), ("seed",), ("init",), ("steps_per_epoch",), ("steps",), ("dataset", "name"),
    ("dataset", "sha256"), ("dataset", "rows"), ("dataset", "features"), ("dataset", "target"),
    ("summary", "rows"), ("summary", "steps"), ("summary", "final_loss"), ("summary", "min_loss"),
    ("summary", "min_loss_step"), ("summary", "diverged_at"), ("summary", "diverged_why"),
]  # fmt: skip


def changed(value):
    """A different value of the same kind: +1 for numbers and rationals' texts, a changed
    string, the last item of a list changed."""
    if isinstance(value, bool):
        return not value
    if value is None:
        return 7
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        if not math.isfinite(value):
            return 1.0
        return value + 1 if value + 1 != value else value * 2
    if isinstance(value, list):
        return [*value[:-1], changed(value[-1])]
    try:
        return str(Fraction(value) + 1)
    except (ValueError, ZeroDivisionError):
        return value + "x"


def flip(run: Path, row: int, column: str) -> None:
    """Change one cell of a one-part run, keeping the part's metadata."""
    part = run / "part-000000.parquet"
    table = pq.read_table(part)
    values = table.column(column).to_pylist()
    values[row] = changed(values[row])
    i = table.schema.get_field_index(column)
    field = table.schema.field(column)
    pq.write_table(table.set_column(i, field, pa.array(values, type=field.type)), part)


def split(run: Path, sizes: list[int]) -> None:
    """Rewrite a one-part run as several parts of ``sizes`` rows (the last takes the rest)."""
    part = run / "part-000000.parquet"
    table = pq.read_table(part)
    part.unlink()
    start = 0
    for i, size in enumerate([*sizes, table.num_rows]):
        size = min(size, table.num_rows - start)
        if size <= 0:
            break
        pq.write_table(table.slice(start, size), run / f"part-{i:06d}.parquet")
        start += size


def edit_run_json(run: Path, path: tuple[str, ...], value=None) -> None:
    info = json.loads((run / "_run.json").read_text())
    holder = info
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = changed(holder[path[-1]]) if value is None else value
    (run / "_run.json").write_text(json.dumps(info))


@st.composite
def small_runs(draw):
    """Random small settings: a dataset of 1-3 features and 1-5 rows, any number system."""
    k = draw(st.integers(1, 3))
    rows = draw(st.integers(1, 5))
    ints = st.integers(-4, 9)
    inputs = tuple(tuple(Fraction(draw(ints)) for _ in range(k)) for _ in range(rows))
    outputs = tuple(Fraction(draw(st.integers(0, 3))) for _ in range(rows))
    dataset = Dataset(
        "random", tuple(f"f{i}" for i in range(k)), "t", inputs, outputs
    )  # fmt: skip
    init = ",".join(str(Fraction(draw(st.integers(-8, 8)), 8)) for _ in range(k))
    return dict(
        dataset=dataset,
        init=init,
        numerics=draw(st.sampled_from(["exact", "float64", "float32"])),
        lr=draw(st.sampled_from(["1", "1/8", "1e-3", "0.1"])),
        epochs=draw(st.integers(1, 3)),
        batch_size=draw(st.integers(1, rows)),
        shuffle=draw(st.booleans()),
        seed=draw(st.integers(0, 50)),
    )


def record_into(folder: Path, settings_: dict) -> Path:
    settings_ = dict(settings_)
    return steptrace.record(settings_.pop("dataset"), out=folder, name="run", **settings_).path


PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(run=small_runs(), chunk=st.integers(1, 8), parts=st.lists(st.integers(1, 6), max_size=2))
def test_recorded_traces_verify_in_any_chunking_and_any_parts(run, chunk, parts):
    with tempfile.TemporaryDirectory() as tmp:
        path = record_into(Path(tmp), run)
        split(path, parts)
        with mock.patch("steptrace.trace.verifier.CHUNK_ROWS", chunk):
            report = verify(path)
    assert report.ok, str(report)
    rows = len(run["dataset"]) * run["epochs"]
    assert report.rows == rows and report.status == "complete"
    assert (
        report.steps
        == report.run_steps
        == -(-len(run["dataset"]) // run["batch_size"]) * (run["epochs"])
    )


@PROPERTY
@given(run=small_runs(), data=st.data())
def test_a_single_changed_value_is_found_and_located(run, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = record_into(Path(tmp), run)
        table = pq.read_table(path / "part-000000.parquet")
        row = data.draw(st.integers(0, table.num_rows - 1), label="row")
        column = data.draw(st.sampled_from(table.column_names), label="column")
        step, sample = table.column("step")[row].as_py(), table.column("sample")[row].as_py()
        flip(path, row, column)
        problem = verify(path).problem
    assert problem is not None, f"changing {column} of row {row} went unnoticed"
    assert (problem.row, problem.step, problem.sample) == (row, step, sample), str(problem)
    assert problem.file == "part-000000.parquet"
    if problem.columns != (column,):
        assert column in problem.columns and set(problem.columns) in TWINS, str(problem)


@PROPERTY
@given(run=small_runs(), key=st.sampled_from(META_KEYS))
def test_a_changed_metadata_field_is_found_and_named(run, key):
    with tempfile.TemporaryDirectory() as tmp:
        path = record_into(Path(tmp), run)
        edit_run_json(path, key)
        problem = verify(path).problem
    assert problem is not None, f"changing {'.'.join(key)} went unnoticed"
    assert (problem.file, problem.columns) == ("_run.json", (".".join(key),)), str(problem)


def test_x_and_its_copy_o1_are_told_apart_by_the_rest_of_the_row(traces):
    # Row 2 of the article: w_3 = 1/5800 ≠ 0, so x_3 changes o2 and the row says which is wrong.
    path = steptrace.record(out=traces, numerics="float64").path
    flip(path, 2, "x_3")
    problem = verify(path).problem
    assert problem.columns == ("x_3",)
    assert str(problem) == (
        "part-000000.parquet, step 2, sample 2, column x_3: recorded 3001.0, the rest of the row "
        "follows from x_3 = 3000.0"
    )


def test_when_nothing_else_depends_on_x_both_copies_are_named(tmp_path, traces):
    # w_2 = 0 and δ3 = 0 (loss 0): a changed x_2 changes nothing else in its row.
    data = tmp_path / "d.csv"
    data.write_text("a,b,t\n1,5,1\n")
    path = steptrace.record(data, out=traces, numerics="float64", init="1,0").path
    flip(path, 0, "x_2")
    problem = verify(path).problem
    assert problem.columns == ("o1_2", "x_2")
    assert "o1_2 = 5.0 and x_2 = 6.0 disagree, and nothing else in the row tells" in str(problem)


def test_every_row_follows_the_maths_of_the_article_in_every_number_system(traces):
    for numerics in ("exact", "float64", "float32"):
        report = verify(steptrace.record(out=traces, numerics=numerics).path)
        assert str(report) == (
            f"OK {traces}/seed-{numerics}-lr1: 3 steps, 3 rows, {numerics}, complete; every "
            "row follows from its inputs"
        )


def test_the_exact_text_is_checked_against_the_maths_and_the_float_against_its_text(traces):
    path = steptrace.record(out=traces).path
    work = traces / "text"
    shutil.copytree(path, work)
    flip(work, 2, "o2_1_exact")
    assert str(verify(work).problem) == (
        "part-000000.parquet, step 2, sample 2, column o2_1_exact: recorded 1, recomputed 0 "
        "(o2 = L2(o1) = w . o1)"
    )
    flip(path, 2, "o2_1")
    assert str(verify(path).problem) == (
        "part-000000.parquet, step 2, sample 2, column o2_1: recorded 1.0, its exact text 0 "
        "rounds to 0.0"
    )


def test_an_exact_text_must_be_a_rational_in_lowest_terms(traces):
    path = steptrace.record(out=traces).path
    part = path / "part-000000.parquet"
    table = pq.read_table(part)
    values = table.column("lr_exact").to_pylist()
    values[1] = "2/2"
    i = table.schema.get_field_index("lr_exact")
    pq.write_table(table.set_column(i, "lr_exact", pa.array(values)), part)
    problem = verify(path).problem
    assert (problem.step, problem.columns) == (1, ("lr_exact",))
    assert problem.message == "'2/2' is not written as '1'"


def test_a_diverged_run_is_data_and_verifies(tmp_path, traces):
    seesaw = tmp_path / "seesaw.csv"
    seesaw.write_text("a,t\n1,1\n-1,1\n")
    result = steptrace.record(
        seesaw, out=traces, numerics="float64", lr="10", init="2", epochs=400
    )  # fmt: skip
    assert result.summary.diverged_at is not None
    df = steptrace.load_trace(result.path)
    assert df["w_after_1"].isna().any()  # inf - inf: NaN, recorded as such
    assert verify(result.path).ok
    last = len(df) - 1
    flip(result.path, last, "w_after_1")  # NaN → 1.0
    problem = verify(result.path).problem
    assert (problem.row, problem.columns) == (last, ("w_after_1",))
    assert "recorded 1.0, the step's update ŵ = w - α * Σ grad gives nan" in problem.message


def test_missing_rows_are_found_where_they_go_missing(traces):
    path = steptrace.record(out=traces, numerics="float64", epochs=4).path
    split(path, [3, 3, 3])
    (path / "part-000001.parquet").unlink()
    problem = verify(path).problem
    assert (problem.file, problem.row, problem.columns) == ("part-000002.parquet", 3, ("step",))
    assert problem.message == (
        "recorded 6, expected 3 (steps run 0, 1, 2 … each step's rows together)"
    )


def test_a_prefix_of_whole_steps_is_a_valid_incomplete_trace_but_not_a_complete_one(traces):
    path = steptrace.record(out=traces, numerics="float32", epochs=4, batch_size=2).path
    split(path, [6])
    (path / "part-000001.parquet").unlink()
    edit_run_json(path, ("status",), "incomplete")
    edit_run_json(path, ("summary",), {})
    report = verify(path)
    assert str(report) == (
        f"OK {path}: 4 of 8 steps, 6 rows, float32, incomplete; every row follows from its inputs"
    )
    edit_run_json(path, ("status",), "complete")
    assert str(verify(path).problem) == (
        "_run.json, column status: the run says complete, but holds 6 of its 12 rows"
    )


def test_a_trace_cut_inside_a_step_is_a_problem(traces):
    path = steptrace.record(out=traces, numerics="float64", epochs=2, batch_size=2).path
    split(path, [4])  # steps of 2, 1, 2, 1 rows: the 4th row is the first of step 2
    (path / "part-000001.parquet").unlink()
    edit_run_json(path, ("status",), "incomplete")
    problem = verify(path).problem
    assert str(problem) == (
        "part-000000.parquet, step 2, column step: the trace ends inside this step: 1 of its 2 rows"
    )


def test_a_footer_that_disagrees_with_the_others_is_named(traces):
    path = steptrace.record(out=traces, numerics="float64", epochs=3).path
    split(path, [3, 3])
    part = path / "part-000001.parquet"
    table = pq.read_table(part)
    meta = json.loads(table.schema.metadata[b"steptrace"])
    meta["lr"] = "2"
    pq.write_table(table.replace_schema_metadata({"steptrace": json.dumps(meta)}), part)
    assert str(verify(path).problem) == (
        "part-000001.parquet, column lr: says '2', but _run.json's copy of the metadata says '1'"
    )


def test_columns_must_be_the_trace_formats(traces):
    path = steptrace.record(out=traces, numerics="float64").path
    part = path / "part-000000.parquet"
    table = pq.read_table(part)
    pq.write_table(table.drop_columns(["d1_2"]), part)
    assert str(verify(path).problem) == "part-000000.parquet, column d1_2: column d1_2 is missing"


def test_what_is_not_a_trace_is_an_error_not_a_problem(tmp_path):
    with pytest.raises(TraceError, match="no trace at"):
        verify(tmp_path / "missing")


def test_the_verify_command_exit_codes(traces, run_cli):
    good = steptrace.record(out=traces, numerics="float64").path
    bad = steptrace.record(out=traces, numerics="float64", name="bad").path
    flip(bad, 1, "loss")
    ok = run_cli("verify", good)
    assert (ok.exit_code, ok.output) == (
        0, f"OK {good}: 3 steps, 3 rows, float64, complete; every row follows from its inputs\n",
    )  # fmt: skip
    found = run_cli("verify", traces)
    assert found.exit_code == 1
    assert found.output.splitlines() == [
        f"PROBLEM {bad}: part-000000.parquet, step 1, sample 1, column loss: recorded 1.0, "
        "recomputed 0.0 (this sample's loss 1/2 (o3 - y)^2)",
        f"OK {good}: 3 steps, 3 rows, float64, complete; every row follows from its inputs",
    ]
    missing = run_cli("verify", traces / "nope")
    assert (missing.exit_code, missing.output) == (2, f"Error: no trace at '{traces}/nope'\n")
