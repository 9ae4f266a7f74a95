"""Recording a sweep's runs: in this process, or dealt out to the workers of an executor.

A run's loop holds the GIL, so threads cannot record two runs at once; processes can. Any
:class:`concurrent.futures.Executor` records a sweep, one task per run: a Dask client's
``get_executor()`` (a cluster, or Dask's local one), or the standard library's
:class:`~concurrent.futures.ProcessPoolExecutor`, which ``--workers N`` starts here. A task
records its run as a run recorded alone is recorded (:func:`record_job`), so a swept run is
that run, bit for bit, whichever worker records it.

The workers write the runs themselves: the output folder must be one they see at the same path
as this process (a shared file system on a cluster). The sweep makes a hidden folder there,
``.sweep-<id>/``, that is also how it talks to its workers: a worker that does not see it fails
its run with a line saying so; the sweep drops ``stop`` in it on Ctrl-C and ``cancel`` on an
error; each task claims its run in it before starting, so a task that Dask starts again after
its worker died knows its run was begun. The folder goes when the sweep ends.

Stopping, whatever the cause, keeps every flushed step, as a single recording does:

- **Ctrl-C** reaches this process (local workers ignore it): every worker ends the run in hand
  after its current block and marks it incomplete, no other run starts, and the sweep raises
  :class:`~steptrace.errors.Interrupted`. A second Ctrl-C stops waiting for them.
- **An error** in one run (a full disk, the exact limit, a worker that cannot write) lets the
  runs in hand finish, starts no other, and is raised here.
- **A lost worker** (killed, out of memory) leaves its run incomplete; the other runs go on,
  and the sweep ends with :class:`RunsLost`, naming the runs to continue with ``--resume``.
- **This process dying** (SIGKILL) stops local workers as on Ctrl-C; a cluster's workers
  finish the runs they hold.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    BrokenExecutor,
    CancelledError,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..data import Dataset
from ..errors import ConfigError, Interrupted, SteptraceError, WriteError
from .recorder import (
    Progress,
    RunResult,
    _ctrl_c_requests_stop,
    record_settings,
)
from .settings import Settings
from .sweepjob import CANCEL, STOP, Job, Lost, NotStarted, record_job, start_pool_worker

__all__ = [
    "EXACT_ROW_COST",
    "FLOAT_MIN_CORES",
    "PARALLEL_MIN_WORK",
    "RunsLost",
    "available_cores",
    "local_pool",
    "record_on",
    "record_points",
    "workers_for",
]

#: Below this much work (rows, an exact row counting as :data:`EXACT_ROW_COST` float rows) a
#: sweep stays in one process: starting a worker (~0.5 s, importing numpy, pandas and pyarrow)
#: would cost more than it saves.
PARALLEL_MIN_WORK = 3_000_000
#: An exact row costs about as much as this many float rows (docs/benchmarks.md).
EXACT_ROW_COST = 300
#: Float sweeps use worker processes by default from this many cores (see :func:`workers_for`).
FLOAT_MIN_CORES = 4
#: How often the sweep looks at its tasks (and at Ctrl-C).
POLL_SECONDS = 0.1


class RunsLost(SteptraceError):
    """Workers were lost mid-sweep: some runs are incomplete (continue each with ``--resume``)
    and some may never have started; ``results`` holds the runs that did finish."""

    exit_code = 1

    def __init__(self, message: str, results: list[RunResult], incomplete: list[Path]) -> None:
        super().__init__(message)
        self.results = results
        self.incomplete = incomplete


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def workers_for(runs: Sequence[Settings], rows_per_epoch: int, asked: int | None) -> int:
    """How many processes record ``runs``: ``asked`` if given (at most one per run); else one
    per core when the sweep is big enough and the cores many enough to gain from it, else 1.

    A float sweep in one process already keeps about 1.2 cores busy (its loop beside the
    Parquet encoding): on 2 cores, workers were measured 1.09–1.28× faster, little for their
    start; so floats go to workers from :data:`FLOAT_MIN_CORES` cores, exact runs (one core
    each) from 2."""
    if asked is not None:
        return max(1, min(asked, len(runs)))
    exact = any(s.numerics.is_exact for s in runs)
    work = sum(rows_per_epoch * s.epochs * (EXACT_ROW_COST if s.numerics.is_exact else 1)
               for s in runs)  # fmt: skip
    cores = available_cores()
    if work < PARALLEL_MIN_WORK or cores < (2 if exact else FLOAT_MIN_CORES):
        return 1
    return min(cores, len(runs))


def record_points(
    dataset: Dataset,
    points: Sequence[tuple[Settings, str | None]],
    out: str | Path,
    progress: Progress | None = None,
    flush_seconds: float = 1.0,
    *,
    workers: int | None = None,
    executor: Executor | None = None,
    scheduler: str | None = None,
) -> list[RunResult]:
    """Record ``points`` (settings and run name) into ``out``: on ``executor``, on the Dask
    cluster at ``scheduler``, on ``workers`` local processes, or in this one (see
    :func:`steptrace.sweep`)."""
    chosen = [n for n, v in (("executor", executor), ("scheduler", scheduler),
                             ("workers", workers)) if v is not None]  # fmt: skip
    if len(chosen) > 1:
        raise ConfigError(f"give one of {' and '.join(chosen)}: each says who records the runs")
    if scheduler is not None:
        from .cluster import dask_executor

        with dask_executor(scheduler) as remote:
            return record_on(remote, dataset, points, out, progress, flush_seconds)
    if executor is not None:
        return record_on(executor, dataset, points, out, progress, flush_seconds)
    processes = workers_for([s for s, _ in points], len(dataset), workers)
    if processes > 1:
        with local_pool(processes) as pool:
            return record_on(pool, dataset, points, out, progress, flush_seconds)
    return _in_this_process(dataset, points, out, progress, flush_seconds)


def _in_this_process(
    dataset: Dataset,
    points: Sequence[tuple[Settings, str | None]],
    out: str | Path,
    progress: Progress | None,
    flush_seconds: float,
) -> list[RunResult]:
    """One run after the other; consecutive float runs through one pipeline."""
    from .sweepfast import sweep_floats

    results: list[RunResult] = []
    i = 0
    while i < len(points):
        settings, name = points[i]
        if settings.numerics.is_exact:
            results.append(record_settings(dataset, settings, out, name, progress, flush_seconds))
            i += 1
            continue
        j = i
        while j < len(points) and not points[j][0].numerics.is_exact:
            j += 1
        results += sweep_floats(dataset, points[i:j], out, progress, flush_seconds)
        i = j
    return results


def spare_cores(executor: Executor) -> bool:
    """Whether each worker of ``executor`` has a core to spare, so that a run may compute its
    next block while it writes the last one (faster then; ~10% more CPU, and slower, when the
    worker's core is all it has): a process pool of at most half this host's cores, a Dask
    cluster whose hosts have twice as many cores as worker threads; for any other executor,
    no."""
    if isinstance(executor, ProcessPoolExecutor):
        return 2 * int(getattr(executor, "_max_workers", available_cores())) <= available_cores()
    if isinstance(executor, ThreadPoolExecutor):
        return False  # its threads share this process's GIL already
    from .cluster import hosts_have_spare_cores

    return bool(hosts_have_spare_cores(executor))


@contextmanager
def local_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """``workers`` processes of the standard library's pool, which leave Ctrl-C to this one,
    started the platform's way (:mod:`multiprocessing`'s default; Linux before Python 3.14
    forks). A process running threads does not fork: a thread may hold a lock the child would
    inherit held. Its workers start as fresh interpreters, which import the caller's main
    module: a script then needs the usual ``if __name__ == "__main__":`` guard.
    """
    method = multiprocessing.get_context().get_start_method()
    if method == "fork" and threading.active_count() > 1:
        method = "spawn"
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context(method),
        initializer=start_pool_worker,
        initargs=(os.getpid(),),
    )
    try:
        yield pool
    except BaseException:
        # The workers were told to stop (or have nothing to do): do not wait for them.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def record_on(
    executor: Executor,
    dataset: Dataset,
    points: Sequence[tuple[Settings, str | None]],
    out: str | Path,
    progress: Progress | None = None,
    flush_seconds: float = 1.0,
    pipelined: bool | None = None,
) -> list[RunResult]:
    """Record ``points`` (settings and run name) into ``out`` on ``executor``, one task per run;
    the results in the order given.

    ``progress`` is called with the rows of the runs finished so far and the sweep's total.
    ``pipelined`` runs each run's computing and writing in two threads of its worker; by
    default, where the workers have a core to spare (:func:`spare_cores`).
    """
    if pipelined is None:
        pipelined = spare_cores(executor)
    given = Path(out)
    folder = given.absolute()
    marks = folder / f".sweep-{uuid.uuid4().hex[:12]}"
    try:
        marks.mkdir(parents=True)
    except OSError as exc:
        raise WriteError(
            f"cannot create output folder {str(given)!r}: {exc.strerror}; choose a folder you "
            "can write to with --out"
        ) from None
    jobs = [
        Job(
            i,
            dataset,
            settings,
            name,
            str(folder),
            marks.name,
            flush_seconds,
            os.getpid(),
            pipelined=pipelined,
        )
        for i, (settings, name) in enumerate(points)
    ]
    gathered = _Gathered(jobs, marks, given, progress)
    try:
        with _ctrl_c_requests_stop() as ctrl_c:
            gathered.run(executor, ctrl_c)
    finally:
        shutil.rmtree(marks, ignore_errors=True)
    return gathered.results()


class _Gathered:
    """The sweep's tasks: submitted, watched, and their outcomes gathered."""

    def __init__(
        self, jobs: list[Job], marks: Path, given: Path, progress: Progress | None
    ) -> None:
        self.jobs = jobs
        self.marks = marks
        self.given = given  # the output folder as the caller named it
        self.progress = progress
        self.rows = [len(j.dataset) * j.settings.epochs for j in jobs]
        self.done_rows = 0
        self.outcomes: dict[int, RunResult | Lost | NotStarted] = {}
        self.error: BaseException | None = None
        self.interrupted = False
        self.told: str | None = None
        self.pending: set[Future[Any]] = set()
        self.futures: dict[Future[Any], int] = {}

    def run(self, executor: Executor, ctrl_c: threading.Event) -> None:
        self.futures = futures = {executor.submit(record_job, job): job.index for job in self.jobs}
        self.pending = set(futures)
        try:
            while self.pending:
                done, self.pending = wait(self.pending, POLL_SECONDS, FIRST_COMPLETED)
                if ctrl_c.is_set() and not self.interrupted:
                    self.interrupted = True
                    self._tell(STOP)
                for future in done:
                    self._take(futures[future], future)
        except KeyboardInterrupt:  # a second Ctrl-C: the workers were told; do not wait
            self.interrupted = True
            self._tell(STOP)
            raise self._interrupted() from None

    def _tell(self, word: str) -> None:
        """Drop ``word`` in the sweep's folder (no run starts, and on ``stop`` the runs in
        hand end), and cancel the tasks that have not claimed a run: the others are waited
        for (a Dask task cancelled while it runs would go on unseen)."""
        self.told = self.told or word
        (self.marks / word).touch()
        for future in self.pending:
            if not (self.marks / f"claim-{self.futures[future]}").exists():
                future.cancel()

    def _take(self, i: int, future: Future[Any]) -> None:
        outcome: RunResult | Lost | NotStarted
        try:
            outcome = future.result()
        except CancelledError:
            # Cancelled by us, or by the executor losing its scheduler: was it begun?
            outcome = NotStarted(i) if self.told else self._lost(i)
        except Interrupted as exc:
            if not self.interrupted:
                self._fail(exc)
            outcome = self._lost(i)  # stopped mid-run (its claim names the run), or never begun
        except BrokenExecutor:  # a process pool's worker died: the pool gives up every task
            outcome = self._lost(i)
        except BaseException as exc:
            if _is_killed_worker(exc):
                outcome = self._lost(i)
            else:
                self._fail(exc)
                outcome = NotStarted(i)
        self.outcomes[i] = outcome
        if isinstance(outcome, RunResult):
            self.done_rows += self.rows[i]
            if self.progress is not None:
                self.progress(self.done_rows, sum(self.rows))

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
            self._tell(CANCEL)

    def _lost(self, i: int) -> Lost | NotStarted:
        claim = self.marks / f"claim-{i}"
        try:
            path = claim.read_text(encoding="utf-8")
        except OSError:
            return NotStarted(i)
        return Lost(i, path or None)

    def _left(self) -> tuple[list[Path], list[Job]]:
        """What a sweep that stopped early leaves, in grid order: the runs begun and not
        complete (to resume), and the runs never begun (to record)."""
        begun: list[Path] = []
        missing: list[Job] = []
        for job in self.jobs:
            outcome = self.outcomes.get(job.index)
            if isinstance(outcome, Lost) and outcome.path:
                begun.append(self.given / Path(outcome.path).name)
            elif not isinstance(outcome, RunResult):
                missing.append(job)
        return begun, missing

    def _interrupted(self) -> Interrupted:
        complete = sum(isinstance(o, RunResult) for o in self.outcomes.values())
        return Interrupted(
            f"interrupted by Ctrl-C with {complete} of {len(self.jobs)} runs complete; the "
            f"steps recorded so far are in {self.given}" + _to_do(*self._left())
        )

    def results(self) -> list[RunResult]:
        """The runs in grid order (paths under ``out`` as the caller gave it), or the error,
        interruption or lost workers that ended the sweep."""
        if self.error is not None:
            raise self.error
        if self.interrupted:
            raise self._interrupted()
        results = [
            RunResult(self.given / o.path.name, o.run_id, o.status, o.reason, o.summary)
            for o in (self.outcomes.get(job.index) for job in self.jobs)
            if isinstance(o, RunResult)
        ]
        if len(results) == len(self.jobs):
            return results
        incomplete, missing = self._left()
        raise RunsLost(_lost_line(len(self.jobs), incomplete, missing), results, incomplete)


def _to_do(incomplete: list[Path], missing: list[Job]) -> str:
    """What is left to do after a sweep stopped early: runs to resume, runs to record."""
    parts = []
    if incomplete:
        each = "it" if len(incomplete) == 1 else "each"
        paths = ", ".join(str(p) for p in incomplete)
        parts.append(f"; continue {each} with 'steptrace record --resume RUN': {paths}")
    if missing:
        names = ", ".join(j.name or f"run {j.index + 1}" for j in missing)
        parts.append(f"; never started: {names} (record {'it' if len(missing) == 1 else 'them'} "
                     "again)")  # fmt: skip
    return "".join(parts)


def _lost_line(total: int, incomplete: list[Path], missing: list[Job]) -> str:
    complete = total - len(incomplete) - len(missing)
    return f"a worker was lost mid-sweep: {complete} of {total} runs complete" + _to_do(
        incomplete, missing
    )


def _is_killed_worker(exc: BaseException) -> bool:
    """Dask's word for a task whose workers kept dying (distributed may not be installed)."""
    distributed = sys.modules.get("distributed")
    killed = getattr(distributed, "KilledWorker", None)
    return isinstance(killed, type) and isinstance(exc, killed)
