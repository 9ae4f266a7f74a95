"""What the row checks share across a run's chunks: its settings, which part file holds a row,
and each sample's data as first seen (a sample must come back unchanged)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from .layout import RunSettings

__all__ = ["MEMORY_MAX_ROWS", "Context", "Memory"]

#: Samples' data are remembered (to check they come back unchanged) up to this dataset size.
MEMORY_MAX_ROWS = 1_000_000


class Memory:
    """Each sample's data (x…, y…) as first seen, to check it is the same when it comes back."""

    def __init__(self, rows: int, width: int) -> None:
        self.enabled = rows <= MEMORY_MAX_ROWS
        size = rows if self.enabled else 0
        self.seen = np.zeros(size, dtype=bool)
        self.values = np.zeros((size, width), dtype=np.float64)
        self.exact: dict[int, tuple[Fraction, ...]] = {}

    def get(self, sample: int) -> tuple[Any, ...] | None:
        if not self.enabled or not 0 <= sample < len(self.seen) or not self.seen[sample]:
            return None
        if sample in self.exact:
            return self.exact[sample]
        return tuple(float(v) for v in self.values[sample])

    def put(self, sample: int, values: tuple[Any, ...]) -> None:
        if not self.enabled or not 0 <= sample < len(self.seen) or self.seen[sample]:
            return
        self.seen[sample] = True
        if isinstance(values[0], Fraction):
            self.exact[sample] = values
        else:
            self.values[sample] = [float(v) for v in values]


@dataclass
class Context:
    """What the row checks need from the whole trace."""

    run: RunSettings
    file_of: Callable[[int], str | None]
    memory: Memory = field(init=False)

    def __post_init__(self) -> None:
        self.memory = Memory(self.run.rows, len(self.run.layout.data))
