"""The last step of a run on disk, from what its parts' footers say (read once per part
by :mod:`steptrace.trace.parts`): a growing run is looked at again for the cost of a ``stat``
per part and the footers of its new parts.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import TraceError
from ..trace.parts import part_info
from ..trace.reader import Trace

__all__ = ["last_on_disk"]


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
