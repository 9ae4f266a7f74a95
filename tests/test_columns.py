"""The recorder's two passes — the weights' path on numbers, every other value on columns — give
the run the plain step-by-step maths gives (tests/reference.py), bit for bit in float runs and
as the same rationals in exact runs, for the article's model and for any stack."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import steptrace
from steptrace.data import seed_dataset
from steptrace.trace.rebuild import Rebuilt
from steptrace.trace.schema import after_columns, column_names, stack_tensors
from steptrace.train.columns import START, iter_blocks
from steptrace.train.prefetch import prefetch
from steptrace.train.settings import Settings

from .conftest import REPO
from .reference import KEYS, assert_bit_identical, dataset, reference
from .strategies import stacks

# Five rows: batches of 2 and 3 end each epoch with a partial batch. Negative inputs and
# targets make some o2 negative (the ReLU gate closes) and some gradients -0.0.
FIVE = dataset([(1, 2, 1), (3, -1, 0), (0, 4, 2), ("0.5", 2, 1), (-1, 5, 3)], "five")
TWO_LAYER = REPO / "examples" / "two-layer.json"


def recorded(ds, s, max_rows, **resume):
    """Every column of the blocks, the values stored once put back as a reader does (from
    the block's own rows and, for its first step, its START values)."""
    tensors = stack_tensors(s.model.stack(s.numerics), len(ds.targets))
    exact = s.numerics.is_exact
    names = ["step", "epoch", "sample", *column_names(tensors, exact)[6:]]
    got = []
    for block in iter_blocks(ds, s, max_rows=max_rows, **resume):
        table = pa.table({k: v for k, v in block.items() if k != START})
        rebuilt = Rebuilt.of(tensors, exact, table.column_names, (block["step"][0], block[START]))
        got.append(rebuilt.apply(table, names))
    whole = pa.concat_tables(got)
    return {c: np.asarray(whole.column(c).to_pylist()) if c.endswith("_exact")
            else whole.column(c).to_numpy() for c in names}  # fmt: skip


# Images: 2 channels of 4 × 4 values (32 features), walked a step at a time.
IMAGES = dataset(
    [(*(int(v) for v in np.random.default_rng(r).integers(-3, 4, 32)), r % 2)
     for r in range(5)], "images")  # fmt: skip
CONV = {"layers": [{"type": "input", "shape": [2, 4, 4]},
                   {"type": "conv2d", "out": 3, "kernel": 3, "bias": True},
                   {"type": "relu"}, {"type": "maxpool2d", "size": 2}, {"type": "flatten"},
                   {"type": "linear", "out": 1, "bias": True}]}  # fmt: skip
NORMALIZED = {"layers": [{"type": "input", "shape": [2, 4, 4]},
                         {"type": "conv2d", "out": 2, "kernel": 3, "bias": False},
                         {"type": "normalization"}, {"type": "leaky_relu"},
                         {"type": "maxpool2d", "size": 2}, {"type": "flatten"},
                         {"type": "linear", "out": 1, "bias": True}]}  # fmt: skip


@pytest.mark.parametrize("numerics", ["exact", "float64", "float32"])
@pytest.mark.parametrize("batch_size", [1, 2])
def test_an_image_stack_is_the_plain_maths_in_every_number_system(numerics, batch_size):
    epochs = 1 if numerics == "exact" else 3
    s = Settings.parse(IMAGES, lr="1/50", epochs=epochs, batch_size=batch_size,
                       numerics=numerics, model=CONV, shuffle=True, seed=4)  # fmt: skip
    want = reference(IMAGES, s)
    assert "o2_3_4_4" in want and "w2_after_3_2_3_3" in want
    for max_rows in (2, 1_000):
        assert_bit_identical(recorded(IMAGES, s, max_rows), want)


@pytest.mark.parametrize("numerics", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_a_normalization_sees_each_steps_rows_together(numerics, batch_size):
    s = Settings.parse(IMAGES, lr="1/50", epochs=3, batch_size=batch_size,
                       numerics=numerics, model=NORMALIZED, shuffle=True, seed=4)  # fmt: skip
    want = reference(IMAGES, s)
    for max_rows in (3, 1_000):
        assert_bit_identical(recorded(IMAGES, s, max_rows), want)


@pytest.mark.parametrize("numerics", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [1, 2, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_the_articles_model_is_bit_identical_to_the_plain_maths(numerics, batch_size, shuffle):
    s = Settings.parse(FIVE, lr="1/64", epochs=9, batch_size=batch_size, init="1/3,-1/7",
                       numerics=numerics, shuffle=shuffle, seed=11)  # fmt: skip
    want = reference(FIVE, s)
    assert (want["d3_1"] == 0).any() and (want["d3_1"] != 0).any()  # the gate opens and closes
    # Chunks of 1, 4 and 7 rows end inside epochs (5 rows each); 10 000 is one chunk.
    for max_rows in (1, 4, 7, 10_000):
        assert_bit_identical(recorded(FIVE, s, max_rows), want)


@pytest.mark.parametrize("numerics", ["exact", "float64", "float32"])
@pytest.mark.parametrize("batch_size", [1, 2])
def test_a_two_layer_network_is_the_plain_maths_in_every_number_system(numerics, batch_size):
    ds = dataset([(1, 2, 3, 1), (0, -1, 2, 0), (2, 0, -1, 1)])
    # Exact rationals double their digits at every step of a two-layer network (products of
    # weights): one epoch stays within the exact limit (docs/numerics.md).
    epochs = 1 if numerics == "exact" else 4
    s = Settings.parse(ds, lr="1/10", epochs=epochs, batch_size=batch_size, numerics=numerics,
                       model=TWO_LAYER, shuffle=True, seed=3)  # fmt: skip
    want = reference(ds, s)
    assert "w4_after_1_2" in want and "b2_after_2" in want
    for max_rows in (2, 1_000):
        assert_bit_identical(recorded(ds, s, max_rows), want)


STACKS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@STACKS
@given(data=st.data(), numerics=st.sampled_from(["exact", "float64", "float32"]),
       batch_size=st.integers(1, 3))  # fmt: skip
def test_any_stack_is_the_plain_maths(data, numerics, batch_size):
    n_in, n_out = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 2))
    model = data.draw(stacks(n_in, n_out, rational=numerics == "exact"))
    ints = st.integers(-3, 3)
    rows = [tuple(data.draw(ints) for _ in range(n_in + n_out)) for _ in range(4)]
    ds = dataset(rows, targets=n_out)
    # Exact rationals double their digits at every step of a deep stack: one epoch in exact.
    epochs = 1 if numerics == "exact" else 3
    s = Settings.parse(ds, lr="1/8", epochs=epochs, batch_size=batch_size, numerics=numerics,
                       model=model)  # fmt: skip
    assert_bit_identical(recorded(ds, s, data.draw(st.integers(1, 12))), reference(ds, s))


def test_logistic_layers_are_the_plain_maths_in_floats():
    ds = dataset([(1, 2, 3, 1), (0, -1, 2, 0), (2, 0, -1, 1)])
    for numerics in ("float64", "float32"):
        s = Settings.parse(ds, lr="1/2", epochs=20, numerics=numerics, seed=5,
                           model=REPO / "examples" / "logistic.json")  # fmt: skip
        want = reference(ds, s)
        assert 0 < want["o3_1"].min() < want["o3_1"].max() < 1
        assert_bit_identical(recorded(ds, s, 7), want)


@pytest.mark.parametrize("numerics", ["float64", "float32"])
def test_weights_that_keep_moving_for_many_epochs(numerics):
    ds = seed_dataset()
    s = Settings.parse(ds, lr="1e-9", epochs=400, numerics=numerics, init="0.005,-0.0002,0.0002")
    want = reference(ds, s)
    assert len(np.unique(want["w2_after_1_2"])) > 100
    assert_bit_identical(recorded(ds, s, 256), want)


@pytest.mark.parametrize("numerics", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [1, 2])
def test_divergence_to_infinity_and_nan_is_bit_identical(numerics, batch_size):
    s = Settings.parse(FIVE, lr="1e3", epochs=60, batch_size=batch_size, init="1,-1",
                       numerics=numerics)  # fmt: skip
    want = reference(FIVE, s)
    values = np.concatenate([v for k, v in want.items() if k not in KEYS])
    assert np.isinf(values).any() and np.isnan(values).any()
    for max_rows in (3, 1_000):
        assert_bit_identical(recorded(FIVE, s, max_rows), want)


@pytest.mark.parametrize("k", [1, 4])
def test_any_number_of_features(k):
    rows = [(*tuple(range(j, j + k)), j % 3) for j in range(-2, 4)]
    ds = dataset(rows)
    init = ",".join(f"1/{j + 2}" for j in range(k))
    for batch_size in (1, 4):
        s = Settings.parse(ds, lr="1/50", epochs=5, batch_size=batch_size, init=init,
                           numerics="float64", shuffle=True, seed=2)  # fmt: skip
        assert_bit_identical(recorded(ds, s, 5), reference(ds, s))


@pytest.mark.parametrize("numerics", ["exact", "float64", "float32"])
def test_continuing_from_a_step_matches_the_plain_maths(numerics):
    ds = dataset([(1, 2, 3, 1), (0, -1, 2, 0), (2, 0, -1, 1), (1, 1, 1, 0), (3, 1, 0, 1)])
    # Exact rationals double their digits at every step of a two-layer network: 3 steps.
    epochs, at = (1, 2) if numerics == "exact" else (6, 4)
    s = Settings.parse(ds, lr="1/64", epochs=epochs, batch_size=2, numerics=numerics,
                       shuffle=True, seed=4, model=TWO_LAYER)  # fmt: skip
    full = recorded(ds, s, 1_000)
    stack = s.model.stack(s.numerics)
    start = int(np.flatnonzero(full["step"] == at)[0])
    # The parameters before step `at` are where a resumed run starts from.
    suffix = "_exact" if numerics == "exact" else ""
    before = [c.replace("_after", "_before", 1) + suffix
              for c in after_columns(stack_tensors(stack, 1))]  # fmt: skip
    params = stack.unflat([_number(full[c][start], s.numerics) for c in before])
    resumed = recorded(ds, s, 3, start_step=at, params=params)
    assert_bit_identical(resumed, {k: v[start:] for k, v in full.items()})
    assert_bit_identical(resumed, reference(ds, s, start_step=at))


@pytest.mark.parametrize("numerics", ["exact", "float64", "float32"])
def test_a_walk_keeps_what_its_updates_need_and_stops_on_time(numerics):
    """One row a step, the walk keeps only the numbers of a step its updates need that are not
    data — the article: δ3 alone for its three weights; the 3-2-1 network: five numbers for
    its eleven parameters — and the path numpy rebuilds from them is the plain maths', also
    when the clock cuts the walk short."""
    from fractions import Fraction

    from steptrace.schedule import ChunkPlan, EpochOrders
    from steptrace.train.compiled import compile_walk, walk

    ds = seed_dataset()
    s = Settings.parse(ds, lr="1e-9", epochs=40, numerics=numerics, init="0.005,-0.0002,0.0002")
    stack = s.model.stack(s.numerics)
    rebuild = compile_walk(stack, numerics, False).rebuild
    assert rebuild is not None and len(rebuild.kept) == 1 and stack.n_params == 3
    model = REPO / "examples" / "mlp-3-2-1.json"
    spec = Settings.parse(ds, lr="1/10", numerics=numerics, seed=1, model=model).model
    mlp = spec.stack(s.numerics)
    rebuild = compile_walk(mlp, numerics, False).rebuild
    assert rebuild is not None and len(rebuild.kept) == 5 and mlp.n_params == 11
    assert compile_walk(mlp, numerics, True).rebuild is None  # steps of several rows add up

    xs, ys = ds.in_numerics(s.numerics)
    plan = ChunkPlan(len(ds), 1, EpochOrders(len(ds), False, None), 0, 120)
    lr = s.numerics.make(s.lr)
    path = walk(stack, s.model.params(s.numerics), lr, xs, ys, plan, s.numerics, max_seconds=0)
    walked = len(path) - 1
    assert 0 < walked < 120 and walked % 3 == 0  # the clock's first look, at whole epochs
    want = reference(ds, s)
    for j in range(3):
        column = f"w2_after_1_{j + 1}"
        if numerics == "exact":
            assert list(path[1:, j]) == [Fraction(q) for q in want[column + "_exact"][:walked]]
        else:
            got = path[1:, j].astype(np.float64)
            assert (got.view(np.int64) == want[column][:walked].view(np.int64)).all()
            assert len(np.unique(got)) >= walked // 3  # the weights move


def _number(value, numerics):
    from fractions import Fraction

    if numerics.is_exact:
        return Fraction(value)
    return np.float32(value) if numerics.name == "float32" else float(value)


def test_blocks_end_on_step_boundaries():
    s = Settings.parse(FIVE, lr="1/64", epochs=4, batch_size=3, init="1/3,-1/7",
                       numerics="float64")  # fmt: skip
    blocks = list(iter_blocks(FIVE, s, max_rows=4))
    assert len(blocks) > 1
    for a, b in itertools.pairwise(blocks):
        assert a["step"][-1] + 1 == b["step"][0]


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
    "settings_",
    [
        {"numerics": "float64", "batch_size": 1, "shuffle": False},
        {"numerics": "float32", "batch_size": 2, "shuffle": True, "seed": 5},
        {"numerics": "float64", "batch_size": 3, "shuffle": True, "seed": 7},
        {"numerics": ["float64", "float32"], "batch_size": [1, 3], "shuffle": True, "seed": 9},
    ],
    ids=["float64", "float32-batches-shuffled", "float64-batches-of-3", "grid"],
)
def test_each_run_of_a_sweep_is_the_run_recorded_alone(tmp_path, settings_):
    lrs = ["1/64", "1e-3", "1e3"]  # 1e3 diverges to inf and NaN
    common = {"epochs": 40, "init": "1,-1", **settings_}
    swept = steptrace.sweep(lrs, FIVE, out=tmp_path / "sweep", name="s", **common)
    points = len(lrs) * len(np.atleast_1d(settings_["numerics"]))
    points *= len(np.atleast_1d(settings_["batch_size"]))
    assert [r.status for r in swept] == ["complete"] * points
    assert all(r.summary.diverged_at is not None for r in swept[2::3])
    for run in swept:
        meta = steptrace.open_trace(run.path).meta
        alone = steptrace.record(
            FIVE, meta["lr"], out=tmp_path / "alone",
            **{**common, "numerics": meta["numerics"], "batch_size": meta["batch_size"]},
        )  # fmt: skip
        got, want = parquet_columns(run.path), parquet_columns(alone.path)
        expected = column_names(steptrace.open_trace(run.path).tensors)
        assert sorted(got) == sorted(c for c in expected if c != "run_id")
        assert_bit_identical(got, want)
    assert [steptrace.open_trace(r.path).lr_text for r in swept] == lrs * (points // 3)


def test_exact_sweeps_match_single_runs(tmp_path):
    swept = steptrace.sweep(["1", "1/2"], "seed", out=tmp_path / "sweep", numerics="exact")
    for lr, run in zip(["1", "1/2"], swept, strict=True):
        alone = steptrace.record("seed", lr, out=tmp_path / "alone", numerics="exact")
        got, want = parquet_columns(run.path), parquet_columns(alone.path)
        assert "w2_after_1_2_exact" in got
        for name in want:
            assert got[name].tolist() == want[name].tolist(), name


def test_a_sweep_of_a_model_with_drawn_weights_starts_every_run_from_the_same_weights(tmp_path):
    model = {"layers": [{"type": "input"}, {"type": "linear", "out": 2},
                        {"type": "relu"}, {"type": "linear", "out": 1}]}  # fmt: skip
    swept = steptrace.sweep(["1/10", "1/20"], "seed", out=tmp_path, numerics="exact", model=model)
    first, second = (steptrace.open_trace(r.path).meta for r in swept)
    assert first["model"] == second["model"] and first["seed"] == second["seed"] is not None


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
