"""What a run came to: final loss, and whether (and where) it diverged.

A run *diverges* at the first step whose batch loss or new weights are not finite (overflow to
inf, then NaN), or whose batch loss exceeds :data:`BLOWUP_FACTOR` times the largest batch loss
of the first epoch. Divergence is data, not an error: it is recorded faithfully and reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["BLOWUP_FACTOR", "RunSummary", "SummaryTracker", "batch_losses"]

BLOWUP_FACTOR = 1e6


@dataclass(frozen=True)
class RunSummary:
    rows: int
    steps: int
    final_loss: float | None
    min_loss: float | None
    min_loss_step: int | None
    diverged_at: int | None
    diverged_why: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def group_starts(keys: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    """Index of the first row of each run of equal ``keys`` (rows grouped by step or epoch)."""
    if not len(keys):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.diff(keys, prepend=keys[0] - 1))


def group_means(values: npt.NDArray[Any], starts: npt.NDArray[np.int64]) -> npt.NDArray[Any]:
    """Mean of each group of consecutive values (NaN and inf propagate, never skipped)."""
    if not len(starts):
        return np.zeros(0)
    counts = np.diff(np.append(starts, len(values)))
    with np.errstate(all="ignore"):
        means: npt.NDArray[Any] = np.add.reduceat(values.astype(np.float64), starts) / counts
    return means


def batch_losses(
    step: npt.NDArray[np.int64], loss: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Each step's batch loss (the mean of its samples' losses), for rows grouped by step."""
    starts = group_starts(step)
    return step[starts], group_means(loss, starts)


class SummaryTracker:
    """Builds a :class:`RunSummary` from the blocks of a run, as they are recorded."""

    def __init__(self, steps_per_epoch: int) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.rows = 0
        self.steps = 0
        self.last_step: int | None = None
        self.final_loss: float | None = None
        self.min_loss: float | None = None
        self.min_loss_step: int | None = None
        self.reference = 0.0  # largest batch loss of the first epoch
        self.diverged_at: int | None = None
        self.diverged_why: str | None = None

    def update(self, block: Mapping[str, Any], w_after: Sequence[npt.NDArray[Any]]) -> None:
        """Take a block's ``step`` and ``loss`` columns and its new weights, a column per
        component (``w_after_1`` …; none when a table lacks them)."""
        steps, losses = batch_losses(block["step"], block["loss"])
        self.rows += len(block["step"])
        self.steps += len(steps)
        if not len(steps):
            return
        self.last_step = int(steps[-1])
        self.final_loss = float(losses[-1])
        finite = np.isfinite(losses)
        if finite.any():
            i = int(np.argmin(np.where(finite, losses, np.inf)))
            if self.min_loss is None or losses[i] < self.min_loss:
                self.min_loss, self.min_loss_step = float(losses[i]), int(steps[i])
        first_epoch = steps < self.steps_per_epoch
        if first_epoch.any() and finite[first_epoch].any():
            self.reference = max(self.reference, float(np.max(losses[first_epoch & finite])))
        if self.diverged_at is not None:
            return
        row_steps = block["step"]
        bad_w = np.zeros(len(row_steps), dtype=bool)
        for column in w_after:
            bad_w |= ~np.isfinite(column)
        candidates = []
        if (~finite).any():
            candidates.append((int(steps[~finite][0]), "loss is not finite"))
        if bad_w.any():
            candidates.append((int(row_steps[bad_w][0]), "weights are not finite"))
        if self.reference > 0:
            blown = (~first_epoch) & finite & (losses > BLOWUP_FACTOR * self.reference)
            if blown.any():
                candidates.append(
                    (int(steps[blown][0]), f"loss over {BLOWUP_FACTOR:g}× the first epoch's")
                )
        if candidates:
            self.diverged_at, self.diverged_why = min(candidates)

    def result(self) -> RunSummary:
        return RunSummary(
            self.rows, self.steps, self.final_loss, self.min_loss, self.min_loss_step,
            self.diverged_at, self.diverged_why,
        )  # fmt: skip
