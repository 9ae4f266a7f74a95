"""steptrace benchmarks: every figure of docs/benchmarks.md, side by side, from one run.

    python bench/run.py            # the full benchmark (a few minutes on 2 cores)
    python bench/run.py --quick    # tiny sizes: checks the harness works, figures meaningless

Machines are noisy, so goals are ratios to figures measured in the same run, and each timing is
the best of a few repeats. Article runs use weights that keep moving (``--init
0.005,-0.0002,0.0002 --lr 1e-9``): in float64 the article's own weights never change, and a
constant trace flatters every figure. The 3-2-1 network's rows (issue 11) train
``examples/mlp-3-2-1.json`` on a noisy synthetic dataset against the hand-written loops of
``bench/mlp.py``. The TensorBoard and MLflow rows need the ``bench`` extra
(``pip install -e '.[bench]'``), the PyTorch row ``torch``; without them they say so.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlp  # bench/mlp.py: the 3-2-1 network's hand-written loops
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import steptrace
from steptrace.data import seed_dataset

INIT = "0.005,-0.0002,0.0002"
LR = "1e-9"
SEED_ROWS = [(100.0, 2000.0, 100.0, 0.0), (200.0, 0.0, 0.0, 1.0), (0.0, 2000.0, 3000.0, 1.0)]


@dataclass(frozen=True)
class Sizes:
    rows: int  # one recorded run (recording speed, read into pandas, bytes/row)
    big_rows: int  # the big run (peak RSS, window reads)
    sweep_lrs: int
    sweep_rows: int  # rows of each run of the sweep
    exact_steps: int  # steps of the exact article run
    exact_lengths: tuple[int, ...]  # steps of the exact runs whose rationals grow
    tracker_steps: int  # steps logged with TensorBoard / MLflow
    mlp_rows: int  # one recorded run of the 3-2-1 network (a multiple of mlp.SAMPLES)
    mlp_big_rows: int  # its long run, for peak memory (0: skipped)
    torch_steps: int  # steps of PyTorch's training loop (a multiple of mlp.SAMPLES)
    repeats: int


FULL = Sizes(
    1_000_002, 10_000_002, 64, 99_999, 3_000, (150, 300, 450, 591), 1_000,
    1_000_000, 10_000_000, 20_000, 5,
)  # fmt: skip
QUICK = Sizes(3_000, 9_000, 4, 300, 30, (9, 18), 5, 3_000, 0, 1_000, 1)


@dataclass(frozen=True)
class Row:
    label: str
    value: str
    compare: str = ""


def available_cores() -> int:
    """The cores this process may run on (the sweep rows' worker count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def best_of(repeats: int, fn: Callable[[], Any]) -> float:
    """The shortest of ``repeats`` wall-clock timings of ``fn()``, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --- the untraced baseline ------------------------------------------------------------------


def untraced_loop(steps: int) -> tuple[float, float, float]:
    """The article's SGD on plain Python floats, batch size 1, nothing recorded: the fastest
    honest way to train this model in Python, and the yardstick for recording."""
    w1, w2, w3 = 0.005, -0.0002, 0.0002
    lr = 1e-9
    epochs = steps // len(SEED_ROWS)
    for _ in range(epochs):
        for x1, x2, x3, y in SEED_ROWS:
            o2 = w1 * x1 + w2 * x2 + w3 * x3
            o3 = o2 if o2 >= 0 else 0.0
            d4 = o3 - y
            d3 = d4 if o2 >= 0 else 0.0
            w1 = w1 - lr * (d3 * x1)
            w2 = w2 - lr * (d3 * x2)
            w3 = w3 - lr * (d3 * x3)
    return w1, w2, w3


# --- steptrace ------------------------------------------------------------------------------


def record(out: Path, rows: int, numerics: str = "float64", lr: str = LR) -> steptrace.RunResult:
    return steptrace.record(
        seed_dataset(), lr, epochs=rows // 3, numerics=numerics, init=INIT, out=out
    )


def child_record(rows: int, out: str) -> None:
    """Run in a subprocess: record ``rows`` rows and print time and peak RSS as JSON."""
    start = time.perf_counter()
    if rows:
        record(Path(out), rows)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_mb": peak_rss_mb()}))


def child_diff(a: str, b: str) -> None:
    """Run in a subprocess: compare two traces and print time and peak RSS as JSON."""
    start = time.perf_counter()
    result = steptrace.compare_traces(a, b)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_mb": peak_rss_mb(), "rows": result.rows_compared}))


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM starts afresh at exec, whereas
    ``ru_maxrss`` keeps the peak of the process that forked us (the harness itself)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        status = ""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, kB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def in_subprocess(rows: int, out: Path) -> dict[str, float]:
    return child(["--child-record", str(rows), str(out)])


def child(args: list[str]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, *args],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def window_reads(trace: steptrace.Trace, windows: int) -> list[float]:
    """Seconds to read every column of random 100-step windows, each from a fresh open."""
    rng = random.Random(0)
    steps = trace.num_rows  # one row per step at batch size 1
    times = []
    for _ in range(windows):
        first = rng.randrange(0, steps - 100)
        start = time.perf_counter()
        fresh = steptrace.open_trace(trace.path)
        frame = fresh.read(None, (pc.field("step") >= first) & (pc.field("step") < first + 100))
        times.append(time.perf_counter() - start)
        assert len(frame) == 100, len(frame)
    return times


def exact_growth(out: Path, max_steps: int, lengths: tuple[int, ...]) -> list[Row]:
    """Exact mode: the article's run, then runs of growing length whose rationals grow."""
    rows = []
    start = time.perf_counter()
    steptrace.record(seed_dataset(), "1", epochs=max_steps // 3, numerics="exact", out=out)
    seconds = time.perf_counter() - start
    rows.append(
        Row(
            f"exact, article run ({max_steps:,} steps, lr 1)",
            f"{max_steps / seconds:,.0f} steps/s",
            "the weights stop changing at step 2: the numbers stay small",
        )
    )
    previous = (0, 0.0)
    for steps in lengths:
        start = time.perf_counter()
        run = steptrace.record(
            seed_dataset(), LR, epochs=steps // 3, numerics="exact", init=INIT, out=out
        )
        seconds = time.perf_counter() - start
        last = steptrace.open_trace(run.path).read(["w2_after_1_2_exact"]).iloc[-1, 0]
        bits = max(len(bin(int(part))) - 2 for part in last.lstrip("-").split("/"))
        # The steps a longer run adds over the previous one, free of per-run fixed costs.
        added = (steps - previous[0]) / max(seconds - previous[1], 1e-9)
        rows.append(
            Row(
                f"exact, growing rationals (lr 1e-9), {steps} steps",
                f"{steps / seconds:,.0f} steps/s",
                f"steps {previous[0]}–{steps}: {added:,.0f}/s; weights reach {bits:,} bits",
            )
        )
        previous = (steps, seconds)
    return rows


def writing_alone(out: Path, rows: int, repeats: int) -> float:
    """Seconds to write a run's blocks, already computed, with the trace writer."""
    from steptrace.trace.writer import TraceWriter, make_run_dir
    from steptrace.train.columns import compute_blocks
    from steptrace.train.recorder import run_metadata
    from steptrace.train.settings import Settings

    ds = seed_dataset()
    settings = Settings.parse(ds, LR, epochs=rows // 3, numerics="float64", init=INIT)
    blocks = list(compute_blocks(ds, settings))

    def write() -> None:
        run_dir = make_run_dir(out, "write")
        meta = run_metadata(ds, settings, "bench", run_dir.name)
        writer = TraceWriter(run_dir, False, meta)
        for block in blocks:
            writer.write(block)
        writer.close()

    return best_of(repeats, write)


#: The columns every run of a sweep on the same data and order shares, bit for bit (the run-wide
#: ones cost nothing either way); a format that wrote them once per sweep would save at most
#: their encoding.
SHARED = ("step", "epoch", "sample", "x", "y", "o1", "run_id", "numerics", "batch_size", "lr")


def own_columns_writing(out: Path, rows: int, repeats: int) -> tuple[float, int]:
    """Seconds to encode and write only the columns that differ between the runs of a sweep
    (o2 … w_after), already computed, with the trace's encodings; and how many there are."""
    import pyarrow.parquet as pq

    from steptrace.trace.writer import parquet_options
    from steptrace.train.columns import START, compute_blocks
    from steptrace.train.settings import Settings

    ds = seed_dataset()
    settings = Settings.parse(ds, LR, epochs=rows // 3, numerics="float64", init=INIT)
    blocks = list(compute_blocks(ds, settings))
    names = [c for c in blocks[0]
             if c.rsplit("_", 1)[0] not in SHARED and c not in SHARED and c != START]  # fmt: skip
    tables = [pa.table({c: block[c] for c in names}) for block in blocks]
    options = parquet_options(tables[0].schema)
    out.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        with pq.ParquetWriter(out / "own.parquet", tables[0].schema, **options) as writer:
            for table in tables:
                writer.write_table(table)

    return best_of(repeats, write), len(names)


def loop_across_runs(runs: int, rows: int) -> tuple[float, float]:
    """Seconds per step for ``runs`` learning rates: one numpy step over a (runs × features)
    weight matrix, against the compiled walk (the recorder's plain-Python loop along the
    weights' path) run once per learning rate."""
    from steptrace.train.compiled import CLOCK_EVERY, compile_walk
    from steptrace.train.settings import Settings

    steps = max(300, min(rows, 30_000))
    lrs = np.geomspace(1e-10, 1e-8, runs)
    w = np.tile([0.005, -0.0002, 0.0002], (runs, 1))
    x = [np.array(r[:3]) for r in SEED_ROWS]
    y = [r[3] for r in SEED_ROWS]
    start = time.perf_counter()
    for step in range(steps):
        i = step % 3
        o2 = w[:, 0] * x[i][0] + w[:, 1] * x[i][1] + w[:, 2] * x[i][2]
        d3 = np.where(o2 >= 0, o2 - y[i], 0.0)
        w = w - lrs[:, None] * (d3[:, None] * x[i])
    numpy_step = (time.perf_counter() - start) / steps
    settings = Settings.parse(seed_dataset(), LR, numerics="float64", init=INIT)
    loop = compile_walk(settings.model.stack(settings.numerics), "float64", False).loop
    order, sizes, w0 = [s % 3 for s in range(steps)], [1] * steps, (0.005, -0.0002, 0.0002)
    start = time.perf_counter()
    for lr in lrs.tolist():
        path: list[tuple[float, ...]] = []
        loop(w0, lr, SEED_ROWS, order, sizes, path, float("inf"), None, CLOCK_EVERY)
    return numpy_step, (time.perf_counter() - start) / steps


# --- the 3-2-1 network (issue 11) -----------------------------------------------------------

#: The 3-2-1 network's parameters after a step, in the order of ``mlp.flat``.
MLP_AFTER = ("w2_after", "b2_after", "w4_after", "b4_after")


def mlp_record(dataset: steptrace.Dataset, out: Path, rows: int) -> steptrace.RunResult:
    epochs, model = rows // mlp.SAMPLES, str(mlp.MODEL)
    return steptrace.record(
        dataset, mlp.LR, epochs=epochs, numerics="float64", model=model, out=out
    )


def trace_bytes(trace: steptrace.Trace) -> int:
    return sum(f.stat().st_size for f in trace.files)


def child_mlp(rows: int, out: str) -> None:
    """Run in a subprocess: record ``rows`` rows of the 3-2-1 network; print time, peak RSS
    and bytes per row as JSON."""
    dataset = steptrace.load_dataset(mlp.write_dataset(Path(out) / "data.csv"))
    start = time.perf_counter()
    run = mlp_record(dataset, Path(out), rows)
    seconds = time.perf_counter() - start
    trace = steptrace.open_trace(run.path)
    per_row = trace_bytes(trace) / trace.num_rows
    print(json.dumps({"seconds": seconds, "peak_mb": peak_rss_mb(), "bytes_per_row": per_row}))


def best_of_each(repeats: int, fns: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """:func:`best_of` for several functions, taking turns, so that a change in the machine's
    load falls on all of them alike."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def final_weights(trace: steptrace.Trace) -> list[float]:
    """The parameters after the trace's last step, in the order of ``mlp.flat``."""
    last = (trace.num_rows - 1, trace.num_rows)  # one row per step at batch size 1
    return [
        v for name in MLP_AFTER for v in steptrace.load_tensor(trace, name, steps=last)[-1].ravel()
    ]


def same_bits(a: list[float], b: list[float]) -> bool:
    return [float(v).hex() for v in a] == [float(v).hex() for v in b]


def measure_mlp(sizes: Sizes, work: Path, add: Callable[[str, str, str], None]) -> None:
    """Issue 11: recording every value of a 3-2-1 network against the same training, untraced,
    by hand in Python and in PyTorch; its bytes on disk; its memory over a long run."""
    folder = work / "mlp"
    csv = mlp.write_dataset(folder / "data.csv")
    data, dataset, init = mlp.read_dataset(csv), steptrace.load_dataset(csv), mlp.initial_weights()
    n, lr, epochs = sizes.mlp_rows, float(mlp.LR), sizes.mlp_rows // mlp.SAMPLES
    runs, ends = iter(range(1_000)), dict[str, Any]()

    def lists() -> None:
        ends["lists"] = mlp.plain_sgd(data, init, lr, epochs)

    def unrolled() -> None:
        ends["unrolled"] = mlp.unrolled_sgd(data, init, lr, epochs)

    def record() -> None:
        ends["record"] = mlp_record(dataset, folder / f"rec{next(runs)}", n)

    t = best_of_each(sizes.repeats, {"lists": lists, "unrolled": unrolled, "record": record})
    add(
        "3-2-1 network: plain Python loop, lists of floats",
        f"{n / t['lists']:,.0f} steps/s",
        "the yardstick: per-sample SGD by hand, nothing recorded (bench/mlp.py)",
    )
    add(
        "3-2-1 network: the same loop unrolled, a local per weight",
        f"{n / t['unrolled']:,.0f} steps/s",
        f"{t['lists'] / t['unrolled']:.1f}× the lists loop's speed; the code steptrace's "
        "compiled walk generates",
    )
    add(
        f"3-2-1 network: steptrace record float64 ({n:,} rows)",
        f"{n / t['record']:,.0f} rows/s",
        f"{t['record'] / t['lists']:.2f}× the lists loop's time (goal ≤ 3×), "
        f"{t['record'] / t['unrolled']:.1f}× the unrolled loop's",
    )
    trace = steptrace.open_trace(ends["record"].path)
    recorded = final_weights(trace)
    plain = [mlp.flat(ends["lists"]), mlp.flat(ends["unrolled"])]
    same = all(same_bits(recorded, weights) for weights in plain)
    add(
        "3-2-1 network: final weights, steptrace vs both plain loops",
        "identical, bit for bit" if same else "DIFFERENT",
        f"all {len(recorded)} parameters after {n:,} steps",
    )
    values = sum(tensor.size for tensor in trace.tensors)
    stored = sum(tensor.size for tensor in trace.tensors if tensor.stored)
    per_row = trace_bytes(trace) / trace.num_rows
    add(
        f"3-2-1 network: bytes on disk ({trace.num_rows:,} rows)",
        f"{per_row:.1f} B/row = {per_row / values:.2f} B/value",
        f"{values} recorded values a row, {stored} stored, the others once in another "
        "(trace-format.md) (goal ≤ 4 B/value)",
    )
    label = "3-2-1 network: peak RSS recording in its own process"
    if sizes.mlp_big_rows:
        small = child(["--child-mlp", str(n), str(folder / "small")])
        big = child(["--child-mlp", str(sizes.mlp_big_rows), str(folder / "big")])
        add(
            label,
            f"{small['peak_mb']:.0f} MB / {big['peak_mb']:.0f} MB",
            f"{n:,} / {sizes.mlp_big_rows:,} rows ({big['peak_mb'] / small['peak_mb'] - 1:+.0%}); "
            "the long run: "
            f"{sizes.mlp_big_rows / big['seconds']:,.0f} rows/s, {big['bytes_per_row']:.1f} B/row",
        )
    else:
        add(label, "skipped in --quick", f"the full run records {FULL.mlp_big_rows:,} rows")
    measure_torch(sizes, data, init, n / t["record"], add)


def measure_torch(
    sizes: Sizes,
    data: mlp.Data,
    init: mlp.Weights,
    recording_rate: float,
    add: Callable[[str, str, str], None],
) -> None:
    steps = sizes.torch_steps
    label = f"3-2-1 network: PyTorch untraced, float64, per sample ({steps:,} steps)"
    try:
        import torch  # noqa: F401
    except ImportError:
        add(label, "not installed", "optional: pip install torch")
        return
    lr = float(mlp.LR)
    timings = [mlp.torch_sgd(data, init, lr, steps) for _ in range(sizes.repeats)]
    seconds, weights = min(timings, key=lambda timing: timing[0])
    ours = mlp.flat(mlp.plain_sgd(data, init, lr, steps // mlp.SAMPLES))
    theirs = mlp.flat(weights)
    if same_bits(theirs, ours):
        agree = "identical to the plain loop's, bit for bit"
    else:
        gap = max(abs(a - b) / abs(b) for a, b in zip(theirs, ours, strict=True))
        agree = f"within {gap:.0e} (relative) of the plain loop's"
    speed = recording_rate * seconds / steps  # steptrace's rows per PyTorch's step
    faster = (
        f"steptrace records every value {speed:,.0f}× faster"
        if speed >= 1
        else (f"PyTorch trains {1 / speed:,.1f}× faster than steptrace records")
    )
    add(label, f"{steps / seconds:,.0f} steps/s", f"{faster}; its weights {agree}")


# --- other trackers -------------------------------------------------------------------------


def tracker_values(step: int) -> dict[str, float]:
    """About 30 values per step, as a tracker would log this model's numbers."""
    return {f"v{i}": 0.001 * i + step for i in range(30)}


def tensorboard(out: Path, steps: int) -> tuple[float, float]:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(out))
    start = time.perf_counter()
    for step in range(steps):
        for name, value in tracker_values(step).items():
            writer.add_scalar(name, value, step)
    writer.close()
    return steps / (time.perf_counter() - start), folder_bytes(out) / steps


def mlflow(out: Path, steps: int, store: str) -> tuple[float, float]:
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # the file store is in maintenance mode
    warnings.filterwarnings("ignore")
    import logging

    import mlflow as ml

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    out.mkdir(parents=True)
    uri = f"sqlite:///{out}/mlflow.db" if store == "sqlite" else f"file://{out}/mlruns"
    ml.set_tracking_uri(uri)
    with ml.start_run():
        size_before = folder_bytes(out)
        start = time.perf_counter()
        for step in range(steps):
            ml.log_metrics(tracker_values(step), step=step)
        seconds = time.perf_counter() - start
    return steps / seconds, (folder_bytes(out) - size_before) / steps


# --- the table ------------------------------------------------------------------------------


def measure(sizes: Sizes, work: Path) -> list[Row]:
    rows: list[Row] = []

    def add(label: str, value: str, compare: str = "") -> None:
        rows.append(Row(label, value, compare))
        print(f"  … {label}: {value}", file=sys.stderr, flush=True)

    r = sizes.repeats
    # Peak memory first, in fresh processes: a small and a big recording (flat = same peak).
    idle = in_subprocess(0, work / "idle")
    small = in_subprocess(sizes.rows, work / "small")
    big = in_subprocess(sizes.big_rows, work / "big")

    # Recording vs the untraced loop, same number of steps, same process.
    base = best_of(r, lambda: untraced_loop(sizes.rows))
    runs = iter(range(1_000))
    rec = best_of(r, lambda: record(work / f"rec{next(runs)}", sizes.rows))
    rec32 = best_of(r, lambda: record(work / f"f32-{next(runs)}", sizes.rows, "float32"))
    add("untraced pure-Python loop (float64)", f"{sizes.rows / base:,.0f} steps/s")
    add(
        f"steptrace record float64 ({sizes.rows:,} rows)",
        f"{sizes.rows / rec:,.0f} rows/s",
        f"{rec / base:.1f}× the untraced loop's time (goal ≤ 3×, ≥ 1,000,000 rows/s)",
    )
    add(
        f"steptrace record float32 ({sizes.rows:,} rows)",
        f"{sizes.rows / rec32:,.0f} rows/s",
        f"{rec32 / base:.1f}× the untraced loop's time",
    )
    add(
        f"steptrace record float64 ({sizes.big_rows:,} rows, own process)",
        f"{sizes.big_rows / big['seconds']:,.0f} rows/s",
    )
    add(
        "peak RSS: imports only / small run / big run",
        f"{idle['peak_mb']:.0f} / {small['peak_mb']:.0f} / {big['peak_mb']:.0f} MB",
        f"{sizes.rows:,} and {sizes.big_rows:,} rows (goal ≤ 250 MB, flat)",
    )
    measure_mlp(sizes, work, add)

    # Disk, and reading back.
    one = steptrace.open_trace(next((work / "rec0").iterdir()))
    size = sum(f.stat().st_size for f in one.files)
    add(
        f"bytes per row on disk ({one.num_rows:,} rows)",
        f"{size / one.num_rows:.1f} B/row",
        "goal ≤ 100",
    )
    big_trace = steptrace.open_trace(next((work / "big").iterdir()))
    big_size = sum(f.stat().st_size for f in big_trace.files)
    add(
        f"bytes per row on disk ({big_trace.num_rows:,} rows)",
        f"{big_size / big_trace.num_rows:.1f} B/row",
        f"{len(big_trace.files)} parts; the weights' changes shrink as the loss falls",
    )
    read = best_of(r, lambda: steptrace.open_trace(one.path).read())
    add(
        f"read {one.num_rows:,} rows into pandas",
        f"{read:.3f} s",
        f"{one.num_rows / read:,.0f} rows/s (goal ≤ 0.5 s for 1,000,000)",
    )
    times = sorted(window_reads(big_trace, 20 if sizes is FULL else 3))
    add(
        f"read a 100-step window of {big_trace.num_rows:,} rows",
        f"median {np.median(times) * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms",
        "goal ≤ 50 ms; open_trace + read(filters) each time",
    )
    other = record(work / "big-other", sizes.big_rows, lr="2e-9").path
    diff = child(["--child-diff", str(big_trace.path), str(other)])
    add(
        f"steptrace diff of two {diff['rows']:,.0f}-row runs (α 1e-9 vs 2e-9, own process)",
        f"{diff['seconds']:.1f} s, peak RSS {diff['peak_mb']:.0f} MB",
        f"{diff['rows'] / diff['seconds']:,.0f} rows/s; memory flat: a window of steps at a time",
    )

    # The sweep: one run per learning rate, each its own trace.
    lrs = [f"{v:.3g}" for v in np.geomspace(1e-10, 1e-8, sizes.sweep_lrs)]
    settings = {"epochs": sizes.sweep_rows // 3, "numerics": "float64", "init": INIT}
    runs = iter(range(1_000))
    single = best_of(
        r,
        lambda: steptrace.sweep(
            [LR], seed_dataset(), out=work / "single", name=f"one{next(runs)}", **settings
        ),
    )
    swept = best_of(
        1, lambda: steptrace.sweep(lrs, seed_dataset(), out=work / "sweep", workers=1, **settings)
    )
    add(
        f"sweep of {len(lrs)} lrs × {sizes.sweep_rows:,} rows vs one run, one process",
        f"{swept:.2f} s vs {single:.3f} s",
        f"{swept / single:.1f}× one run = {swept / single / len(lrs):.2f}× per run "
        "(goal ≤ 4× one run)",
    )
    cores = available_cores()
    pooled = best_of(
        1,
        lambda: steptrace.sweep(
            lrs, seed_dataset(), out=work / "pooled", workers=cores, **settings
        ),
    )
    add(
        f"the same sweep with {cores} worker processes (one per core)",
        f"{pooled:.2f} s",
        f"{pooled / single:.1f}× one run; {swept / pooled:.2f}× faster than one process",
    )

    # The same, as a user runs it: the command, interpreter start and imports included.
    def command(lr_args: list[str], out: str, epochs: int = sizes.sweep_rows // 3) -> float:
        argv = [
            sys.executable,
            "-m",
            "steptrace",
            "record",
            "--numerics",
            "float64",
            "--init",
            INIT,
            "--epochs",
            str(epochs),
            "--out",
            str(work / out),
        ]
        start = time.perf_counter()
        subprocess.run([*argv, *lr_args], check=True, capture_output=True)
        return time.perf_counter() - start

    one_cmd = min(command(["--lr", LR], f"cmd1-{i}") for i in range(r))
    sweep_cmd = command([a for lr in lrs for a in ("--lr", lr)], "cmd64")
    add(
        f"the command end to end: record --lr ×{len(lrs)} vs ×1",
        f"{sweep_cmd:.2f} s vs {one_cmd:.2f} s",
        f"{sweep_cmd / one_cmd:.1f}× (start-up and imports included)",
    )
    article = [a for lr in lrs for a in ("--lr", lr)]
    one_small = min(command(["--lr", LR], f"cmd1-article-{i}", 1) for i in range(r))
    sweep_small = command(article, "cmd64-article", 1)
    add(
        f"the same on the article's 3 rows: record --lr ×{len(lrs)} vs ×1",
        f"{sweep_small:.2f} s vs {one_small:.2f} s",
        f"{sweep_small / one_small:.1f}× (goal ≤ 4× one run)",
    )

    # Where a sweep's time goes: writing each run's Parquet, and the sequential loop.
    write = writing_alone(work / "write", sizes.sweep_rows, r)
    add(
        f"Parquet writing alone, one run of {sizes.sweep_rows:,} rows",
        f"{write:.3f} s",
        f"{write / single:.0%} of recording it; ×{len(lrs)} runs = "
        f"{write * len(lrs) / single:.0f}× one run on one core",
    )
    own, own_columns = own_columns_writing(work / "own", sizes.sweep_rows, r)
    add(
        f"the {own_columns} columns that differ between runs, writing alone",
        f"{own:.3f} s",
        f"×{len(lrs)} runs = {own * len(lrs) / single:.0f}× one run on one core "
        "(if the data columns were shared)",
    )
    numpy_step, python_steps = loop_across_runs(len(lrs), sizes.sweep_rows)
    add(
        f"sequential step of {len(lrs)} runs: numpy (runs × features) vs compiled walk",
        f"{numpy_step * 1e6:.1f} µs vs {python_steps * 1e6:.1f} µs",
        "one step of every run: all runs at once in numpy, or each run's own walk in turn",
    )
    loop = min(numpy_step, python_steps) * sizes.sweep_rows
    floor = (loop + own * len(lrs)) / 2
    add(
        f"lower bound of the sweep on 2 cores: ({len(lrs)} loops + {len(lrs)} × own columns) / 2",
        f"{floor:.2f} s",
        f"{floor / single:.0f}× one run (goal ≤ 4×: {4 * single:.2f} s)",
    )

    for row in exact_growth(work / "exact", sizes.exact_steps, sizes.exact_lengths):
        add(row.label, row.value, row.compare)

    # The trackers people use instead, ~30 values per step.
    per_row = rec / sizes.rows
    steps = sizes.tracker_steps
    trackers: list[tuple[str, Callable[[], tuple[float, float]]]] = [
        ("tensorboardX add_scalar ×30 per step", lambda: tensorboard(work / "tb", steps)),
        ("MLflow log_metrics (sqlite store)", lambda: mlflow(work / "mls", steps, "sqlite")),
        ("MLflow log_metrics (file store)", lambda: mlflow(work / "mlf", steps, "file")),
    ]
    for label, fn in trackers:
        try:
            rate, per_step = fn()
        except ImportError as exc:
            add(label, "not installed", f"pip install -e '.[bench]' ({exc.name})")
            continue
        add(
            label,
            f"{rate:,.0f} steps/s, {per_step:,.0f} B/step",
            f"steptrace records {1 / (per_row * rate):,.0f}× faster, "
            f"{per_step * one.num_rows / size:,.0f}× smaller",
        )
    return rows


def header() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in _lscpu() if "Model name" in line), "?")
    return (
        f"steptrace {steptrace.__version__} · Python {platform.python_version()} · "
        f"numpy {np.__version__} · pyarrow {pa.__version__}{_torch_version()} · {cpu}, "
        f"{os.cpu_count()} CPUs · "
        f"load {os.getloadavg()[0]:.2f}"
    )


def _torch_version() -> str:
    try:
        return f" · torch {importlib.metadata.version('torch')}"
    except importlib.metadata.PackageNotFoundError:
        return ""


def _lscpu() -> list[str]:
    try:
        return subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    except OSError:
        return []


def print_table(rows: list[Row]) -> None:
    width = max(len(row.label) for row in rows)
    value_width = max(len(row.value) for row in rows)
    for row in rows:
        print(f"{row.label:<{width}}  {row.value:<{value_width}}  {row.compare}".rstrip())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    parser.add_argument("--child-record", nargs=2, metavar=("ROWS", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--child-diff", nargs=2, metavar=("A", "B"), help=argparse.SUPPRESS)
    parser.add_argument("--child-mlp", nargs=2, metavar=("ROWS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_record:
        child_record(int(args.child_record[0]), args.child_record[1])
        return
    if args.child_diff:
        child_diff(*args.child_diff)
        return
    if args.child_mlp:
        child_mlp(int(args.child_mlp[0]), args.child_mlp[1])
        return
    sizes = QUICK if args.quick else FULL
    print(header(), flush=True)
    with tempfile.TemporaryDirectory(prefix="steptrace-bench-") as work:
        print_table(measure(sizes, Path(work)))


if __name__ == "__main__":
    main()
