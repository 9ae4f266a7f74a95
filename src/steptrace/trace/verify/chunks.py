"""A run's rows read back from its part files, in chunks of whole steps.

Values stored once come back (docs/trace-format.md): a column stored as another column of the
same row, and the parameters before each step, put back by the step plan from the row before
(at a part's first step from its footer, so the chain checks each footer against the part
before). Memory stays bounded whatever the trace's size: about :data:`CHUNK_ROWS` rows at a
time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..reader import Trace
from ..rebuild import Rebuilt
from ..schema import column_names, v1_column
from .layout import RunSettings

if TYPE_CHECKING:
    from .graph import GraphSettings
from .problem import Found, Problem

__all__ = ["CHUNK_ROWS", "StepChunks", "in_file"]

#: Rows read and checked at a time: about 30 MB of columns for the article's model.
CHUNK_ROWS = 65_536
#: Values read at a time at most (fewer rows for wide ones): about 64 MB.
CHUNK_VALUES = 8_388_608


def in_file(trace: Trace, names: Iterable[str]) -> list[str]:
    """Columns under the names the part files give them (version 1 wrote ``w_before_k`` …)."""
    return [v1_column(c) for c in names] if trace.v1 else list(names)


@dataclass
class StepChunks:
    """The rows of ``trace`` in order, as tables of whole steps (by ``run``'s plan), every
    column of the format in place; remembers which part file each row came from."""

    trace: Trace
    run: RunSettings | GraphSettings
    file_starts: list[tuple[int, str]] = field(default_factory=list)
    #: Columns stored once as the step before's (w2_before_1_1 → w2_after_1_1), the parts'
    #: footer entries by the row each part starts at, the last row read of each origin.
    previous: dict[str, str] = field(default_factory=dict)
    footer_starts: dict[int, tuple[int, Any]] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)

    @property
    def chunk_rows(self) -> int:
        """Rows read at a time: :data:`CHUNK_ROWS`, fewer for wide rows."""
        width = sum(t.size for t in self.run.layout.tensors)
        return max(1, min(CHUNK_ROWS, CHUNK_VALUES // max(width, 1)))

    def file_of(self, r: int) -> str | None:
        """The part file holding row ``r`` (of those read so far)."""
        name = None
        for start, file in self.file_starts:
            if start <= r:
                name = file
        return name

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The trace's rows in order, in record batches of the format's columns; the values
        stored once (docs/trace-format.md) come back, but for the parameters before each
        step, which :meth:`chunks` puts back by the plan."""
        names = column_names(self.run.layout.tensors, self.run.exact)
        read = 0
        for f in self.trace.files:
            self.file_starts.append((read, f.name))
            rebuilt = self.trace.rebuilt(f)
            self.previous.update(rebuilt.previous)
            footer = self.trace.part(f).before
            # An entry for another step than the part's first (a part cut out of a bigger one
            # keeps its footer) says nothing about this part, as readers find too.
            planned = int(self.run.plan(read, read + 1)["step"][0])
            if footer is not None and rebuilt.first is not None and footer[0] == planned:
                self.footer_starts[read] = rebuilt.first
            same_row = Rebuilt(rebuilt.copies, {})
            here = [c for c in names if c not in rebuilt.previous]
            stored = same_row.sources(here)
            try:
                for batch in pq.ParquetFile(f).iter_batches(
                    batch_size=self.chunk_rows, columns=in_file(self.trace, stored)
                ):
                    read += batch.num_rows
                    table = pa.Table.from_batches([batch.rename_columns(stored)])
                    for out in same_row.apply(table, here).to_batches():
                        yield out.replace_schema_metadata(None)
            except (OSError, pa.ArrowException) as exc:
                raise Found(Problem(f"unreadable rows ({exc})", f.name)) from None

    def chunks(self) -> Iterator[tuple[int, pa.Table]]:
        """Tables of whole steps (by the plan), about :data:`CHUNK_ROWS` rows each."""
        pending: list[pa.RecordBatch] = []
        r0 = size = 0
        for batch in self.batches():
            pending.append(batch)
            size += batch.num_rows
            if size < self.chunk_rows:
                continue
            table = pa.Table.from_batches(pending)
            cut = self.run.step_boundary(r0 + size) - r0
            if cut > 0:
                yield r0, self.with_previous(r0, table.slice(0, cut))
                r0, size = r0 + cut, size - cut
                pending = table.slice(cut).to_batches()
        if size:
            yield r0, self.with_previous(r0, pa.Table.from_batches(pending))

    def with_previous(self, r0: int, table: pa.Table) -> pa.Table:
        """``table`` (rows ``r0`` … of whole steps) with the parameters before each row's
        step: the ones after the last row of the step before, by the plan (whatever the rows'
        ``step`` says); at a part's first step, the ones its footer gives (checked so against
        the part before); at step 0 without a footer entry, the model's initial ones."""
        if not self.previous:
            return table
        rows = np.arange(r0, r0 + table.num_rows)
        source = rows - (rows % self.run.rows) % self.run.b - 1  # the step before's last row
        inside = source >= r0
        # Rows of a step that starts the chunk, or a part (whose footer says): looked up.
        starts = np.flatnonzero(~inside | np.isin(source + 1, list(self.footer_starts)))
        for column, origin in self.previous.items():
            values = table.column(origin).to_numpy(zero_copy_only=False)
            before = np.empty(len(rows), dtype=values.dtype)
            before[inside] = values[source[inside] - r0]
            for i in starts:
                before[i] = self.start_value(int(source[i]) + 1, column, origin)
            self.last[origin] = values[-1]
            field = table.schema.field(origin).with_name(column)
            table = table.append_column(field, pa.array(before, field.type))
        names = column_names(self.run.layout.tensors, self.run.exact)
        return table.select(names)

    def start_value(self, r: int, column: str, origin: str) -> Any:
        """``column`` on the step starting at row ``r``, which the rows read so far do not
        give: the footer of the part starting there, or the last row read before."""
        first = self.footer_starts.get(r)
        if first is not None:
            return first[1][origin]
        if origin in self.last:
            return self.last[origin]
        return self.trace.initial.get(column, math.nan if not column.endswith("_exact") else "")
