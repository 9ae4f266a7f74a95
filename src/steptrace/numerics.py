"""Number systems a run computes in: ``exact`` (rationals), ``float64`` and ``float32``.

Every number a user types (a learning rate, an initial weight, a CSV cell) is first read
*exactly* as a rational (``1e-7`` is 1/10 000 000, ``1/200`` is 1/200) and only then rounded,
once and correctly, into the run's number system. Nothing passes through a binary float on the
way, so ``--lr 0.1 --numerics exact`` really is one tenth.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, TypeAlias

import numpy as np

from .errors import ConfigError, ExactLimitError

__all__ = [
    "EXACT_MAX_BITS",
    "NUMERICS",
    "Number",
    "Numerics",
    "format_value",
    "get_numerics",
    "parse_exact",
    "to_float32",
]

#: A number of one of the number systems: :class:`~fractions.Fraction`, ``float`` or
#: ``numpy.float32``. The model's maths is written once and runs on all three.
Number: TypeAlias = Any

#: Exact runs stop before a step any of whose recorded values needs a numerator or denominator
#: of more bits than this. Python refuses to turn integers of more than 4300 decimal digits
#: (about 14 280 bits) into text; every value is recorded as text. δ2 = δ3 . w multiplies a
#: weight by a value of about the same size, so the weights themselves reach about half this.
EXACT_MAX_BITS = 12_000

#: A number given as text is read exactly if its numerator and denominator are at most
#: 10^MAX_DIGITS (so its exact text reads back); beyond that it is refused, and text far beyond
#: it is not even computed (``1e99999999999`` would take the machine's memory).
MAX_DIGITS = 4_000
_LIMIT = 10**MAX_DIGITS

_NUMBER = re.compile(
    r"""\s*[-+]?(
        \d[\d_]*(\.\d*)?([eE][-+]?\d+)?   # 12, 1.5, 1e-7, 2.
      | \.\d+([eE][-+]?\d+)?              # .5
      | \d+\s*/\s*\d+                     # 1/200
    )\s*$""",
    re.VERBOSE,
)


def parse_exact(text: str | int | float | Fraction, what: str = "number") -> Fraction:
    """Read a number exactly, as a rational.

    Text is taken digit for digit: ``parse_exact("1e-7") == Fraction(1, 10_000_000)``. A float
    is taken as the exact binary value it holds. NaN, infinities and anything that is not a
    number raise :class:`ConfigError` naming ``what`` was being read.

    >>> parse_exact("1/200"), parse_exact("-3000/11600000"), parse_exact("2.5")
    (Fraction(1, 200), Fraction(-3, 11600), Fraction(5, 2))
    """
    if isinstance(text, Fraction):
        return text
    if isinstance(text, bool):
        raise ConfigError(f"{what} must be a number, not {text!r}")
    if isinstance(text, int):
        return Fraction(text)
    if isinstance(text, float | np.floating):
        if not math.isfinite(text):
            raise ConfigError(f"{what} must be a finite number, got {text!r}")
        return Fraction(float(text))
    if isinstance(text, str) and text.strip().lower().lstrip("+-") in ("nan", "inf", "infinity"):
        raise ConfigError(f"{what} must be a finite number, got {text.strip()!r}")
    if not isinstance(text, str) or not _NUMBER.match(text):
        raise ConfigError(f"{what} must be a number such as 0.5, 1e-7 or 1/200, got {text!r}")
    cleaned = text.replace(" ", "").strip()
    mantissa, _, exponent = cleaned.lower().partition("e")
    digits = sum(c.isdigit() for c in mantissa)
    small = len(exponent.lstrip("+-")) <= 5 and abs(int(exponent or 0)) <= 2 * MAX_DIGITS
    try:
        if digits > 2 * MAX_DIGITS + 2 or not small:  # not computed: it would take too long
            raise ValueError
        q = Fraction(cleaned)
        if abs(q.numerator) > _LIMIT or q.denominator > _LIMIT:
            raise ValueError
        return q
    except ValueError:
        raise ConfigError(
            f"{what} {_shorten(text.strip())} is too long to read exactly (numerators and "
            f"denominators up to 10^{MAX_DIGITS:,})"
        ) from None
    except ZeroDivisionError:
        raise ConfigError(f"{what} {text!r} divides by zero") from None


def magnitude(q: Fraction) -> str:
    """``q`` to three significant digits, even beyond any float (``1e+400``)."""
    try:
        return f"{float(q):.3g}"
    except OverflowError:
        return f"{(Decimal(q.numerator) / Decimal(q.denominator)).normalize():.3g}"


def _shorten(text: str, keep: int = 24) -> str:
    return repr(text) if len(text) <= 2 * keep else repr(f"{text[:keep]}…{text[-keep:]}")


def to_float32(q: Fraction) -> np.float32:
    """Round a rational to the nearest float32 (ties to even), without double rounding.

    ``np.float32(float(q))`` rounds twice (to float64, then to float32) and can land one unit
    off; here the float64 guess is corrected by comparing exact distances.
    """
    guess = np.float32(float(q))
    if not np.isfinite(guess):
        return guess
    below = np.nextafter(guess, np.float32(-np.inf))
    above = np.nextafter(guess, np.float32(np.inf))
    best = guess
    best_gap = abs(Fraction(float(guess)) - q)
    for candidate in (below, above):
        if not np.isfinite(candidate):
            continue
        gap = abs(Fraction(float(candidate)) - q)
        even = int(candidate.view(np.uint32)) % 2 == 0
        if gap < best_gap or (gap == best_gap and even):
            best, best_gap = candidate, gap
    return np.float32(best)


@dataclass(frozen=True)
class Numerics:
    """A number system: how to make numbers in it and how to record them.

    ``dtype`` is the numpy dtype of the floating systems (``None`` for ``exact``, whose
    arrays hold ``Fraction`` objects): the dtype of the recorder's columns and of the path it
    rebuilds.
    """

    name: str
    dtype: np.dtype[Any] | None

    @property
    def is_exact(self) -> bool:
        return self.dtype is None

    def make(self, q: Fraction) -> Number:
        """The number of this system nearest to the rational ``q`` (exactly ``q`` in exact)."""
        if self.name == "exact":
            return q
        if self.name == "float32":
            return to_float32(q)
        return float(q)

    def array(self, values: Iterable[Number]) -> np.ndarray[Any, Any]:
        """Numbers of this system as a numpy array (of ``Fraction`` objects in exact)."""
        return np.array(list(values), dtype=self.dtype if self.dtype is not None else object)

    def fits(self, q: Fraction) -> bool:
        """Whether ``q`` is within the finite range of this system (exact: of float64 records)."""
        limit = np.finfo(np.float32).max if self.name == "float32" else np.finfo(np.float64).max
        return bool(abs(q) <= Fraction(float(limit)))

    def to_float(self, v: Number) -> float:
        """The float64 recorded for ``v``: exact for float32/float64, correctly rounded for
        rationals (±inf if a rational is beyond float64's range)."""
        try:
            return float(v)
        except OverflowError:
            return math.inf if v > 0 else -math.inf

    def exact_text(self, v: Number) -> str:
        """The exact rational text of ``v``, e.g. ``"-3/11600"`` (exact mode only)."""
        return str(v)

    def check_size(self, values: Iterable[Number], step: int) -> None:
        """Stop an exact run before its rationals outgrow Python's limits: ``values`` are the
        numbers a step would record."""
        if not self.is_exact:
            return
        bits = max(max(q.numerator.bit_length(), q.denominator.bit_length()) for q in values)
        if bits > EXACT_MAX_BITS:
            raise ExactLimitError(
                f"exact arithmetic stopped at step {step}: its values would need {bits}-bit "
                f"numerators or denominators (limit {EXACT_MAX_BITS} bits, about "
                f"{int(EXACT_MAX_BITS * math.log10(2))} digits); the steps so far are kept. "
                "Use --numerics float64 for longer runs, or fewer epochs"
            )


NUMERICS: dict[str, Numerics] = {
    "exact": Numerics("exact", None),
    "float64": Numerics("float64", np.dtype(np.float64)),
    "float32": Numerics("float32", np.dtype(np.float32)),
}


def get_numerics(name: str) -> Numerics:
    """Look up a number system by name: ``exact``, ``float64`` or ``float32``."""
    try:
        return NUMERICS[name]
    except KeyError:
        raise ConfigError(
            f"unknown numerics {name!r}; choose one of: {', '.join(NUMERICS)}"
        ) from None


def format_value(value: float, exact_text: str | None = None, numerics: str = "float64") -> str:
    """One recorded number as text: ``-3/11600`` (exact), ``0.004997951`` (float32) …"""
    if exact_text is not None:
        return exact_text
    if numerics == "float32" and np.isfinite(value):
        text = repr(float(np.float32(value)))
        short = str(np.float32(value))
        return short if float(np.float32(short)) == np.float32(value) else text
    return repr(float(value))
