"""A dataset as steptrace holds it: named columns of exact rationals, whatever it was read from.

Every value is kept as an exact rational; each run then rounds it into its own number system.
A CSV cell such as ``0.1`` is therefore exactly one tenth in an exact run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import DatasetError
from ..numerics import Numerics, magnitude

__all__ = ["Dataset"]


@dataclass(frozen=True)
class Dataset:
    """Rows of (data input, data output), every value an exact rational. A data output has one
    value per target column (one per output neuron of the model)."""

    name: str
    features: tuple[str, ...]
    targets: tuple[str, ...]
    inputs: tuple[tuple[Fraction, ...], ...]
    outputs: tuple[tuple[Fraction, ...], ...]
    #: Where it was loaded from: an embedded dataset's name (``"seed"``, ``"shapes"``) or the
    #: absolute path of its file or folder (used by --resume).
    source: str = "seed"

    def __len__(self) -> int:
        return len(self.outputs)

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def sha256(self) -> str:
        """Content hash over the names and exact values: same data, same hash, any file type."""
        h = hashlib.sha256()
        h.update("\x1f".join((*self.features, *self.targets)).encode())
        for x, y in zip(self.inputs, self.outputs, strict=True):
            h.update(("\x1e" + "\x1f".join(str(v) for v in (*x, *y))).encode())
        return h.hexdigest()

    def in_numerics(
        self, numerics: Numerics
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The inputs and outputs rounded into ``numerics``; refuses values beyond its range."""
        self.check_range(numerics)
        xs = [tuple(numerics.make(v) for v in x) for x in self.inputs]
        ys = [tuple(numerics.make(v) for v in y) for y in self.outputs]
        return xs, ys

    def check_range(self, numerics: Numerics) -> None:
        """Refuse values beyond the finite range of ``numerics`` (exact runs: of float64, which
        their float64 columns record)."""
        for row, (x, y) in enumerate(zip(self.inputs, self.outputs, strict=True)):
            for name, q in zip((*self.features, *self.targets), (*x, *y), strict=True):
                if not numerics.fits(q):
                    size = magnitude(q)
                    hint = " or use --numerics float64" if numerics.name == "float32" else ""
                    system = "float64 (exact runs record it too)" if numerics.is_exact else ""
                    raise DatasetError(
                        f"{self.name}: value {size} in column {name!r}, row {row} is too "
                        f"large for {system or numerics.name}; rescale the column{hint}"
                    )

    def as_arrays(self, numerics: Numerics) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """Inputs (rows × features) and outputs (rows × targets) as arrays of the number
        system (object arrays of ``Fraction`` for exact)."""
        xs, ys = self.in_numerics(numerics)
        dtype = numerics.dtype if numerics.dtype is not None else object
        x = np.empty((len(self), self.n_features), dtype=dtype)
        y = np.empty((len(self), len(self.targets)), dtype=dtype)
        x[:], y[:] = xs, ys
        return x, y
