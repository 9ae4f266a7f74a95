"""Recording one run: settings → blocks of rows → writer → a run folder in ``traces/``.

The machinery every way of recording shares (a run alone, a sweep's worker, a resumed run):
the run's metadata and name, a new run folder with its writer, and writing a run's blocks to
the end with an honest status whatever stops it. The front door that turns user settings into
runs (:func:`steptrace.record`, :func:`steptrace.sweep`) is :mod:`steptrace.train.api`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from ..data import Dataset
from ..errors import ExactLimitError, Interrupted, SteptraceError
from ..schedule import steps_per_epoch
from ..trace.keep import Selection, selected_meta
from ..trace.schema import after_columns, run_metadata_head, tensors_of
from ..trace.summary import RunSummary, SummaryTracker
from ..trace.writer import TraceWriter, make_run_dir
from .columns import iter_blocks
from .settings import Settings

__all__ = ["Lr", "Progress", "RunResult", "StopFlag", "new_run", "record_settings", "write_run"]

Lr = str | float | Fraction
Progress = Callable[[int, int], None]
"""Called with (rows recorded so far, rows the run will have)."""


class StopFlag(Protocol):
    """A request to stop, like a :class:`threading.Event`; a ``why`` attribute, if it has
    one, replaces "interrupted by Ctrl-C" in the run's reason."""

    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class RunResult:
    """Where a run went and what it came to."""

    path: Path
    run_id: str
    status: str
    reason: str | None
    summary: RunSummary


def run_metadata(dataset: Dataset, settings: Settings, run_id: str, name: str) -> dict[str, Any]:
    """The metadata stored with a run (see docs/trace-format.md, "Run metadata")."""
    spe = steps_per_epoch(len(dataset), settings.batch_size)
    head = run_metadata_head(
        name, settings.numerics, settings.lr_text, settings.lr, settings.model,
        len(dataset.targets),
    )  # fmt: skip
    return {
        **head,
        "run_id": run_id,
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "shuffle": settings.shuffle,
        "seed": settings.seed,
        "steps_per_epoch": spe,
        "steps": spe * settings.epochs,
        "dataset": {
            "name": dataset.name,
            "sha256": dataset.sha256,
            "rows": len(dataset),
            "features": list(dataset.features),
            "targets": list(dataset.targets),
            "source": dataset.source,
        },
    }


def default_name(dataset: Dataset, settings: Settings) -> str:
    """``seed-exact-lr1`` for the article's model, ``seed-mlp-float64-lr0.1`` for another."""
    model = "" if settings.model.name == "article" else f"-{settings.model.name}"
    return f"{dataset.name}{model}-{settings.numerics.name}-lr{settings.lr_text}"


@contextlib.contextmanager
def _ctrl_c_requests_stop() -> Iterator[threading.Event]:
    """While recording, a first Ctrl-C asks for a clean stop after the current block; a second
    one interrupts at once."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        stop.set()
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def record_settings(
    dataset: Dataset,
    settings: Settings,
    out: str | Path = "traces",
    name: str | None = None,
    progress: Progress | None = None,
    flush_seconds: float = 1.0,
    stop: StopFlag | None = None,
    selection: Selection | None = None,
) -> RunResult:
    """Record one run of already validated settings (see :func:`record`); ``stop``, when
    given, replaces Ctrl-C as the request to stop (see :func:`write_run`); ``selection``
    what it records (default everything)."""
    writer, tracker = new_run(dataset, settings, out, name, flush_seconds, selection)
    return write_run(writer, iter_blocks(dataset, settings), tracker, progress, stop)


def new_run(
    dataset: Dataset,
    settings: Settings,
    out: str | Path,
    name: str | None = None,
    flush_seconds: float = 1.0,
    selection: Selection | None = None,
) -> tuple[TraceWriter, SummaryTracker]:
    """A new run folder under ``out`` (marked incomplete), its writer and summary tracker;
    a ``selection`` of nothing is refused before the folder is made."""
    computed = tensors_of(run_metadata(dataset, settings, "", ""))
    exact = settings.numerics.is_exact
    chosen = selected_meta(selection or Selection(), computed, settings.batch_size, exact)
    run_dir = make_run_dir(Path(out), name or default_name(dataset, settings))
    meta = {**run_metadata(dataset, settings, uuid.uuid4().hex, run_dir.name), **chosen}
    writer = TraceWriter(run_dir, settings.numerics.is_exact, meta, flush_seconds=flush_seconds,
                         computed=computed)  # fmt: skip
    return writer, SummaryTracker(steps_per_epoch(len(dataset), settings.batch_size))


def write_run(
    writer: TraceWriter,
    blocks: Iterator[dict[str, Any]],
    tracker: SummaryTracker,
    progress: Progress | None = None,
    stop: StopFlag | None = None,
) -> RunResult:
    """Write a run's blocks, summarise them, and close the run with its final status.

    Whatever stops the run (Ctrl-C, the exact limit, a full disk, a bug), the steps flushed so
    far stay readable and ``_run.json`` says ``incomplete`` with the reason. A first Ctrl-C
    stops the run after the block in hand; with ``stop`` given (a worker process of a sweep,
    whose Ctrl-C its parent receives), ``stop.is_set()`` asks for the same instead.
    """
    meta = writer.meta
    total_rows = int(meta["dataset"]["rows"]) * int(meta["epochs"])
    w_cols = after_columns(tensors_of(meta))
    status, reason = "incomplete", None
    try:
        asked = _ctrl_c_requests_stop() if stop is None else contextlib.nullcontext(stop)
        with asked as stop_requested:
            for block in blocks:
                writer.write(block)
                tracker.update(block, [block[c] for c in w_cols])
                if progress is not None:
                    progress(tracker.rows, total_rows)
                if stop_requested.is_set():
                    why = getattr(stop_requested, "why", "interrupted by Ctrl-C")
                    reason = f"{why} after step {tracker.last_step}"
                    raise Interrupted(
                        f"{reason}; the steps recorded so far are in {writer.run_dir} "
                        "(marked incomplete; continue with --resume)"
                    )
        status = "complete"
    except SteptraceError as exc:
        reason = reason or str(exc)
        if isinstance(exc, ExactLimitError):
            exc.run_dir = writer.run_dir  # where the steps so far are kept, for its message
        raise
    except BaseException as exc:
        reason = f"stopped by {type(exc).__name__}"
        raise
    finally:
        summary = tracker.result()
        writer.close(status, reason, summary.as_dict())
    return RunResult(writer.run_dir, str(meta["run_id"]), status, reason, summary)
