"""One recorded run, read: :class:`Trace`, its metadata and its rows on demand.

Rows are read part by part, only the columns and row groups asked for, with the values stored
once put back (:mod:`~steptrace.trace.rebuild`) and a version 1 trace's columns under version
2's names. Columns a reader does not know are left alone. Opening a run is the concern of
:mod:`~steptrace.trace.opener`; finding and loading many, of :mod:`~steptrace.trace.loader`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from ..errors import SteptraceError, TraceError
from ..model.spec import load_model
from ..numerics import get_numerics
from .filters import Filters, StepRange, conjunction, filter_expression, may_hold, step_expression
from .parts import PartInfo, part_info
from .rebuild import Rebuilt
from .schema import EXACT_SUFFIX, Tensor, arrow_schema, is_v1, tensors_of, v1_column, v2_column

__all__ = ["Trace"]


@dataclass
class Trace:
    """One recorded run: its metadata and status, and its rows on demand."""

    path: Path
    meta: dict[str, Any]
    status: str
    reason: str | None = None
    files: list[Path] = field(default_factory=list)
    #: What the recorder found when the run ended (``_run.json``'s ``summary``: final and
    #: lowest loss, divergence); None while it runs, or for a trace without ``_run.json``.
    summary: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.path.name if self.path.is_dir() else self.path.stem

    @property
    def run_id(self) -> str:
        return str(self.meta["run_id"])

    @property
    def numerics(self) -> str:
        return str(self.meta["numerics"])

    @property
    def lr_text(self) -> str:
        return str(self.meta["lr"])

    @property
    def n_features(self) -> int:
        return len(self.meta["dataset"]["features"])

    @cached_property
    def tensors(self) -> list[Tensor]:
        """The recorded tensors (``x``, ``o2``, ``w2_after`` …) and their shapes."""
        return tensors_of(self.meta)

    def tensor(self, name: str) -> Tensor:
        """One recorded tensor by name; :class:`TraceError` naming the ones there are."""
        for t in self.tensors:
            if t.name == name:
                return t
        names = ", ".join(t.name for t in self.tensors)
        raise TraceError(f"{self.path}: no tensor {name!r} in this trace (it has: {names})")

    @property
    def v1(self) -> bool:
        """Written in trace format 1 (the article's model only): its weights' columns are
        read under version 2's names (``w_after_3`` as ``w2_after_1_3``)."""
        return is_v1(self.meta)

    @property
    def is_exact(self) -> bool:
        return self.numerics == "exact"

    def settings(self) -> dict[str, Any]:
        """The run's settings, one value each (what
        :func:`~steptrace.trace.loader.load_traces` adds as columns)."""
        return {
            "run": self.name,
            "numerics": self.numerics,
            "lr_text": self.lr_text,
            "batch_size": int(self.meta["batch_size"]),
            "epochs": int(self.meta["epochs"]),
            "shuffle": bool(self.meta.get("shuffle", False)),
            "seed": self.meta.get("seed"),
            "status": self.status,
        }

    @cached_property
    def _parts(self) -> list[PartInfo]:
        """What each part's footer says (read once per part file, for every Trace of it)."""
        return [part_info(f, unreadable="unreadable part file") for f in self.files]

    @property
    def num_rows(self) -> int:
        """Rows on disk, from the Parquet footers (no data read)."""
        return sum(p.rows for p in self._parts)

    def dataset(self) -> pads.Dataset:
        """The run as a pyarrow dataset (its part files, in order): the columns they store,
        without the values stored once that :meth:`read_table` puts back."""
        if not self.files:
            return pads.dataset(pa.table({}, schema=self.schema()))
        return pads.dataset([str(f) for f in self.files], format="parquet")

    @property
    def _step_spans(self) -> list[list[tuple[int, int]] | None]:
        """Each part's row groups' (first, last) step, from the footers."""
        return [p.spans for p in self._parts]

    def parts(self, lo: int | None = None, hi: int | None = None) -> list[Path]:
        """The part files that may hold steps ``lo <= step < hi``, by their footers'
        statistics (every part, for a part without them)."""
        return [f for f, spans in zip(self.files, self._step_spans, strict=True)
                if may_hold(spans, lo, hi)]  # fmt: skip

    def step_span(self) -> tuple[int, int] | None:
        """The first and last step on disk (None if no rows): from the row groups' statistics
        when every part has them, else by reading the ``step`` column."""
        spans = self._step_spans
        if any(span is None for span in spans):
            step = self.read_table(["step"]).column("step")
            return (pc.min(step).as_py(), pc.max(step).as_py()) if len(step) else None
        known = [lo_hi for span in spans if span is not None for lo_hi in span]
        return (min(lo for lo, _ in known), max(hi for _, hi in known)) if known else None

    def schema(self) -> pa.Schema:
        """The run's columns as readers see them (from the first part's footer, read once),
        under version 2's names: the ones its files store and the ones rebuilt from them
        (:mod:`~steptrace.trace.rebuild`), in the format's order."""
        if self.v1:
            return pa.schema(
                [f.with_name(v2_column(f.name)) for f in self._schema],
                metadata=self._schema.metadata,
            )
        stored = self._schema
        if not self.rebuilt():
            return stored
        every = arrow_schema(self.tensors, self.is_exact, {})
        fields = [stored.field(n) if n in stored.names else every.field(n) for n in every.names]
        fields += [f for f in stored if f.name not in set(every.names)]
        return pa.schema(fields, metadata=stored.metadata)

    def rebuilt(self, part: Path | None = None) -> Rebuilt:
        """Which columns of ``part`` (the first if None) are rebuilt from its others (none in
        version 1)."""
        if self.v1 or not self.files:
            return Rebuilt({}, {})
        index = 0 if part is None else self._part_index[part]
        known = self._rebuilt_parts.get(index)
        if known is None:
            info = self._parts[index]
            start = info.before or (0, self.initial)  # a part rewritten without its footer entry
            known = Rebuilt.of(self.tensors, self.is_exact, info.schema.names, start)
            self._rebuilt_parts[index] = known
        return known

    @cached_property
    def _rebuilt_parts(self) -> dict[int, Rebuilt]:
        """:meth:`rebuilt` of each part asked about so far (parts never change in place)."""
        return {}

    @cached_property
    def initial(self) -> dict[str, Any]:
        """The parameters before step 0, by column, from the metadata's model (in the run's
        numbers, as the recorder starts from them); {} if the model cannot be read."""
        try:
            num = get_numerics(self.numerics)
            model = load_model(self.meta["model"], self.n_features)
            stack = model.stack(num)
            values = stack.flat(model.params(num))  # W row by row, then b, layer by layer
        except (SteptraceError, KeyError, TypeError, ValueError):
            return {}
        listed = {t.name for t in self.tensors}
        out: dict[str, Any] = {}
        at = 0
        for k in stack.param_layers:
            for p, shape in zip("wb", stack.param_shapes(k), strict=True):
                size = 0 if shape is None else int(np.prod(shape))
                chunk, at = values[at : at + size], at + size
                if shape is None or f"{p}{k}_before" not in listed:
                    continue  # a run that keeps some tensors may not list it
                columns = self.tensor(f"{p}{k}_before").columns()
                for column, v in zip(columns, chunk, strict=True):
                    out[column] = num.to_float(v)
                    out[column + EXACT_SUFFIX] = str(v)
        return out

    def fetch(self, steps: Sequence[int], columns: Sequence[str]) -> pa.Table:
        """The run's rows of ``steps``, ``columns`` only, from whichever parts hold them."""
        tables = [
            pads.dataset(str(f), format="parquet", schema=self.part(f).schema).to_table(
                columns=list(columns), filter=pc.field("step").isin(list(steps))
            )
            for f in self.parts(min(steps), max(steps) + 1)
        ]
        if not tables:
            return self._schema.empty_table().select(list(columns))
        return pa.concat_tables(tables)

    def part(self, path: Path) -> PartInfo:
        """What the footer of part ``path`` says."""
        return self._parts[self._part_index[path]]

    @cached_property
    def _part_index(self) -> dict[Path, int]:
        return {f: i for i, f in enumerate(self.files)}

    @cached_property
    def _schema(self) -> pa.Schema:
        if self.files:
            return self._parts[0].schema
        return arrow_schema(self.tensors, self.is_exact, self.meta)

    def _file_columns(self, columns: Sequence[str] | None) -> list[str] | None:
        """The names ``columns`` have in the files (version 1 names its weights otherwise)."""
        if columns is None or not self.v1:
            return None if columns is None else list(columns)
        return [v1_column(c) for c in columns]

    def _renamed(self, table: pa.Table) -> pa.Table:
        if not self.v1:
            return table
        return table.rename_columns([v2_column(c) for c in table.column_names])

    def read_table(
        self,
        columns: Sequence[str] | None = None,
        filters: Filters = None,
        steps: StepRange | None = None,
    ) -> pa.Table:
        """The rows as an Arrow table, in recording order; only ``columns``, only the row
        groups ``filters`` may match, only steps ``lo <= step < hi`` if ``steps`` is
        ``(lo, hi)`` (either may be None). Parts holding none of those steps, by their footers'
        statistics, are not opened: a long run of many parts reads one step as fast as a
        short one."""
        expression = filter_expression(filters)
        files = self.files if steps is None else self.parts(*steps)
        names = self.schema().names
        wanted = list(names if columns is None else columns)
        # The parameters before a window's first step are the step before's: read it too
        # (one scan, not two), and leave it out once they are put back.
        lo = None if steps is None else steps[0]
        widen = bool(lo) and any(self.rebuilt().previous.get(c) for c in wanted)
        if steps is not None:
            first = lo - 1 if widen and lo is not None else lo
            expression = conjunction(expression, step_expression(first, steps[1]))
        if columns is not None:
            unknown = [c for c in columns if c not in names]
            if unknown:
                raise TraceError(f"{self.path}: no column(s) {', '.join(unknown)} in this trace")
        tables = []
        for f in files:
            rebuilt = self.rebuilt(f)
            keep = wanted if not widen or "step" in wanted else [*wanted, "step"]
            read = rebuilt.sources(keep) if rebuilt else (keep if widen else columns)
            try:
                # Given the schema, the dataset does not open the file to discover it: each
                # part's footer is read once, by the scan.
                part = pads.dataset(str(f), format="parquet", schema=self.part(f).schema)
                table = self._renamed(
                    part.to_table(columns=self._file_columns(read), filter=expression)
                )
                if rebuilt:
                    table = rebuilt.apply(table, keep, self.fetch)
                if widen:  # the step before comes first, in recording order
                    steps_read = table.column("step").to_numpy()
                    cut = int(np.searchsorted(steps_read, lo or 0))
                    table = table.slice(cut).select(wanted)
            except (OSError, pa.ArrowException) as exc:
                if "No match for FieldRef" in str(exc):
                    raise TraceError(
                        f"{self.path}: the filter names a column this trace does not have "
                        f"({str(exc).splitlines()[0]}){_stored_hint(rebuilt)}"
                    ) from None
                raise TraceError(f"{f}: unreadable part file ({exc})") from None
            except TraceError as exc:
                raise TraceError(f"{f}: {exc}") from None
            tables.append(table)
        if not tables:
            empty = self.schema()
            if columns is not None:
                empty = pa.schema([empty.field(c) for c in columns], metadata=empty.metadata)
            return empty.empty_table()
        return pa.concat_tables(tables, promote_options="default")

    def read(
        self,
        columns: Sequence[str] | None = None,
        filters: Filters = None,
        steps: StepRange | None = None,
    ) -> pd.DataFrame:
        """The rows as a DataFrame (see :meth:`read_table`)."""
        frame: pd.DataFrame = self.read_table(columns, filters, steps).to_pandas()
        return frame

    def step(self, step: int, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The rows of one step (one per sample of its batch)."""
        return self.read(columns, steps=(step, step + 1))

    def columns_of(self, name: str) -> list[str]:
        """The columns of one tensor, e.g. ``columns_of("w2_after")``."""
        return self.tensor(name).columns()

    def iter_batches(
        self, columns: Sequence[str] | None = None, steps: StepRange | None = None
    ) -> Iterator[pa.RecordBatch]:
        """The rows in recording order, a record batch at a time (flat memory whatever the
        run's length), only ``columns``, only steps ``lo <= step < hi``."""
        expression = None if steps is None else step_expression(*steps)
        files = self.files if steps is None else self.parts(*steps)
        wanted = list(self.schema().names if columns is None else columns)
        for f in files:
            rebuilt = self.rebuilt(f)
            read = rebuilt.sources(wanted) if rebuilt else columns
            try:
                part = pads.dataset(str(f), format="parquet", schema=self.part(f).schema)
                batches = part.to_batches(columns=self._file_columns(read), filter=expression)
                if rebuilt:
                    batches = rebuilt.batches(batches, wanted, self.fetch)
                for batch in batches:
                    if self.v1:
                        batch = batch.rename_columns([v2_column(c) for c in batch.schema.names])
                    yield batch
            except (OSError, pa.ArrowException) as exc:
                raise TraceError(f"{f}: unreadable part file ({exc})") from None
            except TraceError as exc:
                raise TraceError(f"{f}: {exc}") from None


def _stored_hint(rebuilt: Rebuilt) -> str:
    if not rebuilt:
        return ""
    return "; a column rebuilt from the stored ones (w2_before …) is filtered once read"
