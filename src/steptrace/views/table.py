"""A table the views hand to the pages: its cells as display text, and which cells changed
since the previous step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import pandas as pd

__all__ = ["Table", "table"]


@dataclass(frozen=True)
class Table:
    """A table to show: its cells as text, and which cells changed since the previous step.

    Kept as lists (``headers``, ``columns`` of cells, their ``flags``, the row ``index``); the
    DataFrames are made when first asked for."""

    headers: tuple[str, ...]
    columns: tuple[tuple[str, ...], ...]  # one tuple of cells per header
    flags: tuple[tuple[bool, ...], ...]  # whether each cell changed, as ``columns``
    index: tuple[str, ...] | None = None  # row labels, if the rows are named

    @cached_property
    def frame(self) -> pd.DataFrame:
        """The cells, a column per header."""
        return pd.DataFrame(dict(zip(self.headers, self.columns, strict=True)),
                            index=self._index(), columns=list(self.headers))  # fmt: skip

    @cached_property
    def changed(self) -> pd.DataFrame:
        """Booleans, the frame's shape: the cells that changed since the previous step."""
        return pd.DataFrame(dict(zip(self.headers, self.flags, strict=True)),
                            index=self._index(), columns=list(self.headers))  # fmt: skip

    def _index(self) -> list[str] | None:
        return None if self.index is None else list(self.index)

    def rows(self) -> list[tuple[str, ...]]:
        """The cells row by row."""
        return list(zip(*self.columns, strict=True)) if self.columns else []


def table(columns: Sequence[tuple[str, list[str], list[bool]]], index: list[str] | None = None
           ) -> Table:  # fmt: skip
    """A :class:`Table` from ``(header, cells, changed)`` column by column."""
    return Table(
        tuple(h for h, _, _ in columns),
        tuple(tuple(cells) for _, cells, _ in columns),
        tuple(tuple(flags) for _, _, flags in columns),
        None if index is None else tuple(index),
    )
