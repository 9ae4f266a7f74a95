"""``.npz`` datasets: an array ``x`` of the inputs, an array ``y`` of the targets, a sample a row.

``x`` is (N, features), or (N, C, H, W) images whose pixels become the features ``x_c_i_j``:
1-based and row-major (channel, row, column), the names the trace gives an image input, so the
model file's ``"shape": [C, H, W]`` lays them out again as they were. ``y`` is (N,) or
(N, targets), the targets ``y_1 … y_k``. Values are read as a CSV's are: integers as they are,
floats as the exact binary value they hold. Only numeric arrays are read, and the file is opened
without unpickling: an array of Python objects is refused, never run.
"""

from __future__ import annotations

import math
import zipfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import DatasetError
from .table import Table, value_names

__all__ = ["read_arrays"]

#: What an array of each non-numeric dtype kind holds, for the error that refuses it.
_NOT_NUMBERS = {"b": "true/false values", "c": "complex numbers", "U": "text", "S": "bytes",
                "M": "dates", "m": "durations", "V": "records", "O": "Python objects"}  # fmt: skip


def read_arrays(path: Path) -> Table:
    """The columns ``x_…`` and ``y_…`` of the ``.npz`` file ``path``."""
    file = path.name
    x, y = _load(path, file)
    if x.ndim not in (2, 4):
        grey = " (grey images: C = 1)" if x.ndim == 3 else ""
        raise DatasetError(
            f"{file}: array 'x' has shape {x.shape}; give (N, features), or (N, C, H, W) for "
            f"images{grey}"
        )
    if y.ndim not in (1, 2):
        raise DatasetError(f"{file}: array 'y' has shape {y.shape}; give (N,) or (N, targets)")
    if len(x) != len(y):
        raise DatasetError(
            f"{file}: x has {len(x)} rows but y has {len(y)}; give one row of y per row of x"
        )
    # Not reshape(N, -1): an array of no rows has no width to infer.
    xs, ys = (a.reshape(len(a), math.prod(a.shape[1:])) for a in (x, y))
    if xs.shape[1] == 0:
        raise DatasetError(f"{file}: array 'x' has shape {x.shape}: no features")
    if ys.shape[1] == 0:
        raise DatasetError(f"{file}: array 'y' has shape {y.shape}: no targets")
    features, targets = value_names("x", x.shape[1:]), value_names("y", ys.shape[1:])
    where = {name: (xs, j) for j, name in enumerate(features)}
    where |= {name: (ys, j) for j, name in enumerate(targets)}

    def exact(column: str) -> list[Fraction]:
        array, j = where[column]
        return _exact(array[:, j], column, file)

    return Table(file, (*features, *targets), len(x), exact, targets=targets, features=features)


def _load(path: Path, file: str) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """The arrays ``x`` and ``y``, checked to hold numbers."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{file}: cannot be read as npz: {_first_line(exc)}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DatasetError(
            f"{file}: holds a single array, not arrays named x and y; save it with "
            "numpy.savez(path, x=inputs, y=targets)"
        )
    with archive:
        missing = [name for name in ("x", "y") if name not in archive.files]
        if missing:
            held = ", ".join(archive.files) or "nothing"
            raise DatasetError(
                f"{file}: no array {' or '.join(map(repr, missing))} (the file holds: {held}); "
                "save the inputs as x and the targets as y"
            )
        return _numbers(archive, "x", file), _numbers(archive, "y", file)


def _numbers(archive: Any, name: str, file: str) -> npt.NDArray[Any]:
    try:
        array: npt.NDArray[Any] = archive[name]
    except ValueError as exc:
        if "allow_pickle" in str(exc):  # never unpickled: it could run any code
            raise DatasetError(
                f"{file}: array {name!r} holds Python objects; give integers or floats "
                "(steptrace does not unpickle data files)"
            ) from None
        raise DatasetError(f"{file}: array {name!r} cannot be read: {_first_line(exc)}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{file}: array {name!r} cannot be read: {_first_line(exc)}") from None
    if array.dtype.kind not in "iuf":
        held = _NOT_NUMBERS.get(array.dtype.kind, f"{array.dtype} values")
        raise DatasetError(f"{file}: array {name!r} holds {held}; give integers or floats")
    return array


def _exact(values: npt.NDArray[Any], column: str, file: str) -> list[Fraction]:
    """A column's values as exact rationals: a float is the binary value it holds."""
    if values.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            row = int(bad[0])
            raise DatasetError(
                f"{file}: column {column!r}, row {row} is {values[row]}; values must be finite"
            )
    return [Fraction(v) for v in values.tolist()]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
