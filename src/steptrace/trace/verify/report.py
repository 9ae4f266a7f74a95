"""The entry point of ``steptrace verify``: :func:`verify` runs the checks on a trace and returns
a :class:`VerifyReport` (counts, the tolerance used, the first problem), which prints as the
command's one line.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigError, TraceError
from ..keep import RECORD_KEY
from ..opener import open_trace
from ..writer import RUN_FILE, read_run_file
from .checker import Checker
from .chunks import in_file
from .held import HeldChecker
from .problem import Found, Problem
from .settings import recorder

__all__ = ["VerifyReport", "verify"]


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` found: counts, and the first problem (``None`` if there is none)."""

    path: Path
    status: str
    numerics: str
    rows: int
    steps: int
    run_steps: int  # the steps its plan declares (0: none declared)
    problem: Problem | None = None
    #: (rtol, atol) recomputed values were compared within; None: exactly (bit for bit).
    tolerance: tuple[float, float] | None = None
    #: What recorded the run, when not steptrace: ``pytorch 2.13.0``.
    recorded_with: str | None = None
    #: Whether the update w − α·Σ grad was checked (not for optimizers with their own).
    update_checked: bool = True
    #: What was not recomputed in a run of a network of its own (a module steptrace does not
    #: know, a loss of the loop's own …), as the report names it.
    unchecked: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.problem is None

    def __str__(self) -> str:
        by = f"recorded with {self.recorded_with}" if self.recorded_with else ""
        if self.problem is not None:
            notes = []
            if self.tolerance is not None:
                notes.append(f"compared within rtol {self.tolerance[0]:g}, "
                             f"atol {self.tolerance[1]:g}")  # fmt: skip
            notes += [by] if by else []
            return f"PROBLEM {self.path}: {self.problem}" + (
                f" ({'; '.join(notes)})" if notes else ""
            )
        within = ""
        if self.tolerance is not None:
            within = f" within rtol {self.tolerance[0]:g}, atol {self.tolerance[1]:g}"
            within += f" ({by})" if by else ""
        if not self.update_checked:
            within += "; the optimizer's own update is taken as recorded, not checked"
        if self.unchecked:
            within += "; not recomputed: " + ", ".join(self.unchecked)
        known = self.status != "complete" and self.run_steps  # no total: none is stated
        of = f" of {self.run_steps}" if known else ""
        return (
            f"OK {self.path}: {self.steps}{of} steps, {self.rows} rows, {self.numerics}, "
            f"{self.status}; every row follows from its inputs{within}"
        )


def verify(path: str | Path, rtol: float | None = None, atol: float | None = None) -> VerifyReport:
    """Check a trace (a run folder or one part file) and report the first problem, if any.

    Recomputed values must equal the recorded ones exactly (bit for bit in float runs), or
    within ``rtol``/``atol`` when given (``|recorded - recomputed| <= atol + rtol *
    |recomputed|``); a run recorded by another framework is compared within
    :data:`~steptrace.trace.verify.settings.FRAMEWORK_TOLERANCE` unless they are given. The
    report states the tolerance.

    Raises :class:`~steptrace.errors.TraceError` only when ``path`` cannot be read as a trace
    at all (missing, not Parquet, newer format); anything wrong inside a trace is a
    :class:`Problem` in the report.

    >>> report = verify("traces/seed-exact-lr1")  # doctest: +SKIP
    >>> report.ok, report.steps, str(report)  # doctest: +SKIP
    (True, 3, 'OK traces/seed-exact-lr1: 3 steps, 3 rows, exact, complete; ...')
    """
    # _run.json is read before open_trace lists the parts: a run that says complete here has
    # all its parts in place, even if it was still being recorded a moment ago.
    info = _run_info(Path(path))
    trace = open_trace(path, check_columns=False, check_metadata=False)
    # A run that holds some steps or tensors is checked where it holds them (held.py).
    kind = HeldChecker if RECORD_KEY in trace.meta else Checker
    checker = kind(trace, info, _tolerance(rtol, atol))
    try:
        checker.check()
    except Found as found:
        return _report(checker, found.problem)
    return _report(checker, None)


def _report(checker: Checker, problem: Problem | None) -> VerifyReport:
    """What ``checker`` found, ``problem`` its first problem (if any)."""
    trace, meta = checker.trace, checker.meta
    if problem is not None and trace.v1:
        # Named as the files name them: version 1 wrote the weights as w_before_k ….
        problem = dataclasses.replace(problem, columns=tuple(in_file(trace, problem.columns)))
    run = getattr(checker, "run", None)
    return VerifyReport(
        trace.path, checker.status, str(meta.get("numerics")),
        checker.rows_checked, checker.steps_checked, _whole(meta.get("steps")), problem,
        run.tol if run is not None else None, recorder(meta),
        run.check_update if run is not None else True,
        getattr(checker, "unchecked", ()) or getattr(run, "unchecked", ()),
    )  # fmt: skip


def _tolerance(rtol: float | None, atol: float | None) -> tuple[float | None, float | None]:
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and not (isinstance(value, int | float) and 0 <= value < math.inf):
            raise ConfigError(f"{name} must be a number ≥ 0, got {value!r}")
    return rtol, atol


def _whole(value: Any) -> int:
    """A count from metadata that may be damaged (verify reports that): 0 if not a count."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _run_info(path: Path) -> dict[str, Any] | None:
    """``_run.json`` as written (status and summary included), if ``path`` is a run with one."""
    run_file = path / RUN_FILE
    if not path.is_dir() or not run_file.exists():
        return None
    try:
        info = read_run_file(run_file)
    except (OSError, ValueError) as exc:
        raise TraceError(f"{run_file}: unreadable run metadata ({exc})") from None
    return info if isinstance(info, dict) else None
