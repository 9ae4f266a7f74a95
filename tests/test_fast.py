"""The fast paths are bit-identical to the step-by-step maths of trainer.iter_events.

Values are compared as bit patterns (float64 viewed as uint64), so -0.0 against 0.0 and one NaN
payload against another count as differences.
"""

from __future__ import annotations

import itertools
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import steptrace
from steptrace.data import Dataset, seed_dataset
from steptrace.trace.schema import column_names
from steptrace.train.fast import float_blocks, prefetch, step_loop
from steptrace.train.trainer import Settings, iter_events


def dataset(rows: list[tuple[int | str, ...]], name: str = "d") -> Dataset:
    """Rows of (x1, …, xk, y), values read exactly."""
    k = len(rows[0]) - 1
    return Dataset(
        name, tuple(f"f{j}" for j in range(1, k + 1)), "t",
        tuple(tuple(Fraction(v) for v in r[:k]) for r in rows),
        tuple(Fraction(r[k]) for r in rows),
    )  # fmt: skip


# Five rows: batches of 2 and 3 end each epoch with a partial batch. Negative inputs and
# targets make some o2 negative (the ReLU gate closes) and some gradients -0.0.
FIVE = dataset([(1, 2, 1), (3, -1, 0), (0, 4, 2), ("0.5", 2, 1), (-1, 5, 3)], "five")
KEYS = ("step", "epoch", "sample")


def reference(ds: Dataset, settings: Settings, **resume: Any) -> dict[str, np.ndarray]:
    """Every column of the run, from the scalar maths, one event at a time."""
    cols: dict[str, list[Any]] = {}
    with np.errstate(all="ignore"):  # float32 scalars warn on overflow; divergence is data
        events = list(iter_events(ds, settings, **resume))
    for e in events:
        for key in KEYS:
            cols.setdefault(key, []).append(getattr(e, key))
        for name, value in e.values().items():
            cols.setdefault(name, []).append(float(value))
    return {k: np.array(v, dtype=np.int64 if k in KEYS else np.float64) for k, v in cols.items()}


def fast(ds: Dataset, settings: Settings, max_rows: int, **resume: Any) -> dict[str, np.ndarray]:
    blocks = list(float_blocks(ds, settings, max_rows=max_rows, **resume))
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


def bits(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    return values.view(np.uint64) if values.dtype == np.float64 else values


def assert_bit_identical(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert set(want) <= set(got)
    for name, column in want.items():
        assert np.array_equal(bits(got[name]), bits(column)), f"column {name} differs"


@pytest.mark.parametrize("numerics", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [1, 2, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_blocks_are_bit_identical_to_the_scalar_maths(numerics, batch_size, shuffle):
    s = Settings.parse(FIVE, lr="1/64", epochs=9, batch_size=batch_size, init="1/3,-1/7",
                       numerics=numerics, shuffle=shuffle, seed=11)  # fmt: skip
    want = reference(FIVE, s)
    assert (want["d3_1"] == 0).any() and (want["d3_1"] != 0).any()  # the gate opens and closes
    # Chunks of 1, 4 and 7 rows end inside epochs (5 rows each); 10 000 is one chunk.
    for max_rows in (1, 4, 7, 10_000):
        assert_bit_identical(fast(FIVE, s, max_rows), want)


@pytest.mark.parametrize("numerics", ["float64", "float32"])
def test_weights_that_keep_moving_for_many_epochs(numerics):
    ds = seed_dataset()
    s = Settings.parse(ds, lr="1e-9", epochs=400, numerics=numerics, init="0.005,-0.0002,0.0002")
    want = reference(ds, s)
    assert len(np.unique(want["w_after_2"])) > 100
    assert_bit_identical(fast(ds, s, 256), want)


@pytest.mark.parametrize("numerics", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [1, 2])
def test_divergence_to_infinity_and_nan_is_bit_identical(numerics, batch_size):
    s = Settings.parse(FIVE, lr="1e3", epochs=60, batch_size=batch_size, init="1,-1",
                       numerics=numerics)  # fmt: skip
    want = reference(FIVE, s)
    values = np.concatenate([v for k, v in want.items() if k not in KEYS])
    assert np.isinf(values).any() and np.isnan(values).any()
    for max_rows in (3, 1_000):
        assert_bit_identical(fast(FIVE, s, max_rows), want)


@pytest.mark.parametrize("k", [1, 4])
def test_any_number_of_features(k):
    rows = [(*tuple(range(j, j + k)), j % 3) for j in range(-2, 4)]
    ds = dataset(rows)
    init = ",".join(f"1/{j + 2}" for j in range(k))
    for batch_size in (1, 4):
        s = Settings.parse(ds, lr="1/50", epochs=5, batch_size=batch_size, init=init,
                           numerics="float64", shuffle=True, seed=2)  # fmt: skip
        assert_bit_identical(fast(ds, s, 5), reference(ds, s))


@pytest.mark.parametrize("numerics", ["float64", "float32"])
def test_continuing_from_a_step_matches_the_scalar_maths(numerics):
    s = Settings.parse(FIVE, lr="1/64", epochs=6, batch_size=2, init="1/3,-1/7",
                       numerics=numerics, shuffle=True, seed=4)  # fmt: skip
    events = list(iter_events(FIVE, s))
    resume = {"start_step": events[9].step, "w": events[9].w_before}
    assert events[8].step != events[9].step  # a run continues from the first row of a step
    assert_bit_identical(fast(FIVE, s, 4, **resume), reference(FIVE, s, **resume))


def test_blocks_end_on_step_boundaries():
    s = Settings.parse(FIVE, lr="1/64", epochs=4, batch_size=3, init="1/3,-1/7",
                       numerics="float64")  # fmt: skip
    blocks = list(float_blocks(FIVE, s, max_rows=4))
    assert len(blocks) > 1
    for a, b in itertools.pairwise(blocks):
        assert a["step"][-1] + 1 == b["step"][0]


def test_step_loop_mirrors_the_model_for_one_feature():
    loop = step_loop(1, batched=False)
    d3: list[float] = []
    w = loop((0.5,), 0.1, 0.0, [(2.0, 0.0), (-4.0, 1.0)], [0, 1, 0], [], d3)
    # o2 = 1 ≥ 0: δ3 = 1, w = 0.5 - 0.1*2 = 0.3; o2 = -1.2 < 0: δ3 = 0; o2 = 0.6: δ3 = 0.6.
    assert d3 == [1.0, 0.0, 0.6]
    assert w == (0.3 - 0.1 * (0.6 * 2.0),)


def test_prefetch_hands_on_errors_and_stops_when_closed():
    def items():
        yield 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        list(prefetch(items()))

    produced = []

    def endless():
        for i in range(10**9):
            produced.append(i)
            yield i

    before = threading.active_count()
    it = prefetch(endless())
    assert next(it) == 0
    it.close()
    assert threading.active_count() == before
    assert len(produced) <= 3  # one item handed over, one queued, one being made


# --- sweeps ---------------------------------------------------------------------------------


def parquet_columns(path: Path) -> dict[str, np.ndarray]:
    table = steptrace.open_trace(path).read_table()
    return {name: table[name].to_numpy() for name in table.column_names if name != "run_id"}


@pytest.mark.parametrize(
    "settings",
    [
        {"numerics": "float64", "batch_size": 1, "shuffle": False},
        {"numerics": "float32", "batch_size": 2, "shuffle": True, "seed": 5},
        {"numerics": "float64", "batch_size": 3, "shuffle": True, "seed": 7},
    ],
)
def test_each_run_of_a_sweep_is_the_run_recorded_alone(tmp_path, settings):
    lrs = ["1/64", "1e-3", "1e3"]  # 1e3 diverges to inf and NaN
    common = {"epochs": 40, "init": "1,-1", **settings}
    swept = steptrace.sweep(lrs, FIVE, out=tmp_path / "sweep", name="s", **common)
    assert [r.status for r in swept] == ["complete"] * 3
    assert swept[2].summary.diverged_at is not None
    for lr, run in zip(lrs, swept, strict=True):
        alone = steptrace.record(FIVE, lr, out=tmp_path / "alone", **common)
        got, want = parquet_columns(run.path), parquet_columns(alone.path)
        assert sorted(got) == sorted(c for c in column_names(2) if c != "run_id")
        assert_bit_identical(got, want)
        assert steptrace.open_trace(run.path).lr_text == lr


def test_exact_sweeps_take_the_simple_path_and_match_single_runs(tmp_path):
    swept = steptrace.sweep(["1", "1/2"], "seed", out=tmp_path / "sweep", numerics="exact")
    for lr, run in zip(["1", "1/2"], swept, strict=True):
        alone = steptrace.record("seed", lr, out=tmp_path / "alone", numerics="exact")
        got, want = parquet_columns(run.path), parquet_columns(alone.path)
        assert "w_after_2_exact" in got
        for name in want:
            assert got[name].tolist() == want[name].tolist(), name


def test_a_sweep_stopped_by_an_error_keeps_its_flushed_runs_and_stops_computing(
    tmp_path, monkeypatch
):
    from steptrace.errors import WriteError
    from steptrace.trace.writer import TraceWriter

    real_write = TraceWriter.write

    def failing_write(self, block):
        if self.run_dir.name == "s-lr2e-3":  # the first block of the second run
            raise WriteError("disk full")
        real_write(self, block)

    monkeypatch.setattr(TraceWriter, "write", failing_write)
    before = threading.active_count()
    common = {"epochs": 30_000, "numerics": "float64", "init": "1/3,-1/7"}
    with pytest.raises(WriteError, match="disk full"):
        steptrace.sweep(["1e-3", "2e-3", "3e-3"], FIVE, out=tmp_path, name="s", **common)
    assert threading.active_count() == before  # the thread computing blocks has stopped
    first, second = steptrace.open_trace(tmp_path / "s-lr1e-3"), tmp_path / "s-lr2e-3"
    assert first.status == "complete" and first.num_rows == 150_000
    assert steptrace.open_trace(second).status == "incomplete"
    assert not (tmp_path / "s-lr3e-3").exists()
