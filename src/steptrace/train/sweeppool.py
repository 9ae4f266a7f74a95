"""Sweeps over several processes: the runs dealt out to as many workers as cores.

A run's sequential loop holds the GIL, so threads cannot record two runs at once; processes
can. Each worker is a fresh interpreter (``python -m steptrace.train.sweeppool``, so nothing of the
caller's program is re-imported or inherited) that receives the dataset and its share of the
runs (every n-th), and records them as a sweep in one process does
(:func:`steptrace.train.sweepfast.iter_sweep` for floats, one after the other for exact runs):
a swept run is the run recorded alone, bit for bit, in every number system. It reports rows and
results
back; the parent drives the progress bar and returns the results in the order given. Messages
are pickles on the workers' standard input and output.

Stopping, whatever the cause, keeps every flushed step, as a single recording does:

- **Ctrl-C** reaches the parent only (workers run in their own session): it tells every worker
  to stop, each ends the run in hand after its current block and marks it incomplete, no other
  run starts, and the parent raises :class:`~steptrace.errors.Interrupted`. A second Ctrl-C
  kills the workers (flushed parts are whole files; their runs stay incomplete).
- **An error** in one run (a full disk, the exact limit) lets the runs in hand finish, starts no
  other, and is raised in the parent as in a sweep recorded in one process.
- **The parent dying** (SIGKILL) closes the workers' input: each stops as on Ctrl-C.
"""

from __future__ import annotations

import os
import pickle
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from ..data import Dataset
from ..errors import Interrupted, SteptraceError
from .recorder import Progress, RunResult, record_settings
from .settings import Settings
from .sweepfast import iter_sweep

__all__ = [
    "EXACT_ROW_COST",
    "FLOAT_MIN_CORES",
    "PARALLEL_MIN_WORK",
    "available_cores",
    "sweep_in_processes",
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

STOP, CANCEL = "stop", "cancel"


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
    exact = bool(runs) and runs[0].numerics.is_exact
    work = sum(rows_per_epoch * s.epochs * (EXACT_ROW_COST if exact else 1) for s in runs)
    cores = available_cores()
    if work < PARALLEL_MIN_WORK or cores < (2 if exact else FLOAT_MIN_CORES):
        return 1
    return min(cores, len(runs))


def sweep_in_processes(
    dataset: Dataset,
    runs: Sequence[tuple[Settings, str | None]],
    out: str | Path,
    workers: int,
    progress: Progress | None = None,
    flush_seconds: float = 1.0,
) -> list[RunResult]:
    """Record ``runs`` (settings and name) into ``out`` with ``workers`` processes.

    ``progress`` is called with the rows recorded so far by all runs, and the sweep's total.
    """
    pool = _Pool(dataset, runs, Path(out), workers, flush_seconds, progress)
    try:
        pool.finish()
    except KeyboardInterrupt:
        pool.stop()
        try:
            pool.finish()  # the workers end their runs' flushes
        except KeyboardInterrupt:  # a second Ctrl-C: now
            pool.kill()
        raise Interrupted(
            f"interrupted by Ctrl-C with {len(pool.results)} of {len(runs)} runs complete; "
            f"the steps recorded so far are in {out} (runs stopped are marked incomplete; "
            "continue each with --resume)"
        ) from None
    except BaseException:
        pool.kill()
        raise
    if pool.error is not None:
        raise pool.error
    return [pool.results[i] for i in range(len(runs))]


class _Worker:
    """One worker process, its input, and a thread reading its messages into ``inbox``."""

    def __init__(self, k: int, inbox: queue.Queue[Any]) -> None:
        self.k = k
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "steptrace.train.sweeppool"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # the terminal's Ctrl-C is the parent's to handle
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin: IO[bytes] = self.proc.stdin
        threading.Thread(
            target=_read_messages, args=(k, self.proc.stdout, inbox), daemon=True
        ).start()

    def send(self, message: Any) -> None:
        try:
            pickle.dump(message, self.stdin)
            self.stdin.flush()
        except OSError:  # it has gone; its end is reported by its reader
            pass


def _read_messages(k: int, stream: IO[bytes], inbox: queue.Queue[Any]) -> None:
    while True:
        try:
            message = pickle.load(stream)
        except (EOFError, OSError, pickle.UnpicklingError):
            inbox.put((k, "exit", None, None))
            return
        inbox.put((k, *message))


class _Pool:
    """The parent's side: deals the runs out, gathers rows and results."""

    def __init__(
        self,
        dataset: Dataset,
        runs: Sequence[tuple[Settings, str | None]],
        out: Path,
        workers: int,
        flush_seconds: float,
        progress: Progress | None,
    ) -> None:
        self.progress = progress
        self.rows = [0] * len(runs)
        self.total = sum(len(dataset) * s.epochs for s, _ in runs)
        self.results: dict[int, RunResult] = {}
        self.error: BaseException | None = None
        self.stopping = False
        self.inbox: queue.Queue[Any] = queue.Queue()
        indexed = [(i, settings, name) for i, (settings, name) in enumerate(runs)]
        # All started before any is fed: they import (~0.4 s) side by side, and a big
        # dataset, which fills the pipe, waits for one worker at a time only to be read.
        self.workers = [_Worker(k, self.inbox) for k in range(workers)]
        for k, worker in enumerate(self.workers):
            worker.send((dataset, out, flush_seconds, indexed[k::workers]))
        self.alive = len(self.workers)
        self.done = [False] * len(self.workers)

    def finish(self) -> None:
        """Take messages until every worker has exited."""
        while self.alive:
            self._take(*self.inbox.get())
        for worker in self.workers:
            worker.proc.wait()

    def stop(self) -> None:
        self.stopping = True
        self._tell_all(STOP)

    def kill(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
            worker.proc.wait()

    def _tell_all(self, message: str) -> None:
        for worker in self.workers:
            worker.send(message)

    def _take(self, k: int, kind: str, i: int | None, payload: Any) -> None:
        if kind == "rows" and i is not None:
            self.rows[i] = payload
            if self.progress is not None:
                self.progress(sum(self.rows), self.total)
        elif kind == "done" and i is not None:
            self.results[i] = payload
        elif kind == "error":
            if self.error is None and not (self.stopping and isinstance(payload, Interrupted)):
                self.error = payload
                self._tell_all(CANCEL)  # no other run starts; the ones in hand finish
        elif kind == "finished":
            self.done[k] = True
        elif kind == "exit":
            self.alive -= 1
            if not self.done[k] and self.error is None and not self.stopping:
                code = self.workers[k].proc.wait()
                self.error = SteptraceError(f"a sweep worker process died (exit status {code})")


# --- the worker ---------------------------------------------------------------------------


class _Stop(threading.Event):
    """The worker's request to stop, with the reason its runs will give."""

    why = "interrupted by Ctrl-C"


def _worker_main() -> None:  # pragma: no cover - runs in the worker processes
    """Record the runs the parent dealt out, reporting each; stop or cancel when told."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write on the message channel
    dataset, out, flush_seconds, runs = pickle.load(stdin)
    stop, cancel = _Stop(), threading.Event()
    lock = threading.Lock()

    def orphaned() -> None:
        stop.why = "stopped: the sweep's parent process ended"
        cancel.set()
        stop.set()

    def send(*message: Any) -> None:
        with lock:
            try:
                pickle.dump(message, stdout)
                stdout.flush()
            except OSError:  # the parent has gone
                orphaned()

    def listen() -> None:
        """The parent's word: cancel (start no other run), stop (Ctrl-C), or end of input
        (the parent has gone: stop)."""
        while True:
            try:
                message = pickle.load(stdin)
            except (EOFError, OSError, pickle.UnpicklingError):
                orphaned()
                return
            cancel.set()
            if message == STOP:
                stop.set()
                return

    threading.Thread(target=listen, daemon=True).start()
    current = [-1]

    def progress(rows: int, _total: int) -> None:
        send("rows", current[0], rows)

    try:
        for i, result in _runs(dataset, runs, out, progress, flush_seconds, stop):
            if result is None:
                if cancel.is_set():
                    break
                current[0] = i
            else:
                send("done", i, result)
    except SteptraceError as exc:
        send("error", current[0], exc)
    except Exception as exc:  # a bug: its text, since not every exception pickles
        send("error", current[0], SteptraceError(f"{type(exc).__name__}: {exc}"))
    send("finished", None, None)
    os._exit(0)  # the listening thread may be blocked on the parent's input


def _runs(
    dataset: Dataset,
    runs: list[tuple[int, Settings, str | None]],
    out: Path,
    progress: Progress,
    flush_seconds: float,
    stop: _Stop,
) -> Iterator[tuple[int, RunResult | None]]:  # pragma: no cover - runs in the workers
    """A worker's runs as :func:`~steptrace.train.sweepfast.iter_sweep` yields them."""
    index = [i for i, _, _ in runs]
    if runs and not runs[0][1].numerics.is_exact:
        pairs = [(settings, name) for _, settings, name in runs]
        for j, result in iter_sweep(dataset, pairs, out, progress, flush_seconds, stop):
            yield index[j], result
        return
    for i, settings, name in runs:
        yield i, None
        yield i, record_settings(dataset, settings, out, name, progress, flush_seconds, stop)


if __name__ == "__main__":  # pragma: no cover
    _worker_main()
