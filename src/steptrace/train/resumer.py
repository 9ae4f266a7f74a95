"""Continuing an incomplete run where its last flushed step ended.

Everything a step needs is in the trace: the settings in the metadata, the weights in the last
flushed row (exactly: float32 values widen to float64 without loss, exact runs keep their
rational text), and the order of the samples is a function of (seed, epoch). So the resumed
trace is identical to one recorded without interruption — bit for bit in float runs, equal
rationals in exact ones.
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from ..data import Dataset, load_dataset
from ..errors import ConfigError, DatasetError
from ..numerics import Number
from ..trace.reader import Trace, open_trace
from ..trace.schema import EXACT_SUFFIX
from ..trace.summary import SummaryTracker
from ..trace.writer import TraceWriter
from .recorder import Progress, RunResult, write_run
from .trainer import Settings, iter_blocks

__all__ = ["resume"]


def _dataset_of(trace: Trace, dataset: str | Path | Dataset | None) -> Dataset:
    info = trace.meta["dataset"]
    if dataset is None:
        dataset = info.get("source", "seed")
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(
        dataset, info["target"], info["features"]
    )  # fmt: skip
    if ds.sha256 != info["sha256"]:
        raise DatasetError(
            f"dataset {ds.source!r} is not the one {trace.path} was recorded on "
            f"(content hash differs); give the original with --dataset"
        )
    return ds


def _settings_of(trace: Trace, ds: Dataset) -> Settings:
    m = trace.meta
    return Settings.parse(
        ds, m["lr"], int(m["epochs"]), int(m["batch_size"]), m["numerics"], m["init"],
        bool(m["shuffle"]), m["seed"],
    )  # fmt: skip


def _last_weights(trace: Trace, settings: Settings) -> tuple[int, tuple[Number, ...]]:
    """The last flushed step and the weights after it, in the run's number system."""
    steps = trace.read_table(["step"]).column("step")
    if len(steps) == 0:
        return -1, tuple(settings.numerics.make(q) for q in settings.init)
    last = pc.max(steps).as_py()
    expected = int(pc.count_distinct(steps).as_py())
    if expected != last + 1:
        raise ConfigError(f"{trace.path} has gaps in its steps; it cannot be resumed")
    cols = trace.vector("w_after")
    if settings.numerics.is_exact:
        cols = [c + EXACT_SUFFIX for c in cols]
    row = trace.read(cols, steps=(last, last + 1)).iloc[-1]
    num = settings.numerics
    if num.is_exact:
        return last, tuple(Fraction(row[c]) for c in cols)
    if num.name == "float32":
        return last, tuple(np.float32(row[c]) for c in cols)
    return last, tuple(float(row[c]) for c in cols)


def _history(trace: Trace, tracker: SummaryTracker) -> None:
    """Feed the flushed steps to the summary, so the final summary covers the whole run."""
    w_cols = trace.vector("w_after")
    for part in trace.files:
        table = Trace(part, trace.meta, trace.status, files=[part]).read_table(
            ["step", "loss", *w_cols]
        )
        block = {name: table.column(name).to_numpy() for name in ("step", "loss")}
        tracker.update(block, [table.column(c).to_numpy() for c in w_cols])


def resume(
    run: str | Path,
    dataset: str | Path | Dataset | None = None,
    progress: Progress | None = None,
    flush_seconds: float = 1.0,
) -> RunResult:
    """Continue an incomplete run in place, from the step after its last flushed one.

    ``dataset`` is needed only if the run's dataset file moved; its content must be the same.

    >>> resume("traces/seed-float64-lr1e-9")  # doctest: +SKIP
    """
    trace = open_trace(run)
    if trace.status == "complete":
        raise ConfigError(f"{trace.path} is already complete; nothing to resume")
    if trace.status == "running":
        raise ConfigError(f"{trace.path} is still being recorded by another process")
    if not trace.path.is_dir():
        raise ConfigError(f"{trace.path} is a single part file; resume its run folder instead")
    ds = _dataset_of(trace, dataset)
    settings = _settings_of(trace, ds)
    last, w = _last_weights(trace, settings)
    for stale in trace.path.glob(".part-*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()
    tracker = SummaryTracker(int(trace.meta["steps_per_epoch"]))
    _history(trace, tracker)
    writer = TraceWriter(
        trace.path, ds.n_features, settings.numerics.is_exact, trace.meta,
        flush_seconds=flush_seconds, first_part=_next_part(trace),
    )  # fmt: skip
    return write_run(writer, iter_blocks(ds, settings, start_step=last + 1, w=w), tracker, progress)


def _next_part(trace: Trace) -> int:
    numbers = [int(f.stem.split("-")[1]) for f in trace.files]
    return max(numbers, default=-1) + 1
