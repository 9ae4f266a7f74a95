"""A step's values as a training loop gives them, checked against the tensors its run records
and shaped into columns: one (rows, components) array per tensor, one row per data input.

Parameters may be given once for the step (they are the same on each of its rows) and a
one-value tensor as a flat vector; anything missing, extra or of the wrong shape is refused,
naming the tensor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError
from .schema import Tensor

__all__ = ["StepValues"]

Array = npt.NDArray[Any]
#: Parameter tensors: one value per step, given per step or per row.
_PARAMS = ("_before", "_after")


class StepValues:
    """The columns of a run's tensors (all but ``lr``, which the run fills in)."""

    def __init__(self, tensors: Sequence[Tensor]) -> None:
        self.tensors = [t for t in tensors if t.name != "lr"]
        self.names = {t.name for t in self.tensors}
        self.params = {t.name for t in self.tensors if t.name.endswith(_PARAMS)}

    def of_step(self, values: Mapping[str, Any]) -> tuple[int, dict[str, Array]]:
        """One step's rows: how many, and each tensor as a (rows, components) array."""
        missing = [t.name for t in self.tensors if t.name not in values]
        extra = sorted(set(values) - self.names - {"lr"})
        if missing:
            raise ConfigError(
                f"write_step: tensor {missing[0]!r} is missing (this model records "
                f"{', '.join(t.name for t in self.tensors)})"
            )
        if extra:
            raise ConfigError(f"write_step: {extra[0]!r} is not a tensor this model records")
        x = np.asarray(values["x"])
        if x.ndim == 0:
            raise ConfigError("write_step: x must have one row per data input of the step")
        m = int(x.shape[0])
        if m < 1:
            raise ConfigError("write_step: a step has at least one data input (x has no rows)")
        arrays: dict[str, Array] = {}
        for t in self.tensors:
            a = np.asarray(values[t.name], dtype=np.float64)
            if t.name in self.params and a.shape == t.shape:
                a = np.broadcast_to(a, (m, *t.shape))
            elif t.shape == (1,) and a.shape == (m,):
                a = a.reshape(m, 1)
            if a.shape != (m, *t.shape):
                per_step = " (or once for the step)" if t.name in self.params else ""
                raise ConfigError(
                    f"write_step: {t.name} has shape {a.shape}, expected {(m, *t.shape)}: "
                    f"{_shape_text(t)} per data input{per_step}, {m} data input(s) in this step"
                )
            arrays[t.name] = a.reshape(m, t.size)
        return m, arrays

    def of_rows(self, values: Mapping[str, Any], rows: int) -> dict[str, Array]:
        """Many steps' ``rows``, given flat: each tensor as a (rows, components) array."""
        arrays: dict[str, Array] = {}
        for t in self.tensors:
            if t.name not in values:
                raise ConfigError(f"write_rows: tensor {t.name!r} is missing")
            a = np.asarray(values[t.name])
            if a.shape != (rows, t.size):
                raise ConfigError(
                    f"write_rows: {t.name} has shape {a.shape}, expected {(rows, t.size)}"
                )
            arrays[t.name] = a
        return arrays


def _shape_text(t: Tensor) -> str:
    return "×".join(str(n) for n in t.shape) + " values" if t.shape else "one value"
