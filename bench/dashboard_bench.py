"""How fast the dashboard opens a 1,000,000-step float64 run and moves between its steps.

    python bench/dashboard_bench.py                  # records the run in a temporary folder
    python bench/dashboard_bench.py --keep /tmp/big  # records it there once, reuses it after
    python bench/dashboard_bench.py --steps 30000    # a smaller run, for a quick look

Times the library functions the dashboard's pages call (``steptrace.views``), without
Streamlit's caches, so every figure is a cold read from the Parquet files. Each figure is the
median (and the worst) of several calls. The run uses weights that keep moving
(``--init 0.005,-0.0002,0.0002 --lr 1e-9``), so no two steps are alike.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import steptrace
from steptrace import views
from steptrace.trace.opener import open_trace


def timed(fn: Callable[[], Any], repeat: int = 5) -> tuple[float, float, Any]:
    """Median and worst wall time in milliseconds, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times), result


def record(folder: Path, steps: int) -> Path:
    run = folder / "big"
    if (run / "_run.json").exists():
        print(f"reusing {run}")
        return run
    start = time.perf_counter()
    result = steptrace.record(
        "seed", lr="1e-9", numerics="float64", init="0.005,-0.0002,0.0002",
        epochs=-(-steps // 3), out=folder, name="big",
    )  # fmt: skip
    print(f"recorded {result.summary.steps:,} steps in {time.perf_counter() - start:.1f} s")
    return result.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="folder to record into and reuse")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = record(folder, args.steps)
        size = sum(f.stat().st_size for f in path.glob("*.parquet"))
        trace = open_trace(path)
        last = views.last_step(trace)
        rng = random.Random(0)
        middle = last // 2
        walk = iter(range(middle, middle + 1000))
        rows: list[tuple[str, float, float, str]] = []

        def row(what: str, fn: Callable[[], Any], repeat: int = 5, note: str = "") -> Any:
            median, worst, result = timed(fn, repeat)
            rows.append((what, median, worst, note))
            return result

        found = row("scan the folder and build the run table",
                    lambda: views.run_table(views.scan(folder)))  # fmt: skip
        assert list(found["run"]) == ["big"]
        row("last recorded step (Parquet footers only)", lambda: views.last_step(trace))
        view = row("open the run: step 0", lambda: views.step_view(trace, 0))
        row("jump to the middle step", lambda: views.step_view(trace, middle))
        row("jump to the last step", lambda: views.step_view(trace, last))
        row("next step (walk from the middle)", lambda: views.step_view(trace, next(walk)), 20)
        row("jump to a random step", lambda: views.step_view(trace, rng.randrange(last)), 20)
        loss = row("loss curve, whole run (downsampled)", lambda: views.curve(trace, "loss"), 3,
                   f"{len(views.curve(trace, 'loss').frame):,} points")  # fmt: skip
        row("weight curve w2_after_1_2, whole run (downsampled)",
            lambda: views.curve(trace, "w2_after_1_2"), 3)  # fmt: skip
        zoom = row("loss curve zoomed to 2,000 steps (every step)",
                   lambda: views.curve(trace, "loss", middle, middle + 1999), 5)  # fmt: skip
        row("first divergence (streams step, loss, w)", lambda: views.first_divergence(trace), 3)
        # The pages draw every curve through a LiveRun, recorded or ended: its first look
        # reads the column once; it keeps min/max buckets, bounded however long the run.
        live = views.LiveRun(path)
        first = row("followed run: loss curve, first look (reads every step once)",
                    lambda: live.curve("loss"), 1)  # fmt: skip
        tracemalloc.start()  # what a second LiveRun keeps (tracemalloc slows it: not timed)
        kept_by = views.LiveRun(path)
        kept_by.curve("loss")
        kept = tracemalloc.get_traced_memory()[0] / 1e6
        tracemalloc.stop()
        del kept_by
        row("followed run: loss curve, a later look (kept buckets)",
            lambda: live.curve("loss"), 5, f"{kept:.1f} MB kept after the first look")  # fmt: skip
        wide = row("followed run: a window of a tenth of the run",
                   lambda: live.curve("loss", middle, middle + last // 10), 5)  # fmt: skip
        narrow = row("followed run: a window of 2,000 steps (from the files)",
                     lambda: live.curve("loss", middle, middle + 1999), 5)  # fmt: skip
        assert first.frame.equals(loss.frame) and not narrow.downsampled and wide.downsampled
        row("side-by-side table at one step",
            lambda: views.compare_at({"big": trace}, rng.randrange(last)), 10)  # fmt: skip
        assert loss.downsampled and not zoom.downsampled and view.step == 0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"\nrun: {last + 1:,} steps, float64, {size / 1e6:.0f} MB of Parquet, "
          f"{len(trace.files)} part files; Python {sys.version.split()[0]}\n")  # fmt: skip
    print("| what the page does | median ms | worst ms | note |")
    print("|---|---:|---:|---|")
    for what, median, worst, note in rows:
        print(f"| {what} | {median:.1f} | {worst:.1f} | {note} |")
    print(f"\npeak memory of this process: {peak:.0f} MB")


if __name__ == "__main__":
    main()
