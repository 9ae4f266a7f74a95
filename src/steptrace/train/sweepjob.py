"""A sweep's task, in a worker: record one run, as a run recorded alone is recorded.

The sweeping process (:mod:`steptrace.train.sweeps`) hands each worker a :class:`Job`; the
worker talks back only through the sweep's hidden folder in the output folder, ``.sweep-<id>/``
(which it must see: the output folder is shared at the same path): ``stop`` there ends the run
in hand after its block (Ctrl-C), ``stop`` or ``cancel`` keeps a run from starting, and
``claim-<i>`` says run i was begun, and where, for a task started again after its worker died.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .._version import __version__
from ..data import Dataset
from ..errors import ConfigError, WriteError
from .columns import compute_blocks, iter_blocks
from .recorder import RunResult, new_run, write_run
from .settings import Settings

__all__ = ["CANCEL", "STOP", "Job", "Lost", "NotStarted", "record_job", "start_pool_worker"]

STOP, CANCEL = "stop", "cancel"
#: How often a worker looks for the sweep's ``stop`` (at most; it looks between blocks).
POLL_SECONDS = 0.1
#: How often an idle local worker checks that the sweeping process is still there.
ORPHAN_POLL_SECONDS = 0.5


def _ignore_ctrl_c() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


#: In a worker of :func:`~steptrace.train.sweeps.local_pool`: the sweeping process, and
#: whether a run is in hand.
_pool_parent: int | None = None
_in_hand = False


def start_pool_worker(parent: int) -> None:
    """A local worker ignores Ctrl-C (the sweeping process asks it to stop) and ends when the
    sweeping process has gone: its run in hand stops (see :class:`_SweepStop`), and an idle
    worker, which would wait for work forever, exits."""
    global _pool_parent
    _pool_parent = parent
    _ignore_ctrl_c()
    threading.Thread(target=_exit_when_orphaned, daemon=True).start()


def _exit_when_orphaned() -> None:  # pragma: no cover - runs in the workers
    while True:
        time.sleep(ORPHAN_POLL_SECONDS)
        if os.getppid() != _pool_parent and not _in_hand:
            os._exit(0)


# --- the worker's side --------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One run of a sweep, as a worker receives it."""

    index: int
    dataset: Dataset
    settings: Settings
    name: str | None
    out: str  # absolute: the path every worker must see
    marks: str  # the sweep's hidden folder in ``out``
    flush_seconds: float
    parent_pid: int  # the sweeping process (its children watch it)
    version: str = __version__
    #: Compute the next block in a thread of its own while this one is written: faster when
    #: the worker has a core to spare, ~10% more CPU (thread hand-offs) when it has not.
    pipelined: bool = False


@dataclass(frozen=True)
class Lost:
    """A run a worker began and did not finish (its worker died): at ``path`` if it got that
    far."""

    index: int
    path: str | None


@dataclass(frozen=True)
class NotStarted:
    """A run not started: the sweep was stopping."""

    index: int


def worker_name() -> str:
    return f"worker {socket.gethostname()} (pid {os.getpid()})"


def record_job(job: Job) -> RunResult | Lost | NotStarted:
    """Record one run of a sweep, in a worker: the task every executor runs."""
    if job.version != __version__:
        raise ConfigError(
            f"{worker_name()} has steptrace {__version__}, the sweep {job.version}: install "
            "the same version everywhere"
        )
    marks = Path(job.out) / job.marks
    if not marks.is_dir():
        raise WriteError(
            f"{worker_name()} does not see the output folder {job.out} the sweep writes to: "
            "give --out a folder every worker sees at the same path (a shared file system)"
        )
    if _told(marks) or (_pool_parent is not None and os.getppid() != _pool_parent):
        return NotStarted(job.index)
    claim = marks / f"claim-{job.index}"
    try:
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        # Dask starts a task again when its worker dies: the run was begun, and stays as it is.
        return Lost(job.index, claim.read_text(encoding="utf-8") or None)
    except OSError as exc:
        raise WriteError(f"{worker_name()} cannot write in {job.out}: {exc.strerror}") from None
    if _told(marks):
        # Told to stop while claiming: the sweep may not have seen the claim, and may not wait.
        os.close(fd)
        claim.unlink()
        return NotStarted(job.index)
    if threading.current_thread() is threading.main_thread() and os.getpid() != job.parent_pid:
        _ignore_ctrl_c()  # a process pool's worker: Ctrl-C is the sweeping process's
    _keep_freed_memory()
    global _in_hand
    _in_hand = True
    try:
        try:
            writer, tracker = new_run(
                job.dataset, job.settings, job.out, job.name, job.flush_seconds
            )
        except WriteError as exc:
            os.close(fd)
            raise WriteError(f"{worker_name()}: {exc}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(str(writer.run_dir))
        stop = _SweepStop(marks, _watched_parent(job))
        blocks = (iter_blocks if job.pipelined else compute_blocks)(job.dataset, job.settings)
        return write_run(writer, blocks, tracker, stop=stop)
    finally:
        _in_hand = False


#: What a worker keeps of the memory it frees before giving it back (see _keep_freed_memory).
KEEP_FREED_BYTES = 64 * 2**20
_memory_kept = False


def _keep_freed_memory() -> None:
    """Undo, in a worker that records runs, a setting that costs each run ~30% more CPU.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, to give freed memory
    back to the OS at once; setting it also turns off glibc's adaptive mmap threshold, so the
    arrays of every block are mapped and unmapped anew (docs/benchmarks.md). Here freed memory
    up to :data:`KEEP_FREED_BYTES` is kept for the next block, as in a process started plainly.
    """
    global _memory_kept
    if _memory_kept or "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    _memory_kept = True
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc: the variable means nothing there
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    mallopt(m_mmap_threshold, KEEP_FREED_BYTES // 2)
    mallopt(m_trim_threshold, KEEP_FREED_BYTES)


def _watched_parent(job: Job) -> int | None:
    """The process whose end stops this run: the sweeping process, when it started this
    worker (a cluster's workers finish the runs they hold)."""
    if _pool_parent is not None:
        return _pool_parent
    return job.parent_pid if os.getppid() == job.parent_pid else None


def _told(marks: Path) -> bool:
    return (marks / STOP).exists() or (marks / CANCEL).exists()


class _SweepStop:
    """The sweep's request to stop, as a worker sees it: ``stop`` dropped in the sweep's
    folder, or, for a worker the sweeping process started, that process gone."""

    why = "interrupted by Ctrl-C"

    def __init__(self, marks: Path, parent: int | None) -> None:
        self.marks = marks
        self.parent = parent
        self.asked = False
        self.next_look = 0.0

    def is_set(self) -> bool:
        now = time.monotonic()
        if self.asked or now < self.next_look:
            return self.asked
        self.next_look = now + POLL_SECONDS
        if self.parent is not None and os.getppid() != self.parent:
            self.why = "stopped: the sweep's parent process ended"
            self.asked = True
        elif (self.marks / STOP).exists():
            self.asked = True
        elif not self.marks.is_dir():  # the sweep no longer waits for this run
            self.why = "stopped: the sweep ended without it"
            self.asked = True
        return self.asked
