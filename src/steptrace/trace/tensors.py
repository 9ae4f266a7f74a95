"""Any recorded value as an array: ``load_tensor(run, "w2_after")`` → (rows, 1, 3)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..errors import TraceError
from .filters import StepRange
from .opener import open_trace
from .reader import Trace
from .schema import EXACT_SUFFIX

__all__ = ["load_tensor"]


class _HasPath(Protocol):
    path: Path


def load_tensor(
    run: str | Path | Trace | _HasPath,
    name: str,
    exact: bool = False,
    steps: StepRange | None = None,
) -> npt.NDArray[Any]:
    """One recorded tensor of every row, shape ``(rows, *shape)``, rows in (step, sample) order.

    ``name`` is ``x``, ``y``, ``loss``, ``o{k}``, ``d{k}``, ``w{k}_before``, ``w{k}_after``,
    ``grad_w{k}``, ``b{k}_before``, ``b{k}_after`` or ``grad_b{k}`` (``lr`` too); ``run`` a run
    folder, a part file, a :class:`Trace` or a recording's result. Float32 runs give float32
    values (the run's own numbers), other runs float64; ``exact=True`` gives, for exact runs,
    an object array of :class:`fractions.Fraction`. ``steps=(lo, hi)`` reads only those steps.

    >>> load_tensor("traces/seed-exact-lr1", "w2_after", exact=True)[2, 0]  # doctest: +SKIP
    array([Fraction(1, 200), Fraction(23199997, 11600), Fraction(17400001, 5800)], dtype=object)
    """
    if isinstance(run, Trace):
        trace = run
    else:
        trace = open_trace(run if isinstance(run, str | Path) else run.path)
    tensor = trace.tensor(name)
    columns = tensor.columns()
    if exact:
        if not trace.is_exact:
            raise TraceError(
                f"{trace.path} is a {trace.numerics} run: it has no exact values (exact=False "
                "reads its numbers)"
            )
        columns = [c + EXACT_SUFFIX for c in columns]
    table = trace.read_table(columns, steps=steps)
    rows = table.num_rows
    if exact:
        out = np.empty((rows, len(columns)), dtype=object)
        for i, c in enumerate(columns):
            out[:, i] = [Fraction(t) for t in table.column(c).to_pylist()]
    else:
        dtype = np.float32 if trace.numerics == "float32" else np.float64
        out = np.empty((rows, len(columns)), dtype=dtype)
        for i, c in enumerate(columns):
            out[:, i] = table.column(c).to_numpy()
    return out.reshape((rows, *tensor.shape))
