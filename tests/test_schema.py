"""The written spec (docs/trace-format.md) and the code (trace/schema.py) agree."""

import json
import re

import pyarrow as pa
import pytest

from steptrace import open_run, record
from steptrace.data import seed_dataset
from steptrace.errors import NewerFormatError, TraceError
from steptrace.model import article_model, load_model
from steptrace.numerics import get_numerics
from steptrace.trace.names import describe_column
from steptrace.trace.schema import (
    EXACT_SUFFIX,
    FAMILIES,
    FORMAT_VERSION,
    KEY_FIELDS,
    METADATA_KEY,
    Tensor,
    arrow_schema,
    check_version,
    column_names,
    expand,
    metadata_of,
    stack_tensors,
    tensors_of,
    upgrade_v1,
    v1_column,
    v2_column,
)

from .conftest import REPO

SPEC = (REPO / "docs" / "trace-format.md").read_text(encoding="utf-8")
TYPE_NAMES = {pa.string(): "string", pa.int64(): "int64", pa.float64(): "float64"}
F64 = get_numerics("float64")
TWO_LAYER = REPO / "examples" / "two-layer.json"


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


def test_every_column_family_of_the_spec_is_in_the_code_with_its_type_and_meaning():
    rows = spec_table("column")
    documented = [r for r in rows if r[0] != "<value>_exact"]
    assert [r[0] for r in documented] == [f.pattern for f in FAMILIES]
    for row, family in zip(documented, FAMILIES, strict=True):
        assert row[1] == TYPE_NAMES[family.type], family.pattern
        assert row[2] == family.meaning, family.pattern
        assert row[3] == family.required, family.pattern
    exact = [r for r in rows if r[0] == "<value>_exact"]
    assert exact == [["<value>_exact", "string", exact[0][2], "in exact runs"]]
    assert EXACT_SUFFIX == "_exact"


def test_every_column_a_stack_records_belongs_to_a_documented_family():
    stack = load_model(TWO_LAYER, 3).stack(F64)
    patterns = [
        re.compile(
            re.sub(r"_[ij](?=_|$)", r"_\\d+", re.escape(f.pattern).replace(r"\{k\}", r"\d+"))
        )
        for f in FAMILIES
    ]
    for name in column_names(stack_tensors(stack, 1)):
        assert any(p.fullmatch(name) for p in patterns), name


def test_the_spec_states_the_codes_version_and_metadata_key():
    assert f"# steptrace trace format, version {FORMAT_VERSION}" in SPEC
    assert f"under the\nkey `{METADATA_KEY}`" in SPEC


def test_metadata_keys_of_the_spec_are_the_ones_a_recording_writes(traces):
    result = record(out=traces)
    written = set(json.loads((result.path / "_run.json").read_text()))
    # A loop of another framework writes through open_run and says what computed the values.
    model = REPO / "examples" / "article.json"
    with open_run(traces, "other", model=model, lr="1", recorded_with={"framework": "numpy"},
                  dataset=seed_dataset(), epochs=1, batch_size=1) as run:  # fmt: skip
        path = run.path
    other = set(json.loads((path / "_run.json").read_text()))
    documented = {r[0] for r in spec_table("key")}
    assert documented == written | other
    assert other - written == {"recorded_with"}


def test_the_articles_tensors_and_columns_in_file_order():
    tensors = stack_tensors(article_model().stack(F64), 1)
    assert [t.name for t in tensors] == [
        "lr", "x", "y", "o1", "o2", "o3", "loss", "d4", "d3", "d2", "d1",
        "grad_w2", "w2_before", "w2_after",
    ]  # fmt: skip
    assert [t.shape for t in tensors][-3:] == [(1, 3)] * 3
    names = column_names(tensors, exact=True)
    assert names[:7] == ["run_id", "step", "epoch", "sample", "numerics", "batch_size", "lr"]
    assert names[7:10] == ["x_1", "x_2", "x_3"]
    assert names[names.index("loss") + 1 : names.index("loss") + 3] == ["d4_1", "d3_1"]
    assert "w2_after_1_3_exact" in names and "step_exact" not in names
    value_cols = [n for n in column_names(tensors) if n not in [f.pattern for f in KEY_FIELDS]]
    assert names[-len(value_cols) :] == [v + "_exact" for v in value_cols]


def test_a_two_layer_stack_records_every_layers_values_and_both_layers_parameters():
    tensors = {t.name: t for t in stack_tensors(load_model(TWO_LAYER, 3).stack(F64), 1)}
    assert tensors["o2"].shape == (2,) and tensors["o5"].shape == (1,)
    assert tensors["d6"].shape == (1,) and tensors["d1"].shape == (3,)
    assert tensors["d4"].shape == (2,)  # the second linear layer's input: two neurons
    assert tensors["w2_after"].columns()[:4] == [
        "w2_after_1_1", "w2_after_1_2", "w2_after_1_3", "w2_after_2_1",
    ]  # fmt: skip
    assert tensors["b2_before"].columns() == ["b2_before_1", "b2_before_2"]
    assert "b4_before" not in tensors  # layer 4 has no bias
    assert [n for n, t in tensors.items() if t.data] == ["lr", "x", "y", "o1"]


def test_tensors_round_trip_through_the_metadata():
    tensors = stack_tensors(load_model(TWO_LAYER, 3).stack(F64), 1)
    meta = {"tensors": [t.as_json() for t in tensors]}
    assert tensors_of(json.loads(json.dumps(meta))) == tensors
    with pytest.raises(TraceError, match="lists no tensors"):
        tensors_of({})


def test_arrow_schema_carries_the_metadata_under_one_key():
    meta = {"format_version": FORMAT_VERSION, "run_id": "r"}
    schema = arrow_schema([Tensor("x", (3,))], exact=False, metadata=meta)
    assert set(schema.metadata) == {METADATA_KEY.encode()}
    assert metadata_of(schema, "x")["run_id"] == "r"


@pytest.mark.parametrize("version", ["2.0", "2.7", "1.0"])
def test_this_and_older_major_versions_are_read(version):
    check_version({"format_version": version}, "t")


def test_a_newer_major_version_is_refused_with_what_to_do():
    with pytest.raises(NewerFormatError) as info:
        check_version({"format_version": "3.1", "steptrace_version": "9.0.0"}, "traces/r")
    assert str(info.value) == (
        "traces/r uses trace format 3.1 (written by steptrace 9.0.0); this steptrace reads "
        "formats up to 2.x: upgrade with 'pip install -U steptrace'"
    )


def test_a_parquet_schema_without_steptrace_metadata_is_not_a_trace():
    with pytest.raises(TraceError, match="not a steptrace trace"):
        metadata_of(pa.schema([("a", pa.int64())]), "f.parquet")


def test_version_1_metadata_reads_as_the_articles_model():
    v1 = {
        "format_version": "1.0", "init": ["1/200", "-3/11600", "1/5800"],
        "dataset": {"features": ["a", "b", "c"], "target": "t", "rows": 3},
    }  # fmt: skip
    meta = upgrade_v1(v1)
    assert meta["dataset"]["targets"] == ["t"] and "target" not in meta["dataset"]
    assert "init" not in meta and meta["format_version"] == "1.0"
    assert meta["model"]["layers"][1]["weights"] == [["1/200", "-3/11600", "1/5800"]]
    assert [t["name"] for t in meta["tensors"]][-1] == "w2_after"
    assert upgrade_v1(meta) is meta  # once is enough


def test_version_1_weight_columns_map_both_ways():
    pairs = [("w_before_3", "w2_before_1_3"), ("w_after_1_exact", "w2_after_1_1_exact"),
             ("grad_2", "grad_w2_1_2"), ("o2_1", "o2_1"), ("x_3", "x_3")]  # fmt: skip
    for v1, v2 in pairs:
        assert v2_column(v1) == v2
        assert v1_column(v2) == v1


def test_names_expand_to_columns_tensors_and_families():
    cols = ["x_1", "o2_1", "o4_1", "w2_after_1_1", "w2_after_2_1", "w4_after_1_1", "b2_after_1"]
    assert expand("x_1", cols) == ["x_1"]
    assert expand("w2_after", cols) == ["w2_after_1_1", "w2_after_2_1"]
    assert expand("w_after", cols) == ["w2_after_1_1", "w2_after_2_1", "w4_after_1_1"]
    assert expand("o", cols) == ["o2_1", "o4_1"]
    assert expand("b_after", cols) == ["b2_after_1"]
    assert expand("nothing", cols) == []


def test_columns_are_described_by_layer_quantity_and_index():
    assert describe_column("w4_after_1_2") == "layer 4's weight W[1,2] after the update"
    assert describe_column("d3_2_exact") == "δ3 (∂Loss/∂ layer 3's input), component 2"
    assert describe_column("grad_b2_1") == "layer 2's bias gradient ∂Loss/∂b[1]"
    assert describe_column("o2_1") == "layer 2's output, neuron 1"


def test_spec_mentions_no_column_family_the_code_lacks():
    # The per-step figures are a table of their own (tests/test_scalars.py checks it).
    figures = SPEC[SPEC.index("## Per-step figures") : SPEC.index("## Versions")]
    mentioned = set(re.findall(r"`((?:grad_)?[a-z]\{k\}[a-z_]*)`", SPEC.replace(figures, "")))
    assert mentioned
    for name in mentioned:
        assert any(f.pattern == name or f.pattern.startswith(name + "_") for f in FAMILIES), name
