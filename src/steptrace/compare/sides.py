"""The two sides of a comparison: reading each from wherever it comes from, and writing one out.

A side is a run folder, a Parquet trace file (a golden), an open :class:`Trace`, a
:class:`~steptrace.train.recorder.RunResult` or a DataFrame of trace rows. Its rows are read on
demand, only the columns a comparison needs. :func:`write_trace_file` writes a side as one
self-describing Parquet file: how goldens and ``*.obtained.parquet`` files are made.

>>> side = load_side("traces/golden/article-exact.parquet")  # doctest: +SKIP
>>> side.numerics, side.rows  # doctest: +SKIP
('exact', 3)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import SteptraceError, TraceError, WriteError
from ..numerics import format_value
from ..trace.loader import find_traces
from ..trace.opener import open_trace
from ..trace.reader import Trace
from ..trace.rebuild import Rebuilt, before_entry, read_before
from ..trace.schema import (
    EXACT_SUFFIX,
    FORMAT_VERSION,
    METADATA_KEY,
    tensors_from_columns,
    tensors_of,
)
from ..trace.writer import RUN_FILE, parquet_options

__all__ = [
    "KEYS",
    "HasPath",
    "Side",
    "SideInfo",
    "TraceLike",
    "dataframe_metadata",
    "load_side",
    "open_one",
    "write_trace_file",
]

#: Rows are aligned on these columns.
KEYS = ("step", "sample")
#: Marks metadata made up for a DataFrame (which carries none of its own).
FROM_DATAFRAME = "DataFrame"


class HasPath(Protocol):
    """Anything with a ``path`` to a trace, such as a
    :class:`~steptrace.train.recorder.RunResult`."""

    @property
    def path(self) -> Path: ...


TraceLike: TypeAlias = "str | Path | Trace | pd.DataFrame | HasPath | Side"
"""A run folder or Parquet file path, an open :class:`Trace`, a DataFrame of trace rows, or
a :class:`~steptrace.train.recorder.RunResult`."""


@dataclass
class Side:
    """One of the two traces being compared: where it comes from, its metadata, and its rows
    read on demand (only the columns a comparison needs)."""

    label: str
    meta: dict[str, Any]
    status: str = "unknown"
    trace: Trace | None = None
    dataframe: pd.DataFrame | None = None

    @cached_property
    def columns(self) -> list[str]:
        if self.dataframe is not None:
            return [str(c) for c in self.dataframe.columns]
        assert self.trace is not None
        return list(self.trace.schema().names)

    @cached_property
    def rows(self) -> int:
        if self.dataframe is not None:
            return len(self.dataframe)
        assert self.trace is not None
        return self.trace.num_rows

    @cached_property
    def steps(self) -> tuple[int, int] | None:
        """The first and last step held, None when empty."""
        if self.dataframe is not None:
            step = self.dataframe["step"]
            return (int(step.min()), int(step.max())) if len(step) else None
        assert self.trace is not None
        return self.trace.step_span()

    def read(
        self, columns: Sequence[str] | None = None, steps: tuple[int, int] | None = None
    ) -> pd.DataFrame:
        """The rows, only ``columns`` (all if None), only steps ``lo <= step < hi`` if
        ``steps`` is ``(lo, hi)``."""
        if self.dataframe is not None:
            frame = self.dataframe
            if steps is not None:
                frame = frame[(frame["step"] >= steps[0]) & (frame["step"] < steps[1])]
            return frame if columns is None else frame[list(columns)]
        # The table is not kept: let pandas take its buffers instead of copying them.
        table = self.read_table(columns, steps)
        read: pd.DataFrame = table.to_pandas(split_blocks=True, self_destruct=True)
        return read

    def read_table(
        self, columns: Sequence[str] | None = None, steps: tuple[int, int] | None = None
    ) -> pa.Table:
        """The rows as an Arrow table (see :meth:`read`)."""
        if self.dataframe is not None:
            return pa.Table.from_pandas(self.read(columns, steps), preserve_index=False)
        assert self.trace is not None
        try:
            return self.trace.read_table(columns, steps=steps)
        except SteptraceError:
            raise
        except Exception as exc:  # a damaged file: say which, in one line
            where = self.trace.path
            raise TraceError(f"{where}: unreadable trace ({type(exc).__name__}: {exc})") from None

    @property
    def from_dataframe(self) -> bool:
        return self.meta.get("source") == FROM_DATAFRAME

    @property
    def numerics(self) -> str:
        return str(self.meta.get("numerics", "float64"))

    def info(self) -> SideInfo:
        return SideInfo(
            self.label, self.numerics, str(self.meta.get("lr", "?")), self.rows, self.status
        )


@dataclass(frozen=True)
class SideInfo:
    """What a report says about each trace."""

    label: str
    numerics: str
    lr: str
    rows: int
    status: str

    def describe(self) -> str:
        status = "" if self.status in ("complete", "unknown") else f", {self.status}"
        return f"{self.label} ({self.numerics}, α={self.lr}, {self.rows} rows{status})"


# --- loading and writing ------------------------------------------------------------------


def load_side(source: TraceLike, label: str | None = None) -> Side:
    """Read one side of a comparison: a trace path, :class:`Trace`, RunResult or DataFrame.

    A folder holding several runs is refused: compare one run with one run.

    >>> side = load_side("traces/golden/article-exact.parquet")  # doctest: +SKIP
    >>> side.meta["numerics"], side.rows  # doctest: +SKIP
    ('exact', 3)
    """
    if isinstance(source, Side):
        return source
    if isinstance(source, pd.DataFrame):
        missing = [k for k in KEYS if k not in source.columns]
        if missing:
            raise TraceError(
                f"a DataFrame needs the columns {', '.join(KEYS)} to be compared as a trace "
                f"(it lacks {', '.join(missing)})"
            )
        return Side(label or "DataFrame", dataframe_metadata(source), dataframe=source)
    if isinstance(source, Trace):
        trace = source
    elif isinstance(source, str | Path):
        trace = open_one(Path(source))
    elif isinstance(getattr(source, "path", None), str | Path):
        trace = open_one(Path(source.path))  # a RunResult
    else:
        raise TraceError(f"cannot compare a {type(source).__name__} as a trace")
    return Side(label or str(trace.path), dict(trace.meta), trace.status, trace=trace)


def open_one(path: Path) -> Trace:
    """Open ``path`` as exactly one run; a folder of several runs is an error."""
    if not path.is_dir() or (path / RUN_FILE).exists():
        return open_trace(path)
    traces, problems = find_traces(path)
    if len({t.run_id for t in traces}) == 1 and not problems:
        # The part files of one run copied without its _run.json.
        return open_trace(path) if all(t.path.parent == path for t in traces) else traces[0]
    if not traces:
        why = f": {problems[0][1]}" if problems else ""
        raise TraceError(f"{str(path)!r} holds no steptrace trace{why}")
    names = ", ".join(t.name for t in traces[:3]) + (" …" if len(traces) > 3 else "")
    raise TraceError(
        f"{str(path)!r} is a folder of {len(traces)} runs ({names}); compare one run with one "
        "run, or two folders of runs"
    )


def write_trace_file(side: Side, path: str | Path) -> None:
    """Write ``side`` as one self-describing Parquet file (a golden), all at once: written
    aside, then renamed into place, so a golden is never half written.

    >>> write_trace_file(load_side("traces/my-run"), "golden.parquet")  # doctest: +SKIP
    """
    path = Path(path)
    # Read traces come in the current format's names, whatever version wrote them; the
    # golden stores each value once, as the recorder does (docs/trace-format.md).
    meta = {**side.meta, "format_version": FORMAT_VERSION}
    table, entry = _stored_once(side.read_table(), meta)
    table = table.replace_schema_metadata(
        {METADATA_KEY.encode(): json.dumps(meta, sort_keys=True).encode(), **entry}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(
            table, tmp, row_group_size=max(table.num_rows, 1), **parquet_options(table.schema)
        )
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WriteError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None


def _stored_once(table: pa.Table, meta: dict[str, Any]) -> tuple[pa.Table, dict[bytes, bytes]]:
    """``table`` without the columns its metadata marks as stored once, and the footer entry
    with its first step's parameters, when that loses nothing: when putting them back gives
    every one of them again, bit for bit (a table with a step missing, or edited, stays
    whole, without an entry)."""
    whole: tuple[pa.Table, dict[bytes, bytes]] = (table, {})
    exact = meta.get("numerics") == "exact"
    try:
        tensors = tensors_of(meta)
        every = Rebuilt.of(tensors, exact, [])
    except SteptraceError:
        return whole
    if not every or not table.num_rows or "step" not in table.column_names:
        return whole
    if not all(c in table.column_names for c in every.columns):
        return whole
    start = {c: table.column(c)[0].as_py() for c in every.previous}
    step = int(table.column("step")[0].as_py())
    stored = table.select([c for c in table.column_names if not every.rebuilds(c)])
    entry = before_entry(step, start)
    back = Rebuilt.of(tensors, exact, stored.column_names, read_before(entry))
    try:
        again = back.apply(stored, table.column_names)
    except TraceError:
        return whole
    for c in every.columns:
        if not _same_bits(again.column(c), table.column(c)):
            return whole
    return stored, entry


def _same_bits(a: pa.ChunkedArray, b: pa.ChunkedArray) -> bool:
    x, y = a.to_numpy(), b.to_numpy()
    if x.dtype == np.float64 and y.dtype == np.float64:
        return bool(np.array_equal(x.view(np.uint64), y.view(np.uint64)))
    return bool(a.equals(b))


def dataframe_metadata(frame: pd.DataFrame) -> dict[str, Any]:
    """Metadata made up for a DataFrame, from its own columns, so that a golden written from
    it is a readable trace. It is marked as such and never compared."""

    def constant(column: str) -> Any:
        if column in frame.columns and len(frame) and frame[column].nunique(dropna=False) == 1:
            value = frame[column].iloc[0]
            return value.item() if isinstance(value, np.generic) else value
        return None

    exact = any(str(c).endswith(EXACT_SUFFIX) for c in frame.columns)
    lr = constant("lr" + EXACT_SUFFIX)
    if lr is None and constant("lr") is not None:
        lr = format_value(float(constant("lr")))
    n = sum(1 for c in frame.columns if str(c).startswith("x_") and str(c)[2:].isdigit())
    epochs = int(frame["epoch"].max()) + 1 if "epoch" in frame.columns and len(frame) else 0
    return {
        "format_version": FORMAT_VERSION,
        "source": FROM_DATAFRAME,
        "run_id": str(constant("run_id") or "dataframe"),
        "numerics": str(constant("numerics") or ("exact" if exact else "float64")),
        "lr": str(lr if lr is not None else "?"),
        "batch_size": int(constant("batch_size") or 0),
        "epochs": epochs,
        "dataset": {"name": FROM_DATAFRAME, "features": [f"x_{k}" for k in range(1, n + 1)]},
        "tensors": [t.as_json() for t in tensors_from_columns([str(c) for c in frame.columns])],
    }
