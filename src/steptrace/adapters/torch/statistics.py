"""A batch norm's running statistics before and after each step's forward pass, copied into
the per-step rows of :mod:`.buffers` (mean, variance and batches counted, in the run's dtype).

A step the run does not hold goes without the ones before when nothing changed them since the
step before's after (their versions say so); if it is captured whole after all (its checks
fail), they are copied from that row: what they were, since nothing changed them.
"""

from __future__ import annotations

import torch
from torch import nn

from .passes import BN_STATE

__all__ = ["Statistics"]


class Statistics:
    """The statistics' copies into ``steps`` (one row per step, the step's own at ``s + 1``),
    whose fields ``bn{k}_before`` and ``bn{k}_after`` ``fields`` places."""

    def __init__(self, steps: torch.Tensor, fields: dict[str, slice]) -> None:
        self.steps, self.fields = steps, fields
        self.rows: dict[str, list[torch.Tensor]] = {}  # each row's view, made at the first use
        self.versions: dict[int, list[int]] = {}  # each batch norm's, after the last step
        self.later: list[int] = []  # the batch norms whose ones before this step wait

    def copy(self, k: int, module: nn.Module, when: str, s: int, held: bool) -> None:
        """Batch norm layer ``k``'s statistics ``when`` ("before" or "after") its pass, into
        row ``s`` (the step's); ``held``: whether the step may be held."""
        buffers = module._buffers
        present = [b for b in map(buffers.get, BN_STATE) if isinstance(b, torch.Tensor)]
        versions = [b._version for b in present]
        if when == "before" and not held and self.versions.get(k) == versions:
            self.later.append(k)
            return
        rows = self._rows(f"bn{k}_{when}")
        if rows is not None:  # (a batch norm keeping no statistics has no row)
            # One cat of the buffers as they are (mean, variance, count) into the step's row:
            # in the run's dtype, the count too, as a copy_ of each converts it.
            torch.cat([b if b.dim() == 1 else b.view(-1) for b in present], out=rows[s])
        if when == "after":
            self.versions[k] = versions

    def before(self, s: int) -> None:
        """Row ``s``'s statistics before its pass for the batch norms that left them (the
        step is captured whole after all): the row before's after, unchanged since."""
        for k in self.later:
            before, after = self._rows(f"bn{k}_before"), self._rows(f"bn{k}_after")
            if before is not None and after is not None:
                before[s].copy_(after[s - 1])

    def step_done(self) -> None:
        self.later = []

    def _rows(self, name: str) -> list[torch.Tensor] | None:
        rows = self.rows.get(name)
        if rows is None and name in self.fields:
            where = self.fields[name]
            rows = self.rows[name] = [row[where] for row in self.steps]
        return rows
