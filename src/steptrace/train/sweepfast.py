"""Float sweeps through one pipeline: the next run is computed while the last is written.

Recording a run alone already overlaps computing (a Python loop, holding the GIL) with writing
(Parquet encoding, which releases it). A sweep recorded run after run would empty that pipeline
at every run's end; here one background thread computes every run's blocks in turn, so the
writer of run i and the loop of run i + 1 share the machine's cores. Each run is computed by
:func:`steptrace.train.columns.compute_blocks`, the function a single recording uses, so a swept
run is the run recorded alone, bit for bit (``tests/test_columns.py``), and each is still its own
trace.

Why not one loop over a (runs × features) weight matrix? Measured on the article's model with
64 learning rates, a numpy step over 64 × 3 weights costs about as much as 64 steps of the
plain-Python loop (numpy's per-call overhead is that of a dozen Python float operations), and
the loop is a third of the work: encoding 64 traces' Parquet is the floor (docs/benchmarks.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Sequence
from pathlib import Path

from ..data import Dataset
from .columns import compute_blocks
from .prefetch import prefetch
from .recorder import Progress, RunResult, StopFlag, new_run, write_run
from .settings import Settings

__all__ = ["iter_sweep", "sweep_floats"]


def sweep_floats(
    dataset: Dataset,
    runs: Sequence[tuple[Settings, str | None]],
    out: str | Path,
    progress: Progress | None = None,
    flush_seconds: float = 1.0,
) -> list[RunResult]:
    """Record float runs, one per ``(settings, name)``, into ``out``, in the order given.

    >>> from steptrace.data import seed_dataset
    >>> ds = seed_dataset()
    >>> runs = [(Settings.parse(ds, lr, numerics="float64"), None) for lr in ("1", "2")]
    >>> [r.status for r in sweep_floats(ds, runs, "traces")]  # doctest: +SKIP
    ['complete', 'complete']
    """
    events = iter_sweep(dataset, runs, out, progress, flush_seconds)
    return [result for _, result in events if result is not None]


def iter_sweep(
    dataset: Dataset,
    runs: Sequence[tuple[Settings, str | None]],
    out: str | Path,
    progress: Progress | None = None,
    flush_seconds: float = 1.0,
    stop: StopFlag | None = None,
) -> Generator[tuple[int, RunResult | None], None, None]:
    """:func:`sweep_floats` step by step: yields ``(i, None)`` before run ``i`` starts (close
    the generator then, and it never does) and ``(i, result)`` once it is recorded. ``stop``
    replaces Ctrl-C as the request to stop (see :func:`steptrace.train.recorder.write_run`)."""
    stream = prefetch(
        (i, block) for i, (s, _) in enumerate(runs) for block in compute_blocks(dataset, s)
    )
    try:
        for i, blocks in itertools.groupby(stream, key=lambda item: item[0]):
            yield i, None
            settings, name = runs[i]
            writer, tracker = new_run(dataset, settings, out, name, flush_seconds)
            run_blocks = (block for _, block in blocks)
            yield i, write_run(writer, run_blocks, tracker, progress, stop)
    finally:
        stream.close()  # an error or Ctrl-C in one run stops the computing of the next ones
