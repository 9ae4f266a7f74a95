"""A learned plan written into a closed run: the metadata of every part rewritten under the
plan the run followed, the data's hash computed, and the rows renumbered as one epoch of the
data inputs when they follow no epoch plan.

One part in memory at a time: each is summarised under the final plan and replaced atomically
(a first pass hashes the inputs in the order they came, for one epoch of them).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .placement import DataInfo, Final, Learned
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
) -> tuple[dict[str, Any], RunSummary]:
    """The run in ``path`` under ``meta`` (its final plan filled in): every part rewritten,
    the metadata with the data's hash, and the summary under that plan."""
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
            table = pq.read_table(part, columns=data_columns)
            values = np.column_stack([table.column(c).to_numpy() for c in data_columns])
            for row in values.tolist():
                _hash_row(data_hash, row)
    if final.stream or info.dataset is None:  # else: the dataset's own, exact hash
        meta = {**meta, "dataset": {**meta["dataset"], "sha256": data_hash.hexdigest()}}
    offset = 0
    for part in parts:
        table = pq.read_table(part)
        if final.stream:
            table = _as_stream(table, offset)
        offset += table.num_rows
        block = {c: table.column(c).to_numpy() for c in ("step", "loss")}
        tracker.update(block, [table.column(c).to_numpy() for c in after])
        _rewrite(part, table, meta)
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


def _as_stream(table: pa.Table, first_row: int) -> pa.Table:
    """Rows renumbered as one epoch of data inputs: epoch 0, sample = the input's number."""
    rows = table.num_rows
    epoch = pa.array(np.zeros(rows, dtype=np.int64))
    sample = pa.array(np.arange(first_row, first_row + rows, dtype=np.int64))
    table = table.set_column(table.schema.get_field_index("epoch"), table.field("epoch"), epoch)
    return table.set_column(table.schema.get_field_index("sample"), table.field("sample"), sample)


def _rewrite(part: Path, table: pa.Table, meta: dict[str, Any]) -> None:
    """Replace a part by ``table`` under ``meta``, atomically (aside, fsync, rename)."""
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True)})
    tmp = part.with_name(f".{part.name}.tmp")
    pq.write_table(table, tmp, row_group_size=65_536, **parquet_options(table.schema))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, part)
