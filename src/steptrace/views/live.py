"""Following a run while a recorder writes it, reading only what is new.

A recorder flushes whole steps into a new part file at least once a second. Looking at the run
again costs a directory listing, its ``_run.json``, a ``stat`` per part and the footers of the
new parts (:mod:`.parts` keeps what the others said); the rows of new steps are read only when
a curve or the summary so far is asked for.

:class:`LiveRun` follows one run: :meth:`~LiveRun.refresh` gives a :class:`Snapshot` (the run
as it is on disk now, its last step and status, and a fingerprint that changes when they do);
:meth:`~LiveRun.curve` and :meth:`~LiveRun.summary` read the rows of new steps only, and keep
what they need (the min and max of buckets of steps for the curves asked for, a running
summary: bounded, however long the run).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ..trace.keep import RECORD_KEY
from ..trace.opener import open_trace
from ..trace.reader import Trace
from ..trace.schema import after_columns
from ..trace.summary import RunSummary, SummaryTracker
from .buckets import MinMax, bucket_width
from .curves import (
    MAX_POINTS,
    Curve,
    check_curve_column,
    figures_curve,
    per_step,
    points_curve,
    read_per_step,
)
from .curves import curve as read_curve
from .divergence import Divergence
from .folder import fingerprint, steps_per_epoch
from .parts import last_on_disk
from .sweep import run_settings

__all__ = ["LiveRun", "Snapshot", "snapshot"]


@dataclass(frozen=True)
class Snapshot:
    """A run as it is on disk at one moment."""

    trace: Trace
    last: int  # the last recorded step, -1 if none yet
    fingerprint: str  # changes when a part is added or changed, or the status changes

    @property
    def status(self) -> str:
        return self.trace.status

    @property
    def running(self) -> bool:
        """A recorder is writing the run (it holds the run's lock)."""
        return self.trace.status == "running"

    @property
    def steps(self) -> int:
        return self.last + 1


def _fingerprint(trace: Trace, stats: Iterable[tuple[str, int, int]]) -> str:
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"{trace.run_id}|{trace.status}|{trace.reason}".encode())
    for name, size, mtime in stats:
        digest.update(f"|{name}:{size}:{mtime}".encode())
    return digest.hexdigest()


def snapshot(path: Path) -> Snapshot:
    """The run at ``path`` as it is now (see :class:`LiveRun` to follow it)."""
    trace = open_trace(path, check_columns=False)
    return Snapshot(trace, last_on_disk(trace), _fingerprint(trace, fingerprint(trace)))


#: Buckets a followed run keeps of each curve: a curve of more steps is kept as the min and max
#: of buckets of steps (:mod:`.buckets`), at most 48 bytes a bucket, about 3 MB a curve.
KEPT_BUCKETS = 1 << 16


class _Kept:
    """One value per step of a followed run, as the min and max of buckets of steps: the
    finest power-of-two width that keeps at most ``cap`` buckets (every step while they fit).
    Grown as steps are read; each look replaces :attr:`buckets`, never changes it."""

    def __init__(self, cap: int = KEPT_BUCKETS) -> None:
        self.cap = cap
        self.buckets = MinMax.empty(1)
        self.first = 0
        self.last = -1  # the last step kept, -1 if none yet

    def add(self, steps: npt.NDArray[np.int64], values: npt.NDArray[np.float64]) -> None:
        if len(steps) == 0:
            return
        if self.last < 0:
            self.first = int(steps[0])
        self.last = int(steps[-1])
        width = self.buckets.width
        while self.last // width - self.first // width + 1 > self.cap:
            width *= 2
        kept = self.buckets if width == self.buckets.width else self.buckets.coarsen(width)
        self.buckets = MinMax.join([kept, MinMax.of(steps, values, width)], width)


class LiveRun:
    """One run followed while it is recorded; safe to share between threads (a dashboard's
    sessions).

    >>> run = LiveRun("traces/seed-float64-lr1e-9")  # doctest: +SKIP
    >>> snap = run.refresh(); snap.last, snap.status  # doctest: +SKIP
    (41_999, 'running')
    >>> run.curve("loss").note()  # the new steps read, the others kept  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, min_interval: float = 0.0,
                 kept_buckets: int = KEPT_BUCKETS) -> None:  # fmt: skip
        self.path = Path(path)
        self.min_interval = min_interval
        self.kept_buckets = kept_buckets  # at most this many buckets kept of each curve
        self._lock = threading.RLock()
        self._snap: Snapshot | None = None
        self._when = 0.0
        self._done = -1  # the last step read into the curves kept (and the summary)
        self._tracker: SummaryTracker | None = None
        self._kept: dict[str, _Kept] = {}

    def refresh(self, force: bool = False) -> Snapshot:
        """The run as it is now. Calls closer together than ``min_interval`` seconds share
        one look at the disk (several pages following one run poll it once)."""
        with self._lock:
            now = time.monotonic()
            if force or self._snap is None or now - self._when >= self.min_interval:
                snap = snapshot(self.path)
                if self._snap is not None and snap.trace.run_id != self._snap.trace.run_id:
                    self._reset()  # another run now lives under this path
                if snap.last < self._done:  # steps went away: start over
                    self._reset()
                self._snap, self._when = snap, now
            return self._snap

    def _reset(self) -> None:
        self._done, self._tracker, self._kept = -1, None, {}

    def _catch_up(self, wanted: Sequence[str] = (), summary: bool = False) -> Snapshot:
        """Read the steps recorded since the last call into the summary and the curves kept
        (a curve asked for the first time from the start). The summary is kept while the run
        is recorded, or once asked for: drawing an ended run's curves reads those columns
        only."""
        snap = self.refresh()
        trace = snap.trace
        params = after_columns(trace.tensors)
        if self._tracker is None and (summary or snap.running):
            tracker = SummaryTracker(steps_per_epoch(trace))
            if self._done >= 0:  # the steps read before, for curves only
                _track(tracker, trace.read_table(["step", "loss", *params],
                                                 steps=(0, self._done + 1)), params)  # fmt: skip
            self._tracker = tracker
        for column in wanted:
            if column not in self._kept and self._done >= 0:
                kept = _Kept(self.kept_buckets)
                kept.add(*read_per_step(trace, column, 0, self._done))
                self._kept[column] = kept
            self._kept.setdefault(column, _Kept(self.kept_buckets))
        if snap.last > self._done:
            summed = ["loss", *params] if self._tracker is not None else []
            columns = list(dict.fromkeys(["step", *summed, *self._kept]))
            table = trace.read_table(columns, steps=(self._done + 1, snap.last + 1))
            if self._tracker is not None:
                _track(self._tracker, table, params)
            steps = table["step"].to_numpy()
            for column, kept in self._kept.items():
                kept.add(*per_step(column, steps, _floats(table[column])))
            self._done = snap.last
        return snap

    def curve(
        self, column: str, lo: int | None = None, hi: int | None = None,
        max_points: int = MAX_POINTS,
    ) -> Curve:  # fmt: skip
        """``loss`` or a parameter column per step in ``[lo, hi]``, equal to what
        :func:`~steptrace.views.curve` reads from the files. The steps recorded since the last
        call are read; the others are kept as min/max buckets (:class:`_Kept`), which draw any
        window wide enough for their width. A narrower window, and the steps at a window's
        ends that share a bucket with steps outside it, are read from the files."""
        with self._lock:
            snap = self.refresh()
            check_curve_column(snap.trace, column)  # refuse what is not a curve, as curve() does
            if column == "loss" and RECORD_KEY in snap.trace.meta:  # every step's, not the held
                return figures_curve(snap.trace, lo, hi, max_points)
            self._catch_up([column])
            kept = self._kept[column]
            buckets, first, last = kept.buckets, kept.first, kept.last
        trace = snap.trace
        a = first if lo is None else max(lo, first)
        z = last if hi is None else min(hi, last)
        if a > z:
            return read_curve(trace, column, lo, hi, max_points)  # no step there
        width, w = bucket_width(a, z, z - a + 1, max_points), buckets.width
        # The buckets wholly inside [a, z]; bucket k holds steps max(k·w, first) … min(k·w+w−1,
        # last).
        k_lo = a // w if max(a // w * w, first) >= a else a // w + 1
        k_hi = z // w if min(z // w * w + w - 1, last) <= z else z // w - 1
        if width < w or k_lo > k_hi:  # finer than what is kept, or within two buckets
            return read_curve(trace, column, a, z, max_points)
        inside = buckets.head(int(np.searchsorted(buckets.key, k_hi, side="right")))
        inside = inside.tail(int(np.searchsorted(inside.key, k_lo, side="left")))
        start, end = max(k_lo * w, first), min(k_hi * w + w - 1, last)
        parts = [inside]
        if a < start:
            parts.insert(0, MinMax.of(*read_per_step(trace, column, a, start - 1), width))
        if end < z:
            parts.append(MinMax.of(*read_per_step(trace, column, end + 1, z), width))
        joined = MinMax.join(parts, width)
        return points_curve(*joined.points(), joined.steps(), width, a, z)

    def summary(self) -> RunSummary:
        """Final and lowest loss and divergence so far (:mod:`steptrace.trace.summary`'s
        rule), the new steps read."""
        with self._lock:
            self._catch_up(summary=True)
            assert self._tracker is not None
            return self._tracker.result()

    def divergence(self) -> Divergence | None:
        """The first step where the run diverges so far, or None."""
        s = self.summary()
        return None if s.diverged_at is None else Divergence(s.diverged_at, s.diverged_why or "")

    def outcome(self) -> dict[str, Any]:
        """How the run stands, in the keys of :func:`~steptrace.views.run_outcome`."""
        s = self.summary()
        trace = self.refresh().trace
        return {
            **run_settings(trace),
            "final_loss": s.final_loss,
            "min_loss": s.min_loss,
            "min_loss_step": s.min_loss_step,
            "diverged": s.diverged_at is not None,
            "diverged_at": s.diverged_at,
        }


def _track(tracker: SummaryTracker, table: pa.Table, params: Sequence[str]) -> None:
    """Feed the rows of ``table`` (columns ``step``, ``loss`` and ``params``) to ``tracker``."""
    block = {"step": table["step"].to_numpy(), "loss": _floats(table["loss"])}
    tracker.update(block, [_floats(table[c]) for c in params])


def _floats(column: pa.ChunkedArray) -> npt.NDArray[np.float64]:
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
