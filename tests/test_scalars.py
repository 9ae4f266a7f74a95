"""Per-step figures (trace/scalars.py): one row per step, written with every run, equal to
what the run's own values give, readable by pandas and DuckDB, written crash-safely."""

from __future__ import annotations

import os
import re
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

import steptrace
from steptrace.trace import scalars as scalars_module
from steptrace.trace.scalars import SCALARS_DIR, ScalarSpec
from steptrace.trace.schema import tensors_of

from .conftest import REPO
from .test_open_run import MLP, loop, open_mlp, seed_arrays

SPEC = (REPO / "docs" / "trace-format.md").read_text(encoding="utf-8")


def expected_figures(path: Path) -> pd.DataFrame:
    """The figures worked out from the run's recorded values, one step at a time."""
    trace = steptrace.open_trace(path)
    step = steptrace.load_tensor(path, "lr")  # one row per data input
    steps = trace.read_table(["step"]).column("step").to_numpy()
    layers = sorted(int(t.name[1:-6]) for t in trace.tensors if re.fullmatch(r"w\d+_after", t.name))
    rows = []
    for s in np.unique(steps):
        at = steps == s
        row: dict[str, float] = {"step": s, "loss": steptrace.load_tensor(path, "loss")[at].mean(),
                                 "lr": step[at][0]}  # fmt: skip
        for k in layers:
            names = [n for n in (f"w{k}", f"b{k}") if any(t.name == n + "_after"
                                                          for t in trace.tensors)]  # fmt: skip

            def flat(tensor: str, at=at, names=names) -> np.ndarray:
                return np.concatenate(
                    [steptrace.load_tensor(path, tensor.format(n))[at][0].ravel() for n in names]
                )

            before, after = flat("{}_before"), flat("{}_after")
            grad = np.concatenate([steptrace.load_tensor(path, f"grad_{n}")[at].sum(axis=0).ravel()
                                   for n in names])  # fmt: skip
            row[f"w{k}_norm"] = np.linalg.norm(before)
            row[f"grad{k}_norm"] = np.linalg.norm(grad)
            row[f"dw{k}_norm"] = np.linalg.norm(after - before)
            row[f"dw{k}_ratio"] = np.linalg.norm(after - before) / np.linalg.norm(before)
            row[f"w{k}_max"] = np.abs(after).max()
        for t in trace.tensors:
            if re.fullmatch(r"o\d+", t.name):
                o = np.abs(steptrace.load_tensor(path, t.name)[at])
                row[f"{t.name}_max"] = o[np.isfinite(o)].max() if np.isfinite(o).any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_the_figures_are_the_runs_own_values_summed_up_step_by_step(traces, batch_size):
    run = steptrace.record("seed", lr="0.1", numerics="float64", model=MLP, epochs=3,
                           batch_size=batch_size, out=traces)  # fmt: skip
    figures = steptrace.load_scalars(run.path)
    expected = expected_figures(run.path)
    assert list(figures["step"]) == list(range(run.summary.steps))
    for column in expected:
        np.testing.assert_allclose(figures[column], expected[column], rtol=1e-12, err_msg=column)
    assert (figures.filter(like="nonfinite") == 0).all().all()


def test_an_exact_run_and_an_open_run_write_figures_too(traces):
    exact = steptrace.record("seed", lr="1", numerics="exact", epochs=2, out=traces)
    figures = steptrace.load_scalars(exact)
    np.testing.assert_allclose(figures["loss"], expected_figures(exact.path)["loss"])
    assert figures["w2_max"].iloc[-1] == pytest.approx(8.599998e9, rel=1e-6)
    X, Y = seed_arrays()
    with open_mlp(traces, "np") as other:
        loop(other, [[0, 1, 2]] * 2, X, Y)
    theirs = steptrace.load_scalars(other.path)
    ours = steptrace.load_scalars(steptrace.record(
        "seed", lr="1e-7", numerics="float64", model=MLP, epochs=2, out=traces))  # fmt: skip
    # The loop stores every value, steptrace each once: the same figures all the same.
    pd.testing.assert_frame_equal(theirs, ours, rtol=1e-12)


def test_non_finite_values_are_counted_by_layer_and_huge_outputs_seen(traces):
    run = steptrace.record("seed", lr="1e3", numerics="float64", model=MLP, epochs=40, out=traces)
    figures = steptrace.load_scalars(run)
    trace = steptrace.open_trace(run.path)
    steps = trace.read_table(["step"]).column("step").to_numpy()
    for k in (2, 4):
        # Every value of the layer, the ones stored once too (grad_b4 is δ5), but the
        # parameters before the step (the step before's after).
        counted = [t.name for t in trace.tensors if scalars_module.layer_of(t.name) == k
                   and not t.name.endswith("_before")]  # fmt: skip
        bad = sum(
            (~np.isfinite(steptrace.load_tensor(run.path, n).reshape(len(steps), -1))).sum(axis=1)
            for n in counted
        )
        per_step = pd.Series(bad).groupby(steps).sum()
        assert list(figures[f"nonfinite{k}"]) == list(per_step), k
    assert figures["nonfinite4"].iloc[-1] > 0  # the run diverged: the test sees it
    # Norms past the largest double's square root are still finite numbers.
    big = figures[np.isfinite(figures["w4_max"]) & (figures["w4_max"] > 1e200)]
    assert len(big) and np.isfinite(big["w4_norm"]).all()
    assert (figures["o2_max"].dropna() >= 0).all()


def test_pandas_and_duckdb_read_the_figures_and_skip_them_in_the_rows(traces):
    run = steptrace.record("seed", lr="0.1", numerics="float64", model=MLP, epochs=2, out=traces)
    folder = run.path / SCALARS_DIR
    by_pandas = pd.read_parquet(folder)
    by_duckdb = duckdb.sql(f"SELECT * FROM '{folder}/*.parquet' ORDER BY step").df()
    ours = steptrace.load_scalars(run.path)
    pd.testing.assert_frame_equal(by_pandas, ours, check_dtype=False)
    pd.testing.assert_frame_equal(by_duckdb, ours, check_dtype=False)
    # Reading the run's rows is untouched: the folder is skipped.
    assert "w2_norm" not in pd.read_parquet(run.path).columns
    assert len(steptrace.load_trace(run.path)) == 6


def test_the_figures_are_written_aside_fsynced_and_renamed(traces, monkeypatch):
    renamed, synced = [], []
    real_replace, real_fsync = os.replace, os.fsync

    def replace(src, dst):
        renamed.append((Path(src).name, Path(dst).name))
        return real_replace(src, dst)

    def fsync(fd):
        synced.append(fd)
        return real_fsync(fd)

    monkeypatch.setattr(scalars_module.os, "replace", replace)
    monkeypatch.setattr(scalars_module.os, "fsync", fsync)
    run = steptrace.record("seed", lr="0.1", numerics="float64", model=MLP, out=traces)
    assert (".scalars-000000.parquet.tmp", "scalars-000000.parquet") in renamed
    assert synced
    assert sorted(p.name for p in (run.path / SCALARS_DIR).iterdir()) == ["scalars-000000.parquet"]


def test_a_file_is_sealed_after_its_steps_and_the_next_begun(tmp_path, monkeypatch):
    from steptrace.train.columns import compute_blocks
    from steptrace.train.settings import Settings

    monkeypatch.setattr(scalars_module, "FILE_STEPS", 4)
    ds = steptrace.seed_dataset()
    settings = Settings.parse(ds, "0.1", epochs=4, numerics="float64", model=MLP)
    writer = scalars_module.ScalarsWriter(tmp_path, tensors_of(
        steptrace.open_trace(steptrace.record(ds, "0.1", numerics="float64", model=MLP,
                                              out=tmp_path / "t").path).meta), "r")  # fmt: skip
    for block in compute_blocks(ds, settings, max_rows=3):  # a block per epoch: 3 steps
        writer.add(block)
        writer.flush()
    # Sealed once a file holds 4 steps or more: 3 + 3, then 3 + 3.
    files = sorted((tmp_path / SCALARS_DIR).iterdir())
    assert [f.name for f in files] == ["scalars-000000.parquet", "scalars-000001.parquet"]
    assert [len(pd.read_parquet(f)) for f in files] == [6, 6]
    assert list(steptrace.load_scalars(tmp_path)["step"]) == list(range(12))


def test_the_spec_lists_every_figure_the_code_writes(traces):
    section = SPEC[SPEC.index("## Per-step figures") : SPEC.index("## Versions")]
    documented = [re.match(r"\| `([^`]+)`", line).group(1) for line in section.splitlines()
                  if line.startswith("| `")]  # fmt: skip
    run = steptrace.record("seed", lr="0.1", numerics="float64", model=MLP, out=traces)
    spec = ScalarSpec.of(tensors_of(steptrace.open_trace(run.path).meta))
    assert {re.sub(r"\d+", "{k}", n) for n in spec.names()} == set(documented)


def test_a_run_without_figures_says_which_format_it_is(traces):
    run = steptrace.record("seed", lr="0.1", numerics="float64", model=MLP, out=traces)
    for f in (run.path / SCALARS_DIR).iterdir():
        f.unlink()
    with pytest.raises(steptrace.TraceError, match="before trace format 2.2"):
        steptrace.load_scalars(run.path)


def test_the_figures_meta_names_the_run(traces):
    import json

    import pyarrow.parquet as pq

    run = steptrace.record("seed", lr="0.1", numerics="float64", model=MLP, out=traces)
    footer = pq.read_schema(next((run.path / SCALARS_DIR).glob("*.parquet"))).metadata
    meta = json.loads(footer[b"steptrace.scalars"])
    assert meta == {"format_version": "2.2", "run_id": run.run_id}
    assert tensors_of(steptrace.open_trace(run.path).meta)


def _buffered(rows: np.ndarray, steps: np.ndarray):
    """A RowBuffer of ``rows`` (one tensor set below) and its tensors, as a run's writer fills
    it."""
    from steptrace.numerics import get_numerics
    from steptrace.trace.run_buffer import RowBuffer
    from steptrace.trace.schema import Tensor

    tensors = [Tensor("x", (2,), data=True), Tensor("o1", (3,)), Tensor("d1", (3,)),
               Tensor("w1_after", (3, 2)), Tensor("loss", ()), Tensor("lr", ())]  # fmt: skip
    buffer = RowBuffer(tensors, len(rows))
    arrays, c = {}, 0
    for t in tensors:
        arrays[t.name] = rows[:, c : c + t.size]
        c += t.size
    buffer.put(steps, steps * 0, np.arange(len(steps)), arrays, get_numerics("float64"))
    return buffer, tensors


@pytest.mark.parametrize("as_rows", [False, True], ids=["columns", "rows"])
@pytest.mark.parametrize("nan_in", [3, 6], ids=["o1", "d1"])
def test_a_buffers_figures_are_each_steps_values_summed_up_whatever_they_hold(nan_in, as_rows):
    """The per-step figures of a buffer's block, as columns or as its rows lie (each tensor's
    rows one view, every column checked finite in one pass) are the figures counted value by
    value: NaN, ±inf, 0, a sum past the largest float, a step all finite beside one that is
    not; the outputs all finite (read as they are) or not (their |o| made)."""
    from steptrace.trace.scalars import step_figures

    rng = np.random.default_rng(3)
    steps = np.repeat(np.arange(4), [3, 2, 4, 1])
    rows = rng.normal(size=(len(steps), 16)) * 10
    rows[:, 2:5] *= -1  # o1 mostly negative: its largest |o| is a minimum's
    rows[3, nan_in], rows[5, 7], rows[6, 9] = np.nan, np.inf, -np.inf  # steps 1 and 2
    rows[9, 2:8] = [0.0, 0.0, 0.0, 1e308, 1e308, 1e308]  # step 3: o1 all 0; d1 sums past 1e308
    buffer, tensors = _buffered(rows, steps)
    block = buffer.rows_block(lambda b: None) if as_rows else buffer.block()
    matrix = block.rows if as_rows else block.matrix
    assert np.shares_memory(block.span([f"o1_{i}" for i in (1, 2, 3)]), matrix)  # in place
    got = step_figures(block, ScalarSpec.of(tensors))
    o, counted = rows[:, 2:5], rows[:, 2:14]  # o1, d1, w1_after: layer 1's
    for s in range(4):
        at = steps == s
        finite = np.abs(o[at])[np.isfinite(o[at])]
        assert got["o1_max"][s] == finite.max(), s
        assert got["nonfinite1"][s] == (~np.isfinite(counted[at])).sum(), s
    assert list(got["nonfinite1"]) == [0, 1, 2, 0]
    assert not np.signbit(got["o1_max"][3])  # 0, as |o| is, never −0
    # The same figures from the block's columns alone (no matrix: read column by column).
    plain = step_figures({k: np.array(block[k]) for k in block}, ScalarSpec.of(tensors))
    for name, column in got.items():
        np.testing.assert_array_equal(column, plain[name], err_msg=name)


def test_a_buffers_rows_made_columns_hold_only_the_columns_asked_for():
    """What a selection keeps of a row is all that is made columns of a block read where its
    rows lie (a network's row may hold a million values): those columns, the same values."""
    rng = np.random.default_rng(5)
    steps = np.repeat(np.arange(3), 2)
    rows = rng.normal(size=(len(steps), 16))
    buffer, _ = _buffered(rows, steps)
    block = buffer.rows_block(lambda b: None)
    whole = block.columns()
    asked = ["o1_3", "x_1", "w1_after_2_1"]
    some = block.columns(asked)
    assert set(some.row_of) == set(asked) and some.matrix.shape == (3, len(steps))
    for name in asked:
        assert np.array_equal(some[name], whole[name])
        assert np.array_equal(some.matrix[some.row_of[name]], whole[name])
    assert np.array_equal(some["step"], steps)
