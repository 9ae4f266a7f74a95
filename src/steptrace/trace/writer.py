"""Streaming, crash-safe trace writing.

A run is a folder::

    traces/<run>/
        _run.json              run metadata and status (complete / incomplete)
        .lock                  held (flock) while a recorder is writing
        .part-000003.parquet.tmp   the part being written (invisible to readers)
        part-000000.parquet    flushed parts: plain Parquet, each self-describing
        part-000001.parquet

Rows are buffered in memory up to one row group, written to the part in progress, and at least
once a second the part is closed, fsynced and renamed into place (wide rows, whose flushes take
long, less often: :data:`FLUSH_COST_RATIO`). A rename is atomic, so a reader
— or a recorder killed with SIGKILL — only ever sees whole Parquet files holding whole steps.
``_run.json`` says ``incomplete`` from the start and ``complete`` only after the last flush, so
a run that dies is marked as such without anyone having to notice. Every file that is not data
starts with ``_`` or ``.``, the prefixes pandas, pyarrow, DuckDB and Spark skip in a folder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import SteptraceError, WriteError
from .flight import sigterm_held, sigterm_raises
from .keep import Keeper
from .rebuild import Rebuilt, before_entry
from .run_buffer import Block
from .scalars import ScalarsWriter
from .schema import EXACT_SUFFIX, METADATA_KEY, Tensor, arrow_schema, tensors_of

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_NAME", "RUN_FILE", "TraceWriter", "make_run_dir", "read_run_file", "strict_json",
    "write_json_atomic",
]  # fmt: skip

RUN_FILE = "_run.json"
LOCK_NAME = ".lock"
PART_FORMAT = "part-{:06d}.parquet"
WRITABLE_HINT = "; choose a folder you can write to with --out"


#: How ``_run.json`` writes a summary's numbers that are not finite (a diverged run's loss):
#: strict JSON has no such numbers, so they are texts, which ``float()`` reads back.
NOT_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def strict_json(value: Any) -> Any:
    """``value`` with every float that is not finite as its text (:data:`NOT_FINITE`)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def read_run_file(path: Path) -> Any:
    """``_run.json`` as a dict (or whatever JSON it holds), the summary's texts for numbers
    that are not finite read back as floats. Raises ``OSError`` or ``ValueError``."""
    info = json.loads(path.read_text(encoding="utf-8"))
    summary = info.get("summary") if isinstance(info, dict) else None
    if isinstance(summary, dict):
        info["summary"] = {
            k: NOT_FINITE[v] if isinstance(v, str) and v in NOT_FINITE else v
            for k, v in summary.items()
        }
    return info


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` as strict JSON, all at once (write aside, fsync,
    rename); numbers that are not finite (a diverged run's summary) are written as texts
    (:data:`NOT_FINITE`)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(strict_json(data), f, indent=2, sort_keys=True, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def make_run_dir(out: Path, name: str) -> Path:
    """Create a new, empty run folder ``out/name`` (``name-2``, ``name-3`` … if taken).

    ``mkdir`` either creates the folder or fails, so concurrent recorders never share one.
    """
    safe = re.sub(r"[^A-Za-z0-9._=+-]+", "_", name).strip("._") or "run"
    made = not out.exists()  # taken away again if no run folder can be made in it
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(
            f"cannot create output folder {str(out)!r}: {exc.strerror}{WRITABLE_HINT}"
        ) from None
    for attempt in range(1, 10_000):
        path = out / (safe if attempt == 1 else f"{safe}-{attempt}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            if made:
                with contextlib.suppress(OSError):
                    out.rmdir()
            too_long = exc.errno == errno.ENAMETOOLONG
            hint = "; choose a shorter --name" if too_long else WRITABLE_HINT
            raise WriteError(
                f"cannot create run folder in {str(out)!r}: {exc.strerror}{hint}"
            ) from None
        return path
    raise WriteError(f"too many runs named {safe!r} in {str(out)!r}")


#: Up to this many dataset rows the low-cardinality columns are dictionary-encoded; a larger
#: dictionary would overflow Parquet's dictionary page and fall back to PLAIN anyway.
DICTIONARY_MAX_ROWS = 65_536
#: zstd level 1: levels 3-6 save ~2-3% of the bytes and cost 40-70% more time writing.
ZSTD_LEVEL = 1
#: From this many columns on, a row group holds at most 1,024 rows (:func:`group_rows`), a
#: column chunk at most 8 kB, and LZ4 compresses them: zstd's fixed cost per chunk (~15 µs, a
#: context made for each) then outweighs compressing the 8 kB, and a row group of a CNN's
#: 15,387 columns wrote 1.8× slower for 23% fewer bytes (docs/benchmarks.md).
WIDE_COLUMNS = 8_192


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """Parquet writer options for a trace's schema, chosen per column (measured in
    docs/benchmarks.md; format described in docs/trace-format.md, "Encodings").

    - floats computed by the model: ``BYTE_STREAM_SPLIT`` (the bytes of each double grouped by
      position: signs and exponents then compress to almost nothing under zstd);
    - the tensors that only repeat the data (the metadata's ``tensors`` marked ``data``: the
      learning rate, x, y, and the outputs of the layers before the first with parameters) and
      their exact texts: a few distinct values repeated every epoch, so a dictionary (plus
      run-length encoding of its indices) stores them in ~0 bytes, when the dataset is small
      enough for one dictionary page;
    - integers (step, epoch, sample, batch size): ``DELTA_BINARY_PACKED`` (steps go up by 0 or 1);
    - run-wide strings (run_id, numerics): dictionary; other exact texts: plain, zstd;
    - statistics only on ``step``, ``epoch`` and ``sample``, the columns readers filter on;
    - zstd, or LZ4 for rows of :data:`WIDE_COLUMNS` columns or more.

    >>> from steptrace.trace.schema import Tensor, arrow_schema
    >>> tensors = [Tensor("x", (3,), data=True), Tensor("w2_after", (1, 3))]
    >>> meta = {"dataset": {"rows": 3}, "tensors": [t.as_json() for t in tensors]}
    >>> options = parquet_options(arrow_schema(tensors, False, meta))
    >>> options["column_encoding"]["w2_after_1_3"], options["use_dictionary"][0]
    ('BYTE_STREAM_SPLIT', 'x_1')
    """
    meta = _metadata(schema)
    rows = (meta.get("dataset") or {}).get("rows")
    small = isinstance(rows, int) and rows <= DICTIONARY_MAX_ROWS
    data = set()
    with contextlib.suppress(SteptraceError):
        data = {c for t in tensors_of(meta) if t.data for c in t.columns()}
    dictionary, encoding = [], {}
    for f in schema:
        if small and f.name.removesuffix(EXACT_SUFFIX) in data:
            dictionary.append(f.name)
        elif pa.types.is_floating(f.type):
            encoding[f.name] = "BYTE_STREAM_SPLIT"
        elif pa.types.is_integer(f.type):
            encoding[f.name] = "DELTA_BINARY_PACKED"
        elif pa.types.is_string(f.type) and not f.name.endswith(EXACT_SUFFIX):
            dictionary.append(f.name)
    wide = len(schema) >= WIDE_COLUMNS
    return {
        "compression": "lz4" if wide else "zstd",
        "compression_level": None if wide else ZSTD_LEVEL,
        "use_dictionary": dictionary or False,
        "column_encoding": encoding,
        "write_statistics": [c for c in ("step", "epoch", "sample") if c in schema.names],
    }


#: A row group holds about this many bytes of values at most (a wide row, a convolution's
#: thousands of values, makes groups of fewer rows: the writer holds a group in memory, and a
#: reader that wants one step reads its whole group).
GROUP_BYTES = 64 << 20
#: … and at most this many rows (narrow rows: the series' small models).
GROUP_ROWS = 65_536


def group_rows(columns: int) -> int:
    """Rows of a row group for rows of ``columns`` columns: :data:`GROUP_ROWS`, fewer when
    rows are wide (:data:`GROUP_BYTES`), at least 1,024."""
    return max(1_024, min(GROUP_ROWS, GROUP_BYTES // (8 * max(columns, 1))))


#: A flush costs wide rows (:data:`WIDE_COLUMNS`) much, a footer naming every column and a row
#: group cut short: the next comes no sooner than this many times the last one's duration, so
#: that flushing takes at most a tenth of the writer's time (a CNN's 15,387 columns: a flush
#: every few seconds).
FLUSH_COST_RATIO = 10


#: The key of a block that is no rows but the user's trigger of a flight recorder (its reason),
#: after the step under ``step``.
USER_TRIGGER = "trigger"
#: The key of a written block's starting values: the parameters its first step starts from,
#: by the ``*_before`` column they stand for (a new part's footer holds them).
START = "start"


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number it is (texts stay texts)."""
    return value.item() if hasattr(value, "item") else value


def _metadata(schema: pa.Schema) -> dict[str, Any]:
    """The run metadata in ``schema`` ({} if absent or unreadable)."""
    raw = (schema.metadata or {}).get(METADATA_KEY.encode())
    try:
        meta = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


class TraceWriter:
    """Writes one run's blocks of rows into its folder; see the module docstring.

    Use as a context manager, or call :meth:`close` with the final status.
    """

    def __init__(
        self,
        run_dir: Path,
        exact: bool,
        meta: dict[str, Any],
        flush_seconds: float = 1.0,
        row_group_rows: int | None = None,
        first_part: int = 0,
        computed: list[Tensor] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.meta = meta
        tensors = tensors_of(meta)
        # Every step's figures, from the blocks as they come (``computed``: the tensors they
        # carry, when the run stores fewer).
        self.scalars = ScalarsWriter(run_dir, computed or tensors, str(meta["run_id"]))
        # The rows and columns the run's selection keeps of each block (docs: "Choosing what
        # is recorded").
        self.keeper = Keeper(meta, tensors, computed or tensors)
        # A flight recorder's steps are written when the process is told to stop (SIGTERM).
        self._signals = contextlib.ExitStack()
        if self.keeper.flight is not None:
            self._signals.enter_context(sigterm_raises())
        self.schema = arrow_schema(tensors, exact, meta, stored=True)
        # The parameters a part's first step starts from go into its footer (rebuild.py).
        self._starts = list(Rebuilt.of(tensors, exact, self.schema.names).previous)
        self._first: dict[bytes, bytes] = {}
        self.options = parquet_options(self.schema)
        self.flush_seconds = flush_seconds
        self._flush_every = flush_seconds  # longer when flushes take long (FLUSH_COST_RATIO)
        self.row_group_rows = row_group_rows or group_rows(len(self.schema))
        # A resumed run goes on after its flushed parts: they count among the run's rows.
        self.rows_flushed = sum(
            pq.read_metadata(p).num_rows for p in run_dir.glob("part-*.parquet") if first_part
        )
        self.parts = first_part
        self._pending: list[pa.RecordBatch | Block] = []
        self._matrix_rows: tuple[dict[str, int], list[int]] | None = None
        self._pending_rows = 0
        self._part: pq.ParquetWriter | None = None
        self._part_rows = 0
        self._last_flush = time.monotonic()
        self._constants = {k: meta[k] for k in ("run_id", "numerics", "batch_size")}
        self._lock = self._take_lock()
        self._write_status("incomplete", None, {})

    def _take_lock(self) -> Any:
        path = self.run_dir / LOCK_NAME
        try:
            handle = open(path, "a")  # noqa: SIM115 - held for the writer's lifetime
        except OSError as exc:
            raise WriteError(f"cannot write in {str(self.run_dir)!r}: {exc.strerror}") from None
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return handle

    def _write_status(self, status: str, reason: str | None, summary: dict[str, Any]) -> None:
        info = {**self.meta, "status": status, "reason": reason, "summary": summary}
        try:
            write_json_atomic(self.run_dir / RUN_FILE, info)
        except OSError as exc:
            raise WriteError(
                f"cannot write {RUN_FILE} in {str(self.run_dir)!r}: {exc.strerror}"
            ) from None

    @property
    def _tmp_path(self) -> Path:
        return self.run_dir / f".{PART_FORMAT.format(self.parts)}.tmp"

    def write(self, block: Mapping[str, Any]) -> None:
        """Queue a block of whole steps; writes a row group or flushes when due. A block of
        :data:`USER_TRIGGER` is the user's trigger of a flight recorder, after its ``step``.
        A SIGTERM waits until the block is written (:func:`.flight.sigterm_held`)."""
        with sigterm_held():
            self._write(block)

    def _write(self, block: Mapping[str, Any]) -> None:
        fired = len(self.meta.get("triggers") or ())
        if USER_TRIGGER in block:
            kept = self.keeper.user(int(block["step"]), str(block[USER_TRIGGER]))
        else:
            kept = self.keeper.take(block, self.scalars.add(block))
        for b in kept:
            self._queue(b)
        if len(self.meta.get("triggers") or ()) > fired:  # _run.json says so at once
            self.flush()
            self._write_status("incomplete", None, {})
        if time.monotonic() - self._last_flush >= self._flush_every:
            self.flush()

    def end(self, status: str, reason: str | None) -> None:
        """The run ends: what a flight recorder keeps is written (once)."""
        for b in self.keeper.finish(status, reason):
            self._queue(b)
        self._signals.close()

    def _queue(self, block: dict[str, Any]) -> None:
        rows = len(block["step"])
        if self._starts and self._part is None and not self._pending:
            # A new part: its footer says where its first step starts from (given apart, or
            # the block's first row).
            start = block.get(START) or {c: block[c][0] for c in self._starts}
            self._first = before_entry(
                int(block["step"][0]), {c: _plain(start[c]) for c in self._starts}
            )
        if isinstance(block, Block):  # made into columns with the row group's other blocks
            self._pending.append(block)
        else:
            self._pending.append(self._batch(block, rows))
        self._pending_rows += rows
        if self._pending_rows >= self.row_group_rows:
            self._write_row_group()

    def _batch(self, block: dict[str, Any], rows: int) -> pa.RecordBatch:
        """The block's columns in the schema's order. A :class:`Block`'s value columns are
        slices of one Arrow array over its matrix (no copy, no conversion per column: a wide
        row has thousands)."""
        if not isinstance(block, Block):
            arrays = [self._array(block, f, rows) for f in self.schema]
        else:
            flat = pa.array(block.matrix.reshape(-1))
            rows_in = self._rows_in(block.row_of, flat.type)
            arrays = [
                self._array(block, f, rows) if r < 0 else flat.slice(r * rows, rows)
                for f, r in zip(self.schema, rows_in, strict=True)
            ]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _batches(self) -> list[pa.RecordBatch]:
        """The pending rows as record batches: each run of blocks of one layout made one
        block first (slicing a wide row's thousands of columns costs per block, not per row)."""
        out: list[pa.RecordBatch] = []
        alike: list[Block] = []
        for item in [*self._pending, None]:
            if isinstance(item, Block) and (not alike or _same_index(item.row_of, alike[0].row_of)):
                alike.append(item)
                continue
            if alike:
                merged = self._merged(alike)
                out.append(self._batch(merged, merged.matrix.shape[1]))
                alike = []
            if isinstance(item, Block):
                alike.append(item)
            elif item is not None:
                out.append(item)
        return out

    def _merged(self, blocks: list[Block]) -> Block:
        """Blocks of one layout as one (their matrices side by side)."""
        if len(blocks) == 1:
            return blocks[0]
        first = blocks[0]
        keys = {
            k: np.concatenate([b[k] for b in blocks])
            for k in self.schema.names if k in first and k not in first.row_of
        }  # fmt: skip
        return Block(keys, np.concatenate([b.matrix for b in blocks], axis=1), first.row_of)

    def _rows_in(self, row_of: dict[str, int], kind: pa.DataType) -> list[int]:
        """Each schema column's row in a block's matrix (-1: not there, or not of its type),
        found once for a run's blocks (each buffer's ``row_of`` is alike)."""
        if self._matrix_rows is None or not _same_index(self._matrix_rows[0], row_of):
            rows = [row_of.get(f.name, -1) if f.type == kind else -1 for f in self.schema]
            self._matrix_rows = (row_of, rows)
        return self._matrix_rows[1]

    def _array(self, block: dict[str, Any], field: pa.Field, rows: int) -> pa.Array:
        if field.name in block:
            return pa.array(block[field.name], field.type)
        return self._constant(field.name, rows)

    def _constant(self, name: str, rows: int) -> pa.Array:
        """The run-wide columns (run_id, numerics, batch_size), repeated on every row."""
        if name not in self._constants:
            raise KeyError(f"block lacks column {name!r}")
        field = self.schema.field(name)
        return pa.repeat(pa.scalar(self._constants[name], field.type), rows)

    def _write_row_group(self) -> None:
        if not self._pending_rows:
            return
        table = pa.Table.from_batches(self._batches(), schema=self.schema)
        self._pending, self._pending_rows = [], 0
        try:
            if self._part is None:
                schema = self.schema.with_metadata({**(self.schema.metadata or {}), **self._first})
                self._part = pq.ParquetWriter(self._tmp_path, schema, **self.options)
            self._part.write_table(table, row_group_size=max(table.num_rows, 1))
        except OSError as exc:
            self._abandon_part()
            raise WriteError(self._lost_message(exc)) from None
        self._part_rows += table.num_rows

    def flush(self) -> None:
        """Make every queued row readable: close the part in progress and rename it in place."""
        began = time.monotonic()
        self._flush_scalars()
        self._write_row_group()
        if self._part is not None:
            self._close_part()
        self._last_flush = time.monotonic()
        if len(self.schema) >= WIDE_COLUMNS:
            took = self._last_flush - began
            self._flush_every = max(self.flush_seconds, FLUSH_COST_RATIO * took)

    def _close_part(self) -> None:
        assert self._part is not None
        tmp = self._tmp_path
        try:
            self._part.close()
            self._part = None
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.run_dir / PART_FORMAT.format(self.parts))
        except OSError as exc:
            self._abandon_part()
            raise WriteError(self._lost_message(exc)) from None
        self.parts += 1
        self.rows_flushed += self._part_rows
        self._part_rows = 0

    def _flush_scalars(self) -> None:
        try:
            self.scalars.flush()
        except OSError as exc:
            raise WriteError(self._lost_message(exc)) from None

    def _abandon_part(self) -> None:
        """Drop the part in progress (it is not valid Parquet yet); flushed parts stay."""
        if self._part is not None:
            with contextlib.suppress(Exception):
                self._part.close()
            self._part = None
        with contextlib.suppress(OSError):
            self._tmp_path.unlink()
        self._part_rows = 0

    def _lost_message(self, exc: OSError) -> str:
        return (
            f"cannot write trace {str(self.run_dir)!r}: {exc.strerror or exc}; the "
            f"{self.rows_flushed} rows flushed before are kept and the run is marked incomplete: "
            f"make room, then continue it with 'steptrace record --resume {self.run_dir}'"
        )

    def close(
        self,
        status: str = "complete",
        reason: str | None = None,
        summary: dict[str, Any] | None = None,
    ) -> None:
        """Flush, then record the final status. ``incomplete`` runs keep every flushed row."""
        try:
            try:
                self.end(status, reason)
            except WriteError:
                if status == "complete":
                    raise
            if status == "complete":
                self.flush()
            else:
                with contextlib.suppress(WriteError):
                    self.flush()
            self._write_status(status, reason, {**(summary or {}), "rows": self.rows_flushed})
        finally:
            self._abandon_part()
            self._lock.close()


def _same_index(a: dict[str, int], b: dict[str, int]) -> bool:
    """Whether two blocks' matrices hold the same columns in the same rows (the same index
    object, most often: comparing a wide row's thousands of names costs)."""
    return a is b or a == b
