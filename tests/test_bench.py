"""The benchmark harness runs end to end (tiny sizes) and prints every row of its table.

Figures are not checked: machines are noisy, and docs/benchmarks.md reports a full run. One
result is: the hand-written 3-2-1 loops of bench/mlp.py end with steptrace's weights, bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from .conftest import REPO

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
ROWS = [
    "untraced pure-Python loop (float64)",
    "steptrace record float64 (3,000 rows)",
    "steptrace record float32 (3,000 rows)",
    "steptrace record float64 (9,000 rows, own process)",
    "peak RSS: imports only / small run / big run",
    "3-2-1 network: plain Python loop, lists of floats",
    "3-2-1 network: the same loop unrolled, a local per weight",
    "3-2-1 network: steptrace record float64 (3,000 rows)",
    "3-2-1 network: final weights, steptrace vs both plain loops",
    "3-2-1 network: bytes on disk (3,000 rows)",
    "3-2-1 network: peak RSS recording in its own process",
    "3-2-1 network: PyTorch untraced, float64, per sample (1,000 steps)",
    "bytes per row on disk (3,000 rows)",
    "bytes per row on disk (9,000 rows)",
    "read 3,000 rows into pandas",
    "read a 100-step window of 9,000 rows",
    "steptrace diff of two 9,000-row runs (α 1e-9 vs 2e-9, own process)",
    "sweep of 4 lrs × 300 rows vs one run, one process",
    f"the same sweep with {CORES} worker processes (one per core)",
    "the command end to end: record --lr ×4 vs ×1",
    "the same on the article's 3 rows: record --lr ×4 vs ×1",
    "Parquet writing alone, one run of 300 rows",
    "the 14 columns that differ between runs, writing alone",
    "sequential step of 4 runs: numpy (runs × features) vs compiled walk",
    "lower bound of the sweep on 2 cores: (4 loops + 4 × own columns) / 2",
    "exact, article run (30 steps, lr 1)",
    "exact, growing rationals (lr 1e-9), 9 steps",
    "exact, growing rationals (lr 1e-9), 18 steps",
    "tensorboardX add_scalar ×30 per step",
    "MLflow log_metrics (sqlite store)",
    "MLflow log_metrics (file store)",
]


def test_quick_run_prints_every_row_of_the_table(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("steptrace ") and "Python 3." in lines[0]
    labels = [line.split("  ")[0] for line in lines[1:]]
    assert labels == ROWS
    for line in lines[1:]:
        assert len(line.split()) > len(line.split("  ")[0].split()), f"no value: {line!r}"
    # The hand-written 3-2-1 loops do the series' operations in its order: same bits.
    weights = next(line for line in lines if "final weights" in line)
    assert "identical, bit for bit" in weights, weights
    assert list(tmp_path.iterdir()) == []  # everything went to a temporary folder


def test_the_stage_timings_run_for_both_models():
    for model in ("article", "mlp"):
        done = subprocess.run(
            [sys.executable, str(REPO / "bench" / "stages.py"), model, "--rows", "3000",
             "--repeats", "1"],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        ns = {line.split()[0]: float(line.split()[1]) for line in done.stdout.splitlines()[1:]}
        assert set(ns) == {"walk", "loop", "rebuild", "arrays", "columns"}, done.stdout
        # One row a step: the loop keeps a few numbers and numpy rebuilds the path from them.
        assert ns["walk"] >= ns["loop"] > 0 and ns["rebuild"] > 0 and ns["columns"] > 0


def test_the_dashboard_timings_run_and_the_followed_curve_is_bounded(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "dashboard_bench.py"), "--steps", "300000",
         "--keep", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    rows = {line.split(" | ")[0].lstrip("| "): line for line in done.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| what")}  # fmt: skip
    assert len(rows) == 16, done.stdout
    kept = rows["followed run: loss curve, a later look (kept buckets)"]
    megabytes = float(kept.split(" MB kept")[0].split("| ")[-1])
    assert 0 < megabytes < 4, kept  # 300,000 steps: 16 bytes a step would be 4.8 MB


def test_the_trace_layouts_run_side_by_side_and_read_back_the_same_numbers(tmp_path):
    # The script itself fails if a layout reads back other numbers than the others.
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "trace_layout.py"), "--quick"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header, *rows = [line.strip("| ").split(" | ") for line in lines if line.startswith("| ")]
    assert header[:5] == ["network", "layout", "rows a group", "MB on disk", "B/value"]
    assert len(header) == 13
    layouts = ["columns", "fixed_size_list", "fixed_shape_tensor"]
    assert [(r[0].split(" (")[0], r[1]) for r in rows] == [
        (net, layout) for net in ("CNN", "3-2-1") for layout in layouts
    ]
    for row in rows:
        figures = dict(zip(header[2:], (float(c.replace(",", "")) for c in row[2:]), strict=True))
        assert figures["rows a group"] >= 1_024, row  # the writer's, for the row's width
        assert all(v > 0 for v in figures.values()), row  # DuckDB and Polars read every layout
        # Random float64 values, zstd: about 6-7 bytes each; the data repeat, the weights move.
        assert 1 < figures["B/value"] < 8.5, row
    assert "CNN (1,686 values, 23 tensors)" in rows[0][0], rows[0]
    examples = [line for line in lines if line.startswith("- ")]
    assert [e.split(":")[0] for e in examples] == [f"- {layout}" for layout in layouts]
    assert "SELECT avg(o2[129])" in examples[1] and ".arr.get(128)" in examples[1]
    assert list(tmp_path.iterdir()) == []


def test_the_cnn_benchmark_records_the_images_network_beside_numpy_and_torch(tmp_path):
    # The script itself fails unless its numpy loop ends with the recorded run's weights.
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "cnn.py"), "--quick"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("steptrace ") and "Python 3." in lines[0]
    header, *rows = [line.strip("| ").split(" | ") for line in lines if line.startswith("| ")]
    assert header == ["measure", "figure", "against"]
    assert [row[0] for row in rows] == [
        "numpy loop, untraced, per sample (2,000 steps)",
        "steptrace record --numerics float64 (2,000 rows)",
        "steptrace record --numerics float64 (1,000 rows)",
        "peak RSS of the command, 1,000 / 2,000 rows",
        "bytes on disk (2,000 rows)",
        "final weights: numpy loop vs steptrace",
        "PyTorch untraced, float64, per sample (300 steps)",
    ]
    figures = {row[0].split(" (")[0]: row for row in rows}
    assert (
        "all 105 parameters after 2,000 steps agree"
        in figures["final weights: numpy loop vs steptrace"][2]
    )
    # 1,686 values a row stored (1,856 recorded): float64, zstd; the data repeat every epoch.
    stored = figures["bytes on disk"][2]
    assert "(1,686 a row;" in stored and "(1,856 a row)" in stored, stored
    assert 1 < float(stored.split(" B per stored value")[0].strip("*")) < 8.5, stored
    assert figures["PyTorch untraced, float64, per sample"][1].endswith(" steps/s")
    assert list(tmp_path.iterdir()) == []  # everything went to a temporary folder


def test_the_flight_benchmark_times_each_way_of_recording_the_cnn(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "flight.py"), "--steps", "2", "--big-steps", "0",
         "--json"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    costs = json.loads(done.stdout)["costs"]
    assert set(costs["ratio"]) == {"figures alone", "keep_last=50", "every=100"}
    assert all(r > 0 for r in costs["ratio"].values())
    # Two steps: every=100 and figures alone hold step 0, the flight recorder both at the end.
    assert costs["bytes"]["keep_last=50"] > costs["bytes"]["every=100"] > 0
    # … and beside each, bench/floor.py's floor, timed in the same run
    assert set(costs["floor"]) == set(costs["ratio"])
    assert all(r > 0 for r in costs["floor"].values())
    assert list(tmp_path.iterdir()) == []


def test_the_floor_computes_the_figures_steptrace_records(tmp_path):
    """bench/floor.py's least recorder measures what steptrace does: the same batch losses and
    the same largest |output| of the last layer as a steptrace run of the same steps."""
    pytest.importorskip("torch")
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import floor
        import torch_cnn
    finally:
        sys.path.remove(str(REPO / "bench"))
    import steptrace

    model, optimizer, x, y = torch_cnn._network()
    with steptrace.torch.record(model, optimizer, out=tmp_path, name="run", every=10**9,
                                loss="cross_entropy") as rec:  # fmt: skip
        torch_cnn._train(model, optimizer, x, y, 3, rec)
    recorded = steptrace.load_scalars(rec.path)
    model, optimizer, x, y = torch_cnn._network()  # the same weights and dropout draws
    lean = floor.Floor(model, optimizer, "every=100", tmp_path)
    torch_cnn._train(model, optimizer, x, y, 3, lean)
    lean.close()
    figures = np.array(lean.figures)
    assert figures.shape[0] == 3
    np.testing.assert_allclose(figures[:, -1], recorded["loss"], rtol=1e-6)
    last = np.maximum(-figures[:, 14], figures[:, 15])  # the linear layer's (min, max): o8
    assert last.tolist() == recorded["o8_max"].tolist()
    assert pq.read_metadata(tmp_path / "values.parquet").num_rows == torch_cnn.BATCH  # step 0
