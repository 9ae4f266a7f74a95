"""The flight recorder: every value of the last N steps kept in memory, written when training
goes wrong.

A run with ``keep_last=N`` writes no step's values as they come (but the steps its selection
holds, once they leave the window). It keeps the rows of its last N steps, and when a trigger
fires at step T it writes the steps T − N + 1 … T, and the ``after`` steps that follow, then
goes on keeping. Triggers:

- ``nonfinite`` (the default): a step holds a NaN or an infinity, in any tensor, or its loss;
- ``loss_spike:K``: the step's batch loss is above K times the lowest batch loss so far;
- the user's ``rec.trigger("why")`` (:meth:`Flight.user`);
- the run's end, whatever ended it (an exception, Ctrl-C, SIGTERM, the last step): the steps
  still kept are written.

A kind fires once while its condition holds (a run that went NaN does not fire at every
following step), and again once the condition cleared and came back. Each firing is stated in
the run's metadata under ``triggers`` (docs/trace-format.md, "Flight recorder").
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError, Terminated

__all__ = [
    "TRIGGERS_KEY",
    "Flight",
    "Trigger",
    "check_memory",
    "parse_triggers",
    "sigterm_held",
    "sigterm_raises",
]

Array = npt.NDArray[Any]
Block = dict[str, Any]
#: The run metadata's key listing the triggers that fired.
TRIGGERS_KEY = "triggers"
#: The part of the memory the machine has free that a flight recorder may hold: its window, and
#: room for the copies recording makes on the way (a framework's buffers, the blocks written).
MEMORY_SHARE = 0.25


@dataclass(frozen=True)
class Trigger:
    """A kind of trigger: ``nonfinite``, or ``loss_spike`` with its factor."""

    kind: str
    factor: float = 0.0

    def __str__(self) -> str:
        return self.kind if self.kind == "nonfinite" else f"{self.kind}:{self.factor:g}"


def parse_triggers(text: str | Sequence[str]) -> tuple[Trigger, ...]:
    """``"nonfinite"``, ``"loss_spike:10"`` or several, comma-separated (or a list)."""
    pieces = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for piece in (p.strip() for p in pieces):
        kind, _, arg = piece.partition(":")
        if kind == "nonfinite" and not arg:
            out.append(Trigger("nonfinite"))
            continue
        if kind == "loss_spike":
            try:
                factor = float(arg)
            except ValueError:
                factor = math.nan
            if factor > 1 and math.isfinite(factor):
                out.append(Trigger("loss_spike", factor))
                continue
        raise ConfigError(
            f"trigger {piece!r}: give nonfinite, or loss_spike:K with K > 1 (the batch loss "
            "above K times its lowest so far)"
        )
    if not out:
        raise ConfigError("trigger: give nonfinite, or loss_spike:K")
    return tuple(out)


def available_memory() -> int:
    """Bytes the machine can still give (MemAvailable; all of its memory where unknown)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_memory(keep_last: int, step_bytes: int) -> None:
    """Refuse, in one line, a window of ``keep_last`` steps of ``step_bytes`` each larger than
    :data:`MEMORY_SHARE` of the free memory."""
    need = keep_last * step_bytes
    can = int(available_memory() * MEMORY_SHARE)
    if need > can:
        most = max(can // max(step_bytes, 1), 0)
        raise ConfigError(
            f"keep_last {keep_last}: the last {keep_last} steps of this run need about "
            f"{_size(need)} of memory and the machine can give {_size(can)}; keep at most "
            f"{most} steps, or fewer tensors"
        )


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


class _Held:
    """SIGTERM's state: how deep the main thread is in blocks being written, and whether a
    SIGTERM came meanwhile (signals are the process's: one for all runs)."""

    depth = 0
    pending = False


_TERM = _Held()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While recording in the main thread, SIGTERM raises :class:`Terminated` (so the run
    closes and writes what it keeps) instead of ending the process on the spot; inside
    :func:`sigterm_held`, once the block in hand is written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if _TERM.depth:
            _TERM.pending = True
        else:
            raise Terminated("terminated by SIGTERM")

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _TERM.pending = False


@contextlib.contextmanager
def sigterm_held() -> Iterator[None]:
    """SIGTERM waits while the main thread is inside (nested: until the outermost ends), and is
    raised then: a block is written whole, or not at all (a flight recorder's ring and the
    steps it has passed stay one state). If the block itself fails, its error goes on alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _TERM.depth += 1
    try:
        yield
    finally:  # (when the block fails, its error goes on and the SIGTERM is dropped)
        _TERM.depth -= 1
        raised = not _TERM.depth and _TERM.pending
        if not _TERM.depth:
            _TERM.pending = False
    if raised:
        raise Terminated("terminated by SIGTERM")


class Watch:
    """Which steps of a block fire a trigger, from the block's per-step figures."""

    def __init__(self, triggers: Sequence[Trigger]) -> None:
        self.triggers = tuple(triggers)
        self.armed = {t.kind: True for t in self.triggers}
        self.lowest = math.inf

    def fired(self, figures: Mapping[str, Array]) -> list[tuple[int, str, str]]:
        """(step, kind, reason) of each firing, in step order."""
        steps = figures["step"]
        loss = np.asarray(figures["loss"], dtype=np.float64)
        bad = ~np.isfinite(loss)
        for name, column in figures.items():
            if name.startswith("nonfinite"):
                bad = bad | (np.asarray(column) > 0)
        out = []
        for i, step in enumerate(steps.tolist()):
            for t in self.triggers:
                hit, why = self._hit(t, bool(bad[i]), float(loss[i]), figures, i)
                if hit and self.armed[t.kind]:
                    out.append((int(step), t.kind, why))
                self.armed[t.kind] = not hit
            if math.isfinite(loss[i]):
                self.lowest = min(self.lowest, float(loss[i]))
        return out

    def _hit(
        self, t: Trigger, bad: bool, loss: float, figures: Mapping[str, Array], i: int
    ) -> tuple[bool, str]:
        if t.kind == "nonfinite":
            if not bad:
                return False, ""
            layers = [n.removeprefix("nonfinite") for n, c in figures.items()
                      if n.startswith("nonfinite") and c[i] > 0]  # fmt: skip
            where = f" in layer {', '.join(layers)}" if layers else " in the loss"
            return True, f"a non-finite value{where}"
        spike = self.lowest > 0 and math.isfinite(self.lowest) and loss > t.factor * self.lowest
        why = f"batch loss {loss:.6g} above {t.factor:g} × its lowest so far, {self.lowest:.6g}"
        return spike, why if spike else ""


class Flight:
    """The last ``keep_last`` steps' rows, and which rows to write as steps come.

    ``cut(block, mask)`` makes the block to write of ``block``'s rows flagged by ``mask``
    (None when none is): the tensors the run stores, worked out as the selection says.
    ``regular(steps)`` says which steps the run holds outside any window.
    """

    def __init__(
        self,
        keep_last: int,
        after: int,
        triggers: Sequence[Trigger],
        cut: Callable[[Mapping[str, Any], Array], Block | None],
        regular: Callable[[Array], Array],
    ) -> None:
        self.keep_last, self.after = keep_last, after
        self.watch = Watch(triggers)
        self.cut, self.regular = cut, regular
        self.ring: list[Mapping[str, Any]] = []  # the blocks holding the steps kept
        self.passed = -1  # every step up to here is written or gone
        self.after_until = -1
        self.last = -1
        self.fired: list[dict[str, Any]] = []

    def take(self, block: Mapping[str, Any], figures: Mapping[str, Array]) -> list[Block]:
        """The blocks to write now that ``block`` came (its steps' ``figures`` beside it)."""
        if not len(block["step"]):
            return []
        self.ring.append(block)
        self.last = int(block["step"][-1])
        out: list[Block] = []
        for step, kind, reason in self.watch.fired(figures):
            out += self._fire(step, kind, reason)
        out += self._emit(min(self.after_until, self.last), everything=True)
        out += self._emit(self.last - self.keep_last, everything=False)
        self.ring = [b for b in self.ring if int(b["step"][-1]) > self.passed]
        return out

    def user(self, step: int, reason: str) -> list[Block]:
        """``rec.trigger(reason)`` after step ``step``."""
        return self._fire(step, "user", reason)

    def finish(self, kind: str, reason: str) -> list[Block]:
        """The run ends (``kind``: ``end``, ``exception``, ``interrupted``): what is kept."""
        if self.last > self.passed:
            window = [self.passed + 1, self.last]
            self.fired.append({"kind": kind, "step": self.last, "reason": reason, "window": window})
        out = self._emit(self.last, everything=True)
        self.ring = []
        return out

    def _fire(self, step: int, kind: str, reason: str) -> list[Block]:
        out = self._emit(min(self.after_until, step), everything=True)  # an earlier one's after
        first = max(self.passed + 1, step - self.keep_last + 1)
        out += self._emit(step - self.keep_last, everything=False)
        out += self._emit(step, everything=True)
        self.after_until = max(self.after_until, step + self.after)
        self.fired.append({"kind": kind, "step": step, "reason": reason,
                           "window": [first, step + self.after]})  # fmt: skip
        return out

    def _emit(self, upto: int, everything: bool) -> list[Block]:
        """Rows of the steps after :attr:`passed` up to ``upto`` (all of them, or the ones the
        selection holds), in step order; those steps are passed then."""
        if upto <= self.passed:
            return []
        out = []
        for block in self.ring:
            steps = np.asarray(block["step"])
            mask = (steps > self.passed) & (steps <= upto)
            if not everything and mask.any():
                mask &= self.regular(steps)
            kept = self.cut(block, mask) if mask.any() else None
            if kept is not None:
                out.append(kept)
        self.passed = upto
        return out
