"""Issue 19's speed: a small CNN on 8 × 8 grey images, recorded by steptrace, against the same
per-sample SGD untraced in numpy and in PyTorch.

    python bench/cnn.py                  # 1,000,000 rows (and 100,000 for memory): ~30 minutes
    python bench/cnn.py --rows 100000    # shorter
    python bench/cnn.py --quick          # tiny sizes: checks the harness works; figures meaningless
    python bench/cnn.py --rows 100000 --write DIR   # only the dataset and model file, to profile

The network: input 1 × 8 × 8, conv2d 1 → 4 channels 3 × 3 with bias (zero padding, stride 1),
ReLU, max-pool 2 × 2, flatten, linear 64 → 1 with bias, squared error ½(o − y)²; float64, one
sample a step (batch 1), α = 0.01. The dataset is 1,000 random grey images (pixels in [0, 1],
three decimals) whose target is a random teacher network of the same shape plus Gaussian
noise, so that the student can learn it and its weights keep moving in every bit; a run of N
rows is N / 1,000 epochs. The initial weights are written in the model file as exact decimals.

Side by side in one run:

- ``steptrace record --numerics float64`` of it, the whole command in its own process
  (Python's start, imports and loading the CSV included): its wall time, CPU time and peak RSS
  (GNU ``time``, or psutil sampling the child), its bytes on disk per stored value (the run's
  metadata says which tensors are stored: not ``same_as`` another);
- :func:`numpy_sgd`, the same SGD untraced in numpy, one sample at a time, timed before and
  after the recording (the better of the two); it must end with the recorded run's weights
  (``np.allclose``, rtol 1e-9: numpy's matmul adds in another order than the series, so the
  bits may differ);
- :func:`torch_sgd`, PyTorch's usual loop for the same network, when torch is importable.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from run import folder_bytes, header  # bench/run.py: the harness' machine line

import steptrace

Array = npt.NDArray[np.float64]

LR = "0.01"
SAMPLES = 1_000  # images in the dataset: a run of N rows is N / SAMPLES epochs
SIDE, CHANNELS, KERNEL, POOL = 8, 4, 3, 2
#: Goals of issue 19 (float64).
GOAL_RATIO, GOAL_BYTES = 3.0, 8.0
#: The recorded weights agree with numpy's within this (relative; absolute near zero).
RTOL, ATOL = 1e-9, 1e-12


@dataclass(frozen=True)
class Sizes:
    rows: int  # the recorded run and the numpy loop
    small_rows: int  # a shorter recording: is the peak memory flat?
    torch_steps: int


def sizes_for(rows: int, quick: bool) -> Sizes:
    if quick:
        return Sizes(2_000, 1_000, 300)
    return Sizes(rows, max(SAMPLES, rows // 10 // SAMPLES * SAMPLES), min(rows, 100_000))


# --- the data and the model file ------------------------------------------------------------


class Weights(NamedTuple):
    """The parameters under steptrace's names: layer 2 the convolution, layer 6 the linear."""

    w2: Array  # (4, 1, 3, 3) kernels
    b2: Array  # (4,)
    w6: Array  # (1, 64)
    b6: Array  # (1,)

    def flat(self) -> Array:
        return np.concatenate([p.ravel() for p in self])

    def copy(self) -> Weights:
        return Weights(*(p.copy() for p in self))


#: im2col: IM2COL[i·8 + j] are the indices, in a zero-padded 10 × 10 image read row by row, of
#: pixel (i, j)'s 3 × 3 neighbourhood in reading order (the kernel's order).
_i, _j, _a, _b = np.ix_(range(SIDE), range(SIDE), range(KERNEL), range(KERNEL))
IM2COL = ((_i + _a) * (SIDE + 2) + _j + _b).reshape(SIDE * SIDE, KERNEL * KERNEL)


def pooled(w: Weights, images: Array) -> Array:
    """The network's hidden layer on a stack of images: max-pooled ReLU(conv), (n, 64)."""
    patches = np.pad(images, ((0, 0), (1, 1), (1, 1))).reshape(len(images), -1)[:, IM2COL]
    z = patches @ w.w2.reshape(CHANNELS, -1).T + w.b2  # n, 64 pixels, 4 channels
    z = np.moveaxis(z, 2, 1).reshape(-1, CHANNELS, SIDE // POOL, POOL, SIDE // POOL, POOL)
    return np.maximum(z.max(axis=(3, 5)), 0).reshape(len(images), -1)


def write_dataset(path: Path, rows: int = SAMPLES, seed: int = 0) -> Path:
    """A CSV of ``rows`` 8 × 8 grey images (columns p{row}_{column}) and a target y: a random
    teacher network of the student's shape, standardised, plus noise of σ 0.1."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (rows, SIDE, SIDE)).round(3)
    kernels = rng.normal(0, 0.5, (CHANNELS, 1, KERNEL, KERNEL))
    teacher = Weights(
        kernels, rng.normal(0, 0.1, CHANNELS), rng.normal(0, 0.3, (1, 64)), np.zeros(1)
    )
    y = pooled(teacher, images) @ teacher.w6[0]
    y = (y - y.mean()) / y.std() + rng.normal(0, 0.1, rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow([f"p{i}_{j}" for i in range(SIDE) for j in range(SIDE)] + ["y"])
        for image, target in zip(images, y, strict=True):
            out.writerow([f"{v:.3f}" for v in (*image.ravel(), target)])
    return path


def write_model(path: Path, seed: int = 1) -> Path:
    """The model file, every initial weight given as an exact three-decimal text."""
    rng = np.random.default_rng(seed)

    def texts(values: Array) -> Any:
        return np.vectorize(lambda v: f"{v:.3f}")(values).tolist()

    kernels = rng.normal(0, 0.3, (CHANNELS, 1, KERNEL, KERNEL))
    layers = [
        {"type": "input", "shape": [1, SIDE, SIDE]},
        {"type": "conv2d", "out": CHANNELS, "kernel": KERNEL, "bias": True,
         "weights": texts(kernels), "biases": ["0"] * CHANNELS},
        {"type": "relu"},
        {"type": "maxpool2d", "size": POOL},
        {"type": "flatten"},
        {"type": "linear", "out": 1, "bias": True,
         "weights": texts(rng.normal(0, 0.1, (1, 64))), "biases": ["0"]},
    ]  # fmt: skip
    path.write_text(json.dumps({"layers": layers, "loss": "squared_error"}, indent=1))
    return path


def read_dataset(path: Path) -> tuple[Array, Array]:
    """The images (n, 8, 8) and targets (n,) as float64: each text rounded once, as steptrace
    rounds its exact values."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    values = np.array([[float(v) for v in row] for row in rows])
    return values[:, :-1].reshape(-1, SIDE, SIDE), values[:, -1]


def initial_weights(model: Path) -> Weights:
    layers = [layer for layer in json.loads(model.read_text())["layers"] if "weights" in layer]

    def floats(texts: Any) -> Array:
        return np.vectorize(lambda t: float(Fraction(t)), otypes=[float])(np.array(texts))

    conv, linear = layers
    return Weights(floats(conv["weights"]), floats(conv["biases"]),
                   floats(linear["weights"]), floats(linear["biases"]))  # fmt: skip


# --- the untraced loops ---------------------------------------------------------------------


def numpy_sgd(images: Array, targets: Array, init: Weights, lr: float, steps: int) -> Weights:
    """Per-sample SGD in numpy, nothing recorded: ``steps`` steps through the images in order.

    The fastest of the ways tried (one-off, same process): im2col by one gather of a padded
    image through :data:`IM2COL` (~40–60 µs a step); im2col of every image beforehand (no
    faster); ``sliding_window_view`` (~1.5× slower); nine shifted copies (~5× slower)."""
    w = init.copy()
    kernels, biases = w.w2.reshape(CHANNELS, -1), w.b2  # views: updated in place
    v, c = w.w6.reshape(-1), w.b6
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1))).reshape(len(images), -1)
    shape = (CHANNELS, SIDE // POOL, POOL, SIDE // POOL, POOL)
    for step in range(steps):
        s = step % len(images)
        patches = padded[s][IM2COL]  # 64 × 9: each pixel's neighbourhood
        z = kernels @ patches.T + biases[:, None]  # conv: 4 channels × 64 pixels
        cells = z.reshape(shape)
        top = cells.max(axis=(2, 4))  # ReLU and max-pool commute: max first, on 4 × 4 × 4
        h = np.maximum(top, 0).reshape(-1)
        d = v @ h + c - targets[s]  # δ = o − y
        # backward, every gradient at this step's weights: δ to each cell's maximum where its
        # ReLU is open (ReLU'(0) = 1, as the series takes it)
        d_top = np.where(top >= 0, d * v.reshape(top.shape), 0.0)
        d_z = ((cells == top[:, :, None, :, None]) * d_top[:, :, None, :, None]).reshape(z.shape)
        kernels -= lr * (d_z @ patches)
        biases -= lr * d_z.sum(axis=1)
        v -= lr * (d * h)
        c -= lr * d
    return w


def torch_sgd(
    images: Array, targets: Array, init: Weights, lr: float, steps: int
) -> tuple[float, Weights]:
    """PyTorch's usual loop for the same network in float64, one image a step: the seconds
    its ``steps`` steps took (model and tensors built beforehand) and its final weights.

    One thread: on tensors this small, PyTorch's intra-op threads only hand work back and
    forth, and on a busy 2-core machine the default two ran 20-40 times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _torch_loop(images, targets, init, lr, steps)
    finally:
        torch.set_num_threads(threads)


def _torch_loop(
    images: Array, targets: Array, init: Weights, lr: float, steps: int
) -> tuple[float, Weights]:
    import torch
    from torch import nn

    model = nn.Sequential(
        nn.Conv2d(1, CHANNELS, KERNEL, padding=KERNEL // 2), nn.ReLU(), nn.MaxPool2d(POOL),
        nn.Flatten(), nn.Linear(64, 1),
    ).double()  # fmt: skip
    with torch.no_grad():
        for p, value in zip(model.parameters(), init, strict=True):
            p.copy_(torch.from_numpy(value))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    xs = torch.from_numpy(images[:, None, None]).clone()  # n × (1 row, 1 channel, 8, 8)
    ys = torch.from_numpy(targets[:, None, None]).clone()
    start = time.perf_counter()
    for step in range(steps):
        s = step % len(images)
        optimizer.zero_grad()
        loss = 0.5 * ((model(xs[s]) - ys[s]) ** 2).sum()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    return seconds, Weights(*(p.detach().numpy().copy() for p in model.parameters()))


# --- the recording --------------------------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    rows: int
    seconds: float  # wall, the whole command
    cpu_seconds: float
    peak_mb: float
    bytes: int  # the run's folder
    stored: int  # values a row the files hold
    values: int  # values a row recorded (the stored ones and those stored once in another)
    final: Weights


def record(csv_path: Path, model: Path, rows: int, out: Path) -> Recording:
    """``steptrace record`` of ``rows`` rows as a user runs it, in its own process."""
    argv = record_command(csv_path, model, rows, out)
    seconds, cpu, peak_mb = run_measured(argv, out.parent / f"{out.name}.time")
    (path,) = out.iterdir()
    trace = steptrace.open_trace(path)
    assert trace.num_rows == rows, (trace.num_rows, rows)
    last = (rows - 1, rows)  # one row a step
    final = Weights(
        *(steptrace.load_tensor(trace, f"{n}_after", steps=last)[-1] for n in Weights._fields)
    )
    return Recording(rows, seconds, cpu, peak_mb, folder_bytes(path),
                     sum(t.size for t in trace.tensors if t.stored),
                     sum(t.size for t in trace.tensors), final)  # fmt: skip


def record_command(csv_path: Path, model: Path, rows: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "steptrace", "record", "--dataset", str(csv_path),
            "--target", "y", "--model", str(model), "--numerics", "float64", "--lr", LR,
            "--epochs", str(rows // SAMPLES), "--out", str(out)]  # fmt: skip


def run_measured(argv: list[str], report: Path) -> tuple[float, float, float]:
    """Run ``argv``: its wall seconds, CPU seconds and peak RSS in MB. GNU time reads the
    child's own peak; without it, psutil samples the child ten times a second."""
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    if gnu_time and _is_gnu(gnu_time):
        start = time.perf_counter()
        subprocess.run([gnu_time, "-f", "%M %U %S", "-o", str(report), *argv],
                       check=True, capture_output=True)  # fmt: skip
        seconds = time.perf_counter() - start
        peak_kb, user, system = report.read_text().split()[-3:]
        return seconds, float(user) + float(system), int(peak_kb) / 1024
    import psutil

    start = time.perf_counter()
    child = psutil.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak, cpu = 0, 0.0
    while child.poll() is None:
        try:
            peak = max(peak, child.memory_info().rss)
            times = child.cpu_times()
            cpu = times.user + times.system
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    if child.wait() != 0:
        raise subprocess.CalledProcessError(child.returncode, argv, stderr=child.stderr.read())
    return seconds, cpu, peak / 2**20


def _is_gnu(program: str) -> bool:
    done = subprocess.run([program, "--version"], capture_output=True, text=True)
    return "GNU" in done.stdout + done.stderr


# --- the table ------------------------------------------------------------------------------


class Table:
    """The report: a markdown table of (measure, figure, against)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def add(self, measure: str, figure: str, against: str = "") -> None:
        self.rows.append((measure, figure, against))

    def markdown(self) -> str:
        lines = ["| measure | figure | against |", "|---|---:|---|"]
        lines += [f"| {m} | {f} | {a} |" for m, f, a in self.rows]
        return "\n".join(lines)


def timed_numpy(
    images: Array, targets: Array, init: Weights, steps: int
) -> tuple[float, float, Weights]:
    """The numpy loop's wall and CPU seconds for ``steps`` steps, and its final weights."""
    wall, cpu = time.perf_counter(), time.process_time()
    final = numpy_sgd(images, targets, init, float(LR), steps)
    return time.perf_counter() - wall, time.process_time() - cpu, final


def measure(sizes: Sizes, work: Path) -> Table:
    data, model = write_dataset(work / "images.csv"), write_model(work / "cnn.json")
    images, targets = read_dataset(data)
    init = initial_weights(model)
    n = sizes.rows
    table = Table()

    # The loop before and after the recordings, the better of the two: the machine is shared.
    first = timed_numpy(images, targets, init, n)
    small = record(data, model, sizes.small_rows, work / "small")
    shutil.rmtree(work / "small")
    big = record(data, model, n, work / "big")
    second = timed_numpy(images, targets, init, n)
    wall, cpu, numpy_final = min(first, second, key=lambda timing: timing[0])

    table.add(
        f"numpy loop, untraced, per sample ({n:,} steps)",
        f"{n / wall:,.0f} steps/s",
        f"the yardstick: {wall:.1f} s ({first[0]:.1f} s before the recordings, "
        f"{second[0]:.1f} s after); CPU {cpu:.1f} s",
    )
    ratio = big.seconds / wall
    table.add(
        f"steptrace record --numerics float64 ({n:,} rows)",
        f"{n / big.seconds:,.0f} rows/s",
        f"{big.seconds:.1f} s, **{ratio:.1f}× the numpy loop's time** (goal ≤ {GOAL_RATIO:.0f}×: "
        f"{'met' if ratio <= GOAL_RATIO else 'not met'}); CPU {big.cpu_seconds:.1f} s "
        f"({big.cpu_seconds / cpu:.1f}× the loop's)",
    )
    table.add(
        f"steptrace record --numerics float64 ({sizes.small_rows:,} rows)",
        f"{sizes.small_rows / small.seconds:,.0f} rows/s",
        f"{small.seconds:.1f} s; CPU {small.cpu_seconds:.1f} s",
    )
    growth = big.peak_mb / small.peak_mb - 1
    table.add(
        f"peak RSS of the command, {sizes.small_rows:,} / {n:,} rows",
        f"{small.peak_mb:.0f} / {big.peak_mb:.0f} MB",
        f"{growth:+.0%} for {n // sizes.small_rows}× the rows (goal: flat)",
    )
    per_value = big.bytes / (n * big.stored)
    table.add(
        f"bytes on disk ({n:,} rows)",
        f"{big.bytes / 1e6:,.1f} MB = {big.bytes / n:,.0f} B/row",
        f"**{per_value:.2f} B per stored value** ({big.stored:,} a row; goal ≤ {GOAL_BYTES:.0f} B: "
        f"{'met' if per_value <= GOAL_BYTES else 'not met'}); "
        f"{big.bytes / (n * big.values):.2f} B per recorded value ({big.values:,} a row)",
    )
    recorded, ours = big.final.flat(), numpy_final.flat()
    assert np.allclose(ours, recorded, rtol=RTOL, atol=ATOL), np.abs(ours - recorded).max()
    table.add(
        "final weights: numpy loop vs steptrace",
        f"max abs difference {np.abs(ours - recorded).max():.1e}",
        f"all {len(ours)} parameters after {n:,} steps agree (np.allclose, rtol {RTOL:.0e}); "
        f"the largest is {np.abs(recorded).max():.2f} in absolute value",
    )
    measure_torch(sizes, images, targets, init, n / big.seconds, table)
    return table


def measure_torch(
    sizes: Sizes, images: Array, targets: Array, init: Weights, rate: float, table: Table
) -> None:
    steps = sizes.torch_steps
    label = f"PyTorch untraced, float64, per sample ({steps:,} steps)"
    try:
        import torch  # noqa: F401
    except ImportError:
        table.add(label, "not installed", "optional: pip install torch")
        return
    seconds, final = torch_sgd(images, targets, init, float(LR), steps)
    ours = numpy_sgd(images, targets, init, float(LR), steps).flat()
    speed = rate * seconds / steps  # steptrace's rows per PyTorch's step
    faster = (f"steptrace records every value {speed:.1f}× faster" if speed >= 1
              else f"PyTorch trains {1 / speed:.1f}× faster than steptrace records")  # fmt: skip
    table.add(
        label,
        f"{steps / seconds:,.0f} steps/s",
        f"{faster}; its weights within {np.abs(final.flat() - ours).max():.0e} of the numpy "
        "loop's (one thread)",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help=f"rows recorded, a multiple of {SAMPLES:,}"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    parser.add_argument(
        "--write", type=Path, metavar="DIR", help="only write the dataset and model file into DIR "
        "and print the record command (to profile it)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.rows < SAMPLES or args.rows % SAMPLES:
        parser.error(f"--rows must be a positive multiple of {SAMPLES:,} (whole epochs)")
    if args.write:
        data, model = write_dataset(args.write / "images.csv"), write_model(args.write / "cnn.json")
        command = record_command(data, model, args.rows, args.write / "traces")
        print("python", *command[1:])
        return
    sizes = sizes_for(args.rows, args.quick)
    print(header(), flush=True)
    print(f"commit {_commit()} · steptrace from {Path(steptrace.__file__).parent}", flush=True)
    with tempfile.TemporaryDirectory(prefix="steptrace-cnn-") as work:
        print(measure(sizes, Path(work)).markdown())


def _commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(steptrace.__file__).parent)  # fmt: skip
    except OSError:
        return "?"
    return done.stdout.strip() or "?"


if __name__ == "__main__":
    main()
