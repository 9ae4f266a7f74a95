"""Filters on a run's rows, and what the part files' footers let a read skip.

A filter is pyarrow's: an expression, or a list of ``(column, op, value)`` tuples (a list of such
lists is their OR). A window of steps ``lo <= step < hi`` is one more condition, and a part
whose row groups' step statistics hold none of its steps is never opened.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import TraceError

__all__ = [
    "Filters",
    "StepRange",
    "conjunction",
    "dnf",
    "filter_expression",
    "may_hold",
    "step_expression",
]


Filters: TypeAlias = pc.Expression | Sequence[tuple[str, str, Any]] | None
"""pyarrow's filters: an expression, or ``(column, op, value)`` tuples (or lists of them)."""

StepRange: TypeAlias = tuple[int | None, int | None]
"""Steps ``lo <= step < hi``; None leaves that end open."""


def step_expression(lo: int | None, hi: int | None) -> pc.Expression | None:
    """``lo <= step < hi`` as an expression (None if both ends are open)."""
    low = None if lo is None else pc.field("step") >= lo
    high = None if hi is None else pc.field("step") < hi
    return conjunction(low, high)


def conjunction(a: pc.Expression | None, b: pc.Expression | None) -> pc.Expression | None:
    """``a & b``, where None stands for no condition."""
    return b if a is None else a if b is None else a & b


def may_hold(spans: list[tuple[int, int]] | None, lo: int | None, hi: int | None) -> bool:
    """Whether a part whose row groups span ``spans`` may hold a step of ``[lo, hi)``."""
    if spans is None:
        return True
    return any((lo is None or last >= lo) and (hi is None or first < hi) for first, last in spans)


def filter_expression(filters: Filters) -> pc.Expression | None:
    """``filters`` as one expression; :class:`TraceError` for a list pyarrow cannot read."""
    if filters is None or isinstance(filters, pc.Expression):
        return filters
    try:
        return pq.filters_to_expression(list(filters))
    except (TypeError, ValueError) as exc:
        raise TraceError(f"invalid filters {filters!r}: {exc}") from None


def dnf(filters: Sequence[Any]) -> list[list[tuple[str, str, Any]]]:
    """pyarrow's filter lists as a list of AND-lists: ``[(…), (…)]`` or ``[[(…)], [(…)]]``."""
    items = list(filters)
    if not items:
        return [[]]
    nested = [isinstance(item, list) for item in items]
    if all(nested):
        groups = items
    elif not any(nested):
        groups = [items]
    else:
        raise TraceError(f"invalid filters {filters!r}: mixes tuples and lists of tuples")
    out = []
    for group in groups:
        conjuncts = []
        for item in group:
            if not (isinstance(item, tuple) and len(item) == 3 and isinstance(item[0], str)):
                raise TraceError(
                    f"invalid filters {filters!r}: each condition is a (column, op, value) tuple"
                )
            conjuncts.append(item)
        out.append(conjuncts)
    return out
