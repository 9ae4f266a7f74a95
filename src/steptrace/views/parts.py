"""What the part files' footers say, read once per part.

A recorder adds a part file at least once a second and never changes one once it is in place
(each is written under a hidden name, then renamed). So what a part's footer says — the steps
each row group holds, its rows, its columns — is read once and kept here, keyed by the file's
size and modification time: looking at a growing run again costs a ``stat`` per part and the
footers of the new parts only. The footers themselves are not kept (a few hundred kB each in
memory), only what the views use.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import TraceError
from ..trace.reader import Trace, _step_statistics

__all__ = ["PartInfo", "last_on_disk", "part_info", "with_part_infos"]


@dataclass(frozen=True)
class PartInfo:
    """What one part file's footer says: each row group's (first, last) step (None when a
    row group has no statistics), its rows and its columns."""

    spans: list[tuple[int, int]] | None
    rows: int
    schema: pa.Schema


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


def part_info(path: Path) -> PartInfo:
    """A part's :class:`PartInfo`, from its footer, read once while the file stays the same.

    Raises :class:`TraceError` if the file is gone or is not readable Parquet."""
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
        raise TraceError(f"{path}: not a readable Parquet file ({exc})") from None
    info = PartInfo(_step_statistics(footer), footer.num_rows, footer.schema.to_arrow_schema())
    with _lock:
        info = PartInfo(info.spans, info.rows, _shared(info.schema))
        _parts[path] = (key, info)
        while len(_parts) > MAX_PARTS:
            _parts.popitem(last=False)
    return info


def with_part_infos(trace: Trace) -> Trace:
    """``trace``, told what its parts' footers say from :func:`part_info`: choosing the parts
    that hold a step, and reading them, opens no footer already read for another snapshot of
    the run. Returns the same object."""
    infos = [part_info(f) for f in trace.files]
    # Trace works these out from the footers on first use (cached properties): give them.
    trace.__dict__["_step_spans"] = [info.spans for info in infos]
    if infos:
        trace.__dict__["_schema"] = infos[0].schema
    return trace


def last_on_disk(trace: Trace) -> int:
    """The last step in the run's parts (-1 if none), from their footers' statistics; a part
    without them has its ``step`` column read."""
    best = -1
    for f in trace.files:
        info = part_info(f)
        if info.spans is None:
            try:
                steps = pq.read_table(f, columns=["step"])["step"]
            except (OSError, pa.ArrowException) as exc:
                raise TraceError(f"{f}: not a readable Parquet file ({exc})") from None
            if len(steps):
                best = max(best, int(pc.max(steps).as_py()))
        elif info.spans:
            best = max(best, max(last for _, last in info.spans))
    return best
