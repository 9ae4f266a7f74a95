"""The values a trace knows without storing them twice, put back beside the stored ones.

steptrace's recorder stores each value once (docs/trace-format.md, "Values stored once"). A
tensor the metadata's ``tensors`` marks ``same_as`` another is not in the files:

- the same row's values of that tensor: δ1 = δ2 behind the input layer (δ passes through),
  grad_b{k} = δ{k+1};
- with ``previous_step``, that tensor's values on the step before: the parameters before a
  step are the ones after the step before. A part's first step finds them in the part's own
  footer (:data:`BEFORE_KEY`), so that every part reads on its own, as the crash-safety rules
  want.

A file that holds such a tensor's columns after all (a golden written whole, a version 1 trace)
is read as it is. :class:`Rebuilt` says, for one file, which columns come from where, and puts
them back into a table read from it.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import TraceError
from .schema import EXACT_SUFFIX, Tensor

__all__ = ["BEFORE_KEY", "Rebuilt", "before_entry", "read_before"]

#: The part footer's key-value metadata key holding, as JSON ``{"step": s, "values": {column:
#: value}}``, the values of the ``previous_step`` tensors on the part's first step ``s``.
BEFORE_KEY = "steptrace.before"

#: Reads the run's stored ``columns`` on the given steps, from whichever part holds them (the
#: step before a window or a filtered row, when neither the rows read nor a footer has it).
Fetch = Callable[[Sequence[int], Sequence[str]], pa.Table]


def before_entry(step: int, values: Mapping[str, Any]) -> dict[bytes, bytes]:
    """The footer entry for a part whose first step is ``step``: floats as JSON numbers
    (±``Infinity`` as Python writes them; a float64 round-trips exactly), a NaN as the text of
    its 64 bits (``"0xfff8000000000000"``: JSON's ``NaN`` would lose its sign), exact texts as
    strings."""
    entry = {c: _nan_bits(v) if isinstance(v, float) and math.isnan(v) else v
             for c, v in values.items()}  # fmt: skip
    return {BEFORE_KEY.encode(): json.dumps({"step": step, "values": entry}).encode()}


def read_before(metadata: Mapping[bytes, bytes] | None) -> tuple[int, dict[str, Any]] | None:
    """A footer's :data:`BEFORE_KEY` entry (None if it has none or it is unreadable), its
    NaNs back to floats."""
    raw = (metadata or {}).get(BEFORE_KEY.encode())
    if raw is None:
        return None
    try:
        entry = json.loads(raw)
        values = {c: _float_of_bits(v) if _is_nan_bits(c, v) else v
                  for c, v in dict(entry["values"]).items()}  # fmt: skip
        return int(entry["step"]), values
    except (ValueError, KeyError, TypeError, struct.error):
        return None


def _nan_bits(value: float) -> str:
    return f"0x{struct.unpack('<Q', struct.pack('<d', value))[0]:016x}"


def _is_nan_bits(column: str, value: Any) -> bool:
    return isinstance(value, str) and not column.endswith(EXACT_SUFFIX) and value.startswith("0x")


def _float_of_bits(text: str) -> float:
    value: float = struct.unpack("<d", struct.pack("<Q", int(text, 16)))[0]
    return value


@dataclass(frozen=True)
class Rebuilt:
    """Which of one file's columns are rebuilt, and from which stored column."""

    #: Column → the stored column whose value it has, on the same row.
    copies: Mapping[str, str]
    #: Column → the stored column whose value it has on the step before.
    previous: Mapping[str, str]
    #: The file's first step and, by the column they repeat, the ``previous`` columns' values
    #: on it (from its footer; for a file without the entry, step 0's from the model).
    first: tuple[int, Mapping[str, Any]] | None = None

    @classmethod
    def of(
        cls,
        tensors: Sequence[Tensor],
        exact: bool,
        names: Sequence[str],
        first: tuple[int, Mapping[str, Any]] | None = None,
    ) -> Rebuilt:
        """For a file holding columns ``names`` of a run with ``tensors``, whose footer's
        :data:`BEFORE_KEY` entry is ``first``."""
        held, by_name = set(names), {t.name: t for t in tensors}
        copies: dict[str, str] = {}
        previous: dict[str, str] = {}
        for tensor in tensors:
            if tensor.stored:
                continue
            source, steps_back = _origin(tensor, by_name)
            for column, origin in zip(tensor.columns(), source.columns(), strict=True):
                pairs = [(column, origin)]
                if exact:
                    pairs.append((column + EXACT_SUFFIX, origin + EXACT_SUFFIX))
                for mine, theirs in pairs:
                    if mine not in held:
                        (previous if steps_back else copies)[mine] = theirs
        # The footer names the values by the columns they stand for (w2_before_1_1 …); the
        # lookup goes by the column they repeat (w2_after_1_1 of the step before).
        start = None
        if first is not None and previous and all(c in first[1] for c in previous):
            start = (first[0], {previous[c]: first[1][c] for c in previous})
        return cls(copies, previous, start)

    def __bool__(self) -> bool:
        return bool(self.copies or self.previous)

    @property
    def columns(self) -> list[str]:
        """Every column put back."""
        return [*self.copies, *self.previous]

    def rebuilds(self, column: str) -> bool:
        return column in self.copies or column in self.previous

    def sources(self, columns: Sequence[str]) -> list[str]:
        """The stored columns to read to give ``columns``, in a stable order."""
        out: dict[str, None] = {}
        for c in columns:
            if c in self.copies:
                out[self.copies[c]] = None
            elif c in self.previous:
                out["step"] = None
                out[self.previous[c]] = None
            else:
                out[c] = None
        return list(out)

    def apply(
        self,
        table: pa.Table,
        columns: Sequence[str],
        fetch: Fetch | None = None,
        known: pa.Table | None = None,
    ) -> pa.Table:
        """``table`` (read with :meth:`sources`) as ``columns``, rebuilt ones put back.

        The step before a row's step is looked up in ``table`` itself, in ``known`` (rows read
        before, such as the end of the previous batch), in the footer's first step, and last
        through ``fetch`` (the run's rows of the missing steps)."""
        wanted = [self.previous[c] for c in columns if c in self.previous]
        before = self._before(table, list(dict.fromkeys(wanted)), fetch, known) if wanted else {}
        fields, arrays = [], []
        for c in columns:
            if c in self.copies:
                origin = self.copies[c]
                fields.append(table.schema.field(origin).with_name(c))
                arrays.append(table.column(origin))
            elif c in self.previous:
                origin = self.previous[c]
                fields.append(table.schema.field(origin).with_name(c))
                arrays.append(before[origin])
            else:
                fields.append(table.schema.field(c))
                arrays.append(table.column(c))
        schema = pa.schema(fields, metadata=table.schema.metadata)
        return pa.Table.from_arrays(arrays, schema=schema)

    def batches(
        self, batches: Iterable[pa.RecordBatch], columns: Sequence[str], fetch: Fetch | None = None
    ) -> Iterator[pa.RecordBatch]:
        """A file's batches, in order, read with :meth:`sources`, as ``columns``: the step
        before a batch's first step is the end of the batch before (two steps' rows of it are
        kept, as a step may span two batches), or the footer's, or fetched."""
        known = None
        for batch in batches:
            table = pa.Table.from_batches([batch])
            if not table.num_rows:
                continue
            yield from self.apply(table, columns, fetch, known).to_batches()
            if "step" in table.column_names:
                steps = table.column("step").to_numpy()
                known = table.filter(pa.array(steps >= steps[-1] - 1))

    def _before(
        self,
        table: pa.Table,
        sources: list[str],
        fetch: Fetch | None,
        known: pa.Table | None,
    ) -> dict[str, pa.ChunkedArray | pa.Array]:
        """Each of ``sources`` on the step before each row's step: from the last row of that
        step in ``table`` itself when it is there (rows come in recording order), else from a
        small pool of the other places (``known``, the footer, ``fetch``)."""
        steps = table.column("step").to_numpy()
        columns = ["step", *sources]
        if not len(steps):
            return {c: table.column(c) for c in sources}
        if np.any(steps[1:] < steps[:-1]):  # not in recording order: look every row up
            start = np.zeros(len(steps), np.int64)
        else:
            start = np.searchsorted(steps, steps, side="left")  # the first row of each step
        inside = (start > 0) & (steps[np.maximum(start - 1, 0)] == steps - 1)
        elsewhere = np.unique(steps[~inside]) - 1 if not inside.all() else np.empty(0, np.int64)
        pool = self._pool(table, columns, elsewhere, fetch, known)
        pool_steps = pool.column("step").to_numpy()
        at = np.minimum(np.searchsorted(pool_steps, steps - 1), max(len(pool_steps) - 1, 0))
        lost = ~inside & ((len(pool_steps) == 0) | (pool_steps[at] != steps - 1))
        if lost.any():
            self._missing(int(steps[np.flatnonzero(lost)[0]]))
        # One take over the table's rows followed by the pool's.
        rows = pa.array(np.where(inside, start - 1, len(steps) + at))
        both = pa.concat_tables([table.select(columns), pool], promote_options="default")
        return {c: both.column(c).take(rows) for c in sources}

    def _pool(
        self,
        table: pa.Table,
        columns: list[str],
        steps: npt.NDArray[np.int64],
        fetch: Fetch | None,
        known: pa.Table | None,
    ) -> pa.Table:
        """One row of each of ``steps`` (sorted), found in ``known``, the footer, or by
        ``fetch``; by step, as far as found."""
        schema = pa.schema([table.schema.field(c) for c in columns])
        found: list[pa.Table] = []
        if len(steps) and known is not None and all(c in known.column_names for c in columns):
            found.append(known.select(columns).filter(pc.is_in(known["step"], pa.array(steps))))
        if len(steps) and self.first is not None and self.first[0] - 1 in steps:
            step, values = self.first
            start = [pa.array([step - 1], pa.int64())]
            start += [pa.array([values[c]], schema.field(c).type) for c in columns[1:]]
            found.append(pa.Table.from_arrays(start, schema=schema))
        have = {int(s) for t in found for s in t.column("step").to_numpy()}
        missing = [int(s) for s in steps if int(s) not in have]
        if missing and fetch is not None:
            found.append(fetch(missing, columns).select(columns))
        if not found:
            return schema.empty_table()
        pool = pa.concat_tables(found, promote_options="default")
        pool_steps = pool.column("step").to_numpy()
        order = np.argsort(pool_steps, kind="stable")
        keep = np.ones(len(order), bool)
        keep[1:] = pool_steps[order][1:] != pool_steps[order][:-1]
        return pool.take(pa.array(order[keep])).cast(schema)

    @staticmethod
    def _missing(step: int) -> None:
        raise TraceError(
            f"the parameters before step {step} are neither in step {step - 1}'s rows nor in "
            f"the part's '{BEFORE_KEY}' footer entry"
        )


def _origin(tensor: Tensor, by_name: Mapping[str, Tensor]) -> tuple[Tensor, bool]:
    """The stored tensor whose values ``tensor`` has, and whether on the step before."""
    seen, back, current = {tensor.name}, tensor.previous_step, tensor
    while True:
        name = current.same_as
        if name is None:
            return current, back
        source = by_name.get(name)
        if source is None:
            raise TraceError(f"tensor {tensor.name} is the same as {name!r}, which is not listed")
        if source.shape != tensor.shape:
            raise TraceError(
                f"tensor {tensor.name} {list(tensor.shape)} is the same as {name} "
                f"{list(source.shape)}, of another shape"
            )
        if name in seen or (back and source.previous_step):
            raise TraceError(f"tensor {tensor.name}: its 'same_as' chain does not end")
        seen.add(name)
        back = back or source.previous_step
        current = source
