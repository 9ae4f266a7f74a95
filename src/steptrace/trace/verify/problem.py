"""What verify reports, and when a recorded value is the value it should be.

A :class:`Problem` is the first thing in a trace that does not hold; :class:`Found` carries it
out of the nested checks. :func:`same` and :func:`differ` are the one notion of equality every
check uses: rationals by value, floats bit for bit (NaN equal to NaN), or within a tolerance
for a run another framework recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from ...numerics import Numerics

__all__ = ["Array", "Found", "Problem", "Tol", "differ", "make_float", "same", "show"]

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class Problem:
    """The first thing in a trace that does not hold.

    ``columns`` names the value(s) found wrong: one column, or a pair of columns that only
    differ from each other when nothing else tells which one is wrong (see
    :mod:`steptrace.trace.verify`).
    Metadata problems name the key (``lr``, ``dataset.rows``, ``summary.final_loss``) and the
    file holding it.
    """

    message: str
    file: str | None = None
    columns: tuple[str, ...] = ()
    step: int | None = None
    sample: int | None = None
    row: int | None = None
    recorded: str | None = None
    expected: str | None = None

    @property
    def column(self) -> str | None:
        return self.columns[0] if self.columns else None

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.step is not None:
            where.append(f"step {self.step}")
        if self.sample is not None:
            where.append(f"sample {self.sample}")
        if self.columns:
            where.append("column " + " or ".join(self.columns))
        head = ", ".join(where)
        return f"{head}: {self.message}" if head else self.message


class Found(Exception):
    """Carries a problem out of the nested checks."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


Tol = tuple[float, float] | None
"""``(rtol, atol)`` for floats recomputed by steptrace from a run another framework recorded
(its kernels add in their own order): ``|recorded - recomputed| <= atol + rtol * |recomputed|``.
None: exact, bit for bit."""


def same(a: Any, b: Any, tol: Tol = None) -> bool:
    """Exact equality: rationals by value, floats bit for bit (the sign of zero counts), NaN
    equal to NaN; within ``tol`` (floats only; ``b`` the recomputed value) when given."""
    if isinstance(a, Fraction) or isinstance(b, Fraction):
        return bool(a == b)
    fa, fb = float(a), float(b)
    if math.isnan(fa) or math.isnan(fb):
        return math.isnan(fa) and math.isnan(fb)
    if tol is not None:
        return fa == fb or abs(fa - fb) <= tol[1] + tol[0] * abs(fb)
    return fa == fb and math.copysign(1.0, fa) == math.copysign(1.0, fb)


def differ(a: Array, b: Any, tol: Tol = None) -> Array:
    """Element-wise ``not same`` for float64 arrays (``b`` broadcast to ``a``)."""
    b = np.broadcast_to(np.asarray(b, dtype=np.float64), a.shape)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if tol is not None:
        with np.errstate(all="ignore"):
            close = (a == b) | (np.abs(a - b) <= tol[1] + tol[0] * np.abs(b))
        far: Array = np.where(nan_a | nan_b, nan_a != nan_b, ~close)
        return far
    bits = a.view(np.int64) != np.ascontiguousarray(b).view(np.int64)
    out: Array = np.where(nan_a | nan_b, nan_a != nan_b, bits)
    return out


def show(v: Any) -> str:
    """A value as a problem writes it: a rational's text, a float's shortest repr."""
    if isinstance(v, Fraction):
        return str(v)
    if isinstance(v, float | np.floating):
        return repr(float(v))
    return repr(v)


def make_float(num: Numerics) -> Any:
    """The type a float run computes in (a float64 column holds float32 values exactly)."""
    if num.name == "float32":
        return np.float32
    return float
