"""The Parquet encodings the trace writer chooses, checked in the files it writes."""

from __future__ import annotations

import pyarrow.parquet as pq

from steptrace.data import seed_dataset
from steptrace.model import article_model, load_model
from steptrace.numerics import get_numerics
from steptrace.trace.schema import arrow_schema, stack_tensors
from steptrace.trace.writer import DICTIONARY_MAX_ROWS, parquet_options
from steptrace.train.api import record

F64 = get_numerics("float64")


def encodings(path) -> dict[str, tuple[str, ...]]:
    column_chunks = pq.read_metadata(path).row_group(0)
    return {
        column_chunks.column(i).path_in_schema: column_chunks.column(i).encodings
        for i in range(column_chunks.num_columns)
    }


def test_each_kind_of_column_gets_its_encoding_in_the_written_file(tmp_path):
    run = record(seed_dataset(), "1e-9", epochs=50, numerics="float64", out=tmp_path,
                 init="0.005,-0.0002,0.0002")  # fmt: skip
    part = next(run.path.glob("part-*.parquet"))
    used = encodings(part)
    assert "BYTE_STREAM_SPLIT" in used["w2_after_1_2"] and "BYTE_STREAM_SPLIT" in used["loss"]
    assert "DELTA_BINARY_PACKED" in used["step"] and "DELTA_BINARY_PACKED" in used["sample"]
    for column in ("lr", "x_1", "y_1", "o1_3", "run_id", "numerics"):
        assert "RLE_DICTIONARY" in used[column], column
    # Stored once: δ1 is δ2, the weights before a step are the ones after the step before.
    assert not {"d1_1", "w2_before_1_1"} & set(used)
    assert "RLE_DICTIONARY" not in used["w2_after_1_2"]
    column_chunks = pq.read_metadata(part).row_group(0)
    names = [column_chunks.column(i).path_in_schema for i in range(column_chunks.num_columns)]
    with_stats = {n for i, n in enumerate(names) if column_chunks.column(i).is_stats_set}
    assert with_stats == {"step", "epoch", "sample"}  # what readers filter on, nothing else
    assert column_chunks.column(names.index("loss")).compression == "ZSTD"


def schema(rows: int, exact: bool = False, features: int = 2):
    tensors = stack_tensors(article_model(n_in=features, init=["1"] * features).stack(F64), 1)
    meta = {"dataset": {"rows": rows}, "tensors": [t.as_json() for t in tensors]}
    return arrow_schema(tensors, exact, meta)


def test_big_datasets_do_not_dictionary_encode_their_data():
    small = parquet_options(schema(10))
    big = parquet_options(schema(DICTIONARY_MAX_ROWS + 1))
    assert "x_1" in small["use_dictionary"] and "x_1" not in small["column_encoding"]
    assert big["use_dictionary"] == ["run_id", "numerics"]
    assert big["column_encoding"]["x_1"] == "BYTE_STREAM_SPLIT"


def test_exact_texts_of_the_data_share_a_dictionary_and_the_rest_stay_plain():
    options = parquet_options(schema(3, exact=True, features=3))
    assert {"x_1_exact", "lr_exact", "o1_2_exact"} <= set(options["use_dictionary"])
    assert "w2_after_1_1_exact" not in options["use_dictionary"]
    assert "w2_after_1_1_exact" not in options["column_encoding"]


def test_only_the_layers_before_the_first_with_parameters_repeat_the_data(tmp_path):
    model = load_model("examples/two-layer.json", 3)
    tensors = stack_tensors(model.stack(F64), 1)
    meta = {"dataset": {"rows": 3}, "tensors": [t.as_json() for t in tensors]}
    options = parquet_options(arrow_schema(tensors, False, meta))
    assert {"x_1", "y_1", "o1_3", "lr"} <= set(options["use_dictionary"])
    assert options["column_encoding"]["o3_1"] == "BYTE_STREAM_SPLIT"  # after a linear layer
