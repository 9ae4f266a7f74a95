"""A learned plan written into a closed run: the metadata of every part rewritten under the
plan the run followed, the data's hash computed, and the rows renumbered as one epoch of the
data inputs when they follow no epoch plan.

Rows that keep their numbers keep their bytes: only the part's footer is written again (its
data pages copied as they are, then the footer with the final metadata), which costs a wide
row's part a fraction of reading and encoding it again. Rows renumbered are rewritten, one row group
in memory at a time (Parquet cannot replace two columns of a file without writing the file
again). Each part is replaced atomically (a first pass hashes the inputs in the
order they came, for one epoch of them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .placement import DataInfo, Final, Learned, RowNumbers
from .schema import METADATA_KEY, Tensor, after_columns
from .summary import RunSummary, SummaryTracker
from .writer import parquet_options

__all__ = ["settle"]


def settle(
    path: Path,
    meta: dict[str, Any],
    final: Final,
    placer: Learned,
    info: DataInfo,
    tensors: Sequence[Tensor],
    numbers: RowNumbers,
) -> tuple[dict[str, Any], RunSummary]:
    """The run in ``path`` under ``meta`` (its final plan filled in): every part rewritten,
    the metadata with the data's hash, and the summary under that plan. A stream's rows are
    numbered by ``numbers``: each row's place among all the rows the run was given, those of
    the steps it does not hold included."""
    tracker = SummaryTracker(int(meta["steps_per_epoch"]))
    data_hash = hashlib.sha256(_names_bytes(info))
    if not final.stream and info.dataset is None:
        for row in placer.rows_in_order():
            _hash_row(data_hash, row)
    parts = sorted(path.glob("part-*.parquet"))
    after = after_columns(tensors)
    if final.stream:
        # The data's hash is over the inputs in the order they came: a first pass.
        data_columns = [c for t in tensors if t.name in ("x", "y") for c in t.columns()]
        for part in parts:
            with pq.ParquetFile(part) as f:  # (a wide row's part costs ~0.1 s an opening)
                table = f.read(columns=data_columns)
            values = np.column_stack([table.column(c).to_numpy() for c in data_columns])
            for row in values.tolist():
                _hash_row(data_hash, row)
    if final.stream or info.dataset is None:  # else: the dataset's own, exact hash
        meta = {**meta, "dataset": {**meta["dataset"], "sha256": data_hash.hexdigest()}}
    for part in parts:
        # Each part opened once here (an opening parses the footer of every column).
        # One row group in memory at a time (a wide row's part holds thousands of rows).
        with pq.ParquetFile(part) as source:
            renumber = final.stream and not _numbered_as_stream(source, numbers)
            kept = None if renumber else ["step", "loss", *after]
            tmp = part.with_name(f".{part.name}.tmp")
            with _renumbered(tmp, source, meta) if renumber else contextlib.nullcontext() as out:
                carry = (-1, 0)  # the last step of the row group before, and its rows there
                for i in range(source.num_row_groups):
                    table = source.read_row_group(i, columns=kept)
                    block = {c: table.column(c).to_numpy() for c in ("step", "loss")}
                    if out is not None:
                        table = _as_stream(table, numbers.of_rows(block["step"], carry))
                        out.write_table(table, row_group_size=max(table.num_rows, 1))
                    carry = _carried(block["step"], carry)
                    tracker.update(block, [table.column(c).to_numpy() for c in after])
        if renumber:
            _replace(tmp, part)
        else:  # the rows stay as they are: the footer replaced
            _refooter(part, source.metadata, meta)
    return meta, tracker.result()


def _names_bytes(info: DataInfo) -> bytes:
    return "\x1f".join((*info.features, *info.targets)).encode()


def _exact_text(v: float) -> str:
    """``str(Fraction(v))``, faster: the exact value of a float as a rational."""
    n, d = float(v).as_integer_ratio()
    return str(n) if d == 1 else f"{n}/{d}"


def _hash_row(h: Any, row: Sequence[float]) -> None:
    """One row into a dataset's hash, as :attr:`steptrace.Dataset.sha256` adds it."""
    h.update(("\x1e" + "\x1f".join(_exact_text(v) for v in row)).encode())


def _carried(steps: np.ndarray[Any, Any], before: tuple[int, int]) -> tuple[int, int]:
    """The last step of a row group and its rows in it (and in the ones before)."""
    if not len(steps):
        return before
    last = int(steps[-1])
    rows = int(np.count_nonzero(steps == last))
    return last, rows + (before[1] if rows == len(steps) and before[0] == last else 0)


def _numbered_as_stream(part: pq.ParquetFile, numbers: RowNumbers) -> bool:
    """Whether a part's rows are numbered as one epoch of inputs already (epoch 0, sample = the
    input's number among all the run's): a first epoch visited in order is."""
    keys = part.read(columns=["step", "epoch", "sample"])
    expected = numbers.of_rows(keys.column("step").to_numpy())
    return bool(
        (keys.column("epoch").to_numpy() == 0).all()
        and np.array_equal(keys.column("sample").to_numpy(), expected)
    )


def _as_stream(table: pa.Table, numbers: np.ndarray[Any, Any]) -> pa.Table:
    """Rows renumbered as one epoch of data inputs: epoch 0, sample = the input's number."""
    epoch = pa.array(np.zeros(table.num_rows, dtype=np.int64))
    sample = pa.array(np.asarray(numbers, dtype=np.int64))
    table = table.set_column(table.schema.get_field_index("epoch"), table.field("epoch"), epoch)
    return table.set_column(table.schema.get_field_index("sample"), table.field("sample"), sample)


def _renumbered(tmp: Path, source: pq.ParquetFile, meta: dict[str, Any]) -> pq.ParquetWriter:
    """A part written again, row group by row group, under ``meta`` (its other keys kept)."""
    schema = source.schema_arrow.with_metadata(_pairs(source.metadata, meta))
    return pq.ParquetWriter(tmp, schema, **parquet_options(schema))


def _pairs(footer: pq.FileMetaData, meta: dict[str, Any]) -> dict[bytes, bytes]:
    """A part's key-value metadata with ``meta`` as the run's (pyarrow's schema left out: a
    writer makes it)."""
    pairs = {k: v for k, v in (footer.metadata or {}).items() if k != b"ARROW:schema"}
    pairs[METADATA_KEY.encode()] = json.dumps(meta, sort_keys=True).encode()
    return pairs


#: A Parquet file ends with its footer, the footer's length (4 bytes, little-endian) and PAR1.
TAIL = 8


def _refooter(part: Path, old: pq.FileMetaData, meta: dict[str, Any]) -> None:
    """Replace a part's run metadata (its footer ``old``), its rows untouched: its bytes up to
    the footer (data pages, page indexes) copied, then a footer that differs only in the
    metadata's ``steptrace`` key (``steptrace.before`` kept), atomically (aside, fsync,
    rename)."""
    pairs = _pairs(old, meta)
    # The footer of a file of no rows under the new metadata, as its writer made it (parsing
    # it again costs a wide row's thousands of columns twice), then the part's row groups.
    empty = pq.ParquetWriter(pa.BufferOutputStream(), old.schema.to_arrow_schema()
                             .with_metadata(pairs))  # fmt: skip
    empty.close()
    footer = empty.writer.metadata
    footer.append_row_groups(old)
    tail = pa.BufferOutputStream()
    footer.write_metadata_file(tail)  # PAR1, the footer, its length, PAR1
    tmp = part.with_name(f".{part.name}.tmp")
    with open(part, "rb") as src, open(tmp, "wb") as dst:
        size = src.seek(0, os.SEEK_END)
        src.seek(size - TAIL)
        _copy(src, dst, size - TAIL - int.from_bytes(src.read(4), "little"))
        dst.seek(0, os.SEEK_END)
        dst.write(tail.getvalue().to_pybytes()[4:])
    _replace(tmp, part)


def _copy(src: Any, dst: Any, length: int) -> None:
    """The first ``length`` bytes of ``src`` into ``dst`` (by the kernel where it can)."""
    done = 0
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or not this file system
        while done < length:
            copied = os.copy_file_range(src.fileno(), dst.fileno(), length - done, done, done)
            if not copied:
                break
            done += copied
    src.seek(done)
    dst.seek(done)
    while done < length:
        data = src.read(min(1 << 22, length - done))
        if not data:
            raise OSError(f"{src.name}: shorter than its footer says")
        dst.write(data)
        done += len(data)


def _replace(tmp: Path, part: Path) -> None:
    """``tmp`` in place of ``part``, once on disk (fsync, rename)."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, part)
