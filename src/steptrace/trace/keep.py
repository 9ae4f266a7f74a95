"""Choosing what a run records: which steps (``every``, ``steps``), which tensors and layers.

A run of a real network has too many values to keep them all. A *selection* says which of the
rows every block brings are written: the steps (every N-th from step 0, ranges of steps, or
both), and of each row the tensors (names or globs of :func:`~steptrace.load_tensor`'s names)
of the layers asked for. The per-step figures (:mod:`.scalars`) are computed before it, from
every step.

What is kept stays readable on its own: a tensor stored once as another (``same_as``) that is
left out, or one known from the step before when that step may not be held, is stored in full
(a recorded step's parameters before *and* after its update, so every recorded update can be
checked). The selection goes into the run's metadata under ``record`` (docs/trace-format.md,
"Choosing what is recorded").
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError
from .flight import TRIGGERS_KEY, Flight, Trigger, check_memory, parse_triggers
from .run_buffer import Block as Columns
from .run_buffer import RowsBlock
from .scalars import LATER, START, columns_of, layer_of
from .schema import EXACT_SUFFIX, Tensor
from .summary import group_starts

__all__ = ["RECORD_KEY", "Keeper", "Selection", "check_window", "not_held", "parse_steps",
           "selected_meta"]  # fmt: skip

Array = npt.NDArray[Any]
Block = dict[str, Any]
#: The run metadata's key holding what the run records (absent: every value of every step).
RECORD_KEY = "record"
_RANGE = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")


def parse_steps(text: str) -> tuple[tuple[int, int], ...]:
    """``"0-99,1000-1099,5000"`` as inclusive ranges ``((0, 99), (1000, 1099), (5000, 5000))``;
    :class:`ConfigError` for anything else."""
    ranges = []
    for piece in str(text).split(","):
        m = _RANGE.fullmatch(piece)
        if m is None:
            raise ConfigError(
                f"steps {text!r}: {piece.strip()!r} is not a step or a range of steps; write "
                "ranges like 0-99,1000-1099"
            )
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ConfigError(f"steps {text!r}: the range {lo}-{hi} ends before it starts")
        ranges.append((lo, hi))
    return tuple(sorted(ranges))


@dataclass(frozen=True)
class Selection:
    """Which steps, tensors and layers a run records (None: all of them)."""

    every: int | None = None
    steps: tuple[tuple[int, int], ...] | None = None
    tensors: tuple[str, ...] | None = None
    layers: tuple[int, ...] | None = None
    #: The flight recorder (trace/flight.py): the last steps kept, written when a trigger fires.
    keep_last: int | None = None
    after: int = 0
    trigger: tuple[Trigger, ...] = (Trigger("nonfinite"),)

    @classmethod
    def of(
        cls,
        every: int | None = None,
        steps: str | Sequence[tuple[int, int]] | None = None,
        tensors: str | Sequence[str] | None = None,
        layers: int | Sequence[int] | None = None,
        keep_last: int | None = None,
        after: int | None = None,
        trigger: str | Sequence[str] | None = None,
    ) -> Selection:
        """A selection as the user gives it, checked; :class:`ConfigError` names what is
        wrong (``every`` below 1, a malformed range)."""
        if every is not None and not _whole(every, 1):
            raise ConfigError(f"every {every!r}: record every N-th step with N a whole number ≥ 1")
        if keep_last is not None and not _whole(keep_last, 1):
            raise ConfigError(f"keep_last {keep_last!r}: keep the last N steps, N whole and ≥ 1")
        if keep_last is None and (after is not None or trigger is not None):
            raise ConfigError("after and trigger belong to the flight recorder: give keep_last too")
        if after is not None and not _whole(after, 0):
            raise ConfigError(f"after {after!r}: write M more steps, M a whole number ≥ 0")
        triggers = parse_triggers(trigger) if trigger is not None else (Trigger("nonfinite"),)
        ranges = None
        if steps is not None:
            ranges = parse_steps(steps) if isinstance(steps, str) else _ranges(steps)
        names = None
        if tensors is not None:
            listed = tensors.split(",") if isinstance(tensors, str) else list(tensors)
            names = tuple(n.strip() for n in listed if n.strip())
            if not names:
                raise ConfigError("tensors: name at least one tensor (or a glob such as 'o*')")
        numbers = None
        if layers is not None:
            listed_layers = [layers] if isinstance(layers, int) else list(layers)
            if not listed_layers or any(isinstance(k, bool) or int(k) < 1 for k in listed_layers):
                raise ConfigError(f"layers {layers!r}: give layer numbers from 1")
            numbers = tuple(sorted({int(k) for k in listed_layers}))
        return cls(
            None if every is None else int(every), ranges, names, numbers,
            None if keep_last is None else int(keep_last), int(after or 0), triggers,
        )  # fmt: skip

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Selection:
        """The selection a run's metadata states (every value of every step without one)."""
        rec = meta.get(RECORD_KEY) or {}
        return cls.of(
            rec.get("every"), rec.get("steps"), rec.get("tensors"), rec.get("layers"),
            rec.get("keep_last"), rec.get("after"), rec.get("trigger"),
        )  # fmt: skip

    @property
    def everything(self) -> bool:
        return self == Selection()

    @property
    def gaps(self) -> bool:
        """Whether some steps may be left out (then no step can lean on the one before)."""
        every = self.every is not None and self.every > 1
        return every or self.steps is not None or self.keep_last is not None

    def holds(self, steps: Array) -> Array:
        """Which of ``steps`` the selection keeps (outside a flight recorder's windows)."""
        steps = np.asarray(steps, dtype=np.int64)
        if not self.gaps:
            return np.ones(len(steps), dtype=bool)
        kept = np.zeros(len(steps), dtype=bool)
        if self.every is not None:
            kept |= steps % self.every == 0
        for lo, hi in self.steps or ():
            kept |= (steps >= lo) & (steps <= hi)
        return kept

    def held(self, step: int) -> bool:
        """Whether the selection keeps ``step`` (as :meth:`holds`, for one step: a loop asks
        before it captures the step's values)."""
        if not self.gaps:
            return True
        if self.every is not None and step % self.every == 0:
            return True
        return any(lo <= step <= hi for lo, hi in self.steps or ())

    def describe(self) -> str:
        """The steps held, in words: ``every 100th step``, ``steps 0-99, 1000-1099``."""
        parts = []
        if self.every is not None and self.every > 1:
            parts.append(f"every {_ordinal(self.every)} step")
        if self.steps:
            parts.append("steps " + ", ".join(_range_text(r) for r in self.steps))
        if self.keep_last is not None:
            triggers = ", ".join(str(t) for t in self.trigger)
            parts.append(f"the last {self.keep_last} steps before each trigger ({triggers})")
        return " and ".join(parts) or "every step"

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.every is not None:
            out["every"] = self.every
        if self.steps is not None:
            out["steps"] = ",".join(_range_text(r) for r in self.steps)
        if self.tensors is not None:
            out["tensors"] = list(self.tensors)
        if self.layers is not None:
            out["layers"] = list(self.layers)
        if self.keep_last is not None:
            out["keep_last"] = self.keep_last
            out["after"] = self.after
            out["trigger"] = [str(t) for t in self.trigger]
        return out

    def chosen(self, tensors: Sequence[Tensor]) -> list[Tensor]:
        """The tensors the selection keeps of ``tensors``; :class:`ConfigError` for a name or
        layer that matches none of them."""
        names = [t.name for t in tensors]
        for pattern in self.tensors or ():
            if not fnmatch.filter(names, pattern):
                raise ConfigError(
                    f"tensors: {pattern!r} matches no tensor of this run (its tensors: "
                    f"{', '.join(names)}); nothing was written"
                )
        have = {layer_of(n) for n in names} - {None}
        for k in self.layers or ():
            if k not in have:
                raise ConfigError(
                    f"layers: the model has no layer {k} (its layers: "
                    f"{', '.join(str(n) for n in sorted(have))}); nothing was written"  # type: ignore[type-var]
                )
        out = [t for t in tensors if self._keeps(t.name)]
        if not out:
            raise ConfigError(
                f"tensors {list(self.tensors or ())} of layers {list(self.layers or ())} "
                "select no tensor of this run; nothing was written"
            )
        return out

    def _keeps(self, name: str) -> bool:
        if self.tensors is not None and not any(fnmatch.fnmatchcase(name, p)
                                                for p in self.tensors):  # fmt: skip
            return False
        k = layer_of(name)
        return self.layers is None or k is None or k in self.layers

    def stored(self, tensors: Sequence[Tensor], *, gaps: bool | None = None) -> list[Tensor]:
        """The tensors a run of this selection lists in its metadata: the chosen ones, each
        stored once as another only where that other is kept too (and, when steps may be
        missing, never as the step before's). ``gaps`` overrides :attr:`gaps` (a flight
        recorder leaves steps out whatever the selection)."""
        gaps = self.gaps if gaps is None else gaps
        chosen = self.chosen(tensors)
        kept = {t.name for t in chosen}
        by_name = {t.name: t for t in tensors}
        out = []
        for t in chosen:
            if t.same_as is None:
                out.append(t)
                continue
            origin, back = origin_of(t, by_name)
            if origin.name in kept and not (back and gaps):
                out.append(Tensor(t.name, t.shape, t.data, origin.name, back))
            else:
                out.append(Tensor(t.name, t.shape, t.data))
        return out


def origin_of(tensor: Tensor, by_name: Mapping[str, Tensor]) -> tuple[Tensor, bool]:
    """The stored tensor whose values ``tensor`` has, and whether on the step before."""
    current, back = tensor, tensor.previous_step
    while current.same_as is not None:
        current = by_name[current.same_as]
        back = back or current.previous_step
    return current, back


def keep_rows(
    block: Block,
    holds: Array,
    stored: Sequence[Tensor],
    computed: Sequence[Tensor],
    exact: bool,
) -> Block | None:
    """The rows of ``block`` whose step ``holds`` marks (one flag a row), with the columns of
    the ``stored`` tensors (given or worked out from the ``computed`` ones the block carries);
    None when no row is kept."""
    if not holds.any():
        return None
    rows = np.flatnonzero(holds)
    whole = len(rows) == len(holds)  # every row kept: the block's own columns, no copy
    out: Block = {k: np.asarray(block[k])[rows] for k in ("step", "epoch", "sample")}
    if START in block:
        out[START] = block[START]
    by_name = {t.name: t for t in computed}
    twins = (EXACT_SUFFIX,) if exact else ()
    # A buffer's block: its matrix's kept rows taken at once, the result a block of them too
    # (which the writer makes Parquet columns of at once: a wide row has thousands).
    matrix = None if exact or not isinstance(block, Columns) else block.matrix
    if matrix is not None and not whole:
        matrix = matrix[:, rows]
    row_of: dict[str, int] = {}
    for t in stored:
        if not t.stored:
            continue
        if columns_of(t)[0] in block and matrix is not None:
            assert isinstance(block, Columns)
            names = columns_of(t)
            places = [block.row_of[c] for c in names]
            row_of.update(zip(names, places, strict=True))
            first = places[0]
            if places == list(range(first, first + len(places))):  # one run of the matrix's
                out.update(zip(names, matrix[first : first + len(places)], strict=True))  # rows
            else:
                out.update(zip(names, (matrix[i] for i in places), strict=True))
            continue
        if columns_of(t)[0] in block:
            for c in columns_of(t):
                for s in ("", *twins):
                    out[c + s] = block[c + s] if whole else _take(block[c + s], rows)
            continue
        origin, back = origin_of(by_name[t.name], by_name)
        source = _rows_before(block, rows) if back else rows
        for mine, theirs in zip(columns_of(t), columns_of(origin), strict=True):
            for s in ("", *twins):
                out[mine + s] = _take(block[theirs + s], source, block.get(START, {}).get(mine + s))
    return out if matrix is None else Columns(out, matrix, row_of)


def _rows_before(block: Block, rows: Array) -> Array:
    """For each of ``rows``, the last row of the step before its step (-1: the block's
    first step, whose step before is in the block's ``start``)."""
    starts = group_starts(np.asarray(block["step"]))
    first_of_step = starts[np.searchsorted(starts, rows, side="right") - 1]
    return first_of_step - 1


def _take(column: Any, rows: Array, before_first: Any = None) -> Any:
    """``column`` at ``rows`` (a list of exact texts stays a list); row -1 is
    ``before_first``."""
    values = np.asarray(column, dtype=object if isinstance(column, list) else None)
    taken = values[np.maximum(rows, 0)]
    if (rows < 0).any():
        taken = taken.copy()
        taken[rows < 0] = before_first
    return taken.tolist() if isinstance(column, list) else taken


def not_held(meta: Mapping[str, Any], step: int, held: Sequence[int]) -> str:
    """Why a run has no rows of ``step``, with the steps it does hold (``held``):
    ``step 101 is not recorded: this run holds every 100th step (the nearest: 100, 200)``; a
    flight recorder's windows are listed (``48-52, 115-119``) while that stays short."""
    selection = Selection.from_meta(meta)
    steps = sorted({int(s) for s in held})
    i = int(np.searchsorted(steps, step))
    near = [steps[j] for j in (i - 1, i) if 0 <= j < len(steps)]
    spans = _spans(steps)
    if not steps:
        where = ": no step's values were written"
    elif selection.keep_last is not None and len(spans) <= 80:
        where = f": {spans}"
    else:
        where = f" (the nearest: {', '.join(map(str, near))})"
    return f"step {step} is not recorded: this run holds {selection.describe()}{where}"


def _spans(steps: Sequence[int]) -> str:
    """``0-4, 10, 20-22``."""
    out: list[tuple[int, int]] = []
    for s in steps:
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return ", ".join(_range_text(r) for r in out)


def _whole(n: Any, least: int) -> bool:
    return not isinstance(n, bool) and isinstance(n, int | float) and int(n) == n and n >= least


def _ranges(steps: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    return parse_steps(",".join(f"{int(lo)}-{int(hi)}" for lo, hi in steps))


def _range_text(r: tuple[int, int]) -> str:
    return str(r[0]) if r[0] == r[1] else f"{r[0]}-{r[1]}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class Keeper:
    """What the trace writer does with each block, for a run's selection: the rows and
    columns kept (all of them, as they are, without a selection), through a flight recorder
    when it has one. ``meta`` is the run's metadata: the triggers that fire go into it."""

    def __init__(
        self, meta: dict[str, Any], stored: Sequence[Tensor], computed: Sequence[Tensor]
    ) -> None:
        self.meta = meta
        self.selection = sel = Selection.from_meta(meta)
        self.stored, self.computed = list(stored), list(computed)
        self.exact = meta.get("numerics") == "exact"
        self.flight = None
        if sel.keep_last is not None:
            self.flight = Flight(sel.keep_last, sel.after, sel.trigger, self._cut, sel.holds)
        self._checked = False
        self._columns_read: list[str] | None = None

    def _cut(self, block: Mapping[str, Any], holds: Array) -> Block | None:
        if not holds.any():
            return None
        later = block.get(LATER)
        if later is not None:  # steps known by their figures: their values made now
            block = later(holds)
            holds = np.ones(len(block["step"]), dtype=bool)
        if isinstance(block, RowsBlock):  # read where its rows lie till now: made columns
            block = block.columns(self._read(block))
        assert isinstance(block, dict)
        return keep_rows(block, holds, self.stored, self.computed, self.exact)

    def _read(self, block: Mapping[str, Any]) -> list[str]:
        """The columns :func:`keep_rows` reads of a block laid out as this run's are: each
        stored tensor's own, or those of the tensor it is worked out from (made once: a
        network's row may have a million columns, of which a selection keeps a few)."""
        if self._columns_read is None:
            by_name = {t.name: t for t in self.computed}
            twins = (EXACT_SUFFIX,) if self.exact else ()
            read: list[str] = []
            for t in self.stored:
                if not t.stored:
                    continue
                source = t if columns_of(t)[0] in block else origin_of(by_name[t.name], by_name)[0]
                read += [c + s for c in columns_of(source) for s in ("", *twins) if c + s in block]
            self._columns_read = list(dict.fromkeys(read))
        return self._columns_read

    def take(self, block: Mapping[str, Any], figures: Mapping[str, Array]) -> list[Block]:
        """The blocks to write for ``block`` (none when it holds no step to write now)."""
        if self.selection.everything:
            assert isinstance(block, dict)  # the writer's own blocks (a buffer's: as columns)
            return [block]
        if self.flight is None:
            kept = self._cut(block, self.selection.holds(block["step"]))
            return [] if kept is None else [kept]
        if not self._checked and len(block["step"]):
            self._checked = True
            steps = len(np.unique(block["step"]))
            check_window(self.selection, self.stored, -(-len(block["step"]) // steps), self.exact)
        return self._noted(self.flight.take(block, figures))

    def user(self, step: int, reason: str) -> list[Block]:
        """The user's own trigger (``rec.trigger(reason)``), after step ``step``."""
        if self.flight is None:
            raise ConfigError("trigger() needs a flight recorder: open the run with keep_last")
        return self._noted(self.flight.user(step, reason))

    def finish(self, status: str, reason: str | None) -> list[Block]:
        """The run ends: the steps a flight recorder keeps, written."""
        if self.flight is None:
            return []
        text = reason or "the run ended"
        kind = "end" if status == "complete" else "exception"
        kind = "interrupted" if "Ctrl-C" in text else "sigterm" if "SIGTERM" in text else kind
        return self._noted(self.flight.finish(kind, text))

    def _noted(self, blocks: list[Block]) -> list[Block]:
        assert self.flight is not None
        if self.flight.fired:
            self.meta[TRIGGERS_KEY] = list(self.flight.fired)
        return blocks


def check_window(
    selection: Selection, stored: Sequence[Tensor], rows_per_step: int, exact: bool
) -> None:
    """Refuse a flight recorder whose window the machine cannot hold (one line)."""
    if selection.keep_last is not None:
        values = sum(t.size for t in stored if t.stored)
        per_value = 8 + (48 if exact else 0)  # an exact value's text beside its float
        check_memory(selection.keep_last, rows_per_step * values * per_value)


def selected_meta(
    selection: Selection,
    computed: Sequence[Tensor],
    rows_per_step: int | None = None,
    exact: bool = False,
) -> dict[str, Any]:
    """The metadata keys a run of ``selection`` replaces (its ``tensors``) and adds
    (:data:`RECORD_KEY`), for a run whose blocks carry the ``computed`` tensors; {} for a run
    that records everything. Raises :class:`ConfigError` for a selection of nothing, and for
    a flight recorder's window the machine cannot hold (``rows_per_step``, when known)."""
    if selection.everything:
        return {}
    stored = selection.stored(computed)
    if rows_per_step is not None:
        check_window(selection, stored, rows_per_step, exact)
    return {"tensors": [t.as_json() for t in stored], RECORD_KEY: selection.as_json()}
