"""The benchmark harness runs end to end (tiny sizes) and prints every row of its table.

Figures are not checked: machines are noisy, and docs/benchmarks.md reports a full run.
"""

from __future__ import annotations

import subprocess
import sys

from steptrace.train.sweeppool import available_cores

from .conftest import REPO

CORES = available_cores()
ROWS = [
    "untraced pure-Python loop (float64)",
    "steptrace record float64 (3,000 rows)",
    "steptrace record float32 (3,000 rows)",
    "steptrace record float64 (9,000 rows, own process)",
    "peak RSS: imports only / small run / big run",
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
    "the 20 columns that differ between runs, writing alone",
    "sequential step of 4 runs: numpy (runs × features) vs plain Python",
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
    assert list(tmp_path.iterdir()) == []  # everything went to a temporary folder
