"""Where a run diverges, by :mod:`steptrace.trace.summary`'s rule, read by streaming the few columns
the rule needs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import TraceError
from ..trace.reader import Trace
from ..trace.schema import after_columns
from ..trace.summary import SummaryTracker
from .folder import steps_per_epoch


@dataclass(frozen=True)
class Divergence:
    """The first step where a run diverges, and why."""

    step: int
    why: str

    def __str__(self) -> str:
        return f"diverges at step {self.step}: {self.why}"


def _step_blocks(trace: Trace, columns: Sequence[str]) -> Iterator[dict[str, Any]]:
    """The run's ``columns`` as numpy blocks that never split a step (batch by batch)."""
    pending: dict[str, Any] | None = None
    for batch in trace.iter_batches(columns):
        block = {c: batch.column(c).to_numpy(zero_copy_only=False) for c in columns}
        if pending is not None:
            block = {c: np.concatenate([pending[c], block[c]]) for c in columns}
        if not len(block["step"]):
            continue
        # Hold back the last step's rows: the next batch may hold more of them.
        whole = block["step"] != block["step"][-1]
        pending = {c: v[~whole] for c, v in block.items()}
        if whole.any():
            yield {c: v[whole] for c, v in block.items()}
    if pending is not None and len(pending["step"]):
        yield pending


def first_divergence(trace: Trace) -> Divergence | None:
    """The first step where the run diverges by :mod:`steptrace.trace.summary`'s rule (batch loss or
    new weights not finite, or loss over ``BLOWUP_FACTOR`` × the first epoch's largest), or
    ``None``. Streams the step, the loss and every parameter after the step; the whole run
    is never in memory.

    >>> first_divergence(open_trace("traces/seed-float64-lr1e3"))  # doctest: +SKIP
    Divergence(step=14, why='loss is not finite')
    """
    tracker = SummaryTracker(steps_per_epoch(trace))
    w_cols = after_columns(trace.tensors)
    try:
        for block in _step_blocks(trace, ["step", "loss", *w_cols]):
            tracker.update(block, [block[c] for c in w_cols])
            if tracker.diverged_at is not None:
                break
    except (OSError, pa.ArrowException) as exc:
        raise TraceError(f"{trace.path}: unreadable part file ({exc})") from None
    if tracker.diverged_at is None:
        return None
    return Divergence(tracker.diverged_at, tracker.diverged_why or "diverged")


def run_divergence(trace: Trace) -> Divergence | None:
    """:func:`first_divergence`, from what the recorder stored in ``_run.json`` when the run
    ended (no rows read), else streamed from its rows.

    >>> run_divergence(open_trace("traces/seed-float64-lr1e3"))  # doctest: +SKIP
    Divergence(step=14, why='loss is not finite')
    """
    stored = trace.summary
    if stored is None or "diverged_at" not in stored:
        return first_divergence(trace)
    at = stored["diverged_at"]
    return None if at is None else Divergence(int(at), str(stored.get("diverged_why") or ""))
