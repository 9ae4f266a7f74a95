"""How a sweep scales with workers: a 64-run sweep against one run recorded alone.

    python bench/sweep_scaling.py            # 64 runs × 99,999 rows, 1 and 2 workers (~1 min)
    python bench/sweep_scaling.py --quick    # tiny sizes: checks the harness works
    python bench/sweep_scaling.py --rows 999999 --workers 1 2 4

The goal (issue 13): no cost beyond the runs themselves — a sweep on w free cores takes at most
1.1 × (runs × one run's CPU time) / w. One run's CPU time is the process's (its loop and its
Parquet encoding, which runs in another thread), measured recording it alone. Each sweep is
timed from the call to its return, its workers already started (a cluster is started once, as
users keep one); the start of a local pool's processes is inside the figure. Timings are the
best of a few repeats. Runs are the float64 article model with weights that keep moving
(``--init 0.005,-0.0002,0.0002``).

The machine may be shared: each sweep is set against the cores found free around it (w
processes spinning a Python loop just before and just after: the CPU time they got over the
time they took) and against the mean CPU of 16 runs recorded alone around it (8 before, 8
after), and the CPU every process of the sweep used, set against the runs', says what the
sweep costs beyond them whatever the load.

The per-run overhead of an executor is measured on runs of one step, where there is nothing
else to measure: (its sweep's time − the same sweep's in this process) / runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import steptrace
from steptrace.data import seed_dataset
from steptrace.train.sweeps import available_cores, local_pool

INIT = "0.005,-0.0002,0.0002"


def cpu_now(client: Any = None) -> float:
    """CPU seconds used so far by this process, its finished children (a local pool's
    workers, reaped when the sweep ends) and a cluster's worker processes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = time.process_time() + children.ru_utime + children.ru_stime
    if client is not None:
        total += sum(client.run(time.process_time).values())
    return total


def timed(repeats: int, fn: Callable[[], Any], client: Any = None) -> tuple[float, float]:
    """The best wall time of ``fn`` and the least CPU time it used, everywhere."""
    walls, cpus = [], []
    for _ in range(repeats):
        cpu, start = cpu_now(client), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - start)
        cpus.append(cpu_now(client) - cpu)
    return min(walls), min(cpus)


def _spin(n: int) -> tuple[float, float]:
    """Spin a Python loop: its wall time and the CPU time it got."""
    start, cpu = time.perf_counter(), time.process_time()
    x = 0
    for i in range(n):
        x += i
    return time.perf_counter() - start, time.process_time() - cpu


def free_cores(w: int, n: int = 10_000_000) -> float:
    """How many cores ``w`` processes get now (the machine may be shared): each spins a Python
    loop, and the CPU time they got over the time they took is the cores they had."""
    if w == 1:
        wall, cpu = _spin(n)
        return min(1.0, cpu / wall)
    with local_pool(w) as pool:
        list(pool.map(_spin, [1_000] * w))  # started
        start = time.perf_counter()
        spins = list(pool.map(_spin, [n] * w))
        together = time.perf_counter() - start
    return min(float(w), sum(cpu for _, cpu in spins) / together)


class Cluster:
    """A local Dask cluster of ``n`` single-threaded worker processes, or None without Dask."""

    def __init__(self, n: int) -> None:
        from distributed import Client, LocalCluster

        start = time.perf_counter()
        self.cluster = LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=":0", silence_logs=40,
        )  # fmt: skip
        self.client = Client(self.cluster)
        self.client.wait_for_workers(n)
        self.started = time.perf_counter() - start

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes")
    parser.add_argument("--runs", type=int, default=64)
    parser.add_argument("--rows", type=int, default=99_999, help="rows of each run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5, help="repetitions of each sweep")
    args = parser.parse_args()
    runs, rows, repeats = (4, 300, 1) if args.quick else (args.runs, args.rows, 3)
    sweeps = 1 if args.quick else args.repeats
    work = Path(tempfile.mkdtemp(prefix="steptrace-scaling-"))
    try:
        table = measure(work, runs, rows, args.workers, repeats, sweeps)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"steptrace {steptrace.__version__} · Python {platform.python_version()} · "
        f"{available_cores()} cores · load {os.getloadavg()[0]:.2f} · {runs} runs × {rows:,} rows"
    )
    width = max(len(label) for label, _, _ in table)
    for label, value, note in table:
        print(f"{label:<{width}}  {value:<20}  {note}")


def measure(
    work: Path, runs: int, rows: int, workers: list[int], repeats: int, sweeps: int
) -> list[tuple[str, str, str]]:
    """The table's rows: single runs timed ``repeats`` times, sweeps ``sweeps`` times."""
    ds = seed_dataset()
    lrs = [f"{v:.3g}" for v in np.geomspace(1e-10, 1e-8, runs)]
    settings: dict[str, Any] = {"epochs": rows // 3, "numerics": "float64", "init": INIT}
    tiny: dict[str, Any] = {"epochs": 1, "numerics": "float64", "init": INIT}
    count = iter(range(10_000))

    def out() -> Path:
        return work / f"o{next(count)}"

    def alone(s: dict[str, Any] = settings) -> Path:
        return steptrace.record(ds, lrs[0], out=out(), **s).path

    size = sum(f.stat().st_size for f in alone().iterdir())  # and warm: imports, caches
    wall_one, cpu_one = timed(repeats, alone)
    table = [
        ("one run alone", f"{wall_one:.3f} s",
         f"CPU {cpu_one:.3f} s (its loop and its writer); {size / 1e6:.1f} MB written, "
         f"{size / wall_one / 1e6:.0f} MB/s"),
    ]  # fmt: skip

    def trials(label: str, sweep: Callable[[], Any], w: int, client: Any = None) -> None:
        """``sweeps`` repetitions of: the free cores and the mean CPU of 8 runs recorded
        alone just before, the sweep, the same just after. Each gives the ratio the goal
        bounds, wall / (runs × one run's CPU / free cores), against what the same runs cost
        alone in the same minutes (the machine's speed drifts); noise only adds, so the best
        repetition is the one the machine disturbed least."""

        def one_run_cpu() -> float:
            return float(np.mean([timed(1, alone)[1] for _ in range(8)]))

        ratios, cpus, walls = [], [], []
        for _ in range(sweeps):
            free, one = free_cores(w), one_run_cpu()
            wall, cpu = timed(1, sweep, client)
            free = (free + free_cores(w)) / 2
            one = (one + one_run_cpu()) / 2
            ratios.append(wall * free / (runs * one))
            cpus.append(cpu / (runs * one))
            walls.append((wall, free))
        best = int(np.argmin(ratios))
        wall, free = walls[best]
        table.append((label, f"{wall:.2f} s",
                      f"{ratios[best]:.2f} × runs × CPU / {free:.2f} free cores, best of "
                      f"{sweeps} (goal ≤ 1.1: {'met' if ratios[best] <= 1.1 else 'NOT met'}; "
                      f"median {np.median(ratios):.2f}); CPU {min(cpus):.2f} × the runs' "
                      f"(median {np.median(cpus):.2f})"))  # fmt: skip

    # Runs of one step, where there is nothing else to measure: in one process, one at a time
    tiny_sweep, _ = timed(repeats, lambda: steptrace.sweep(lrs, ds, out=out(), workers=1, **tiny))

    def overhead(label: str, wall: float, note: str = "") -> tuple[str, str, str]:
        per_run = (wall - tiny_sweep) / runs
        return (label, f"{per_run * 1e3:.1f} ms",
                f"{wall:.2f} s for {runs} runs of one step, {tiny_sweep:.2f} s in one process"
                + note)  # fmt: skip

    def one_process() -> None:
        steptrace.sweep(lrs, ds, out=out(), workers=1, **settings)

    trials("sweep, one process (pipelined)", one_process, 1)
    for w in (w for w in workers if w > 1):

        def pool(w: int = w) -> None:
            steptrace.sweep(lrs, ds, out=out(), workers=w, **settings)

        trials(f"sweep, --workers {w} (process pool, started inside)", pool, w)
    with local_pool(2) as pool:
        steptrace.sweep(lrs[:2], ds, out=out(), executor=pool, **tiny)  # start the workers
        wall, _ = timed(repeats, lambda: steptrace.sweep(lrs, ds, out=out(), executor=pool, **tiny))
    table.append(overhead("a process pool's cost per run (2 workers)", wall))
    try:
        import distributed  # noqa: F401
    except ImportError:
        table.append(("sweep on Dask", "-", "not installed: pip install -e '.[dask]'"))
        return table
    for w in workers:
        cluster = Cluster(w)
        try:
            client, executor = cluster.client, cluster.client.get_executor()

            def on_dask(s: dict[str, Any] = settings, ex: Any = executor) -> None:
                steptrace.sweep(lrs, ds, out=out(), executor=ex, **s)

            on_dask(tiny)  # warm the workers' imports
            trials(f"sweep on Dask, {w} worker process(es)", on_dask, w, client)
            if w == 1:
                wall, _ = timed(repeats, lambda ex=executor: on_dask(tiny, ex))
                started = f"; cluster start {cluster.started:.1f} s"
                table.append(overhead("Dask's cost per run (1 worker)", wall, started))
        finally:
            cluster.close()
    return table


if __name__ == "__main__":
    sys.exit(main())
