"""Reading traces: selections, run folders and part files, and clear refusals."""

import json
import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steptrace import find_traces, load_trace, open_trace, record
from steptrace import verify as steptrace_verify
from steptrace.errors import NewerFormatError, TraceError


@pytest.fixture
def run(traces):
    return record(out=traces, numerics="float64", epochs=5).path


def test_columns_and_filters_select_what_is_read(run):
    df = load_trace(run, columns=["step", "loss"], filters=[("step", ">=", 10)])
    assert list(df.columns) == ["step", "loss"]
    assert df["step"].tolist() == [10, 11, 12, 13, 14]
    assert open_trace(run).step(4)["sample"].tolist() == [1]


def test_unknown_columns_are_refused_by_name(run):
    with pytest.raises(TraceError, match="no column\\(s\\) nope in this trace"):
        load_trace(run, columns=["step", "nope"])


def test_a_single_part_file_is_a_trace_of_unknown_status(run):
    trace = open_trace(run / "part-000000.parquet")
    assert trace.status == "unknown" and trace.num_rows == 15
    assert trace.read().equals(load_trace(run))


def test_readers_ignore_columns_they_do_not_know(run, tmp_path):
    table = pq.read_table(run / "part-000000.parquet")
    extra = table.append_column("added_in_1_1", pa.array([1] * table.num_rows))
    pq.write_table(extra, tmp_path / "future.parquet")
    df = load_trace(tmp_path / "future.parquet")
    assert "loss" in df.columns  # the known columns are all there


def test_not_a_trace(tmp_path):
    with pytest.raises(TraceError, match="no trace at"):
        open_trace(tmp_path / "missing")
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "foreign.parquet")
    with pytest.raises(
        TraceError, match="foreign.parquet: not a steptrace trace \\(no 'steptrace'"
    ):
        open_trace(tmp_path / "foreign.parquet")
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(TraceError, match="corrupt.parquet: not a readable Parquet file"):
        open_trace(tmp_path / "corrupt.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        TraceError, match="is not a steptrace trace \\(no _run.json, no part files\\)"
    ):
        open_trace(tmp_path / "empty")


def test_a_newer_format_is_refused_and_named(run):
    info = json.loads((run / "_run.json").read_text())
    info["format_version"] = "3.0"
    (run / "_run.json").write_text(json.dumps(info))
    with pytest.raises(NewerFormatError, match="uses trace format 3.0 .* upgrade with"):
        open_trace(run)


def test_find_traces_reports_bad_runs_next_to_good_ones(traces, run):
    bad = traces / "broken"
    bad.mkdir()
    (bad / "part-000000.parquet").write_bytes(b"nope")
    found, problems = find_traces(traces)
    assert [t.path for t in found] == [run]
    assert len(problems) == 1 and problems[0][0] == bad
    assert "not a readable Parquet file" in problems[0][1]


def test_a_filter_on_a_column_the_trace_lacks_says_so(run):
    with pytest.raises(TraceError, match="the filter names a column this trace does not have"):
        load_trace(run, filters=[("nope", "==", 1)])


def test_loose_trace_files_in_a_subfolder_are_runs_of_their_own(traces, run):
    golden = traces / "golden"
    golden.mkdir()
    for name in ("a", "b"):
        (golden / f"{name}.parquet").write_bytes((run / "part-000000.parquet").read_bytes())
    found, problems = find_traces(traces)
    assert problems == []
    assert sorted(t.path for t in found) == [golden / "a.parquet", golden / "b.parquet", run]


EDITS = [
    ("steps", "nine", "run metadata 'steps' should be a whole number, not 'nine'"),
    ("batch_size", "zz", "run metadata 'batch_size' should be a whole number, not 'zz'"),
    ("epochs", None, "run metadata 'epochs' should be a whole number, not None"),
    ("model", "x", "run metadata 'model' should be an object, not 'x'"),
    ("seed", [1], "run metadata 'seed' should be a whole number or null, not [1]"),
    ("dataset", 0, "run metadata 'dataset' should be an object, not 0"),
    ("summary", -1, "its summary should be an object, not -1"),
    ("lr_exact", "abc", "run metadata 'lr_exact' must be a number such as 0.5"),
    ("numerics", "float16", "run metadata 'numerics' is 'float16', not one of exact, float64"),
]


@pytest.mark.parametrize(("key", "value", "message"), EDITS, ids=[e[0] for e in EDITS])
def test_hand_edited_metadata_of_the_wrong_kind_is_named_by_every_command(
    traces, run_cli, key, value, message
):
    """A run whose _run.json holds a value of the wrong kind: one line naming the file and the
    key from the commands that read it, and the folder's other runs still summarised."""
    good = record(out=traces).path
    bad = traces / "edited"
    bad.mkdir()
    for f in good.iterdir():
        if f.is_file():  # not the per-step figures' folder
            (bad / f.name).write_bytes(f.read_bytes())
    info = json.loads((bad / "_run.json").read_text())
    info[key] = value
    (bad / "_run.json").write_text(json.dumps(info))
    with pytest.raises(TraceError, match=re.escape(message)):
        open_trace(bad)
    for command in (["replay", bad], ["export", bad, "--html", traces / "x.html"]):
        result = run_cli(*command)
        assert result.exit_code == 2, (command, result.output)
        (line,) = result.stderr.splitlines()
        assert line.startswith("Error: ") and message in line, line
    # verify finds it: a problem of the run (exit 1) naming the file and the key.
    problem = steptrace_verify(bad).problem
    assert problem is not None and (problem.file, problem.columns) == ("_run.json", (key,))
    assert run_cli("verify", bad).exit_code == 1
    summary = run_cli("summary", traces)
    assert summary.exit_code == 0 and f"Skipped {bad}: " in summary.stderr
    assert len(summary.stdout.splitlines()) == 2  # the header and the good run
