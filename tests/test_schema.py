"""The written spec (docs/trace-format.md) and the code (schema.py) agree."""

import json
import re

import pyarrow as pa
import pytest

from steptrace import record
from steptrace.errors import NewerFormatError, TraceError
from steptrace.trace.schema import (
    EXACT_SUFFIX,
    FIELDS,
    FORMAT_VERSION,
    METADATA_KEY,
    arrow_schema,
    check_version,
    column_names,
    metadata_of,
)

from .conftest import REPO

SPEC = (REPO / "docs" / "trace-format.md").read_text(encoding="utf-8")
TYPE_NAMES = {pa.string(): "string", pa.int64(): "int64", pa.float64(): "float64"}


def spec_table(first_header: str) -> list[list[str]]:
    """Rows of every markdown table whose first header cell is ``first_header``."""
    lines = SPEC.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |")]
    rows = []
    for start in starts:
        for line in lines[start + 2 :]:
            if not line.startswith("|"):
                break
            rows.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    return rows


def test_every_column_of_the_spec_is_in_the_code_with_its_type_and_meaning():
    rows = spec_table("column")
    documented = [r for r in rows if r[0] != "<value>_exact"]
    assert [r[0] for r in documented] == [f.pattern for f in FIELDS]
    for row, field in zip(documented, FIELDS, strict=True):
        assert row[1] == TYPE_NAMES[field.type], field.name
        assert row[2] == field.meaning, field.name
        assert row[3] == "yes"
    exact = [r for r in rows if r[0] == "<value>_exact"]
    assert exact == [["<value>_exact", "string", exact[0][2], "in exact runs"]]
    assert EXACT_SUFFIX == "_exact"


def test_the_spec_states_the_codes_version_and_metadata_key():
    assert f"# steptrace trace format, version {FORMAT_VERSION}" in SPEC
    assert f"under the\nsingle key `{METADATA_KEY}`" in SPEC


def test_metadata_keys_of_the_spec_are_the_ones_a_recording_writes(traces):
    result = record(out=traces)
    written = json.loads((result.path / "_run.json").read_text())
    documented = {r[0] for r in spec_table("key")}
    assert documented == set(written)


def test_column_order_and_exact_twins():
    names = column_names(3, exact=True)
    assert names[:7] == ["run_id", "step", "epoch", "sample", "numerics", "batch_size", "lr"]
    assert names[7:10] == ["x_1", "x_2", "x_3"]
    assert "loss_exact" in names and "w_after_3_exact" in names
    assert "step_exact" not in names
    value_cols = [n for n in column_names(3) if n not in names[:6]]
    assert names[-len(value_cols) :] == [v + "_exact" for v in value_cols]


def test_arrow_schema_carries_the_metadata_under_one_key():
    schema = arrow_schema(3, exact=False, metadata={"format_version": "1.0", "run_id": "r"})
    assert set(schema.metadata) == {METADATA_KEY.encode()}
    assert metadata_of(schema, "x")["run_id"] == "r"


@pytest.mark.parametrize("version", ["1.0", "1.7"])
def test_same_major_versions_are_read(version):
    check_version({"format_version": version}, "t")


def test_a_newer_major_version_is_refused_with_what_to_do():
    with pytest.raises(NewerFormatError) as info:
        check_version({"format_version": "2.1", "steptrace_version": "9.0.0"}, "traces/r")
    assert str(info.value) == (
        "traces/r uses trace format 2.1 (written by steptrace 9.0.0); this steptrace reads "
        "format 1.x: upgrade with 'pip install -U steptrace'"
    )


def test_a_parquet_schema_without_steptrace_metadata_is_not_a_trace():
    with pytest.raises(TraceError, match="not a steptrace trace"):
        metadata_of(pa.schema([("a", pa.int64())]), "f.parquet")


def test_spec_mentions_no_column_the_code_lacks():
    mentioned = set(re.findall(r"`([a-z0-9]+_(?:k|1))`", SPEC))
    assert mentioned <= {f.pattern for f in FIELDS}
