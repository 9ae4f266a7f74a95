"""The ``df.steptrace`` accessor: the package's functions as methods of a frame of trace rows,
registered with pandas when this module is imported (``import steptrace.analysis`` does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from .gates import Gate, find_gates
from .loss import batch_loss, epoch_loss
from .rows import _runs, step_rows
from .side_by_side import compare_at
from .summaries import CONVERGE_RTOL, run_summary
from .weights import weights_long


@pd.api.extensions.register_dataframe_accessor("steptrace")
class SteptraceAccessor:
    """``df.steptrace``: the package's functions as methods of a frame of trace rows.

    >>> df.steptrace.summary()  # doctest: +SKIP
    >>> df.steptrace.compare(2)  # doctest: +SKIP
    """

    def __init__(self, df: pd.DataFrame) -> None:
        self._df = df

    def step(self, step: int) -> pd.DataFrame:
        """See :func:`step_rows`."""
        return step_rows(self._df, step)

    def summary(self, rtol: float = CONVERGE_RTOL) -> pd.DataFrame:
        """See :func:`run_summary`."""
        return run_summary(self._df, rtol)

    def batch_loss(self) -> pd.DataFrame:
        """See :func:`batch_loss`."""
        return batch_loss(self._df)

    def epoch_loss(self, per: str = "step") -> pd.DataFrame:
        """See :func:`epoch_loss`."""
        return epoch_loss(self._df, per)

    def weights(self, which: str = "after") -> pd.DataFrame:
        """See :func:`weights_long`."""
        return weights_long(self._df, which)

    def gates(self) -> dict[Any, list[Gate]]:
        """Each run's gates, by run; see :func:`find_gates`."""
        return {run: find_gates(rows) for run, rows in _runs(self._df)}

    def compare(self, step: int, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """See :func:`compare_at`."""
        return compare_at(self._df, step, columns)
