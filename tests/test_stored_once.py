"""Values stored once (docs/trace-format.md, "Values stored once"): what the part files hold,
and every reader putting back the rest, whatever part, window, filter or batch it reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import steptrace
from steptrace.data import seed_dataset
from steptrace.trace.rebuild import BEFORE_KEY
from steptrace.train.columns import compute_blocks
from steptrace.train.recorder import new_run, write_run
from steptrace.train.settings import Settings

from .conftest import REPO
from .reference import bits, reference

MLP = str(REPO / "examples" / "mlp-3-2-1.json")
STORED_ONCE = {"d1_1", "d1_3", "grad_b2_1", "grad_b4_1", "w2_before_1_1", "b4_before_1"}


def record_in_parts(out: Path, numerics: str, epochs: int, rows_per_part: int):
    """A 3-2-1 run in batches of 2 (steps of 2 rows, then 1: the seed data has 3 rows), written
    by the recorder's own writer one block of at most ``rows_per_part`` rows per part."""
    ds = seed_dataset()
    settings = Settings.parse(
        ds, lr="1/10", epochs=epochs, batch_size=2, numerics=numerics, model=MLP
    )  # fmt: skip
    writer, tracker = new_run(ds, settings, out, "parts", flush_seconds=0)
    write_run(writer, compute_blocks(ds, settings, max_rows=rows_per_part), tracker, None, None)
    return writer.run_dir, pd.DataFrame(reference(ds, settings))


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return record_in_parts(tmp_path_factory.mktemp("once"), "float64", epochs=5, rows_per_part=3)


def same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    for column in want.columns:
        assert got[column].tolist() == want[column].tolist(), column


def test_the_files_hold_each_value_once_and_each_part_its_starting_parameters(parts):
    run, ref = parts
    files = sorted(run.glob("part-*.parquet"))
    assert len(files) >= 5
    for f in files:
        table = pq.read_table(f)
        assert not STORED_ONCE & set(table.column_names)
        assert {"d2_1", "grad_w2_1_1", "w2_after_1_1", "b4_after_1", "o1_1"} <= set(
            table.column_names
        )
        entry = json.loads(table.schema.metadata[BEFORE_KEY.encode()])
        first = table.column("step")[0].as_py()
        assert entry["step"] == first
        row = ref[ref["step"] == first].iloc[0]
        assert entry["values"] == {c: row[c] for c in entry["values"]}
        assert set(entry["values"]) == {c for c in ref.columns if "_before_" in c}


def test_every_value_reads_back_as_recorded_bit_for_bit(parts):
    run, ref = parts
    full = steptrace.load_trace(run)
    assert list(full.columns)[: len(steptrace.open_trace(run).schema().names)] == (
        steptrace.open_trace(run).schema().names
    )
    same(full, ref)
    assert (full["d1_2"] == full["d2_2"]).all() and (full["grad_b2_2"] == full["d3_2"]).all()
    assert steptrace.verify(run).ok


def test_windows_filters_and_batches_find_the_step_before_in_another_part(parts):
    run, ref = parts
    trace = steptrace.open_trace(run)
    steps = int(ref["step"].max()) + 1
    for lo in range(steps):
        for hi in (lo + 1, lo + 4):
            want = ref[(ref["step"] >= lo) & (ref["step"] < hi)].reset_index(drop=True)
            same(trace.read(steps=(lo, hi)), want)
            got = pa.Table.from_batches(list(trace.iter_batches(steps=(lo, hi)))).to_pandas()
            same(got, want)
    # The step before a filtered row is not among the rows read: it is looked up.
    lonely = trace.read(["step", "w4_before_1_2", "b2_before_1"], filters=[("sample", "==", 2)])
    same(lonely, ref[ref["sample"] == 2].reset_index(drop=True)[list(lonely.columns)])
    one = steptrace.load_tensor(run, "w2_before")
    assert one.shape == (len(ref), 2, 3)
    assert one[:, 1, 2].tolist() == ref["w2_before_2_3"].tolist()


def test_a_part_alone_starts_from_its_footer(parts):
    run, ref = parts
    for f in sorted(run.glob("part-*.parquet"))[1:3]:
        alone = steptrace.load_trace(f)
        first, last = alone["step"].min(), alone["step"].max()
        same(alone, ref[(ref["step"] >= first) & (ref["step"] <= last)].reset_index(drop=True))


def test_parts_rewritten_without_their_footer_entry_still_read(parts, tmp_path):
    run, ref = parts
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    for f in copy.glob("part-*.parquet"):
        table = pq.read_table(f)
        meta = {k: v for k, v in table.schema.metadata.items() if k != BEFORE_KEY.encode()}
        pq.write_table(table.replace_schema_metadata(meta), f)
    # Step 0's come from the model's initial parameters, the others from the part before.
    same(steptrace.load_trace(copy), ref)
    assert steptrace.verify(copy).ok


def test_a_changed_footer_entry_is_what_verify_finds(parts, tmp_path):
    run, _ = parts
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    f = sorted(copy.glob("part-*.parquet"))[2]
    table = pq.read_table(f)
    meta = dict(table.schema.metadata)
    entry = json.loads(meta[BEFORE_KEY.encode()])
    entry["values"]["w4_before_1_1"] += 1
    meta[BEFORE_KEY.encode()] = json.dumps(entry).encode()
    pq.write_table(table.replace_schema_metadata(meta), f)
    problem = steptrace.verify(copy).problem
    assert problem is not None and problem.columns == ("w4_before_1_1",)
    assert problem.step == entry["step"] and "the previous step ended at" in problem.message


def test_exact_runs_keep_their_texts_in_the_footer(tmp_path):
    run, ref = record_in_parts(tmp_path, "exact", epochs=1, rows_per_part=2)
    entry = json.loads(pq.read_schema(run / "part-000001.parquet").metadata[BEFORE_KEY.encode()])
    assert isinstance(entry["values"]["w2_before_1_1_exact"], str)
    full = steptrace.load_trace(run)
    same(full, ref)
    assert steptrace.verify(run).ok


def test_a_sweep_dataset_holds_what_the_files_store_and_no_column_of_nulls(tmp_path):
    steptrace.record("seed", numerics="float64", out=tmp_path, name="new")
    shutil.copy(REPO / "traces" / "golden" / "article-float64.parquet", tmp_path / "v1.parquet")
    sweep = steptrace.analysis.sweep_dataset(tmp_path).to_table().to_pandas()
    assert {"w2_after_1_1", "d2_1", "o1_1"} <= set(sweep.columns)
    assert not {"w2_before_1_1", "d1_1"} & set(sweep.columns)  # stored once, v1 runs too
    new = sweep[sweep["run"] == "new"]
    # (seed is null by meaning: the run is not shuffled)
    assert [c for c in new.columns if new[c].isna().all()] == ["seed"]


def test_a_golden_stores_each_value_once_when_that_loses_nothing(parts, tmp_path):
    from steptrace.compare.sides import Side, load_side, write_trace_file

    run, ref = parts
    golden = tmp_path / "golden.parquet"
    write_trace_file(load_side(run), golden)
    assert not STORED_ONCE & set(pq.read_schema(golden).names)
    same(steptrace.load_trace(golden), ref)
    assert steptrace.compare_traces(golden, run).identical
    # A step missing (rows dropped from a frame): nothing can be put back, so all is stored.
    gap = steptrace.load_trace(run)
    gap = gap[gap["step"] != 3].reset_index(drop=True)
    holed = tmp_path / "holed.parquet"
    write_trace_file(Side("b", load_side(run).meta, dataframe=gap), holed)
    assert set(pq.read_schema(holed).names) >= STORED_ONCE
    same(steptrace.load_trace(holed), gap)


def test_a_diverging_run_keeps_its_nans_bit_for_bit_across_parts(tmp_path):
    ds = seed_dataset()
    s = Settings.parse(ds, lr="1e30", epochs=40, numerics="float64", model=MLP)
    writer, tracker = new_run(ds, s, tmp_path, "nan", flush_seconds=0)
    write_run(writer, compute_blocks(ds, s, max_rows=5), tracker, None, None)
    ref = reference(ds, s)
    before = np.asarray(ref["w4_before_1_1"], dtype=np.float64)
    # Negative NaNs start some parts: JSON's NaN would come back positive.
    assert (np.isnan(before) & np.signbit(before)).any()
    got = steptrace.load_trace(writer.run_dir)
    for column, values in ref.items():
        if column not in ("step", "epoch", "sample"):
            assert np.array_equal(bits(got[column].to_numpy()), bits(values)), column
    assert steptrace.verify(writer.run_dir).ok


def test_a_run_whose_parts_store_differently_reads_as_one(parts, tmp_path):
    run, ref = parts
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    f = sorted(copy.glob("part-*.parquet"))[2]
    alone = steptrace.open_trace(f).read_table()  # every column, the stored once put back
    meta = pq.read_schema(f).metadata
    pq.write_table(alone.replace_schema_metadata(meta), f)  # this part now stores them all
    assert set(pq.read_schema(f).names) >= STORED_ONCE
    trace = steptrace.open_trace(copy)
    same(trace.read(), ref)
    steps = int(ref["step"].max()) + 1
    for lo in range(steps):
        want = ref[(ref["step"] >= lo) & (ref["step"] < lo + 2)].reset_index(drop=True)
        same(
            trace.read(["step", "w2_before_1_1", "d1_2"], steps=(lo, lo + 2)),
            want[["step", "w2_before_1_1", "d1_2"]],
        )
