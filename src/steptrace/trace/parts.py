"""What the part files' footers say, read once per part, for every reader of traces.

A recorder adds a part file at least once a second and never changes one once it is in place
(each is written under a hidden name, then renamed). So what a part's footer says — the steps
each row group holds, its rows, its columns — is read once and kept here, keyed by the file's
size and modification time: looking at a growing run again costs a ``stat`` per part and the
footers of the new parts only. The footers themselves are not kept (a few hundred kB each in
memory), only what readers use: a run of thousands of parts opens in flat memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import TraceError
from .rebuild import BEFORE_KEY, read_before

__all__ = ["PartInfo", "part_info", "step_statistics"]


@dataclass(frozen=True)
class PartInfo:
    """What one part file's footer says: each row group's (first, last) step (None when a
    row group has no statistics), its rows, its columns, and the values its first step starts
    from (:data:`~steptrace.trace.rebuild.BEFORE_KEY`; kept apart from the schema, which the
    parts of a run then share)."""

    spans: list[tuple[int, int]] | None
    rows: int
    schema: pa.Schema
    before: tuple[int, dict[str, Any]] | None = None


#: Part files whose footers are remembered (each entry is a few kB at most).
MAX_PARTS = 100_000

_parts: OrderedDict[Path, tuple[tuple[int, int], PartInfo]] = OrderedDict()
_schemas: list[pa.Schema] = []  # one object per distinct schema: the parts of a run share it
_lock = threading.Lock()


def _shared(schema: pa.Schema) -> pa.Schema:
    for known in _schemas[-8:]:
        if known.equals(schema, check_metadata=True):
            return known
    _schemas.append(schema)
    del _schemas[:-64]
    return schema


def part_info(path: Path, unreadable: str = "not a readable Parquet file") -> PartInfo:
    """A part's :class:`PartInfo`, from its footer, read once while the file stays the same.

    Raises :class:`TraceError` (``<path>: <unreadable> (<why>)``) if the file is gone or is
    not readable Parquet."""
    try:
        st = path.stat()
        key = (st.st_size, st.st_mtime_ns)
        with _lock:
            hit = _parts.get(path)
            if hit is not None and hit[0] == key:
                _parts.move_to_end(path)
                return hit[1]
        footer = pq.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        raise TraceError(f"{path}: {unreadable} ({exc})") from None
    schema = footer.schema.to_arrow_schema()
    metadata = dict(schema.metadata or {})
    before = read_before(metadata)
    metadata.pop(BEFORE_KEY.encode(), None)
    schema = schema.with_metadata(metadata)
    spans = step_statistics(footer)
    with _lock:
        info = PartInfo(spans, footer.num_rows, _shared(schema), before)
        _parts[path] = (key, info)
        while len(_parts) > MAX_PARTS:
            _parts.popitem(last=False)
    return info


def step_statistics(footer: pq.FileMetaData) -> list[tuple[int, int]] | None:
    """Each non-empty row group's (min, max) step; None if one has no statistics for it."""
    names = footer.schema.names
    spans = []
    for g in range(footer.num_row_groups):
        group = footer.row_group(g)
        if not group.num_rows:
            continue
        stats = group.column(names.index("step")).statistics if "step" in names else None
        if stats is None or not stats.has_min_max:
            return None
        spans.append((int(stats.min), int(stats.max)))
    return spans
