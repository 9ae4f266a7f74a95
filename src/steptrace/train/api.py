"""The front door: what users ask for (``record``, ``sweep``) turned into checked settings and
recorded runs. One run goes through :mod:`.recorder`; a grid of runs through :mod:`.grid` and
:mod:`.sweeps`.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from fractions import Fraction
from pathlib import Path

from ..data import Dataset, load_dataset
from ..trace.keep import Selection
from .grid import Grid, grid_points
from .recorder import Lr, Progress, RunResult, record_settings
from .settings import ModelSource, Settings
from .sweeps import record_points

__all__ = ["RunResult", "record", "sweep"]


def record(
    dataset: str | Path | Dataset = "seed",
    lr: str | float | Fraction = "1",
    *,
    epochs: int = 1,
    batch_size: int = 1,
    numerics: str = "exact",
    init: str | Sequence[str | float | Fraction] | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    model: ModelSource | None = None,
    out: str | Path = "traces",
    name: str | None = None,
    target: str | Sequence[str] | None = None,
    features: Sequence[str] | None = None,
    progress: Progress | None = None,
    every: int | None = None,
    steps: str | None = None,
    tensors: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    keep_last: int | None = None,
    after: int | None = None,
    trigger: str | Sequence[str] | None = None,
) -> RunResult:
    """Record one run into a new folder under ``out`` and return where it went.

    Numbers may be given as text (``"1e-7"``, ``"1/200"``) and are then taken exactly.
    ``every=N`` (every N-th step from 0), ``steps="0-99,1000-1099"``, ``tensors`` (names or
    globs of :func:`~steptrace.load_tensor`'s names) and ``layers`` choose what is recorded;
    the per-step figures (:func:`~steptrace.load_scalars`) cover every step all the same.
    ``keep_last=N`` keeps every value of the last N steps in memory and writes them when a
    ``trigger`` fires (``"nonfinite"``, the default; ``"loss_spike:10"``), ``after`` steps
    more, and at the run's end (docs/trace-format.md, "Flight recorder").

    >>> result = record("seed", lr="1", numerics="exact", out="traces")  # doctest: +SKIP
    >>> result.summary.final_loss  # doctest: +SKIP
    0.5
    """
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, target, features)
    selection = Selection.of(every, steps, tensors, layers, keep_last, after, trigger)
    settings = Settings.parse(ds, lr, epochs, batch_size, numerics, init, shuffle, seed, model)
    return record_settings(ds, settings, out, name, progress, selection=selection)


def sweep(
    lrs: Lr | Sequence[Lr] = "1",
    dataset: str | Path | Dataset = "seed",
    *,
    batch_size: int | Sequence[int] = 1,
    numerics: str | Sequence[str] = "exact",
    seed: int | Sequence[int] | None = None,
    model: ModelSource | Sequence[ModelSource] | None = None,
    epochs: int = 1,
    init: str | Sequence[str | float | Fraction] | None = None,
    shuffle: bool = False,
    out: str | Path = "traces",
    name: str | None = None,
    target: str | Sequence[str] | None = None,
    features: Sequence[str] | None = None,
    progress: Progress | None = None,
    flush_seconds: float = 1.0,
    workers: int | None = None,
    executor: Executor | None = None,
    scheduler: str | None = None,
) -> list[RunResult]:
    """Record a grid of runs, one per combination of the settings given as lists (``lrs``,
    ``batch_size``, ``numerics``, ``seed``, ``model``), same data, all into ``out``; the
    results in grid order, α varying fastest. Runs are named after the settings that vary.

    Every setting of every point is checked before the first run starts, so a bad value at
    the end of a list does not leave half a sweep behind. Each run is its own trace, the run
    recorded alone, bit for bit, whoever records it:

    - ``executor``: any :class:`concurrent.futures.Executor` — a Dask client's
      ``get_executor()``, a :class:`~concurrent.futures.ProcessPoolExecutor` — records the runs;
      its workers must see ``out`` at the same path;
    - ``scheduler``: the address of a running Dask scheduler (``tcp://host:8786``), the same
      through a client of its own (needs ``steptrace[dask]``);
    - ``workers``: that many local processes; by default one per core when the sweep is big
      enough to gain from it, else one process, where float runs go through one pipeline
      (:mod:`steptrace.train.sweepfast`).

    See :mod:`steptrace.train.sweeps` for how stopping (Ctrl-C, an error, a lost worker) keeps
    every flushed step.

    >>> runs = sweep(["1e-9", "1e-8"], batch_size=[1, 2], numerics="float64")  # doctest: +SKIP
    >>> [r.path.name for r in runs]  # doctest: +SKIP
    ['seed-float64-lr1e-9-b1', 'seed-float64-lr1e-8-b1', 'seed-float64-lr1e-9-b2', ...]
    """
    grid = Grid.of(lrs, batch_size, numerics, seed, model)
    if len(grid) == 0:
        return []
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, target, features)
    points = grid_points(ds, grid, name, epochs=epochs, init=init, shuffle=shuffle)
    return record_points(
        ds, points, out, progress, flush_seconds, workers=workers, executor=executor,
        scheduler=scheduler,
    )  # fmt: skip
