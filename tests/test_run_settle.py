"""A learned plan written into a closed run: rows that keep their numbers keep their bytes (only
the parts' footers are written again); blocks of rows (from buffers filled again) become a
part's columns as they were written; wide rows get the writer's options for wide rows; a
dataset's rows rounded into the run's numbers at once, as one by one."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

import steptrace
from steptrace.numerics import get_numerics
from steptrace.trace import run as run_module
from steptrace.trace import run_settle
from steptrace.trace.placement import RowNumbers, rounded
from steptrace.trace.writer import WIDE_COLUMNS, ZSTD_LEVEL, parquet_options

from .test_open_run import loop, open_mlp, seed_arrays


def data_end(data: bytes) -> int:
    """Where a Parquet file's footer starts."""
    return len(data) - 8 - int.from_bytes(data[-8:-4], "little")


def test_rows_that_keep_their_numbers_keep_their_bytes_and_get_the_plan_in_the_footer(
    traces, monkeypatch
):
    before: dict[str, bytes] = {}
    settle = run_module.settle

    def snapshot_then_settle(path, *args, **kwargs):
        before.update({p.name: p.read_bytes() for p in path.glob("part-*.parquet")})
        return settle(path, *args, **kwargs)

    def no_rewrite(*args, **kwargs):
        raise AssertionError("a part was read and written again")

    monkeypatch.setattr(run_module, "settle", snapshot_then_settle)
    monkeypatch.setattr(run_settle, "_renumbered", no_rewrite)
    X, Y = seed_arrays()
    with open_mlp(traces, "np", flush_seconds=0.0) as run:  # a part a step
        loop(run, [[0, 1, 2]] * 4, X, Y)
    assert len(before) > 1
    trace = steptrace.open_trace(run.path)
    assert (trace.meta["epochs"], trace.meta["dataset"]["rows"]) == (4, 3)
    for name, old in before.items():
        new = (run.path / name).read_bytes()
        assert new[: data_end(new)] == old[: data_end(old)], name  # the same pages, unread
        footer = pq.read_metadata(run.path / name)
        assert json.loads(footer.metadata[b"steptrace"]) == {
            k: v for k, v in trace.meta.items() if k not in ("status", "reason", "summary")
        }
        assert pq.read_table(run.path / name).equals(
            pq.read_table(pa.BufferReader(old)).replace_schema_metadata(
                pq.read_schema(run.path / name).metadata
            )
        )
    assert trace.read(columns=["epoch"])["epoch"].tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    report = steptrace.verify(run.path)
    assert report.ok, str(report)


def test_a_run_renumbered_as_a_stream_rewrites_the_parts_whose_numbers_change(traces, monkeypatch):
    rewritten = []
    renumbered = run_settle._renumbered
    monkeypatch.setattr(
        run_settle,
        "_renumbered",
        lambda tmp, *a: (rewritten.append(tmp.name), renumbered(tmp, *a))[1],
    )
    X, Y = seed_arrays()
    with open_mlp(traces, "short", flush_seconds=0.0) as run:  # a part a step
        loop(run, [[0, 1, 2], [0, 1]], X, Y)
    assert len(list(run.path.glob("part-*.parquet"))) == 5
    # The first epoch's rows are numbered as the stream's already: epoch 0, samples 0, 1, 2.
    assert sorted(rewritten) == [".part-000003.parquet.tmp", ".part-000004.parquet.tmp"]
    frame = steptrace.open_trace(run.path).read(columns=["epoch", "sample"])
    assert frame["sample"].tolist() == list(range(5)) and frame["epoch"].tolist() == [0] * 5
    assert steptrace.verify(run.path).ok


def test_blocks_handed_over_one_by_one_are_one_row_group_of_their_rows_in_order(
    traces, monkeypatch
):
    monkeypatch.setattr(run_module, "buffer_rows", lambda columns: 2)  # a block every 2 rows
    X, Y = seed_arrays()
    with open_mlp(traces, "blocks", flush_seconds=3600.0) as run:
        loop(run, [[0, 1, 2]] * 3, X, Y)
    (part,) = run.path.glob("part-*.parquet")
    assert pq.read_metadata(part).num_row_groups == 1  # 5 blocks, one group
    frame = steptrace.open_trace(run.path).read()
    assert frame["step"].tolist() == list(range(9))
    np.testing.assert_array_equal(frame["x_1"], X[[0, 1, 2] * 3][:, 0])
    assert steptrace.verify(run.path).ok


@pytest.mark.parametrize("columns", [WIDE_COLUMNS - 1, WIDE_COLUMNS])
def test_wide_rows_are_compressed_with_lz4_narrow_ones_with_zstd(columns):
    schema = pa.schema([pa.field(f"v_{i}", pa.float64()) for i in range(columns)])
    options = parquet_options(schema)
    wide = columns >= WIDE_COLUMNS
    assert options["compression"] == ("lz4" if wide else "zstd")
    assert options["compression_level"] == (None if wide else ZSTD_LEVEL)


def test_a_datasets_rows_are_rounded_into_float32_at_once_as_one_by_one():
    rng = np.random.default_rng(0)
    values = [Fraction(float(v)) for v in rng.uniform(-3, 3, 2_000)]
    for a in rng.uniform(-3, 3, 500).astype(np.float32):  # halfway between two float32s
        b = np.nextafter(a, np.float32(np.inf))
        values.append((Fraction(float(a)) + Fraction(float(b))) / 2)
    values += [Fraction(1, 10), Fraction(-7, 3), Fraction(2**60 + 1, 2**10), Fraction(3, 2**1080)]
    for name in ("float32", "float64"):
        numerics = get_numerics(name)
        expected = np.array([float(numerics.make(q)) for q in values])
        assert rounded(values, numerics).tobytes() == expected.tobytes(), name


@given(
    st.lists(st.integers(1, 5), min_size=1, max_size=40),
    st.integers(1, 4),
    st.randoms(use_true_random=False),
)
def test_each_rows_number_in_the_run_counts_every_steps_rows(sizes, chunks, rnd):
    """RowNumbers, given the steps' sizes in chunks, numbers the rows of any steps held (in
    order, in row groups cut anywhere, a step across two) as their places among all rows."""
    numbers = RowNumbers()
    cuts = sorted(rnd.sample(range(1, len(sizes)), min(chunks - 1, len(sizes) - 1)))
    for part in np.split(np.array(sizes), cuts):
        numbers.add(part)
    everything = np.repeat(np.arange(len(sizes)), sizes)
    place = np.arange(len(everything))
    held = np.array(sorted(rnd.sample(range(len(sizes)), rnd.randint(1, len(sizes)))))
    rows = np.isin(everything, held)
    steps = everything[rows]
    cut = rnd.randint(0, len(steps))  # two row groups
    first = numbers.of_rows(steps[:cut])
    carry = run_settle._carried(steps[:cut], (-1, 0))
    np.testing.assert_array_equal(
        np.concatenate([first, numbers.of_rows(steps[cut:], carry)]), place[rows]
    )


@pytest.mark.parametrize("keep", [{"every": 3}, {"keep_last": 3}], ids=str)
def test_a_stream_with_gaps_numbers_its_rows_among_all_the_rows_it_was_given(traces, keep):
    """A loop that stops inside an epoch is a stream: each row's sample is its place among all
    the inputs the loop gave, those of the steps the run does not hold included."""
    X, Y = seed_arrays()
    runs = {}
    for name, kw in (("full", {}), ("gaps", keep)):
        with open_mlp(traces, name, **kw) as run:
            loop(run, [[0, 1, 2]] * 3 + [[0]], X, Y, batch_size=2)  # steps of 2, 1, 2, 1 …
        runs[name] = steptrace.load_trace(run.path)[["step", "epoch", "sample"]]
    full, gaps = runs["full"], runs["gaps"]
    assert json.loads((traces / "gaps" / "_run.json").read_text())["epochs"] == 1
    held = full[full["step"].isin(gaps["step"])].reset_index(drop=True)
    assert len(gaps) < len(full)
    assert gaps.reset_index(drop=True).equals(held)
