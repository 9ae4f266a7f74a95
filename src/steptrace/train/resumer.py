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
from typing import Any

import numpy as np
import pyarrow.compute as pc

from ..data import Dataset, load_dataset
from ..errors import ConfigError, DatasetError
from ..model.stack import ParamSet
from ..trace.opener import open_trace
from ..trace.reader import Trace
from ..trace.schema import EXACT_SUFFIX, after_columns
from ..trace.summary import SummaryTracker
from ..trace.writer import TraceWriter
from .columns import iter_blocks
from .recorder import Progress, RunResult, write_run
from .settings import Settings

__all__ = ["resume"]


def _dataset_of(trace: Trace, dataset: str | Path | Dataset | None) -> Dataset:
    info = trace.meta["dataset"]
    if dataset is None:
        dataset = info.get("source", "seed")
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(
        dataset, info["targets"], info["features"]
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
        ds, m["lr"], int(m["epochs"]), int(m["batch_size"]), m["numerics"], None,
        bool(m["shuffle"]), m["seed"], model=m["model"],
    )  # fmt: skip


def _last_params(trace: Trace, settings: Settings) -> tuple[int, ParamSet | None]:
    """The last flushed step and the parameters after it, in the run's number system."""
    steps = trace.read_table(["step"]).column("step")
    if len(steps) == 0:
        return -1, None
    last = pc.max(steps).as_py()
    expected = int(pc.count_distinct(steps).as_py())
    if expected != last + 1:
        raise ConfigError(f"{trace.path} has gaps in its steps; it cannot be resumed")
    num = settings.numerics
    stack = settings.model.stack(num)
    # The tensors list w{k}_after before b{k}_after, layer by layer: the order of Stack.flat.
    cols = after_columns(trace.tensors)
    if num.is_exact:
        cols = [c + EXACT_SUFFIX for c in cols]
    row = trace.read(cols, steps=(last, last + 1)).iloc[-1]
    if num.is_exact:
        values: list[Any] = [Fraction(row[c]) for c in cols]
    elif num.name == "float32":
        values = [np.float32(row[c]) for c in cols]
    else:
        values = [float(row[c]) for c in cols]
    return last, stack.unflat(values)


def _history(trace: Trace, tracker: SummaryTracker) -> None:
    """Feed the flushed steps to the summary, so the final summary covers the whole run."""
    w_cols = after_columns(trace.tensors)
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
    framework = (trace.meta.get("recorded_with") or {}).get("framework")
    if framework:
        raise ConfigError(
            f"{trace.path} was recorded from a {framework} training loop: steptrace cannot "
            "continue it; run the loop again (or record the same model with steptrace)"
        )
    if trace.meta.get("record"):
        raise ConfigError(
            f"{trace.path} records a selection of its steps or values: steptrace cannot "
            "continue it (its last step's parameters may not be held); record it again"
        )
    if trace.v1:
        raise ConfigError(
            f"{trace.path} was recorded in trace format 1 by an older steptrace; record it "
            "again (its settings are in its _run.json) rather than mix formats in one run"
        )
    ds = _dataset_of(trace, dataset)
    settings = _settings_of(trace, ds)
    last, params = _last_params(trace, settings)
    for stale in trace.path.glob(".part-*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()
    tracker = SummaryTracker(int(trace.meta["steps_per_epoch"]))
    _history(trace, tracker)
    writer = TraceWriter(
        trace.path, settings.numerics.is_exact, trace.meta,
        flush_seconds=flush_seconds, first_part=_next_part(trace),
    )  # fmt: skip
    blocks = iter_blocks(ds, settings, start_step=last + 1, params=params)
    return write_run(writer, blocks, tracker, progress)


def _next_part(trace: Trace) -> int:
    numbers = [int(f.stem.split("-")[1]) for f in trace.files]
    return max(numbers, default=-1) + 1
