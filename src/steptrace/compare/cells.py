"""When two recorded values agree: :class:`Tolerance`, and the cell-by-cell comparison of one
column of two aligned traces (exact rational texts, floats, or plain values).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..errors import TraceError
from ..numerics import format_value
from ..trace.schema import EXACT_SUFFIX
from .sides import Side

__all__ = ["Tolerance", "cell_text", "cells", "difference", "nanmax"]

FloatArray: TypeAlias = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Tolerance:
    """Two floats ``a`` (reference) and ``b`` agree when ``|b - a| <= atol + rtol * |a|``."""

    rtol: float = 0.0
    atol: float = 0.0

    def __post_init__(self) -> None:
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise TraceError(f"{name} must be a finite number >= 0, got {value!r}")


def cells(
    col: str, fa: pd.DataFrame, fb: pd.DataFrame, tol: Tolerance
) -> tuple[Any, FloatArray, FloatArray]:
    """Which cells of ``col`` differ, and their absolute and relative errors: by the exact
    texts when both sides have them, as floats when both are numbers, else as plain values."""
    exact = col + EXACT_SUFFIX
    if exact in fa.columns and exact in fb.columns:
        return _exact_cells(fa[exact].to_numpy(), fb[exact].to_numpy(), tol)
    if pd.api.types.is_numeric_dtype(fa[col]) and pd.api.types.is_numeric_dtype(fb[col]):
        va, vb = (f[col].to_numpy(dtype=np.float64, na_value=np.nan) for f in (fa, fb))
        return _float_cells(va, vb, tol)
    return _other_cells(fa[col].to_numpy(dtype=object), fb[col].to_numpy(dtype=object))


def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def nanmax(values: FloatArray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.max()) if finite.size else math.nan


def _float_cells(
    a: FloatArray, b: FloatArray, tol: Tolerance
) -> tuple[Any, FloatArray, FloatArray]:
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        abs_err = np.where(a == b, 0.0, np.abs(b - a))
        rel_err = np.where(a == b, 0.0, abs_err / np.abs(a))
        both_nan = np.isnan(a) & np.isnan(b)
        same = (a == b) | both_nan | (abs_err <= tol.atol + tol.rtol * np.abs(a))
    abs_err[both_nan] = 0.0
    rel_err[both_nan] = 0.0
    # A NaN against a number is as far apart as two values get.
    one_nan = np.isnan(a) != np.isnan(b)
    abs_err[one_nan] = np.inf
    rel_err[one_nan] = np.inf
    return ~same, abs_err, rel_err


def _exact_cells(
    a: npt.NDArray[Any], b: npt.NDArray[Any], tol: Tolerance
) -> tuple[Any, FloatArray, FloatArray]:
    """Compare exact rational texts; only texts that differ are parsed as fractions."""
    differ = a != b
    abs_err, rel_err = np.zeros(len(a)), np.zeros(len(a))
    atol, rtol = Fraction(tol.atol), Fraction(tol.rtol)
    for i in np.flatnonzero(differ):
        qa, qb = _rational(a[i]), _rational(b[i])
        err = abs(qb - qa)
        differ[i] = err > atol + rtol * abs(qa)
        abs_err[i] = float(err)
        rel_err[i] = float(err / abs(qa)) if qa else (math.inf if err else 0.0)
    return differ, abs_err, rel_err


def _other_cells(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> tuple[Any, FloatArray, FloatArray]:
    """Text and other values: equal or not, with no measure of how far apart."""
    differ = np.array([x != y and not (_isnan(x) and _isnan(y)) for x, y in zip(a, b, strict=True)])
    no_error = np.full(len(a), np.nan)
    return differ, no_error, no_error


def _rational(text: Any) -> Fraction:
    try:
        return Fraction(str(text))
    except (ValueError, ZeroDivisionError):
        raise TraceError(f"an exact value column holds {text!r}, which is not a rational") from None


def cell_text(frame: pd.DataFrame, col: str, i: int, side: Side) -> str:
    value = frame[col].iloc[i]
    exact = frame[col + EXACT_SUFFIX].iloc[i] if col + EXACT_SUFFIX in frame.columns else None
    if isinstance(value, float | np.floating):
        return format_value(float(value), exact if isinstance(exact, str) else None, side.numerics)
    return str(value.item() if isinstance(value, np.generic) else value)


def difference(fa: pd.DataFrame, fb: pd.DataFrame, col: str, i: int) -> float | None:
    exact = col + EXACT_SUFFIX
    if exact in fa.columns and exact in fb.columns:
        return float(_rational(fb[exact].iloc[i]) - _rational(fa[exact].iloc[i]))
    va, vb = fa[col].iloc[i], fb[col].iloc[i]
    if isinstance(va, int | float | np.number) and isinstance(vb, int | float | np.number):
        return float(vb) - float(va)
    return None
